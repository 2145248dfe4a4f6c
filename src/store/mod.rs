//! Persistence. `DATABASE_URL` picks PostgreSQL or SQLite at run time;
//! every query is written once and compiled for both by [`with_conn!`].

mod admin_users;
mod audit;
mod keys;
mod mail;
mod revocations;
mod schema;
mod service_accounts;
mod sessions;
mod totp;
mod users;

use std::{path::PathBuf, time::Duration};

use deadpool::managed::{Hook, HookError, PoolBuilder};
use diesel::{
    Connection, ConnectionError, ConnectionResult, SqliteConnection,
    connection::SimpleConnection,
    result::{DatabaseErrorKind, Error as QueryError},
    sql_types::BigInt,
};
use diesel_async::{
    AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Pool, PoolError},
    },
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub(crate) use admin_users::UserChange;
pub(crate) use keys::StoredKey;
pub(crate) use mail::{AfterSpend, ClaimedMail, NewMail, NewMailToken, OutboxListener};
pub(crate) use revocations::{FeedConnection, Wakeup};
pub(crate) use sessions::{Liveness, NewSession, RefreshRecord, Revoke, Rotation, SessionLimit};
pub(crate) use totp::{AfterFactor, Challenge, Factor};
pub(crate) use users::{NewUserRecord, StoredPassword};

use secrecy::SecretString;

use crate::domain::Error;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Any constant works as long as every replica uses the same one.
const MIGRATION_LOCK_ID: i64 = 0x6175_7468_6400;

/// A PostgreSQL connection not lent for this long is pinged before it is
/// lent again: one idle that long may have been cut (a restarted server, a
/// NAT or firewall that forgot it) without its socket noticing yet.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

type SqliteAsync = SyncConnectionWrapper<SqliteConnection>;

/// Where the data lives. The PostgreSQL URL may hold a password, so it is a
/// secret and never printed.
#[derive(Debug, Clone)]
pub(crate) enum DatabaseUrl {
    Postgres(SecretString),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses `DATABASE_URL`. Errors never repeat the value, which may carry
    /// a password.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(SecretString::from(url.to_owned())));
        }
        let Some(path) = url.strip_prefix("sqlite://") else {
            return Err(
                "invalid DATABASE_URL: must start with postgres://, postgresql:// or sqlite://"
                    .into(),
            );
        };
        if path.is_empty() || path.contains(":memory:") || path.starts_with("file:") {
            return Err(
                "invalid DATABASE_URL: sqlite:// must be followed by a file path, \
                        e.g. sqlite://authd.db or sqlite:///var/lib/authd/authd.db"
                    .into(),
            );
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// A pool of connections to whichever backend is configured, and how long
/// an ended session's access tokens may still be presented (see
/// [`revocations`]).
#[derive(Clone)]
pub(crate) struct Database {
    pools: Pools,
    revocation_window: Duration,
    /// Wakes this process's mail sender when a transaction that queued
    /// mail commits.
    outbox_wakeup: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
enum Pools {
    /// The URL too: the revocation feed opens a connection of its own.
    Postgres(Pool<AsyncPgConnection>, SecretString),
    /// With the file's in-process wakeups (see [`revocations`]).
    Sqlite(Pool<SqliteAsync>, revocations::Neighbours),
}

/// How many connections to keep; how long a call may wait for one, or for
/// one statement, before it is answered UNAVAILABLE; and how long startup
/// keeps trying to reach the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) size: usize,
    pub(crate) timeout: Duration,
    pub(crate) startup_timeout: Duration,
}

/// Runs the body with `$conn` bound to a pooled connection of the configured
/// backend. The body is written once and type-checked against each backend,
/// which is how one query serves PostgreSQL and SQLite.
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        match &$db.pools {
            $crate::store::Pools::Postgres(pool, _) => {
                let mut pooled = pool.get().await.map_err($crate::store::pool_error)?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::store::Pools::Sqlite(pool, _) => {
                let mut pooled = pool.get().await.map_err($crate::store::pool_error)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}
use with_conn;

impl Database {
    /// Builds the pool and proves the database is reachable, retrying with
    /// backoff for up to `startup_timeout` (a database that starts alongside
    /// authd may need a moment), so a wrong URL fails at startup rather than
    /// on the first call.
    pub(crate) async fn connect(
        url: &DatabaseUrl,
        settings: PoolSettings,
        revocation_window: Duration,
    ) -> Result<Self, Error> {
        let pools = match url {
            DatabaseUrl::Postgres(url) => {
                use secrecy::ExposeSecret;
                let mut config = ManagerConfig::default();
                let statement_timeout = settings.timeout;
                config.custom_setup = Box::new(move |url| {
                    Box::pin(establish_postgres(url.to_owned(), statement_timeout))
                });
                // Lending a connection costs no round trip: a closed socket
                // or a broken transaction is seen without one, a connection
                // idle for long is pinged first, and any other failure
                // surfaces as the call's own query error.
                config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url.expose_secret(),
                    config,
                );
                let timeout = settings.timeout;
                let pool = pool_builder(manager, settings)
                    .pre_recycle(Hook::async_fn(move |conn, metrics| {
                        Box::pin(async move {
                            if metrics.last_used() < IDLE_BEFORE_PING {
                                return Ok(());
                            }
                            let ping = diesel::sql_query("SELECT 1").execute(conn);
                            match tokio::time::timeout(timeout, ping).await {
                                Ok(Ok(_)) => Ok(()),
                                _ => Err(HookError::Message("an idle connection is gone".into())),
                            }
                        })
                    }))
                    .build()
                    .map_err(Error::internal)?;
                Pools::Postgres(pool, url.clone())
            }
            DatabaseUrl::Sqlite(path) => {
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(|path| Box::pin(establish_sqlite(path.to_owned())));
                // A file cannot drop a connection the way a server can, so
                // lending one checks only its transaction state, without the
                // blocking-thread hop a test query would take.
                config.recycling_method = RecyclingMethod::Fast;
                let path = path.to_str().ok_or_else(|| {
                    Error::internal("the SQLite path in DATABASE_URL is not valid UTF-8")
                })?;
                let manager = AsyncDieselConnectionManager::new_with_config(path, config);
                Pools::Sqlite(
                    pool_builder(manager, settings)
                        .build()
                        .map_err(Error::internal)?,
                    revocations::neighbours(std::path::Path::new(path)),
                )
            }
        };
        let database = Self {
            pools,
            revocation_window,
            outbox_wakeup: std::sync::Arc::default(),
        };
        let give_up = tokio::time::Instant::now() + settings.startup_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            match database.ping().await {
                Ok(()) => return Ok(database),
                Err(error) if tokio::time::Instant::now() + backoff < give_up => {
                    tracing::warn!(%error, retry_in = ?backoff, "database not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Applies pending migrations. On PostgreSQL an advisory lock makes
    /// replicas that start together take turns instead of racing.
    pub(crate) async fn migrate(&self) -> Result<(), Error> {
        match &self.pools {
            Pools::Postgres(pool, _) => {
                let mut conn = pool.get().await.map_err(pool_error)?;
                diesel::sql_query("SELECT pg_advisory_lock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_ID)
                    .execute(&mut *conn)
                    .await
                    .map_err(query_error)?;
                let mut harness = AsyncMigrationHarness::new(conn);
                let outcome = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(drop)
                    .map_err(|e| Error::internal(e.to_string()));
                let mut conn = harness.into_inner();
                diesel::sql_query("SELECT pg_advisory_unlock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_ID)
                    .execute(&mut *conn)
                    .await
                    .map_err(query_error)?;
                outcome
            }
            Pools::Sqlite(pool, _) => {
                let mut conn = pool.get().await.map_err(pool_error)?;
                // SQLite has no advisory locks: one IMMEDIATE transaction
                // holds the write lock from reading the applied versions to
                // the last migration, so a second process waits, then finds
                // nothing pending.
                conn.spawn_blocking(|sqlite| {
                    sqlite.immediate_transaction(|sqlite| {
                        sqlite
                            .run_pending_migrations(SQLITE_MIGRATIONS)
                            .map(drop)
                            .map_err(QueryError::QueryBuilderError)
                    })
                })
                .await
                .map_err(query_error)
            }
        }
    }

    /// One round trip to the database: the health check.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        with_conn!(self, |conn| diesel::sql_query("SELECT 1")
            .execute(conn)
            .await
            .map(drop)
            .map_err(query_error))
    }

    /// Drops every connection waiting in the pool. Once the database was
    /// unreachable, those idle through the outage are cut without knowing
    /// it, and each would fail the next call it is lent to after the
    /// database is back.
    pub(crate) fn forget_idle_connections(&self) {
        match &self.pools {
            Pools::Postgres(pool, _) => drop(pool.retain(|_, _| false)),
            Pools::Sqlite(pool, _) => drop(pool.retain(|_, _| false)),
        }
    }

    /// How many connections the pool holds, lends and may open right now.
    pub(crate) fn pool_status(&self) -> deadpool::Status {
        match &self.pools {
            Pools::Postgres(pool, _) => pool.status(),
            Pools::Sqlite(pool, _) => pool.status(),
        }
    }
}

fn pool_builder<M: deadpool::managed::Manager>(
    manager: M,
    settings: PoolSettings,
) -> PoolBuilder<M> {
    deadpool::managed::Pool::builder(manager)
        .max_size(settings.size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout))
}

/// A statement that runs (or waits on a lock) longer than a call may wait
/// is cancelled, so a stuck query becomes UNAVAILABLE instead of a hang
/// that also holds a pooled connection.
async fn establish_postgres(
    url: String,
    statement_timeout: Duration,
) -> ConnectionResult<AsyncPgConnection> {
    use diesel_async::AsyncConnection;
    let mut conn = AsyncPgConnection::establish(&url).await?;
    diesel::sql_query(format!(
        "SET statement_timeout = {}",
        statement_timeout.as_millis()
    ))
    .execute(&mut conn)
    .await
    .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// SQLite connections open in WAL mode, so readers never block the writer,
/// and wait for a busy database instead of failing at once.
async fn establish_sqlite(path: String) -> ConnectionResult<SqliteAsync> {
    tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&path)?;
        let setup = |conn: &mut SqliteConnection, sql: &str| {
            conn.batch_execute(sql)
                .map_err(ConnectionError::CouldntSetupConfiguration)
        };
        // busy_timeout first: switching to WAL itself may wait for a lock.
        setup(&mut conn, "PRAGMA busy_timeout = 5000;")?;
        // Two connections switching a new file to WAL at once deadlock, and
        // SQLite then fails one at once instead of waiting. WAL mode is kept
        // in the file, so a retry finds it set.
        let mut attempts = 0;
        loop {
            match conn.batch_execute("PRAGMA journal_mode = WAL;") {
                Ok(()) => break,
                Err(e) if attempts < 50 && e.to_string().contains("database is locked") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(ConnectionError::CouldntSetupConfiguration(e)),
            }
        }
        setup(
            &mut conn,
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;",
        )?;
        Ok(SyncConnectionWrapper::new(conn))
    })
    .await
    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?
}

/// Runs a transaction to its end even if the call that started it is
/// cancelled. Cut off between BEGIN and COMMIT, it would leave its pooled
/// connection holding SQLite's write lock (PostgreSQL's row locks) until the
/// pool recycles it, and every other writer would wait or fail meanwhile.
async fn run_detached<T, F>(transaction: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(transaction).await.map_err(Error::internal)?
}

/// Not getting a connection at all (database down, pool exhausted past its
/// timeout) is the client-retryable kind of failure.
pub(crate) fn pool_error(error: PoolError) -> Error {
    Error::unavailable(error)
}

pub(crate) fn query_error(error: QueryError) -> Error {
    match &error {
        // A connection the server closed under a query, or before it could
        // be sent ("connection closed"): the database went away.
        QueryError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => Error::unavailable(error),
        // SQLite reports a write lock it waited on past busy_timeout this
        // way, PostgreSQL a statement cancelled by statement_timeout, and a
        // server shutting down (SQLSTATE 57P01 to 57P03) the connections it
        // ends or refuses; diesel hands over only the message.
        QueryError::DatabaseError(_, info)
            if [
                "database is locked",
                "statement timeout",
                "terminating connection",
                "the database system is",
            ]
            .iter()
            .any(|transient| info.message().contains(transient)) =>
        {
            Error::unavailable(error)
        }
        _ => Error::internal(error),
    }
}
