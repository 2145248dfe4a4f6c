//! Metrics on the admin listener, and request ids on every call.

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use authd::{
    Application,
    api::proto::{self, GetMeRequest, SignupRequest},
};
use tonic::{Code, Request, metadata::MetadataMap, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{
    self, Backend, PASSWORD, TestApp, TestDb, backend_tests, get, jwt_claims, sample, scrape,
};

/// An app with its admin listener on a free port, and that port.
async fn spawn_with_metrics(backend: Backend, extra: &[&str]) -> (TestApp, SocketAddr) {
    let db = Arc::new(TestDb::new(backend).await);
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let config = support::config(&db, &args).expect("test config");
    let app = Application::build(&config).await.expect("build app");
    let metrics = app.metrics_addr().expect("a metrics listener");
    (TestApp::serve(app, db), metrics)
}

fn calls(method: &str, code: &str) -> String {
    format!(r#"authd_grpc_requests_total{{method="/auth.v1.AuthService/{method}",code="{code}"}}"#)
}

async fn metrics_count_calls_failures_hashing_and_the_pool(backend: Backend) {
    let (app, metrics) = spawn_with_metrics(backend, &[]).await;
    app.signup("ada@example.com", PASSWORD, "Ada")
        .await
        .expect("signup");
    let wrong = app
        .login("ada@example.com", "not the password")
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let anonymous = app.get_me_with(None).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let body = scrape(metrics).await;
    let value = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series}:\n{body}"));
    assert_eq!(value(&calls("Signup", "OK")), 1.0);
    assert_eq!(value(&calls("Login", "UNAUTHENTICATED")), 1.0);
    assert_eq!(value(&calls("GetMe", "UNAUTHENTICATED")), 1.0);
    assert_eq!(sample(&body, &calls("Login", "OK")), None);
    assert_eq!(
        value(r#"authd_grpc_request_duration_seconds_count{method="/auth.v1.AuthService/Signup"}"#),
        1.0
    );
    assert_eq!(value("authd_login_failures_total"), 1.0);
    assert_eq!(
        value(r#"authd_login_throttled_total{reason="client"}"#),
        0.0
    );
    // Signup hashed once and Login verified once, neither waiting long.
    assert_eq!(value("authd_hash_wait_seconds_count"), 2.0);
    assert_eq!(value("authd_hash_queue_depth"), 0.0);
    assert_eq!(value("authd_hash_rejected_total"), 0.0);
    assert_eq!(value("authd_db_pool_max_connections"), 10.0);
    // The health check may hold a connection at any moment.
    let open = value(r#"authd_db_pool_connections{state="in_use"}"#)
        + value(r#"authd_db_pool_connections{state="idle"}"#);
    assert!((1.0..=10.0).contains(&open), "{open} connections open");
    app.stop().await;
}

backend_tests!(metrics_count_calls_failures_hashing_and_the_pool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_on_the_admin_listener_and_stop_with_the_app() {
    let (app, metrics) = spawn_with_metrics(Backend::Sqlite, &[]).await;
    let (status, _, _) = app.http_get("/metrics", true).await;
    assert_eq!(status, 404, "metrics on the gRPC port");
    for path in ["/", "/metrics/", "/.well-known/jwks.json"] {
        let (status, _, _) = get(metrics, path).await;
        assert_eq!(status, 404, "{path} on the admin listener");
    }
    scrape(metrics).await;
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the admin listener closes with the app"
    );

    let db = TestDb::new(Backend::Sqlite).await;
    let config = support::config(&db, &[]).expect("test config");
    let app = Application::build(&config).await.expect("build app");
    assert_eq!(app.metrics_addr(), None, "off unless configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_are_counted_by_reason() {
    let (app, metrics) = spawn_with_metrics(
        Backend::Sqlite,
        &["--login-rate", "2/min", "--lockout-threshold", "1"],
    )
    .await;
    app.signup("ada@example.com", PASSWORD, "Ada")
        .await
        .expect("signup");
    let codes = [
        Code::Unauthenticated,   // the one failure the threshold allows
        Code::ResourceExhausted, // the account must wait
        Code::ResourceExhausted, // the client is past its rate
    ];
    for expected in codes {
        let refused = app
            .login("ada@example.com", "not the password")
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), expected, "{refused:?}");
    }
    let body = scrape(metrics).await;
    assert_eq!(
        sample(&body, r#"authd_login_throttled_total{reason="account"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, r#"authd_login_throttled_total{reason="client"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, &calls("Login", "RESOURCE_EXHAUSTED")),
        Some(2.0)
    );
    assert_eq!(sample(&body, "authd_login_failures_total"), Some(1.0));
}

fn request_id(metadata: &MetadataMap) -> &str {
    metadata
        .get("x-request-id")
        .expect("an x-request-id in the answer")
        .to_str()
        .expect("ascii")
}

fn assert_generated(id: &str) {
    let uuid = uuid::Uuid::try_parse(id).unwrap_or_else(|_| panic!("{id} is not a UUID"));
    assert_eq!(uuid.get_version_num(), 7, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated_on_every_answer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut client = app.client().await;
    let with_id = |id: &str| {
        let mut request = Request::new(GetMeRequest {});
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().expect("metadata value"));
        request
    };

    // Refused by the bearer layer, before any handler.
    let refused = client
        .get_me(with_id("trace-me-42"))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(request_id(refused.metadata()), "trace-me-42");

    let refused = client
        .get_me(Request::new(GetMeRequest {}))
        .await
        .expect_err("no token");
    assert_generated(request_id(refused.metadata()));

    // Unsafe to log as sent: replaced.
    let too_long = "a".repeat(129);
    for unsafe_id in ["has a space", too_long.as_str()] {
        let refused = client
            .get_me(with_id(unsafe_id))
            .await
            .expect_err("no token");
        assert_generated(request_id(refused.metadata()));
    }

    let signup = || SignupRequest {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
        username: "Ada".into(),
    };
    let mut request = Request::new(signup());
    request
        .metadata_mut()
        .insert("x-request-id", "signup-1".parse().expect("metadata value"));
    let created = client.signup(request).await.expect("signup");
    assert_eq!(request_id(created.metadata()), "signup-1");
    let taken = client
        .signup(Request::new(signup()))
        .await
        .expect_err("email taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_generated(request_id(taken.metadata()));

    // Plain HTTP answers carry one too.
    let (status, headers, _) = app.http_get("/.well-known/jwks.json", true).await;
    assert_eq!(status, 200);
    assert_generated(headers["x-request-id"].to_str().expect("ascii"));
}

/// Calls `path` with an empty message; only the status matters.
async fn call_path(channel: &Channel, path: String) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::try_from(path).expect("a path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(Request::new(()), path, codec)
        .await
        .expect_err("no such method")
        .code()
}

/// Every distinct value of the `method` label in a scrape.
fn method_labels(body: &str) -> BTreeSet<&str> {
    body.match_indices(r#"method=""#)
        .filter_map(|(at, prefix)| {
            let value = &body[at + prefix.len()..];
            value.split('"').next()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_share_one_unknown_series_whatever_their_status() {
    let (app, metrics) = spawn_with_metrics(Backend::Sqlite, &[]).await;
    app.signup("ada@example.com", PASSWORD, "Ada")
        .await
        .expect("signup");
    let channel = app.channel().await;
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health check");

    // Under AuthService the bearer layer answers UNAUTHENTICATED; elsewhere
    // no route does, UNIMPLEMENTED.
    let prefixes = [
        ("/auth.v1.AuthService/", Code::Unauthenticated),
        ("/grpc.health.v1.Health/", Code::Unimplemented),
        ("/grpc.reflection.v1.ServerReflection/", Code::Unimplemented),
        ("/made.up.Service/", Code::Unimplemented),
    ];
    let long = "M".repeat(2000);
    let attack = async |rounds: std::ops::Range<usize>| {
        for round in rounds {
            for (prefix, expected) in prefixes {
                let code = call_path(&channel, format!("{prefix}{long}{round}")).await;
                assert_eq!(code, expected, "{prefix}");
            }
        }
    };
    attack(0..10).await;
    let before = scrape(metrics).await;
    attack(10..110).await;
    let after = scrape(metrics).await;

    let mut served: BTreeSet<&str> = proto::METHODS.iter().copied().collect();
    served.extend(["/grpc.health.v1.Health/Check", "unknown"]);
    let labels = method_labels(&after);
    assert!(labels.is_subset(&served), "{labels:?}");
    assert!(
        labels.contains("/grpc.health.v1.Health/Check"),
        "{labels:?}"
    );
    assert!(!after.contains("MMMM"), "a client's path became a label");
    let unknown = |code: &str| {
        sample(
            &after,
            &format!(r#"authd_grpc_requests_total{{method="unknown",code="{code}"}}"#),
        )
    };
    assert_eq!(unknown("UNAUTHENTICATED"), Some(110.0));
    assert_eq!(unknown("UNIMPLEMENTED"), Some(330.0));
    // Ten times the calls, the same series: only counts and sums grew.
    assert!(
        after.len() < before.len() + 500,
        "{} bytes, then {} bytes",
        before.len(),
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_tokens_and_token_call_throttles_are_counted() {
    let (app, metrics) = spawn_with_metrics(
        Backend::Sqlite,
        &[
            "--refresh-reuse-grace",
            "0s",
            "--refresh-rate",
            "4/min",
            "--introspect-rate",
            "1/min",
        ],
    )
    .await;
    let counts = |body: &str| {
        [
            r#"authd_refresh_rejected_total{reason="invalid"}"#,
            r#"authd_refresh_rejected_total{reason="reused"}"#,
            "authd_refresh_throttled_total",
            "authd_introspect_throttled_total",
        ]
        .map(|series| sample(body, series))
    };
    assert_eq!(counts(&scrape(metrics).await), [Some(0.0); 4]);

    app.signup("ada@example.com", PASSWORD, "Ada")
        .await
        .expect("signup");
    let first = app.login("ada@example.com", PASSWORD).await.expect("login");
    app.refresh(&first.refresh_token).await.expect("refresh");
    for token in [
        first.refresh_token.as_str(),
        "not a refresh token",
        &"A".repeat(43),
    ] {
        let status = app.refresh(token).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let status = app.refresh("x").await.expect_err("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    app.introspect(&first.access_token)
        .await
        .expect("within the rate");
    let status = app
        .introspect(&first.access_token)
        .await
        .expect_err("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let body = scrape(metrics).await;
    assert_eq!(
        counts(&body),
        [Some(2.0), Some(1.0), Some(1.0), Some(1.0)],
        "{body}"
    );
    assert_eq!(
        sample(&body, &calls("Refresh", "RESOURCE_EXHAUSTED")),
        Some(1.0)
    );
}

/// Warnings of every app in this test binary, as JSON lines: the subscriber
/// is process-wide, so it records the other tests' warnings too.
static WARNINGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct WarningSink;

impl Write for WarningSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        WARNINGS.lock().expect("log sink").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_is_logged_with_its_session_never_the_token() {
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::WARN)
        .with_writer(|| WarningSink)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    let app = TestApp::spawn_with(Backend::Sqlite, &["--refresh-reuse-grace", "0s"]).await;
    app.signup("ada@example.com", PASSWORD, "Ada")
        .await
        .expect("signup");
    let first = app.login("ada@example.com", PASSWORD).await.expect("login");
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    app.refresh(&first.refresh_token).await.expect_err("reused");

    let session = jwt_claims(&first.access_token)["sid"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let log = String::from_utf8(WARNINGS.lock().expect("log").clone()).expect("utf-8");
    let reused: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .filter(|line: &serde_json::Value| {
            line["fields"]["message"] == "refresh token reused: session revoked"
                && line["fields"]["session_id"] == session.as_str()
        })
        .collect();
    assert_eq!(reused.len(), 1, "{log}");
    assert_eq!(reused[0]["level"], "WARN");
    for secret in [&first.refresh_token, &second.refresh_token] {
        assert!(!log.contains(secret.as_str()), "a refresh token in the log");
    }
}
