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
}

impl UserRow {
    pub(super) fn into_user(self) -> Result<(User, PasswordHash), Error> {
        let user = User {
            id: Uuid::parse_str(&self.id).map_err(Error::internal)?,
            email: Email::from_stored(self.email),
            username: Username::from_stored(self.username),
            created_at: self.created_at.and_utc(),
        };
        Ok((user, PasswordHash::from_stored(self.password_hash)))
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
    ) -> Result<Option<(User, PasswordHash)>, Error> {
        let row = with_conn!(self, |conn| users::table
            .filter(users::email.eq(email.as_str()))
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()
            .map_err(query_error))?;
        row.map(UserRow::into_user).transpose()
    }

    /// Swaps a password hash for a rehash of the same password, unless the
    /// password changed in the meantime.
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
