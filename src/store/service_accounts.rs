//! Service accounts and their API keys.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{Database, query_error, schema::service_accounts, with_conn};
use crate::domain::Error;

impl Database {
    /// Whether the service account exists: a service token is honoured at
    /// authd only while it does.
    pub(crate) async fn service_account_exists(&self, id: Uuid) -> Result<bool, Error> {
        let count: i64 = with_conn!(self, |conn| service_accounts::table
            .find(id.to_string())
            .count()
            .get_result(conn)
            .await
            .map_err(query_error))?;
        Ok(count == 1)
    }
}
