use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as QueryError},
};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{Database, query_error, schema::users, with_conn};
use crate::{
    Error,
    domain::{Email, User, Username},
    password::PasswordHash,
};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub(super) struct UserRow {
    id: String,
    email: String,
    username: String,
    password_hash: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    password_version: i64,
}

/// A user's password hash with its version, which every password change
/// bumps: writes that depend on a verified password name the version they
/// verified and are refused once it is no longer current.
#[derive(Debug, Clone)]
pub struct StoredPassword {
    pub hash: PasswordHash,
    pub version: i64,
}

diesel::define_sql_function! {
    /// `substr(text, start, length)`, the same in PostgreSQL and SQLite.
    fn substr(text: diesel::sql_types::Text, start: diesel::sql_types::Integer, length: diesel::sql_types::Integer) -> diesel::sql_types::Text;
}

impl UserRow {
    pub(super) fn into_user(self) -> Result<(User, StoredPassword), Error> {
        let user = User {
            id: Uuid::parse_str(&self.id).map_err(Error::internal)?,
            email: Email::from_stored(self.email),
            username: Username::from_stored(self.username),
            created_at: self.created_at.and_utc(),
        };
        let password = StoredPassword {
            hash: PasswordHash::from_stored(self.password_hash),
            version: self.password_version,
        };
        Ok((user, password))
    }
}

/// A user about to be stored, with the hash already computed so that no
/// connection is held while bcrypt runs.
pub struct NewUserRecord<'a> {
    pub email: &'a Email,
    pub username: &'a Username,
    pub password_hash: &'a PasswordHash,
}

impl Database {
    /// Stores a new user. The unique index on the normalized email turns a
    /// concurrent duplicate into [`Error::EmailTaken`], never a second row.
    pub async fn insert_user(&self, new: NewUserRecord<'_>) -> Result<User, Error> {
        // PostgreSQL keeps microseconds; truncating here means the value the
        // caller sees is the value a later read returns.
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        let row = UserRow {
            id: Uuid::now_v7().to_string(),
            email: new.email.as_str().to_owned(),
            username: new.username.as_str().to_owned(),
            password_hash: new.password_hash.as_str().to_owned(),
            created_at: now,
            updated_at: now,
            password_version: 0,
        };
        let inserted = with_conn!(self, |conn| diesel::insert_into(users::table)
            .values(&row)
            .execute(conn)
            .await);
        match inserted {
            Ok(_) => row.into_user().map(|(user, _)| user),
            Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                Err(Error::EmailTaken)
            }
            Err(e) => Err(query_error(e)),
        }
    }

    pub async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, StoredPassword)>, Error> {
        let row = with_conn!(self, |conn| users::table
            .filter(users::email.eq(email.as_str()))
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(UserRow::into_user).transpose()
    }

    /// Whether a user with this email exists: the cheap check that lets a
    /// duplicate signup be refused without spending a hash.
    pub async fn email_taken(&self, email: &Email) -> Result<bool, Error> {
        with_conn!(self, |conn| diesel::select(diesel::dsl::exists(
            users::table.filter(users::email.eq(email.as_str()))
        ))
        .get_result(conn)
        .await
        .map_err(query_error))
    }

    /// The highest bcrypt cost among stored hashes (`$2b$12$…` keeps it in
    /// two zero-padded digits, so the text maximum is the numeric one).
    pub async fn max_password_cost(&self) -> Result<Option<u32>, Error> {
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
    pub async fn replace_password_hash(
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
