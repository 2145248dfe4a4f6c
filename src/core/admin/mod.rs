//! What AdminService's RPCs mean: managing users and service accounts as an
//! operator. Every change is recorded in the audit trail by the same
//! transaction that makes it.

pub(crate) mod service_accounts;
mod users;

pub(crate) use users::{NewAccount, UserKey, UserUpdate, change_role};

use authd_verify::Claims;

use crate::{
    core::accounts::SessionSettings,
    core::hasher::Hasher,
    core::passwords::PasswordPolicy,
    core::revocations::Revocations,
    domain::{
        Error,
        audit::{Actor, Origin},
    },
    store::Database,
};

/// Who changed something and from where: what every event records.
#[derive(Clone, Copy)]
pub(crate) struct By<'a> {
    pub(crate) actor: Actor,
    pub(crate) origin: &'a Origin,
}

#[derive(Clone)]
pub(crate) struct Admin {
    db: Database,
    hasher: Hasher,
    sessions: SessionSettings,
    revocations: Revocations,
    passwords: PasswordPolicy,
}

impl Admin {
    pub(crate) fn new(
        db: Database,
        hasher: Hasher,
        sessions: SessionSettings,
        revocations: Revocations,
        passwords: PasswordPolicy,
    ) -> Self {
        Self {
            db,
            hasher,
            sessions,
            revocations,
            passwords,
        }
    }

    /// Who a verified token stands for, if that still holds: a user's token
    /// needs its session live and its user enabled, a service account's
    /// needs the account to exist. Anything else is an invalid token, so a
    /// disabled or deleted admin loses access at once, on every replica.
    pub(crate) async fn actor(&self, claims: &Claims) -> Result<Actor, Error> {
        let subject = claims.user_id()?;
        if claims.is_service() {
            return if self.db.service_account_exists(subject).await? {
                Ok(Actor::ServiceAccount(subject))
            } else {
                Err(Error::InvalidToken)
            };
        }
        let live = self.sessions.liveness();
        match self
            .db
            .session_user(claims.session_id()?, subject, live)
            .await?
        {
            Some(_) => Ok(Actor::User(subject)),
            None => Err(Error::InvalidToken),
        }
    }
}
