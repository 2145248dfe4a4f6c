use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Database, query_error, schema::signing_keys, with_conn};
use crate::Error;

impl Database {
    /// The PKCS#8 PEM of the key this deployment signs with, if one exists.
    pub async fn active_signing_key(&self) -> Result<Option<String>, Error> {
        with_conn!(self, |conn| signing_keys::table
            .filter(signing_keys::active.eq(true))
            .select(signing_keys::private_key_pem)
            .first::<String>(conn)
            .await
            .optional()
            .map_err(query_error))
    }

    /// Offers a key as the active one. When another replica got there first
    /// the partial unique index drops this insert, and the caller reads back
    /// the winner with [`Database::active_signing_key`].
    pub async fn offer_signing_key(&self, kid: &str, pkcs8_pem: &str) -> Result<(), Error> {
        with_conn!(self, |conn| diesel::insert_into(signing_keys::table)
            .values((
                signing_keys::kid.eq(kid),
                signing_keys::private_key_pem.eq(pkcs8_pem),
                signing_keys::active.eq(true),
                signing_keys::created_at.eq(Utc::now().naive_utc()),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map(drop)
            .map_err(query_error))
    }
}
