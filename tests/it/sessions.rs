use std::{sync::Arc, time::Duration};

use tonic::Code;

use crate::support::{Backend, PASSWORD, TestApp, TestDb, backend_tests, jwt_claims};

backend_tests!(
    login_starts_a_session_that_refresh_continues,
    a_refresh_token_works_once,
    a_racing_client_gets_the_same_successor_within_the_grace,
    concurrent_refreshes_leave_one_live_token,
    bad_refresh_tokens_are_refused_alike,
    an_expired_refresh_token_is_refused,
    logout_ends_the_session_at_once,
    logout_everywhere_ends_every_session,
    change_password_ends_every_other_session,
    change_password_checks_both_passwords,
    introspection_reports_active_tokens_only,
    two_replicas_behave_as_one_service,
);

const EMAIL: &str = "vera@example.com";

async fn login(app: &TestApp) -> authd::api::proto::LoginResponse {
    app.login(EMAIL, PASSWORD).await.expect("login")
}

async fn login_starts_a_session_that_refresh_continues(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let first = login(&app).await;
    assert_eq!(first.refresh_token.len(), 43, "256 random bits, base64url");
    let sid = jwt_claims(&first.access_token)["sid"].clone();
    assert!(sid.is_string());

    let next = app.refresh(&first.refresh_token).await.expect("refresh");
    assert_eq!(next.token_type, "Bearer");
    assert_eq!(next.expires_in, 900);
    assert_ne!(next.refresh_token, first.refresh_token);
    assert_ne!(next.access_token, first.access_token);
    assert_eq!(jwt_claims(&next.access_token)["sid"], sid, "same session");
    assert_eq!(
        app.get_me(&next.access_token).await.expect("get_me").id,
        user.id
    );
    app.refresh(&next.refresh_token)
        .await
        .expect("the successor works in turn");

    let stored = app
        .db
        .count(&format!(
            "SELECT COUNT(*) AS n FROM refresh_tokens WHERE token_hash = '{}'",
            first.refresh_token
        ))
        .await;
    assert_eq!(stored, 0, "refresh tokens are stored only as hashes");
}

async fn a_refresh_token_works_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--refresh-reuse-grace", "0s"]).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let first = login(&app).await;
    let second = app.refresh(&first.refresh_token).await.expect("refresh");

    let reuse = app.refresh(&first.refresh_token).await.expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert_eq!(reuse.message(), "invalid refresh token");
    // Reuse means theft: the whole session is gone, tokens from it included.
    let successor = app
        .refresh(&second.refresh_token)
        .await
        .expect_err("revoked");
    assert_eq!(successor.code(), Code::Unauthenticated);
    for access in [&first.access_token, &second.access_token] {
        let status = app.get_me(access).await.expect_err("session revoked");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let other = login(&app).await;
    app.get_me(&other.access_token)
        .await
        .expect("other sessions are untouched");
}

async fn a_racing_client_gets_the_same_successor_within_the_grace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let first = login(&app).await;
    let a = app.refresh(&first.refresh_token).await.expect("refresh");
    let b = app
        .refresh(&first.refresh_token)
        .await
        .expect("replay in grace");
    assert_eq!(a.refresh_token, b.refresh_token, "the same successor");
    app.get_me(&b.access_token)
        .await
        .expect("the session lives");
    // Once the successor is spent, the stale duplicate no longer works, but
    // the session is not punished for it.
    let c = app.refresh(&a.refresh_token).await.expect("successor");
    let stale = app.refresh(&first.refresh_token).await.expect_err("stale");
    assert_eq!(stale.code(), Code::Unauthenticated);
    app.get_me(&c.access_token).await.expect("still live");
}

async fn concurrent_refreshes_leave_one_live_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let first = login(&app).await;
    let calls = (0..10).map(|_| app.refresh(&first.refresh_token));
    let results = futures_util::future::join_all(calls).await;
    let tokens: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|r| {
            r.expect("every racer succeeds within the grace")
                .refresh_token
        })
        .collect();
    assert_eq!(tokens.len(), 1, "all racers got the same successor");
    let live = app
        .db
        .count("SELECT COUNT(*) AS n FROM refresh_tokens WHERE rotated_at IS NULL")
        .await;
    assert_eq!(live, 1, "one session, one live refresh token");
}

async fn bad_refresh_tokens_are_refused_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let session = login(&app).await;
    for token in [
        "not-a-token".to_owned(),
        "A".repeat(43),
        session.access_token.clone(),
        format!("{}x", session.refresh_token),
    ] {
        let status = app.refresh(&token).await.expect_err(&token);
        assert_eq!(status.code(), Code::Unauthenticated, "{token}");
        assert_eq!(status.message(), "invalid refresh token");
    }
    let empty = app.refresh("").await.expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

async fn an_expired_refresh_token_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--refresh-ttl", "1s"]).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let session = login(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = app
        .refresh(&session.refresh_token)
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid refresh token");
}

async fn logout_ends_the_session_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let phone = login(&app).await;
    let laptop = login(&app).await;
    app.logout(&phone.access_token, false)
        .await
        .expect("logout");

    let status = app
        .get_me(&phone.access_token)
        .await
        .expect_err("logged out");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app
        .refresh(&phone.refresh_token)
        .await
        .expect_err("logged out");
    assert_eq!(status.code(), Code::Unauthenticated);
    let again = app
        .logout(&phone.access_token, false)
        .await
        .expect_err("twice");
    assert_eq!(again.code(), Code::Unauthenticated);
    app.get_me(&laptop.access_token)
        .await
        .expect("other session lives");
    let unauthenticated = app
        .client()
        .await
        .logout(authd::api::proto::LogoutRequest { all_sessions: true })
        .await
        .expect_err("logout needs a token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

async fn logout_everywhere_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    app.signup("walt@example.com", PASSWORD, "walt")
        .await
        .expect("signup");
    let sessions = [login(&app).await, login(&app).await];
    let someone_else = app
        .login("walt@example.com", PASSWORD)
        .await
        .expect("login");
    app.logout(&sessions[0].access_token, true)
        .await
        .expect("logout");
    for session in &sessions {
        assert!(app.get_me(&session.access_token).await.is_err());
        assert!(app.refresh(&session.refresh_token).await.is_err());
    }
    app.get_me(&someone_else.access_token)
        .await
        .expect("other users are untouched");
}

async fn change_password_ends_every_other_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let current = login(&app).await;
    let other = login(&app).await;
    let new_password = "a much better passphrase";
    app.change_password(&current.access_token, PASSWORD, new_password)
        .await
        .expect("change password");

    app.get_me(&current.access_token)
        .await
        .expect("the calling session stays");
    app.refresh(&current.refresh_token)
        .await
        .expect("and can refresh");
    assert_eq!(
        app.get_me(&other.access_token)
            .await
            .expect_err("other session")
            .code(),
        Code::Unauthenticated
    );
    assert!(app.refresh(&other.refresh_token).await.is_err());
    let old = app.login(EMAIL, PASSWORD).await.expect_err("old password");
    assert_eq!(old.code(), Code::Unauthenticated);
    app.login(EMAIL, new_password).await.expect("new password");
}

async fn change_password_checks_both_passwords(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let session = login(&app).await;
    let wrong = app
        .change_password(&session.access_token, "not my password", "a new passphrase")
        .await
        .expect_err("wrong current password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), "current password is incorrect");
    let weak = app
        .change_password(&session.access_token, PASSWORD, "short")
        .await
        .expect_err("weak new password");
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert!(
        weak.message().contains("new_password"),
        "{}",
        weak.message()
    );
    app.login(EMAIL, PASSWORD)
        .await
        .expect("password unchanged");
    let no_token = app
        .client()
        .await
        .change_password(authd::api::proto::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "a new passphrase".into(),
        })
        .await
        .expect_err("needs a token");
    assert_eq!(no_token.code(), Code::Unauthenticated);
}

async fn introspection_reports_active_tokens_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.signup(EMAIL, PASSWORD, "vera").await.expect("signup");
    let session = login(&app).await;
    let active = app
        .introspect(&session.access_token)
        .await
        .expect("introspect");
    let claims = jwt_claims(&session.access_token);
    assert!(active.active);
    assert_eq!(active.sub, user.id);
    assert_eq!(active.sid, claims["sid"].as_str().expect("sid"));
    assert_eq!(active.exp, claims["exp"].as_i64().expect("exp"));
    assert_eq!(
        (active.iss.as_str(), active.aud.as_str()),
        ("authd", "authd")
    );
    assert_eq!(active.token_type, "access_token");

    let garbage = app.introspect("garbage").await.expect("introspect");
    assert_eq!(
        garbage,
        Default::default(),
        "inactive tokens reveal nothing"
    );
    app.logout(&session.access_token, false)
        .await
        .expect("logout");
    let revoked = app
        .introspect(&session.access_token)
        .await
        .expect("introspect");
    assert!(!revoked.active);
    let empty = app.introspect("").await.expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

async fn two_replicas_behave_as_one_service(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let (a, b) = tokio::join!(
        TestApp::spawn_on(Arc::clone(&db), &[]),
        TestApp::spawn_on(Arc::clone(&db), &[]),
    );
    let user = a
        .signup(EMAIL, PASSWORD, "vera")
        .await
        .expect("signup on a");
    let on_a = a.login(EMAIL, PASSWORD).await.expect("login on a");
    let on_b = b.refresh(&on_a.refresh_token).await.expect("refresh on b");
    assert_eq!(
        b.get_me(&on_b.access_token).await.expect("get_me on b").id,
        user.id
    );
    a.logout(&on_b.access_token, false)
        .await
        .expect("logout on a");
    // The refresh token is checked in the database: refused at once. The
    // access token is checked against b's revocation view, which learns of
    // a's logout within a second.
    assert!(b.refresh(&on_b.refresh_token).await.is_err());
    crate::support::eventually("b refuses the logged-out token", || async {
        b.get_me(&on_b.access_token)
            .await
            .is_err_and(|status| status.code() == Code::Unauthenticated)
    })
    .await;
}
