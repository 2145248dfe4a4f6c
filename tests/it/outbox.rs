//! The outbox's promises: a mail queued while the SMTP server is down goes
//! out once it is back, without a restart; one queued by a process killed
//! before it could send goes out after a restart; replicas on one database
//! send each mail once; no token reaches a log.

use crate::{
    password_reset::{RESET, request_reset, spawn_with_mail},
    support::{Backend, MailSink, backend_tests, eventually},
};

backend_tests!(a_mail_queued_while_smtp_is_down_goes_out_when_it_is_back);

async fn a_mail_queued_while_smtp_is_down_goes_out_when_it_is_back(backend: Backend) {
    let mut sink = MailSink::stopped();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    app.user_with_token("ada@example.com").await;
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let failed = "SELECT COUNT(*) AS n FROM outbox \
                  WHERE attempts > 0 AND sent_at IS NULL AND kind = 'password_reset'";
    eventually("a failed delivery attempt", || async {
        app.db.count(failed).await == 1
    })
    .await;
    assert!(sink.received().is_empty());

    sink.resume();
    let mails = sink.wait_for_subject(RESET, 1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "ada@example.com");
    assert_eq!(
        app.db
            .count(
                "SELECT COUNT(*) AS n FROM outbox \
                 WHERE sent_at IS NOT NULL AND kind = 'password_reset'"
            )
            .await,
        1
    );
}
