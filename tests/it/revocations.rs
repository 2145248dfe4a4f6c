//! The revocation feed: every way a session ends is refused at once on the
//! replica that ended it, within a second on the others, and streamed to
//! WatchRevocations watchers, who resume from a cursor without a gap.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use authd::api::proto::{
    IssueServiceTokenRequest, RevokeSessionRequest, User, WatchRevocationsRequest,
    WatchRevocationsResponse,
    admin::{
        CreateServiceAccountRequest, DeleteUserRequest, DisableUserRequest,
        RevokeUserSessionsRequest, UpdateUserRequest,
    },
};
use tonic::{Code, Status, Streaming};

use crate::support::{
    Backend, DEADLINE, PASSWORD, TestApp, TestDb, authorized, backend_tests, eventually,
    jwt_claims, violations,
};

backend_tests!(
    a_logged_out_token_is_refused_at_once,
    every_way_a_session_ends_is_streamed,
    watchers_resume_from_a_cursor_and_only_services_may_watch,
    housekeeping_deletes_expired_revocations,
    watches_beyond_the_cap_are_refused,
);

fn sid(access_token: &str) -> String {
    jwt_claims(access_token)["sid"]
        .as_str()
        .expect("a user token has a sid")
        .to_owned()
}

/// A service account's token, made through the admin API.
/// A new service account's API key.
async fn api_key(app: &TestApp, admin_token: &str) -> String {
    let request = CreateServiceAccountRequest {
        name: "verifier".into(),
        roles: vec![],
    };
    app.admin_client()
        .await
        .create_service_account(authorized(request, admin_token))
        .await
        .expect("create service account")
        .into_inner()
        .api_key
}

async fn service_token(app: &TestApp, admin_token: &str) -> String {
    let api_key = api_key(app, admin_token).await;
    app.client()
        .await
        .issue_service_token(IssueServiceTokenRequest { api_key })
        .await
        .expect("issue service token")
        .into_inner()
        .access_token
}

async fn watch(
    app: &TestApp,
    token: &str,
    cursor: &str,
) -> Result<Streaming<WatchRevocationsResponse>, Status> {
    let request = WatchRevocationsRequest {
        cursor: cursor.into(),
    };
    Ok(app
        .client()
        .await
        .watch_revocations(authorized(request, token))
        .await?
        .into_inner())
}

async fn next(stream: &mut Streaming<WatchRevocationsResponse>) -> WatchRevocationsResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("an entry within the deadline")
        .expect("the stream stays up")
        .expect("the stream does not end")
}

/// The revocations sent before the next heartbeat, and that heartbeat.
async fn until_heartbeat(
    stream: &mut Streaming<WatchRevocationsResponse>,
) -> (Vec<WatchRevocationsResponse>, WatchRevocationsResponse) {
    let mut revocations = Vec::new();
    loop {
        let entry = next(stream).await;
        if entry.session_id.is_empty() {
            return (revocations, entry);
        }
        revocations.push(entry);
    }
}

/// Reads the stream until every session in `expected` was sent; returns
/// all sent meanwhile.
async fn until_sent(
    stream: &mut Streaming<WatchRevocationsResponse>,
    expected: &BTreeSet<String>,
) -> Vec<WatchRevocationsResponse> {
    let mut sent = Vec::new();
    let started = Instant::now();
    while !expected.iter().all(|id| {
        sent.iter()
            .any(|e: &WatchRevocationsResponse| &e.session_id == id)
    }) {
        assert!(
            started.elapsed() < DEADLINE,
            "missing revocations: {expected:?} in {sent:?}"
        );
        let entry = next(stream).await;
        if !entry.session_id.is_empty() {
            sent.push(entry);
        }
    }
    sent
}

async fn a_logged_out_token_is_refused_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_token("alice@example.com").await;
    app.get_me(&token).await.expect("live before logout");
    app.logout(&token, false).await.expect("logout");
    let refused = app.get_me(&token).await.expect_err("refused after logout");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn every_way_a_session_ends_is_streamed(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            "--max-sessions-per-user",
            "2",
            "--refresh-reuse-grace",
            "0s",
        ],
    )
    .await;
    let (_, admin) = app.user_with_roles("root@example.com", &["admin"]).await;
    let service = service_token(&app, &admin).await;
    let mut stream = watch(&app, &service, "").await.expect("watch");
    let (backlog, _) = until_heartbeat(&mut stream).await;
    assert!(backlog.is_empty(), "nothing revoked yet: {backlog:?}");

    let login = |email: &'static str| {
        let app = &app;
        async move { app.login(email, PASSWORD).await.expect("login") }
    };
    let signup = |email: &'static str| {
        let app = &app;
        async move { app.signup(email, PASSWORD, "user").await.expect("signup") }
    };
    let mut ended: Vec<(&str, String)> = Vec::new();

    signup("logout@example.com").await;
    let token = login("logout@example.com").await.access_token;
    app.logout(&token, false).await.expect("logout");
    ended.push(("logout", token));

    signup("all@example.com").await;
    let first = login("all@example.com").await.access_token;
    let second = login("all@example.com").await.access_token;
    app.logout(&first, true).await.expect("logout all");
    ended.push(("logout all, this one", first));
    ended.push(("logout all, the other", second));

    signup("password@example.com").await;
    let keeper = login("password@example.com").await.access_token;
    let other = login("password@example.com").await.access_token;
    app.change_password(&keeper, PASSWORD, "another correct horse")
        .await
        .expect("change password");
    ended.push(("password change", other));

    signup("revoke@example.com").await;
    let keeper = login("revoke@example.com").await.access_token;
    let other = login("revoke@example.com").await.access_token;
    app.client()
        .await
        .revoke_session(authorized(
            RevokeSessionRequest {
                session_id: sid(&other),
            },
            &keeper,
        ))
        .await
        .expect("revoke session");
    ended.push(("RevokeSession", other));

    let user = signup("admin-revoke@example.com").await;
    let token = login("admin-revoke@example.com").await.access_token;
    app.admin_client()
        .await
        .revoke_user_sessions(authorized(
            RevokeUserSessionsRequest { id: user.id },
            &admin,
        ))
        .await
        .expect("admin revoke");
    ended.push(("admin revocation", token));

    let user = signup("disable@example.com").await;
    let token = login("disable@example.com").await.access_token;
    app.admin_client()
        .await
        .disable_user(authorized(DisableUserRequest { id: user.id }, &admin))
        .await
        .expect("disable");
    ended.push(("disable", token));

    let user = signup("delete@example.com").await;
    let token = login("delete@example.com").await.access_token;
    app.admin_client()
        .await
        .delete_user(authorized(DeleteUserRequest { id: user.id }, &admin))
        .await
        .expect("delete");
    ended.push(("delete", token));

    signup("limit@example.com").await;
    let oldest = login("limit@example.com").await.access_token;
    login("limit@example.com").await;
    login("limit@example.com").await;
    ended.push(("session limit", oldest));

    signup("reuse@example.com").await;
    let session = login("reuse@example.com").await;
    app.refresh(&session.refresh_token).await.expect("rotate");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let reused = app
        .refresh(&session.refresh_token)
        .await
        .expect_err("reuse refused");
    assert_eq!(reused.code(), Code::Unauthenticated);
    ended.push(("refresh reuse", session.access_token));

    for (how, token) in &ended {
        let refused = app.get_me(token).await.expect_err(how);
        assert_eq!(refused.code(), Code::Unauthenticated, "{how}");
    }
    let expected: BTreeSet<String> = ended.iter().map(|(_, token)| sid(token)).collect();
    let sent = until_sent(&mut stream, &expected).await;
    let cursors: Vec<i64> = sent
        .iter()
        .map(|entry| entry.cursor.parse().expect("decimal cursor"))
        .collect();
    assert!(cursors.is_sorted(), "sent in cursor order: {cursors:?}");
    for entry in &sent {
        let (revoked_at, not_after) = (
            entry.revoked_at.expect("revoked_at"),
            entry.not_after.expect("not_after"),
        );
        assert!(not_after.seconds > revoked_at.seconds, "{entry:?}");
    }

    // Then heartbeats, each with the last cursor sent.
    let last = sent.last().expect("sent some").cursor.clone();
    let (more, beat) = until_heartbeat(&mut stream).await;
    assert!(
        more.iter()
            .all(|entry| !expected.contains(&entry.session_id))
    );
    let (_, beat2) = until_heartbeat(&mut stream).await;
    if more.is_empty() {
        assert_eq!(beat.cursor, last);
        assert_eq!(beat2.cursor, last);
    }
}

async fn watchers_resume_from_a_cursor_and_only_services_may_watch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.user_with_roles("root@example.com", &["admin"]).await;
    let service = service_token(&app, &admin).await;

    let user = app.user_with_token("user@example.com").await.1;
    let denied = watch(&app, &user, "").await.expect_err("user token");
    assert_eq!(denied.code(), Code::PermissionDenied);
    for bad in ["abc", "-1", "1.5", " 1"] {
        let refused = watch(&app, &service, bad).await.expect_err(bad);
        assert!(violations(&refused).contains_key("cursor"), "{bad}");
    }

    let mut tokens = Vec::new();
    for _ in 0..3 {
        let token = app
            .login("user@example.com", PASSWORD)
            .await
            .expect("the call succeeds");
        app.logout(&token.access_token, false)
            .await
            .expect("the call succeeds");
        tokens.push(token.access_token);
    }
    let mut stream = watch(&app, &service, "").await.expect("the call succeeds");
    let (backlog, beat) = until_heartbeat(&mut stream).await;
    let sent: Vec<String> = backlog.iter().map(|e| e.session_id.clone()).collect();
    let expected: Vec<String> = tokens.iter().map(|t| sid(t)).collect();
    assert_eq!(sent, expected);
    assert_eq!(beat.cursor, backlog[2].cursor);

    // Resuming after the first sends only the later ones.
    let mut resumed = watch(&app, &service, &backlog[0].cursor)
        .await
        .expect("the call succeeds");
    let (rest, _) = until_heartbeat(&mut resumed).await;
    let rest: Vec<String> = rest.into_iter().map(|e| e.session_id).collect();
    assert_eq!(rest, expected[1..].to_vec());

    // A live revocation reaches both.
    let token = app
        .login("user@example.com", PASSWORD)
        .await
        .expect("the call succeeds");
    app.logout(&token.access_token, false)
        .await
        .expect("the call succeeds");
    let live = BTreeSet::from([sid(&token.access_token)]);
    until_sent(&mut stream, &live).await;
    until_sent(&mut resumed, &live).await;
}

async fn watches_beyond_the_cap_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--max-revocation-watches", "1"]).await;
    let (_, admin) = app.user_with_roles("root@example.com", &["admin"]).await;
    let service = service_token(&app, &admin).await;
    let mut first = watch(&app, &service, "").await.expect("first watch");
    until_heartbeat(&mut first).await;
    let refused = watch(&app, &service, "").await.expect_err("beyond the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    drop(first);
    eventually("a closed watch frees its place", || async {
        watch(&app, &service, "").await.is_ok()
    })
    .await;
}

async fn housekeeping_deletes_expired_revocations(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let first = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    first.stop().await;
    db.execute(
        "INSERT INTO revocations (session_id, user_id, revoked_at, not_after) VALUES \
         ('0190aaaa-0000-7000-8000-000000000001', '0190aaaa-0000-7000-8000-000000000002', \
          '2001-01-01 00:00:00', '2001-01-01 00:15:10'), \
         ('0190aaaa-0000-7000-8000-000000000003', '0190aaaa-0000-7000-8000-000000000002', \
          '2999-01-01 00:00:00', '2999-01-01 00:15:10')",
    )
    .await;
    // Housekeeping runs as a replica starts.
    let _app = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    eventually("the expired revocation is deleted", || async {
        db.count("SELECT COUNT(*) AS n FROM revocations WHERE not_after < '2002-01-01'")
            .await
            == 0
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM revocations").await,
        1,
        "the revocation still ahead is kept"
    );
}

/// Two replicas on one PostgreSQL: what one does, the other knows within
/// a second, profiles included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_learn_revocations_and_profile_changes() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let a = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let b = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let (_, admin) = a.user_with_roles("root@example.com", &["admin"]).await;
    let service = service_token(&a, &admin).await;
    let mut stream = watch(&b, &service, "").await.expect("the call succeeds");
    until_heartbeat(&mut stream).await;

    let (user, token) = a.user_with_token("user@example.com").await;
    assert_eq!(
        b.get_me(&token).await.expect("the call succeeds").username,
        "tester"
    );
    let renamed = User {
        username: "renamed".into(),
        ..user
    };
    a.admin_client()
        .await
        .update_user(authorized(
            UpdateUserRequest {
                user: Some(renamed),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["username".into()],
                }),
            },
            &admin,
        ))
        .await
        .expect("update user");
    eventually("B shows the new username", || async {
        b.get_me(&token).await.expect("the call succeeds").username == "renamed"
    })
    .await;

    a.logout(&token, false).await.expect("the call succeeds");
    eventually("B refuses the logged-out token", || async {
        b.get_me(&token)
            .await
            .is_err_and(|status| status.code() == Code::Unauthenticated)
    })
    .await;
    until_sent(&mut stream, &BTreeSet::from([sid(&token)])).await;
}

/// The access tokens of `n` sessions of one new user, logged in on `app`.
async fn sessions_of_new_user(app: &TestApp, n: usize) -> Vec<String> {
    app.signup("user@example.com", PASSWORD, "user")
        .await
        .expect("signup");
    let mut tokens = Vec::new();
    for _ in 0..n {
        let login = app.login("user@example.com", PASSWORD).await;
        tokens.push(login.expect("login").access_token);
    }
    tokens
}

/// A replica stopped while revocations happen on another misses none of
/// them once restarted, and a watcher that resumes with its last cursor
/// gets every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_and_a_resumed_watcher_miss_nothing() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let a = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let (_, admin) = a.user_with_roles("root@example.com", &["admin"]).await;
    let service = service_token(&a, &admin).await;
    let tokens = sessions_of_new_user(&a, 5).await;

    let b = crate::support::Process::start(&db, &["--shutdown-grace", "5s"]);
    let mut stream = watch(&b.app(&db), &service, "").await.expect("watch B");
    let (_, beat) = until_heartbeat(&mut stream).await;
    b.terminate();
    let ended = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the watch ends with the server");
    assert_eq!(
        ended.expect_err("ended by an error").code(),
        Code::Unavailable
    );

    for token in &tokens {
        a.logout(token, false).await.expect("logout on A");
    }
    let b = crate::support::Process::start(&db, &[]);
    let b_app = b.app(&db);
    let mut resumed = watch(&b_app, &service, &beat.cursor)
        .await
        .expect("resume on B");
    let expected: BTreeSet<String> = tokens.iter().map(|token| sid(token)).collect();
    let (sent, _) = until_heartbeat(&mut resumed).await;
    let sent: BTreeSet<String> = sent.into_iter().map(|entry| entry.session_id).collect();
    assert_eq!(sent, expected);
    // The heartbeat proves B's view current: it refuses every one.
    until_heartbeat(&mut resumed).await;
    for token in &tokens {
        let refused = b_app
            .get_me(token)
            .await
            .expect_err("revoked while B was down");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
}

/// What the issue asks of a backend: the verifier library, subscribed to
/// one of two replicas on one PostgreSQL, refuses a session ended on the
/// other within a second without calling authd per token, and misses none
/// of the sessions ended while its replica restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_verifier_refuses_sessions_ended_anywhere_across_a_restart() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let a = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let (_, admin) = a.user_with_roles("root@example.com", &["admin"]).await;
    let api_key = api_key(&a, &admin).await;
    let tokens = sessions_of_new_user(&a, 3).await;

    let b = crate::support::Process::start(&db, &[]);
    let b_addr = b.addr.to_string();
    let jwks = authd_verify::JwksVerifier::new(
        format!("http://{b_addr}/.well-known/jwks.json")
            .parse()
            .expect("url"),
        "authd",
        "authd",
    )
    .await
    .expect("jwks");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{b_addr}"))
        .expect("endpoint")
        .connect_lazy();
    // Failing closed: a token passes only while the feed is current, so an
    // accepted token proves the answer came from the subscription.
    let revocations = authd_verify::Revocations::builder(channel, api_key)
        .fallback(authd_verify::Fallback::Reject)
        .start();
    let verifier = revocations.wrap(jwks);
    let accepts = |token: String| {
        let verifier = Arc::clone(&verifier);
        async move {
            authd_verify::TokenVerifier::verify(&*verifier, &token)
                .await
                .is_some()
        }
    };
    for token in &tokens {
        eventually("the verifier accepts a live session", || {
            accepts(token.clone())
        })
        .await;
    }

    a.logout(&tokens[0], false).await.expect("logout on A");
    eventually("the verifier refuses the ended session", || async {
        !accepts(tokens[0].clone()).await
    })
    .await;
    assert!(accepts(tokens[1].clone()).await);

    b.terminate();
    a.logout(&tokens[1], false)
        .await
        .expect("logout on A while B is down");
    let _b = crate::support::Process::start(&db, &["--listen", &b_addr]);
    eventually("the verifier accepts a live session again", || {
        accepts(tokens[2].clone())
    })
    .await;
    assert!(
        !accepts(tokens[1].clone()).await,
        "a session ended while the verifier's replica was down is refused"
    );
    assert!(!accepts(tokens[0].clone()).await);
}
