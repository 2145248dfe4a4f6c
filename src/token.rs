//! Access tokens: Ed25519-signed JWTs (RFC 9068 profile, `typ: at+jwt`).
//!
//! Verification is pure CPU work on an in-memory key, so it can run in the
//! request path before any handler or database is involved.

use std::{path::Path, time::Duration};

use anyhow::Context;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Error, store::Database};

pub const TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated between the replica that signed and the one that
/// verifies. Small on purpose: every second here extends a token's life.
const LEEWAY_SECS: u64 = 10;
/// Our tokens are a few hundred bytes; anything far larger is not ours and is
/// refused before it is base64-decoded or parsed.
const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of an access token. Deliberately no email or other personal
/// data: tokens are readable by anyone who holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
}

impl Claims {
    /// The user the token was issued to.
    pub fn user_id(&self) -> Result<Uuid, Error> {
        Uuid::parse_str(&self.sub).map_err(|_| Error::InvalidToken)
    }
}

/// An Ed25519 key pair, identified by its RFC 7638 JWK thumbprint.
pub struct KeyPair {
    kid: String,
    pkcs8_pem: SecretString,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl KeyPair {
    pub fn generate() -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::internal(e.to_string()))?;
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::internal(e.to_string()))?;
        Self::from_pkcs8_pem(&pem)
    }

    /// Parses a PKCS#8 PEM Ed25519 private key. The error names what is wrong
    /// with the key without echoing any of it.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| Error::internal("not a PKCS#8 PEM Ed25519 private key"))?;
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|_| Error::internal("not a PKCS#8 PEM Ed25519 private key"))?;
        let decoding = DecodingKey::from_ed_components(&x).map_err(Error::internal)?;
        Ok(Self {
            kid: thumbprint(&x),
            pkcs8_pem: SecretString::from(pem.to_owned()),
            encoding,
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn pkcs8_pem(&self) -> &str {
        self.pkcs8_pem.expose_secret()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: stable, derived from the key
/// itself, so the same key file gives the same `kid` on every replica.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The key to sign with: the configured PEM file if there is one, otherwise
/// the database's active key, created on first start. Replicas that start
/// together each offer a key and all adopt whichever the database kept.
pub async fn load_signing_key(db: &Database, file: Option<&Path>) -> anyhow::Result<KeyPair> {
    if let Some(path) = file {
        let context = || format!("AUTHD_SIGNING_KEY_FILE {}", path.display());
        let pem = tokio::fs::read_to_string(path)
            .await
            .with_context(context)?;
        return KeyPair::from_pkcs8_pem(&pem).with_context(context);
    }
    if let Some(pem) = db.active_signing_key().await? {
        return Ok(KeyPair::from_pkcs8_pem(&pem)?);
    }
    let offered = KeyPair::generate()?;
    db.offer_signing_key(offered.kid(), offered.pkcs8_pem())
        .await?;
    let pem = db
        .active_signing_key()
        .await?
        .context("the database kept no active signing key")?;
    tracing::info!("signing key created and stored in the database");
    Ok(KeyPair::from_pkcs8_pem(&pem)?)
}

/// A freshly signed access token.
pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

pub struct Tokens {
    key: KeyPair,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl Tokens {
    pub fn new(key: KeyPair, issuer: String, audience: String, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            key,
            issuer,
            audience,
            ttl,
            validation,
        }
    }

    pub fn issue(&self, user_id: Uuid) -> Result<AccessToken, Error> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).map_err(Error::internal)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user_id.to_string(),
            aud: self.audience.clone(),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(self.key.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key.encoding).map_err(Error::internal)?;
        Ok(AccessToken {
            token: SecretString::from(token),
            expires_in: self.ttl,
        })
    }

    /// Checks signature, algorithm, type, key id, issuer, audience and time
    /// window. Every failure is the same [`Error::InvalidToken`]: which check
    /// failed is no business of the presenter.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if header.alg != Algorithm::EdDSA
            || !typ_ok
            || header.kid.as_deref() != Some(self.key.kid())
        {
            return Err(Error::InvalidToken);
        }
        jsonwebtoken::decode::<Claims>(token, &self.key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| Error::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let key = KeyPair::generate().expect("key");
        Tokens::new(key, "iss".into(), "aud".into(), Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify_and_carry_no_personal_data() {
        let tokens = tokens();
        let id = Uuid::now_v7();
        let issued = tokens.issue(id).expect("issue");
        let claims = tokens.verify(issued.token.expose_secret()).expect("verify");
        assert_eq!(claims.user_id().expect("uuid"), id);
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("iss", "aud"));
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_key_survives_a_pem_round_trip_with_its_kid() {
        let key = KeyPair::generate().expect("key");
        let again = KeyPair::from_pkcs8_pem(key.pkcs8_pem()).expect("parse");
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.kid().len(), 43);
    }

    #[test]
    fn another_keys_token_is_rejected() {
        let issued = tokens().issue(Uuid::now_v7()).expect("issue");
        assert!(tokens().verify(issued.token.expose_secret()).is_err());
    }
}
