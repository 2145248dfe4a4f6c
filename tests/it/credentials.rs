//! Credentials under races and probing: logins and password changes that
//! overlap, duplicate signups, timing across bcrypt costs, guessing with a
//! stolen token.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use authd::{Application, api::proto::SignupRequest};
use tonic::Code;

use crate::support::{self, Backend, PASSWORD, TestApp, TestDb, backend_tests};

backend_tests!(
    no_session_outlives_the_password_it_logged_in_with,
    of_parallel_password_changes_exactly_one_applies,
    duplicate_signups_spend_no_hash,
    unknown_emails_take_as_long_after_the_cost_is_raised,
    unknown_emails_take_as_long_after_the_cost_is_lowered,
    guessing_with_a_stolen_token_ends_it_and_spares_the_owner,
);

/// Logins with the old password keep coming for as long as a password
/// change is in flight, so some of them verify the old hash just before the
/// change commits. Whatever the interleaving, once the change is done no
/// session but the changer's may be live.
async fn no_session_outlives_the_password_it_logged_in_with(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = app.client().await;
    for attempt in 0..16 {
        let email = format!("race{attempt}@example.com");
        app.signup(&email, PASSWORD, "racer").await.expect("signup");
        let changer = app.login(&email, PASSWORD).await.expect("login");
        let change = tokio::spawn({
            let app_client = client.clone();
            let token = changer.access_token.clone();
            async move {
                let mut client = app_client;
                client
                    .change_password(support::authorized(
                        authd::api::proto::ChangePasswordRequest {
                            current_password: PASSWORD.into(),
                            new_password: "a brand new passphrase".into(),
                        },
                        &token,
                    ))
                    .await
            }
        });
        let mut logins = Vec::new();
        while !change.is_finished() && logins.len() < 20 {
            let mut client = client.clone();
            let email = email.clone();
            logins.push(tokio::spawn(async move {
                client
                    .login(authd::api::proto::LoginRequest {
                        email,
                        password: PASSWORD.into(),
                        device_label: String::new(),
                    })
                    .await
            }));
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        change.await.expect("join").expect("change password");
        for login in logins {
            let Ok(session) = login.await.expect("join") else {
                continue;
            };
            let session = session.into_inner();
            let me = app.get_me(&session.access_token).await;
            assert_eq!(
                me.expect_err("a session of the old password is live")
                    .code(),
                Code::Unauthenticated,
                "attempt {attempt}"
            );
            assert!(app.refresh(&session.refresh_token).await.is_err());
        }
        let live = app
            .db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE u.email = '{email}' AND s.revoked_at IS NULL"
            ))
            .await;
        assert_eq!(live, 1, "attempt {attempt}: only the changer's session");
    }
}

/// A dearer cost keeps all five changes in flight at once: each has checked
/// the current password before any of them writes.
async fn of_parallel_password_changes_exactly_one_applies(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--bcrypt-cost", "10"]).await;
    let email = "para@example.com";
    app.signup(email, PASSWORD, "para").await.expect("signup");
    let session = app.login(email, PASSWORD).await.expect("login");
    let candidates: Vec<String> = (0..5).map(|i| format!("new passphrase {i}")).collect();
    let changes = candidates
        .iter()
        .map(|new| app.change_password(&session.access_token, PASSWORD, new));
    let results = futures_util::future::join_all(changes).await;
    let winners: Vec<&String> = candidates
        .iter()
        .zip(&results)
        .filter_map(|(new, result)| result.is_ok().then_some(new))
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
            assert_eq!(
                status.message(),
                "the password was changed by another request meanwhile; nothing was changed"
            );
        }
    }
    for new in &candidates {
        let login = app.login(email, new).await;
        assert_eq!(login.is_ok(), new == winners[0], "{new}: {login:?}");
    }
    app.get_me(&session.access_token)
        .await
        .expect("the changer's session stays");
}

/// One hashing permit per core and a one-place queue: before, duplicates
/// queued for a hash and most were refused as "server busy".
async fn duplicate_signups_spend_no_hash(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let config = support::config(
        &db,
        &["--hash-queue", "1", "--metrics-listen", "127.0.0.1:0"],
    )
    .expect("config");
    let app = Application::build(&config).await.expect("build");
    let metrics = app.metrics_addr().expect("metrics listener");
    let app = TestApp::serve(app, db);
    let client = app.client().await;
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .signup(SignupRequest {
                    email: "dup@example.com".into(),
                    password: PASSWORD.into(),
                    username: format!("dup {i}"),
                })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let codes: Vec<Code> = results
        .iter()
        .map(|result| {
            result
                .as_ref()
                .map_or_else(tonic::Status::code, |_| Code::Ok)
        })
        .collect();
    assert_eq!(codes.iter().filter(|&&code| code == Code::Ok).count(), 1);
    assert!(
        codes
            .iter()
            .all(|code| matches!(code, Code::Ok | Code::AlreadyExists)),
        "{results:?}"
    );
    let body = scrape(metrics).await;
    let hashes: f64 = body
        .lines()
        .find_map(|line| line.strip_prefix("authd_hash_wait_seconds_count "))
        .expect("hash count")
        .parse()
        .expect("number");
    assert!(hashes <= 2.0, "{hashes} hashes for one new user");
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}/metrics").parse().expect("uri");
    let body = client.get(uri).await.expect("scrape").into_body();
    let bytes = body.collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

async fn unknown_emails_take_as_long_after_the_cost_is_raised(backend: Backend) {
    compare_after_cost_change(backend, "4", "10").await;
}

async fn unknown_emails_take_as_long_after_the_cost_is_lowered(backend: Backend) {
    compare_after_cost_change(backend, "10", "4").await;
}

/// Accounts made at one cost, then a restart at another: wrong-password
/// logins for a real email and for an unknown one must take about the same
/// time. Medians of interleaved calls, and a wide margin, since the two
/// costs differ 64-fold.
async fn compare_after_cost_change(backend: Backend, made_at: &str, restarted_at: &str) {
    let db = Arc::new(TestDb::new(backend).await);
    let app = TestApp::spawn_on(Arc::clone(&db), &["--bcrypt-cost", made_at]).await;
    app.signup("known@example.com", PASSWORD, "known")
        .await
        .expect("signup");
    app.stop().await;
    let app = TestApp::spawn_on(
        db,
        &["--bcrypt-cost", restarted_at, "--lockout-threshold", "1000"],
    )
    .await;
    let timed = async |email: &str| {
        let started = Instant::now();
        let refused = app.login(email, "not the password").await;
        assert_eq!(refused.expect_err(email).code(), Code::Unauthenticated);
        started.elapsed()
    };
    timed("known@example.com").await;
    timed("nobody@example.com").await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        known.push(timed("known@example.com").await);
        unknown.push(timed("nobody@example.com").await);
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64()
    };
    let ratio = median(known) / median(unknown);
    assert!(
        (0.6..1.6).contains(&ratio),
        "made at {made_at}, restarted at {restarted_at}: known/unknown = {ratio:.2}"
    );
}

/// A thief with the owner's access token guesses current passwords. The
/// guesses count for that session only: Login is never locked for the
/// owner, and the guess that reaches the lockout threshold ends the thief's
/// session, however long the thief waited between guesses.
async fn guessing_with_a_stolen_token_ends_it_and_spares_the_owner(backend: Backend) {
    stolen_token_guesses(backend, &[]).await;
}

/// The same with the counters in Redis, under a prefix of this test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stolen_token_guesses_are_counted_alike_in_redis() {
    let prefix = format!("authd-test-{}:", uuid::Uuid::now_v7().simple());
    let redis = ["--redis-url", "redis://127.0.0.1:6379/", "--redis-prefix"];
    let args: Vec<&str> = redis.into_iter().chain([prefix.as_str()]).collect();
    stolen_token_guesses(Backend::Sqlite, &args).await;
}

async fn stolen_token_guesses(backend: Backend, counters: &[&str]) {
    let args: Vec<&str> = counters
        .iter()
        .copied()
        .chain(["--lockout-threshold", "3"])
        .collect();
    let app = TestApp::spawn_with(backend, &args).await;
    let email = "owner@example.com";
    app.signup(email, PASSWORD, "owner").await.expect("signup");
    let stolen = app.login(email, PASSWORD).await.expect("login");
    let owners = app.login(email, PASSWORD).await.expect("login");
    let guess = async |guess: &str| {
        app.change_password(&stolen.access_token, guess, "the thief's own one")
            .await
            .expect_err(guess)
    };
    for wrong in ["guess 1", "guess 2"] {
        let refused = guess(wrong).await;
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "current password is incorrect");
    }
    let ended = guess("guess 3").await;
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(
        ended.message(),
        "too many wrong current passwords: this session has ended, log in again"
    );
    assert_eq!(
        app.get_me(&stolen.access_token)
            .await
            .expect_err("revoked")
            .code(),
        Code::Unauthenticated
    );
    assert!(app.refresh(&stolen.refresh_token).await.is_err());
    assert_eq!(guess(PASSWORD).await.code(), Code::Unauthenticated);
    app.login(email, PASSWORD)
        .await
        .expect("three wrong guesses, and the owner's Login is not locked");
    app.change_password(&owners.access_token, PASSWORD, "the rightful new one")
        .await
        .expect("the owner's own session may still change it");
    app.login(email, "the rightful new one")
        .await
        .expect("new password");
}
