//! Sessions as their user sees them: listed with their device, ended one at
//! a time, bounded by the session limits, and deleted once long ended.

use std::{sync::Arc, time::Duration};

use authd::api::proto::{
    ListSessionsRequest, LoginRequest, LoginResponse, RevokeSessionRequest, Session,
};
use futures_util::{StreamExt, stream};
use tonic::{Code, Request, Status};

use crate::support::{
    Backend, PASSWORD, TestApp, authorized, backend_tests, jwt_claims, violations,
};

backend_tests!(
    three_devices_are_listed_newest_first,
    revoking_a_device_ends_it_at_once,
    unknown_and_foreign_sessions_are_not_found_alike,
    a_bad_device_label_is_refused,
    a_login_beyond_the_limit_ends_the_least_recently_used_session,
    an_idle_session_dies,
    a_session_dies_at_its_maximum_age,
    housekeeping_keeps_the_tables_bounded,
);

const EMAIL: &str = "dora@example.com";

async fn login_from(app: &TestApp, email: &str, label: &str, agent: &str) -> LoginResponse {
    let mut request = Request::new(LoginRequest {
        email: email.into(),
        password: PASSWORD.into(),
        device_label: label.into(),
    });
    request
        .metadata_mut()
        .insert("user-agent", agent.parse().expect("ascii agent"));
    let response = app.client().await.login(request).await.expect("login");
    response.into_inner()
}

fn sid(login: &LoginResponse) -> String {
    jwt_claims(&login.access_token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned()
}

async fn list(app: &TestApp, token: &str) -> Result<Vec<Session>, Status> {
    let response = app
        .client()
        .await
        .list_sessions(authorized(ListSessionsRequest {}, token))
        .await?;
    Ok(response.into_inner().sessions)
}

async fn revoke(app: &TestApp, token: &str, session_id: &str) -> Result<(), Status> {
    app.client()
        .await
        .revoke_session(authorized(
            RevokeSessionRequest {
                session_id: session_id.into(),
            },
            token,
        ))
        .await
        .map(drop)
}

async fn revocations(app: &TestApp, reason: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT COUNT(*) AS n FROM audit_events \
             WHERE event_type = 'session.revoked' AND details LIKE '%\"{reason}\"%'"
        ))
        .await
}

async fn three_devices_are_listed_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let mut logins = Vec::new();
    for device in ["phone", "laptop", "tablet"] {
        logins.push(
            login_from(
                &app,
                EMAIL,
                &format!(" {device} "),
                &format!("app-on-{device}/1.0"),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let sessions = list(&app, &logins[1].access_token).await.expect("list");
    let ids: Vec<_> = sessions.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, [sid(&logins[2]), sid(&logins[1]), sid(&logins[0])]);
    let current: Vec<_> = sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, sid(&logins[1]));
    for (session, device) in sessions.iter().zip(["tablet", "laptop", "phone"]) {
        assert_eq!(session.device_label, device, "trimmed");
        assert!(
            session.user_agent.contains(&format!("app-on-{device}/1.0")),
            "{}",
            session.user_agent
        );
        assert_eq!(session.client_address, "127.0.0.1");
        let created = session.created_at.expect("created_at");
        let used = session.last_used_at.expect("last_used_at");
        assert!(created.seconds > 0 && used.seconds >= created.seconds);
    }

    let unlabelled = login_from(&app, EMAIL, "", "plain/1").await;
    let sessions = list(&app, &unlabelled.access_token).await.expect("list");
    assert_eq!(sessions.len(), 4);
    assert_eq!(sessions[0].device_label, "", "no label is empty");
}

async fn revoking_a_device_ends_it_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let phone = login_from(&app, EMAIL, "phone", "a/1").await;
    let lost = login_from(&app, EMAIL, "lost laptop", "b/1").await;

    revoke(&app, &phone.access_token, &sid(&lost))
        .await
        .expect("revoke");

    let refresh = app.refresh(&lost.refresh_token).await.expect_err("ended");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let me = app.get_me(&lost.access_token).await.expect_err("ended");
    assert_eq!(me.code(), Code::Unauthenticated);
    app.get_me(&phone.access_token)
        .await
        .expect("the other device goes on");
    let left = list(&app, &phone.access_token).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, sid(&phone));
    assert_eq!(revocations(&app, "revoked").await, 1);

    let again = revoke(&app, &phone.access_token, &sid(&lost))
        .await
        .expect_err("already revoked");
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(revocations(&app, "revoked").await, 1, "nothing ended twice");

    revoke(&app, &phone.access_token, &sid(&phone))
        .await
        .expect("a session may end itself");
    let after = list(&app, &phone.access_token).await.expect_err("ended");
    assert_eq!(after.code(), Code::Unauthenticated);
}

async fn unknown_and_foreign_sessions_are_not_found_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    app.signup("eve@example.com", PASSWORD, "eve")
        .await
        .expect("signup");
    let dora = login_from(&app, EMAIL, "", "a/1").await;
    let eve = login_from(&app, "eve@example.com", "", "b/1").await;

    let unknown = revoke(
        &app,
        &eve.access_token,
        "0190a6e2-0000-7000-8000-000000000000",
    )
    .await
    .expect_err("unknown");
    let foreign = revoke(&app, &eve.access_token, &sid(&dora))
        .await
        .expect_err("not eve's");
    for status in [&unknown, &foreign] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "session not found");
    }
    app.get_me(&dora.access_token)
        .await
        .expect("dora's session is untouched");

    let malformed = revoke(&app, &eve.access_token, "not-a-session")
        .await
        .expect_err("malformed");
    assert!(violations(&malformed).contains_key("session_id"));
    let unauthenticated = app
        .client()
        .await
        .revoke_session(RevokeSessionRequest {
            session_id: sid(&dora),
        })
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

async fn a_bad_device_label_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    for label in [
        "x".repeat(65),
        "zero\u{200B}width".into(),
        "bell\u{7}".into(),
    ] {
        let status = app
            .client()
            .await
            .login(LoginRequest {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                device_label: label.clone(),
            })
            .await
            .expect_err("bad label");
        let fields = violations(&status);
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["device_label"],
            "{label:?}"
        );
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM sessions").await, 0);
}

async fn a_login_beyond_the_limit_ends_the_least_recently_used_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--max-sessions-per-user", "2"]).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let first = login_from(&app, EMAIL, "first", "a/1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = login_from(&app, EMAIL, "second", "a/1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Used after the second: the second is now the least recently used.
    let first = app.refresh(&first.refresh_token).await.expect("refresh");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = login_from(&app, EMAIL, "third", "a/1").await;

    let ended = app.get_me(&second.access_token).await.expect_err("ended");
    assert_eq!(ended.code(), Code::Unauthenticated);
    app.refresh(&second.refresh_token)
        .await
        .expect_err("its refresh token too");
    app.get_me(&first.access_token).await.expect("kept");
    let labels: Vec<_> = list(&app, &third.access_token)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.device_label)
        .collect();
    assert_eq!(labels, ["third", "first"]);
    assert_eq!(revocations(&app, "session_limit").await, 1);
}

async fn an_idle_session_dies(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--session-idle-timeout", "1s"]).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let busy = login_from(&app, EMAIL, "busy", "a/1").await;
    let idle = login_from(&app, EMAIL, "idle", "a/1").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let busy = app.refresh(&busy.refresh_token).await.expect("in time");
    tokio::time::sleep(Duration::from_millis(600)).await;

    let me = app.get_me(&idle.access_token).await.expect_err("idle");
    assert_eq!(me.code(), Code::Unauthenticated);
    let refresh = app.refresh(&idle.refresh_token).await.expect_err("idle");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let sessions = list(&app, &busy.access_token).await.expect("busy is live");
    assert_eq!(sessions.len(), 1, "the idle session is not listed");
    assert_eq!(sessions[0].device_label, "busy");
}

async fn a_session_dies_at_its_maximum_age(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--session-max-age", "2s"]).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let login = login_from(&app, EMAIL, "", "a/1").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let next = app.refresh(&login.refresh_token).await.expect("young");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let refresh = app.refresh(&next.refresh_token).await.expect_err("too old");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let me = app.get_me(&next.access_token).await.expect_err("too old");
    assert_eq!(me.code(), Code::Unauthenticated);
}

async fn housekeeping_keeps_the_tables_bounded(backend: Backend) {
    // Logins in flight count towards the account lockout until they succeed.
    let retention = ["--session-retention", "1s", "--lockout-threshold", "1000"];
    let app = TestApp::spawn_with(backend, &retention).await;
    app.signup(EMAIL, PASSWORD, "dora").await.expect("signup");
    let kept = login_from(&app, EMAIL, "kept", "a/1").await;
    let kept_next = app.refresh(&kept.refresh_token).await.expect("refresh");
    let churn = (0..300).map(|_| async {
        let login = login_from(&app, EMAIL, "", "churn/1").await;
        let next = app.refresh(&login.refresh_token).await.expect("refresh");
        app.logout(&next.access_token, false).await.expect("logout");
    });
    stream::iter(churn)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // The live session's spent token, as if it had expired long ago: deleted
    // though its session lives on.
    app.db
        .execute(&format!(
            "UPDATE refresh_tokens SET expires_at = '2000-01-01 00:00:00' \
             WHERE session_id = '{}' AND rotated_at IS NOT NULL",
            sid(&kept)
        ))
        .await;
    assert!(app.db.count("SELECT COUNT(*) AS n FROM sessions").await > 300);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let db = Arc::clone(&app.db);
    app.stop().await;

    let app = TestApp::spawn_on(db, &retention).await;
    let count = |table: &'static str| {
        let db = Arc::clone(&app.db);
        async move {
            db.count(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .await
        }
    };
    for _ in 0..100 {
        if count("sessions").await <= 1 && count("refresh_tokens").await <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("sessions").await, 1, "only the live session is left");
    assert_eq!(count("refresh_tokens").await, 1, "only its live token");
    app.refresh(&kept_next.refresh_token)
        .await
        .expect("the live session survives");
}
