//! gRPC-Web: a real gRPC-Web client from npm (Connect's transport, as a
//! browser application uses it) against a live authd, and the CORS rules.

use std::{path::PathBuf, process::Command, sync::Mutex};

use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::support::{self, Backend, TestApp};

const ALLOWED: &str = "https://app.example.com";

/// Installs the npm packages and generates the client code, once per run.
fn prepare_web_client() -> PathBuf {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut ready = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(dir) = &*ready {
        return dir.clone();
    }
    let dir = support::npm_project("tests/web", &["buf.gen.yaml", "client.mjs"]);
    let generated = Command::new("npm")
        .args(["run", "--silent", "generate"])
        .current_dir(&dir)
        .status()
        .expect("npm run generate");
    assert!(generated.success(), "buf generate");
    *ready = Some(dir.clone());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_client_signs_up_logs_in_and_gets_me() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--cors-allowed-origins", ALLOWED]).await;
    let url = format!("http://{}", app.addr);
    let output = tokio::task::spawn_blocking(move || {
        let dir = prepare_web_client();
        Command::new("node")
            .args(["client.mjs", "web@example.com"])
            .env("AUTHD_URL", url)
            .current_dir(dir)
            .output()
            .expect("node")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("without a token: 16"),
        "UNAUTHENTICATED: {stdout}"
    );
    assert!(stdout.contains("got web@example.com"), "{stdout}");
}

/// A CORS preflight for a gRPC-Web call from `origin`: the
/// Access-Control-Allow-Origin answered, if any.
async fn preflight(app: &TestApp, origin: &str) -> Option<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let request = http::Request::options(format!("http://{}/auth.v1.AuthService/Login", app.addr))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .body(Empty::new())
        .expect("request");
    let response = client.request(request).await.expect("preflight");
    let allowed = response.headers().get("access-control-allow-origin")?;
    Some(allowed.to_str().expect("ascii").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_only_the_configured_origins() {
    let app = TestApp::spawn_with(Backend::Sqlite, &["--cors-allowed-origins", ALLOWED]).await;
    assert_eq!(preflight(&app, ALLOWED).await.as_deref(), Some(ALLOWED));
    assert_eq!(preflight(&app, "https://evil.example.com").await, None);

    let closed = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(
        preflight(&closed, ALLOWED).await,
        None,
        "no origins configured, none allowed"
    );
}
