//! Service accounts and their API keys.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Database,
    audit::AppendAudit,
    query_error, run_detached,
    schema::{api_keys, service_accounts},
    with_conn,
};
use crate::domain::{
    Error, Roles, Username,
    audit::AuditEvent,
    service_account::{LiveApiKey, NewApiKey, ServiceAccount},
};

const NAME_TAKEN: &str = "a service account with this name already exists";

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = service_accounts)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct ServiceAccountRow {
    id: String,
    name: String,
    roles: String,
    created_at: NaiveDateTime,
}

impl From<&ServiceAccount> for ServiceAccountRow {
    fn from(account: &ServiceAccount) -> Self {
        Self {
            id: account.id.to_string(),
            name: account.name.as_str().to_owned(),
            roles: account.roles.to_stored(),
            created_at: account.created_at.naive_utc(),
        }
    }
}

impl ServiceAccountRow {
    fn into_account(self) -> Result<ServiceAccount, Error> {
        Ok(ServiceAccount {
            id: uuid(&self.id)?,
            name: Username::from_stored(self.name),
            roles: Roles::from_stored(&self.roles),
            created_at: self.created_at.and_utc(),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct ApiKeyRow {
    id: String,
    service_account_id: String,
    key_hash: String,
    created_at: NaiveDateTime,
    expires_at: Option<NaiveDateTime>,
}

impl From<&NewApiKey> for ApiKeyRow {
    fn from(key: &NewApiKey) -> Self {
        Self {
            id: key.id.to_string(),
            service_account_id: key.service_account_id.to_string(),
            key_hash: key.key_hash.clone(),
            created_at: key.created_at.naive_utc(),
            expires_at: key.expires_at.map(|at| at.naive_utc()),
        }
    }
}

fn uuid(text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(Error::internal)
}

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

    /// Stores a service account with its first key, or neither. The unique
    /// index on the name turns a duplicate, concurrent or not, into
    /// [`Error::AlreadyExists`].
    pub(crate) async fn insert_service_account(
        &self,
        account: ServiceAccount,
        key: NewApiKey,
        events: Vec<AuditEvent>,
    ) -> Result<(), Error> {
        let db = self.clone();
        run_detached(async move {
            let (account, key) = (ServiceAccountRow::from(&account), ApiKeyRow::from(&key));
            let inserted = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    diesel::insert_into(service_accounts::table)
                        .values(&account)
                        .execute(conn)
                        .await?;
                    diesel::insert_into(api_keys::table)
                        .values(&key)
                        .execute(conn)
                        .await?;
                    conn.append_audit(&events).await
                })
                .await);
            match inserted {
                Ok(()) => Ok(()),
                Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    Err(Error::AlreadyExists(NAME_TAKEN))
                }
                Err(error) => Err(query_error(error)),
            }
        })
        .await
    }

    /// Every service account, oldest first.
    pub(crate) async fn list_service_accounts(&self) -> Result<Vec<ServiceAccount>, Error> {
        let rows: Vec<ServiceAccountRow> = with_conn!(self, |conn| service_accounts::table
            .order((service_accounts::created_at, service_accounts::id))
            .select(ServiceAccountRow::as_select())
            .load(conn)
            .await
            .map_err(query_error))?;
        rows.into_iter()
            .map(ServiceAccountRow::into_account)
            .collect()
    }

    /// Deletes a service account; its keys go with it (ON DELETE CASCADE).
    /// `false` if there was no such account, and then nothing is recorded.
    pub(crate) async fn delete_service_account(
        &self,
        id: Uuid,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let id = id.to_string();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let deleted = diesel::delete(service_accounts::table.find(&id))
                        .execute(conn)
                        .await?;
                    if deleted == 0 {
                        return Ok(false);
                    }
                    conn.append_audit(&[event]).await.map(|()| true)
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// Adds a key to its service account; `false` if the account does not
    /// exist. The no-op update locks the account's row on PostgreSQL, so a
    /// concurrent delete either waits for the key or leaves nothing to add
    /// it to.
    pub(crate) async fn insert_api_key(
        &self,
        key: NewApiKey,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let key = ApiKeyRow::from(&key);
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let account = service_accounts::table.find(&key.service_account_id);
                    let exists = diesel::update(account)
                        .set(service_accounts::id.eq(service_accounts::id))
                        .execute(conn)
                        .await?
                        == 1;
                    if !exists {
                        return Ok(false);
                    }
                    diesel::insert_into(api_keys::table)
                        .values(&key)
                        .execute(conn)
                        .await?;
                    conn.append_audit(&[event]).await.map(|()| true)
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// The service account a key belongs to, revoked or not; `None` for an
    /// unknown key. A key never changes account.
    pub(crate) async fn api_key_account(&self, key_id: Uuid) -> Result<Option<Uuid>, Error> {
        let account: Option<String> = with_conn!(self, |conn| api_keys::table
            .find(key_id.to_string())
            .select(api_keys::service_account_id)
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        account.as_deref().map(uuid).transpose()
    }

    /// Revokes a key that is not revoked yet, recording `event`; revoking it
    /// again changes and records nothing.
    pub(crate) async fn revoke_api_key(
        &self,
        key_id: Uuid,
        event: AuditEvent,
    ) -> Result<(), Error> {
        let db = self.clone();
        run_detached(async move {
            let (key_id, now) = (key_id.to_string(), Utc::now().naive_utc());
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let revoked = diesel::update(
                        api_keys::table
                            .find(&key_id)
                            .filter(api_keys::revoked_at.is_null()),
                    )
                    .set(api_keys::revoked_at.eq(now))
                    .execute(conn)
                    .await?;
                    if revoked == 0 {
                        return Ok(());
                    }
                    conn.append_audit(&[event]).await
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// The key with this hash and its account, if the key is neither
    /// revoked nor expired at `now`.
    pub(crate) async fn live_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LiveApiKey>, Error> {
        let now = now.naive_utc();
        let found: Option<(String, ServiceAccountRow)> = with_conn!(self, |conn| api_keys::table
            .inner_join(service_accounts::table)
            .filter(api_keys::key_hash.eq(key_hash))
            .filter(api_keys::revoked_at.is_null())
            .filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(now))
            )
            .select((api_keys::id, ServiceAccountRow::as_select()))
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        found
            .map(|(key_id, account)| {
                Ok(LiveApiKey {
                    key_id: uuid(&key_id)?,
                    account: account.into_account()?,
                })
            })
            .transpose()
    }

    /// Records that a key was used at `now`, with `event`, if it is still
    /// live then: `false` if it was revoked, expired or deleted since it
    /// was looked up.
    pub(crate) async fn use_api_key(
        &self,
        key_id: Uuid,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let (key_id, now) = (key_id.to_string(), now.naive_utc());
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let used = diesel::update(
                        api_keys::table
                            .find(&key_id)
                            .filter(api_keys::revoked_at.is_null())
                            .filter(
                                api_keys::expires_at
                                    .is_null()
                                    .or(api_keys::expires_at.gt(now)),
                            ),
                    )
                    .set(api_keys::last_used_at.eq(now))
                    .execute(conn)
                    .await?;
                    if used == 0 {
                        return Ok(false);
                    }
                    conn.append_audit(&[event]).await.map(|()| true)
                })
                .await
                .map_err(query_error))
        })
        .await
    }
}
