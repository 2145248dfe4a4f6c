//! Users as an operator manages them: listing, creating, changing and
//! deleting, each change with its audit events in its own transaction.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::{
    IntoSql,
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
    sql_types::Text,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    Database,
    audit::AppendAudit,
    mail::retire_tokens,
    query_error,
    revocations::{AnnounceUserChange, EndSessions, Ending},
    run_detached,
    schema::users,
    sessions::live_sessions,
    users::UserRow,
    with_conn,
};
use crate::domain::{
    Email, Error, PasswordHash, Roles, User, UserFilter, Username, audit::AuditEvent,
    mail::TokenPurpose,
};

diesel::define_sql_function! {
    /// `lower(text)`, the same in PostgreSQL and SQLite.
    fn lower(text: Text) -> Text;
}

/// What to change on one user, decided from the user as it is inside the
/// transaction, with the events that record it.
#[derive(Default)]
pub(crate) struct UserChange {
    pub(crate) email: Option<Email>,
    pub(crate) username: Option<Username>,
    pub(crate) roles: Option<Roles>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) disabled: Option<bool>,
    /// A new password; the password version is bumped with it.
    pub(crate) password_hash: Option<PasswordHash>,
    /// End every live session of the user.
    pub(crate) revoke_sessions: bool,
    pub(crate) events: Vec<AuditEvent>,
}

#[derive(AsChangeset)]
#[diesel(table_name = users)]
struct UserChangeset {
    email: Option<String>,
    email_key: Option<String>,
    username: Option<String>,
    roles: Option<String>,
    email_verified: Option<bool>,
    disabled_at: Option<Option<NaiveDateTime>>,
    password_hash: Option<String>,
    password_version: Option<i64>,
    updated_at: NaiveDateTime,
}

impl UserChangeset {
    /// The columns `change` sets, or None when it sets none.
    fn new(change: &UserChange, password_version: i64, now: NaiveDateTime) -> Option<Self> {
        let changeset = Self {
            email: change.email.as_ref().map(|email| email.as_str().to_owned()),
            email_key: change.email.as_ref().map(|email| email.key().to_owned()),
            username: change
                .username
                .as_ref()
                .map(|name| name.as_str().to_owned()),
            roles: change.roles.as_ref().map(Roles::to_stored),
            email_verified: change.email_verified,
            disabled_at: change.disabled.map(|disabled| disabled.then_some(now)),
            password_hash: change
                .password_hash
                .as_ref()
                .map(|hash| hash.as_str().to_owned()),
            password_version: change.password_hash.as_ref().map(|_| password_version + 1),
            updated_at: now,
        };
        let sets_any = changeset.email.is_some()
            || changeset.username.is_some()
            || changeset.roles.is_some()
            || changeset.email_verified.is_some()
            || changeset.disabled_at.is_some()
            || changeset.password_hash.is_some();
        sets_any.then_some(changeset)
    }
}

/// `text` as a LIKE pattern that matches it anywhere, its wildcards and the
/// escape character taken literally (`ESCAPE '\'`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn email_taken(error: QueryError) -> Error {
    match error {
        QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Error::EmailTaken,
        error => query_error(error),
    }
}

impl Database {
    /// Up to `limit` users matching `filter`, by id (creation order), after
    /// the user with id `after`.
    pub(crate) async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<User>, Error> {
        let after = after.map(|id| id.to_string());
        let text = filter.text.as_deref().map(contains_pattern);
        let role = filter
            .role
            .as_ref()
            .map(|role| contains_pattern(&format!(" {} ", role.as_str())));
        let rows: Vec<UserRow> = with_conn!(self, |conn| {
            let mut query = users::table
                .select(UserRow::as_select())
                .order(users::id)
                .limit(limit)
                .into_boxed();
            if let Some(after) = &after {
                query = query.filter(users::id.gt(after));
            }
            if let Some(text) = &text {
                query = query.filter(
                    users::email
                        .like(text)
                        .escape('\\')
                        .or(lower(users::username).like(text).escape('\\')),
                );
            }
            if let Some(role) = &role {
                query = query.filter(
                    " ".into_sql::<Text>()
                        .concat(users::roles)
                        .concat(" ")
                        .like(role)
                        .escape('\\'),
                );
            }
            query = match filter.disabled {
                Some(true) => query.filter(users::disabled_at.is_not_null()),
                Some(false) => query.filter(users::disabled_at.is_null()),
                None => query,
            };
            query.load(conn).await.map_err(query_error)
        })?;
        rows.into_iter()
            .map(|row| row.into_user().map(|(user, _)| user))
            .collect()
    }

    pub(crate) async fn find_user(&self, id: Uuid) -> Result<Option<User>, Error> {
        let row = with_conn!(self, |conn| users::table
            .find(id.to_string())
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(|row| row.into_user().map(|(user, _)| user))
            .transpose()
    }

    /// Changes one user as `decide` says, given the user as it is once its
    /// row is locked, and records the change's events, all in one
    /// transaction. None if there is no such user. A new email another user
    /// has is [`Error::EmailTaken`].
    pub(crate) async fn change_user<F>(&self, id: Uuid, decide: F) -> Result<Option<User>, Error>
    where
        F: FnOnce(&User) -> UserChange + Send + 'static,
    {
        let db = self.clone();
        run_detached(async move { db.apply_change(id, decide).await }).await
    }

    async fn apply_change<F>(&self, id: Uuid, decide: F) -> Result<Option<User>, Error>
    where
        F: FnOnce(&User) -> UserChange + Send + 'static,
    {
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        let window = self.revocation_window;
        let id = &id.to_string();
        let row = with_conn!(self, |conn| conn
            .transaction::<_, QueryError, _>(async |conn| {
                // The no-op update takes the row lock first, so that what
                // `decide` sees is still true at commit.
                let found = diesel::update(users::table.find(id))
                    .set(users::password_version.eq(users::password_version))
                    .execute(conn)
                    .await?
                    == 1;
                if !found {
                    return Ok(None);
                }
                let before = users::table
                    .find(id)
                    .select(UserRow::as_select())
                    .first(conn)
                    .await?
                    .into_user()
                    .map_err(|error| QueryError::QueryBuilderError(error.into()))?;
                let change = decide(&before.0);
                if let Some(changeset) = UserChangeset::new(&change, before.1.version, now) {
                    diesel::update(users::table.find(id))
                        .set(changeset)
                        .execute(conn)
                        .await?;
                }
                // A reset link mailed before must not undo a new password,
                // nor outlive the address it was sent to.
                if change.password_hash.is_some() || change.email.is_some() {
                    retire_tokens!(conn, id, TokenPurpose::PasswordReset, now);
                }
                let after = users::table
                    .find(id)
                    .select(UserRow::as_select())
                    .first(conn)
                    .await?;
                conn.announce_user_change(id).await?;
                if change.revoke_sessions {
                    let live = live_sessions!(conn, id);
                    conn.end_sessions(&live, Ending::new(now, window)).await?;
                }
                conn.append_audit(&change.events).await?;
                Ok(Some(after))
            })
            .await
            .map_err(email_taken))?;
        row.map(|row| row.into_user().map(|(user, _)| user))
            .transpose()
    }

    /// Deletes a user (sessions and refresh tokens go with it, their
    /// revocations stay) and records `events`; false, recording nothing, if
    /// there is no such user.
    pub(crate) async fn delete_user(
        &self,
        id: Uuid,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let db = self.clone();
        run_detached(async move {
            let id = &id.to_string();
            let events = &events;
            let ending = db.ending_now();
            with_conn!(&db, |conn| conn
                .transaction::<_, QueryError, _>(async |conn| {
                    // Before the cascade removes the sessions it must
                    // record.
                    conn.announce_user_change(id).await?;
                    let live = live_sessions!(conn, id);
                    conn.end_sessions(&live, ending).await?;
                    let deleted = diesel::delete(users::table.find(id)).execute(conn).await? == 1;
                    if deleted {
                        conn.append_audit(events).await?;
                    }
                    Ok(deleted)
                })
                .await
                .map_err(query_error))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
    }
}
