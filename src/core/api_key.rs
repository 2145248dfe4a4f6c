//! API keys: `authd_sk_` and 256 random bits, stored only as a hash.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

use crate::domain::Error;

/// Marks a secret as an authd API key, so that it is recognizable in a
/// configuration file or a leak scanner.
const PREFIX: &str = "authd_sk_";
const KEY_BYTES: usize = 32;

pub(crate) struct ApiKey(SecretBox<[u8; KEY_BYTES]>);

impl ApiKey {
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::internal(e.to_string()))?;
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }

    /// Reads a key as a client presents it. Anything without the shape of
    /// one of ours cannot be one, so it is refused without a lookup.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PREFIX)?;
        let bytes: [u8; KEY_BYTES] = URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(bytes))))
    }

    /// The text handed to the operator, once.
    pub(crate) fn encode(&self) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0.expose_secret()))
    }

    /// What the database stores and looks the key up by: SHA-256, in hex.
    /// A fast hash suffices, as the key is 256 random bits.
    pub(crate) fn hash(&self) -> String {
        format!("{:x}", Sha256::digest(self.0.expose_secret()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_hash_stably() {
        let key = ApiKey::generate().unwrap();
        let text = key.encode();
        assert!(text.starts_with("authd_sk_"));
        assert_eq!(text.len(), PREFIX.len() + 43);
        let again = ApiKey::parse(&text).expect("parse");
        assert_eq!(key.hash(), again.hash());
        assert_eq!(key.hash().len(), 64);
        assert!(!key.hash().contains(&text[PREFIX.len()..]));
    }

    #[test]
    fn anything_not_shaped_like_a_key_is_refused() {
        let key = ApiKey::generate().unwrap().encode();
        let bare = &key[PREFIX.len()..];
        for bad in ["", "authd_sk_", "authd_sk_short", bare, &format!("{key}A")] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
        assert!(ApiKey::parse(&key.replace("authd_sk_", "authd_pk_")).is_none());
    }
}
