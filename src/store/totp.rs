//! TOTP secrets, recovery codes and Login's second-factor challenges.

use chrono::{DateTime, Utc};
use diesel::{prelude::*, result::Error as QueryError};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Database,
    audit::AppendAudit,
    keys::RewrapFailure,
    query_error, run_detached,
    schema::{mfa_challenges, recovery_codes, totp_secrets, users},
    with_conn,
};
use crate::domain::{Error, audit::AuditEvent};

/// Replaces the user's recovery codes with `$hashes`, inside the caller's
/// transaction.
macro_rules! replace_recovery_codes {
    ($conn:expr, $user_id:expr, $hashes:expr) => {{
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq($user_id)))
            .execute(&mut *$conn)
            .await?;
        // One statement per code: SQLite takes no multi-row insert here.
        for hash in $hashes.iter() {
            diesel::insert_into(recovery_codes::table)
                .values((
                    recovery_codes::user_id.eq($user_id),
                    recovery_codes::code_hash.eq(hash),
                ))
                .execute(&mut *$conn)
                .await?;
        }
    }};
}

/// Deletes the user's TOTP secret, recovery codes and challenges, inside
/// the caller's transaction.
macro_rules! remove_totp {
    ($conn:expr, $user_id:expr) => {{
        diesel::delete(totp_secrets::table.find($user_id))
            .execute(&mut *$conn)
            .await?;
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq($user_id)))
            .execute(&mut *$conn)
            .await?;
        diesel::delete(mfa_challenges::table.filter(mfa_challenges::user_id.eq($user_id)))
            .execute(&mut *$conn)
            .await?;
    }};
}

/// A user's TOTP secret as stored (sealed or plaintext), and whether it is
/// active or still waiting for ConfirmTotp.
pub(crate) struct StoredTotp {
    pub(crate) secret: String,
    pub(crate) active: bool,
}

/// A second factor that checked out against what was read, to be spent
/// atomically: a TOTP step must still be later than the last one used, a
/// recovery code must still be there.
pub(crate) enum Factor {
    Step(i64),
    RecoveryCode(String),
}

/// What else the transaction that spends a factor does.
pub(crate) enum AfterFactor {
    /// Ends this Login challenge, which must still be live and the user's.
    Challenge(String),
    /// Turns TOTP off, deleting the secret, the codes and any challenge.
    Disable,
    /// Replaces every recovery code with these hashes.
    ReplaceRecoveryCodes(Vec<String>),
}

/// A Login's pending second factor: who, and the password version it
/// verified.
pub(crate) struct Challenge {
    pub(crate) user_id: Uuid,
    pub(crate) password_version: i64,
}

/// How many pending challenges a user may have: a new Login beyond them
/// drops the oldest, so repeated Logins cannot grow the table.
const CHALLENGES_PER_USER: i64 = 5;

impl Database {
    /// Stores a pending secret in place of any pending one; false, writing
    /// nothing, if TOTP is already active. The no-op update takes the
    /// user's row lock, so concurrent enrollments take turns.
    pub(crate) async fn enroll_totp(
        &self,
        user_id: Uuid,
        sealed_secret: String,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = user_id.to_string();
            let now = Utc::now().naive_utc();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    diesel::update(users::table.find(&user_id))
                        .set(users::password_version.eq(users::password_version))
                        .execute(conn)
                        .await?;
                    let active = totp_secrets::table
                        .find(&user_id)
                        .filter(totp_secrets::enabled_at.is_not_null())
                        .count()
                        .get_result::<i64>(conn)
                        .await?
                        > 0;
                    if active {
                        return Ok(false);
                    }
                    diesel::delete(totp_secrets::table.find(&user_id))
                        .execute(conn)
                        .await?;
                    diesel::insert_into(totp_secrets::table)
                        .values((
                            totp_secrets::user_id.eq(&user_id),
                            totp_secrets::secret.eq(&sealed_secret),
                            totp_secrets::created_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                    conn.append_audit(&[event]).await.map(|()| true)
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    pub(crate) async fn totp_secret(&self, user_id: Uuid) -> Result<Option<StoredTotp>, Error> {
        let row: Option<(String, Option<chrono::NaiveDateTime>)> = with_conn!(self, |conn| {
            totp_secrets::table
                .find(user_id.to_string())
                .select((totp_secrets::secret, totp_secrets::enabled_at))
                .first(conn)
                .await
                .optional()
                .map_err(query_error)
        })?;
        Ok(row.map(|(secret, enabled_at)| StoredTotp {
            secret,
            active: enabled_at.is_some(),
        }))
    }

    /// Whether the user must answer a second factor at Login.
    pub(crate) async fn totp_active(&self, user_id: Uuid) -> Result<bool, Error> {
        Ok(self
            .totp_secret(user_id)
            .await?
            .is_some_and(|totp| totp.active))
    }

    /// Activates the pending secret whose code matched for `step`, with its
    /// recovery codes; false if it is active already, or gone.
    pub(crate) async fn enable_totp(
        &self,
        user_id: Uuid,
        step: i64,
        recovery_hashes: Vec<String>,
        event: AuditEvent,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = user_id.to_string();
            let now = Utc::now().naive_utc();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let enabled = diesel::update(
                        totp_secrets::table
                            .find(&user_id)
                            .filter(totp_secrets::enabled_at.is_null()),
                    )
                    .set((
                        totp_secrets::enabled_at.eq(now),
                        totp_secrets::last_step.eq(step),
                    ))
                    .execute(conn)
                    .await?
                        == 1;
                    if !enabled {
                        return Ok(false);
                    }
                    replace_recovery_codes!(conn, &user_id, recovery_hashes);
                    conn.append_audit(&[event]).await.map(|()| true)
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// Spends `factor` of the user's active TOTP and does `after`, all in
    /// one transaction with `events`; false, writing nothing, if the factor
    /// was spent meanwhile (a replayed step, a used code) or the challenge
    /// is gone, expired or another user's.
    pub(crate) async fn spend_second_factor(
        &self,
        user_id: Uuid,
        factor: Factor,
        after: AfterFactor,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = user_id.to_string();
            let now = Utc::now().naive_utc();
            let spent = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let spent = match &factor {
                        Factor::Step(step) => {
                            diesel::update(
                                totp_secrets::table
                                    .find(&user_id)
                                    .filter(totp_secrets::enabled_at.is_not_null())
                                    .filter(totp_secrets::last_step.lt(step)),
                            )
                            .set(totp_secrets::last_step.eq(step))
                            .execute(conn)
                            .await?
                        }
                        Factor::RecoveryCode(hash) => {
                            diesel::delete(
                                recovery_codes::table
                                    .filter(recovery_codes::user_id.eq(&user_id))
                                    .filter(recovery_codes::code_hash.eq(hash)),
                            )
                            .execute(conn)
                            .await?
                        }
                    };
                    if spent != 1 {
                        return Err(QueryError::RollbackTransaction);
                    }
                    match &after {
                        AfterFactor::Challenge(token_hash) => {
                            let ended = diesel::delete(
                                mfa_challenges::table
                                    .find(token_hash)
                                    .filter(mfa_challenges::user_id.eq(&user_id))
                                    .filter(mfa_challenges::expires_at.gt(now)),
                            )
                            .execute(conn)
                            .await?;
                            if ended != 1 {
                                return Err(QueryError::RollbackTransaction);
                            }
                        }
                        AfterFactor::Disable => remove_totp!(conn, &user_id),
                        AfterFactor::ReplaceRecoveryCodes(hashes) => {
                            replace_recovery_codes!(conn, &user_id, hashes);
                        }
                    }
                    conn.append_audit(&events).await
                })
                .await);
            match spent {
                Ok(()) => Ok(true),
                Err(QueryError::RollbackTransaction) => Ok(false),
                Err(error) => Err(query_error(error)),
            }
        })
        .await
    }

    /// Removes the user's TOTP, recovery codes and challenges, recording
    /// `event`, as an operator does for a user who lost their app.
    pub(crate) async fn reset_totp(&self, user_id: Uuid, event: AuditEvent) -> Result<(), Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = user_id.to_string();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    remove_totp!(conn, &user_id);
                    conn.append_audit(&[event]).await
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// Stores a Login's challenge, dropping the user's oldest beyond
    /// [`CHALLENGES_PER_USER`].
    pub(crate) async fn create_mfa_challenge(
        &self,
        token_hash: String,
        challenge: Challenge,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = challenge.user_id.to_string();
            let now = Utc::now().naive_utc();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    diesel::insert_into(mfa_challenges::table)
                        .values((
                            mfa_challenges::token_hash.eq(&token_hash),
                            mfa_challenges::user_id.eq(&user_id),
                            mfa_challenges::password_version.eq(challenge.password_version),
                            mfa_challenges::created_at.eq(now),
                            mfa_challenges::expires_at.eq(expires_at.naive_utc()),
                        ))
                        .execute(conn)
                        .await?;
                    let beyond: Vec<String> = mfa_challenges::table
                        .filter(mfa_challenges::user_id.eq(&user_id))
                        .order((
                            mfa_challenges::created_at.desc(),
                            mfa_challenges::token_hash.desc(),
                        ))
                        .select(mfa_challenges::token_hash)
                        .offset(CHALLENGES_PER_USER)
                        .load(conn)
                        .await?;
                    diesel::delete(
                        mfa_challenges::table.filter(mfa_challenges::token_hash.eq_any(beyond)),
                    )
                    .execute(conn)
                    .await
                    .map(drop)
                })
                .await
                .map_err(query_error))
        })
        .await
    }

    /// The live challenge with this hash, if there is one.
    pub(crate) async fn mfa_challenge(&self, token_hash: &str) -> Result<Option<Challenge>, Error> {
        let now = Utc::now().naive_utc();
        let row: Option<(String, i64)> = with_conn!(self, |conn| mfa_challenges::table
            .find(token_hash)
            .filter(mfa_challenges::expires_at.gt(now))
            .select((mfa_challenges::user_id, mfa_challenges::password_version))
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(|(user_id, password_version)| {
            Ok(Challenge {
                user_id: Uuid::parse_str(&user_id).map_err(Error::internal)?,
                password_version,
            })
        })
        .transpose()
    }

    /// Replaces every stored TOTP secret with what `rewrap` makes of it, in
    /// one transaction; the count rewrapped.
    pub(crate) async fn rewrap_totp_secrets(
        &self,
        rewrap: impl Fn(Uuid, &str) -> Result<String, Error> + Sync,
    ) -> Result<usize, Error> {
        let rewrap = &rewrap;
        let outcome = with_conn!(self, |conn| conn
            .transaction::<_, RewrapFailure, _>(async |conn| {
                let stored: Vec<(String, String)> = totp_secrets::table
                    .select((totp_secrets::user_id, totp_secrets::secret))
                    .load(conn)
                    .await?;
                for (user_id, secret) in &stored {
                    let parsed = Uuid::parse_str(user_id)
                        .map_err(|error| RewrapFailure::Rewrap(Error::internal(error)))?;
                    let sealed = rewrap(parsed, secret).map_err(RewrapFailure::Rewrap)?;
                    diesel::update(totp_secrets::table.find(user_id))
                        .set(totp_secrets::secret.eq(sealed))
                        .execute(conn)
                        .await?;
                }
                Ok(stored.len())
            })
            .await);
        outcome.map_err(Error::from)
    }

    /// Deletes up to `batch` challenges that expired before `before`.
    pub(crate) async fn delete_expired_mfa_challenges(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<usize, Error> {
        with_conn!(self, |conn| {
            let expired: Vec<String> = mfa_challenges::table
                .select(mfa_challenges::token_hash)
                .filter(mfa_challenges::expires_at.lt(before.naive_utc()))
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            diesel::delete(mfa_challenges::table.filter(mfa_challenges::token_hash.eq_any(expired)))
                .execute(conn)
                .await
                .map_err(query_error)
        })
    }
}
