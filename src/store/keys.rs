use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Database, query_error, schema::signing_keys, with_conn};
use crate::Error;

/// A signing key as stored. The private key is PKCS#8 PEM.
#[derive(Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StoredKey {
    pub kid: String,
    pub private_key_pem: String,
    pub generation: i64,
    pub created_at: NaiveDateTime,
    pub activates_at: NaiveDateTime,
}

impl StoredKey {
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at.and_utc()
    }

    pub fn activates_at(&self) -> DateTime<Utc> {
        self.activates_at.and_utc()
    }
}

impl Database {
    /// Every stored key, oldest generation first. The table holds one row per
    /// rotation, so reading it whole stays cheap.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error> {
        with_conn!(self, |conn| signing_keys::table
            .select(StoredKey::as_select())
            .order(signing_keys::generation.asc())
            .load(conn)
            .await
            .map_err(query_error))
    }

    /// Stores a key as `generation`. Returns false when another process
    /// already stored that generation: exactly one key per generation wins.
    pub async fn insert_signing_key(
        &self,
        kid: &str,
        pkcs8_pem: &str,
        generation: i64,
        activates_at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        with_conn!(self, |conn| diesel::insert_into(signing_keys::table)
            .values((
                signing_keys::kid.eq(kid),
                signing_keys::private_key_pem.eq(pkcs8_pem),
                signing_keys::generation.eq(generation),
                signing_keys::created_at.eq(Utc::now().naive_utc()),
                signing_keys::activates_at.eq(activates_at.naive_utc()),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map(|inserted| inserted == 1)
            .map_err(query_error))
    }
}
