//! The outbox's promises: a mail queued while the SMTP server is down goes
//! out once it is back, without a restart; one queued by a process killed
//! before it could send goes out after a restart; a graceful stop first
//! queues the reset requests it answered; replicas on one database send
//! each mail once; no token reaches a log.

use std::{sync::Arc, time::Duration};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{
    password_reset::{request_reset, reset, spawn_with_mail},
    support::{
        Backend, MailSink, PASSWORD, Process, RESET, TestDb, VERIFY, backend_tests, eventually,
        sample, scrape,
    },
};

backend_tests!(
    a_mail_queued_while_smtp_is_down_goes_out_when_it_is_back,
    a_mail_committed_before_a_kill_goes_out_after_a_restart,
    an_undeliverable_mail_is_given_up_and_kept,
    a_mail_of_a_newer_kind_waits_without_holding_up_others,
);

const PENDING: &str = "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL";

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
    // The sink has the mail before the sender hears it was taken.
    let sent = "SELECT COUNT(*) AS n FROM outbox \
                WHERE sent_at IS NOT NULL AND kind = 'password_reset'";
    eventually("the mail marked sent", || async {
        app.db.count(sent).await == 1
    })
    .await;
}

/// The process dies by SIGKILL after the transaction that queued the mail
/// committed and before any delivery succeeded; the next process sends it.
async fn a_mail_committed_before_a_kill_goes_out_after_a_restart(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let mut sink = MailSink::stopped();
    let flags = sink.flags();
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--metrics-listen", "127.0.0.1:0"]);
    let first = Process::start(&db, &flags);
    let app = first.app(&db);
    app.signup("ada@example.com", PASSWORD, "ada")
        .await
        .expect("signup");
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    // Committed, tried, released for a retry: never delivered.
    let released = "SELECT COUNT(*) AS n FROM outbox WHERE attempts > 0 \
                    AND sent_at IS NULL AND claimed_until IS NULL AND kind = 'password_reset'";
    eventually("a failed delivery attempt", || async {
        app.db.count(released).await == 1
    })
    .await;
    let metrics = scrape(first.metrics_addr.expect("metrics")).await;
    let failed = sample(
        &metrics,
        r#"authd_mail_failed_total{kind="password_reset"}"#,
    );
    assert!(failed >= Some(1.0), "{metrics}");
    first.kill();

    sink.resume();
    assert!(sink.received().is_empty());
    let second = Process::start(&db, &flags);
    let mails = sink.wait_for_subject(RESET, 1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "ada@example.com");
    reset(
        &second.app(&db),
        &mails[0].token(),
        "a brand new passphrase",
    )
    .await
    .expect("the link from the mail works");
    second.terminate();
}

/// Two replicas on one PostgreSQL database, each running a sender, both
/// woken by every queued mail: each mail goes out once, a user's
/// verification mail from Signup and reset mail alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_mail_once() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let sink = MailSink::start();
    let flags = sink.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (one, two) = (Process::start(&db, &flags), Process::start(&db, &flags));
    let (a, b) = (one.app(&db), two.app(&db));
    const USERS: usize = 6;
    for n in 0..USERS {
        let email = format!("user{n}@example.com");
        a.signup(&email, PASSWORD, &format!("user{n}"))
            .await
            .expect("signup");
        let replica = if n % 2 == 0 { &a } else { &b };
        request_reset(replica, &email).await.expect("request");
    }
    sink.wait_for_subject(RESET, USERS).await;
    eventually("every mail marked sent", || async {
        a.db.count(PENDING).await == 0
    })
    .await;
    let mails = sink.received();
    for n in 0..USERS {
        let to = format!("user{n}@example.com");
        for subject in [RESET, VERIFY] {
            let count = mails
                .iter()
                .filter(|mail| mail.to == to && mail.subject == subject)
                .count();
            assert_eq!(count, 1, "{subject:?} mails to {to}");
        }
    }
    let mut ids: Vec<&str> = mails.iter().map(|mail| mail.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2 * USERS, "one Message-ID per mail");
    one.terminate();
    two.terminate();
}

/// A reset request answered OK is waiting on the database when the process
/// is told to stop: the stop waits for its mail to be queued, so the
/// restart that follows a deploy loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_queues_the_resets_it_answered() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let sink = MailSink::stopped();
    let flags = sink.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let process = Process::start(&db, &flags);
    let app = process.app(&db);
    app.signup("ada@example.com", PASSWORD, "ada")
        .await
        .expect("signup");

    // Another client holds the outbox: the request's worker waits on it.
    let mut blocker = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    for statement in ["BEGIN", "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"] {
        diesel::sql_query(statement)
            .execute(&mut blocker)
            .await
            .expect(statement);
    }
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::task::spawn_blocking(move || process.terminate());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopping.is_finished(), "the stop waits for the request");
    diesel::sql_query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("rollback");
    stopping.await.expect("a graceful stop");

    let queued = "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'password_reset'";
    assert_eq!(app.db.count(queued).await, 1);
}

/// Even at the most verbose log level, neither the token nor its link
/// appears in anything authd logs: not when it is queued, sent, or spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_reaches_the_log() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let sink = MailSink::start();
    let flags = sink.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    command.env("RUST_LOG", "trace");
    let authd = Process::spawn(command, &db, &flags);
    let app = authd.app(&db);
    app.signup("ada@example.com", PASSWORD, "ada")
        .await
        .expect("signup");
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let verification = sink.wait_for_subject(VERIFY, 1).await[0].token();
    let token = sink.wait_for_subject(RESET, 1).await[0].token();
    reset(&app, &token, "a brand new passphrase")
        .await
        .expect("reset");
    eventually("the mail marked sent", || async {
        app.db.count(PENDING).await == 0
    })
    .await;
    let log = authd.log();
    assert!(log.contains("TRACE"), "trace logging is on");
    assert!(!log.contains(&token), "a token in the log");
    assert!(!log.contains("app.test/reset"), "a link in the log");
    assert!(
        !log.contains(&verification),
        "a verification token in the log"
    );
    assert!(
        !log.contains("app.test/verify"),
        "a verification link in the log"
    );
    authd.terminate();
}

async fn an_undeliverable_mail_is_given_up_and_kept(backend: Backend) {
    let sink = MailSink::stopped();
    let app = spawn_with_mail(backend, &sink, &["--mail-give-up-after", "1s"]).await;
    app.user_with_token("ada@example.com").await;
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let given_up = "SELECT COUNT(*) AS n FROM outbox \
                    WHERE gave_up_at IS NOT NULL AND sent_at IS NULL AND text_body = '' \
                    AND html_body IS NULL AND kind = 'password_reset'";
    eventually("the mail given up, its bodies emptied", || async {
        app.db.count(given_up).await == 1
    })
    .await;
}

/// A row a newer release queued, of a kind this one cannot render, as in
/// a rolling upgrade: it waits for a replica that knows it, and the mails
/// queued after it still go out.
async fn a_mail_of_a_newer_kind_waits_without_holding_up_others(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    // Inherent, not diesel's `execute` this module also imports.
    TestDb::execute(
        &app.db,
        "INSERT INTO outbox (id, kind, recipient, subject, text_body, message_id, \
             created_at, next_attempt_at, attempts) VALUES ('newer', 'from_the_future', \
             'ada@example.com', 'Later', 'text', '<newer@authd.test>', \
             '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)",
    )
    .await;
    app.signup("ada@example.com", PASSWORD, "ada")
        .await
        .expect("signup");
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    sink.wait_for_subject(RESET, 1).await;
    let untouched = "SELECT COUNT(*) AS n FROM outbox WHERE id = 'newer' \
                     AND attempts = 0 AND sent_at IS NULL AND gave_up_at IS NULL";
    assert_eq!(app.db.count(untouched).await, 1);
}
