//! Access tokens: Ed25519-signed JWTs (RFC 9068 profile, `typ: at+jwt`).
//!
//! Verification is pure CPU work on an in-memory key, so it can run in the
//! request path before any handler or database is involved. A client sends
//! the same token on every call until it expires, so a verified token's
//! claims are kept and its signature is checked once.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use authd_verify::{
    Claims, JwkSet, Keys, LEEWAY, TOKEN_TYPE, decoding_keys, ed25519_jwk, validation, verify_with,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, jwk::Jwk};
use quick_cache::sync::Cache;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{Error, Roles, mfa::Amr};

/// An Ed25519 key pair, identified by its RFC 7638 JWK thumbprint.
pub(crate) struct KeyPair {
    kid: String,
    jwk: Jwk,
    pkcs8_pem: SecretString,
    encoding: EncodingKey,
}

impl KeyPair {
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::internal(e.to_string()))?;
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::internal(e.to_string()))?;
        Self::from_pkcs8_pem(&pem)
    }

    /// Parses a PKCS#8 PEM Ed25519 private key. The error names what is wrong
    /// with the key without echoing any of it.
    pub(crate) fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| Error::internal("not a PKCS#8 PEM Ed25519 private key"))?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|_| Error::internal("not a PKCS#8 PEM Ed25519 private key"))?;
        let jwk = ed25519_jwk(signing.verifying_key().as_bytes()).map_err(Error::internal)?;
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| Error::internal("a JWK without a kid"))?;
        Ok(Self {
            kid,
            jwk,
            pkcs8_pem: SecretString::from(pem.to_owned()),
            encoding,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn pkcs8_pem(&self) -> &str {
        self.pkcs8_pem.expose_secret()
    }

    /// The public half, as published in the JWKS.
    pub(crate) fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }
}

/// Whom an access token is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject {
    /// A user, in one of their sessions, which ends by `session_ends` at
    /// the latest (the session limits, if any): no token outlives it, so a
    /// session that dies by itself needs no revocation.
    User {
        user_id: Uuid,
        session_id: Uuid,
        session_ends: Option<DateTime<Utc>>,
        amr: Amr,
        /// As the user's row says when the token is issued: a verification
        /// shows in the session's next token.
        email_verified: bool,
    },
    /// A service account: no session, no refresh token.
    ServiceAccount(Uuid),
}

/// A freshly signed access token.
pub(crate) struct AccessToken {
    pub(crate) token: SecretString,
    pub(crate) expires_in: Duration,
}

/// How many verified tokens are remembered: about one per client active
/// within a token's lifetime, at a few hundred bytes each. Past it the least
/// used are forgotten and simply verified again.
const VERIFIED_CAPACITY: usize = 16_384;

/// The keys this process signs and verifies with: one signing key, and every
/// key whose tokens may still be live or that is about to take over.
pub(crate) struct Keyring {
    signing: KeyPair,
    verifying: Keys,
    published: JwkSet,
    /// Tokens these keys verified, by the SHA-256 of the token. A reload
    /// that keeps every key keeps it; one that drops a key starts a new one,
    /// so a token of the dropped key is never answered from here, not even
    /// by a call that was verifying it while the new keyring was installed.
    verified: Arc<Cache<[u8; 32], Claims>>,
}

impl Keyring {
    /// `signing` signs; it and every key in `also_verifying` verify.
    pub(crate) fn new(signing: KeyPair, also_verifying: &[KeyPair]) -> Result<Self, Error> {
        Self::with_capacity(signing, also_verifying, VERIFIED_CAPACITY)
    }

    fn with_capacity(
        signing: KeyPair,
        also_verifying: &[KeyPair],
        verified_capacity: usize,
    ) -> Result<Self, Error> {
        let published = JwkSet {
            keys: std::iter::once(&signing)
                .chain(also_verifying)
                .map(KeyPair::public_jwk)
                .collect(),
        };
        let verifying = decoding_keys(&published);
        if verifying.len() != published.keys.len() {
            return Err(Error::internal(
                "a stored signing key has no usable public key",
            ));
        }
        Ok(Self {
            signing,
            verifying,
            published,
            verified: Arc::new(Cache::new(verified_capacity)),
        })
    }

    #[cfg(test)]
    pub(crate) fn signing_kid(&self) -> &str {
        self.signing.kid()
    }
}

pub(crate) struct Tokens {
    keyring: RwLock<Arc<Keyring>>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl Tokens {
    pub(crate) fn new(keyring: Keyring, issuer: String, audience: String, ttl: Duration) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(keyring)),
            validation: validation(&issuer, &audience),
            issuer,
            audience,
            ttl,
        }
    }

    /// Swaps in a reloaded keyring; calls in flight finish with the old one.
    /// Keys reload every `AUTHD_KEY_REFRESH`, mostly unchanged: the verified
    /// tokens carry over unless a key that may have verified one is gone.
    pub(crate) fn install(&self, mut keyring: Keyring) {
        let mut current = self.keyring.write().unwrap_or_else(PoisonError::into_inner);
        if current
            .verifying
            .keys()
            .all(|kid| keyring.verifying.contains_key(kid))
        {
            keyring.verified = Arc::clone(&current.verified);
        }
        *current = Arc::new(keyring);
    }

    fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token for `subject` carrying `roles`.
    pub(crate) fn issue(&self, subject: Subject, roles: &Roles) -> Result<AccessToken, Error> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).map_err(Error::internal)?;
        let (sub, sid, client_id, ends, amr, email_verified) = match subject {
            Subject::User {
                user_id,
                session_id,
                session_ends,
                amr,
                email_verified,
            } => (
                user_id.to_string(),
                Some(session_id.to_string()),
                None,
                session_ends.map(|ends| ends.timestamp()),
                amr.values().iter().map(|&value| value.to_owned()).collect(),
                email_verified,
            ),
            Subject::ServiceAccount(id) => (
                id.to_string(),
                None,
                Some(id.to_string()),
                None,
                Vec::new(),
                false,
            ),
        };
        let exp = ends.map_or(now + ttl, |ends| ends.clamp(now, now + ttl));
        let claims = Claims {
            iss: self.issuer.clone(),
            sub,
            aud: self.audience.clone(),
            exp,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            sid,
            roles: roles.to_vec(),
            client_id,
            amr,
            email_verified,
        };
        let keyring = self.keyring();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(keyring.signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keyring.signing.encoding)
            .map_err(Error::internal)?;
        Ok(AccessToken {
            token: SecretString::from(token),
            expires_in: Duration::from_secs(u64::try_from(exp - now).unwrap_or_default()),
        })
    }

    /// Verifies a token against the current keyring; see [`verify_with`].
    /// Only a token that passed every check is remembered, so what a client
    /// sends cannot fill the cache; a remembered one still expires on time.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, Error> {
        let keyring = self.keyring();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = keyring.verified.get(&digest) {
            if unexpired(&claims, Utc::now().timestamp()) {
                return Ok(claims);
            }
            keyring.verified.remove(&digest);
            return Err(Error::InvalidToken);
        }
        let claims = verify_with(token, &keyring.verifying, &self.validation)?;
        keyring.verified.insert(digest, claims.clone());
        Ok(claims)
    }

    /// The public keys to publish.
    pub(crate) fn jwks(&self) -> JwkSet {
        self.keyring().published.clone()
    }
}

/// The expiry check of [`validation`], with the same leeway: `nbf` needs no
/// second look, since it was passed once and time only moves on.
fn unexpired(claims: &Claims, now: i64) -> bool {
    let leeway = i64::try_from(LEEWAY.as_secs()).unwrap_or(i64::MAX);
    claims.exp >= now.saturating_sub(leeway)
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    fn user_subject(user_id: Uuid) -> Subject {
        Subject::User {
            user_id,
            session_id: Uuid::now_v7(),
            session_ends: None,
            amr: Amr::Password,
            email_verified: false,
        }
    }

    /// The key ids published before jsonwebtoken computed them: RFC 8037
    /// A.3's thumbprint of its example key.
    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .expect("base64");
        let seed: [u8; 32] = seed.try_into().expect("32 bytes");
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem");
        let key = KeyPair::from_pkcs8_pem(&pem).expect("key");
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let jwk = serde_json::to_value(key.public_jwk()).expect("json");
        assert_eq!(
            jwk,
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            })
        );
    }

    fn tokens_on(keyring: Keyring) -> Tokens {
        Tokens::new(keyring, "iss".into(), "aud".into(), Duration::from_secs(60))
    }

    fn tokens() -> Tokens {
        tokens_on(Keyring::new(KeyPair::generate().expect("key"), &[]).expect("keyring"))
    }

    fn issue(tokens: &Tokens) -> AccessToken {
        tokens
            .issue(user_subject(Uuid::now_v7()), &Roles::default())
            .expect("issue")
    }

    #[test]
    fn issued_tokens_verify_and_carry_no_personal_data() {
        let tokens = tokens();
        let id = Uuid::now_v7();
        let issued = tokens
            .issue(user_subject(id), &Roles::default())
            .expect("issue");
        let claims = tokens.verify(issued.token.expose_secret()).expect("verify");
        assert_eq!(claims.user_id().expect("uuid"), id);
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("iss", "aud"));
        assert_eq!(claims.exp - claims.iat, 60);
        assert!(!claims.email_verified);
        let verified = Subject::User {
            user_id: id,
            session_id: Uuid::now_v7(),
            session_ends: None,
            amr: Amr::Password,
            email_verified: true,
        };
        let issued = tokens.issue(verified, &Roles::default()).expect("issue");
        let payload = issued
            .token
            .expose_secret()
            .split('.')
            .nth(1)
            .expect("payload");
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64"))
                .expect("json");
        assert_eq!(json["email_verified"], serde_json::json!(true));
        assert!(json.get("email").is_none());
    }

    fn digest(token: &SecretString) -> [u8; 32] {
        Sha256::digest(token.expose_secret().as_bytes()).into()
    }

    #[test]
    fn a_verified_token_is_answered_from_the_cache() {
        let tokens = tokens();
        let issued = issue(&tokens);
        let claims = tokens.verify(issued.token.expose_secret()).expect("verify");
        // A marker only the cache can return: the token's signature covers
        // its real jti.
        let marked = Claims {
            jti: "from-the-cache".into(),
            ..claims
        };
        tokens
            .keyring()
            .verified
            .insert(digest(&issued.token), marked.clone());
        let answered = tokens.verify(issued.token.expose_secret()).expect("verify");
        assert_eq!(answered, marked);
    }

    #[test]
    fn a_cached_token_still_expires_with_the_same_leeway() {
        let tokens = tokens();
        let issued = issue(&tokens);
        let claims = tokens.verify(issued.token.expose_secret()).expect("verify");
        let leeway = i64::try_from(LEEWAY.as_secs()).expect("seconds");
        let cache_with_exp = |exp| {
            tokens.keyring().verified.insert(
                digest(&issued.token),
                Claims {
                    exp,
                    ..claims.clone()
                },
            );
        };
        cache_with_exp(Utc::now().timestamp() - leeway + 2);
        assert!(tokens.verify(issued.token.expose_secret()).is_ok());
        cache_with_exp(Utc::now().timestamp() - leeway - 1);
        assert!(matches!(
            tokens.verify(issued.token.expose_secret()),
            Err(Error::InvalidToken)
        ));
        assert!(tokens.keyring().verified.is_empty());
    }

    #[test]
    fn a_cached_token_of_a_dropped_key_is_refused_after_install() {
        let tokens = tokens();
        let issued = issue(&tokens);
        assert!(tokens.verify(issued.token.expose_secret()).is_ok());
        assert_eq!(tokens.keyring().verified.len(), 1);
        tokens.install(Keyring::new(KeyPair::generate().expect("key"), &[]).expect("keyring"));
        assert!(matches!(
            tokens.verify(issued.token.expose_secret()),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn a_reload_that_keeps_every_key_keeps_the_cache() {
        let key = KeyPair::generate().expect("key");
        let pem = key.pkcs8_pem().to_owned();
        let tokens = tokens_on(Keyring::new(key, &[]).expect("keyring"));
        let issued = issue(&tokens);
        assert!(tokens.verify(issued.token.expose_secret()).is_ok());
        let next = KeyPair::generate().expect("key");
        let same = KeyPair::from_pkcs8_pem(&pem).expect("key");
        tokens.install(Keyring::new(next, &[same]).expect("keyring"));
        assert_eq!(tokens.keyring().verified.len(), 1);
    }

    #[test]
    fn the_cache_holds_no_more_than_its_capacity() {
        let keyring =
            Keyring::with_capacity(KeyPair::generate().expect("key"), &[], 64).expect("keyring");
        let tokens = tokens_on(keyring);
        for _ in 0..500 {
            let issued = issue(&tokens);
            assert!(tokens.verify(issued.token.expose_secret()).is_ok());
        }
        let cached = tokens.keyring().verified.len();
        assert!((1..=64).contains(&cached), "{cached} tokens cached");
    }

    #[test]
    fn a_refused_token_is_not_cached() {
        let tokens = tokens();
        let foreign = issue(&self::tokens());
        assert!(tokens.verify(foreign.token.expose_secret()).is_err());
        assert!(tokens.keyring().verified.is_empty());
    }

    #[test]
    fn a_token_expires_by_the_end_of_its_session() {
        let tokens = tokens();
        let session_ends = Utc::now() + chrono::Duration::seconds(20);
        let subject = Subject::User {
            user_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            session_ends: Some(session_ends),
            amr: Amr::Password,
            email_verified: false,
        };
        let issued = tokens.issue(subject, &Roles::default()).expect("issue");
        let claims = tokens.verify(issued.token.expose_secret()).expect("verify");
        assert_eq!(claims.exp, session_ends.timestamp());
        assert!(issued.expires_in <= Duration::from_secs(20));
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
        let issued = tokens()
            .issue(user_subject(Uuid::now_v7()), &Roles::default())
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
        let tokens = tokens_on(Keyring::new(old, &[]).expect("keyring"));
        let before = issue(&tokens);
        let retired = KeyPair::from_pkcs8_pem(&old_pem).expect("old key");
        tokens.install(Keyring::new(new, &[retired]).expect("keyring"));
        let after = issue(&tokens);
        assert!(tokens.verify(before.token.expose_secret()).is_ok());
        assert!(tokens.verify(after.token.expose_secret()).is_ok());
        assert_eq!(tokens.jwks().keys.len(), 2);
        let fresh = KeyPair::generate().expect("key");
        tokens.install(Keyring::new(fresh, &[]).expect("keyring"));
        assert!(tokens.verify(before.token.expose_secret()).is_err());
    }
}
