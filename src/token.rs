//! Access tokens: Ed25519-signed JWTs (RFC 9068 profile, `typ: at+jwt`).
//!
//! Verification is pure CPU work on an in-memory key, so it can run in the
//! request path before any handler or database is involved.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

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

use crate::domain::Error;

pub const TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated between the replica that signed and the one that
/// verifies. Small on purpose: every second here extends a token's life.
pub const LEEWAY: Duration = Duration::from_secs(10);
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
    /// The session the token belongs to; revoking it ends the token at authd.
    pub sid: String,
}

impl Claims {
    /// The user the token was issued to.
    pub fn user_id(&self) -> Result<Uuid, Error> {
        Uuid::parse_str(&self.sub).map_err(|_| Error::InvalidToken)
    }

    pub fn session_id(&self) -> Result<Uuid, Error> {
        Uuid::parse_str(&self.sid).map_err(|_| Error::InvalidToken)
    }
}

/// An Ed25519 key pair, identified by its RFC 7638 JWK thumbprint.
pub struct KeyPair {
    kid: String,
    x: String,
    pkcs8_pem: SecretString,
    encoding: EncodingKey,
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
        Ok(Self {
            kid: thumbprint(&x),
            x,
            pkcs8_pem: SecretString::from(pem.to_owned()),
            encoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn pkcs8_pem(&self) -> &str {
        self.pkcs8_pem.expose_secret()
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: "EdDSA".into(),
            usage: "sig".into(),
            kid: self.kid.clone(),
            x: self.x.clone(),
        }
    }
}

/// A public key in JSON Web Key form (RFC 8037 for Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub usage: String,
    pub kid: String,
    pub x: String,
}

/// A JSON Web Key Set, the body of `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The Ed25519 signing keys of the set, by `kid`. Keys of other types or
    /// uses are skipped rather than trusted.
    pub fn decoding_keys(&self) -> HashMap<String, DecodingKey> {
        self.keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.usage == "sig")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect()
    }
}

/// The checks every authd access token must pass, wherever it is verified.
pub fn validation(issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Checks signature, algorithm, type, key id, issuer, audience and time
/// window against `keys`. Every failure is the same [`Error::InvalidToken`]:
/// which check failed is no business of the presenter.
pub fn verify_with(
    token: &str,
    keys: &HashMap<String, DecodingKey>,
    validation: &Validation,
) -> Result<Claims, Error> {
    let header = parse_header(token)?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.get(kid))
        .ok_or(Error::InvalidToken)?;
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|_| Error::InvalidToken)
}

/// The header of a token that could be ours: small enough, EdDSA, `at+jwt`,
/// and no `crit`. RFC 7515 4.1.11 requires rejecting a token whose `crit`
/// names an extension the recipient does not understand; we understand
/// none. jsonwebtoken parses `crit` but never enforces it, and reads
/// `"crit": null` as absent, so the header's JSON is inspected here, before
/// it becomes a `Header`.
pub fn parse_header(token: &str) -> Result<Header, Error> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Error::InvalidToken);
    }
    let mut parts = token.split('.');
    let (Some(encoded), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::InvalidToken);
    };
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Error::InvalidToken)?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| Error::InvalidToken)?;
    if fields.contains_key("crit") {
        return Err(Error::InvalidToken);
    }
    let header: Header = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|_| Error::InvalidToken)?;
    let typ_ok = header.typ.as_deref().is_some_and(|typ| {
        typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
    });
    if header.alg != Algorithm::EdDSA || !typ_ok {
        return Err(Error::InvalidToken);
    }
    Ok(header)
}

/// RFC 7638 thumbprint of an Ed25519 public key: stable, derived from the key
/// itself, so the same key file gives the same `kid` on every replica.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A freshly signed access token.
pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

/// The keys this process signs and verifies with: one signing key, and every
/// key whose tokens may still be live or that is about to take over.
pub struct Keyring {
    signing: KeyPair,
    verifying: HashMap<String, DecodingKey>,
    published: JwkSet,
}

impl Keyring {
    /// `signing` signs; it and every key in `also_verifying` verify.
    pub fn new(signing: KeyPair, also_verifying: &[KeyPair]) -> Result<Self, Error> {
        let published = JwkSet {
            keys: std::iter::once(&signing)
                .chain(also_verifying)
                .map(KeyPair::public_jwk)
                .collect(),
        };
        let verifying = published.decoding_keys();
        if verifying.len() != published.keys.len() {
            return Err(Error::internal(
                "a stored signing key has no usable public key",
            ));
        }
        Ok(Self {
            signing,
            verifying,
            published,
        })
    }

    pub fn signing_kid(&self) -> &str {
        self.signing.kid()
    }
}

pub struct Tokens {
    keyring: RwLock<Arc<Keyring>>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl Tokens {
    pub fn new(keyring: Keyring, issuer: String, audience: String, ttl: Duration) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(keyring)),
            validation: validation(&issuer, &audience),
            issuer,
            audience,
            ttl,
        }
    }

    /// Swaps in a reloaded keyring; calls in flight finish with the old one.
    pub fn install(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
    }

    fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> Result<AccessToken, Error> {
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
            sid: session_id.to_string(),
        };
        let keyring = self.keyring();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(keyring.signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keyring.signing.encoding)
            .map_err(Error::internal)?;
        Ok(AccessToken {
            token: SecretString::from(token),
            expires_in: self.ttl,
        })
    }

    /// Verifies a token against the current keyring; see [`verify_with`].
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        verify_with(token, &self.keyring().verifying, &self.validation)
    }

    /// The public keys to publish.
    pub fn jwks(&self) -> JwkSet {
        self.keyring().published.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let keyring = Keyring::new(KeyPair::generate().expect("key"), &[]).expect("keyring");
        Tokens::new(keyring, "iss".into(), "aud".into(), Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify_and_carry_no_personal_data() {
        let tokens = tokens();
        let id = Uuid::now_v7();
        let issued = tokens.issue(id, Uuid::now_v7()).expect("issue");
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

    /// A token signed by `key` whose header is `header`, as a forger with
    /// the real key would make it.
    fn signed_with_header(key: &KeyPair, header: &serde_json::Value) -> String {
        let now = Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": "iss", "sub": Uuid::now_v7().to_string(), "aud": "aud",
            "exp": now + 60, "iat": now, "nbf": now,
            "jti": "j", "sid": Uuid::now_v7().to_string(),
        });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::EdDSA)
                .expect("sign");
        format!("{message}.{signature}")
    }

    #[test]
    fn a_crit_header_parameter_of_any_value_is_rejected() {
        let key = KeyPair::generate().expect("key");
        let pem = key.pkcs8_pem().to_owned();
        let header = |crit: Option<serde_json::Value>| {
            let mut header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid()});
            if let Some(crit) = crit {
                header["crit"] = crit;
            }
            signed_with_header(&key, &header)
        };
        let plain = header(None);
        let crits = [
            serde_json::json!(["exp"]),
            serde_json::json!(["urn:example:unknown"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ]
        .map(|crit| header(Some(crit)));
        let tokens = Tokens::new(
            Keyring::new(KeyPair::from_pkcs8_pem(&pem).expect("key"), &[]).expect("keyring"),
            "iss".into(),
            "aud".into(),
            Duration::from_secs(60),
        );
        assert!(
            tokens.verify(&plain).is_ok(),
            "the forging works without crit"
        );
        for token in crits {
            assert!(parse_header(&token).is_err());
            assert!(tokens.verify(&token).is_err());
        }
    }

    #[test]
    fn another_keys_token_is_rejected() {
        let issued = tokens()
            .issue(Uuid::now_v7(), Uuid::now_v7())
            .expect("issue");
        assert!(tokens().verify(issued.token.expose_secret()).is_err());
    }

    #[test]
    fn a_retired_key_still_verifies_until_it_leaves_the_keyring() {
        let (old, new) = (
            KeyPair::generate().expect("key"),
            KeyPair::generate().expect("key"),
        );
        let old_pem = old.pkcs8_pem().to_owned();
        let tokens = Tokens::new(
            Keyring::new(old, &[]).expect("keyring"),
            "iss".into(),
            "aud".into(),
            Duration::from_secs(60),
        );
        let before = tokens.issue(Uuid::now_v7(), Uuid::now_v7()).expect("issue");
        let retired = KeyPair::from_pkcs8_pem(&old_pem).expect("old key");
        tokens.install(Keyring::new(new, &[retired]).expect("keyring"));
        let after = tokens.issue(Uuid::now_v7(), Uuid::now_v7()).expect("issue");
        assert!(tokens.verify(before.token.expose_secret()).is_ok());
        assert!(tokens.verify(after.token.expose_secret()).is_ok());
        assert_eq!(tokens.jwks().keys.len(), 2);
        let fresh = KeyPair::generate().expect("key");
        tokens.install(Keyring::new(fresh, &[]).expect("keyring"));
        assert!(tokens.verify(before.token.expose_secret()).is_err());
    }
}
