//! Runs the README's grpcurl walk-through against a live authd, so the
//! documented commands cannot drift from what the service does.

use std::{env, fs, process::Command};

use crate::support::{self, Backend, TestApp};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_walkthrough_runs() {
    let readme = fs::read_to_string(README).expect("README.md");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let script = walkthrough(&readme).replace("127.0.0.1:50051", &app.addr.to_string());
    let email = script
        .split_once(r#""email": ""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .expect("the walk-through signs up an email")
        .0
        .to_owned();

    let path = grpcurl_path().await;
    // One shell, as a reader would use: later commands read the variables
    // earlier ones set.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .output()
            .expect("run bash")
    })
    .await
    .expect("join");

    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answers = stdout.matches(&format!(r#""email": "{email}""#)).count();
    assert_eq!(answers, 2, "Signup and GetMe name {email}: {stdout}");
    assert!(stdout.contains(r#""active": true"#), "{stdout}");
    assert!(stdout.contains(r#""kty":"OKP""#), "the JWKS: {stdout}");
}

/// grpcurl learns the error detail types from reflection, so it prints a
/// BadRequest's field violations by name instead of raw bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_names_the_fields_an_invalid_request_breaks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let path = grpcurl_path().await;
    let address = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("grpcurl")
            .args(["-plaintext", "-d"])
            .arg(r#"{"email": "not an address", "password": "short", "username": "Ada"}"#)
            .args([&address, "auth.v1.AuthService/Signup"])
            .env("PATH", path)
            .output()
            .expect("run grpcurl")
    })
    .await
    .expect("join");
    assert!(!output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stderr);
    let compact: String = printed.split_whitespace().collect();
    assert!(
        compact.contains(r#""@type":"type.googleapis.com/google.rpc.BadRequest""#)
            && compact.contains(r#""field":"email""#)
            && compact.contains(r#""field":"password""#)
            && !printed.contains("not recognized"),
        "{printed}"
    );
}

/// PATH with grpcurl (from PyPI, in a virtualenv) in front.
async fn grpcurl_path() -> std::ffi::OsString {
    let mut path = vec![
        tokio::task::spawn_blocking(|| {
            support::venv("grpcurl-venv", "tests/walkthrough-requirements.txt").join("bin")
        })
        .await
        .expect("venv"),
    ];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(path).expect("PATH")
}

/// The first two ```sh blocks under "## Try it with grpcurl": the tour, and
/// the rest of a session's life that continues in the same shell.
fn walkthrough(readme: &str) -> String {
    let (_, section) = readme
        .split_once("\n## Try it with grpcurl\n")
        .expect("the README has the grpcurl section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .take(2)
        .map(|block| block.split_once("```").expect("a closed code block").0)
        .collect();
    assert_eq!(blocks.len(), 2, "two sh blocks in {section}");
    blocks.join("\n")
}
