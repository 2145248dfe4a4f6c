//! The Python and Node examples run against a live authd, so the clients the
//! documentation points to keep working as the service changes.

use std::process::{Command, Output};

use crate::support::{self, Backend, PASSWORD, TestApp};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_against_authd() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let python = tokio::task::spawn_blocking(|| {
        support::venv("python-example-venv", "examples/python/requirements.txt").join("bin/python")
    })
    .await
    .expect("venv");
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(format!("{EXAMPLES}/python/client.py"))
            .env("AUTHD_ADDR", addr)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    assert_reports_a_real_user(&app, &output).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_runs_against_authd() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let dir = support::npm_project("examples/node", &["client.js"]);
        Command::new("node")
            .arg("client.js")
            .current_dir(&dir)
            .env("AUTHD_ADDR", addr)
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    assert_reports_a_real_user(&app, &output).await;
}

/// Checks the client's report against authd itself: the user it says it
/// signed up logs in with the password the examples use, and is the user its
/// GetMe line and its verified `sub` describe.
async fn assert_reports_a_real_user(app: &TestApp, output: &Output) {
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let email = stdout
        .lines()
        .find_map(|line| line.strip_prefix("Signup: created "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Signup line in {stdout}"));
    let token = app
        .login(email, PASSWORD)
        .await
        .expect("the client's user logs in")
        .access_token;
    let user = app.get_me(&token).await.expect("get me");
    let get_me = format!("GetMe: {} ({}), id {}", user.email, user.username, user.id);
    assert!(stdout.contains(&get_me), "{get_me:?} not in {stdout}");
    let sub = format!("sub {}\n", user.id);
    assert!(stdout.contains(&sub), "{sub:?} not in {stdout}");
}
