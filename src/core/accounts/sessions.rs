//! The sessions a user sees and ends, the limits that end them by
//! themselves, and the housekeeping that deletes them once ended.

use std::time::Duration;

use authd_verify::Claims;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Accounts, SessionSettings};
use crate::{
    domain::Error,
    domain::audit::{Actor, AuditEvent, EventType, Origin},
    domain::session::SessionInfo,
    store::{Liveness, Revoke, SessionLimit},
};

/// How often each replica looks for ended sessions and expired tokens.
const TIDY_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Rows deleted per statement, so no deletion holds locks for long.
const TIDY_BATCH: i64 = 500;

/// `at - limit`, or the epoch when there is no limit (or it reaches back
/// further than time itself).
fn cutoff(at: DateTime<Utc>, limit: Option<Duration>) -> DateTime<Utc> {
    limit
        .and_then(|limit| chrono::Duration::from_std(limit).ok())
        .and_then(|limit| at.checked_sub_signed(limit))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

impl SessionSettings {
    /// The latest a session started at `created_at` and used now can live:
    /// its idle deadline or its maximum age, whichever comes first.
    pub(crate) fn ends(&self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = |from: DateTime<Utc>, limit: Option<Duration>| {
            let limit = chrono::Duration::from_std(limit?).ok()?;
            Some(
                from.checked_add_signed(limit)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )
        };
        let idle = after(Utc::now(), self.idle_timeout);
        let aged = after(created_at, self.max_age);
        idle.into_iter().chain(aged).min()
    }

    /// What a session must satisfy to be live right now.
    pub(crate) fn liveness(&self) -> Liveness {
        let now = Utc::now();
        Liveness {
            used_after: cutoff(now, self.idle_timeout),
            created_after: cutoff(now, self.max_age),
        }
    }
}

impl Accounts {
    /// The caller's live sessions, newest first, and which one is theirs.
    pub(crate) async fn sessions(
        &self,
        claims: &Claims,
    ) -> Result<(Vec<SessionInfo>, Uuid), Error> {
        let user_id = self.live_session(claims).await?;
        let sessions = self
            .db
            .user_sessions(user_id, self.sessions.liveness())
            .await?;
        Ok((sessions, claims.session_id()?))
    }

    /// Ends one of the caller's own sessions. Another user's session is
    /// "not found" exactly like an unknown one, so ids reveal nothing.
    pub(crate) async fn revoke_session(
        &self,
        claims: &Claims,
        session_id: Uuid,
        origin: &Origin,
    ) -> Result<(), Error> {
        let user_id = self.live_session(claims).await?;
        let event = AuditEvent::new(EventType::SessionRevoked, Actor::User(user_id), origin)
            .user(user_id)
            .session(session_id)
            .detail("reason", "revoked");
        let scope = Revoke::Owned {
            user_id,
            session_id,
        };
        match self.db.revoke_sessions(scope, event).await? {
            0 => Err(Error::NotFound("session")),
            _ => {
                self.revocations.settle().await;
                Ok(())
            }
        }
    }

    pub(super) fn session_limit(&self, user_id: Uuid, origin: &Origin) -> Option<SessionLimit> {
        Some(SessionLimit {
            max: self.sessions.max_per_user?,
            live: self.sessions.liveness(),
            ended: AuditEvent::new(EventType::SessionRevoked, Actor::User(user_id), origin)
                .user(user_id)
                .detail("reason", "session_limit"),
        })
    }

    /// Deletes, now and every few minutes, forever, refresh tokens expired
    /// and sessions ended longer than the retention ago, revocations
    /// whose sessions' tokens have all expired, and expired Login
    /// challenges. A session has ended
    /// when it was revoked, went idle, reached its maximum age or its last
    /// refresh token expired (a refresh token lives `refresh_ttl` from the
    /// session's last use). Every replica may run it at once: each deletes
    /// whatever is still there.
    pub(crate) async fn keep_tidy(self) {
        loop {
            self.tidy().await;
            tokio::time::sleep(TIDY_INTERVAL).await;
        }
    }

    async fn tidy(&self) {
        let ended_before = cutoff(Utc::now(), Some(self.sessions.retention));
        let unusable_after = match self.sessions.idle_timeout {
            Some(idle) => idle.min(self.sessions.refresh_ttl),
            None => self.sessions.refresh_ttl,
        };
        let dead = Liveness {
            used_after: cutoff(ended_before, Some(unusable_after)),
            created_after: cutoff(ended_before, self.sessions.max_age),
        };
        if !drain("ended sessions", || {
            self.db.delete_dead_sessions(ended_before, dead, TIDY_BATCH)
        })
        .await
        {
            return;
        }
        if !drain("expired refresh tokens", || {
            self.db
                .delete_expired_refresh_tokens(ended_before, TIDY_BATCH)
        })
        .await
        {
            return;
        }
        if !drain("expired revocations", || {
            self.db.delete_expired_revocations(Utc::now(), TIDY_BATCH)
        })
        .await
        {
            return;
        }
        drain("expired second-factor challenges", || {
            self.db
                .delete_expired_mfa_challenges(Utc::now(), TIDY_BATCH)
        })
        .await;
    }
}

/// Deletes batch after batch until none is left; false after a failure,
/// which it logs, so housekeeping stops until its next round.
async fn drain<F, Fut>(what: &str, mut delete: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, Error>>,
{
    loop {
        match delete().await {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "session housekeeping: deleting {what} failed");
                return false;
            }
        }
    }
}
