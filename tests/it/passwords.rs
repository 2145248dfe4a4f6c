//! Passwords known to attackers: the common list, the user's own data, the
//! operator's breached list and the strength score, at every place a
//! password is chosen; and Login's report of a right password that has
//! become known since.
//!
//! `tests/fixtures/breached-passwords.txt` is a small list in the Have I
//! Been Pwned format, made with Python: the uppercase SHA-1 hex of each of
//! the two [`BREACHED`] passwords and of "filler 0" to "filler 199", each
//! with a count (`HASH:N`), sorted by hash, one per line.

use std::{path::PathBuf, sync::Arc};

use authd::{
    Application,
    api::proto::{
        ConfirmTotpRequest, EnrollTotpRequest,
        admin::{CreateUserRequest, SetPasswordRequest},
    },
};
use tonic::{Code, Status};

use crate::support::{
    Backend, PASSWORD, TestApp, TestDb, authorized, backend_tests, config, violations,
};

backend_tests!(
    common_and_personal_passwords_are_refused_at_signup,
    breached_passwords_are_refused_only_with_the_file,
    weak_passwords_are_refused_by_score_unless_the_minimum_is_zero,
    change_password_and_the_admin_api_apply_the_policy,
    login_reports_a_known_password_and_still_logs_in,
    startup_refuses_a_breached_file_it_cannot_use,
);

/// In the fixture; strong by zxcvbn's measure, so only the list refuses them.
const BREACHED: [&str; 2] = ["velvet thunder orchard 1987", "marmalade skyline 3 pianos"];

const COMMON: &str = "is one of the most commonly used passwords; choose a less common one";
const PERSONAL: &str = "must not contain the email address's name or the username";
const BREACH: &str = "appears in a data breach, so attackers already know it; choose another";
const GUESSABLE: &str = "is too easy to guess; use a longer password, e.g. several unrelated words";

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/breached-passwords.txt")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// The one violation of a refused password: on `field`, saying why in
/// fixed words, so the password is never repeated.
fn assert_refused(status: &Status, field: &str, why: &str, password: &str) {
    let violations = violations(status);
    assert_eq!(
        violations.iter().collect::<Vec<_>>(),
        [(&field.to_owned(), &why.to_owned())],
        "{password}"
    );
    assert_eq!(
        status.message(),
        format!("invalid request: {field}: {why}"),
        "{password}"
    );
}

async fn common_and_personal_passwords_are_refused_at_signup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for common in ["password", "123456789", "PASSWORD", "Qwertyuiop"] {
        let status = app
            .signup("ada@example.com", common, "ada")
            .await
            .expect_err(common);
        assert_refused(&status, "password", COMMON, common);
    }
    for (email, password, username) in [
        ("grace.hopper@example.com", "grace.hopper", "Grace"),
        ("grace.hopper@example.com", "my Grace.Hopper 1906!", "Grace"),
        (
            "rear.admiral@example.com",
            "the amazing COBOL queen",
            "Cobol Queen",
        ),
    ] {
        let status = app
            .signup(email, password, username)
            .await
            .expect_err(password);
        assert_refused(&status, "password", PERSONAL, password);
    }
    // Names this short are in too many good passwords by chance.
    app.signup("al@example.com", "walnut cabinet treasure", "Al")
        .await
        .expect("a two-letter name is not screened");
    app.signup("ada@example.com", PASSWORD, "ada")
        .await
        .expect("a strong password of someone else's");
}

async fn breached_passwords_are_refused_only_with_the_file(backend: Backend) {
    let without = TestApp::spawn(backend).await;
    without
        .signup("bob@example.com", BREACHED[0], "bob")
        .await
        .expect("no list: a strong password");
    let with = TestApp::spawn_with(backend, &["--breached-passwords-file", &fixture()]).await;
    for password in BREACHED {
        let status = with
            .signup("carol@example.com", password, "carol")
            .await
            .expect_err(password);
        assert_refused(&status, "password", BREACH, password);
    }
    // The list holds the password exactly as typed.
    with.signup("carol@example.com", &BREACHED[0].to_uppercase(), "carol")
        .await
        .expect("not in the list");
}

async fn weak_passwords_are_refused_by_score_unless_the_minimum_is_zero(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for weak in [
        "aaaaaaaaaaaa",
        "abcdefgh1234",
        "Password2024",
        "summer2024!",
    ] {
        let status = app
            .signup("dave@example.com", weak, "dave")
            .await
            .expect_err(weak);
        assert_refused(&status, "password", GUESSABLE, weak);
    }
    // Length rules come first, and say so.
    let status = app
        .signup("dave@example.com", "aaaa", "dave")
        .await
        .expect_err("short");
    assert_eq!(
        violations(&status).get("password").map(String::as_str),
        Some("must be at least 8 characters")
    );
    let lenient = TestApp::spawn_with(backend, &["--password-min-score", "0"]).await;
    lenient
        .signup("dave@example.com", "aaaaaaaaaaaa", "dave")
        .await
        .expect("any score is enough");
    // The list and the user's own data still apply.
    let status = lenient
        .signup("erin@example.com", "password", "erin")
        .await
        .expect_err("common");
    assert_refused(&status, "password", COMMON, "password");
}

async fn change_password_and_the_admin_api_apply_the_policy(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--breached-passwords-file", &fixture()]).await;
    let (_, token) = app.user_with_token("frank.castle@example.com").await;
    for (new, why) in [
        ("123456789", COMMON),
        ("frank.castle 1974!", PERSONAL),
        (BREACHED[1], BREACH),
        ("aaaaaaaaaaaa", GUESSABLE),
    ] {
        let status = app
            .change_password(&token, PASSWORD, new)
            .await
            .expect_err(new);
        assert_refused(&status, "new_password", why, new);
    }
    // A refusal spends no guess at the current password, which still works.
    app.change_password(&token, PASSWORD, "lantern quartz mosaic river")
        .await
        .expect("a strong new password");

    let (_, admin_token) = app.user_with_roles("root@example.com", &["admin"]).await;
    let mut admin = app.admin_client().await;
    let create = |password: &str| {
        authorized(
            CreateUserRequest {
                email: "grace@example.com".into(),
                username: "Grace".into(),
                password: password.into(),
                ..CreateUserRequest::default()
            },
            &admin_token,
        )
    };
    let status = admin
        .create_user(create("password"))
        .await
        .expect_err("common");
    assert_refused(&status, "password", COMMON, "password");
    let status = admin
        .create_user(create(BREACHED[0]))
        .await
        .expect_err("breached");
    assert_refused(&status, "password", BREACH, BREACHED[0]);
    let user = admin
        .create_user(create(""))
        .await
        .expect("no password")
        .into_inner()
        .user
        .expect("user");
    let set = |password: &str| {
        authorized(
            SetPasswordRequest {
                id: user.id.clone(),
                password: password.into(),
            },
            &admin_token,
        )
    };
    for (password, why) in [
        ("qwertyuiop", COMMON),
        ("GRACE and her compilers", PERSONAL),
        (BREACHED[1], BREACH),
        ("aaaaaaaaaaaa", GUESSABLE),
    ] {
        let status = admin.set_password(set(password)).await.expect_err(password);
        assert_refused(&status, "password", why, password);
    }
    admin.set_password(set(PASSWORD)).await.expect("strong");
    app.login("grace@example.com", PASSWORD)
        .await
        .expect("the password an operator set");
}

async fn login_reports_a_known_password_and_still_logs_in(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let before = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let email = "heidi@example.com";
    before
        .signup(email, BREACHED[0], "heidi")
        .await
        .expect("not known to be breached yet");
    let login = before.login(email, BREACHED[0]).await.expect("login");
    assert!(!login.password_compromised && !login.access_token.is_empty());
    before.stop().await;

    let after =
        TestApp::spawn_on(Arc::clone(&db), &["--breached-passwords-file", &fixture()]).await;
    let login = after
        .login(email, BREACHED[0])
        .await
        .expect("still logs in");
    assert!(login.password_compromised, "{login:?}");
    assert!(!login.access_token.is_empty() && !login.refresh_token.is_empty());
    let status = after
        .login(email, "wrong password entirely")
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);

    // With a second factor, the challenge says it too: the password was
    // checked before the challenge was made.
    let mut client = after.client().await;
    let enrolled = client
        .enroll_totp(authorized(
            EnrollTotpRequest {
                current_password: BREACHED[0].into(),
            },
            &login.access_token,
        ))
        .await
        .expect("enroll")
        .into_inner();
    let code = totp_rs::Totp::from_url(&enrolled.otpauth_uri)
        .expect("an otpauth URI")
        .generate(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs(),
        )
        .to_string();
    client
        .confirm_totp(authorized(ConfirmTotpRequest { code }, &login.access_token))
        .await
        .expect("confirm");
    let challenged = after.login(email, BREACHED[0]).await.expect("challenge");
    assert!(challenged.mfa_challenge.is_some(), "{challenged:?}");
    assert!(challenged.access_token.is_empty());
    assert!(challenged.password_compromised, "{challenged:?}");

    // A strong password not in the list is not reported.
    after
        .signup("ivan@example.com", PASSWORD, "ivan")
        .await
        .expect("signup");
    let login = after
        .login("ivan@example.com", PASSWORD)
        .await
        .expect("login");
    assert!(!login.password_compromised);

    // A common password from before the list (as an old account may have)
    // logs in too, and is reported.
    let hash = bcrypt::hash("password", 4).expect("bcrypt");
    db.execute(&format!(
        "UPDATE users SET password_hash = '{hash}' WHERE email = 'ivan@example.com'"
    ))
    .await;
    let login = after
        .login("ivan@example.com", "password")
        .await
        .expect("login");
    assert!(login.password_compromised && !login.access_token.is_empty());
}

async fn startup_refuses_a_breached_file_it_cannot_use(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let unsorted = dir.path().join("unsorted.txt");
    let fixture_text = std::fs::read_to_string(fixture()).expect("fixture");
    let mut lines: Vec<&str> = fixture_text.lines().collect();
    lines.reverse();
    std::fs::write(&unsorted, lines.join("\n")).expect("write");
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "password\n123456\n").expect("write");
    let missing = dir.path().join("missing.txt");
    for (file, why) in [
        (&missing, "No such file"),
        (&unsorted, "not sorted"),
        (&text, "not a hash"),
    ] {
        let path = file.to_str().expect("utf-8 path");
        let config = config(&db, &["--breached-passwords-file", path]).expect("config");
        let error = Application::build(&config)
            .await
            .err()
            .expect("an unusable file stops startup");
        let message = format!("{error:#}");
        assert!(
            message.contains("AUTHD_BREACHED_PASSWORDS_FILE") && message.contains(path),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
    }
}
