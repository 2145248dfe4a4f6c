//! Machine identities: service accounts and the API keys they present.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Roles, Username};

/// A service account as the rest of authd sees it. Its name follows the
/// rules of a username; its id is the `sub` and `client_id` of its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    pub(crate) id: Uuid,
    pub(crate) name: Username,
    pub(crate) roles: Roles,
    pub(crate) created_at: DateTime<Utc>,
}

/// An API key about to be stored: only its hash, never the key.
#[derive(Debug, Clone)]
pub(crate) struct NewApiKey {
    pub(crate) id: Uuid,
    pub(crate) service_account_id: Uuid,
    pub(crate) key_hash: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A live API key found by its hash, with the account it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct LiveApiKey {
    pub(crate) key_id: Uuid,
    pub(crate) account: ServiceAccount,
}
