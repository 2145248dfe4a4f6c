use authd::Application;
use tonic::Code;

use crate::support::{self, Backend, PASSWORD, TestApp, backend_tests, violations};

backend_tests!(
    signup_returns_the_normalized_user,
    every_bad_field_is_named,
    each_email_rule_is_enforced,
    each_username_rule_is_enforced,
    each_password_rule_is_enforced,
    password_minimum_can_be_raised,
    validation_comes_before_the_database,
    an_email_is_taken_in_any_case_variant,
    concurrent_duplicate_signups_create_one_user,
    one_mailbox_is_one_account,
    stored_emails_without_a_key_get_one_at_startup,
    stored_emails_that_are_one_mailbox_stop_startup,
);

async fn signup_returns_the_normalized_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app
        .signup("  Ａlice@Example.COM ", PASSWORD, "  Alice A. ")
        .await
        .expect("signup");
    let id = uuid::Uuid::parse_str(&user.id).expect("id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.username, "Alice A.");
    let created = user.created_at.expect("created_at");
    let age = chrono::Utc::now().timestamp() - created.seconds;
    assert!((0..60).contains(&age), "created_at is now, got {created:?}");

    let hash: i64 = app
        .db
        .count("SELECT COUNT(*) AS n FROM users WHERE password_hash LIKE '$2b$04$%'")
        .await;
    assert_eq!(
        hash, 1,
        "the password is stored as a bcrypt hash at the configured cost"
    );
}

async fn every_bad_field_is_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let status = app
        .signup("not-an-email", "short", "")
        .await
        .expect_err("invalid");
    let fields: Vec<String> = violations(&status).into_keys().collect();
    assert_eq!(fields, ["email", "password", "username"]);
    for field in ["email", "password", "username"] {
        assert!(status.message().contains(field), "{}", status.message());
    }
}

async fn each_email_rule_is_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = format!(
        "{}@{}.example.com",
        "a".repeat(64),
        "b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(60)
    );
    assert!(too_long.len() > 254);
    for email in [
        "",
        "   ",
        "plainaddress",
        "two@@example.com",
        "dot..dot@example.com",
        "user@localhost",
        "user@exa_mple.com",
        "sp ace@example.com",
        "zero\u{200B}width@example.com",
        "bidi\u{202E}moc.elpmaxe@example.com",
        "bell\u{7}@example.com",
        "hangul\u{3164}filler@example.com",
        "tag@example.com\u{E0041}",
        too_long.as_str(),
    ] {
        let status = app.signup(email, PASSWORD, "bob").await.expect_err(email);
        let violations = violations(&status);
        assert_eq!(
            violations.keys().collect::<Vec<_>>(),
            ["email"],
            "{email:?}"
        );
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 0);
}

async fn each_username_rule_is_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = "é".repeat(65);
    for username in [
        "",
        " \t ",
        "tab\tinside",
        "nul\0",
        too_long.as_str(),
        "\u{3164}",
        "hangul\u{3164}filler",
        "tag\u{E0041}",
        "c\u{034F}gj",
    ] {
        let status = app
            .signup("bob@example.com", PASSWORD, username)
            .await
            .expect_err(username);
        assert_eq!(violations(&status).keys().collect::<Vec<_>>(), ["username"]);
    }
    let longest = "é".repeat(64);
    app.signup("bob@example.com", PASSWORD, &longest)
        .await
        .expect("64 characters is allowed");
}

async fn each_password_rule_is_enforced(backend: Backend) {
    // The length rules alone: the strength score would refuse "aaaa…".
    let app = TestApp::spawn_with(backend, &["--password-min-score", "0"]).await;
    let seventy_three = "a".repeat(73);
    // 37 two-byte characters: few characters, too many bytes.
    let wide = "é".repeat(37);
    for password in [
        "",
        "seven77",
        "ééééééé",
        "eight\0ch",
        seventy_three.as_str(),
        wide.as_str(),
    ] {
        let status = app
            .signup("carol@example.com", password, "carol")
            .await
            .expect_err(password);
        assert_eq!(violations(&status).keys().collect::<Vec<_>>(), ["password"]);
    }
    let seventy_two = "a".repeat(72);
    app.signup("carol@example.com", &seventy_two, "carol")
        .await
        .expect("72 bytes is allowed");
    // Passwords are never truncated: 73 bytes sharing the first 72 must not
    // log in; it is refused before bcrypt could be fooled.
    let status = app
        .login("carol@example.com", &seventy_three)
        .await
        .expect_err("longer password");
    assert_eq!(status.code(), Code::InvalidArgument);
    let eight = "ééééééé\u{1F600}";
    app.signup("dave@example.com", eight, "dave")
        .await
        .expect("8 characters counted as code points");
}

async fn password_minimum_can_be_raised(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--password-min-length", "12"]).await;
    let status = app
        .signup("erin@example.com", "elevenchars", "erin")
        .await
        .expect_err("below the raised minimum");
    assert_eq!(
        violations(&status).get("password").map(String::as_str),
        Some("must be at least 12 characters")
    );
    app.signup("erin@example.com", "twelve chars", "erin")
        .await
        .expect("at the minimum");
}

async fn validation_comes_before_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("frank@example.com", PASSWORD, "frank")
        .await
        .expect("signup");
    // The email is taken, but the bad password is reported first: nothing
    // reached the database.
    let status = app
        .signup("frank@example.com", "short", "frank")
        .await
        .expect_err("invalid");
    assert_eq!(violations(&status).keys().collect::<Vec<_>>(), ["password"]);
}

async fn an_email_is_taken_in_any_case_variant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("grace@example.com", PASSWORD, "grace")
        .await
        .expect("signup");
    for variant in [
        "grace@example.com",
        "GRACE@EXAMPLE.COM",
        " Grace@Example.Com ",
        "ｇrace@example.com",
    ] {
        let status = app
            .signup(variant, PASSWORD, "other")
            .await
            .expect_err(variant);
        assert_eq!(status.code(), Code::AlreadyExists, "{variant}: {status:?}");
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 1);
}

async fn concurrent_duplicate_signups_create_one_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = app.client().await;
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        let email = if i % 2 == 0 {
            "heidi@example.com"
        } else {
            "HEIDI@example.com"
        };
        async move {
            client
                .signup(authd::api::proto::SignupRequest {
                    email: email.into(),
                    password: PASSWORD.into(),
                    username: format!("heidi {i}"),
                })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exists = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists))
        .count();
    assert_eq!((ok, exists), (1, 49), "{results:?}");
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM users WHERE email = 'heidi@example.com'")
            .await,
        1
    );
}

async fn one_mailbox_is_one_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (first, variant) in [
        // Lowercasing makes the final Σ a ς; case folding makes both σ.
        ("xaσ@example.com", "XAΣ@example.com"),
        // Dotless ı is a look-alike of i (UTS #39).
        ("ınfo@example.com", "info@example.com"),
        ("idn@exämple.com", "idn@xn--exmple-cua.com"),
    ] {
        let user = app.signup(first, PASSWORD, "first").await.expect(first);
        let status = app
            .signup(variant, PASSWORD, "second")
            .await
            .expect_err(variant);
        assert_eq!(status.code(), Code::AlreadyExists, "{variant}: {status:?}");
        let login = app.login(variant, PASSWORD).await.expect(variant);
        let me = app.get_me(&login.access_token).await.expect("get me");
        assert_eq!(me.id, user.id, "{variant} reaches the account of {first}");
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 3);
    let stored = app
        .db
        .count("SELECT COUNT(*) AS n FROM users WHERE email = 'idn@exämple.com'")
        .await;
    assert_eq!(stored, 1, "the domain is stored in its Unicode form");
}

/// Rows written before the comparison key existed have none; a restart
/// gives every one its key, so variants of their emails are then refused.
async fn stored_emails_without_a_key_get_one_at_startup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app
        .signup("idn@exämple.com", PASSWORD, "idn")
        .await
        .expect("signup");
    let db = std::sync::Arc::clone(&app.db);
    app.stop().await;
    db.execute("UPDATE users SET email_key = NULL, email = 'idn@xn--exmple-cua.com'")
        .await;

    let app = TestApp::spawn_on(db, &[]).await;
    let missing = "SELECT COUNT(*) AS n FROM users WHERE email_key IS NULL";
    assert_eq!(app.db.count(missing).await, 0);
    let status = app
        .signup("IDN@EXÄMPLE.COM", PASSWORD, "twin")
        .await
        .expect_err("same mailbox");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let login = app.login("idn@exämple.com", PASSWORD).await.expect("login");
    let me = app.get_me(&login.access_token).await.expect("get me");
    assert_eq!(me.id, user.id);
}

/// Two stored rows that are one mailbox under today's rules: authd names
/// both users and refuses to start (serve and migrate alike) until the
/// operator has resolved it.
async fn stored_emails_that_are_one_mailbox_stop_startup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app
        .signup("xaσ@example.com", PASSWORD, "first")
        .await
        .expect("signup");
    let db = std::sync::Arc::clone(&app.db);
    app.stop().await;
    let twin = uuid::Uuid::now_v7().to_string();
    db.execute(&format!(
        "INSERT INTO users (id, email, username, password_hash, created_at, updated_at) \
         SELECT '{twin}', 'xaς@example.com', username, password_hash, created_at, updated_at \
         FROM users"
    ))
    .await;

    let config = support::config(&db, &[]).expect("config");
    for outcome in [
        Application::build(&config).await.map(drop),
        authd::migrate(&config).await,
    ] {
        let error = format!("{:#}", outcome.expect_err("one mailbox, two accounts"));
        assert!(error.contains(&twin), "{error}");
        assert!(error.contains(&user.id), "{error}");
        assert!(error.contains("Upgrading"), "{error}");
    }
    let missing = "SELECT COUNT(*) AS n FROM users WHERE email_key IS NULL";
    assert_eq!(db.count(missing).await, 1, "no key is chosen for the twin");

    db.execute(&format!("DELETE FROM users WHERE id = '{twin}'"))
        .await;
    let app = TestApp::spawn_on(db, &[]).await;
    app.login("XAΣ@example.com", PASSWORD).await.expect("login");
}
