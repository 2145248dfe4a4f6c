//! Page tokens: opaque to clients, they name where the next page starts and
//! are bound to the filters of the request that received them, so a token
//! replayed with other filters is refused rather than silently misread.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::{api::convert::Violations, domain::Error};

const FIELD: &str = "page_token";

/// The token for a next page starting after `position`.
pub(super) fn encode(position: &str, filters: &[impl AsRef<str>]) -> String {
    URL_SAFE_NO_PAD.encode(format!("{position}.{}", digest(filters)))
}

/// The position a token names, or `None` for an empty token (the first
/// page). A token this list did not hand out for these filters is
/// INVALID_ARGUMENT.
pub(super) fn decode(token: &str, filters: &[impl AsRef<str>]) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let position = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (position, digest_part) = text.rsplit_once('.')?;
            (digest_part == digest(filters)).then(|| position.to_owned())
        });
    match position {
        Some(position) => Ok(Some(position)),
        None => {
            let mut violations = Violations::default();
            violations.push(
                FIELD,
                "is not a page token this list handed out for the same filters",
            );
            violations.finish().map(|()| None)
        }
    }
}

fn digest(filters: &[impl AsRef<str>]) -> String {
    let mut hash = Sha256::new();
    for filter in filters {
        hash.update(filter.as_ref().as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_only_with_their_filters() {
        let token = encode("42", &["a", "b"]);
        assert_eq!(
            decode(&token, &["a", "b"]).ok().flatten().as_deref(),
            Some("42")
        );
        assert!(decode(&token, &["a", "c"]).is_err());
        assert!(decode(&token, &["ab", ""]).is_err());
        assert!(decode("garbage!", &["a", "b"]).is_err());
        assert!(matches!(decode("", &["a"]), Ok(None)));
    }
}
