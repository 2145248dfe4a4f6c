//! Signing keys encrypted at rest under a key-encryption key (KEK) file.

use std::{
    process::{Command, Output},
    sync::Arc,
};

use authd::Application;
use base64::{Engine, engine::general_purpose::STANDARD};

use crate::support::{self, Backend, TestApp, TestDb, backend_tests, jwt_kid};

backend_tests!(
    stored_keys_are_encrypted_and_need_the_kek_to_start,
    rewrap_encrypts_plaintext_keys_and_moves_them_to_a_new_kek,
);

const PLAINTEXT: &str =
    "SELECT COUNT(*) AS n FROM signing_keys WHERE private_key LIKE '%PRIVATE KEY%'";
const ALL: &str = "SELECT COUNT(*) AS n FROM signing_keys";

/// A new KEK file in the test's directory, as `openssl rand -base64 32`
/// writes one.
fn kek_file(db: &TestDb, name: &str) -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("random");
    let path = db.dir().join(name);
    std::fs::write(&path, format!("{}\n", STANDARD.encode(key))).expect("write KEK");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Rows sealed under the KEK with this id.
fn sealed_under(kek_id: &str) -> String {
    format!(
        "SELECT COUNT(*) AS n FROM signing_keys WHERE private_key LIKE 'authd-kek-v1:{kek_id}:%'"
    )
}

/// Runs `authd keys <args>` against the test's database.
async fn authd_keys(db: &TestDb, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command
        .arg("keys")
        .args(args)
        .args(["--database-url", &db.url])
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || command.output().expect("run authd keys"))
        .await
        .expect("join")
}

/// Runs `authd keys rewrap` and returns the KEK id it reports.
async fn rewrap(db: &TestDb, kek_args: &[&str], rows: usize) -> String {
    let mut args = vec!["rewrap"];
    args.extend_from_slice(kek_args);
    let output = authd_keys(db, &args).await;
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(words[1], rows.to_string(), "{printed}");
    words.last().expect("KEK id").to_string()
}

/// The startup error of an app on `db` with `extra` settings.
async fn startup_error(db: &TestDb, extra: &[&str]) -> String {
    let config = support::config(db, extra).expect("config");
    let error = Application::build(&config)
        .await
        .err()
        .expect("startup must fail");
    format!("{error:#}")
}

/// The kid an app on `db` with `extra` settings signs with.
async fn signing_kid(db: &Arc<TestDb>, extra: &[&str], email: &str) -> String {
    let app = TestApp::spawn_on(Arc::clone(db), extra).await;
    let (_, token) = app.user_with_token(email).await;
    app.get_me(&token).await.expect("token verifies");
    let kid = jwt_kid(&token);
    app.stop().await;
    kid
}

async fn stored_keys_are_encrypted_and_need_the_kek_to_start(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let kek = kek_file(&db, "kek");
    let with_kek = ["--key-encryption-key-file", kek.as_str()];
    let kid = signing_kid(&db, &with_kek, "a@example.com").await;
    let rotated = authd_keys(&db, &["rotate", "--key-encryption-key-file", &kek]).await;
    assert!(rotated.status.success(), "{rotated:?}");
    assert_eq!(db.count(ALL).await, 2);
    assert_eq!(db.count(PLAINTEXT).await, 0, "no private key in the clear");

    assert_eq!(
        signing_kid(&db, &with_kek, "b@example.com").await,
        kid,
        "a restart with the KEK keeps the key"
    );

    let missing = startup_error(&db, &[]).await;
    assert!(
        missing.contains("is encrypted") && missing.contains("AUTHD_KEY_ENCRYPTION_KEY_FILE"),
        "{missing}"
    );
    let wrong = kek_file(&db, "wrong");
    let wrong = startup_error(&db, &["--key-encryption-key-file", &wrong]).await;
    assert!(wrong.contains("a wrong file?"), "{wrong}");
    let hex = db.dir().join("hex");
    std::fs::write(&hex, "00".repeat(32)).expect("write");
    let hex = hex.to_str().expect("utf-8 path");
    let not_base64 = startup_error(&db, &["--key-encryption-key-file", hex]).await;
    assert!(
        not_base64.contains("AUTHD_KEY_ENCRYPTION_KEY_FILE") && not_base64.contains("base64"),
        "{not_base64}"
    );
}

async fn rewrap_encrypts_plaintext_keys_and_moves_them_to_a_new_kek(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let kid = signing_kid(&db, &[], "a@example.com").await;
    assert!(authd_keys(&db, &["rotate"]).await.status.success());
    assert_eq!(db.count(PLAINTEXT).await, 2, "stored before any KEK");

    let old = kek_file(&db, "old");
    let old_id = rewrap(&db, &["--key-encryption-key-file", &old], 2).await;
    assert_eq!(db.count(PLAINTEXT).await, 0);
    assert_eq!(db.count(&sealed_under(&old_id)).await, 2);
    let with_old = ["--key-encryption-key-file", old.as_str()];
    assert_eq!(signing_kid(&db, &with_old, "b@example.com").await, kid);

    let new = kek_file(&db, "new");
    let moving = [
        "--key-encryption-key-file",
        new.as_str(),
        "--previous-key-encryption-key-file",
        old.as_str(),
    ];
    assert_eq!(
        signing_kid(&db, &moving, "c@example.com").await,
        kid,
        "while keys move, both KEKs open them"
    );
    let new_id = rewrap(&db, &moving, 2).await;
    assert_ne!(new_id, old_id);
    assert_eq!(db.count(&sealed_under(&new_id)).await, 2);
    let with_new = ["--key-encryption-key-file", new.as_str()];
    assert_eq!(signing_kid(&db, &with_new, "d@example.com").await, kid);
    let stale = startup_error(&db, &with_old).await;
    assert!(stale.contains(&new_id), "{stale}");

    // One row the command can open and one it cannot: it rolls back whole.
    db.execute(&format!(
        "UPDATE signing_keys SET private_key = '{}' WHERE generation = 1",
        support::write_key_file(&db).1
    ))
    .await;
    let third = kek_file(&db, "third");
    let failed = authd_keys(&db, &["rewrap", "--key-encryption-key-file", &third]).await;
    assert!(!failed.status.success());
    let logged = String::from_utf8_lossy(&failed.stdout);
    assert!(logged.contains(&new_id), "{failed:?}");
    assert_eq!(
        db.count(PLAINTEXT).await,
        1,
        "the plaintext row is as it was"
    );
    assert_eq!(db.count(&sealed_under(&new_id)).await, 1);
}
