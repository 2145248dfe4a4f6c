//! Refresh tokens: opaque, 256 random bits, stored only as a hash.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::domain::{
    Error,
    token::{OpaqueToken, TOKEN_BYTES},
};

pub(crate) struct RefreshToken(OpaqueToken);

impl RefreshToken {
    pub(crate) fn generate() -> Result<Self, Error> {
        OpaqueToken::generate().map(Self)
    }

    /// Reads a token as a client presents it. Anything that cannot be one of
    /// ours is simply not found, like an unknown token.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        OpaqueToken::parse(text).map(Self)
    }

    /// The text handed to the client.
    pub(crate) fn encode(&self) -> String {
        self.0.encode()
    }

    /// What the database stores and looks the token up by.
    pub(crate) fn hash(&self) -> String {
        self.0.hash()
    }

    /// Seals `successor` so that only a holder of `self` can open it: the
    /// pad is derived from this token, which is random, secret and spent
    /// once, so it is used as a key exactly once.
    pub(crate) fn seal(&self, successor: &RefreshToken) -> String {
        let pad = self.pad();
        let sealed: Vec<u8> = successor
            .0
            .bytes()
            .iter()
            .zip(pad)
            .map(|(byte, pad)| byte ^ pad)
            .collect();
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Opens what [`RefreshToken::seal`] sealed with this token.
    pub(crate) fn unseal(&self, sealed: &str) -> Option<RefreshToken> {
        let sealed: [u8; TOKEN_BYTES] = URL_SAFE_NO_PAD.decode(sealed).ok()?.try_into().ok()?;
        let mut bytes = [0u8; TOKEN_BYTES];
        for ((out, byte), pad) in bytes.iter_mut().zip(sealed).zip(self.pad()) {
            *out = byte ^ pad;
        }
        Some(Self(OpaqueToken::from_bytes(bytes)))
    }

    fn pad(&self) -> [u8; TOKEN_BYTES] {
        Sha256::new()
            .chain_update(b"authd refresh successor seal v1")
            .chain_update(self.0.bytes())
            .finalize()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_successor_opens_only_with_its_predecessor() {
        let (parent, child) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        let sealed = parent.seal(&child);
        assert_eq!(
            parent.unseal(&sealed).map(|t| t.encode()),
            Some(child.encode())
        );
        let stranger = RefreshToken::generate().unwrap();
        assert_ne!(
            stranger.unseal(&sealed).map(|t| t.encode()),
            Some(child.encode())
        );
    }

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let token = RefreshToken::generate().unwrap();
        let again = RefreshToken::parse(&token.encode()).expect("parse");
        assert_eq!(token.hash(), again.hash());
        assert_eq!(token.encode().len(), 43);
        assert!(RefreshToken::parse("short").is_none());
    }
}
