//! Tokens already verified, so that a token's signature is checked once,
//! not on every request that carries it.

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::{Claims, LEEWAY};

/// How many verified tokens a [`JwksVerifier`](crate::JwksVerifier) keeps:
/// a few MiB of claims at most.
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// The claims of tokens that passed verification, by the SHA-256 digest of
/// the token: the tokens themselves are never kept, so neither a memory dump
/// nor a `Debug` print shows one. Only verified tokens enter, and at most
/// `capacity` of them (the least used are evicted), so memory stays bounded
/// whatever clients send. A hit is re-checked against the clock: a cached
/// token still expires when its `exp` (with [`LEEWAY`]) passes.
pub struct TokenCache {
    entries: Cache<[u8; 32], Claims>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity),
        }
    }

    /// The claims `token` was verified with, if it was and has not expired
    /// since.
    pub fn get(&self, token: &str) -> Option<Claims> {
        let key = digest(token);
        let claims = self.entries.get(&key)?;
        if unix_now() > claims.exp.saturating_add(LEEWAY.as_secs().cast_signed()) {
            self.entries.remove(&key);
            return None;
        }
        Some(claims)
    }

    /// Remembers that `token` verified with `claims`. Call it only for a
    /// token that passed every check.
    pub fn insert(&self, token: &str, claims: Claims) {
        self.entries.insert(digest(token), claims);
    }

    /// Forgets `token`.
    pub fn remove(&self, token: &str) {
        self.entries.remove(&digest(token));
    }

    /// Forgets every token, e.g. when a key they may be signed with is no
    /// longer trusted.
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Seconds since the Unix epoch, as `exp` counts them.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs().cast_signed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "iss".into(),
            sub: "sub".into(),
            aud: "aud".into(),
            exp,
            iat: 0,
            nbf: 0,
            jti: "jti".into(),
            sid: None,
            roles: Vec::new(),
            client_id: None,
            amr: Vec::new(),
            email_verified: false,
        }
    }

    #[test]
    fn a_hit_is_rechecked_against_the_clock() {
        let cache = TokenCache::new(8);
        let now = unix_now();
        cache.insert("live", claims(now + 60));
        cache.insert("expired", claims(now - LEEWAY.as_secs().cast_signed() - 1));
        assert_eq!(cache.get("live"), Some(claims(now + 60)));
        assert_eq!(cache.get("expired"), None);
        assert_eq!(cache.len(), 1, "the expired entry is dropped");
        assert_eq!(cache.get("never inserted"), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity() {
        let cache = TokenCache::new(100);
        let exp = unix_now() + 60;
        for n in 0..10_000 {
            cache.insert(&format!("token-{n}"), claims(exp));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        assert!(!cache.is_empty());
        cache.insert("kept", claims(exp));
        cache.remove("kept");
        assert_eq!(cache.get("kept"), None);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = TokenCache::new(8);
        cache.insert("secret-token", claims(unix_now() + 60));
        let printed = format!("{cache:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
        assert!(printed.contains("len: 1"), "{printed}");
    }
}
