//! IssueServiceToken: an API key exchanged for a service account's token.

use chrono::Utc;

use super::Accounts;
use crate::{
    core::api_key::ApiKey,
    core::tokens::{AccessToken, Subject},
    domain::{
        Error,
        audit::{Actor, AuditEvent, EventType, Origin},
    },
};

impl Accounts {
    /// A token for the key's service account, with the account's roles as
    /// they are now. Every way a key can be wrong ends in the same
    /// [`Error::InvalidApiKey`]; a text that cannot be a key costs no query.
    /// The key is marked used, with its audit event, only if it is still
    /// live at that moment, so a revoke that wins the race is honoured.
    pub(crate) async fn issue_service_token(
        &self,
        presented: &str,
        origin: &Origin,
    ) -> Result<AccessToken, Error> {
        let key = ApiKey::parse(presented).ok_or(Error::InvalidApiKey)?;
        let now = Utc::now();
        let live = self
            .db
            .live_api_key(&key.hash(), now)
            .await?
            .ok_or(Error::InvalidApiKey)?;
        let account = live.account.id;
        let event = AuditEvent::new(
            EventType::ServiceTokenIssued,
            Actor::ServiceAccount(account),
            origin,
        )
        .detail("service_account_id", account.to_string())
        .detail("key_id", live.key_id.to_string());
        if !self.db.use_api_key(live.key_id, now, event).await? {
            return Err(Error::InvalidApiKey);
        }
        self.tokens
            .issue(Subject::ServiceAccount(account), &live.account.roles)
    }
}
