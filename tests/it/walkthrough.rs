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
    let mut path = grpcurl_path().await;
    // The admin part bootstraps its admin with the `authd` binary, on the
    // service's database.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_authd"))
        .parent()
        .expect("the binary's directory")
        .to_owned();
    path = env::join_paths(std::iter::once(binary).chain(env::split_paths(&path))).expect("PATH");
    let database_url = app.db.url.clone();
    let email = script
        .split_once(r#""email": ""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .expect("the walk-through signs up an email")
        .0
        .to_owned();

    // One shell, as a reader would use: later commands read the variables
    // earlier ones set.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .env("DATABASE_URL", database_url)
            .output()
            .expect("run bash")
    })
    .await
    .expect("join");

    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answers = stdout.matches(&format!(r#""email": "{email}""#)).count();
    assert_eq!(
        answers, 3,
        "Signup, GetMe and ListUsers name {email}: {stdout}"
    );
    assert!(stdout.contains(r#""active": true"#), "{stdout}");
    assert!(stdout.contains(r#""kty":"OKP""#), "the JWKS: {stdout}");
    assert!(
        stdout.contains("auth.admin.v1.AdminService\n"),
        "reflection lists AdminService: {stdout}"
    );
    assert!(
        stdout.contains(r#""type": "user.signed_up""#),
        "the service account reads the audit trail: {stdout}"
    );
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

/// The first two ```sh blocks under "## Try it with grpcurl" (the tour, and
/// the rest of a session's life that continues in the same shell), then the
/// one under "### The admin API", which continues it.
fn walkthrough(readme: &str) -> String {
    let mut blocks = sh_blocks(readme, "\n## Try it with grpcurl\n", "\n## ");
    assert!(blocks.len() >= 2, "the grpcurl tour has two sh blocks");
    blocks.truncate(2);
    let admin = sh_blocks(readme, "\n### The admin API\n", "\n### ");
    assert_eq!(admin.len(), 1, "one sh block for the admin API");
    blocks.extend(admin);
    blocks.join("\n")
}

/// The ```sh blocks after `heading`, up to the next `end`.
fn sh_blocks<'a>(readme: &'a str, heading: &str, end: &str) -> Vec<&'a str> {
    let (_, section) = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("the README has {heading:?}"));
    let section = section.split(end).next().unwrap_or_default();
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split_once("```").expect("a closed code block").0)
        .collect()
}
