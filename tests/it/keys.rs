use std::{
    process::Command,
    time::{Duration, Instant},
};

use authd_verify::{JwkSet, decoding_keys, validation, verify_with};
use serde_json::Value;
use tonic::Code;

use crate::support::{self, Backend, PASSWORD, TestApp, backend_tests, jwt_kid};

backend_tests!(
    the_jwks_is_served_over_http1_and_http2,
    discovery_points_at_the_jwks,
    discovery_ignores_the_host_the_client_claims,
    rotation_keeps_old_tokens_valid_and_switches_signing,
    keys_rotate_on_schedule,
    pyjwt_verifies_tokens_against_the_jwks,
);

const EMAIL: &str = "xena@example.com";

async fn jwks(app: &TestApp) -> JwkSet {
    let (status, _, body) = app.http_get("/.well-known/jwks.json", false).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("a JWK set")
}

/// Verifies like an offline service: only the JWKS, no call to authd.
fn verify_offline(set: &JwkSet, token: &str) -> bool {
    verify_with(token, &decoding_keys(set), &validation("authd", "authd")).is_ok()
}

async fn the_jwks_is_served_over_http1_and_http2(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_token(EMAIL).await;
    for http2 in [false, true] {
        let (status, headers, body) = app.http_get("/.well-known/jwks.json", http2).await;
        assert_eq!(status, 200, "http2: {http2}");
        assert_eq!(headers["content-type"], "application/jwk-set+json");
        assert_eq!(headers["cache-control"], "public, max-age=30");
        let set: Value = serde_json::from_str(&body).expect("json");
        let keys = set["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(
            (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
            (
                &"OKP".into(),
                &"Ed25519".into(),
                &"EdDSA".into(),
                &"sig".into()
            )
        );
        assert_eq!(key["kid"], jwt_kid(&token).as_str());
        assert!(key.get("d").is_none(), "never the private key");
    }
    assert!(verify_offline(&jwks(&app).await, &token));
    let (status, _, _) = app.http_get("/.well-known/nothing-here", false).await;
    assert_eq!(status, 404);
}

/// GET `path` on one fresh connection to the app while claiming to be
/// talking to `host`: as the `Host` header (origin-form or absolute-form
/// request target) over HTTP/1.1, or as `:authority` over HTTP/2.
async fn get_claiming_host(app: &TestApp, path: &str, host: &str, how: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let io = TokioIo::new(
        tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect"),
    );
    let absolute = format!("http://{host}{path}");
    let request = |target: &str| {
        http::Request::get(target)
            .header(http::header::HOST, host)
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let response = if how == "h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        let mut request = request(&absolute);
        request.headers_mut().remove(http::header::HOST);
        sender.send_request(request).await.expect("h2 response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(connection);
        let target = if how == "h1 absolute" {
            &absolute
        } else {
            path
        };
        sender
            .send_request(request(target))
            .await
            .expect("response")
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body");
    (
        status,
        String::from_utf8(body.to_bytes().to_vec()).expect("utf-8"),
    )
}

async fn discovery_points_at_the_jwks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, _, body) = app
        .http_get("/.well-known/openid-configuration", false)
        .await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(document["issuer"], "authd");
    let jwks_uri = format!("http://{}/.well-known/jwks.json", app.addr);
    assert_eq!(document["jwks_uri"], jwks_uri.as_str());

    let app = TestApp::spawn_with(backend, &["--issuer", "https://auth.example.com/"]).await;
    let (_, _, body) = app
        .http_get("/.well-known/openid-configuration", true)
        .await;
    let document: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(document["issuer"], "https://auth.example.com/");
    assert_eq!(
        document["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );

    let app = TestApp::spawn_with(
        backend,
        &[
            "--issuer",
            "https://auth.example.com",
            "--public-url",
            "https://keys.example.com/authd/",
        ],
    )
    .await;
    let (_, _, body) = app
        .http_get("/.well-known/openid-configuration", false)
        .await;
    let document: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        document["jwks_uri"],
        "https://keys.example.com/authd/.well-known/jwks.json"
    );
}

/// A forged Host or :authority never reaches the document, which is
/// publicly cacheable and would otherwise send every reader to the forger.
async fn discovery_ignores_the_host_the_client_claims(backend: Backend) {
    let apps = [
        (TestApp::spawn(backend).await, None),
        (
            TestApp::spawn_with(backend, &["--public-url", "https://auth.example.com"]).await,
            Some("https://auth.example.com/.well-known/jwks.json"),
        ),
    ];
    for (app, configured) in apps {
        let expected = configured.map_or_else(
            || format!("http://{}/.well-known/jwks.json", app.addr),
            str::to_owned,
        );
        for how in ["h1", "h1 absolute", "h2"] {
            let (status, body) = get_claiming_host(
                &app,
                "/.well-known/openid-configuration",
                "evil.example",
                how,
            )
            .await;
            assert_eq!(status, 200, "{how}");
            assert!(!body.contains("evil"), "{how}: {body}");
            let document: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(document["jwks_uri"], expected.as_str(), "{how}");
        }
    }
}

/// Logs in until the token is signed by a key other than `old_kid`.
async fn wait_for_new_signing_key(app: &TestApp, old_kid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let token = app
            .login(EMAIL, PASSWORD)
            .await
            .expect("login")
            .access_token;
        if jwt_kid(&token) != old_kid {
            return token;
        }
        assert!(Instant::now() < deadline, "still signing with the old key");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn rotation_keeps_old_tokens_valid_and_switches_signing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--key-refresh", "1s"]).await;
    let (user, old_token) = app.user_with_token(EMAIL).await;
    let old_kid = jwt_kid(&old_token);

    let output = Command::new(env!("CARGO_BIN_EXE_authd"))
        .args([
            "keys",
            "rotate",
            "--database-url",
            &app.db.url,
            "--key-refresh",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run authd keys rotate");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let new_kid = printed.split_whitespace().nth(3).expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);

    let new_token = wait_for_new_signing_key(&app, &old_kid).await;
    assert_eq!(jwt_kid(&new_token), new_kid);
    let set = jwks(&app).await;
    let kids: Vec<&str> = set
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.as_deref())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    for token in [&old_token, &new_token] {
        assert!(verify_offline(&set, token));
        assert_eq!(app.get_me(token).await.expect("get_me").id, user.id);
    }
}

async fn keys_rotate_on_schedule(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &["--key-refresh", "1s", "--key-rotation-period", "1s"],
    )
    .await;
    let (_, old_token) = app.user_with_token(EMAIL).await;
    let new_token = wait_for_new_signing_key(&app, &jwt_kid(&old_token)).await;
    app.get_me(&old_token)
        .await
        .expect("old tokens still verify");
    app.get_me(&new_token).await.expect("new tokens verify");
}

async fn pyjwt_verifies_tokens_against_the_jwks(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--key-refresh", "1s"]).await;
    let (user, old_token) = app.user_with_token(EMAIL).await;
    let db_url = app.db.url.clone();
    let rotated = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_authd"))
            .args([
                "keys",
                "rotate",
                "--database-url",
                &db_url,
                "--key-refresh",
                "1s",
            ])
            .env("RUST_LOG", "warn")
            .status()
    })
    .await
    .expect("join")
    .expect("run authd keys rotate");
    assert!(rotated.success());
    let new_token = wait_for_new_signing_key(&app, &jwt_kid(&old_token)).await;

    let python = tokio::task::spawn_blocking(|| {
        support::venv("pyjwt-venv", "tests/python/requirements.txt").join("bin/python")
    })
    .await
    .expect("venv");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/verify_with_jwks.py"
    );
    let jwks_url = format!("http://{}/.well-known/jwks.json", app.addr);
    let verify = |tokens: Vec<String>| {
        let (python, jwks_url) = (python.clone(), jwks_url.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args([jwks_url.as_str(), "authd", "authd"])
                .args(tokens)
                .output()
                .expect("run python")
        })
    };
    let output = verify(vec![old_token.clone(), new_token])
        .await
        .expect("join");
    assert!(output.status.success(), "{output:?}");
    let subjects = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        [user.id.as_str(), user.id.as_str()]
    );

    let mut forged = old_token;
    forged.push('x');
    let output = verify(vec![forged]).await.expect("join");
    assert!(
        !output.status.success(),
        "PyJWT must reject a tampered token"
    );
    let status = app.get_me("not-a-token").await.expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
}
