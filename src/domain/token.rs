//! Opaque tokens: 256 random bits, handed out as base64url without padding
//! (43 characters), stored only as their SHA-256. Refresh tokens, second-
//! factor challenges and mailed links are all one of these.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

use super::Error;

pub(crate) const TOKEN_BYTES: usize = 32;

/// Never printed: it has no `Debug`, and its bytes are a secret.
pub(crate) struct OpaqueToken(SecretBox<[u8; TOKEN_BYTES]>);

impl OpaqueToken {
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::internal(e.to_string()))?;
        Ok(Self::from_bytes(bytes))
    }

    pub(crate) fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// Reads a token as a client presents it: None for anything that cannot
    /// be one (wrong length or alphabet), so junk never reaches a query.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; TOKEN_BYTES] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// The text handed to the client.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.expose_secret())
    }

    /// What the database stores and looks the token up by.
    pub(crate) fn hash(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.expose_secret()))
    }

    pub(crate) fn bytes(&self) -> &[u8; TOKEN_BYTES] {
        self.0.expose_secret()
    }
}
