//! Verified email addresses against a real SMTP server: the verification
//! mail of Signup and SendVerificationEmail, VerifyEmail, the email change
//! confirmed from the new address with a notice to the old one, the access
//! token's `email_verified` claim, and `AUTHD_REQUIRE_VERIFIED_EMAIL`, under
//! which an unverified account may not log in and Signup no longer tells
//! whether an address is taken.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use authd::Application;
use authd::api::proto::{
    ConfirmEmailChangeRequest, RequestEmailChangeRequest, SendVerificationEmailRequest, User,
    VerifyEmailRequest, admin::UpdateUserRequest,
};
use tonic::{Code, Status};

use crate::{
    password_reset::{request_reset, reset, spawn_with_mail},
    support::{
        self, Backend, Mail, MailSink, PASSWORD, RESET, TestApp, TestDb, VERIFY, authorized,
        backend_tests, jwt_claims, sample, scrape, violations,
    },
};

backend_tests!(
    tokens_carry_email_verified_once_an_admin_verifies,
    signup_mails_a_link_that_verifies_the_address,
    a_new_verification_link_is_mailed_on_request,
    mail_calls_answer_failed_precondition_without_smtp,
    an_email_change_is_confirmed_from_the_new_address,
    an_address_taken_before_the_confirmation_is_refused,
    change_links_to_one_address_are_limited,
    wrong_passwords_to_an_email_change_count_as_failed_logins,
    an_unverified_account_may_not_log_in_when_verification_is_required,
    a_blocked_login_mails_a_fresh_link_once_the_last_is_old,
    signup_hides_a_taken_address_when_verification_is_required,
    an_unverified_account_gets_no_second_factor_challenge,
    a_verification_link_proves_only_the_address_it_was_mailed_to,
);

const REQUIRE_VERIFIED: [&str; 2] = ["--require-verified-email", "true"];
const ADMIN_EMAIL: &str = "root@example.com";
const CHANGE: &str = "Confirm your new email address";
const CHANGED: &str = "Your email address was changed";
const SIGNUP_ATTEMPT: &str = "Someone tried to sign up with your address";
const BAD_LINK: &str = "invalid or expired link";

/// An admin's token, the admin bootstrapped in the database (roles and a
/// verified address) as an operator would.
async fn admin_token(app: &TestApp) -> String {
    let admin = app
        .signup(ADMIN_EMAIL, PASSWORD, "root")
        .await
        .expect("admin signup");
    app.db
        .execute(&format!(
            "UPDATE users SET roles = 'admin', email_verified = TRUE WHERE id = '{}'",
            admin.id
        ))
        .await;
    app.login(ADMIN_EMAIL, PASSWORD)
        .await
        .expect("admin login")
        .access_token
}

/// Marks the user's address verified through the admin API.
async fn verify_as_admin(app: &TestApp, admin_token: &str, user_id: &str) {
    let request = UpdateUserRequest {
        user: Some(User {
            id: user_id.into(),
            email_verified: true,
            ..User::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["email_verified".into()],
        }),
    };
    let updated = app
        .admin_client()
        .await
        .update_user(authorized(request, admin_token))
        .await
        .expect("update user")
        .into_inner()
        .user
        .expect("the updated user");
    assert!(updated.email_verified);
}

fn email_verified_claim(token: &str) -> Option<serde_json::Value> {
    jwt_claims(token).get("email_verified").cloned()
}

fn assert_verified_claim(token: &str) {
    assert_eq!(email_verified_claim(token), Some(serde_json::json!(true)));
    assert!(jwt_claims(token).get("email").is_none(), "no address");
}

async fn send_verification(app: &TestApp, access_token: &str) -> Result<(), Status> {
    let request = authorized(SendVerificationEmailRequest {}, access_token);
    app.client()
        .await
        .send_verification_email(request)
        .await
        .map(drop)
}

async fn verify(app: &TestApp, token: &str) -> Result<(), Status> {
    let request = VerifyEmailRequest {
        token: token.into(),
    };
    app.client().await.verify_email(request).await.map(drop)
}

async fn request_change(
    app: &TestApp,
    access_token: &str,
    new_email: &str,
    password: &str,
) -> Result<(), Status> {
    let request = RequestEmailChangeRequest {
        new_email: new_email.into(),
        current_password: password.into(),
    };
    app.client()
        .await
        .request_email_change(authorized(request, access_token))
        .await
        .map(drop)
}

async fn confirm_change(app: &TestApp, token: &str) -> Result<(), Status> {
    let request = ConfirmEmailChangeRequest {
        token: token.into(),
    };
    app.client()
        .await
        .confirm_email_change(request)
        .await
        .map(drop)
}

fn assert_bad_link(result: Result<(), Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, BAD_LINK),
        "{what}"
    );
}

fn assert_status(result: Result<(), Status>, code: Code, message: &str) {
    let status = result.expect_err(message);
    assert_eq!((status.code(), status.message()), (code, message));
}

/// The token of the `count`th mail with `subject` to `address`, once it has
/// arrived: the sender wakes at once on a queued mail, so the wait is only a
/// bound for a loaded machine.
async fn token_of(sink: &MailSink, subject: &str, address: &str, count: usize) -> String {
    let started = std::time::Instant::now();
    loop {
        let mails: Vec<Mail> = sink
            .to(address)
            .into_iter()
            .filter(|mail| mail.subject == subject)
            .collect();
        if mails.len() >= count {
            assert_eq!(mails.len(), count, "{subject:?} mails to {address}");
            return mails[count - 1].token();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{subject:?} mail {count} to {address} did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tokens_carry_email_verified_once_an_admin_verifies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app).await;
    let email = "ada@example.com";
    let user = app.signup(email, PASSWORD, "Ada").await.expect("signup");
    assert!(!user.email_verified);

    // Verification is not required by default: an unverified user logs in,
    // and the token says nothing of an address it does not carry.
    let before = app.login(email, PASSWORD).await.expect("login");
    assert_eq!(email_verified_claim(&before.access_token), None);
    assert!(jwt_claims(&before.access_token).get("email").is_none());
    let me = app.get_me(&before.access_token).await.expect("get me");
    assert!(!me.email_verified);

    verify_as_admin(&app, &admin, &user.id).await;
    let me = app.get_me(&before.access_token).await.expect("get me");
    assert!(me.email_verified, "GetMe shows the change at once");

    // A new login and the old session's next token both carry the claim.
    let after = app.login(email, PASSWORD).await.expect("login");
    assert_verified_claim(&after.access_token);
    let refreshed = app.refresh(&before.refresh_token).await.expect("refresh");
    assert_verified_claim(&refreshed.access_token);
}

async fn signup_mails_a_link_that_verifies_the_address(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let email = "bea@example.com";
    let (user, access) = app.user_with_token(email).await;
    let mails = sink.wait_for_subject(VERIFY, 1).await;
    assert_eq!(mails[0].to, email);
    assert!(mails[0].html.contains("https://app.test/verify?token="));
    let token = mails[0].token();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM mail_tokens WHERE user_id = '{}' \
                 AND purpose = 'verify_email' AND token_hash <> '{token}'",
                user.id
            ))
            .await,
        1,
        "the token is stored with the user, as a hash"
    );
    assert!(!app.get_me(&access).await.expect("me").email_verified);

    verify(&app, &token).await.expect("verify");
    assert!(
        app.get_me(&access).await.expect("me").email_verified,
        "GetMe shows it at once"
    );
    let login = app.login(email, PASSWORD).await.expect("login");
    assert_verified_claim(&login.access_token);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events \
                 WHERE event_type = 'email.verified' AND user_id = '{}'",
                user.id
            ))
            .await,
        1
    );

    assert_bad_link(verify(&app, &token).await, "a used link");
    for junk in ["not-a-token", &"A".repeat(43)] {
        assert_bad_link(verify(&app, junk).await, junk);
    }
    assert!(violations(&verify(&app, "").await.expect_err("empty")).contains_key("token"));
    assert_status(
        send_verification(&app, &access).await,
        Code::FailedPrecondition,
        "email already verified",
    );
}

async fn a_new_verification_link_is_mailed_on_request(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let email = "cid@example.com";
    let (_, access) = app.user_with_token(email).await;
    let first = token_of(&sink, VERIFY, email, 1).await;
    send_verification(&app, &access).await.expect("send");
    let second = token_of(&sink, VERIFY, email, 2).await;
    assert_ne!(first, second);
    verify(&app, &second).await.expect("the new link verifies");
    assert!(app.get_me(&access).await.expect("me").email_verified);
    assert_bad_link(
        verify(&app, &first).await,
        "an older link once the address is verified",
    );

    let anonymous = app
        .client()
        .await
        .send_verification_email(SendVerificationEmailRequest {})
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

async fn mail_calls_answer_failed_precondition_without_smtp(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, access) = app.user_with_token("dee@example.com").await;
    let off = "email delivery is not configured";
    assert_status(
        send_verification(&app, &access).await,
        Code::FailedPrecondition,
        off,
    );
    assert_status(
        verify(&app, &"A".repeat(43)).await,
        Code::FailedPrecondition,
        off,
    );
    assert_status(
        request_change(&app, &access, "new@example.com", PASSWORD).await,
        Code::FailedPrecondition,
        off,
    );
    assert_status(
        confirm_change(&app, &"A".repeat(43)).await,
        Code::FailedPrecondition,
        off,
    );
    assert_eq!(
        app.db.count("SELECT COUNT(*) AS n FROM outbox").await
            + app.db.count("SELECT COUNT(*) AS n FROM mail_tokens").await,
        0,
        "nothing queued, Signup's verification mail included"
    );
}

async fn an_email_change_is_confirmed_from_the_new_address(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let (old, new) = ("eve@example.com", "eve@new.example");
    let (user, access) = app.user_with_token(old).await;
    app.user_with_token("taken@example.com").await;

    let wrong = request_change(&app, &access, new, "not the password")
        .await
        .expect_err("wrong password");
    assert_eq!(
        (wrong.code(), wrong.message()),
        (Code::Unauthenticated, "current password is incorrect")
    );
    let taken = request_change(&app, &access, "TAKEN@example.com", PASSWORD)
        .await
        .expect_err("another account's");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    let bad = request_change(&app, &access, "not an email", "")
        .await
        .expect_err("malformed");
    let fields = violations(&bad);
    assert!(fields.contains_key("new_email") && fields.contains_key("current_password"));
    let same = request_change(&app, &access, " EVE@example.com", PASSWORD)
        .await
        .expect_err("the same address");
    assert!(violations(&same).contains_key("new_email"));

    request_change(&app, &access, new, PASSWORD)
        .await
        .expect("request");
    let token = token_of(&sink, CHANGE, new, 1).await;
    assert!(
        app.get_me(&access).await.expect("me").email == old,
        "nothing changes before the confirmation"
    );
    request_reset(&app, old)
        .await
        .expect("a reset to the old address");
    let reset_link = token_of(&sink, RESET, old, 1).await;
    confirm_change(&app, &token).await.expect("confirm");
    // Whoever still reads the old mailbox cannot take the account back.
    assert_bad_link(
        reset(&app, &reset_link, "a brand new passphrase").await,
        "a reset link to the old address",
    );

    let me = app.get_me(&access).await.expect("the session lives on");
    assert_eq!((me.email.as_str(), me.email_verified), (new, true));
    let login = app.login(new, PASSWORD).await.expect("the new address");
    assert_verified_claim(&login.access_token);
    let refused = app.login(old, PASSWORD).await.expect_err("the old address");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let notices = sink.wait_for_subject(CHANGED, 1).await;
    assert_eq!(notices[0].to, old);
    assert!(
        !notices[0].text.contains("token="),
        "a notice carries no link"
    );
    assert_bad_link(confirm_change(&app, &token).await, "a used link");
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = '{}' \
                 AND event_type IN ('email_change.requested', 'email.changed')",
                user.id
            ))
            .await,
        2
    );
}

async fn change_links_to_one_address_are_limited(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let target = "victim@elsewhere.example";
    for email in ["kim@example.com", "lee@example.com"] {
        let (_, access) = app.user_with_token(email).await;
        for _ in 0..3 {
            request_change(&app, &access, target, PASSWORD)
                .await
                .expect("answered OK");
        }
    }
    // The first link arrived; had any other been sent, it would be here
    // by the time a later mail to another address is.
    let first = token_of(&sink, CHANGE, target, 1).await;
    let (_, access) = app.user_with_token("max@example.com").await;
    request_change(&app, &access, "max@new.example", PASSWORD)
        .await
        .expect("another address");
    token_of(&sink, CHANGE, "max@new.example", 1).await;
    assert_eq!(
        sink.to(target)
            .into_iter()
            .filter(|mail| mail.subject == CHANGE)
            .count(),
        1
    );
    confirm_change(&app, &first)
        .await
        .expect("the one link works");
}

async fn an_address_taken_before_the_confirmation_is_refused(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let (old, new) = ("fay@example.com", "wanted@example.com");
    let (_, access) = app.user_with_token(old).await;
    request_change(&app, &access, new, PASSWORD)
        .await
        .expect("request");
    let token = token_of(&sink, CHANGE, new, 1).await;
    app.signup("Wanted@Example.com", PASSWORD, "quicker")
        .await
        .expect("someone else takes it");

    let taken = confirm_change(&app, &token).await.expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert_eq!(app.get_me(&access).await.expect("me").email, old);
    app.login(old, PASSWORD)
        .await
        .expect("the old address stays");
    assert!(sink.to(old).iter().all(|mail| mail.subject != CHANGED));
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM outbox WHERE kind = 'email_changed'")
            .await,
        0,
        "no notice queued"
    );
}

async fn wrong_passwords_to_an_email_change_count_as_failed_logins(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &["--lockout-threshold", "2"]).await;
    let email = "ike@example.com";
    let (_, access) = app.user_with_token(email).await;
    for _ in 0..2 {
        assert_status(
            request_change(&app, &access, "ike@new.example", "a wrong guess").await,
            Code::Unauthenticated,
            "current password is incorrect",
        );
    }
    let locked = request_change(&app, &access, "ike@new.example", PASSWORD)
        .await
        .expect_err("throttled");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let login = app.login(email, PASSWORD).await.expect_err("one counter");
    assert_eq!(login.code(), Code::ResourceExhausted, "{login:?}");
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM outbox WHERE kind = 'change_email'")
            .await,
        0
    );
}

async fn an_unverified_account_may_not_log_in_when_verification_is_required(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &REQUIRE_VERIFIED).await;
    let email = "gus@example.com";
    let user = app.signup(email, PASSWORD, "Gus").await.expect("signup");

    let wrong = app
        .login(email, "not the password")
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert_eq!(wrong.message(), "invalid email or password");

    // More right-password attempts than the lockout threshold (5): each is
    // refused for the address, none counts as a guess.
    for attempt in 0..7 {
        let refused = app
            .login(email, PASSWORD)
            .await
            .expect_err("unverified login");
        assert_eq!(
            (refused.code(), refused.message()),
            (Code::FailedPrecondition, "email not verified"),
            "attempt {attempt}: {refused:?}"
        );
    }
    let refusals = app
        .db
        .count(&format!(
            "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = '{}' \
             AND event_type = 'login.failed' AND details LIKE '%email_not_verified%'",
            user.id
        ))
        .await;
    assert_eq!(refusals, 7);

    // The mail Signup sent is the way in.
    let token = token_of(&sink, VERIFY, email, 1).await;
    verify(&app, &token).await.expect("verify");
    let login = app.login(email, PASSWORD).await.expect("verified login");
    assert_verified_claim(&login.access_token);
}

async fn a_blocked_login_mails_a_fresh_link_once_the_last_is_old(backend: Backend) {
    let sink = MailSink::start();
    let mut flags = REQUIRE_VERIFIED.to_vec();
    flags.extend(["--email-verification-ttl", "1s"]);
    flags.extend(["--password-reset-interval", "1s"]);
    let app = spawn_with_mail(backend, &sink, &flags).await;
    let email = "hal@example.com";
    app.signup(email, PASSWORD, "Hal").await.expect("signup");
    let expired = token_of(&sink, VERIFY, email, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refused = verify(&app, &expired).await.expect_err("expired");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Signup's link is gone; the owner, who knows the password, is not
    // locked out: the refused login mails a new one.
    let refused = app.login(email, PASSWORD).await.expect_err("unverified");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let fresh = token_of(&sink, VERIFY, email, 2).await;
    verify(&app, &fresh).await.expect("the fresh link verifies");
    app.login(email, PASSWORD).await.expect("verified login");

    // A wrong password mails nothing.
    let other = "ivy@example.com";
    app.signup(other, PASSWORD, "Ivy").await.expect("signup");
    token_of(&sink, VERIFY, other, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let wrong = app
        .login(other, "not the password")
        .await
        .expect_err("wrong");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.to(other)
            .into_iter()
            .filter(|mail| mail.subject == VERIFY)
            .count(),
        1
    );
}

/// An app that requires verified emails, mailing through `sink`, with its
/// metrics listener.
async fn spawn_requiring_verification(backend: Backend, sink: &MailSink) -> (TestApp, SocketAddr) {
    let db = Arc::new(TestDb::new(backend).await);
    let flags = sink.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--metrics-listen", "127.0.0.1:0"]);
    args.extend_from_slice(&REQUIRE_VERIFIED);
    let config = support::config(&db, &args).expect("test config");
    let app = Application::build(&config).await.expect("build app");
    let metrics = app.metrics_addr().expect("a metrics listener");
    (TestApp::serve(app, db), metrics)
}

/// How many calls have taken a place in the password hashing stage.
async fn hashes(metrics: SocketAddr) -> f64 {
    sample(&scrape(metrics).await, "authd_hash_wait_seconds_count").unwrap_or_default()
}

async fn signup_hides_a_taken_address_when_verification_is_required(backend: Backend) {
    let sink = MailSink::start();
    let (app, metrics) = spawn_requiring_verification(backend, &sink).await;
    let real = app
        .signup("hal@example.com", PASSWORD, "Hal")
        .await
        .expect("signup");
    assert_eq!(hashes(metrics).await, 1.0);

    let again = app
        .signup("  HAL@Example.COM ", "another password", "Hal")
        .await
        .expect("a taken address is answered as a new one");
    assert_eq!(hashes(metrics).await, 2.0, "the same hashing work");
    assert_ne!(again.id, real.id);
    let id = uuid::Uuid::parse_str(&again.id).expect("id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    let age = chrono::Utc::now().timestamp() - again.created_at.expect("created_at").seconds;
    assert!((0..60).contains(&age), "created_at is now");
    let unique = |user: &User| User {
        id: String::new(),
        created_at: None,
        ..user.clone()
    };
    assert_eq!(unique(&again), unique(&real), "the same shape");

    // The owner hears of it, once per interval however often it is tried.
    let notices = sink.wait_for_subject(SIGNUP_ATTEMPT, 1).await;
    assert_eq!(notices[0].to, "hal@example.com");
    app.signup("hal@example.com", "a third password", "Hal")
        .await
        .expect("answered as new again");
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM outbox WHERE kind = 'signup_attempt'")
            .await,
        1
    );

    // Nothing was stored: the address keeps its account and password.
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 1);
    let refused = app
        .login("hal@example.com", "another password")
        .await
        .expect_err("not the account's password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let unverified = app
        .login("hal@example.com", PASSWORD)
        .await
        .expect_err("unverified");
    assert_eq!(unverified.code(), Code::FailedPrecondition);

    // Without the requirement a taken address is refused, as before.
    let plain = TestApp::spawn_on(Arc::clone(&app.db), &[]).await;
    let taken = plain
        .signup("hal@example.com", PASSWORD, "Hal")
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
}

async fn an_unverified_account_gets_no_second_factor_challenge(backend: Backend) {
    let sink = MailSink::start();
    let before = spawn_with_mail(backend, &sink, &[]).await;
    let email = "jo@example.com";
    crate::totp::user_with_totp(&before, email).await;
    let challenge = before.login(email, PASSWORD).await.expect("login");
    assert!(challenge.mfa_challenge.is_some(), "TOTP is on");

    // The same account once the server requires verified addresses.
    let flags = sink.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(&REQUIRE_VERIFIED);
    let after = TestApp::spawn_on(Arc::clone(&before.db), &args).await;
    assert_status(
        after.login(email, PASSWORD).await.map(drop),
        Code::FailedPrecondition,
        "email not verified",
    );
}

async fn a_verification_link_proves_only_the_address_it_was_mailed_to(backend: Backend) {
    let sink = MailSink::start();
    let app = spawn_with_mail(backend, &sink, &[]).await;
    let admin = admin_token(&app).await;
    let email = "kai@example.com";
    let (user, access) = app.user_with_token(email).await;
    let token = token_of(&sink, VERIFY, email, 1).await;
    let request = UpdateUserRequest {
        user: Some(User {
            id: user.id.clone(),
            email: "kai@elsewhere.example".into(),
            ..User::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["email".into()],
        }),
    };
    app.admin_client()
        .await
        .update_user(authorized(request, &admin))
        .await
        .expect("an operator changes the email");
    assert_bad_link(verify(&app, &token).await, "a link to the old address");
    assert!(!app.get_me(&access).await.expect("me").email_verified);
}
