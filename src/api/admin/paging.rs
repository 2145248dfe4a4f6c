//! Paging of the List RPCs: page sizes, and page tokens. A token is opaque
//! to clients; it names where the next page starts and is bound to the
//! filters of the request that received it, so a token replayed with other
//! filters is refused rather than silently misread.

use std::{fmt::Display, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 500;
/// Bytes of the filters' digest kept in a token: enough to catch a token
/// reused with other filters by mistake; it is no secret.
const DIGEST_BYTES: usize = 8;
const INVALID_TOKEN: &str = "must be the next_page_token of a page with the same filters";

/// A requested page size: 0 means the default.
pub(super) fn page_size(requested: i32) -> Result<usize, &'static str> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err("must be between 0 (the default, 50) and 500"),
    }
}

/// The token for a next page starting after `position`.
pub(super) fn next_page_token(position: impl Display, filters: &[impl AsRef<str>]) -> String {
    URL_SAFE_NO_PAD.encode(format!("{position}.{}", digest(filters)))
}

/// The position a token names, or `None` for an empty token (the first
/// page); an error for a token this list did not hand out for these
/// filters.
pub(super) fn position<T: FromStr>(
    token: &str,
    filters: &[impl AsRef<str>],
) -> Result<Option<T>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (position, digest_part) = text.rsplit_once('.')?;
            if digest_part != digest(filters) {
                return None;
            }
            position.parse().ok()
        })
        .map(Some)
        .ok_or(INVALID_TOKEN)
}

fn digest(filters: &[impl AsRef<str>]) -> String {
    let mut hash = Sha256::new();
    // Lengths first, so no two lists of filters hash alike.
    for filter in filters {
        let filter = filter.as_ref();
        hash.update((filter.len() as u64).to_be_bytes());
        hash.update(filter.as_bytes());
    }
    hash.finalize()[..DIGEST_BYTES]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hold_only_for_their_filters() {
        let token = next_page_token(42, &["a", "b"]);
        assert_eq!(position(&token, &["a", "b"]), Ok(Some(42)));
        assert!(position::<i64>(&token, &["a", "c"]).is_err());
        assert!(position::<i64>(&token, &["ab", ""]).is_err());
        assert!(position::<uuid::Uuid>(&token, &["a", "b"]).is_err());
        assert!(position::<i64>("garbage!", &["a", "b"]).is_err());
        assert!(position::<i64>(&token[..10], &["a", "b"]).is_err());
        assert_eq!(position::<i64>("", &["a"]), Ok(None));
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(500), Ok(500));
        assert!(page_size(501).is_err() && page_size(-1).is_err());
    }
}
