use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

/// Rows read per round while backfilling keys: bounded memory on any table.
const BACKFILL_BATCH: i64 = 500;
/// Conflicts named in the startup error; the rest are counted.
const CONFLICTS_SHOWN: usize = 20;

use super::{
    Database, NewMail, NewMailToken,
    audit::AppendAudit,
    mail::{EnqueueMail, insert_mail_token},
    query_error, run_detached,
    schema::users,
    with_conn,
};
use crate::{
    domain::Error,
    domain::PasswordHash,
    domain::{Email, Roles, User, Username, audit::AuditEvent},
};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub(super) struct UserRow {
    id: String,
    email: String,
    email_key: Option<String>,
    username: String,
    password_hash: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    password_version: i64,
    roles: String,
    disabled_at: Option<NaiveDateTime>,
    email_verified: bool,
}

/// A user's password hash with its version, which every password change
/// bumps: writes that depend on a verified password name the version they
/// verified and are refused once it is no longer current.
#[derive(Debug, Clone)]
pub(crate) struct StoredPassword {
    pub(crate) hash: PasswordHash,
    pub(crate) version: i64,
}

diesel::define_sql_function! {
    /// `substr(text, start, length)`, the same in PostgreSQL and SQLite.
    fn substr(text: diesel::sql_types::Text, start: diesel::sql_types::Integer, length: diesel::sql_types::Integer) -> diesel::sql_types::Text;
}

impl UserRow {
    pub(super) fn into_user(self) -> Result<(User, StoredPassword), Error> {
        let user = User {
            id: Uuid::parse_str(&self.id).map_err(Error::internal)?,
            email: Email::from_stored(self.email, self.email_key),
            username: Username::from_stored(self.username),
            created_at: self.created_at.and_utc(),
            email_verified: self.email_verified,
            roles: Roles::from_stored(&self.roles),
            disabled: self.disabled_at.is_some(),
        };
        let password = StoredPassword {
            hash: PasswordHash::from_stored(self.password_hash),
            version: self.password_version,
        };
        Ok((user, password))
    }
}

/// A user about to be stored, with the hash already computed so that no
/// connection is held while bcrypt runs, and the events that record it.
pub(crate) struct NewUserRecord {
    pub(crate) id: Uuid,
    pub(crate) email: Email,
    pub(crate) username: Username,
    /// None: the account cannot log in until it is given a password.
    pub(crate) password_hash: Option<PasswordHash>,
    pub(crate) roles: Roles,
    pub(crate) email_verified: bool,
    /// The token and mail that let the user verify the address, stored
    /// with the user so that no account exists without its mail.
    pub(crate) verification: Option<(NewMailToken, NewMail)>,
    pub(crate) events: Vec<AuditEvent>,
}

impl Database {
    /// Stores a new user with its audit events. The unique index on the
    /// email's comparison key turns a concurrent duplicate into
    /// [`Error::EmailTaken`], never a second row.
    pub(crate) async fn insert_user(&self, new: NewUserRecord) -> Result<User, Error> {
        // PostgreSQL keeps microseconds; truncating here means the value the
        // caller sees is the value a later read returns.
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        let row = UserRow {
            id: new.id.to_string(),
            email: new.email.as_str().to_owned(),
            email_key: Some(new.email.key().to_owned()),
            username: new.username.as_str().to_owned(),
            password_hash: new
                .password_hash
                .map(|hash| hash.as_str().to_owned())
                .unwrap_or_default(),
            created_at: now,
            updated_at: now,
            password_version: 0,
            roles: new.roles.to_stored(),
            disabled_at: None,
            email_verified: new.email_verified,
        };
        let db = self.clone();
        let events = new.events;
        let verification = new.verification;
        let (row, inserted) = run_detached(async move {
            let inserted = with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    diesel::insert_into(users::table)
                        .values(&row)
                        .execute(conn)
                        .await?;
                    if let Some((token, mail)) = &verification {
                        insert_mail_token!(conn, token, now);
                        conn.enqueue_mail(mail).await?;
                    }
                    conn.append_audit(&events).await
                })
                .await);
            if inserted.is_ok() && verification.is_some() {
                db.outbox_committed();
            }
            Ok((row, inserted))
        })
        .await?;
        match inserted {
            Ok(()) => row.into_user().map(|(user, _)| user),
            Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                Err(Error::EmailTaken)
            }
            Err(e) => Err(query_error(e)),
        }
    }

    pub(crate) async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, StoredPassword)>, Error> {
        let row = with_conn!(self, |conn| users::table
            .filter(users::email_key.eq(email.key()))
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(UserRow::into_user).transpose()
    }

    /// Whether a user with this email exists: the cheap check that lets a
    /// duplicate signup be refused without spending a hash.
    pub(crate) async fn email_taken(&self, email: &Email) -> Result<bool, Error> {
        with_conn!(self, |conn| diesel::select(diesel::dsl::exists(
            users::table.filter(users::email_key.eq(email.key()))
        ))
        .get_result(conn)
        .await
        .map_err(query_error))
    }

    /// The highest bcrypt cost among stored hashes (`$2b$12$…` keeps it in
    /// two zero-padded digits, so the text maximum is the numeric one).
    pub(crate) async fn max_password_cost(&self) -> Result<Option<u32>, Error> {
        let cost: Option<String> = with_conn!(self, |conn| users::table
            .select(diesel::dsl::max(substr(users::password_hash, 5, 2)))
            .get_result(conn)
            .await
            .map_err(query_error))?;
        Ok(cost.and_then(|cost| cost.parse().ok()))
    }

    /// Swaps a password hash for a rehash of the same password, unless the
    /// password changed in the meantime. The version stays: the password is
    /// the same, so logins that verified it must not fail.
    pub(crate) async fn replace_password_hash(
        &self,
        user_id: Uuid,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> Result<(), Error> {
        with_conn!(self, |conn| diesel::update(
            users::table
                .find(user_id.to_string())
                .filter(users::password_hash.eq(old.as_str()))
        )
        .set(users::password_hash.eq(new.as_str()))
        .execute(conn)
        .await
        .map(drop)
        .map_err(query_error))
    }
}

/// Users stored before the email comparison key existed whose addresses
/// turned out to be one mailbox with another user's.
#[derive(Debug, thiserror::Error)]
pub(crate) struct EmailKeyConflicts(Vec<(String, String)>);

impl std::fmt::Display for EmailKeyConflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stored user(s) have an email that is one mailbox with another user's \
             under the current rules (case folding, Unicode forms, IDNA, look-alikes), \
             and authd will not choose which account keeps it:",
            self.0.len()
        )?;
        for (user, holder) in self.0.iter().take(CONFLICTS_SHOWN) {
            write!(f, " user {user} collides with user {holder};")?;
        }
        if self.0.len() > CONFLICTS_SHOWN {
            write!(f, " and {} more;", self.0.len() - CONFLICTS_SHOWN)?;
        }
        write!(
            f,
            " give one user of each pair another email, or delete it, then start authd \
             again (README: \"Upgrading\")"
        )
    }
}

/// Why the key backfill did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackfillError {
    #[error(transparent)]
    Conflicts(#[from] EmailKeyConflicts),
    #[error("cannot compute the email comparison keys of stored users")]
    Store(#[from] Error),
}

impl Database {
    /// Gives every user stored without an email comparison key (rows from
    /// before the key existed) its key. A row whose key another user
    /// already holds keeps none, and all of them are reported together:
    /// which of two accounts keeps a mailbox is the operator's decision.
    /// Idempotent, so replicas starting together may both run it.
    pub(crate) async fn backfill_email_keys(&self) -> Result<(), BackfillError> {
        let mut conflicts = Vec::new();
        let mut after = String::new();
        loop {
            let batch: Vec<(String, String)> = with_conn!(self, |conn| users::table
                .filter(users::email_key.is_null().and(users::id.gt(&after)))
                .order(users::id)
                .select((users::id, users::email))
                .limit(BACKFILL_BATCH)
                .load(conn)
                .await
                .map_err(query_error))?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = last.clone();
            for (id, address) in batch {
                if Email::parse(&address).is_err() {
                    tracing::warn!(
                        user_id = %id,
                        "stored email breaks today's email rules; this user cannot log in \
                         until it is changed"
                    );
                }
                let email = Email::from_stored(address, None);
                if let Some(holder) = self.set_email_key(&id, email.key()).await? {
                    conflicts.push((id, holder));
                }
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(EmailKeyConflicts(conflicts).into())
        }
    }

    /// Sets a missing key; on a collision, returns the id of the user who
    /// holds the key.
    async fn set_email_key(&self, id: &str, key: &str) -> Result<Option<String>, Error> {
        let updated = with_conn!(self, |conn| diesel::update(
            users::table.find(id).filter(users::email_key.is_null())
        )
        .set(users::email_key.eq(key))
        .execute(conn)
        .await);
        match updated {
            Ok(_) => Ok(None),
            Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                let holder = with_conn!(self, |conn| users::table
                    .filter(users::email_key.eq(key))
                    .select(users::id)
                    .first::<String>(conn)
                    .await
                    .map_err(query_error))?;
                Ok(Some(holder))
            }
            Err(e) => Err(query_error(e)),
        }
    }
}
