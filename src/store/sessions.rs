use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::{prelude::*, result::Error as QueryError};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Database,
    audit::AppendAudit,
    mail::retire_tokens,
    query_error,
    revocations::EndSessions,
    run_detached,
    schema::{refresh_tokens, sessions, users},
    users::{StoredPassword, UserRow},
    with_conn,
};
use crate::{
    domain::Error,
    domain::PasswordHash,
    domain::Roles,
    domain::User,
    domain::audit::AuditEvent,
    domain::mail::TokenPurpose,
    domain::mfa::Amr,
    domain::session::{Device, DeviceLabel, SessionInfo, UserAgent},
};

/// A live session was last used after `used_after` and started after
/// `created_after`: the idle timeout and the maximum age as instants. With
/// no limit the instant is the epoch, which every session is after.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Liveness {
    pub(crate) used_after: DateTime<Utc>,
    pub(crate) created_after: DateTime<Utc>,
}

impl Liveness {
    fn allows(&self, last_used_at: NaiveDateTime, created_at: NaiveDateTime) -> bool {
        last_used_at > self.used_after.naive_utc() && created_at > self.created_after.naive_utc()
    }
}

/// How many live sessions a user may keep; a Login beyond it ends the least
/// recently used ones, each recorded as `ended` with its session id.
pub(crate) struct SessionLimit {
    pub(crate) max: usize,
    pub(crate) live: Liveness,
    pub(crate) ended: AuditEvent,
}

/// A session row as ListSessions reads it.
type SessionRow = (
    String,
    NaiveDateTime,
    NaiveDateTime,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Evaluates to the ids of a user's sessions not revoked yet, for
/// [`EndSessions`] to end.
macro_rules! live_sessions {
    ($conn:expr, $user_id:expr) => {
        $crate::store::schema::sessions::table
            .filter($crate::store::schema::sessions::user_id.eq($user_id))
            .filter($crate::store::schema::sessions::revoked_at.is_null())
            .select($crate::store::schema::sessions::id)
            .load::<String>(&mut *$conn)
            .await?
    };
}
pub(super) use live_sessions;

/// A refresh token to store: its hash and when it stops working.
pub(crate) struct RefreshRecord {
    pub(crate) token_hash: String,
    pub(crate) expires_at: DateTime<Utc>,
}

/// The session a refresh continues, and what its next access token says
/// of the user.
pub(crate) struct Continued {
    pub(crate) session_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) roles: Roles,
    pub(crate) session_created_at: DateTime<Utc>,
    pub(crate) amr: Amr,
    pub(crate) email_verified: bool,
}

/// What presenting a refresh token did.
pub(crate) enum Rotation {
    /// The token was live and is now spent; its successor is stored.
    Rotated(Continued),
    /// The token was spent moments ago (within the grace interval) and its
    /// successor is still unspent: the caller gets that successor again.
    Replayed {
        session: Continued,
        successor_sealed: String,
    },
    /// The token was spent earlier: someone is replaying it, so its session
    /// has just been revoked.
    Reused { session_id: Uuid },
    /// Unknown, expired, its session is revoked or its user disabled.
    Rejected,
}

/// The session as the transaction read it: session id, user id, the
/// user's roles, the session's start, its amr and whether the user's email
/// is verified.
type Stored = (String, String, String, NaiveDateTime, String, bool);

/// The outcome inside the transaction, before ids are parsed.
enum Outcome {
    Rotated(Stored),
    Replayed(Stored, String),
    Reused(String),
    Rejected,
}

/// What the transaction reads of a presented token: its session, the
/// session's owner and revocation, the owner's roles, whether they are
/// disabled and whether their email is verified, and the token's own
/// rotation.
type Presented = (
    (
        String,
        String,
        Option<NaiveDateTime>,
        NaiveDateTime,
        NaiveDateTime,
        String,
    ),
    (String, Option<NaiveDateTime>, bool),
    (Option<NaiveDateTime>, Option<String>, Option<String>),
);

impl Outcome {
    /// Parses the ids the transaction read.
    fn into_rotation(self) -> Result<Rotation, Error> {
        let continued = |(session_id, user_id, roles, created_at, amr, email_verified): Stored| {
            Ok::<_, Error>(Continued {
                session_id: uuid(&session_id)?,
                user_id: uuid(&user_id)?,
                roles: Roles::from_stored(&roles),
                session_created_at: created_at.and_utc(),
                amr: Amr::from_stored(&amr),
                email_verified,
            })
        };
        Ok(match self {
            Self::Rotated(stored) => Rotation::Rotated(continued(stored)?),
            Self::Replayed(stored, successor_sealed) => Rotation::Replayed {
                session: continued(stored)?,
                successor_sealed,
            },
            Self::Reused(session_id) => Rotation::Reused {
                session_id: uuid(&session_id)?,
            },
            Self::Rejected => Rotation::Rejected,
        })
    }
}

fn uuid(text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(Error::internal)
}

impl Database {
    /// Starts a session with its first refresh token, atomically, if the
    /// user's password is still at `password_version`, the one the caller
    /// verified; `None` if it has changed since.
    ///
    /// The no-op update takes the user's row lock: on PostgreSQL a password
    /// change in progress makes it wait and then re-check the version, and a
    /// change that starts later waits for this session to commit and then
    /// revokes it. On SQLite the write lock serializes the two.
    pub(crate) async fn create_session(&self, session: NewSession) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move { db.open_session(&session).await }).await
    }

    async fn open_session(&self, session: &NewSession) -> Result<bool, Error> {
        let NewSession {
            id,
            user_id,
            password_version,
            refresh,
            device,
            amr,
            limit,
            events,
        } = session;
        let session_id = id.to_string();
        let ending = self.ending_now();
        let now = Utc::now().naive_utc();
        let (session_id_ref, user_id) = (&session_id, user_id.to_string());
        let client_address = device.client_address.map(|address| address.to_string());
        let user_agent = device.user_agent.as_ref().map(UserAgent::as_str);
        let label = device.label.as_ref().map(DeviceLabel::as_str);
        let created = with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                let current = diesel::update(
                    users::table
                        .find(&user_id)
                        .filter(users::password_version.eq(*password_version))
                        .filter(users::disabled_at.is_null()),
                )
                .set(users::password_version.eq(users::password_version))
                .execute(conn)
                .await?
                    == 1;
                if !current {
                    return Ok(false);
                }
                diesel::insert_into(sessions::table)
                    .values((
                        sessions::id.eq(session_id_ref),
                        sessions::user_id.eq(&user_id),
                        sessions::created_at.eq(now),
                        sessions::last_used_at.eq(now),
                        sessions::client_address.eq(&client_address),
                        sessions::user_agent.eq(user_agent),
                        sessions::device_label.eq(label),
                        sessions::amr.eq(amr.as_stored()),
                    ))
                    .execute(conn)
                    .await?;
                diesel::insert_into(refresh_tokens::table)
                    .values((
                        refresh_tokens::token_hash.eq(&refresh.token_hash),
                        refresh_tokens::session_id.eq(session_id_ref),
                        refresh_tokens::created_at.eq(now),
                        refresh_tokens::expires_at.eq(refresh.expires_at.naive_utc()),
                    ))
                    .execute(conn)
                    .await?;
                let mut events = events.clone();
                if let Some(limit) = limit {
                    let beyond: Vec<String> = sessions::table
                        .filter(sessions::user_id.eq(&user_id))
                        .filter(sessions::revoked_at.is_null())
                        .filter(sessions::last_used_at.gt(limit.live.used_after.naive_utc()))
                        .filter(sessions::created_at.gt(limit.live.created_after.naive_utc()))
                        .order((
                            sessions::last_used_at.desc(),
                            sessions::created_at.desc(),
                            sessions::id.desc(),
                        ))
                        .select(sessions::id)
                        .offset(i64::try_from(limit.max).unwrap_or(i64::MAX))
                        .load(conn)
                        .await?;
                    let beyond = conn.end_sessions(&beyond, ending).await?;
                    events.extend(beyond.iter().map(|id| {
                        let mut ended = limit.ended.clone();
                        ended.session_id = Uuid::parse_str(id).ok();
                        ended
                    }));
                }
                conn.append_audit(&events).await.map(|()| true)
            })
            .await
            .map_err(query_error))?;
        Ok(created)
    }

    /// Spends a refresh token and stores its successor, in one transaction.
    /// The spend is a conditional update, so of two concurrent calls with one
    /// token exactly one rotates; the other sees the token spent and, inside
    /// the grace interval, replays the same successor.
    pub(crate) async fn rotate_refresh_token(
        &self,
        presented_hash: String,
        successor: RefreshRecord,
        successor_sealed: String,
        grace: Duration,
        live: Liveness,
        reuse: AuditEvent,
    ) -> Result<Rotation, Error> {
        let db = self.clone();
        run_detached(async move {
            db.rotate(
                &presented_hash,
                &successor,
                &successor_sealed,
                grace,
                live,
                reuse,
            )
            .await
        })
        .await
    }

    /// `reuse` is recorded, with the session and its user, if the token
    /// turns out to be reused. A session that `live` rules dead is refused
    /// like a revoked one.
    async fn rotate(
        &self,
        presented_hash: &str,
        successor: &RefreshRecord,
        successor_sealed: &str,
        grace: Duration,
        live: Liveness,
        reuse: AuditEvent,
    ) -> Result<Rotation, Error> {
        let ending = self.ending_now();
        let now = Utc::now().naive_utc();
        let grace_start = now - chrono::Duration::from_std(grace).map_err(Error::internal)?;
        let outcome = with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                let spent = diesel::update(
                    refresh_tokens::table
                        .find(presented_hash)
                        .filter(refresh_tokens::rotated_at.is_null())
                        .filter(refresh_tokens::expires_at.gt(now)),
                )
                .set((
                    refresh_tokens::rotated_at.eq(now),
                    refresh_tokens::successor_hash.eq(&successor.token_hash),
                    refresh_tokens::successor_sealed.eq(successor_sealed),
                ))
                .execute(conn)
                .await?
                    == 1;
                let found = refresh_tokens::table
                    .inner_join(sessions::table.inner_join(users::table))
                    .filter(refresh_tokens::token_hash.eq(presented_hash))
                    .select((
                        (
                            sessions::id,
                            sessions::user_id,
                            sessions::revoked_at,
                            sessions::last_used_at,
                            sessions::created_at,
                            sessions::amr,
                        ),
                        (users::roles, users::disabled_at, users::email_verified),
                        (
                            refresh_tokens::rotated_at,
                            refresh_tokens::successor_hash,
                            refresh_tokens::successor_sealed,
                        ),
                    ))
                    .first::<Presented>(conn)
                    .await
                    .optional()?;
                let Some((
                    (session_id, user_id, revoked_at, last_used_at, created_at, amr),
                    (roles, disabled_at, email_verified),
                    (rotated_at, next_hash, sealed),
                )) = found
                else {
                    return Ok(Outcome::Rejected);
                };
                if revoked_at.is_some()
                    || disabled_at.is_some()
                    || !live.allows(last_used_at, created_at)
                {
                    return Ok(Outcome::Rejected);
                }
                if spent {
                    diesel::update(sessions::table.find(&session_id))
                        .set(sessions::last_used_at.eq(now))
                        .execute(conn)
                        .await?;
                    diesel::insert_into(refresh_tokens::table)
                        .values((
                            refresh_tokens::token_hash.eq(&successor.token_hash),
                            refresh_tokens::session_id.eq(&session_id),
                            refresh_tokens::created_at.eq(now),
                            refresh_tokens::expires_at.eq(successor.expires_at.naive_utc()),
                        ))
                        .execute(conn)
                        .await?;
                    return Ok(Outcome::Rotated((
                        session_id,
                        user_id,
                        roles,
                        created_at,
                        amr,
                        email_verified,
                    )));
                }
                let Some(rotated_at) = rotated_at else {
                    return Ok(Outcome::Rejected);
                };
                if rotated_at < grace_start {
                    conn.end_sessions(std::slice::from_ref(&session_id), ending)
                        .await?;
                    let mut reuse = reuse.clone();
                    reuse.user_id = Uuid::parse_str(&user_id).ok();
                    reuse.session_id = Uuid::parse_str(&session_id).ok();
                    conn.append_audit(&[reuse]).await?;
                    return Ok(Outcome::Reused(session_id));
                }
                let successor_unspent = match &next_hash {
                    Some(next_hash) => {
                        refresh_tokens::table
                            .find(next_hash)
                            .filter(refresh_tokens::rotated_at.is_null())
                            .filter(refresh_tokens::expires_at.gt(now))
                            .count()
                            .get_result::<i64>(conn)
                            .await?
                            == 1
                    }
                    None => false,
                };
                // A successor already spent in turn means the client has
                // moved on: the stale duplicate is refused, the session
                // kept.
                let Some(sealed) = sealed.filter(|_| successor_unspent) else {
                    return Ok(Outcome::Rejected);
                };
                diesel::update(sessions::table.find(&session_id))
                    .set(sessions::last_used_at.eq(now))
                    .execute(conn)
                    .await?;
                Ok(Outcome::Replayed(
                    (session_id, user_id, roles, created_at, amr, email_verified),
                    sealed,
                ))
            })
            .await
            .map_err(query_error))?;
        outcome.into_rotation()
    }

    /// The user of a live session, with the password.
    pub(crate) async fn session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        live: Liveness,
    ) -> Result<Option<(User, StoredPassword)>, Error> {
        let row = with_conn!(self, |conn| users::table
            .inner_join(sessions::table)
            .filter(sessions::id.eq(session_id.to_string()))
            .filter(users::id.eq(user_id.to_string()))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::last_used_at.gt(live.used_after.naive_utc()))
            .filter(sessions::created_at.gt(live.created_after.naive_utc()))
            .filter(users::disabled_at.is_null())
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(UserRow::into_user).transpose()
    }

    /// A user's live sessions, newest first.
    pub(crate) async fn user_sessions(
        &self,
        user_id: Uuid,
        live: Liveness,
    ) -> Result<Vec<SessionInfo>, Error> {
        let rows: Vec<SessionRow> = with_conn!(self, |conn| sessions::table
            .filter(sessions::user_id.eq(user_id.to_string()))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::last_used_at.gt(live.used_after.naive_utc()))
            .filter(sessions::created_at.gt(live.created_after.naive_utc()))
            .order((sessions::created_at.desc(), sessions::id.desc()))
            .select((
                sessions::id,
                sessions::created_at,
                sessions::last_used_at,
                sessions::client_address,
                sessions::user_agent,
                sessions::device_label,
            ))
            .load(conn)
            .await
            .map_err(query_error))?;
        rows.into_iter()
            .map(
                |(id, created_at, last_used_at, client_address, user_agent, label)| {
                    Ok(SessionInfo {
                        id: uuid(&id)?,
                        created_at: created_at.and_utc(),
                        last_used_at: last_used_at.and_utc(),
                        client_address,
                        user_agent: user_agent.map(UserAgent::from_stored),
                        label: label.map(DeviceLabel::from_stored),
                    })
                },
            )
            .collect()
    }

    /// Revokes the sessions `scope` names that are not revoked yet and, if
    /// there were any, records `event`. Returns how many it revoked.
    pub(crate) async fn revoke_sessions(
        &self,
        scope: Revoke,
        event: AuditEvent,
    ) -> Result<usize, Error> {
        let db = self.clone();
        run_detached(async move { db.end_sessions(scope, &event).await }).await
    }

    async fn end_sessions(&self, scope: Revoke, event: &AuditEvent) -> Result<usize, Error> {
        let ending = self.ending_now();
        with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                let chosen: Vec<String> = match scope {
                    Revoke::Session(id) => vec![id.to_string()],
                    Revoke::User(user_id) => {
                        live_sessions!(conn, user_id.to_string())
                    }
                    Revoke::Owned {
                        user_id,
                        session_id,
                    } => {
                        sessions::table
                            .filter(sessions::id.eq(session_id.to_string()))
                            .filter(sessions::user_id.eq(user_id.to_string()))
                            .select(sessions::id)
                            .load(conn)
                            .await?
                    }
                };
                let revoked = conn.end_sessions(&chosen, ending).await?.len();
                if revoked > 0 {
                    conn.append_audit(std::slice::from_ref(event)).await?;
                }
                Ok(revoked)
            })
            .await
            .map_err(query_error))
    }

    /// Replaces the password verified at `verified_version` and revokes
    /// every other session of the user, atomically: a new password never
    /// coexists with a stolen session. Returns false, changing nothing, if
    /// the password changed since it was verified.
    ///
    /// The user's row is updated first, so its lock is held while sessions
    /// are revoked: a login racing this either committed its session before
    /// (and it is revoked here) or re-checks the version after (and fails).
    pub(crate) async fn change_password(
        &self,
        user_id: Uuid,
        verified_version: i64,
        keep_session: Uuid,
        hash: PasswordHash,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            db.replace_password(user_id, verified_version, keep_session, &hash, &event)
                .await
        })
        .await
    }

    async fn replace_password(
        &self,
        user_id: Uuid,
        verified_version: i64,
        keep_session: Uuid,
        hash: &PasswordHash,
        event: &AuditEvent,
    ) -> Result<bool, Error> {
        let ending = self.ending_now();
        let now = Utc::now().naive_utc();
        let (user_id, keep) = (user_id.to_string(), keep_session.to_string());
        let (user_id, keep) = (&user_id, &keep);
        with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                let changed = diesel::update(
                    users::table
                        .find(user_id)
                        .filter(users::password_version.eq(verified_version)),
                )
                .set((
                    users::password_hash.eq(hash.as_str()),
                    users::password_version.eq(users::password_version + 1),
                    users::updated_at.eq(now),
                ))
                .execute(conn)
                .await?
                    == 1;
                if !changed {
                    return Ok(false);
                }
                // A reset link mailed before must not undo the change.
                retire_tokens!(conn, user_id, TokenPurpose::PasswordReset, now);
                let mut others = live_sessions!(conn, user_id);
                others.retain(|id| id != keep);
                conn.end_sessions(&others, ending).await?;
                conn.append_audit(std::slice::from_ref(event))
                    .await
                    .map(|()| true)
            })
            .await
            .map_err(query_error))
    }
}

/// A session to start: its id, the user and the password version they
/// proved, its first refresh token, and the events that record it.
pub(crate) struct NewSession {
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) password_version: i64,
    pub(crate) refresh: RefreshRecord,
    pub(crate) device: Device,
    /// How the user authenticated, for every token of the session.
    pub(crate) amr: Amr,
    pub(crate) limit: Option<SessionLimit>,
    pub(crate) events: Vec<AuditEvent>,
}

/// Which sessions [`Database::revoke_sessions`] ends.
pub(crate) enum Revoke {
    Session(Uuid),
    /// Every session of this user.
    User(Uuid),
    /// This session, if it belongs to this user.
    Owned {
        user_id: Uuid,
        session_id: Uuid,
    },
}

impl Database {
    /// Deletes up to `batch` refresh tokens that expired before `before`.
    /// Replicas may run it at once: a row another deleted first is simply
    /// gone.
    pub(crate) async fn delete_expired_refresh_tokens(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<usize, Error> {
        with_conn!(self, |conn| {
            let expired: Vec<String> = refresh_tokens::table
                .select(refresh_tokens::token_hash)
                .filter(refresh_tokens::expires_at.lt(before.naive_utc()))
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::token_hash.eq_any(expired)))
                .execute(conn)
                .await
                .map_err(query_error)
        })
    }

    /// Deletes up to `batch` sessions revoked before `revoked_before` or
    /// that `dead` rules dead, with their refresh tokens (by cascade).
    pub(crate) async fn delete_dead_sessions(
        &self,
        revoked_before: DateTime<Utc>,
        dead: Liveness,
        batch: i64,
    ) -> Result<usize, Error> {
        with_conn!(self, |conn| {
            let ended: Vec<String> = sessions::table
                .select(sessions::id)
                .filter(
                    sessions::revoked_at
                        .lt(revoked_before.naive_utc())
                        .or(sessions::last_used_at
                            .le(dead.used_after.naive_utc())
                            .nullable())
                        .or(sessions::created_at
                            .le(dead.created_after.naive_utc())
                            .nullable()),
                )
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            diesel::delete(sessions::table.filter(sessions::id.eq_any(ended)))
                .execute(conn)
                .await
                .map_err(query_error)
        })
    }
}
