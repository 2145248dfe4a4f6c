//! The hashing stage. bcrypt is deliberately slow CPU work: it runs on the
//! blocking pool, behind a semaphore sized to the cores, so a burst of logins
//! cannot starve the async workers that serve everything else.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::{Error, domain::Password};

/// A bcrypt hash in its modular-crypt text form, as stored.
#[derive(Debug, Clone)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn from_stored(hash: String) -> Self {
        Self(hash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    cost: u32,
    /// Verified against when the email is unknown, so that a miss costs the
    /// same time as a wrong password and does not reveal which emails exist.
    dummy: PasswordHash,
}

impl Hasher {
    pub async fn new(cost: u32, permits: usize) -> Result<Self, Error> {
        let dummy = tokio::task::spawn_blocking(move || bcrypt::hash("authd dummy password", cost))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits)),
            cost,
            dummy: PasswordHash(dummy),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<PasswordHash, Error> {
        let password = password.expose().to_owned();
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost).map(PasswordHash))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths take one bcrypt verify.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<bool, Error> {
        let matches_account = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy).0.clone();
        let password = password.expose().to_owned();
        let matched = self.run(move || bcrypt::verify(password, &hash)).await?;
        Ok(matched && matches_account)
    }

    /// The permit is taken before the blocking task exists, so waiting calls
    /// queue here instead of occupying blocking-pool threads, and it is held
    /// until the hash is done.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> bcrypt::BcryptResult<T> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
    }
}
