//! The hashing stage. bcrypt is deliberately slow CPU work: it runs on the
//! blocking pool, behind a semaphore sized to the cores, so a burst of logins
//! cannot starve the async workers that serve everything else. Past the
//! permits only a short queue may wait; anything more is refused at once, so
//! overload shows as fast RESOURCE_EXHAUSTED instead of seconds of latency.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    domain::{Error, Password, PasswordHash},
    infra::metrics::Metrics,
};

#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    /// Calls holding a place: hashing now or queued for a permit.
    places_taken: Arc<AtomicUsize>,
    places: usize,
    cost: u32,
    /// The salt and digest of a hash that matches no password; with any cost
    /// put in front it is the dummy an unknown email is verified against.
    dummy_tail: Arc<str>,
    pace: Arc<Mutex<Pace>>,
    metrics: Metrics,
}

/// How long every verify takes, so that timing does not reveal which emails
/// have accounts: unknown emails are checked against a dummy at `cost`, the
/// dearest cost of any hash seen, and a verify of a cheaper stored hash is
/// padded to `verify_time`, what one at `cost` takes on this machine.
struct Pace {
    cost: u32,
    verify_time: Duration,
}

impl Pace {
    /// Learns from a verify at `cost` that took `took`; returns how long the
    /// caller must still wait to look like a verify at the dearest cost.
    fn observe(&mut self, cost: u32, took: Duration) -> Duration {
        if cost > self.cost {
            self.cost = cost;
            self.verify_time = took;
        } else if cost == self.cost {
            // A moving average follows the machine's load without letting
            // one slow verify decide. A verify at the dearest cost, like the
            // dummy's, already takes the time to match: no padding.
            self.verify_time = (self.verify_time * 7 + took) / 8;
        } else {
            return self.verify_time.saturating_sub(took);
        }
        Duration::ZERO
    }
}

impl Hasher {
    /// `permits` hashes run at once and up to `queue` more calls wait; the
    /// stage reports its depth, waits and refusals to `metrics`. New hashes
    /// are made at `cost`; `stored_cost`, the dearest cost among stored
    /// hashes, sets the dummy's cost when it is higher, so that unknown
    /// emails take as long as the slowest accounts right after a restart
    /// with a lower cost.
    pub(crate) async fn new(
        cost: u32,
        permits: usize,
        queue: usize,
        metrics: &Metrics,
        stored_cost: Option<u32>,
    ) -> Result<Self, Error> {
        let pace_cost = stored_cost.map_or(cost, |stored| stored.max(cost));
        let (dummy_tail, verify_time) = tokio::task::spawn_blocking(move || {
            let template = bcrypt::hash("authd dummy password", TEMPLATE_COST)?;
            let tail = template.get(7..).unwrap_or_default().to_owned();
            let started = Instant::now();
            bcrypt::verify("another password", &dummy(pace_cost, &tail))?;
            Ok::<_, bcrypt::BcryptError>((tail, started.elapsed()))
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits)),
            places_taken: Arc::default(),
            places: permits + queue,
            cost,
            dummy_tail: dummy_tail.into(),
            pace: Arc::new(Mutex::new(Pace {
                cost: pace_cost,
                verify_time,
            })),
            metrics: metrics.clone(),
        })
    }

    pub(crate) fn cost(&self) -> u32 {
        self.cost
    }

    /// A place in the stage and a core to hash on. A place is taken first
    /// and refused at once when none is left. The permit is taken before any
    /// blocking task exists, so waiting calls queue here instead of
    /// occupying blocking-pool threads. A call dropped while it waits
    /// (cancelled, deadline passed) gives its place back and never hashes.
    pub(crate) async fn slot(&self) -> Result<Slot, Error> {
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

    pub(crate) async fn hash(
        &self,
        slot: Slot,
        password: &Password,
    ) -> Result<PasswordHash, Error> {
        let password = password.expose().to_owned();
        let cost = self.cost;
        slot.run(move || bcrypt::hash(password, cost).map(PasswordHash::from_stored))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths take one bcrypt verify at the
    /// dearest cost in use, or its measured time (see [`Pace`]).
    pub(crate) async fn verify(
        &self,
        slot: Slot,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<bool, Error> {
        // A stored hash without a cost is no hash at all (an account made
        // without a password): it is checked like an unknown email, so it
        // fails like a wrong password, in the same time.
        let stored = stored.filter(|stored| stored.cost().is_some());
        let matches_account = stored.is_some();
        let (hash, cost) = match stored {
            Some(stored) => (stored.as_str().to_owned(), stored.cost()),
            None => {
                let cost = self.lock_pace().cost;
                (dummy(cost, &self.dummy_tail), Some(cost))
            }
        };
        let password = password.expose().to_owned();
        let (matched, took) = slot
            .run(move || {
                let started = Instant::now();
                bcrypt::verify(password, &hash).map(|matched| (matched, started.elapsed()))
            })
            .await?;
        let pad = cost.map_or(Duration::ZERO, |cost| self.lock_pace().observe(cost, took));
        if !pad.is_zero() {
            // The slot is already given back: padding holds no core.
            tokio::time::sleep(pad).await;
        }
        Ok(matched && matches_account)
    }

    fn lock_pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The dummy's salt and digest are made at the cheapest cost: only their
/// form matters, since the cost in front of them decides the work.
const TEMPLATE_COST: u32 = 4;

/// A well-formed bcrypt hash at `cost` that no password matches.
fn dummy(cost: u32, tail: &str) -> String {
    format!("$2b${cost:02}${tail}")
}

/// The right to run one hash now: a place in the stage and a core.
pub(crate) struct Slot {
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

    #[test]
    fn cheaper_verifies_are_padded_to_the_dearest_cost_seen() {
        let ms = Duration::from_millis;
        let mut pace = Pace {
            cost: 10,
            verify_time: ms(80),
        };
        assert_eq!(pace.observe(4, ms(2)), ms(78));
        assert_eq!(pace.observe(10, ms(160)), Duration::ZERO);
        assert_eq!(pace.verify_time, ms(90), "a moving average");
        assert_eq!(pace.observe(12, ms(300)), Duration::ZERO);
        assert_eq!((pace.cost, pace.verify_time), (12, ms(300)));
        assert_eq!(pace.observe(10, ms(100)), ms(200));
        assert_eq!(
            pace.observe(12, ms(200)),
            Duration::ZERO,
            "a verify at the dearest cost is never padded"
        );
    }

    #[tokio::test]
    async fn the_dummy_costs_as_much_as_the_dearest_stored_hash() {
        let metrics = Metrics::new();
        let hasher = Hasher::new(4, 1, 1, &metrics, Some(6))
            .await
            .expect("hasher");
        assert_eq!(hasher.lock_pace().cost, 6);
        let password = Password::parse_existing("a password".into()).expect("password");
        let slot = hasher.slot().await.expect("slot");
        assert!(!hasher.verify(slot, &password, None).await.expect("verify"));
        let dummy = PasswordHash::from_stored(dummy(6, &hasher.dummy_tail));
        assert_eq!(dummy.cost(), Some(6));
        let cheaper = Hasher::new(6, 1, 1, &metrics, Some(4))
            .await
            .expect("hasher");
        assert_eq!(
            cheaper.lock_pace().cost,
            6,
            "never below the configured cost"
        );
    }

    #[tokio::test]
    async fn beyond_the_queue_calls_are_refused_and_places_come_back() {
        let metrics = Metrics::new();
        let hasher = Hasher::new(4, 1, 1, &metrics, None).await.expect("hasher");
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
