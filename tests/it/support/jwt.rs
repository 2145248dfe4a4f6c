//! Reading the tokens authd issues, and keys for tests that forge their own.

use std::path::PathBuf;

use authd::token::KeyPair;

use super::TestDb;

/// The decoded payload of a JWT, unverified: for asserting what it claims.
pub(crate) fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

pub(crate) fn jwt_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

/// A key file for apps whose tokens a test needs to forge variations of.
pub(crate) fn write_key_file(db: &TestDb) -> (PathBuf, String) {
    let key = KeyPair::generate().expect("key");
    let path = db.dir().join("signing-key.pem");
    std::fs::write(&path, key.pkcs8_pem()).expect("write key");
    (path, key.pkcs8_pem().to_owned())
}
