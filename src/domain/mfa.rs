//! Second-factor values: the codes a user types, and how a session's user
//! authenticated.

use secrecy::{ExposeSecret, SecretString};

/// Characters of a recovery code: 16 of the RFC 4648 base32 alphabet, 80
/// random bits, shown in groups of four.
pub(crate) const RECOVERY_CODE_CHARS: usize = 16;

/// A 6-digit TOTP code. Never printed.
pub(crate) struct TotpCode(SecretString);

impl TotpCode {
    /// Six ASCII digits; the spaces apps show in the middle are ignored.
    pub(crate) fn parse(raw: &str) -> Result<Self, &'static str> {
        let code: String = raw.chars().filter(|c| *c != ' ').collect();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(SecretString::from(code)))
        } else {
            Err("must be the 6-digit code the authenticator app shows")
        }
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A recovery code, normalized: upper case, without the dashes and spaces it
/// is shown or typed with. Never printed.
pub(crate) struct RecoveryCode(SecretString);

impl RecoveryCode {
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        let code: String = raw
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let base32 = |c: char| c.is_ascii_uppercase() || ('2'..='7').contains(&c);
        (code.len() == RECOVERY_CODE_CHARS && code.chars().all(base32))
            .then(|| Self(SecretString::from(code)))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// What answers a second-factor challenge: a TOTP code or a recovery code.
pub(crate) enum SecondFactor {
    Totp(TotpCode),
    Recovery(RecoveryCode),
}

impl SecondFactor {
    pub(crate) fn parse(raw: &str) -> Result<Self, &'static str> {
        if let Ok(code) = TotpCode::parse(raw) {
            return Ok(Self::Totp(code));
        }
        RecoveryCode::parse(raw)
            .map(Self::Recovery)
            .ok_or("must be a 6-digit code from the authenticator app or a recovery code")
    }
}

/// How a session's user authenticated, as RFC 8176 `amr` values. A recovery
/// code counts as `otp`: it is a one-time password, and what a backend asks
/// by requiring `otp` is "more than the password".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Amr {
    Password,
    PasswordAndOtp,
}

impl Amr {
    pub(crate) fn values(self) -> &'static [&'static str] {
        match self {
            Self::Password => &["pwd"],
            Self::PasswordAndOtp => &["pwd", "otp"],
        }
    }

    /// The stored form: the values, space separated.
    pub(crate) fn as_stored(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::PasswordAndOtp => "pwd otp",
        }
    }

    /// Anything but a second factor's form reads as the password alone, so
    /// a damaged row never claims more than was proven.
    pub(crate) fn from_stored(stored: &str) -> Self {
        if stored == Self::PasswordAndOtp.as_stored() {
            Self::PasswordAndOtp
        } else {
            Self::Password
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_told_apart_by_their_form() {
        assert!(matches!(
            SecondFactor::parse("123 456"),
            Ok(SecondFactor::Totp(_))
        ));
        assert!(matches!(
            SecondFactor::parse("abcd-efgh-2345-67ab"),
            Ok(SecondFactor::Recovery(code)) if code.expose() == "ABCDEFGH234567AB"
        ));
        for bad in ["", "12345", "1234567", "ABCD-EFGH-2345-6781", "abcd"] {
            assert!(SecondFactor::parse(bad).is_err(), "{bad}");
        }
        assert!(TotpCode::parse("ABCDEF").is_err());
    }

    #[test]
    fn amr_round_trips_and_never_claims_more() {
        for amr in [Amr::Password, Amr::PasswordAndOtp] {
            assert_eq!(Amr::from_stored(amr.as_stored()), amr);
        }
        assert_eq!(Amr::from_stored("otp"), Amr::Password);
    }
}
