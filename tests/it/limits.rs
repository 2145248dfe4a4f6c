//! Abuse resistance: account throttling and client rate limits, with the
//! counters in memory and in Redis.

use std::{sync::Arc, time::Duration};

use authd::api::proto::{IntrospectTokenRequest, LoginRequest, RefreshRequest, SignupRequest};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::support::{Backend, PASSWORD, TestApp, TestDb};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// Runs each named `async fn(Counters)` with in-memory and Redis counters.
macro_rules! counter_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Counters::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Counters::Redis).await;
                }
            )*
        }
    };
}

counter_tests!(
    failed_logins_throttle_the_account_until_the_wait_is_over,
    unknown_emails_are_throttled_the_same_way,
    parallel_wrong_guesses_cannot_pass_the_limit,
    login_and_signup_are_rate_limited_per_client,
    a_trusted_forwarded_header_names_the_client,
    ipv6_clients_share_the_limit_of_their_prefix,
    refresh_and_introspection_are_rate_limited_per_client,
);

#[derive(Clone, Copy)]
enum Counters {
    Memory,
    Redis,
}

impl Counters {
    /// Settings that select these counters; Redis keys get a prefix of
    /// their own so tests never see each other's counts.
    fn args(self) -> Vec<String> {
        match self {
            Counters::Memory => vec![],
            Counters::Redis => vec![
                "--redis-url".into(),
                REDIS_URL.into(),
                "--redis-prefix".into(),
                format!("authd-test-{}:", uuid::Uuid::now_v7().simple()),
            ],
        }
    }
}

async fn spawn(counters: Counters, limits: &[&str]) -> TestApp {
    let mut args: Vec<String> = counters.args();
    args.extend(limits.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestApp::spawn_with(Backend::Sqlite, &args).await
}

const LOCKOUT: [&str; 6] = [
    "--lockout-threshold",
    "5",
    "--lockout-base",
    "1s",
    "--lockout-max",
    "2s",
];

/// RESOURCE_EXHAUSTED, with a RetryInfo of at least one second.
fn assert_retry_later(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("google.rpc.RetryInfo");
    assert!(delay >= Duration::from_secs(1), "{delay:?}");
    delay
}

async fn failed_logins_throttle_the_account_until_the_wait_is_over(counters: Counters) {
    let app = spawn(counters, &LOCKOUT).await;
    app.signup("zoe@example.com", PASSWORD, "zoe")
        .await
        .expect("signup");
    for _ in 0..5 {
        let status = app
            .login("zoe@example.com", "wrong password")
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // Even the right password waits, and in any case variant of the email.
    for email in ["zoe@example.com", "ZOE@Example.com"] {
        let status = app.login(email, PASSWORD).await.expect_err("throttled");
        assert_retry_later(&status);
        assert_eq!(
            status.message(),
            "too many failed logins for this account, retry later"
        );
    }
    app.signup("other@example.com", PASSWORD, "other")
        .await
        .expect("signup");
    app.login("other@example.com", PASSWORD)
        .await
        .expect("other accounts are not throttled");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.login("zoe@example.com", PASSWORD)
        .await
        .expect("the wait is over");
    // Success forgets the failures: the next mistake is a plain one.
    let status = app
        .login("zoe@example.com", "wrong password")
        .await
        .expect_err("wrong");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn unknown_emails_are_throttled_the_same_way(counters: Counters) {
    let app = spawn(counters, &LOCKOUT).await;
    app.signup("known@example.com", PASSWORD, "known")
        .await
        .expect("signup");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..6 {
        known.push(
            app.login("known@example.com", "wrong password")
                .await
                .expect_err("wrong"),
        );
        unknown.push(
            app.login("nobody@example.com", "wrong password")
                .await
                .expect_err("unknown"),
        );
    }
    for (k, u) in known.iter().zip(&unknown) {
        assert_eq!((k.code(), k.message()), (u.code(), u.message()));
    }
    assert_retry_later(&unknown[5]);
}

async fn parallel_wrong_guesses_cannot_pass_the_limit(counters: Counters) {
    let app = spawn(counters, &LOCKOUT).await;
    app.signup("yan@example.com", PASSWORD, "yan")
        .await
        .expect("signup");
    let client = app.client().await;
    let guesses = (0..20).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .login(LoginRequest {
                    email: "yan@example.com".into(),
                    password: format!("guess number {i}"),
                    device_label: String::new(),
                })
                .await
        }
    });
    let results = futures_util::future::join_all(guesses).await;
    let code = |code| {
        results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == code))
            .count()
    };
    assert_eq!(
        code(Code::Unauthenticated),
        5,
        "only the threshold's worth were checked"
    );
    assert_eq!(code(Code::ResourceExhausted), 15);
}

async fn login_and_signup_are_rate_limited_per_client(counters: Counters) {
    let app = spawn(
        counters,
        &["--login-rate", "3/min", "--signup-rate", "2/min"],
    )
    .await;
    app.signup("a@example.com", PASSWORD, "a")
        .await
        .expect("first signup");
    app.signup("b@example.com", PASSWORD, "b")
        .await
        .expect("second signup");
    let status = app
        .signup("c@example.com", PASSWORD, "c")
        .await
        .expect_err("third");
    let delay = assert_retry_later(&status);
    assert!(delay <= Duration::from_secs(60));
    assert_eq!(
        status.message(),
        "too many requests from this client, retry later"
    );

    for _ in 0..3 {
        app.login("a@example.com", PASSWORD)
            .await
            .expect("within the rate");
    }
    let status = app
        .login("a@example.com", PASSWORD)
        .await
        .expect_err("fourth");
    assert_retry_later(&status);
}

async fn a_trusted_forwarded_header_names_the_client(counters: Counters) {
    let app = spawn(
        counters,
        &[
            "--signup-rate",
            "1/min",
            "--trusted-forwarded-header",
            "x-forwarded-for",
        ],
    )
    .await;
    let signup = |email: &str, forwarded: &str| {
        let mut request = Request::new(SignupRequest {
            email: email.into(),
            password: PASSWORD.into(),
            username: "fwd".into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded.parse().expect("ascii"));
        request
    };
    let mut client = app.client().await;
    client
        .signup(signup("f1@example.com", "203.0.113.7"))
        .await
        .expect("client one");
    client
        .signup(signup("f2@example.com", "203.0.113.8"))
        .await
        .expect("client two");
    // Entries left of the proxy's own are the client's to invent.
    let spoofed = client
        .signup(signup("f3@example.com", "198.51.100.1, 203.0.113.7"))
        .await
        .expect_err("same client as the first");
    assert_retry_later(&spoofed);
}

/// `message` as if sent by `client`, through a proxy that names it in
/// `x-forwarded-for`.
fn forwarded_for<T>(message: T, client: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-forwarded-for", client.parse().expect("ascii"));
    request
}

async fn ipv6_clients_share_the_limit_of_their_prefix(counters: Counters) {
    let app = spawn(
        counters,
        &[
            "--login-rate",
            "5/min",
            "--trusted-forwarded-header",
            "x-forwarded-for",
        ],
    )
    .await;
    let client = app.client().await;
    // Unknown emails, each its own, so the account throttle stays out of it.
    let login = |n: usize, from: &str| {
        let mut client = client.clone();
        let request = forwarded_for(
            LoginRequest {
                email: format!("nobody{n}@example.com"),
                password: PASSWORD.into(),
                device_label: String::new(),
            },
            from,
        );
        async move { client.login(request).await.expect_err("no such account") }
    };
    let mut refused = Vec::new();
    for n in 0..40 {
        let status = login(n, &format!("2001:db8:0:1:{n:x}:1:2:3")).await;
        if status.code() == Code::ResourceExhausted {
            refused.push(status);
        } else {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    assert_eq!(refused.len(), 35, "40 addresses of one /64 are one client");
    assert_retry_later(&refused[0]);

    let other = login(40, "2001:db8:0:2::1").await;
    assert_eq!(
        other.code(),
        Code::Unauthenticated,
        "another /64 counts apart"
    );

    // An IPv4 client is the same client when written as IPv4-mapped IPv6.
    for n in 0..5 {
        let status = login(50 + n, "203.0.113.9").await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert_retry_later(&login(60, "::ffff:203.0.113.9").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipv6_prefix_length_is_configurable() {
    let app = spawn(
        Counters::Memory,
        &[
            "--login-rate",
            "1/min",
            "--trusted-forwarded-header",
            "x-forwarded-for",
            "--ipv6-prefix-length",
            "128",
        ],
    )
    .await;
    let mut client = app.client().await;
    for n in 0..3 {
        let request = LoginRequest {
            email: format!("nobody{n}@example.com"),
            password: PASSWORD.into(),
            device_label: String::new(),
        };
        let status = client
            .login(forwarded_for(request, &format!("2001:db8::{n}")))
            .await
            .expect_err("no such account");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "every address counts apart"
        );
    }
}

async fn refresh_and_introspection_are_rate_limited_per_client(counters: Counters) {
    let app = spawn(
        counters,
        &["--refresh-rate", "2/min", "--introspect-rate", "3/min"],
    )
    .await;
    let mut client = app.client().await;
    let refresh = || RefreshRequest {
        refresh_token: "not a refresh token".into(),
    };
    for _ in 0..2 {
        let status = client.refresh(refresh()).await.expect_err("invalid");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let status = client.refresh(refresh()).await.expect_err("over the rate");
    assert!(assert_retry_later(&status) <= Duration::from_secs(60));
    assert_eq!(
        status.message(),
        "too many requests from this client, retry later"
    );

    let introspect = || IntrospectTokenRequest {
        token: "not a token".into(),
    };
    for _ in 0..3 {
        let answer = client
            .introspect_token(introspect())
            .await
            .expect("within the rate");
        assert!(!answer.into_inner().active);
    }
    let status = client
        .introspect_token(introspect())
        .await
        .expect_err("over the rate");
    assert_retry_later(&status);
    let login = app
        .login("nobody@example.com", PASSWORD)
        .await
        .expect_err("no such account");
    assert_eq!(
        login.code(),
        Code::Unauthenticated,
        "Login has a rate of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_counters_through_redis() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let prefix = format!("authd-test-{}:", uuid::Uuid::now_v7().simple());
    let args = [
        "--redis-url",
        REDIS_URL,
        "--redis-prefix",
        &prefix,
        "--login-rate",
        "4/min",
        "--lockout-threshold",
        "3",
        "--lockout-base",
        "10s",
    ];
    let (a, b) = tokio::join!(
        TestApp::spawn_on(Arc::clone(&db), &args),
        TestApp::spawn_on(Arc::clone(&db), &args),
    );
    a.signup("ruth@example.com", PASSWORD, "ruth")
        .await
        .expect("signup");
    // Three failures spread over both replicas lock the account on both.
    a.login("ruth@example.com", "wrong one")
        .await
        .expect_err("wrong");
    b.login("ruth@example.com", "wrong two")
        .await
        .expect_err("wrong");
    a.login("ruth@example.com", "wrong three")
        .await
        .expect_err("wrong");
    let status = b
        .login("ruth@example.com", PASSWORD)
        .await
        .expect_err("locked on b too");
    assert_retry_later(&status);
    // That was the fourth login from this client: the fifth is over the rate
    // on either replica.
    let status = a
        .login("someone@example.com", PASSWORD)
        .await
        .expect_err("rate");
    assert_eq!(
        status.message(),
        "too many requests from this client, retry later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rehashes_a_password_made_at_another_cost() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let old = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    old.signup("ivy@example.com", PASSWORD, "ivy")
        .await
        .expect("signup");
    old.stop().await;
    let cost =
        |n: u32| format!("SELECT COUNT(*) AS n FROM users WHERE password_hash LIKE '$2b$0{n}$%'");
    assert_eq!(db.count(&cost(4)).await, 1);

    let new = TestApp::spawn_on(Arc::clone(&db), &["--bcrypt-cost", "5"]).await;
    new.login("ivy@example.com", PASSWORD).await.expect("login");
    assert_eq!(
        db.count(&cost(5)).await,
        1,
        "rehashed at the configured cost"
    );
    new.login("ivy@example.com", PASSWORD)
        .await
        .expect("the new hash verifies");
    let status = new
        .login("ivy@example.com", "wrong password")
        .await
        .expect_err("wrong");
    assert_eq!(status.code(), Code::Unauthenticated);
}
