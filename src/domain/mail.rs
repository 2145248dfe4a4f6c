//! What authd mails: the kinds of mail, and the single-use tokens their
//! links carry.

use super::{Error, token::OpaqueToken};

/// Every kind of mail. The names are stored in the outbox and used as the
/// metrics' `kind` label, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailKind {
    /// A password reset link.
    PasswordReset,
    /// A link that verifies the account's address.
    VerifyEmail,
    /// A link, sent to the new address, that confirms an email change.
    ChangeEmail,
    /// To the old address: the account's email changed.
    EmailChanged,
    /// To an account's address: someone tried to sign up with it.
    SignupAttempt,
}

impl MailKind {
    pub(crate) const ALL: [Self; 5] = [
        Self::PasswordReset,
        Self::VerifyEmail,
        Self::ChangeEmail,
        Self::EmailChanged,
        Self::SignupAttempt,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
            Self::ChangeEmail => "change_email",
            Self::EmailChanged => "email_changed",
            Self::SignupAttempt => "signup_attempt",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Its position in [`MailKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The purpose of the token whose link the mail carries, if it carries
    /// one; its bodies are then emptied once it is delivered.
    pub(crate) fn purpose(self) -> Option<TokenPurpose> {
        match self {
            Self::PasswordReset => Some(TokenPurpose::PasswordReset),
            Self::VerifyEmail => Some(TokenPurpose::VerifyEmail),
            Self::ChangeEmail => Some(TokenPurpose::ChangeEmail),
            Self::EmailChanged | Self::SignupAttempt => None,
        }
    }
}

/// What a mailed token may be spent on, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenPurpose {
    PasswordReset,
    VerifyEmail,
    ChangeEmail,
}

impl TokenPurpose {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
            Self::ChangeEmail => "change_email",
        }
    }

    /// The mail that carries a token of this purpose.
    pub(crate) fn mail_kind(self) -> MailKind {
        match self {
            Self::PasswordReset => MailKind::PasswordReset,
            Self::VerifyEmail => MailKind::VerifyEmail,
            Self::ChangeEmail => MailKind::ChangeEmail,
        }
    }
}

/// A mailed token: an [`OpaqueToken`], base64url without padding in links.
/// Never printed; the database keeps only its hash.
pub(crate) struct MailToken(OpaqueToken);

impl MailToken {
    pub(crate) fn generate() -> Result<Self, Error> {
        OpaqueToken::generate().map(Self)
    }

    /// Reads a token as a client presents it: exactly 43 base64url
    /// characters, or it cannot be one of ours.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        OpaqueToken::parse(text).map(Self)
    }

    /// The text that goes into the link.
    pub(crate) fn encode(&self) -> String {
        self.0.encode()
    }

    /// What the database stores and looks the token up by: its SHA-256.
    pub(crate) fn hash(&self) -> String {
        self.0.hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_itself_and_junk_does_not_parse() {
        let token = MailToken::generate().unwrap();
        let text = token.encode();
        assert_eq!(text.len(), 43);
        let parsed = MailToken::parse(&text).unwrap();
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(token.hash(), text);
        for junk in [
            "",
            "abc",
            &format!("{text}A"),
            &text.replace(&text[..1], "+"),
            &"=".repeat(43),
        ] {
            assert!(MailToken::parse(junk).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for (index, kind) in MailKind::ALL.into_iter().enumerate() {
            assert_eq!(MailKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.index(), index);
        }
        assert_eq!(MailKind::parse("other"), None);
    }
}
