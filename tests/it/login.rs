use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;
use tonic::Code;

use crate::support::{Backend, PASSWORD, TestApp, backend_tests};

backend_tests!(
    login_issues_a_bearer_token,
    the_token_has_the_access_token_shape,
    unknown_email_and_wrong_password_look_the_same,
    login_accepts_any_case_variant_of_the_email,
    the_token_lifetime_is_configurable,
);

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

async fn login_issues_a_bearer_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app
        .signup("ivan@example.com", PASSWORD, "ivan")
        .await
        .expect("signup");
    let login = app
        .login("ivan@example.com", PASSWORD)
        .await
        .expect("login");
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.expires_in, 15 * 60, "default lifetime is 15 minutes");
    let me = app.get_me(&login.access_token).await.expect("get_me");
    assert_eq!(me, user);
}

async fn the_token_has_the_access_token_shape(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--issuer", "https://auth.test", "--audience", "api"],
    )
    .await;
    let (user, token) = app.user_with_token("judy@example.com").await;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_part(parts[0]);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    let claims = decode_part(parts[1]);
    assert_eq!(claims["iss"], "https://auth.test");
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["sub"], user.id.as_str());
    let (iat, nbf, exp) = (&claims["iat"], &claims["nbf"], &claims["exp"]);
    assert_eq!(exp.as_i64().expect("exp") - iat.as_i64().expect("iat"), 900);
    assert_eq!(nbf, iat);
    assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() == 36));
    let mut names: Vec<&String> = claims.as_object().expect("object").keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "amr", "aud", "exp", "iat", "iss", "jti", "nbf", "sid", "sub"
        ],
        "no personal data"
    );
    assert!(!parts[1].is_empty() && !token.contains("judy"));
}

async fn unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("kim@example.com", PASSWORD, "kim")
        .await
        .expect("signup");
    let wrong = app
        .login("kim@example.com", "wrong password")
        .await
        .expect_err("wrong");
    let unknown = app
        .login("nobody@example.com", PASSWORD)
        .await
        .expect_err("unknown");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message(), wrong.details()),
        (unknown.code(), unknown.message(), unknown.details())
    );
    assert_eq!(wrong.message(), "invalid email or password");
}

async fn login_accepts_any_case_variant_of_the_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("Leo@Example.com", PASSWORD, "leo")
        .await
        .expect("signup");
    for variant in ["leo@example.com", " LEO@EXAMPLE.COM", "ｌeo@example.com"] {
        app.login(variant, PASSWORD).await.expect(variant);
    }
    let status = app
        .login("leo@example.com", "Correct horse battery")
        .await
        .expect_err("case matters in passwords");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn the_token_lifetime_is_configurable(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--token-ttl", "90s"]).await;
    app.signup("mia@example.com", PASSWORD, "mia")
        .await
        .expect("signup");
    let login = app.login("mia@example.com", PASSWORD).await.expect("login");
    assert_eq!(login.expires_in, 90);
}
