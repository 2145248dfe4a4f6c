//! The hashing stage. bcrypt is deliberately slow CPU work: it runs on the
//! blocking pool, behind a semaphore sized to the cores, so a burst of logins
//! cannot starve the async workers that serve everything else. Past the
//! permits only a short queue may wait; anything more is refused at once, so
//! overload shows as fast RESOURCE_EXHAUSTED instead of seconds of latency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Error, domain::Password, metrics::Metrics};

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

    /// The work factor the hash was made with.
    pub fn cost(&self) -> Option<u32> {
        self.0.split('$').nth(2)?.parse().ok()
    }
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Calls holding a place: hashing now or queued for a permit.
    places_taken: Arc<AtomicUsize>,
    places: usize,
    cost: u32,
    /// Verified against when the email is unknown, so that a miss costs the
    /// same time as a wrong password and does not reveal which emails exist.
    dummy: PasswordHash,
    metrics: Metrics,
}

impl Hasher {
    /// `permits` hashes run at once and up to `queue` more calls wait; the
    /// stage reports its depth, waits and refusals to `metrics`.
    pub async fn new(
        cost: u32,
        permits: usize,
        queue: usize,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let dummy = tokio::task::spawn_blocking(move || bcrypt::hash("authd dummy password", cost))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits)),
            places_taken: Arc::default(),
            places: permits + queue,
            cost,
            dummy: PasswordHash(dummy),
            metrics: metrics.clone(),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A place in the stage and a core to hash on. A place is taken first
    /// and refused at once when none is left. The permit is taken before any
    /// blocking task exists, so waiting calls queue here instead of
    /// occupying blocking-pool threads. A call dropped while it waits
    /// (cancelled, deadline passed) gives its place back and never hashes.
    pub async fn slot(&self) -> Result<Slot, Error> {
        let Some(place) = Place::take(&self.places_taken, self.places, &self.metrics) else {
            self.metrics.hash_rejected();
            return Err(Error::Overloaded);
        };
        let queued = Instant::now();
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        self.metrics.hash_waited(queued.elapsed());
        Ok(Slot {
            _place: place,
            _permit: permit,
        })
    }

    pub async fn hash(&self, slot: Slot, password: &Password) -> Result<PasswordHash, Error> {
        let password = password.expose().to_owned();
        let cost = self.cost;
        slot.run(move || bcrypt::hash(password, cost).map(PasswordHash))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths take one bcrypt verify.
    pub async fn verify(
        &self,
        slot: Slot,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<bool, Error> {
        let matches_account = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy).0.clone();
        let password = password.expose().to_owned();
        let matched = slot.run(move || bcrypt::verify(password, &hash)).await?;
        Ok(matched && matches_account)
    }
}

/// The right to run one hash now: a place in the stage and a core.
pub struct Slot {
    // Held for their Drop: both are given back when the slot goes.
    _place: Place,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Once started, the hash keeps its place and permit until it is done,
    /// even if the caller stops waiting for it.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> bcrypt::BcryptResult<T> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(self);
            result
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
    }
}

/// One place in the hashing stage, given back on drop.
struct Place {
    taken: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl Place {
    fn take(taken: &Arc<AtomicUsize>, places: usize, metrics: &Metrics) -> Option<Self> {
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < places).then_some(n + 1)
            })
            .ok()?;
        metrics.hash_entered();
        Some(Self {
            taken: Arc::clone(taken),
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
        self.metrics.hash_left();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_queue_calls_are_refused_and_places_come_back() {
        let metrics = Metrics::new();
        let hasher = Hasher::new(4, 1, 1, &metrics).await.expect("hasher");
        let hold = Arc::clone(&hasher.permits)
            .acquire_owned()
            .await
            .expect("permit");
        // One place for the hash the held permit blocks, one queued: full.
        let first = tokio::spawn({
            let hasher = hasher.clone();
            let password = Password::parse_existing("a password".into()).expect("password");
            async move { hasher.hash(hasher.slot().await?, &password).await }
        });
        while hasher.places_taken.load(Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        let mut second = Box::pin(hasher.slot());
        assert!(futures_util::poll!(&mut second).is_pending(), "queued");
        assert!(matches!(hasher.slot().await, Err(Error::Overloaded)));
        let body = metrics.encode().expect("metrics");
        assert!(body.contains("\nauthd_hash_rejected_total 1\n"), "{body}");
        assert!(body.contains("\nauthd_hash_queue_depth 2\n"), "{body}");
        drop(second);
        assert_eq!(
            hasher.places_taken.load(Ordering::Acquire),
            1,
            "the cancelled call left"
        );
        drop(hold);
        let hash = first.await.expect("join").expect("hash");
        assert_eq!(hash.cost(), Some(4));
        assert_eq!(hasher.places_taken.load(Ordering::Acquire), 0);
        let body = metrics.encode().expect("metrics");
        assert!(body.contains("\nauthd_hash_queue_depth 0\n"), "{body}");
        assert!(
            body.contains("\nauthd_hash_wait_seconds_count 1\n"),
            "{body}"
        );
    }
}
