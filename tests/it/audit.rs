use std::{collections::HashSet, sync::Arc, time::Duration};

use authd::api::proto::admin::{
    AuditEvent, ListAuditEventsRequest, WatchAuditEventsRequest, WatchAuditEventsResponse,
};
use futures_util::StreamExt;
use tonic::{Code, Streaming};

use crate::support::{Backend, PASSWORD, Process, TestApp, TestDb, authorized, backend_tests};

backend_tests!(
    account_events_are_recorded_without_personal_data,
    audit_events_page_newest_first_with_filters,
    page_tokens_are_bound_to_their_filters,
    only_admins_and_auditors_read_the_trail,
    a_watch_sees_events_of_every_replica_and_resumes_without_gaps,
    concurrent_changes_reach_a_watch_once_each_in_order,
    events_older_than_the_retention_are_deleted,
    a_throttled_login_is_recorded,
    a_killed_process_leaves_no_change_without_its_event,
);

const ADMIN: &str = "root@example.com";

async fn list(app: &TestApp, token: &str, request: ListAuditEventsRequest) -> Vec<AuditEvent> {
    app.admin_client()
        .await
        .list_audit_events(authorized(request, token))
        .await
        .expect("list audit events")
        .into_inner()
        .events
}

async fn of_type(app: &TestApp, token: &str, kind: &str) -> Vec<AuditEvent> {
    list(
        app,
        token,
        ListAuditEventsRequest {
            r#type: kind.into(),
            page_size: 500,
            ..Default::default()
        },
    )
    .await
}

async fn account_events_are_recorded_without_personal_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (admin, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    let user = app
        .signup("ana@example.com", PASSWORD, "Ana Lima")
        .await
        .expect("signup");
    let session = app.login("ana@example.com", PASSWORD).await.expect("login");
    let status = app
        .login("ana@example.com", "wrong password!")
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);
    app.login("nobody@example.com", PASSWORD)
        .await
        .expect_err("unknown email");
    let next = app.refresh(&session.refresh_token).await.expect("refresh");
    app.change_password(&next.access_token, PASSWORD, "another good one")
        .await
        .expect("change password");
    // Outside the grace interval a spent token is theft.
    app.db
        .execute("UPDATE refresh_tokens SET rotated_at = '2000-01-01 00:00:00' WHERE rotated_at IS NOT NULL")
        .await;
    app.refresh(&session.refresh_token)
        .await
        .expect_err("reused refresh token");
    app.logout(&token, false).await.expect("logout");
    let (_, token) = app
        .user_with_roles("auditor@example.com", &["auditor"])
        .await;

    let signed_up = of_type(&app, &token, "user.signed_up").await;
    let ana = signed_up
        .iter()
        .find(|event| event.user_id == user.id)
        .expect("signup recorded");
    assert_eq!(
        (ana.actor_type.as_str(), ana.actor_id.as_str()),
        ("user", user.id.as_str())
    );
    assert_eq!(ana.client_address, "127.0.0.1");
    assert!(!ana.request_id.is_empty(), "the call's request id");

    let succeeded = of_type(&app, &token, "login.succeeded").await;
    let ana_login = succeeded
        .iter()
        .find(|event| event.user_id == user.id)
        .expect("login recorded");
    assert_eq!(
        ana_login.session_id,
        crate::support::jwt_claims(&session.access_token)["sid"]
            .as_str()
            .expect("sid")
    );

    let failed = of_type(&app, &token, "login.failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let known = failed
        .iter()
        .find(|event| event.user_id == user.id)
        .expect("failure of a known user");
    assert_eq!(known.details["reason"], "invalid_credentials");
    let unknown = failed
        .iter()
        .find(|event| event.user_id.is_empty())
        .expect("failure of an unknown email");
    assert_eq!(unknown.details["email_hash"].len(), 16);
    assert!(unknown.actor_id.is_empty());

    let reuse = of_type(&app, &token, "refresh.reuse_detected").await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].user_id, user.id);
    assert_eq!(of_type(&app, &token, "password.changed").await.len(), 1);
    let logout = of_type(&app, &token, "session.revoked").await;
    assert!(
        logout
            .iter()
            .any(|event| event.user_id == admin.id && event.details["reason"] == "logout"),
        "{logout:?}"
    );
    let keys = of_type(&app, &token, "signing_key.rotated").await;
    assert_eq!(keys.len(), 1, "the first signing key");
    assert_eq!(keys[0].actor_id, "system");

    let stored = app
        .db
        .count(
            "SELECT COUNT(*) AS n FROM audit_events WHERE details LIKE '%example.com%' \
             OR details LIKE '%Ana%' OR details LIKE '%password%'",
        )
        .await;
    assert_eq!(stored, 0, "no email, name or password in the trail");
}

async fn audit_events_page_newest_first_with_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    let mut users = Vec::new();
    for n in 0..7 {
        let email = format!("user{n}@example.com");
        users.push(app.signup(&email, PASSWORD, "u").await.expect("signup"));
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .admin_client()
            .await
            .list_audit_events(authorized(
                ListAuditEventsRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                    r#type: "user.signed_up".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.events.len() <= 3);
        seen.extend(page.events.into_iter().map(|event| event.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut expected: Vec<String> = users.iter().rev().map(|user| user.id.clone()).collect();
    // The admin signed up first, so is listed last.
    expected.push(seen.last().cloned().expect("the admin's signup"));
    assert_eq!(seen, expected, "newest first, each once");

    let about_one = list(
        &app,
        &token,
        ListAuditEventsRequest {
            user_id: users[3].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(about_one.len(), 1);
    assert_eq!(about_one[0].r#type, "user.signed_up");

    let now = std::time::SystemTime::now();
    let future = list(
        &app,
        &token,
        ListAuditEventsRequest {
            since: Some((now + Duration::from_secs(3600)).into()),
            ..Default::default()
        },
    )
    .await;
    assert!(future.is_empty());
    let past = list(
        &app,
        &token,
        ListAuditEventsRequest {
            until: Some((now + Duration::from_secs(3600)).into()),
            page_size: 500,
            ..Default::default()
        },
    )
    .await;
    assert!(past.len() >= 8);

    for (request, field) in [
        (
            ListAuditEventsRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListAuditEventsRequest {
                r#type: "user.exploded".into(),
                ..Default::default()
            },
            "type",
        ),
        (
            ListAuditEventsRequest {
                user_id: "bob".into(),
                ..Default::default()
            },
            "user_id",
        ),
        (
            ListAuditEventsRequest {
                actor_id: "root".into(),
                ..Default::default()
            },
            "actor_id",
        ),
    ] {
        let status = app
            .admin_client()
            .await
            .list_audit_events(authorized(request, &token))
            .await
            .expect_err("invalid request");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
    }
}

async fn page_tokens_are_bound_to_their_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    for n in 0..3 {
        app.signup(&format!("p{n}@example.com"), PASSWORD, "p")
            .await
            .expect("signup");
    }
    let first = app
        .admin_client()
        .await
        .list_audit_events(authorized(
            ListAuditEventsRequest {
                page_size: 1,
                r#type: "user.signed_up".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("first page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    for (page_token, kind) in [
        (first.next_page_token.clone(), "login.succeeded"),
        ("bm90LWEtdG9rZW4".to_owned(), "user.signed_up"),
        ("!!".to_owned(), "user.signed_up"),
    ] {
        let status = app
            .admin_client()
            .await
            .list_audit_events(authorized(
                ListAuditEventsRequest {
                    page_size: 1,
                    page_token,
                    r#type: kind.into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect_err("a token for other filters");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token"));
    }
}

async fn only_admins_and_auditors_read_the_trail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, plain) = app.user_with_token("plain@example.com").await;
    let (_, other) = app
        .user_with_roles("billing@example.com", &["billing"])
        .await;
    let (_, auditor) = app.user_with_roles("audit@example.com", &["auditor"]).await;
    for token in [&plain, &other] {
        let status = app
            .admin_client()
            .await
            .list_audit_events(authorized(ListAuditEventsRequest::default(), token))
            .await
            .expect_err("no role");
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = app
            .admin_client()
            .await
            .watch_audit_events(authorized(WatchAuditEventsRequest::default(), token))
            .await
            .expect_err("no role");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let status = app
        .admin_client()
        .await
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        !list(&app, &auditor, ListAuditEventsRequest::default())
            .await
            .is_empty()
    );

    // A token whose session has ended reads nothing, at once.
    app.logout(&auditor, false).await.expect("logout");
    let status = app
        .admin_client()
        .await
        .list_audit_events(authorized(ListAuditEventsRequest::default(), &auditor))
        .await
        .expect_err("revoked session");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn watch(app: &TestApp, token: &str, cursor: &str) -> Streaming<WatchAuditEventsResponse> {
    app.admin_client()
        .await
        .watch_audit_events(authorized(
            WatchAuditEventsRequest {
                cursor: cursor.into(),
            },
            token,
        ))
        .await
        .expect("watch")
        .into_inner()
}

async fn next_event(stream: &mut Streaming<WatchAuditEventsResponse>) -> AuditEvent {
    tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("an event within a second or so")
        .expect("the stream goes on")
        .expect("an event, not an error")
        .event
        .expect("event")
}

async fn a_watch_sees_events_of_every_replica_and_resumes_without_gaps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    let replica = TestApp::spawn_on(Arc::clone(&app.db), &[]).await;

    let mut stream = watch(&app, &token, "").await;
    let mut backlog = Vec::new();
    // The signing key, the admin's signup and login: all retained events.
    for _ in 0..3 {
        backlog.push(next_event(&mut stream).await);
    }
    let kinds: Vec<_> = backlog.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        ["signing_key.rotated", "user.signed_up", "login.succeeded"]
    );

    let elsewhere = replica
        .signup("far@example.com", PASSWORD, "far")
        .await
        .expect("signup on the other replica");
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.r#type.as_str(), event.user_id.as_str()),
        ("user.signed_up", elsewhere.id.as_str())
    );
    drop(stream);

    // Missed while disconnected, then resumed from the last cursor seen.
    let missed = app
        .signup("missed@example.com", PASSWORD, "m")
        .await
        .expect("signup");
    let mut resumed = watch(&replica, &token, &event.cursor).await;
    let first = next_event(&mut resumed).await;
    assert_eq!(
        first.user_id, missed.id,
        "nothing skipped, nothing repeated"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(700), resumed.next()).await;
    assert!(quiet.is_err(), "no more events: {quiet:?}");

    let status = app
        .admin_client()
        .await
        .watch_audit_events(authorized(
            WatchAuditEventsRequest {
                cursor: "yesterday".into(),
            },
            &token,
        ))
        .await
        .expect_err("bad cursor");
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn concurrent_changes_reach_a_watch_once_each_in_order(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    let start = list(&app, &token, ListAuditEventsRequest::default())
        .await
        .first()
        .map(|event| event.cursor.clone())
        .expect("some event");
    let mut stream = watch(&app, &token, &start).await;
    const WRITERS: usize = 8;
    const EACH: usize = 10;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                for n in 0..EACH {
                    app.signup(&format!("w{writer}-{n}@example.com"), PASSWORD, "w")
                        .await
                        .expect("signup");
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut last = start.parse::<i64>().expect("numeric cursor");
    while seen.len() < WRITERS * EACH {
        let event = next_event(&mut stream).await;
        let cursor = event.cursor.parse::<i64>().expect("numeric cursor");
        assert!(cursor > last, "cursors increase");
        last = cursor;
        assert_eq!(event.r#type, "user.signed_up");
        assert!(seen.insert(event.user_id), "each event once");
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let listed = of_type(&app, &token, "user.signed_up").await;
    assert_eq!(
        listed.len(),
        WRITERS * EACH + 1,
        "the watch saw every committed event"
    );
}

async fn events_older_than_the_retention_are_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    app.db
        .execute("UPDATE audit_events SET occurred_at = '2000-01-01 00:00:00' WHERE event_type = 'user.signed_up'")
        .await;
    let db = Arc::clone(&app.db);
    app.stop().await;
    let app = TestApp::spawn_on(db, &["--audit-retention", "30d"]).await;
    let mut left = i64::MAX;
    for _ in 0..50 {
        left = app
            .db
            .count("SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'user.signed_up'")
            .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "expired events deleted at startup");
    assert!(
        !of_type(&app, &token, "login.succeeded").await.is_empty(),
        "recent ones kept"
    );
}

async fn a_throttled_login_is_recorded(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--lockout-threshold", "2"]).await;
    let (_, token) = app.user_with_roles(ADMIN, &["admin"]).await;
    let user = app
        .signup("target@example.com", PASSWORD, "t")
        .await
        .expect("signup");
    for _ in 0..2 {
        app.login("target@example.com", "not the password")
            .await
            .expect_err("wrong password");
    }
    let status = app
        .login("target@example.com", PASSWORD)
        .await
        .expect_err("throttled");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let throttled = of_type(&app, &token, "login.throttled").await;
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert_eq!(throttled[0].user_id, user.id);
    assert_eq!(of_type(&app, &token, "login.failed").await.len(), 2);
}

/// Changes and their events commit together: killed in the middle of a
/// stream of signups, authd leaves neither a user without its event nor an
/// event without its user.
async fn a_killed_process_leaves_no_change_without_its_event(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let mut process = Process::start(
        &db,
        &["--signup-rate", "100000/min", "--hash-queue", "1000"],
    );
    let app = Arc::new(process.app(&db));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                for n in 0.. {
                    let email = format!("k{writer}-{n}@example.com");
                    if app.signup(&email, PASSWORD, "k").await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("reaped");
    for writer in writers {
        writer.await.expect("writer");
    }
    let users = db.count("SELECT COUNT(*) AS n FROM users").await;
    assert!(users > 0, "some signups committed before the kill");
    let orphans = db
        .count(
            "SELECT COUNT(*) AS n FROM users u WHERE NOT EXISTS (SELECT 1 FROM audit_events e \
             WHERE e.user_id = u.id AND e.event_type = 'user.signed_up')",
        )
        .await;
    let phantoms = db
        .count(
            "SELECT COUNT(*) AS n FROM audit_events e WHERE e.event_type = 'user.signed_up' \
             AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.user_id)",
        )
        .await;
    assert_eq!((orphans, phantoms), (0, 0), "of {users} users");
}
