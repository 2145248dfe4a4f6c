//! The checks every authd access token must pass, wherever it is verified.

use std::{collections::HashMap, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Header, Validation,
    errors::Error,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
    },
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `typ` header of an authd access token (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated between the replica that signed and the service that
/// verifies. Small on purpose: every second here extends a token's life.
pub const LEEWAY: Duration = Duration::from_secs(10);
/// authd's tokens are a few hundred bytes; anything far larger is not one and
/// is refused before it is base64-decoded or parsed.
const MAX_TOKEN_BYTES: usize = 4096;

/// Public keys by key id (`kid`), as [`decoding_keys`] makes them.
pub type Keys = HashMap<String, DecodingKey>;

/// The token is not a valid authd access token. Which check failed is
/// deliberately not said: it is no business of whoever presented it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid access token")]
pub struct InvalidToken;

/// The claims of an authd access token. Deliberately no email or other
/// personal data: tokens are readable by anyone who holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer, authd's configured name.
    pub iss: String,
    /// The user the token was issued to: a UUID, see [`Claims::user_id`].
    pub sub: String,
    /// The audience the token is meant for.
    pub aud: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, in seconds since the Unix epoch.
    pub iat: i64,
    /// Not valid before this time, in seconds since the Unix epoch.
    pub nbf: i64,
    /// The token's own unique id.
    pub jti: String,
    /// The session the token belongs to; revoking it ends the token at
    /// authd. A service account's token has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// What the subject may do, as authd knew it when the token was issued:
    /// a role change applies to tokens issued after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Set only in a service account's token: the account's id, equal to
    /// `sub` (RFC 9068).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// How the user authenticated (RFC 8176): `["pwd"]`, or `["pwd", "otp"]`
    /// after a second factor. Empty in a service account's token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Whether the user had proven, when the token was issued, that they
    /// receive mail at their address; the address itself is never in a
    /// token. Present only when true: a service account's token, an
    /// unverified user's and a token from before the claim existed all
    /// read as false, so its absence never passes for proof.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
}

impl Claims {
    /// The user the token was issued to.
    pub fn user_id(&self) -> Result<Uuid, InvalidToken> {
        Uuid::parse_str(&self.sub).map_err(|_| InvalidToken)
    }

    /// The session the token belongs to; an error for a service account's
    /// token, which belongs to none.
    pub fn session_id(&self) -> Result<Uuid, InvalidToken> {
        Uuid::parse_str(self.sid.as_deref().ok_or(InvalidToken)?).map_err(|_| InvalidToken)
    }

    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Whether the user proved a second factor (`amr` holds `"otp"`) for
    /// the session the token belongs to.
    pub fn has_second_factor(&self) -> bool {
        self.amr.iter().any(|method| method == "otp")
    }

    /// Whether the token was issued to a service account rather than a
    /// user.
    pub fn is_service(&self) -> bool {
        self.client_id.is_some()
    }
}

/// The validation of every authd access token for `issuer` and `audience`:
/// EdDSA only, expiry and not-before with [`LEEWAY`], and `exp`, `iss`, `aud`
/// and `sub` required.
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

/// The JWK authd publishes for an Ed25519 public key (RFC 8037), whose `kid`
/// is the key's RFC 7638 thumbprint: derived from the key itself, so the same
/// key gives the same `kid` on every replica.
pub fn ed25519_jwk(public_key: &[u8; 32]) -> Result<Jwk, Error> {
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(public_key),
        }),
    };
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256)?);
    Ok(jwk)
}

/// The Ed25519 signing keys of `set`, by `kid`. Keys of other types or uses,
/// or without a `kid`, are skipped rather than trusted.
pub fn decoding_keys(set: &JwkSet) -> Keys {
    set.keys
        .iter()
        .filter(|jwk| jwk.common.public_key_use == Some(PublicKeyUse::Signature))
        .filter_map(|jwk| {
            let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
                return None;
            };
            if okp.curve != EllipticCurve::Ed25519 {
                return None;
            }
            let key = DecodingKey::from_ed_components(&okp.x).ok()?;
            Some((jwk.common.key_id.clone()?, key))
        })
        .collect()
}

/// Checks signature, algorithm, type, key id, issuer, audience and time
/// window of `token` against `keys`.
///
/// ```
/// use authd_verify::{JwkSet, decoding_keys, validation, verify_with};
///
/// let keys = decoding_keys(&JwkSet { keys: vec![] });
/// let checks = validation("authd", "my-service");
/// assert!(verify_with("not.a.token", &keys, &checks).is_err());
/// ```
pub fn verify_with(
    token: &str,
    keys: &Keys,
    validation: &Validation,
) -> Result<Claims, InvalidToken> {
    let header = parse_header(token)?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.get(kid))
        .ok_or(InvalidToken)?;
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|_| InvalidToken)
}

/// The header of a token that could be authd's: small enough, EdDSA,
/// `at+jwt`, and no `crit`. RFC 7515 4.1.11 requires rejecting a token whose
/// `crit` names an extension the recipient does not understand; authd
/// understands none. jsonwebtoken parses `crit` but never enforces it, and
/// reads `"crit": null` as absent, so the header's JSON is inspected here,
/// before it becomes a [`Header`].
pub fn parse_header(token: &str) -> Result<Header, InvalidToken> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(InvalidToken);
    }
    let mut parts = token.split('.');
    let (Some(encoded), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InvalidToken);
    };
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| InvalidToken)?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| InvalidToken)?;
    if fields.contains_key("crit") {
        return Err(InvalidToken);
    }
    let header: Header =
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(|_| InvalidToken)?;
    let typ_ok = header.typ.as_deref().is_some_and(|typ| {
        typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
    });
    if header.alg != Algorithm::EdDSA || !typ_ok {
        return Err(InvalidToken);
    }
    Ok(header)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
    use jsonwebtoken::EncodingKey;

    use super::*;

    /// A signing key for tests, made from a fixed seed, as authd would
    /// publish and use it.
    pub(crate) struct TestKey {
        pub(crate) jwk: Jwk,
        encoding: EncodingKey,
    }

    impl TestKey {
        pub(crate) fn new(seed: u8) -> Self {
            let signing = SigningKey::from_bytes(&[seed; 32]);
            let der = signing.to_pkcs8_der().expect("pkcs8");
            let jwk = ed25519_jwk(signing.verifying_key().as_bytes()).expect("jwk");
            Self {
                jwk,
                encoding: EncodingKey::from_ed_der(der.as_bytes()),
            }
        }

        /// A token for `iss`/`aud` whose header is `header`, signed as a
        /// forger holding the key would sign it.
        pub(crate) fn sign_with_header(&self, header: &serde_json::Value) -> String {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            let claims = serde_json::json!({
                "iss": "iss", "sub": Uuid::nil().to_string(), "aud": "aud",
                "exp": now + 60, "iat": now, "nbf": now,
                "jti": "j", "sid": Uuid::nil().to_string(),
            });
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::EdDSA)
                    .expect("sign");
            format!("{message}.{signature}")
        }

        pub(crate) fn header(&self) -> serde_json::Value {
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.jwk.common.key_id})
        }

        pub(crate) fn sign(&self) -> String {
            self.sign_with_header(&self.header())
        }
    }

    pub(crate) fn set(keys: &[&TestKey]) -> JwkSet {
        JwkSet {
            keys: keys.iter().map(|key| key.jwk.clone()).collect(),
        }
    }

    #[test]
    fn a_token_verifies_against_its_key_only() {
        let (key, other) = (TestKey::new(1), TestKey::new(2));
        let checks = validation("iss", "aud");
        let token = key.sign();
        let claims = verify_with(&token, &decoding_keys(&set(&[&key])), &checks).expect("valid");
        assert_eq!(claims.user_id(), Ok(Uuid::nil()));
        assert!(
            !claims.email_verified,
            "a token without the claim is unverified"
        );
        assert!(verify_with(&token, &decoding_keys(&set(&[&other])), &checks).is_err());
        assert!(
            verify_with(
                &token,
                &decoding_keys(&set(&[&key])),
                &validation("iss", "x")
            )
            .is_err()
        );
    }

    #[test]
    fn email_verified_is_written_only_when_true() {
        let key = TestKey::new(1);
        let keys = decoding_keys(&set(&[&key]));
        let mut claims = verify_with(&key.sign(), &keys, &validation("iss", "aud")).expect("valid");
        let written = |claims: &Claims| serde_json::to_value(claims).expect("json");
        assert!(written(&claims).get("email_verified").is_none());
        claims.email_verified = true;
        assert_eq!(written(&claims)["email_verified"], serde_json::json!(true));
        let read: Claims = serde_json::from_value(written(&claims)).expect("claims");
        assert!(read.email_verified);
    }

    #[test]
    fn a_crit_header_parameter_of_any_value_is_rejected() {
        let key = TestKey::new(1);
        let keys = decoding_keys(&set(&[&key]));
        let checks = validation("iss", "aud");
        assert!(verify_with(&key.sign(), &keys, &checks).is_ok());
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["urn:example:unknown"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            let mut header = key.header();
            header["crit"] = crit;
            let token = key.sign_with_header(&header);
            assert!(parse_header(&token).is_err());
            assert!(verify_with(&token, &keys, &checks).is_err());
        }
    }

    #[test]
    fn keys_of_other_types_or_uses_are_skipped() {
        let mut encrypting = TestKey::new(1).jwk;
        encrypting.common.public_key_use = Some(PublicKeyUse::Encryption);
        let mut no_kid = TestKey::new(2).jwk;
        no_kid.common.key_id = None;
        let signing = TestKey::new(3);
        let keys = decoding_keys(&JwkSet {
            keys: vec![encrypting, no_kid, signing.jwk.clone()],
        });
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key(signing.jwk.common.key_id.as_deref().expect("kid")));
    }
}
