//! The outbox and the mailed tokens. A mail is a row written by the
//! transaction that makes the change it announces ([`EnqueueMail`]), so it
//! exists if and only if that change committed; the sender of every replica
//! then claims due rows, delivers them and marks them sent.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Database, Pools, SqliteAsync,
    audit::AppendAudit,
    query_error,
    revocations::{AnnounceUserChange, EndSessions, notify},
    run_detached,
    schema::{mail_tokens, outbox, users},
    sessions::live_sessions,
    with_conn,
};
use crate::domain::{
    Email, Error, PasswordHash,
    audit::AuditEvent,
    mail::{MailKind, TokenPurpose},
};

/// The PostgreSQL channel every replica's sender listens on: one
/// notification per transaction that queued mail.
pub(crate) const OUTBOX_CHANNEL: &str = "authd_outbox";

/// A mail to queue, rendered: what the sender delivers, as it will be
/// delivered (a resend repeats it, Message-ID included).
pub(crate) struct NewMail {
    pub(crate) kind: MailKind,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) text_body: String,
    pub(crate) html_body: Option<String>,
    pub(crate) message_id: String,
}

/// A token to store with the mail that carries it.
pub(crate) struct NewMailToken {
    pub(crate) hash: String,
    pub(crate) user_id: Uuid,
    pub(crate) purpose: TokenPurpose,
    /// The address an email change is bound to.
    pub(crate) new_email: Option<String>,
    pub(crate) expires_at: DateTime<Utc>,
    /// Whether the user's unused tokens of the same purpose stop working,
    /// as an older reset link does when a newer one is sent.
    pub(crate) supersede: bool,
    /// Nothing is issued if the user got a token of this purpose less than
    /// this long ago: at most one such mail per address per interval.
    pub(crate) not_within: Option<Duration>,
}

/// What a spent token was bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpentToken {
    pub(crate) user_id: Uuid,
    pub(crate) new_email: Option<String>,
}

/// What else the transaction that spends a token does. A new flow adds a
/// variant here, next to the writes it needs, so the spend and its effect
/// commit together or not at all.
pub(crate) enum AfterSpend {
    /// Sets the password (bumping its version, so anything that verified
    /// the old one is refused), ends every session of the user and makes
    /// the user's other reset tokens unusable.
    ResetPassword(PasswordHash),
    /// Marks the user's email verified, if it is still the address the
    /// token was mailed to (bound as its `new_email`); the user's other
    /// verification links then have nothing left to prove.
    VerifyEmail,
    /// Moves the user from the address `from` to `to`, verified, if the
    /// token is bound to `to` and the user still has `from`; retires their
    /// other verification and change tokens, which name an address no
    /// longer theirs to prove, and queues `notice` to the old address.
    ChangeEmail {
        from: Email,
        to: Email,
        notice: NewMail,
    },
}

/// A claimed mail, to deliver.
#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct OutboxRow {
    id: String,
    kind: String,
    recipient: String,
    subject: String,
    text_body: String,
    html_body: Option<String>,
    message_id: String,
    created_at: NaiveDateTime,
    attempts: i32,
}

/// A mail the sender holds until its lease ends. Not `Debug`: its bodies
/// may carry a token.
pub(crate) struct ClaimedMail {
    pub(crate) id: String,
    pub(crate) kind: MailKind,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) text_body: String,
    pub(crate) html_body: Option<String>,
    pub(crate) message_id: String,
    pub(crate) created_at: DateTime<Utc>,
    /// Including this one.
    pub(crate) attempts: u32,
}

impl OutboxRow {
    fn into_claimed(self) -> Result<ClaimedMail, Error> {
        Ok(ClaimedMail {
            kind: MailKind::parse(&self.kind)
                .ok_or_else(|| Error::internal("unknown kind of mail in the outbox"))?,
            id: self.id,
            recipient: self.recipient,
            subject: self.subject,
            text_body: self.text_body,
            html_body: self.html_body,
            message_id: self.message_id,
            created_at: self.created_at.and_utc(),
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
        })
    }
}

/// Queues a mail inside the caller's transaction. On PostgreSQL every
/// replica's sender is woken when it commits; on SQLite the caller wakes
/// this process's sender once committed ([`Database::outbox_committed`]).
pub(crate) trait EnqueueMail {
    async fn enqueue_mail(&mut self, mail: &NewMail) -> Result<(), QueryError>;
}

macro_rules! insert_mail {
    ($conn:expr, $mail:expr) => {{
        let now = Utc::now().naive_utc();
        diesel::insert_into(outbox::table)
            .values((
                outbox::id.eq(Uuid::now_v7().to_string()),
                outbox::kind.eq($mail.kind.as_str()),
                outbox::recipient.eq(&$mail.recipient),
                outbox::subject.eq(&$mail.subject),
                outbox::text_body.eq(&$mail.text_body),
                outbox::html_body.eq(&$mail.html_body),
                outbox::message_id.eq(&$mail.message_id),
                outbox::created_at.eq(now),
                outbox::next_attempt_at.eq(now),
            ))
            .execute(&mut *$conn)
            .await
            .map(drop)
    }};
}

impl EnqueueMail for AsyncPgConnection {
    async fn enqueue_mail(&mut self, mail: &NewMail) -> Result<(), QueryError> {
        insert_mail!(self, mail)?;
        notify(self, OUTBOX_CHANNEL, "").await
    }
}

impl EnqueueMail for SqliteAsync {
    async fn enqueue_mail(&mut self, mail: &NewMail) -> Result<(), QueryError> {
        insert_mail!(self, mail)
    }
}

/// Makes the user's unused tokens of `$purpose` unusable.
macro_rules! retire_tokens {
    ($conn:expr, $user_id:expr, $purpose:expr, $now:expr) => {
        diesel::update(
            $crate::store::schema::mail_tokens::table
                .filter($crate::store::schema::mail_tokens::user_id.eq($user_id))
                .filter($crate::store::schema::mail_tokens::purpose.eq($purpose.as_str()))
                .filter($crate::store::schema::mail_tokens::used_at.is_null()),
        )
        .set($crate::store::schema::mail_tokens::used_at.eq($now))
        .execute(&mut *$conn)
        .await?
    };
}
pub(super) use retire_tokens;

/// Stores `$token` (a [`NewMailToken`]) as created at `$now`.
macro_rules! insert_mail_token {
    ($conn:expr, $token:expr, $now:expr) => {
        diesel::insert_into($crate::store::schema::mail_tokens::table)
            .values((
                $crate::store::schema::mail_tokens::token_hash.eq(&$token.hash),
                $crate::store::schema::mail_tokens::user_id.eq($token.user_id.to_string()),
                $crate::store::schema::mail_tokens::purpose.eq($token.purpose.as_str()),
                $crate::store::schema::mail_tokens::new_email.eq(&$token.new_email),
                $crate::store::schema::mail_tokens::created_at.eq($now),
                $crate::store::schema::mail_tokens::expires_at.eq($token.expires_at.naive_utc()),
            ))
            .execute(&mut *$conn)
            .await?
    };
}
pub(super) use insert_mail_token;

/// Since when an earlier mail holds a new one back, for a `not_within`.
fn cutoff(now: NaiveDateTime, not_within: Option<Duration>) -> Option<NaiveDateTime> {
    not_within
        .and_then(|interval| chrono::Duration::from_std(interval).ok())
        .map(|interval| now - interval)
}

impl Database {
    /// Stores a token and queues the mail that carries it, with `events`,
    /// in one transaction; with `supersede`, the user's older unused tokens
    /// of the purpose stop working in the same transaction. False, writing
    /// nothing, when `not_within` holds it back or the user is gone.
    pub(crate) async fn issue_mail_token(
        &self,
        token: NewMailToken,
        mail: NewMail,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let user_id = token.user_id.to_string();
            let now = Utc::now().naive_utc();
            let since = cutoff(now, token.not_within);
            let issued = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    // The no-op update takes the user's row lock, so that
                    // concurrent requests for one user take turns and
                    // `not_within` holds across replicas.
                    let exists = diesel::update(users::table.find(&user_id))
                        .set(users::password_version.eq(users::password_version))
                        .execute(conn)
                        .await?
                        == 1;
                    if !exists {
                        return Ok(false);
                    }
                    if let Some(since) = since {
                        let recent = mail_tokens::table
                            .filter(mail_tokens::purpose.eq(token.purpose.as_str()))
                            .filter(mail_tokens::created_at.gt(since))
                            .into_boxed();
                        // A change link goes to an address that is not yet
                        // the user's: limited per that address, so no
                        // account can flood someone else's inbox.
                        let recent = match &token.new_email {
                            Some(new_email) if token.purpose == TokenPurpose::ChangeEmail => {
                                recent.filter(mail_tokens::new_email.eq(new_email))
                            }
                            _ => recent.filter(mail_tokens::user_id.eq(&user_id)),
                        };
                        let recent: i64 = recent.count().get_result(conn).await?;
                        if recent > 0 {
                            return Ok(false);
                        }
                    }
                    if token.supersede {
                        retire_tokens!(conn, &user_id, token.purpose, now);
                    }
                    insert_mail_token!(conn, token, now);
                    conn.enqueue_mail(&mail).await?;
                    conn.append_audit(&events).await.map(|()| true)
                })
                .await
                .map_err(query_error))?;
            if issued {
                db.outbox_committed();
            }
            Ok(issued)
        })
        .await
    }

    /// Queues a mail that carries no token (a notice), with `events`, in
    /// one transaction. False, writing nothing, when a mail of its kind
    /// went to its recipient less than `not_within` ago.
    pub(crate) async fn queue_mail(
        &self,
        mail: NewMail,
        not_within: Option<Duration>,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let since = cutoff(Utc::now().naive_utc(), not_within);
            let queued = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    if let Some(since) = since {
                        let recent: i64 = outbox::table
                            .filter(outbox::kind.eq(mail.kind.as_str()))
                            .filter(outbox::recipient.eq(&mail.recipient))
                            .filter(outbox::created_at.gt(since))
                            .count()
                            .get_result(conn)
                            .await?;
                        if recent > 0 {
                            return Ok(false);
                        }
                    }
                    conn.enqueue_mail(&mail).await?;
                    conn.append_audit(&events).await.map(|()| true)
                })
                .await
                .map_err(query_error))?;
            if queued {
                db.outbox_committed();
            }
            Ok(queued)
        })
        .await
    }

    /// Spends the live token with this hash and purpose, does `after` and
    /// records the events `events` makes for the token's user, in one
    /// transaction. None, writing nothing, if no such token is live:
    /// unknown, expired, used, or spent concurrently (the update that marks
    /// it used is the only one that succeeds). None too, with the token
    /// spent and nothing else written, when the address `after` depends on
    /// is no longer the user's. [`Error::EmailTaken`] when an email change
    /// meets another account's address; then nothing is written at all.
    pub(crate) async fn spend_mail_token<E>(
        &self,
        hash: String,
        purpose: TokenPurpose,
        after: AfterSpend,
        events: E,
    ) -> Result<Option<SpentToken>, Error>
    where
        E: Fn(Uuid) -> Vec<AuditEvent> + Send + Sync + 'static,
    {
        let db = self.clone();
        run_detached(async move {
            let now = Utc::now().naive_utc();
            let ending = db.ending_now();
            let spent = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    let spent: Option<(String, Option<String>)> = diesel::update(
                        mail_tokens::table
                            .find(&hash)
                            .filter(mail_tokens::purpose.eq(purpose.as_str()))
                            .filter(mail_tokens::used_at.is_null())
                            .filter(mail_tokens::expires_at.gt(now)),
                    )
                    .set(mail_tokens::used_at.eq(now))
                    .returning((mail_tokens::user_id, mail_tokens::new_email))
                    .get_result(conn)
                    .await
                    .optional()?;
                    let Some((user_id, new_email)) = spent else {
                        return Ok(None);
                    };
                    let parsed = Uuid::parse_str(&user_id)
                        .map_err(|error| QueryError::DeserializationError(error.into()))?;
                    let applied = match &after {
                        AfterSpend::ResetPassword(hash) => {
                            diesel::update(users::table.find(&user_id))
                                .set((
                                    users::password_hash.eq(hash.as_str()),
                                    users::password_version.eq(users::password_version + 1),
                                    users::updated_at.eq(now),
                                ))
                                .execute(conn)
                                .await?;
                            retire_tokens!(conn, &user_id, TokenPurpose::PasswordReset, now);
                            let live = live_sessions!(conn, &user_id);
                            conn.end_sessions(&live, ending).await?;
                            true
                        }
                        AfterSpend::VerifyEmail => {
                            let Some(address) = &new_email else {
                                return Ok(None);
                            };
                            let verified = diesel::update(
                                users::table.find(&user_id).filter(users::email.eq(address)),
                            )
                            .set((users::email_verified.eq(true), users::updated_at.eq(now)))
                            .execute(conn)
                            .await?
                                == 1;
                            if verified {
                                retire_tokens!(conn, &user_id, TokenPurpose::VerifyEmail, now);
                            }
                            verified
                        }
                        AfterSpend::ChangeEmail { from, to, notice } => {
                            if new_email.as_deref() != Some(to.as_str()) {
                                return Ok(None);
                            }
                            let moved = diesel::update(
                                users::table
                                    .find(&user_id)
                                    .filter(users::email.eq(from.as_str())),
                            )
                            .set((
                                users::email.eq(to.as_str()),
                                users::email_key.eq(to.key()),
                                users::email_verified.eq(true),
                                users::updated_at.eq(now),
                            ))
                            .execute(conn)
                            .await?
                                == 1;
                            if moved {
                                retire_tokens!(conn, &user_id, TokenPurpose::VerifyEmail, now);
                                retire_tokens!(conn, &user_id, TokenPurpose::ChangeEmail, now);
                                // A reset link must not outlive the address
                                // it was sent to, as when an operator moves it.
                                retire_tokens!(conn, &user_id, TokenPurpose::PasswordReset, now);
                                conn.enqueue_mail(notice).await?;
                            }
                            moved
                        }
                    };
                    // The token stays spent: what it was bound to is gone.
                    if !applied {
                        return Ok(None);
                    }
                    if !matches!(after, AfterSpend::ResetPassword(_)) {
                        conn.announce_user_change(&user_id).await?;
                    }
                    conn.append_audit(&events(parsed)).await?;
                    Ok(Some(SpentToken {
                        user_id: parsed,
                        new_email,
                    }))
                })
                .await
                .map_err(email_taken))?;
            if spent.is_some() && matches!(after, AfterSpend::ChangeEmail { .. }) {
                db.outbox_committed();
            }
            Ok(spent)
        })
        .await
    }

    /// What the live token with this hash and purpose is bound to, without
    /// spending it: what a caller must know to prepare the spend.
    pub(crate) async fn live_mail_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
    ) -> Result<Option<SpentToken>, Error> {
        let now = Utc::now().naive_utc();
        let bound: Option<(String, Option<String>)> = with_conn!(self, |conn| mail_tokens::table
            .find(hash)
            .filter(mail_tokens::purpose.eq(purpose.as_str()))
            .filter(mail_tokens::used_at.is_null())
            .filter(mail_tokens::expires_at.gt(now))
            .select((mail_tokens::user_id, mail_tokens::new_email))
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        bound
            .map(|(user_id, new_email)| {
                Ok(SpentToken {
                    user_id: Uuid::parse_str(&user_id).map_err(Error::internal)?,
                    new_email,
                })
            })
            .transpose()
    }

    /// Claims up to `batch` due mails for `lease`: no other sender takes
    /// them until it ends, so a sender that dies mid-delivery only delays
    /// them. On PostgreSQL rows another replica is claiming are skipped,
    /// not waited for.
    pub(crate) async fn claim_mail(
        &self,
        batch: i64,
        lease: Duration,
    ) -> Result<Vec<ClaimedMail>, Error> {
        let now = Utc::now().naive_utc();
        let until = now + chrono::Duration::from_std(lease).map_err(Error::internal)?;
        // Only kinds this version can render: during a rolling upgrade a
        // newer kind waits for a newer replica instead of failing rounds.
        let known = MailKind::ALL.map(MailKind::as_str);
        macro_rules! due {
            () => {
                outbox::table
                    .filter(outbox::kind.eq_any(known))
                    .filter(outbox::sent_at.is_null())
                    .filter(outbox::gave_up_at.is_null())
                    .filter(outbox::next_attempt_at.le(now))
                    .filter(
                        outbox::claimed_until
                            .is_null()
                            .or(outbox::claimed_until.lt(now)),
                    )
            };
        }
        // Picks due ids (`$lock` adds row locking where there is any) and
        // claims those still unclaimed, in one transaction.
        macro_rules! claim {
            ($pool:expr, |$query:ident| $lock:expr) => {{
                let mut conn = $pool.get().await.map_err(super::pool_error)?;
                conn.transaction::<_, QueryError, _>(async |conn| {
                    let $query = due!()
                        .order(outbox::next_attempt_at.asc())
                        .select(outbox::id)
                        .limit(batch);
                    let ids: Vec<String> = $lock.load(conn).await?;
                    diesel::update(due!().filter(outbox::id.eq_any(ids)))
                        .set((
                            outbox::claimed_until.eq(until),
                            outbox::attempts.eq(outbox::attempts + 1),
                        ))
                        .returning(OutboxRow::as_returning())
                        .get_results::<OutboxRow>(conn)
                        .await
                })
                .await
                .map_err(query_error)?
            }};
        }
        let rows = match &self.pools {
            // Rows another replica is claiming are skipped, not waited for.
            Pools::Postgres(pool, _) => claim!(pool, |due| due.for_update().skip_locked()),
            // One writer at a time: the update re-checks that each row is
            // still unclaimed, so two senders on one file never share one.
            Pools::Sqlite(pool, _) => claim!(pool, |due| due),
        };
        rows.into_iter().map(OutboxRow::into_claimed).collect()
    }

    /// Marks a claimed mail delivered. A mail that carried a token loses
    /// its bodies: the raw token must not outlive its delivery here.
    pub(crate) async fn mark_mail_sent(&self, mail: &ClaimedMail) -> Result<(), Error> {
        self.close_mail(mail, outbox::sent_at).await
    }

    /// Stops trying a mail: the row stays, with gave_up_at, for the record.
    pub(crate) async fn give_up_mail(&self, mail: &ClaimedMail) -> Result<(), Error> {
        self.close_mail(mail, outbox::gave_up_at).await
    }

    async fn close_mail<C>(&self, mail: &ClaimedMail, column: C) -> Result<(), Error>
    where
        C: Column<
                Table = outbox::table,
                SqlType = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
            > + Copy
            + Send
            + 'static,
    {
        let now = Utc::now().naive_utc();
        let clear = mail.kind.purpose().is_some();
        with_conn!(self, |conn| {
            let row = outbox::table.find(&mail.id);
            let result = if clear {
                diesel::update(row)
                    .set((
                        column.eq(Some(now)),
                        outbox::claimed_until.eq(None::<NaiveDateTime>),
                        outbox::text_body.eq(""),
                        outbox::html_body.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await
            } else {
                diesel::update(row)
                    .set((
                        column.eq(Some(now)),
                        outbox::claimed_until.eq(None::<NaiveDateTime>),
                    ))
                    .execute(conn)
                    .await
            };
            result.map(drop).map_err(query_error)
        })
    }

    /// Releases a mail whose delivery failed, to be tried again at `next`.
    pub(crate) async fn retry_mail(
        &self,
        mail: &ClaimedMail,
        next: DateTime<Utc>,
    ) -> Result<(), Error> {
        with_conn!(self, |conn| diesel::update(outbox::table.find(&mail.id))
            .set((
                outbox::next_attempt_at.eq(next.naive_utc()),
                outbox::claimed_until.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)
            .await
            .map(drop)
            .map_err(query_error))
    }

    /// How many mails wait for delivery.
    pub(crate) async fn outbox_depth(&self) -> Result<i64, Error> {
        with_conn!(self, |conn| outbox::table
            .filter(outbox::sent_at.is_null())
            .filter(outbox::gave_up_at.is_null())
            .count()
            .get_result(conn)
            .await
            .map_err(query_error))
    }

    /// When the next waiting mail is due, if any waits.
    pub(crate) async fn next_mail_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let now = Utc::now().naive_utc();
        // A mail another sender holds is due again only when its claim
        // runs out, however long ago its attempt was due; one of a kind
        // this version cannot send is never due here.
        let known = MailKind::ALL.map(MailKind::as_str);
        let (unclaimed, claimed): (Option<NaiveDateTime>, Option<NaiveDateTime>) =
            with_conn!(self, |conn| async {
                let unclaimed = outbox::table
                    .filter(outbox::kind.eq_any(known))
                    .filter(outbox::sent_at.is_null())
                    .filter(outbox::gave_up_at.is_null())
                    .filter(
                        outbox::claimed_until
                            .is_null()
                            .or(outbox::claimed_until.lt(now)),
                    )
                    .select(diesel::dsl::min(outbox::next_attempt_at))
                    .first(conn)
                    .await?;
                let claimed = outbox::table
                    .filter(outbox::kind.eq_any(known))
                    .filter(outbox::sent_at.is_null())
                    .filter(outbox::gave_up_at.is_null())
                    .filter(outbox::claimed_until.ge(now))
                    .select(diesel::dsl::min(outbox::claimed_until))
                    .first(conn)
                    .await?;
                Ok::<_, QueryError>((unclaimed, claimed))
            }
            .await
            .map_err(query_error))?;
        Ok(unclaimed
            .into_iter()
            .chain(claimed)
            .min()
            .map(|due| due.and_utc()))
    }

    /// Deletes up to `batch` mails delivered or given up before `before`,
    /// and tokens expired before it; returns how many rows went.
    pub(crate) async fn delete_old_mail(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<usize, Error> {
        let before = before.naive_utc();
        with_conn!(self, |conn| {
            let old: Vec<String> = outbox::table
                .select(outbox::id)
                .filter(outbox::sent_at.lt(before).or(outbox::gave_up_at.lt(before)))
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            let mails = diesel::delete(outbox::table.filter(outbox::id.eq_any(old)))
                .execute(conn)
                .await
                .map_err(query_error)?;
            let expired: Vec<String> = mail_tokens::table
                .select(mail_tokens::token_hash)
                .filter(mail_tokens::expires_at.lt(before))
                .limit(batch)
                .load(conn)
                .await
                .map_err(query_error)?;
            let tokens =
                diesel::delete(mail_tokens::table.filter(mail_tokens::token_hash.eq_any(expired)))
                    .execute(conn)
                    .await
                    .map_err(query_error)?;
            Ok(mails + tokens)
        })
    }
}

impl Database {
    /// Called once a transaction that queued mail committed.
    pub(super) fn outbox_committed(&self) {
        self.outbox_wakeup.notify_one();
    }

    /// Completes when this process queued mail since the last call (a
    /// wakeup that came while nobody waited is kept for the next).
    pub(crate) async fn mail_queued(&self) {
        self.outbox_wakeup.notified().await;
    }

    /// On PostgreSQL, a connection of the sender's own that hears every
    /// replica queue mail ([`OutboxListener::queued`]); None on SQLite,
    /// where only this process writes.
    pub(crate) async fn outbox_listener(&self) -> Result<Option<OutboxListener>, Error> {
        match &self.pools {
            Pools::Postgres(_, url) => {
                use secrecy::ExposeSecret;
                let mut conn = AsyncPgConnection::establish(url.expose_secret())
                    .await
                    .map_err(Error::unavailable)?;
                diesel::sql_query(format!("LISTEN {OUTBOX_CHANNEL}"))
                    .execute(&mut conn)
                    .await
                    .map_err(query_error)?;
                Ok(Some(OutboxListener(Box::new(conn))))
            }
            Pools::Sqlite(..) => Ok(None),
        }
    }
}

/// See [`Database::outbox_listener`].
pub(crate) struct OutboxListener(Box<AsyncPgConnection>);

impl OutboxListener {
    /// Waits for the next notification; a lost connection is an error.
    pub(crate) async fn queued(&mut self) -> Result<(), Error> {
        use futures_util::StreamExt;
        let notifications = self.0.notifications_stream();
        let mut notifications = std::pin::pin!(notifications);
        notifications
            .next()
            .await
            .ok_or_else(|| Error::unavailable("the outbox listener's connection closed"))?
            .map(drop)
            .map_err(query_error)
    }
}

/// An email change's address taken by another account after the link was
/// mailed: the unique index refuses it and the transaction rolls back.
fn email_taken(error: QueryError) -> Error {
    match error {
        QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Error::EmailTaken,
        error => query_error(error),
    }
}
