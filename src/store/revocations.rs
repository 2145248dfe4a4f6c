//! The revocations table: one row per ended session, written by the
//! transaction that ends it ([`EndSessions`]), read in id order by every
//! replica's feed and by WatchRevocations.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::{
    prelude::*,
    result::Error as QueryError,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use uuid::Uuid;

use super::{
    Database, Pools, SqliteAsync,
    audit::AUDIT_LOCK_ID,
    query_error,
    schema::{revocations, sessions},
    with_conn,
};
use crate::domain::{Error, session::Revocation};

/// The PostgreSQL channels the feed listens on: one notification per
/// transaction that ended sessions, and one per changed user (its id as
/// the payload).
const REVOCATIONS_CHANNEL: &str = "authd_revocations";
const USERS_CHANNEL: &str = "authd_users";

/// What the feeds of every `Database` on one SQLite file in this process
/// hear of each other's changes: SQLite has no notifications, and replicas
/// in one process (tests, or an embedding) share the file.
pub(crate) type Neighbours = Arc<tokio::sync::broadcast::Sender<Wakeup>>;

/// Wakeups one feed may fall behind before it must assume it missed some.
const NEIGHBOUR_BACKLOG: usize = 256;

/// The wakeups of the SQLite file at `path`, shared by every `Database`
/// this process opens on it. One entry per file ever opened.
pub(super) fn neighbours(path: &Path) -> Neighbours {
    static FILES: LazyLock<Mutex<HashMap<std::path::PathBuf, Neighbours>>> =
        LazyLock::new(Mutex::default);
    let mut files = FILES.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        files
            .entry(path.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::broadcast::Sender::new(NEIGHBOUR_BACKLOG))),
    )
}

/// When sessions end, and the latest instant any access token issued to
/// them may still be accepted.
#[derive(Clone, Copy)]
pub(super) struct Ending {
    at: NaiveDateTime,
    not_after: NaiveDateTime,
}

impl Ending {
    pub(super) fn new(at: NaiveDateTime, window: Duration) -> Self {
        let not_after = chrono::Duration::from_std(window)
            .ok()
            .and_then(|window| at.checked_add_signed(window))
            .unwrap_or(NaiveDateTime::MAX);
        Self { at, not_after }
    }
}

impl Database {
    /// Sessions ending now.
    pub(super) fn ending_now(&self) -> Ending {
        Ending::new(Utc::now().naive_utc(), self.revocation_window)
    }
}

/// Ids bound per statement when marking sessions revoked: a user may hold
/// tens of thousands of sessions, beyond what one statement may bind
/// (65535 on PostgreSQL, 32766 on SQLite).
const MARK_CHUNK: usize = 1000;

/// Marks the live sessions among `chosen` revoked; evaluates to their ids
/// and users, or returns from the caller when there are none.
macro_rules! mark_revoked {
    ($conn:expr, $chosen:expr, $ending:expr) => {{
        let mut ended = Vec::new();
        for chunk in $chosen.chunks(MARK_CHUNK) {
            ended.extend(
                diesel::update(
                    sessions::table
                        .filter(sessions::id.eq_any(chunk))
                        .filter(sessions::revoked_at.is_null()),
                )
                .set(sessions::revoked_at.eq($ending.at))
                .returning((sessions::id, sessions::user_id))
                .get_results::<(String, String)>(&mut *$conn)
                .await?,
            );
        }
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        ended
    }};
}

/// One insert per ended session: usually a handful, and SQLite has no
/// batch insert with defaults.
macro_rules! insert_revocations {
    ($conn:expr, $ended:expr, $ending:expr) => {
        for (session_id, user_id) in $ended {
            diesel::insert_into(revocations::table)
                .values((
                    revocations::session_id.eq(session_id),
                    revocations::user_id.eq(user_id),
                    revocations::revoked_at.eq($ending.at),
                    revocations::not_after.eq($ending.not_after),
                ))
                .execute(&mut *$conn)
                .await?;
        }
    };
}

/// The one way sessions end: inside the caller's transaction, marks the
/// live ones among `chosen` revoked and records a revocation for each, which
/// the feed then carries to every replica and watcher. Returns the ids it
/// ended. Call it at the end of the transaction (only the audit append may
/// follow): on PostgreSQL it takes the audit lock, so that revocation ids,
/// like audit ids, commit in increasing order and a reader resuming after
/// a cursor misses none.
pub(super) trait EndSessions {
    async fn end_sessions(
        &mut self,
        chosen: &[String],
        ending: Ending,
    ) -> Result<Vec<String>, QueryError>;
}

impl EndSessions for AsyncPgConnection {
    async fn end_sessions(
        &mut self,
        chosen: &[String],
        ending: Ending,
    ) -> Result<Vec<String>, QueryError> {
        let ended = mark_revoked!(self, chosen, ending);
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(AUDIT_LOCK_ID)
            .execute(&mut *self)
            .await?;
        insert_revocations!(self, &ended, ending);
        // Delivered at commit, and only then.
        notify(self, REVOCATIONS_CHANNEL, "").await?;
        Ok(ended.into_iter().map(|(id, _)| id).collect())
    }
}

impl EndSessions for SqliteAsync {
    /// SQLite's single writer already orders commits; the caller wakes the
    /// feeds once committed ([`Database::announce`]).
    async fn end_sessions(
        &mut self,
        chosen: &[String],
        ending: Ending,
    ) -> Result<Vec<String>, QueryError> {
        let ended = mark_revoked!(self, chosen, ending);
        insert_revocations!(self, &ended, ending);
        Ok(ended.into_iter().map(|(id, _)| id).collect())
    }
}

/// Tells every replica, once the caller's transaction commits, that a user
/// changed, so that none keeps an outdated profile.
pub(super) trait AnnounceUserChange {
    async fn announce_user_change(&mut self, user_id: &str) -> Result<(), QueryError>;
}

impl AnnounceUserChange for AsyncPgConnection {
    async fn announce_user_change(&mut self, user_id: &str) -> Result<(), QueryError> {
        notify(self, USERS_CHANNEL, user_id).await
    }
}

impl AnnounceUserChange for SqliteAsync {
    /// The caller announces the change once committed
    /// ([`Database::announce`]).
    async fn announce_user_change(&mut self, _user_id: &str) -> Result<(), QueryError> {
        Ok(())
    }
}

/// Sends `payload` on `channel` when the transaction commits.
pub(super) async fn notify(
    conn: &mut AsyncPgConnection,
    channel: &str,
    payload: &str,
) -> Result<(), QueryError> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(channel)
        .bind::<Text, _>(payload)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = revocations)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct RevocationRow {
    id: i64,
    session_id: String,
    user_id: String,
    revoked_at: NaiveDateTime,
    not_after: NaiveDateTime,
}

impl RevocationRow {
    fn into_revocation(self) -> Result<Revocation, Error> {
        let id = |text: &str| Uuid::parse_str(text).map_err(Error::internal);
        Ok(Revocation {
            cursor: self.id,
            session_id: id(&self.session_id)?,
            user_id: id(&self.user_id)?,
            revoked_at: self.revoked_at.and_utc(),
            not_after: self.not_after.and_utc(),
        })
    }
}

/// Up to `limit` revocations after the cursor `after` whose `not_after` is
/// past `ahead_of`, oldest first.
macro_rules! load_revocations {
    ($conn:expr, $after:expr, $ahead_of:expr, $limit:expr) => {
        revocations::table
            .select(RevocationRow::as_select())
            .filter(revocations::id.gt($after))
            .filter(revocations::not_after.gt($ahead_of.naive_utc()))
            .order(revocations::id.asc())
            .limit($limit)
            .load::<RevocationRow>($conn)
            .await
            .map_err(query_error)
    };
}

fn into_revocations(rows: Vec<RevocationRow>) -> Result<Vec<Revocation>, Error> {
    rows.into_iter()
        .map(RevocationRow::into_revocation)
        .collect()
}

impl Database {
    /// Up to `limit` revocations after the cursor `after` that still matter
    /// at `ahead_of`, in cursor order: every one of them, since ids commit
    /// in increasing order.
    pub(crate) async fn revocations_after(
        &self,
        after: i64,
        ahead_of: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Revocation>, Error> {
        let rows = with_conn!(self, |conn| load_revocations!(conn, after, ahead_of, limit))?;
        into_revocations(rows)
    }

    /// The latest revocation's cursor, 0 when there is none.
    pub(crate) async fn latest_revocation(&self) -> Result<i64, Error> {
        let latest: Option<i64> = with_conn!(self, |conn| revocations::table
            .select(diesel::dsl::max(revocations::id))
            .first(conn)
            .await
            .map_err(query_error))?;
        Ok(latest.unwrap_or_default())
    }

    /// Deletes up to `batch` revocations whose `not_after` is before
    /// `before`; returns how many. Replicas may run it at once.
    pub(crate) async fn delete_expired_revocations(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<usize, Error> {
        with_conn!(self, |conn| {
            let expired: Vec<i64> = revocations::table
                .select(revocations::id)
                .filter(revocations::not_after.lt(before.naive_utc()))
                .order(revocations::id.asc())
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            diesel::delete(revocations::table.filter(revocations::id.eq_any(expired)))
                .execute(conn)
                .await
                .map_err(query_error)
        })
    }

    /// A connection for the revocation feed: on PostgreSQL one of its own,
    /// listening on the feed's channels, through which the feed also reads,
    /// so a broken connection shows as a failed read.
    pub(crate) async fn feed_connection(&self) -> Result<FeedConnection, Error> {
        match &self.pools {
            Pools::Postgres(_, url) => {
                use secrecy::ExposeSecret;
                let mut conn = AsyncPgConnection::establish(url.expose_secret())
                    .await
                    .map_err(Error::unavailable)?;
                for channel in [REVOCATIONS_CHANNEL, USERS_CHANNEL] {
                    diesel::sql_query(format!("LISTEN {channel}"))
                        .execute(&mut conn)
                        .await
                        .map_err(query_error)?;
                }
                Ok(FeedConnection::Postgres(Box::new(conn)))
            }
            Pools::Sqlite(_, neighbours) => {
                Ok(FeedConnection::Sqlite(self.clone(), neighbours.subscribe()))
            }
        }
    }

    /// Tells the other feeds on this SQLite file in this process what
    /// changed, once it has committed; PostgreSQL's transactions notify by
    /// themselves.
    pub(crate) fn announce(&self, wakeup: Wakeup) {
        if let Pools::Sqlite(_, neighbours) = &self.pools {
            // No feed listening is no error.
            let _ = neighbours.send(wakeup);
        }
    }
}

/// What woke the feed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wakeup {
    /// Sessions ended somewhere.
    Revocations,
    /// This user changed (None: some user, as far as the payload tells).
    User(Option<Uuid>),
}

/// The feed's own connection; see [`Database::feed_connection`].
pub(crate) enum FeedConnection {
    Postgres(Box<AsyncPgConnection>),
    Sqlite(Database, tokio::sync::broadcast::Receiver<Wakeup>),
}

impl FeedConnection {
    /// Waits for the next notification. A lost connection is an error.
    pub(crate) async fn next_wakeup(&mut self) -> Result<Wakeup, Error> {
        match self {
            Self::Postgres(conn) => {
                // Receiving is cancel-safe: a stream dropped while waiting
                // loses no notification.
                let notifications = conn.notifications_stream();
                let mut notifications = std::pin::pin!(notifications);
                let notification = notifications
                    .next()
                    .await
                    .ok_or_else(|| Error::unavailable("the feed's connection closed"))?
                    .map_err(query_error)?;
                Ok(if notification.channel == USERS_CHANNEL {
                    Wakeup::User(Uuid::parse_str(&notification.payload).ok())
                } else {
                    Wakeup::Revocations
                })
            }
            Self::Sqlite(_, neighbours) => match neighbours.recv().await {
                Ok(wakeup) => Ok(wakeup),
                // Missed wakeups may have been of any user.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Ok(Wakeup::User(None)),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending().await
                }
            },
        }
    }

    /// Whether changes made by other processes are notified: not on
    /// SQLite, where another process (such as `authd users`) changes users
    /// unheard.
    pub(crate) fn hears_other_processes(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// See [`Database::revocations_after`].
    pub(crate) async fn revocations_after(
        &mut self,
        after: i64,
        ahead_of: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Revocation>, Error> {
        match self {
            Self::Postgres(conn) => {
                let conn = &mut **conn;
                into_revocations(load_revocations!(conn, after, ahead_of, limit)?)
            }
            Self::Sqlite(db, _) => db.revocations_after(after, ahead_of, limit).await,
        }
    }
}
