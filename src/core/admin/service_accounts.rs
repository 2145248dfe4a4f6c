//! Managing service accounts and their API keys as an operator.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::{Admin, By};
use crate::{
    core::api_key::ApiKey,
    domain::{
        Error, Roles, Username,
        audit::{AuditEvent, EventType},
        service_account::{NewApiKey, ServiceAccount},
    },
    store::Database,
};

/// A new service account with its first key, which exists only here: the
/// database keeps its hash.
pub(crate) struct CreatedServiceAccount {
    pub(crate) account: ServiceAccount,
    pub(crate) key_id: Uuid,
    pub(crate) api_key: ApiKey,
}

/// A new API key, likewise shown once.
pub(crate) struct CreatedApiKey {
    pub(crate) key_id: Uuid,
    pub(crate) api_key: ApiKey,
}

impl By<'_> {
    /// An event about service account `id`, which goes in the details:
    /// `user_id` is for users only.
    fn event(self, kind: EventType, id: Uuid) -> AuditEvent {
        AuditEvent::new(kind, self.actor, self.origin).detail("service_account_id", id.to_string())
    }
}

/// Now, as precisely as PostgreSQL keeps it, so that what a caller is
/// handed is what a later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn new_key(
    service_account_id: Uuid,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, NewApiKey), Error> {
    let api_key = ApiKey::generate()?;
    let record = NewApiKey {
        id: Uuid::now_v7(),
        service_account_id,
        key_hash: api_key.hash(),
        created_at: now(),
        expires_at,
    };
    Ok((api_key, record))
}

/// Creates a service account and its first key in one transaction, with
/// their audit events. Also what `authd service-accounts create` runs, so
/// it needs only the database.
pub(crate) async fn create_service_account(
    db: &Database,
    name: Username,
    roles: Roles,
    by: By<'_>,
) -> Result<CreatedServiceAccount, Error> {
    let account = ServiceAccount {
        id: Uuid::now_v7(),
        name,
        roles,
        created_at: now(),
    };
    let (api_key, key) = new_key(account.id, None)?;
    let key_id = key.id;
    let events = vec![
        by.event(EventType::ServiceAccountCreated, account.id),
        by.event(EventType::ApiKeyCreated, account.id)
            .detail("key_id", key_id.to_string()),
    ];
    db.insert_service_account(account.clone(), key, events)
        .await?;
    Ok(CreatedServiceAccount {
        account,
        key_id,
        api_key,
    })
}

impl Admin {
    pub(crate) async fn create_service_account(
        &self,
        name: Username,
        roles: Roles,
        by: By<'_>,
    ) -> Result<CreatedServiceAccount, Error> {
        create_service_account(&self.db, name, roles, by).await
    }

    pub(crate) async fn list_service_accounts(&self) -> Result<Vec<ServiceAccount>, Error> {
        self.db.list_service_accounts().await
    }

    /// Its tokens stop working at authd at once: [`Admin::actor`] and
    /// introspection look the account up.
    pub(crate) async fn delete_service_account(&self, id: Uuid, by: By<'_>) -> Result<(), Error> {
        let event = by.event(EventType::ServiceAccountDeleted, id);
        if self.db.delete_service_account(id, event).await? {
            Ok(())
        } else {
            Err(Error::NotFound("service account"))
        }
    }

    /// `expires_at`, when given, has been checked to be in the future.
    pub(crate) async fn create_api_key(
        &self,
        service_account_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        by: By<'_>,
    ) -> Result<CreatedApiKey, Error> {
        let (api_key, key) = new_key(service_account_id, expires_at)?;
        let key_id = key.id;
        let event = by
            .event(EventType::ApiKeyCreated, service_account_id)
            .detail("key_id", key_id.to_string());
        if self.db.insert_api_key(key, event).await? {
            Ok(CreatedApiKey { key_id, api_key })
        } else {
            Err(Error::NotFound("service account"))
        }
    }

    /// Revoking a revoked key again succeeds and records nothing more.
    pub(crate) async fn revoke_api_key(&self, key_id: Uuid, by: By<'_>) -> Result<(), Error> {
        let account = self
            .db
            .api_key_account(key_id)
            .await?
            .ok_or(Error::NotFound("API key"))?;
        let event = by
            .event(EventType::ApiKeyRevoked, account)
            .detail("key_id", key_id.to_string());
        self.db.revoke_api_key(key_id, event).await
    }
}
