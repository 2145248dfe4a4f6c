//! TOTP as a user meets it: an authenticator app (pyotp) reads the QR code
//! (decoded by rqrr), codes confirm it, Login asks for the second factor,
//! CompleteLogin answers it. Codes for the next step stand in for waiting:
//! authd accepts one step either way.

use authd_client::{
    admin::v1::ResetUserTotpRequest,
    v1::{
        CompleteLoginRequest, CompleteLoginResponse, ConfirmTotpRequest, DisableTotpRequest,
        EnrollTotpRequest, EnrollTotpResponse, MfaChallenge, RegenerateRecoveryCodesRequest,
    },
};
use tonic::{Code, Status};

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};

use crate::support::{
    Backend, PASSWORD, TestApp, TestDb, authorized, backend_tests, jwt_claims, venv, violations,
};

backend_tests!(
    a_second_factor_from_enrollment_to_login,
    wrong_codes_count_toward_the_account_lockout,
    codes_are_regenerated_and_totp_disabled_or_reset,
    secrets_are_sealed_under_the_key_encryption_key,
);

/// The codes an authenticator app holding `uri` shows `steps` steps from
/// now, checked to name `account` under the issuer "authd".
fn app_codes(uri: &str, account: &str, steps: &[i64]) -> Vec<String> {
    let venv = venv("pyotp", "tests/totp/requirements.txt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/totp/codes.py");
    let output = std::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .args([uri, "authd", account])
        .args(steps.iter().map(i64::to_string))
        .output()
        .expect("python");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn app_code(uri: &str, account: &str, steps: i64) -> String {
    app_codes(uri, account, &[steps]).remove(0)
}

/// The text of the QR code in a PNG, as a phone's camera reads it.
fn scan(png: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("png");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut pixels).expect("frame");
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let (width, height) = (frame.width as usize, frame.height as usize);
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| pixels[y * width + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    grids[0].decode().expect("a readable QR code").1
}

/// A user with a session token, enrolled and confirmed with the code of the
/// current step: the enrollment and the recovery codes.
pub(crate) async fn user_with_totp(
    app: &TestApp,
    email: &str,
) -> (String, EnrollTotpResponse, Vec<String>) {
    let (_, token) = app.user_with_token(email).await;
    let enrolled = enroll(app, &token, PASSWORD).await.expect("enroll");
    let codes = confirm(app, &token, &app_code(&enrolled.otpauth_uri, email, 0))
        .await
        .expect("confirm");
    (token, enrolled, codes)
}

async fn enroll(app: &TestApp, token: &str, password: &str) -> Result<EnrollTotpResponse, Status> {
    let request = EnrollTotpRequest {
        current_password: password.into(),
    };
    let response = app
        .client()
        .await
        .enroll_totp(authorized(request, token))
        .await?;
    Ok(response.into_inner())
}

async fn confirm(app: &TestApp, token: &str, code: &str) -> Result<Vec<String>, Status> {
    let request = ConfirmTotpRequest { code: code.into() };
    let response = app
        .client()
        .await
        .confirm_totp(authorized(request, token))
        .await?;
    Ok(response.into_inner().recovery_codes)
}

async fn login_challenge(app: &TestApp, email: &str) -> MfaChallenge {
    let login = app.login(email, PASSWORD).await.expect("login");
    assert!(login.access_token.is_empty() && login.refresh_token.is_empty());
    login.mfa_challenge.expect("a challenge")
}

async fn complete(
    app: &TestApp,
    mfa_token: &str,
    code: &str,
) -> Result<CompleteLoginResponse, Status> {
    let request = CompleteLoginRequest {
        mfa_token: mfa_token.into(),
        code: code.into(),
    };
    Ok(app
        .client()
        .await
        .complete_login(request)
        .await?
        .into_inner())
}

fn assert_refused(result: Result<CompleteLoginResponse, Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(
        status.message(),
        "invalid or expired code or challenge",
        "{what}"
    );
}

async fn a_second_factor_from_enrollment_to_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "grace@example.com";
    let (_, token) = app.user_with_token(email).await;
    assert_eq!(jwt_claims(&token)["amr"], serde_json::json!(["pwd"]));

    let wrong = enroll(&app, &token, "not the password").await;
    assert_eq!(
        wrong.expect_err("wrong password").code(),
        Code::Unauthenticated
    );
    let enrolled = enroll(&app, &token, PASSWORD).await.expect("enroll");
    assert_eq!(scan(&enrolled.qr_png), enrolled.otpauth_uri);
    assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(enrolled.otpauth_uri.contains(&enrolled.secret));
    assert_eq!(enrolled.secret.len(), 32, "160 bits of base32");
    let uri = enrolled.otpauth_uri;

    // A code from far off is no current code: the field says so.
    let far = app_code(&uri, email, 20);
    let status = confirm(&app, &token, &far).await.expect_err("wrong code");
    assert!(violations(&status).contains_key("code"));
    let recovery = confirm(&app, &token, &app_code(&uri, email, 0))
        .await
        .expect("confirm");
    assert_eq!(recovery.len(), 10);
    let status = enroll(&app, &token, PASSWORD).await.expect_err("active");
    assert_eq!(status.code(), Code::FailedPrecondition);

    app.logout(&token, false).await.expect("logout");
    let challenge = login_challenge(&app, email).await;
    assert_eq!(challenge.methods, ["totp", "recovery_code"]);
    assert_eq!(challenge.expires_in, 300);
    let next = app_code(&uri, email, 1);
    let session = complete(&app, &challenge.mfa_token, &next)
        .await
        .expect("complete");
    assert_eq!(session.token_type, "Bearer");
    assert_eq!(
        jwt_claims(&session.access_token)["amr"],
        serde_json::json!(["pwd", "otp"])
    );
    app.get_me(&session.access_token)
        .await
        .expect("a live session");
    let refreshed = app.refresh(&session.refresh_token).await.expect("refresh");
    assert_eq!(
        jwt_claims(&refreshed.access_token)["amr"],
        serde_json::json!(["pwd", "otp"])
    );

    assert_refused(
        complete(&app, &challenge.mfa_token, &recovery[0]).await,
        "a spent challenge",
    );
    let again = login_challenge(&app, email).await;
    assert_refused(
        complete(&app, &again.mfa_token, &next).await,
        "a replayed code",
    );
    let by_recovery = complete(&app, &again.mfa_token, &recovery[0].to_lowercase())
        .await
        .expect("a recovery code");
    assert_eq!(
        jwt_claims(&by_recovery.access_token)["amr"],
        serde_json::json!(["pwd", "otp"])
    );
    let third = login_challenge(&app, email).await;
    assert_refused(
        complete(&app, &third.mfa_token, &recovery[0]).await,
        "a used recovery code",
    );
    assert_refused(
        complete(&app, "not-a-token", &recovery[1]).await,
        "an unknown challenge",
    );
}

async fn wrong_codes_count_toward_the_account_lockout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "mallory@example.com";
    let (_, enrolled, _) = user_with_totp(&app, email).await;
    let challenge = login_challenge(&app, email).await;
    let far = app_codes(&enrolled.otpauth_uri, email, &[10, 11, 12, 13, 14, 15]);
    let mut locked = None;
    for code in &far {
        match complete(&app, &challenge.mfa_token, code).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                locked = Some(status);
                break;
            }
            other => assert_refused(other, "a wrong code"),
        }
    }
    assert!(locked.is_some(), "wrong codes never locked the account");
    let right = app_code(&enrolled.otpauth_uri, email, 1);
    let status = complete(&app, &challenge.mfa_token, &right)
        .await
        .expect_err("locked");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

async fn codes_are_regenerated_and_totp_disabled_or_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "heidi@example.com";
    let (token, enrolled, old_codes) = user_with_totp(&app, email).await;
    let uri = enrolled.otpauth_uri;

    let request = RegenerateRecoveryCodesRequest {
        code: app_code(&uri, email, 1),
    };
    let new_codes = app
        .client()
        .await
        .regenerate_recovery_codes(authorized(request, &token))
        .await
        .expect("regenerate")
        .into_inner()
        .recovery_codes;
    assert_eq!(new_codes.len(), 10);
    let challenge = login_challenge(&app, email).await;
    assert_refused(
        complete(&app, &challenge.mfa_token, &old_codes[0]).await,
        "an old code",
    );
    complete(&app, &challenge.mfa_token, &new_codes[0])
        .await
        .expect("a new code");

    let disable = |password: &str, code: &str| {
        authorized(
            DisableTotpRequest {
                current_password: password.into(),
                code: code.into(),
            },
            &token,
        )
    };
    let status = app
        .client()
        .await
        .disable_totp(disable("not the password", &new_codes[1]))
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);
    app.client()
        .await
        .disable_totp(disable(PASSWORD, &new_codes[1]))
        .await
        .expect("disable");
    let login = app.login(email, PASSWORD).await.expect("login");
    assert!(login.mfa_challenge.is_none() && !login.access_token.is_empty());

    // Enrolled again, then removed by an operator.
    let enrolled = enroll(&app, &token, PASSWORD).await.expect("enroll");
    confirm(&app, &token, &app_code(&enrolled.otpauth_uri, email, 0))
        .await
        .expect("confirm");
    login_challenge(&app, email).await;
    let user_id = app.get_me(&login.access_token).await.expect("me").id;
    let reset = |token: &str| {
        authorized(
            ResetUserTotpRequest {
                id: user_id.clone(),
            },
            token,
        )
    };
    let status = app
        .admin_client()
        .await
        .reset_user_totp(reset(&token))
        .await
        .expect_err("not an admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    let (_, admin) = app.user_with_roles("admin@example.com", &["admin"]).await;
    app.admin_client()
        .await
        .reset_user_totp(reset(&admin))
        .await
        .expect("reset");
    let login = app.login(email, PASSWORD).await.expect("login");
    assert!(login.mfa_challenge.is_none() && !login.access_token.is_empty());

    for (kind, count) in [
        ("totp.enrolled", 2),
        ("totp.enabled", 2),
        ("recovery_codes.regenerated", 1),
        ("recovery_code.used", 2),
        ("totp.disabled", 1),
        ("totp.reset", 1),
    ] {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = '{kind}' \
             AND user_id = '{user_id}'"
        );
        assert_eq!(app.db.count(&sql).await, count, "{kind}");
    }
}

async fn secrets_are_sealed_under_the_key_encryption_key(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let stored =
        |condition: &str| format!("SELECT COUNT(*) AS n FROM totp_secrets WHERE {condition}");
    let sealed = stored("secret LIKE 'authd-kek-v1:%'");
    let app = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let (_, plain, _) = user_with_totp(&app, "ivan@example.com").await;
    let in_the_clear = stored(&format!("secret = '{}'", plain.secret));
    assert_eq!(db.count(&in_the_clear).await, 1, "no KEK: plaintext");
    app.stop().await;

    let kek = db.dir().join("kek");
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("random");
    std::fs::write(&kek, STANDARD.encode(key)).expect("write KEK");
    let kek = kek.to_str().expect("utf-8 path").to_owned();
    let mut rewrap = std::process::Command::new(env!("CARGO_BIN_EXE_authd"));
    rewrap
        .args(["keys", "rewrap", "--key-encryption-key-file", &kek])
        .args(["--database-url", &db.url])
        .env("RUST_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || rewrap.output().expect("authd keys rewrap"))
        .await
        .expect("join");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(db.count(&in_the_clear).await, 0);
    assert_eq!(db.count(&sealed).await, 1);

    let app = TestApp::spawn_on(Arc::clone(&db), &["--key-encryption-key-file", &kek]).await;
    let (_, enrolled, _) = user_with_totp(&app, "judy@example.com").await;
    assert_eq!(db.count(&sealed).await, 2, "enrolled under the KEK: sealed");
    for (email, uri) in [
        ("ivan@example.com", &plain.otpauth_uri),
        ("judy@example.com", &enrolled.otpauth_uri),
    ] {
        let challenge = login_challenge(&app, email).await;
        complete(&app, &challenge.mfa_token, &app_code(uri, email, 1))
            .await
            .expect("the sealed secret checks codes");
    }
}
