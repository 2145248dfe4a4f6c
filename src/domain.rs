//! Values that have passed validation. Each newtype can only be built by its
//! `parse`, so a `User` or `NewUser` never holds an invalid field.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// bcrypt reads at most 72 bytes; longer passwords are refused rather than
/// silently truncated into a weaker secret than the user chose.
pub const PASSWORD_MAX_BYTES: usize = 72;
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const EMAIL_MAX_BYTES: usize = 254;
pub const USERNAME_MAX_CHARS: usize = 64;

/// Invisible characters that make two different strings look the same:
/// zero-width characters, bidirectional controls and the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// An email address in its canonical form: trimmed, NFKC-normalized and
/// lowercased. Two addresses that differ only in case or Unicode form are the
/// same `Email`, which is what the unique index relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let nfkc: String = raw.nfkc().collect();
        // Lowercasing can leave a string that NFKC would change again; a
        // second pass makes the canonical form a fixed point.
        let canonical: String = nfkc.trim().to_lowercase().nfkc().collect();
        if canonical.is_empty() {
            return Err("must not be empty");
        }
        if canonical.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err("must not contain control, zero-width or bidirectional characters");
        }
        if canonical.len() > EMAIL_MAX_BYTES {
            return Err("must be at most 254 bytes");
        }
        if !is_address(&canonical) {
            return Err("must be an email address like name@example.com");
        }
        Ok(Self(canonical))
    }

    /// Reads back an email from the store, which only ever holds parsed
    /// values; re-checking would lock users out if the rules ever tighten.
    pub(crate) fn from_stored(email: String) -> Self {
        Self(email)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A pragmatic address check: a dot-atom local part and a dotted domain
/// name. Quoted local parts and IP-literal domains are not accepted; no
/// real user of a login form needs them.
fn is_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    local_ok && domain_ok
}

/// A display name: 1 to 64 characters once trimmed, nothing invisible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err("must not be empty");
        }
        if chars > USERNAME_MAX_CHARS {
            return Err("must be at most 64 characters");
        }
        if trimmed.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err("must not contain control or invisible characters");
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// See [`Email::from_stored`].
    pub(crate) fn from_stored(username: String) -> Self {
        Self(username)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password exactly as the user typed it. Never trimmed, never truncated,
/// never printed.
pub struct Password(SecretString);

impl Password {
    /// A new password must meet the length policy (`min_chars` code points,
    /// never below [`PASSWORD_MIN_CHARS`]) and be storable by bcrypt.
    pub fn parse_new(raw: String, min_chars: usize) -> Result<Self, Cow<'static, str>> {
        let min_chars = min_chars.max(PASSWORD_MIN_CHARS);
        if raw.chars().count() < min_chars {
            return Err(format!("must be at least {min_chars} characters").into());
        }
        Self::parse_existing(raw).map_err(Cow::Borrowed)
    }

    /// A password offered at login only has to be one bcrypt can compare
    /// safely: the length policy may have grown since the account was made.
    pub fn parse_existing(raw: String) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err("must be at most 72 bytes in UTF-8");
        }
        if raw.contains('\0') {
            return Err("must not contain the NUL character");
        }
        Ok(Self(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// A registered account, as the rest of authd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: Email,
    pub username: Username,
    pub created_at: DateTime<Utc>,
}

/// A validated signup.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub username: Username,
    pub password: Password,
}

/// The login credentials of a request.
#[derive(Debug)]
pub struct Credentials {
    pub email: Email,
    pub password: Password,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_canonicalized() {
        let email = Email::parse("  Ａlice@Example.COM \n").expect("valid");
        assert_eq!(email.as_str(), "alice@example.com");
        assert_eq!(Email::parse(email.as_str()), Ok(email));
    }

    #[test]
    fn email_rejects_invisible_and_malformed() {
        for bad in [
            "a\u{200B}b@example.com",
            "a\u{202E}b@example.com",
            "ab@exa\u{0007}mple.com",
            "no-at-sign",
            "a@localhost",
            "a..b@example.com",
            "a@-example.com",
            "a b@example.com",
            "@example.com",
            "a@example.123",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(64)) + &".example".repeat(25);
        assert!(long.len() > EMAIL_MAX_BYTES);
        assert_eq!(Email::parse(&long), Err("must be at most 254 bytes"));
    }

    #[test]
    fn password_length_is_counted_in_chars_and_capped_in_bytes() {
        assert!(Password::parse_new("ééééééé".into(), 8).is_err());
        assert!(Password::parse_new("éééééééé".into(), 8).is_ok());
        assert!(Password::parse_new("é".repeat(36), 8).is_ok());
        assert!(Password::parse_new("é".repeat(37), 8).is_err());
        assert!(Password::parse_new("abcdefgh\0".into(), 8).is_err());
        assert!(Password::parse_new("abcdefghij".into(), 12).is_err());
    }

    #[test]
    fn username_is_trimmed_and_bounded() {
        assert_eq!(Username::parse("  bob ").map(|u| u.0), Ok("bob".into()));
        assert!(Username::parse("   ").is_err());
        assert!(Username::parse(&"x".repeat(65)).is_err());
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        assert!(Username::parse("bo\tb").is_err());
    }
}
