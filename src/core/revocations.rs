//! The revocation feed: every replica's in-memory view of revoked sessions,
//! kept current from the `revocations` table within a second of each
//! commit, and the WatchRevocations streams that carry it on to offline
//! verifiers.
//!
//! One driver task per replica follows the table by cursor. On PostgreSQL
//! it listens for the notification every revoking transaction sends,
//! reading what is new after each, and polls as a safety net; after any
//! error the view stops being current (session checks then read the
//! database) until the driver has reconnected and caught up. SQLite is one
//! process: the calls that revoke wake the drivers on the file directly,
//! and the poll covers other processes.
//!
//! The same feed keeps a bounded cache of user profiles for GetMe correct:
//! every change to a user notifies `authd_users` and each replica evicts
//! the user; a replica whose feed is interrupted drops the whole cache and
//! does not use it until current again.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::{
    domain::{Error, User, session::Revocation},
    infra::metrics::Metrics,
    store::{Database, FeedConnection, Wakeup},
};

/// How many WatchRevocations streams one replica serves at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RevocationSettings {
    pub(crate) max_watches: usize,
}

/// The driver reads even without a notification this often, and prunes
/// expired entries: a lost notification delays a revocation by this much
/// at most.
const POLL: Duration = Duration::from_secs(1);
/// A read that takes longer means the connection is lost without saying
/// so: the view stops being current rather than silently fall behind.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Revocations read per statement.
const PAGE: i64 = 500;
/// How long a call that ended sessions waits for its replica's view to
/// include them: well beyond a read's time, short of a client's patience.
const SETTLE: Duration = Duration::from_secs(1);
/// A watch's heartbeat while the view is current.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Revocations a watch may fall behind the feed before it re-reads the
/// table instead.
const BROADCAST_CAPACITY: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Entries a watch has read but the client not yet taken.
const WATCH_BUFFER: usize = 64;
/// Profiles cached per replica: a few megabytes at most.
const PROFILES: usize = 10_000;

/// What a watch sends: a revocation, or a heartbeat with the cursor of the
/// last revocation sent.
pub(crate) enum FeedEntry {
    Revoked(Revocation),
    Heartbeat(i64),
}

#[derive(Clone)]
pub(crate) struct Revocations(Arc<Inner>);

struct Inner {
    db: Database,
    /// Revoked session → when its last access token expires.
    revoked: RwLock<HashMap<Uuid, DateTime<Utc>>>,
    /// The highest cursor the view holds.
    applied: watch::Sender<i64>,
    /// Caught up and listening: only then may the view say "not revoked".
    current: watch::Sender<bool>,
    wake: Notify,
    live: broadcast::Sender<Revocation>,
    watches: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
    metrics: Metrics,
    /// Keyed by user and session: a profile is cached only once the
    /// database confirmed that session live and the user's.
    profiles: quick_cache::sync::Cache<(Uuid, Uuid), User>,
    /// Bumped by every eviction: a profile read before one is not cached
    /// after it, since it may predate the change.
    profile_epoch: AtomicU64,
}

impl Revocations {
    pub(crate) fn new(db: Database, settings: RevocationSettings, metrics: &Metrics) -> Self {
        Self(Arc::new(Inner {
            db,
            revoked: RwLock::default(),
            applied: watch::Sender::new(0),
            current: watch::Sender::new(false),
            wake: Notify::new(),
            live: broadcast::Sender::new(BROADCAST_CAPACITY),
            watches: Arc::new(Semaphore::new(settings.max_watches)),
            stopping: watch::Sender::new(false),
            metrics: metrics.clone(),
            profiles: quick_cache::sync::Cache::new(PROFILES),
            profile_epoch: AtomicU64::new(0),
        }))
    }

    /// Whether the session is revoked, or None when the view is not current
    /// and cannot tell.
    pub(crate) fn is_revoked(&self, session_id: Uuid) -> Option<bool> {
        if !*self.0.current.borrow() {
            return None;
        }
        Some(
            self.0
                .revoked
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&session_id),
        )
    }

    /// The profile cached for this user's session, while the feed is
    /// current.
    pub(crate) fn profile(&self, user_id: Uuid, session_id: Uuid) -> Option<User> {
        if !*self.0.current.borrow() {
            return None;
        }
        self.0.profiles.get(&(user_id, session_id))
    }

    /// Where evictions stand: take it before reading a profile to cache.
    pub(crate) fn profile_epoch(&self) -> u64 {
        self.0.profile_epoch.load(Ordering::SeqCst)
    }

    /// Caches a profile read after `epoch`, unless an eviction came since:
    /// checked again after inserting, so an eviction racing the insert
    /// cannot leave it behind.
    pub(crate) fn keep_profile(&self, session_id: Uuid, user: User, epoch: u64) {
        if !*self.0.current.borrow() || self.profile_epoch() != epoch {
            return;
        }
        let key = (user.id, session_id);
        self.0.profiles.insert(key, user);
        if self.profile_epoch() != epoch {
            self.0.profiles.remove(&key);
        }
    }

    /// After a change to a user committed: drops the profile here, at once,
    /// and on the other replicas (PostgreSQL's replicas are notified by the
    /// transaction itself).
    pub(crate) fn user_changed(&self, user_id: Uuid) {
        self.forget_profile(user_id);
        self.0.db.announce(Wakeup::User(Some(user_id)));
    }

    /// A scan, but of a bounded cache, on a rare event.
    fn forget_profile(&self, user_id: Uuid) {
        self.0.profile_epoch.fetch_add(1, Ordering::SeqCst);
        self.0.profiles.retain(|(user, _), _| *user != user_id);
    }

    fn forget_profiles(&self) {
        self.0.profile_epoch.fetch_add(1, Ordering::SeqCst);
        self.0.profiles.clear();
    }

    /// Called after a transaction that may have ended sessions committed:
    /// waits, for a bounded time, until this replica's view includes it, so
    /// that the replica refuses those sessions from the next call on.
    /// A view that is not current decides nothing, so there is nothing to
    /// wait for.
    pub(crate) async fn settle(&self) {
        self.0.db.announce(Wakeup::Revocations);
        if !*self.0.current.borrow() {
            return;
        }
        let latest = match self.0.db.latest_revocation().await {
            Ok(latest) => latest,
            Err(error) => {
                tracing::warn!(%error, "revocation feed: cannot read the latest revocation");
                return;
            }
        };
        self.0.wake.notify_one();
        let mut applied = self.0.applied.subscribe();
        if tokio::time::timeout(SETTLE, applied.wait_for(|applied| *applied >= latest))
            .await
            .is_err()
        {
            tracing::warn!("revocation feed: a local revocation is not in the view yet");
        }
    }

    /// Ends every watch with UNAVAILABLE: the server is shutting down, and
    /// its feed stops, so the calls still finishing read the database.
    pub(crate) fn stop(&self) {
        self.set_current(false);
        self.0.stopping.send_replace(true);
    }

    /// Keeps the view current, forever: reconnects with backoff after any
    /// failure, and catches up before calling the view current again.
    pub(crate) async fn keep_current(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = self.follow(&mut backoff).await;
            self.set_current(false);
            tracing::warn!(%error, retry_in = ?backoff, "revocation feed interrupted");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn follow(&self, backoff: &mut Duration) -> Error {
        let mut conn = match self.0.db.feed_connection().await {
            Ok(conn) => conn,
            Err(error) => return error,
        };
        // Listening before the catch-up: a revocation committed during it
        // is either read by it or notified after it.
        if let Err(error) = self.catch_up(&mut conn).await {
            return error;
        }
        self.set_current(true);
        *backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                wakeup = conn.next_wakeup() => match wakeup {
                    Ok(Wakeup::Revocations) => {}
                    Ok(Wakeup::User(Some(user_id))) => self.forget_profile(user_id),
                    Ok(Wakeup::User(None)) => self.forget_profiles(),
                    Err(error) => return error,
                },
                () = self.0.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {
                    self.prune();
                    // Then profiles another process changed live no longer
                    // than this.
                    if !conn.hears_other_processes() {
                        self.forget_profiles();
                    }
                }
            }
            if let Err(error) = self.catch_up(&mut conn).await {
                return error;
            }
        }
    }

    /// Applies every revocation after the view's cursor that still matters.
    async fn catch_up(&self, conn: &mut FeedConnection) -> Result<(), Error> {
        tokio::time::timeout(READ_TIMEOUT, self.read_new(conn))
            .await
            .map_err(|_| Error::unavailable("the revocation feed's read timed out"))?
    }

    async fn read_new(&self, conn: &mut FeedConnection) -> Result<(), Error> {
        loop {
            let after = *self.0.applied.borrow();
            let page = conn.revocations_after(after, Utc::now(), PAGE).await?;
            let Some(last) = page.last().map(|revocation| revocation.cursor) else {
                return Ok(());
            };
            let full = page.len() >= usize::try_from(PAGE).unwrap_or(usize::MAX);
            let held = {
                let mut revoked = self
                    .0
                    .revoked
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                for revocation in &page {
                    revoked.insert(revocation.session_id, revocation.not_after);
                }
                revoked.len()
            };
            self.0.applied.send_replace(last);
            for revocation in page {
                // No watch listening is no error.
                let _ = self.0.live.send(revocation);
            }
            self.publish(held);
            if !full {
                return Ok(());
            }
        }
    }

    /// Forgets revocations whose tokens have all expired: memory stays
    /// bounded by the revocations of one access-token lifetime.
    fn prune(&self) {
        let now = Utc::now();
        let held = {
            let mut revoked = self
                .0
                .revoked
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            revoked.retain(|_, not_after| *not_after > now);
            revoked.len()
        };
        self.publish(held);
    }

    fn set_current(&self, current: bool) {
        if !current {
            // Changes may go unheard until the feed is back.
            self.forget_profiles();
        }
        self.0.current.send_replace(current);
        let held = self
            .0
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.publish(held);
    }

    fn publish(&self, held: usize) {
        self.0
            .metrics
            .set_revocation_feed(*self.0.current.borrow(), held);
    }

    /// The revocations a verifier needs: those after `cursor`, or without
    /// one every revocation that still matters; then each new one as the
    /// view applies it, with heartbeats while the view is current. Beyond
    /// the replica's cap of watches, [`Error::TooManyWatches`].
    pub(crate) fn watch(
        &self,
        cursor: Option<i64>,
    ) -> Result<impl Stream<Item = Result<FeedEntry, Error>> + Send + 'static, Error> {
        let permit = Arc::clone(&self.0.watches)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyWatches)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        // Subscribed before the backlog is read, so nothing committed
        // meanwhile falls between the two.
        let live = self.0.live.subscribe();
        tokio::spawn(self.clone().serve_watch(cursor, live, sender, permit));
        Ok(ReceiverStream::new(receiver))
    }

    async fn serve_watch(
        self,
        cursor: Option<i64>,
        live: broadcast::Receiver<Revocation>,
        sender: mpsc::Sender<Result<FeedEntry, Error>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let watch = Watch {
            feed: self,
            sender,
            last: cursor.unwrap_or(0),
        };
        watch.run(cursor.is_none(), live).await;
    }
}

/// Completes once the server begins shutting down.
async fn shutdown(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One watch: where it is and where it sends.
struct Watch {
    feed: Revocations,
    sender: mpsc::Sender<Result<FeedEntry, Error>>,
    last: i64,
}

impl Watch {
    async fn run(mut self, only_ahead: bool, mut live: broadcast::Receiver<Revocation>) {
        let mut stopping = self.feed.0.stopping.subscribe();
        let outcome = async {
            let ahead_of = if only_ahead {
                Utc::now()
            } else {
                DateTime::UNIX_EPOCH
            };
            self.backlog(ahead_of).await?;
            self.send(FeedEntry::Heartbeat(self.last)).await?;
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat.reset();
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(revocation) if revocation.cursor > self.last => {
                            self.last = revocation.cursor;
                            self.send(FeedEntry::Revoked(revocation)).await?;
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.backlog(DateTime::UNIX_EPOCH).await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = beat.tick() => {
                        let current = *self.feed.0.current.borrow();
                        if current {
                            self.send(FeedEntry::Heartbeat(self.last)).await?;
                        }
                    }
                    () = shutdown(&mut stopping) => {
                        return Err(Some(Error::unavailable("the server is shutting down")));
                    }
                    () = self.sender.closed() => return Ok(()),
                }
            }
        }
        .await;
        if let Err(Some(error)) = outcome {
            let _ = self.sender.send(Err(error)).await;
        }
    }

    /// Sends, page by page, the revocations after the last one sent whose
    /// `not_after` is past `ahead_of`. Err(None): the client has gone.
    async fn backlog(&mut self, ahead_of: DateTime<Utc>) -> Result<(), Option<Error>> {
        loop {
            let page = self
                .feed
                .0
                .db
                .revocations_after(self.last, ahead_of, PAGE)
                .await
                .map_err(Some)?;
            let full = page.len() >= usize::try_from(PAGE).unwrap_or(usize::MAX);
            for revocation in page {
                self.last = revocation.cursor;
                self.send(FeedEntry::Revoked(revocation)).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&self, entry: FeedEntry) -> Result<(), Option<Error>> {
        self.sender.send(Ok(entry)).await.map_err(|_| None)
    }
}
