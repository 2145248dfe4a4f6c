//! Reading the tokens authd issues, and keys for tests that forge their own.

use std::path::PathBuf;

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

/// A new Ed25519 private key as PKCS#8 PEM, the form authd reads.
pub(crate) fn new_signing_key_pem() -> String {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).expect("random seed");
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PEM")
        .to_string()
}

/// A key file for apps whose tokens a test needs to forge variations of.
pub(crate) fn write_key_file(db: &TestDb) -> (PathBuf, String) {
    let pem = new_signing_key_pem();
    let path = db.dir().join("signing-key.pem");
    std::fs::write(&path, &pem).expect("write key");
    (path, pem)
}
