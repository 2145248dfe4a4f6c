//! The `authd` binary as an operator runs it.

use std::process::{Command, Output};

use authd::api::proto::admin::ListUsersRequest;

use crate::support::{Backend, PASSWORD, TestApp, TestDb, authorized, jwt_claims};

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

/// `authd users ...` on the database at `url`, off the test's runtime:
/// stdout and stderr together, and whether it succeeded.
async fn users_command(url: &str, args: &[&str]) -> (bool, String) {
    let mut full = vec!["users".to_owned()];
    full.extend(args.iter().map(|&arg| arg.to_owned()));
    full.extend(["--database-url".to_owned(), url.to_owned()]);
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        authd(&args)
    })
    .await
    .expect("run authd users");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_grant_role_applies_from_the_next_login() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn(backend).await;
        let user = app
            .signup("ops@example.com", PASSWORD, "ops")
            .await
            .expect("signup");
        let before = app.login("ops@example.com", PASSWORD).await.expect("login");
        let url = app.db.url.clone();

        let (ok, printed) = users_command(&url, &["grant-role", "OPS@example.com", "admin"]).await;
        assert!(ok, "{backend:?}: {printed}");
        assert!(
            printed.contains("granted role admin") && printed.contains(&user.id),
            "{printed}"
        );
        let token = app
            .login("ops@example.com", PASSWORD)
            .await
            .expect("login")
            .access_token;
        assert_eq!(jwt_claims(&token)["roles"], serde_json::json!(["admin"]));
        assert!(
            jwt_claims(&before.access_token)
                .get("roles")
                .is_none_or(|roles| roles.as_array().is_some_and(Vec::is_empty))
        );
        let request = authorized(ListUsersRequest::default(), &token);
        let listed = app.admin_client().await.list_users(request).await;
        assert_eq!(listed.expect("an admin now").into_inner().users.len(), 1);
        assert_eq!(
            app.db
                .count(&format!(
                    "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'roles.changed' \
                     AND user_id = '{}' AND actor_type = 'system'",
                    user.id
                ))
                .await,
            1
        );

        let (ok, printed) = users_command(&url, &["grant-role", "ops@example.com", "admin"]).await;
        assert!(
            ok && printed.contains("already has role admin"),
            "{printed}"
        );
        let (ok, printed) = users_command(&url, &["revoke-role", "ops@example.com", "admin"]).await;
        assert!(ok && printed.contains("revoked role admin"), "{printed}");
        assert_eq!(
            app.db
                .count("SELECT COUNT(*) AS n FROM users WHERE roles = ''")
                .await,
            1
        );

        let (ok, printed) =
            users_command(&url, &["grant-role", "nobody@example.com", "admin"]).await;
        assert!(!ok && printed.contains("user not found"), "{printed}");
        let (ok, printed) = users_command(&url, &["grant-role", "ops@example.com", "Admin"]).await;
        assert!(!ok && printed.contains("invalid role"), "{printed}");
        assert_eq!(
            app.db
                .count("SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'roles.changed'")
                .await,
            2,
            "refused commands record nothing"
        );
    }
}
