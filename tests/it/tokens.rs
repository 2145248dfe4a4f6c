use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{self, Backend, PASSWORD, TestApp, TestDb, backend_tests, write_key_file};

backend_tests!(
    every_malformed_authorization_is_refused_alike,
    every_forged_or_invalid_token_is_refused_alike,
    the_bearer_scheme_is_case_insensitive,
    a_token_for_a_deleted_user_is_refused,
    public_rpcs_ignore_the_authorization_header,
    a_token_with_a_crit_header_is_refused_by_authd_and_the_verifier,
);

const ISSUER: &str = "https://auth.test";
const AUDIENCE: &str = "api";

/// An app signing with a key the test holds, so the test can mint tokens
/// that differ from real ones in exactly one way.
struct Forger {
    app: TestApp,
    pem: String,
    kid: String,
    user_id: String,
    session_id: String,
}

impl Forger {
    async fn new(backend: Backend) -> Self {
        let db = TestDb::new(backend).await;
        let (path, pem) = write_key_file(&db);
        let path = path.to_str().expect("utf-8 path").to_owned();
        let app = TestApp::spawn_on(
            Arc::new(db),
            &[
                "--signing-key-file",
                &path,
                "--issuer",
                ISSUER,
                "--audience",
                AUDIENCE,
            ],
        )
        .await;
        let (user, token) = app.user_with_token("nia@example.com").await;
        let header = jsonwebtoken::decode_header(&token).expect("header");
        let payload = token.split('.').nth(1).expect("payload");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        Self {
            app,
            kid: header.kid.expect("kid"),
            pem,
            user_id: user.id,
            session_id: claims["sid"].as_str().expect("sid").to_owned(),
        }
    }

    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": self.user_id, "sid": self.session_id,
            "iat": now, "nbf": now, "exp": now + 600, "jti": "forged",
        })
    }

    fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        header
    }

    fn sign(&self, header: &Header, claims: &Value) -> String {
        let key = EncodingKey::from_ed_pem(self.pem.as_bytes()).expect("key");
        jsonwebtoken::encode(header, claims, &key).expect("sign")
    }

    fn with_claims(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
        let mut claims = self.claims();
        edit(claims.as_object_mut().expect("object"));
        self.sign(&self.header(), &claims)
    }

    fn with_header(&self, edit: impl FnOnce(&mut Header)) -> String {
        let mut header = self.header();
        edit(&mut header);
        self.sign(&header, &self.claims())
    }

    async fn assert_refused(&self, case: &str, authorization: Option<&[u8]>) {
        let status = self.app.get_me_with(authorization).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(
            status.message(),
            "missing or invalid access token",
            "{case}"
        );
    }
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

async fn every_malformed_authorization_is_refused_alike(backend: Backend) {
    let forger = Forger::new(backend).await;
    let valid = forger.sign(&forger.header(), &forger.claims());
    forger
        .app
        .get_me(&valid)
        .await
        .expect("the forger's baseline token is valid");

    let mut non_ascii = bearer(&valid);
    non_ascii.extend_from_slice("é".as_bytes());
    let long = bearer(&"A".repeat(8 * 1024));
    let cases: [(&str, Option<&[u8]>); 8] = [
        ("missing header", None),
        ("empty token", Some(b"Bearer ")),
        ("scheme only", Some(b"Bearer")),
        ("basic scheme", Some(b"Basic bmlhOnBhc3N3b3Jk")),
        ("token without scheme", Some(valid.as_bytes())),
        ("non-ascii metadata", Some(&non_ascii)),
        ("not a jwt", Some(b"Bearer not-a-jwt")),
        ("8 KiB token", Some(&long)),
    ];
    for (case, authorization) in cases {
        forger.assert_refused(case, authorization).await;
    }
    // A header list over 16 KiB is refused by HTTP/2 itself, before any
    // layer of authd reads it; the server keeps serving.
    let huge = bearer(&"A".repeat(1024 * 1024));
    forger
        .app
        .get_me_with(Some(&huge))
        .await
        .expect_err("a 1 MiB header is refused");
    forger.app.get_me(&valid).await.expect("still serving");
}

async fn every_forged_or_invalid_token_is_refused_alike(backend: Backend) {
    let forger = Forger::new(backend).await;
    let now = chrono::Utc::now().timestamp();
    let valid = forger.sign(&forger.header(), &forger.claims());

    let (head, rest) = valid.split_once('.').expect("jwt");
    let (_, signature) = rest.split_once('.').expect("jwt");
    let mut other_payload = forger.claims();
    other_payload["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let tampered_payload = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(other_payload.to_string())
    );
    let mut tampered_signature = valid.clone();
    let last = tampered_signature.pop().expect("char");
    tampered_signature.push(if last == 'A' { 'B' } else { 'A' });

    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": forger.kid});
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(none_header.to_string()),
        URL_SAFE_NO_PAD.encode(forger.claims().to_string())
    );
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.typ = Some("at+jwt".into());
    hs256.kid = Some(forger.kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs256,
        &forger.claims(),
        &EncodingKey::from_secret(forger.pem.as_bytes()),
    )
    .expect("hs256");
    let other_key = support::new_signing_key_pem();
    let other_key_same_kid = jsonwebtoken::encode(
        &forger.header(),
        &forger.claims(),
        &EncodingKey::from_ed_pem(other_key.as_bytes()).expect("key"),
    )
    .expect("sign");

    let cases = [
        ("tampered payload", tampered_payload),
        ("tampered signature", tampered_signature),
        ("alg none", alg_none),
        ("HS256 keyed with the key file", hs256),
        ("another key under our kid", other_key_same_kid),
        (
            "expired",
            forger.with_claims(|c| {
                c.insert("exp".into(), json!(now - 120));
                c.insert("iat".into(), json!(now - 1000));
                c.insert("nbf".into(), json!(now - 1000));
            }),
        ),
        (
            "not yet valid",
            forger.with_claims(|c| {
                c.insert("nbf".into(), json!(now + 600));
            }),
        ),
        (
            "wrong issuer",
            forger.with_claims(|c| {
                c.insert("iss".into(), json!("https://evil.test"));
            }),
        ),
        (
            "wrong audience",
            forger.with_claims(|c| {
                c.insert("aud".into(), json!("other-api"));
            }),
        ),
        ("no exp", forger.with_claims(|c| drop(c.remove("exp")))),
        ("no iss", forger.with_claims(|c| drop(c.remove("iss")))),
        ("no aud", forger.with_claims(|c| drop(c.remove("aud")))),
        ("no sub", forger.with_claims(|c| drop(c.remove("sub")))),
        ("no sid", forger.with_claims(|c| drop(c.remove("sid")))),
        (
            "another user's session",
            forger.with_claims(|c| {
                c.insert("sid".into(), json!(uuid::Uuid::now_v7().to_string()));
            }),
        ),
        (
            "sub not a user id",
            forger.with_claims(|c| {
                c.insert("sub".into(), json!("nia@example.com"));
            }),
        ),
        (
            "typ JWT",
            forger.with_header(|h| h.typ = Some("JWT".into())),
        ),
        ("no typ", forger.with_header(|h| h.typ = None)),
        (
            "unknown kid",
            forger.with_header(|h| h.kid = Some("someone-else".into())),
        ),
        ("no kid", forger.with_header(|h| h.kid = None)),
        (
            "crit header",
            forger.with_header(|h| h.crit = Some(vec!["exp".into()])),
        ),
    ];
    for (case, token) in cases {
        forger.assert_refused(case, Some(&bearer(&token))).await;
    }
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (user, token) = app.user_with_token("omar@example.com").await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} {token}");
        let me = app.get_me_with(Some(value.as_bytes())).await.expect(scheme);
        assert_eq!(me.id, user.id);
    }
}

/// Deleted through AdminService, whose deletion revokes the user's sessions
/// on every replica (an edit in the database behind authd's back is not
/// seen by replicas' in-memory views).
async fn a_token_for_a_deleted_user_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.user_with_roles("root@example.com", &["admin"]).await;
    let (user, token) = app.user_with_token("pia@example.com").await;
    app.get_me(&token)
        .await
        .expect("valid while the user exists");
    let delete = authd::api::proto::admin::DeleteUserRequest { id: user.id };
    app.admin_client()
        .await
        .delete_user(support::authorized(delete, &admin))
        .await
        .expect("delete");
    let status = app.get_me(&token).await.expect_err("user is gone");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing or invalid access token");
}

async fn public_rpcs_ignore_the_authorization_header(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.client().await;
    let mut signup = tonic::Request::new(authd::api::proto::SignupRequest {
        email: "quinn@example.com".into(),
        password: PASSWORD.into(),
        username: "quinn".into(),
    });
    signup
        .metadata_mut()
        .insert("authorization", "Bearer garbage".parse().expect("ascii"));
    client.signup(signup).await.expect("signup needs no token");
    let mut login = tonic::Request::new(authd::api::proto::LoginRequest {
        email: "quinn@example.com".into(),
        password: PASSWORD.into(),
        device_label: String::new(),
    });
    login.metadata_mut().insert(
        "authorization",
        "Basic Zm9vOmJhcg==".parse().expect("ascii"),
    );
    client.login(login).await.expect("login needs no token");
}

/// RFC 7515 4.1.11: a `crit` we do not understand (and we understand none)
/// makes the token invalid, at authd and in `authd_verify` alike.
async fn a_token_with_a_crit_header_is_refused_by_authd_and_the_verifier(backend: Backend) {
    use authd::api::well_known::JWKS_PATH;
    use authd_verify::JwksVerifier;
    let forger = Forger::new(backend).await;
    let url = format!("http://{}{JWKS_PATH}", forger.app.addr)
        .parse()
        .expect("url");
    let verifier = JwksVerifier::new(url, ISSUER, AUDIENCE)
        .await
        .expect("verifier");
    let valid = forger.sign(&forger.header(), &forger.claims());
    forger.app.get_me(&valid).await.expect("baseline is valid");
    assert!(
        forger
            .app
            .introspect(&valid)
            .await
            .expect("introspect")
            .active
    );
    assert!(verifier.claims(&valid).await.is_some());

    let mut with_null_crit = serde_json::to_value(forger.header()).expect("header");
    with_null_crit["crit"] = Value::Null;
    let (_, signed) = valid.split_once('.').expect("jwt");
    let (claims, _) = signed.split_once('.').expect("jwt");
    let message = format!(
        "{}.{claims}",
        URL_SAFE_NO_PAD.encode(with_null_crit.to_string())
    );
    let key = EncodingKey::from_ed_pem(forger.pem.as_bytes()).expect("key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::EdDSA).expect("sign");
    let cases = [
        (
            "crit naming a registered claim",
            forger.with_header(|h| h.crit = Some(vec!["exp".into()])),
        ),
        (
            "crit naming an extension",
            forger.with_header(|h| {
                h.crit = Some(vec!["urn:example:ext".into()]);
                h.extras.insert("urn:example:ext", true);
            }),
        ),
        ("empty crit", forger.with_header(|h| h.crit = Some(vec![]))),
        ("null crit", format!("{message}.{signature}")),
    ];
    for (case, token) in cases {
        forger.assert_refused(case, Some(&bearer(&token))).await;
        let introspected = forger.app.introspect(&token).await.expect(case);
        assert!(!introspected.active, "{case}: introspection says inactive");
        assert!(introspected.sub.is_empty(), "{case}: and nothing more");
        assert!(verifier.claims(&token).await.is_none(), "{case}: verifier");
    }
}
