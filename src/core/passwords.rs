//! Screening new passwords against what attackers guess first, after the
//! length rules of [`Password::parse_new`]: the most common passwords, the
//! user's own email name and username, the operator's list of breached
//! passwords, then a strength estimate (zxcvbn). Login only asks the cheap
//! part, whether a right password is known to attackers, so that the user
//! can be told to change it.

mod breached;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, LazyLock},
};

use secrecy::{ExposeSecret, SecretString};
use zxcvbn::Score;

use self::breached::BreachedFile;
use crate::domain::{Email, Error, Password, PasswordRefusal, User, Username};

/// The strength a new password must reach, and the operator's list of
/// breached passwords.
#[derive(Debug, Clone)]
pub(crate) struct PasswordSettings {
    /// zxcvbn's score, 0 to 4; 0 accepts any password the other rules do.
    pub(crate) min_score: u8,
    /// A Have I Been Pwned SHA-1 list (`HASH:COUNT` lines sorted by hash).
    pub(crate) breached_file: Option<PathBuf>,
}

/// See `passwords/README.md` for where the list comes from.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("passwords/common.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// Owner data shorter than this is too likely to appear in a good password
/// by chance ("al" in "walnut").
const OWNER_WORD_MIN_CHARS: usize = 3;

/// Whose password it is: what of theirs the password must not contain.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub(crate) email: &'a Email,
    pub(crate) username: &'a Username,
}

impl<'a> Owner<'a> {
    pub(crate) fn of(user: &'a User) -> Self {
        Self {
            email: &user.email,
            username: &user.username,
        }
    }

    fn words(self) -> [&'a str; 2] {
        [self.email.local_part(), self.username.as_str()]
    }
}

#[derive(Clone)]
pub(crate) struct PasswordPolicy {
    min_score: Score,
    breached: Option<Arc<BreachedFile>>,
}

impl PasswordPolicy {
    /// Opens and checks the breached-password file, if one is set: a file
    /// that cannot be read stops startup rather than silently screening
    /// nothing.
    pub(crate) fn load(settings: &PasswordSettings) -> anyhow::Result<Self> {
        let min_score = Score::try_from(settings.min_score).map_err(anyhow::Error::msg)?;
        let breached = settings
            .breached_file
            .as_deref()
            .map(BreachedFile::open)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            min_score,
            breached,
        })
    }

    /// Refuses a new password that attackers would guess early, as a field
    /// violation of `field` saying why. The cheap checks come first; the
    /// strength estimate, which takes milliseconds on long input, runs on
    /// the blocking pool.
    pub(crate) async fn check(
        &self,
        field: &'static str,
        password: &Password,
        owner: Owner<'_>,
    ) -> Result<(), Error> {
        let refused = |refusal| Err(Error::PasswordRefused { field, refusal });
        let lowered = SecretString::from(password.expose().to_lowercase());
        if is_common(lowered.expose_secret()) {
            return refused(PasswordRefusal::Common);
        }
        if owner.words().into_iter().any(|word| {
            word.chars().count() >= OWNER_WORD_MIN_CHARS
                && lowered.expose_secret().contains(&word.to_lowercase())
        }) {
            return refused(PasswordRefusal::PersonalData);
        }
        if self.is_breached(password).await? {
            return refused(PasswordRefusal::Breached);
        }
        if self.min_score > Score::Zero && self.score(password, owner).await? < self.min_score {
            return refused(PasswordRefusal::TooGuessable);
        }
        Ok(())
    }

    /// Whether a password that was right at Login is one attackers know:
    /// common or breached. No strength estimate, so it costs microseconds.
    pub(crate) async fn is_compromised(&self, password: &Password) -> Result<bool, Error> {
        Ok(
            is_common(SecretString::from(password.expose().to_lowercase()).expose_secret())
                || self.is_breached(password).await?,
        )
    }

    /// On the blocking pool: a lookup in a file that is not in the page
    /// cache waits on some 30 disk reads, which must not hold up the
    /// runtime's few workers.
    async fn is_breached(&self, password: &Password) -> Result<bool, Error> {
        let Some(file) = self.breached.clone() else {
            return Ok(false);
        };
        let password = SecretString::from(password.expose().to_owned());
        tokio::task::spawn_blocking(move || file.contains(password.expose_secret()))
            .await
            .map_err(Error::internal)
    }

    async fn score(&self, password: &Password, owner: Owner<'_>) -> Result<Score, Error> {
        let password = SecretString::from(password.expose().to_owned());
        let inputs = owner.words().map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            zxcvbn::zxcvbn(
                password.expose_secret(),
                &inputs.each_ref().map(String::as_str),
            )
            .score()
        })
        .await
        .map_err(Error::internal)
    }
}

fn is_common(lowercase: &str) -> bool {
    COMMON.contains(lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_score: u8) -> PasswordPolicy {
        PasswordPolicy::load(&PasswordSettings {
            min_score,
            breached_file: None,
        })
        .expect("no file to read")
    }

    fn password(text: &str) -> Password {
        Password::parse_existing(text.to_owned()).expect("a password")
    }

    async fn refusal(policy: &PasswordPolicy, text: &str) -> Option<PasswordRefusal> {
        let email = Email::parse("Ada.Lovelace@example.com").expect("email");
        let username = Username::parse("Countess").expect("username");
        let owner = Owner {
            email: &email,
            username: &username,
        };
        match policy.check("password", &password(text), owner).await {
            Ok(()) => None,
            Err(Error::PasswordRefused { field, refusal }) => {
                assert_eq!(field, "password");
                Some(refusal)
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_list_holds_at_least_ten_thousand_passwords_the_length_rules_allow() {
        assert!(COMMON.len() >= 10_000, "{}", COMMON.len());
        assert!(COMMON.iter().all(|entry| entry.chars().count() >= 8));
        assert!(COMMON.iter().all(|entry| *entry == entry.to_lowercase()));
        assert!(is_common("password") && is_common("123456789"));
    }

    #[tokio::test]
    async fn common_passwords_are_refused_in_any_case() {
        let policy = policy(0);
        for common in ["password", "PassWord", "123456789", "qwertyuiop"] {
            assert_eq!(
                refusal(&policy, common).await,
                Some(PasswordRefusal::Common),
                "{common}"
            );
        }
    }

    #[tokio::test]
    async fn the_owners_name_and_username_are_refused_inside_a_password() {
        let policy = policy(0);
        for personal in [
            "ada.lovelace",
            "my ADA.LOVELACE pass",
            "the countess of lovelace",
        ] {
            assert_eq!(
                refusal(&policy, personal).await,
                Some(PasswordRefusal::PersonalData),
                "{personal}"
            );
        }
        assert_eq!(refusal(&policy, "lovelace without dots").await, None);
    }

    #[tokio::test]
    async fn the_score_decides_last_and_only_when_asked() {
        assert_eq!(
            refusal(&policy(3), "aaaaaaaaaaaa").await,
            Some(PasswordRefusal::TooGuessable)
        );
        assert_eq!(refusal(&policy(0), "aaaaaaaaaaaa").await, None);
        assert_eq!(refusal(&policy(3), "correct horse battery").await, None);
        assert_eq!(refusal(&policy(4), "correct horse battery").await, None);
    }

    #[tokio::test]
    async fn login_flags_common_passwords_only_without_a_file() {
        let policy = policy(3);
        let flagged = |text| {
            let policy = policy.clone();
            async move {
                policy
                    .is_compromised(&password(text))
                    .await
                    .expect("checked")
            }
        };
        assert!(flagged("Password").await);
        assert!(!flagged("correct horse battery").await);
    }
}
