//! Verified email addresses: the access token's `email_verified` claim, and
//! `AUTHD_REQUIRE_VERIFIED_EMAIL`, under which an unverified account may
//! not log in and Signup no longer tells whether an address is taken.

use std::{net::SocketAddr, sync::Arc};

use authd::Application;
use authd::api::proto::{User, admin::UpdateUserRequest};
use tonic::Code;

use crate::support::{
    self, Backend, PASSWORD, TestApp, TestDb, authorized, backend_tests, jwt_claims, sample, scrape,
};

backend_tests!(
    tokens_carry_email_verified_once_an_admin_verifies,
    an_unverified_account_may_not_log_in_when_verification_is_required,
    signup_hides_a_taken_address_when_verification_is_required,
);

const REQUIRE_VERIFIED: [&str; 2] = ["--require-verified-email", "true"];
const ADMIN_EMAIL: &str = "root@example.com";

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
    assert_eq!(
        email_verified_claim(&after.access_token),
        Some(serde_json::json!(true))
    );
    assert!(jwt_claims(&after.access_token).get("email").is_none());
    let refreshed = app.refresh(&before.refresh_token).await.expect("refresh");
    assert_eq!(
        email_verified_claim(&refreshed.access_token),
        Some(serde_json::json!(true))
    );
}

async fn an_unverified_account_may_not_log_in_when_verification_is_required(backend: Backend) {
    let app = TestApp::spawn_with(backend, &REQUIRE_VERIFIED).await;
    let admin = admin_token(&app).await;
    let email = "bea@example.com";
    let user = app.signup(email, PASSWORD, "Bea").await.expect("signup");

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

    verify_as_admin(&app, &admin, &user.id).await;
    let login = app.login(email, PASSWORD).await.expect("verified login");
    assert_eq!(
        email_verified_claim(&login.access_token),
        Some(serde_json::json!(true))
    );
}

/// An app that requires verified emails, with its metrics listener.
async fn spawn_requiring_verification(backend: Backend) -> (TestApp, SocketAddr) {
    let db = Arc::new(TestDb::new(backend).await);
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
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
    let (app, metrics) = spawn_requiring_verification(backend).await;
    let real = app
        .signup("cy@example.com", PASSWORD, "Cy")
        .await
        .expect("signup");
    assert_eq!(hashes(metrics).await, 1.0);

    let again = app
        .signup("  CY@Example.COM ", "another password", "Cy")
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

    // Nothing was stored: the address keeps its account and password.
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 1);
    let refused = app
        .login("cy@example.com", "another password")
        .await
        .expect_err("not the account's password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let unverified = app
        .login("cy@example.com", PASSWORD)
        .await
        .expect_err("unverified");
    assert_eq!(unverified.code(), Code::FailedPrecondition);

    // Without the requirement a taken address is refused, as before, and
    // costs no hash.
    let plain = TestApp::spawn_on(Arc::clone(&app.db), &[]).await;
    let taken = plain
        .signup("cy@example.com", PASSWORD, "Cy")
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
}
