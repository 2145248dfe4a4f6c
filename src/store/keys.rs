use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{Database, audit::AppendAudit, query_error, schema::signing_keys, with_conn};
use crate::domain::{Error, audit::AuditEvent};

/// A signing key as stored. The private key is PKCS#8 PEM, or sealed under
/// a key-encryption key (see `kek`); the store does not look inside.
#[derive(Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub(crate) struct StoredKey {
    pub(crate) kid: String,
    pub(crate) private_key: String,
    pub(crate) generation: i64,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) activates_at: NaiveDateTime,
}

impl StoredKey {
    pub(crate) fn created_at(&self) -> DateTime<Utc> {
        self.created_at.and_utc()
    }

    pub(crate) fn activates_at(&self) -> DateTime<Utc> {
        self.activates_at.and_utc()
    }
}

impl Database {
    /// Every stored key, oldest generation first. The table holds one row per
    /// rotation, so reading it whole stays cheap.
    pub(crate) async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error> {
        with_conn!(self, |conn| signing_keys::table
            .select(StoredKey::as_select())
            .order(signing_keys::generation.asc())
            .load(conn)
            .await
            .map_err(query_error))
    }

    /// Stores a key as `generation`, recording `event` with it. Returns
    /// false, recording nothing, when another process already stored that
    /// generation: exactly one key per generation wins.
    pub(crate) async fn insert_signing_key(
        &self,
        kid: &str,
        private_key: &str,
        generation: i64,
        activates_at: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                let inserted = diesel::insert_into(signing_keys::table)
                    .values((
                        signing_keys::kid.eq(kid),
                        signing_keys::private_key.eq(private_key),
                        signing_keys::generation.eq(generation),
                        signing_keys::created_at.eq(Utc::now().naive_utc()),
                        signing_keys::activates_at.eq(activates_at.naive_utc()),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
                    == 1;
                if inserted {
                    conn.append_audit(std::slice::from_ref(&event)).await?;
                }
                Ok(inserted)
            })
            .await
            .map_err(query_error))
    }

    /// Replaces every stored private key with `rewrap` of it, in one
    /// transaction: a failure or a crash leaves every row as it was. Returns
    /// how many rows were rewritten.
    pub(crate) async fn rewrap_signing_keys(
        &self,
        rewrap: impl Fn(&StoredKey) -> Result<String, Error> + Sync,
    ) -> Result<usize, Error> {
        let rewrap = &rewrap;
        let outcome = with_conn!(self, |conn| conn
            .transaction::<_, RewrapFailure, _>(async |conn| {
                let stored = signing_keys::table
                    .select(StoredKey::as_select())
                    .order(signing_keys::generation.asc())
                    .load(conn)
                    .await?;
                for key in &stored {
                    let private_key = rewrap(key).map_err(RewrapFailure::Rewrap)?;
                    diesel::update(signing_keys::table.find(&key.kid))
                        .set(signing_keys::private_key.eq(private_key))
                        .execute(conn)
                        .await?;
                }
                Ok(stored.len())
            })
            .await);
        outcome.map_err(Error::from)
    }
}

/// Why a rewrap transaction rolled back.
pub(super) enum RewrapFailure {
    Query(QueryError),
    Rewrap(Error),
}

impl From<RewrapFailure> for Error {
    fn from(failure: RewrapFailure) -> Self {
        match failure {
            RewrapFailure::Query(error) => query_error(error),
            RewrapFailure::Rewrap(error) => error,
        }
    }
}

impl From<QueryError> for RewrapFailure {
    fn from(error: QueryError) -> Self {
        Self::Query(error)
    }
}
