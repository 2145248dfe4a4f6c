//! RequestPasswordReset and ResetPassword against a real SMTP server: the
//! test reads the delivered mail, follows its link's token and completes
//! the flow.

use authd::api::proto::{
    RequestPasswordResetRequest, ResetPasswordRequest, admin::SetPasswordRequest,
};
use tonic::{Code, Status};

use crate::support::{
    Backend, MailSink, PASSWORD, RESET, TestApp, TestDb, authorized, backend_tests, config,
    eventually, violations,
};

backend_tests!(
    a_reset_mail_sets_a_new_password_and_ends_every_session,
    unknown_emails_get_the_same_answer_and_no_mail,
    mail_calls_answer_failed_precondition_without_smtp,
    an_expired_link_is_refused,
    a_newer_link_or_a_password_change_retires_older_links,
    one_mail_per_address_per_interval,
    a_reset_keeps_the_second_factor,
    malformed_requests_are_refused_precisely,
    a_reset_clears_the_login_throttle,
    mail_calls_count_against_the_client_rate,
    startup_refuses_mail_settings_it_cannot_use,
    an_operator_setting_the_password_retires_reset_links,
);

const NEW_PASSWORD: &str = "a brand new passphrase";

pub(crate) async fn spawn_with_mail(backend: Backend, sink: &MailSink, extra: &[&str]) -> TestApp {
    let flags = sink.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    TestApp::spawn_with(backend, &args).await
}

pub(crate) async fn request_reset(app: &TestApp, email: &str) -> Result<(), Status> {
    app.client()
        .await
        .request_password_reset(RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .map(drop)
}

pub(crate) async fn reset(app: &TestApp, token: &str, password: &str) -> Result<(), Status> {
    app.client()
        .await
        .reset_password(ResetPasswordRequest {
            token: token.into(),
            new_password: password.into(),
        })
        .await
        .map(drop)
}

async fn a_reset_mail_sets_a_new_password_and_ends_every_session(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let (user, access) = app.user_with_token("ada@example.com").await;
    let refresh = app
        .login("ada@example.com", PASSWORD)
        .await
        .expect("login")
        .refresh_token;

    request_reset(&app, "Ada@Example.com")
        .await
        .expect("reset requested");
    let mails = sink.wait_for_subject(RESET, 1).await;
    let mail = &mails[0];
    assert_eq!(mail.to, user.email);
    assert_eq!(mail.subject, "Reset your password");
    assert!(
        mail.message_id.contains("@authd.test"),
        "{}",
        mail.message_id
    );
    assert!(
        mail.html.contains("https://app.test/reset?token="),
        "{}",
        mail.html
    );
    let token = mail.token();
    assert_eq!(token.len(), 43);

    // Signup's screening applies, and a refused password spends no link.
    let refused = reset(&app, &token, "Password123")
        .await
        .expect_err("a common password");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        violations(&refused)["new_password"].contains("most commonly used"),
        "{refused:?}"
    );
    reset(&app, &token, NEW_PASSWORD).await.expect("reset");

    // Every session ended, the one that asked included.
    assert_eq!(
        app.get_me(&access).await.expect_err("refused").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.refresh(&refresh).await.expect_err("refused").code(),
        Code::Unauthenticated
    );
    let old = app
        .login("ada@example.com", PASSWORD)
        .await
        .expect_err("refused");
    assert_eq!(old.code(), Code::Unauthenticated);
    app.login("ada@example.com", NEW_PASSWORD)
        .await
        .expect("ok");

    // Single use.
    let again = reset(&app, &token, "yet another passphrase")
        .await
        .expect_err("refused");
    assert_eq!(again.code(), Code::Unauthenticated);
    assert_eq!(again.message(), "invalid or expired link");
    // The raw token does not stay in the database once delivered.
    let holding = format!(
        "SELECT COUNT(*) AS n FROM outbox WHERE text_body LIKE '%{token}%' \
         OR html_body LIKE '%{token}%'"
    );
    eventually("the sent mail's bodies are cleared", || async {
        app.db.count(&holding).await == 0
    })
    .await;
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

async fn unknown_emails_get_the_same_answer_and_no_mail(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    app.user_with_token("known@example.com").await;

    request_reset(&app, "nobody@example.com")
        .await
        .expect("the same OK for an unknown email");
    // Requests are worked through in order: once the known address's mail
    // is here, the unknown one's turn has passed.
    request_reset(&app, "known@example.com")
        .await
        .expect("OK for a known email");
    let mails = sink.wait_for_subject(RESET, 1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "known@example.com");
    assert!(sink.to("nobody@example.com").is_empty());
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'password_reset.requested'")
            .await,
        1
    );
}

async fn mail_calls_answer_failed_precondition_without_smtp(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user_with_token("ada@example.com").await;
    let refused = request_reset(&app, "ada@example.com")
        .await
        .expect_err("no SMTP");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "email delivery is not configured");
    let refused = reset(&app, &"A".repeat(43), NEW_PASSWORD)
        .await
        .expect_err("no SMTP");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        app.db.count("SELECT COUNT(*) AS n FROM outbox").await
            + app.db.count("SELECT COUNT(*) AS n FROM mail_tokens").await,
        0
    );
}

async fn an_expired_link_is_refused(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &["--password-reset-ttl", "1s"]).await;
    app.user_with_token("ada@example.com").await;
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let token = sink.wait_for_subject(RESET, 1).await[0].token();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let refused = reset(&app, &token, NEW_PASSWORD)
        .await
        .expect_err("expired");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), "invalid or expired link");
    app.login("ada@example.com", PASSWORD)
        .await
        .expect("the password is unchanged");
}

async fn a_newer_link_or_a_password_change_retires_older_links(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &["--password-reset-interval", "1ms"]).await;
    let (_, access) = app.user_with_token("ada@example.com").await;
    request_reset(&app, "ada@example.com").await.expect("first");
    let first = sink.wait_for_subject(RESET, 1).await[0].token();
    request_reset(&app, "ada@example.com")
        .await
        .expect("second");
    let second = sink.wait_for_subject(RESET, 2).await[1].token();
    assert_ne!(first, second);
    let refused = reset(&app, &first, NEW_PASSWORD).await.expect_err("older");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A password change retires the link that is still outstanding.
    app.change_password(&access, PASSWORD, "changed in a session")
        .await
        .expect("change");
    let refused = reset(&app, &second, NEW_PASSWORD)
        .await
        .expect_err("retired by the change");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.login("ada@example.com", "changed in a session")
        .await
        .expect("the changed password stands");
}

async fn one_mail_per_address_per_interval(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    app.user_with_token("ada@example.com").await;
    app.user_with_token("bob@example.com").await;
    request_reset(&app, "ada@example.com").await.expect("first");
    request_reset(&app, "ada@example.com")
        .await
        .expect("the second is answered OK too");
    // Bob's comes after Ada's second in the queue: once it is here, Ada's
    // second request has been handled.
    request_reset(&app, "bob@example.com").await.expect("bob");
    sink.wait_for_subject(RESET, 2).await;
    let resets_to = |address: &str| {
        sink.to(address)
            .into_iter()
            .filter(|mail| mail.subject == RESET)
            .count()
    };
    eventually("bob's mail", || async { resets_to("bob@example.com") == 1 }).await;
    assert_eq!(resets_to("ada@example.com"), 1);
}

async fn a_reset_keeps_the_second_factor(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    crate::totp::user_with_totp(&app, "ada@example.com").await;
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let token = sink.wait_for_subject(RESET, 1).await[0].token();
    reset(&app, &token, NEW_PASSWORD).await.expect("reset");
    let login = app
        .login("ada@example.com", NEW_PASSWORD)
        .await
        .expect("the new password");
    assert!(login.mfa_challenge.is_some(), "TOTP still asked for");
    assert!(login.access_token.is_empty());
}

async fn malformed_requests_are_refused_precisely(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let refused = request_reset(&app, "not an email").await.expect_err("bad");
    assert!(violations(&refused).contains_key("email"));
    let refused = reset(&app, "", "short").await.expect_err("bad");
    let fields = violations(&refused);
    assert!(fields.contains_key("token") && fields.contains_key("new_password"));
    for junk in ["not-a-token", "%27%20OR%201=1", &"A".repeat(43)] {
        let refused = reset(&app, junk, NEW_PASSWORD).await.expect_err("junk");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "invalid or expired link");
    }
}

async fn a_reset_clears_the_login_throttle(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &["--lockout-threshold", "2"]).await;
    app.user_with_token("ada@example.com").await;
    for _ in 0..2 {
        app.login("ada@example.com", "a wrong guess")
            .await
            .expect_err("wrong password");
    }
    let locked = app
        .login("ada@example.com", PASSWORD)
        .await
        .expect_err("throttled");
    assert_eq!(locked.code(), Code::ResourceExhausted);

    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let token = sink.wait_for_subject(RESET, 1).await[0].token();
    reset(&app, &token, NEW_PASSWORD).await.expect("reset");
    app.login("ada@example.com", NEW_PASSWORD)
        .await
        .expect("the throttle was cleared");
}

async fn mail_calls_count_against_the_client_rate(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &["--mail-rate", "2/min"]).await;
    request_reset(&app, "ada@example.com").await.expect("first");
    let wrong = reset(&app, &"A".repeat(43), NEW_PASSWORD)
        .await
        .expect_err("a wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let limited = reset(&app, &"B".repeat(43), NEW_PASSWORD)
        .await
        .expect_err("over the rate");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let limited = request_reset(&app, "ada@example.com")
        .await
        .expect_err("over the rate");
    assert_eq!(limited.code(), Code::ResourceExhausted);
}

async fn startup_refuses_mail_settings_it_cannot_use(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let flags = sink.flags();
    let valid: Vec<&str> = flags.iter().map(String::as_str).collect();
    let templates = tempfile::tempdir().expect("template dir");
    std::fs::write(templates.path().join("password_reset.txt"), "no link").expect("write");
    let templates = templates.path().to_str().expect("utf-8").to_owned();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--password-reset-url", "https://app.test/reset"],
            "AUTHD_PASSWORD_RESET_URL must contain {token}",
        ),
        (&["--mail-from", "not an address"], "AUTHD_MAIL_FROM"),
        (&["--smtp-url", "http://127.0.0.1:25"], "AUTHD_SMTP_URL"),
        (
            &["--mail-template-dir", "/nonexistent"],
            "AUTHD_MAIL_TEMPLATE_DIR",
        ),
        (
            &["--mail-template-dir", &templates],
            "password_reset.txt and password_reset.html must contain {link}",
        ),
    ];
    for (bad, named) in cases {
        let args: Vec<&str> = valid.iter().chain(bad).copied().collect();
        let config = config(&db, &args).expect("parsed");
        let error = authd::Application::build(&config)
            .await
            .err()
            .expect("refused at startup")
            .to_string();
        assert!(error.contains(named), "{bad:?}: {error}");
    }
}

async fn an_operator_setting_the_password_retires_reset_links(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let (_, admin) = app.user_with_roles("root@example.com", &["admin"]).await;
    let (user, _) = app.user_with_token("ada@example.com").await;
    request_reset(&app, "ada@example.com")
        .await
        .expect("request");
    let token = sink.wait_for_subject(RESET, 1).await[0].token();
    app.admin_client()
        .await
        .set_password(authorized(
            SetPasswordRequest {
                id: user.id,
                password: "set by an operator".into(),
            },
            &admin,
        ))
        .await
        .expect("set password");
    let refused = reset(&app, &token, NEW_PASSWORD)
        .await
        .expect_err("retired by the operator's password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.login("ada@example.com", "set by an operator")
        .await
        .expect("the operator's password stands");
}
