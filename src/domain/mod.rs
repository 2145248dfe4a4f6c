//! Values that have passed validation. Each newtype can only be built by its
//! `parse`, so a `User` or `NewUser` never holds an invalid field.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use icu_casemap::CaseMapper;
use icu_properties::{
    CodePointMapData, CodePointSetData,
    props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory},
};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

pub(crate) mod audit;
mod error;
pub(crate) mod mail;
pub(crate) mod mfa;
pub(crate) mod roles;
pub(crate) mod service_account;
pub(crate) mod session;
pub(crate) mod token;

pub(crate) use error::{Error, FieldViolation};
pub(crate) use roles::{Role, Roles};

/// bcrypt reads at most 72 bytes; longer passwords are refused rather than
/// silently truncated into a weaker secret than the user chose.
pub(crate) const PASSWORD_MAX_BYTES: usize = 72;
pub(crate) const PASSWORD_MIN_CHARS: usize = 8;
pub(crate) const EMAIL_MAX_BYTES: usize = 254;
pub(crate) const USERNAME_MAX_CHARS: usize = 64;

/// Characters no email or username may contain, in the spirit of PRECIS
/// (RFC 8264 §9): every Default_Ignorable_Code_Point (invisible ones such as
/// zero-width characters, the Hangul fillers U+115F, U+1160, U+3164 and
/// U+FFA0, variation selectors, the combining grapheme joiner U+034F and the
/// tags U+E0000..U+E0FFF), bidirectional controls, controls and other format
/// characters (Cc, Cf), and unassigned code points, whose visibility a later
/// Unicode version decides. The property data is Unicode 18.0, compiled into
/// `icu_properties`.
fn is_forbidden(c: char) -> bool {
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Control | GeneralCategory::Format | GeneralCategory::Unassigned
    ) || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<BidiControl>().contains(c)
}

const FORBIDDEN: &str =
    "must not contain control, invisible, bidirectional or unassigned characters";
const NOT_AN_ADDRESS: &str = "must be an email address like name@example.com";
const TOO_LONG: &str = "must be at most 254 bytes";

const UTS46: Uts46 = Uts46::new();

/// UTS #46 ToASCII with the rules of DNS host names: letters, digits and
/// hyphens only (STD3), no hyphen at either end of a label, DNS lengths.
/// Hyphens in the third and fourth position are allowed, as real domains
/// registered before IDNA2008 have them.
fn domain_to_ascii(domain: &str) -> Option<String> {
    UTS46
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .ok()
        .map(Cow::into_owned)
}

/// An email address, as displayed and as compared.
///
/// The address is trimmed, NFKC-normalized and lowercased, with its domain
/// in the Unicode form of UTS #46 (`exämple.com`, whether it arrived as that
/// or as `xn--exmple-cua.com`): what the user recognizes as theirs.
///
/// The key decides which addresses are one mailbox, and the unique index
/// is on it: see [`comparison_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email {
    address: String,
    key: String,
}

impl Email {
    /// A short, stable hash of the comparison key: lets the audit trail
    /// tie failed logins on one unknown address together without storing
    /// the address.
    pub(crate) fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.key().as_bytes());
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub(crate) fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        let nfkc: String = trimmed.nfkc().collect();
        // Lowercasing can leave a string that NFKC would change again; a
        // second pass makes the canonical form a fixed point.
        let canonical: String = nfkc.trim().to_lowercase().nfkc().collect();
        // Checked before and after normalization: neither may smuggle in
        // what the other would let through.
        if trimmed.chars().chain(canonical.chars()).any(is_forbidden) {
            return Err(FORBIDDEN);
        }
        if canonical.len() > EMAIL_MAX_BYTES {
            return Err(TOO_LONG);
        }
        let (local, domain) = canonical.rsplit_once('@').ok_or(NOT_AN_ADDRESS)?;
        if !is_local_part(local) {
            return Err(NOT_AN_ADDRESS);
        }
        let ascii_domain = domain_to_ascii(domain)
            .filter(|ascii| is_host_name(ascii))
            .ok_or(NOT_AN_ADDRESS)?;
        // Punycode is longer than the Unicode it encodes, and mail systems
        // without SMTPUTF8 see the ASCII form.
        if local.len() + 1 + ascii_domain.len() > EMAIL_MAX_BYTES {
            return Err(TOO_LONG);
        }
        let (unicode_domain, decoded) = UTS46.to_unicode(
            ascii_domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
        );
        decoded.map_err(|_| NOT_AN_ADDRESS)?;
        let address = format!("{local}@{unicode_domain}");
        if address.len() > EMAIL_MAX_BYTES {
            return Err(TOO_LONG);
        }
        Ok(Self {
            key: comparison_key(&address),
            address,
        })
    }

    /// Reads back an email from the store, which only ever holds parsed
    /// values; re-checking would lock users out if the rules ever tighten.
    /// A row stored before the key existed has none: it is derived as for a
    /// parsed address, which is how the backfill computes it.
    pub(crate) fn from_stored(address: String, key: Option<String>) -> Self {
        Self {
            key: key.unwrap_or_else(|| comparison_key(&address)),
            address,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.address
    }

    /// The part before the `@`: often the user's name, and so a guess
    /// attackers try first in their password.
    pub(crate) fn local_part(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or(self.address.as_str(), |(local, _)| local)
    }

    /// Equal for every spelling of one mailbox; see [`comparison_key`].
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// The key two addresses must share to be one mailbox, and so one account:
///
/// - the local part in NFKC_Casefold form (NFKC, full Unicode case folding,
///   NFKC again), so `XAΣ`, `xaσ` and `xaς` are one;
/// - then every non-ASCII character that UTS #39 lists as confusable with a
///   single ASCII letter or digit becomes that character, so `ınfo` (dotless
///   ı) and Cyrillic `іnfo` are `info`. ASCII itself is never remapped:
///   `rn` and `m`, `l` and `1` are different real mailboxes;
/// - the domain in its ASCII form (UTS #46 ToASCII): `exämple.com` and
///   `xn--exmple-cua.com` are one name in DNS. No confusable mapping here:
///   look-alike domains are different domains, with owners of their own.
///
/// A non-ASCII address that looks like an ASCII one is thereby refused as
/// taken; the alternative, two accounts a person cannot tell apart, is the
/// worse mistake. The function is total, so a stored address that today's
/// rules would refuse still gets a key.
fn comparison_key(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let mut key: String = nfkc_casefold(local).chars().map(ascii_lookalike).collect();
    key.push('@');
    match UTS46.to_ascii(
        domain.as_bytes(),
        AsciiDenyList::EMPTY,
        Hyphens::Allow,
        DnsLength::Ignore,
    ) {
        Ok(ascii) => key.push_str(&ascii),
        Err(_) => key.push_str(&nfkc_casefold(domain)),
    }
    key
}

/// Rounds of folding and normalizing after which every single code point
/// is stable (a unit test checks all of them); more would only waste time.
const CASEFOLD_ROUNDS: usize = 3;

/// NFKC, then full case folding and NFKC again until nothing changes:
/// folding can produce what NFKC rewrites (and the reverse).
fn nfkc_casefold(text: &str) -> String {
    let mut current: String = text.nfkc().collect();
    for _ in 0..CASEFOLD_ROUNDS {
        let next: String = CaseMapper::new().fold_string(&current).nfkc().collect();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// The ASCII letter or digit a non-ASCII character is a look-alike of,
/// per the UTS #39 confusables data in `unicode-security` (Unicode 18.0);
/// otherwise the character itself.
fn ascii_lookalike(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    let mut utf8 = [0; 4];
    let mut prototype = unicode_security::skeleton(c.encode_utf8(&mut utf8));
    match (prototype.next(), prototype.next()) {
        (Some(ascii), None) if ascii.is_ascii_alphanumeric() => ascii.to_ascii_lowercase(),
        _ => c,
    }
}

/// A dot-atom local part. Quoted local parts are not accepted; no real
/// user of a login form needs them.
fn is_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
        })
}

/// A host name of at least two labels, in its ASCII form (UTS #46 has
/// checked the characters and lengths). IP-literal domains are not accepted,
/// nor a numeric top-level label, which would make it an IP address.
fn is_host_name(ascii: &str) -> bool {
    let mut labels = ascii.rsplit('.');
    let tld = labels.next().unwrap_or_default();
    labels.next().is_some() && !tld.chars().all(|c| c.is_ascii_digit())
}

/// `raw` trimmed, if it is at most 64 characters with nothing invisible
/// (see [`is_forbidden`]); possibly empty.
fn visible_name(raw: &str) -> Result<&str, &'static str> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > USERNAME_MAX_CHARS {
        return Err("must be at most 64 characters");
    }
    if trimmed.chars().any(is_forbidden) {
        return Err(FORBIDDEN);
    }
    Ok(trimmed)
}

/// A display name: 1 to 64 characters once trimmed, nothing invisible
/// (see [`is_forbidden`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Username(String);

impl Username {
    pub(crate) fn parse(raw: &str) -> Result<Self, &'static str> {
        match visible_name(raw)? {
            "" => Err("must not be empty"),
            name => Ok(Self(name.to_owned())),
        }
    }

    /// See [`Email::from_stored`].
    pub(crate) fn from_stored(username: String) -> Self {
        Self(username)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password exactly as the user typed it. Never trimmed, never truncated,
/// never printed.
pub(crate) struct Password(SecretString);

impl Password {
    /// A new password must meet the length policy (`min_chars` code points,
    /// never below [`PASSWORD_MIN_CHARS`]) and be storable by bcrypt.
    pub(crate) fn parse_new(raw: String, min_chars: usize) -> Result<Self, Cow<'static, str>> {
        let min_chars = min_chars.max(PASSWORD_MIN_CHARS);
        if raw.chars().count() < min_chars {
            return Err(format!("must be at least {min_chars} characters").into());
        }
        Self::parse_existing(raw).map_err(Cow::Borrowed)
    }

    /// A password offered at login only has to be one bcrypt can compare
    /// safely: the length policy may have grown since the account was made.
    pub(crate) fn parse_existing(raw: String) -> Result<Self, &'static str> {
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

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// Why a new password that meets the length rules is still refused: it is
/// among the first guesses of an attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordRefusal {
    /// On the built-in list of the most common passwords.
    Common,
    /// Equal to, or containing, the email's local part or the username.
    PersonalData,
    /// In the operator's list of passwords from breaches.
    Breached,
    /// Below the configured strength score.
    TooGuessable,
}

/// A bcrypt hash in its modular-crypt text form, as stored.
#[derive(Debug, Clone)]
pub(crate) struct PasswordHash(String);

impl PasswordHash {
    pub(crate) fn from_stored(hash: String) -> Self {
        Self(hash)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The work factor the hash was made with.
    pub(crate) fn cost(&self) -> Option<u32> {
        self.0.split('$').nth(2)?.parse().ok()
    }
}

/// A registered account, as the rest of authd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) email: Email,
    pub(crate) username: Username,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) email_verified: bool,
    pub(crate) roles: Roles,
    pub(crate) disabled: bool,
}

/// Which users a listing returns; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserFilter {
    /// Lowercase text the email or the username must contain.
    pub(crate) text: Option<String>,
    pub(crate) role: Option<Role>,
    pub(crate) disabled: Option<bool>,
}

/// A validated signup.
#[derive(Debug)]
pub(crate) struct NewUser {
    pub(crate) email: Email,
    pub(crate) username: Username,
    pub(crate) password: Password,
}

/// The login credentials of a request.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) email: Email,
    pub(crate) password: Password,
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
    fn every_invisible_or_control_character_is_refused() {
        for c in [
            '\u{3164}',
            '\u{115F}',
            '\u{1160}',
            '\u{FFA0}',
            '\u{034F}',
            '\u{E0041}',
            '\u{E0001}',
            '\u{E0FFF}',
            '\u{FE0F}',
            '\u{180B}',
            '\u{200D}',
            '\u{2066}',
            '\u{061C}',
            '\u{00AD}',
            '\u{FFF9}',
            '\u{0085}',
            '\u{0378}',
            '\u{1D173}',
        ] {
            for email in [format!("a{c}b@example.com"), format!("ab@exa{c}mple.com")] {
                assert_eq!(Email::parse(&email), Err(FORBIDDEN), "{email:?}");
            }
            assert_eq!(Username::parse(&format!("a{c}b")), Err(FORBIDDEN), "{c:?}");
        }
        assert!(Username::parse("Zoë 李 ☃").is_ok());
    }

    fn key(raw: &str) -> String {
        Email::parse(raw).expect(raw).key
    }

    #[test]
    fn one_mailbox_has_one_key() {
        for (a, b) in [
            ("xaσ@example.com", "XAΣ@example.com"),
            ("xaσ@example.com", "xaς@example.com"),
            ("ınfo@example.com", "info@example.com"),
            ("іnfo@example.com", "info@example.com"),
            ("idn@exämple.com", "idn@xn--exmple-cua.com"),
            ("idn@EXÄMPLE.com", "idn@xn--exmple-cua.com"),
            ("straße@example.com", "STRASSE@example.com"),
            ("ﬁle@example.com", "FILE@example.com"),
        ] {
            assert_eq!(key(a), key(b), "{a} vs {b}");
        }
        assert_eq!(key("idn@exämple.com"), "idn@xn--exmple-cua.com");
    }

    #[test]
    fn distinct_mailboxes_keep_distinct_keys() {
        for (a, b) in [
            ("rn@example.com", "m@example.com"),
            ("l@example.com", "1@example.com"),
            ("il@example.com", "ll@example.com"),
            ("jose@example.com", "josé@example.com"),
            ("info@example.com", "info@exаmple.com"),
        ] {
            assert_ne!(key(a), key(b), "{a} vs {b}");
        }
    }

    #[test]
    fn the_domain_is_shown_in_its_unicode_form() {
        let email = Email::parse("IDN@xn--exmple-cua.COM").expect("valid");
        assert_eq!(email.as_str(), "idn@exämple.com");
        assert_eq!(Email::parse(email.as_str()), Ok(email));
        assert_eq!(Email::parse("a@xn--zz.com"), Err(NOT_AN_ADDRESS));
        assert_eq!(Email::parse("a@exa_mple.com"), Err(NOT_AN_ADDRESS));
    }

    #[test]
    fn stored_emails_get_the_key_of_their_parsed_form() {
        let stored = Email::from_stored("idn@xn--exmple-cua.com".to_owned(), None);
        assert_eq!(stored.key(), key("IDN@exämple.com"));
    }

    #[test]
    fn nfkc_casefold_is_stable_for_every_code_point() {
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let folded = nfkc_casefold(&c.to_string());
            assert_eq!(nfkc_casefold(&folded), folded, "U+{:04X}", c as u32);
        }
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
