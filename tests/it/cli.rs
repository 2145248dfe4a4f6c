//! The `authd` binary as an operator runs it.

use std::process::{Command, Output};

use crate::support::{Backend, TestDb};

fn authd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authd"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run authd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_exits() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let output = authd(&["migrate", "--database-url", &db.url]);
        assert!(output.status.success(), "{backend:?}: {output:?}");
        assert_eq!(db.count("SELECT COUNT(*) AS n FROM users").await, 0);
        let again = authd(&["migrate", "--database-url", &db.url]);
        assert!(again.status.success(), "migrate is idempotent: {again:?}");
    }
}

#[test]
fn a_bad_setting_stops_startup_naming_the_setting() {
    let cases: [(&[&str], &str); 4] = [
        (&["--token-ttl", "0s"], "--token-ttl"),
        (&["--listen", "nowhere"], "--listen"),
        (&["--log-format", "xml"], "--log-format"),
        (
            &["--database-url", "mysql://root:hunter2@db/authd"],
            "DATABASE_URL",
        ),
    ];
    for (args, setting) in cases {
        let output = authd(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let output = authd(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "AUTHD_LISTEN",
        "DATABASE_URL",
        "AUTHD_TOKEN_TTL",
        "AUTHD_ISSUER",
        "AUTHD_AUDIENCE",
        "AUTHD_BCRYPT_COST",
        "AUTHD_SIGNING_KEY_FILE",
        "AUTHD_KEY_ENCRYPTION_KEY_FILE",
        "AUTHD_PREVIOUS_KEY_ENCRYPTION_KEY_FILE",
        "AUTHD_PUBLIC_URL",
        "AUTHD_REFLECTION",
        "AUTHD_LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }
}
