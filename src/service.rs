//! The core of authd: what Signup, Login and GetMe mean, independent of gRPC.
//! Inputs are already-validated domain values; outputs are domain values or
//! an [`Error`].

use std::sync::Arc;

use crate::{
    Error,
    domain::{Credentials, NewUser, User},
    password::Hasher,
    store::{Database, NewUserRecord},
    token::{AccessToken, Claims, Tokens},
};

#[derive(Clone)]
pub struct Accounts {
    db: Database,
    hasher: Hasher,
    tokens: Arc<Tokens>,
}

impl Accounts {
    pub fn new(db: Database, hasher: Hasher, tokens: Arc<Tokens>) -> Self {
        Self { db, hasher, tokens }
    }

    /// Hashes first, then inserts: no connection is held during bcrypt, and
    /// the unique index (not a prior lookup) decides duplicates.
    pub async fn signup(&self, new: NewUser) -> Result<User, Error> {
        let password_hash = self.hasher.hash(&new.password).await?;
        self.db
            .insert_user(NewUserRecord {
                email: &new.email,
                username: &new.username,
                password_hash: &password_hash,
            })
            .await
    }

    /// Unknown email and wrong password take the same path through one
    /// bcrypt verify and end in the same error.
    pub async fn login(&self, credentials: Credentials) -> Result<AccessToken, Error> {
        let (user, hash) = self
            .db
            .find_user_by_email(&credentials.email)
            .await?
            .unzip();
        let verified = self
            .hasher
            .verify(&credentials.password, hash.as_ref())
            .await?;
        match user {
            Some(user) if verified => self.tokens.issue(user.id),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// The token was verified by the transport layer; this only checks that
    /// its user still exists.
    pub async fn me(&self, claims: &Claims) -> Result<User, Error> {
        self.db
            .find_user_by_id(claims.user_id()?)
            .await?
            .ok_or(Error::InvalidToken)
    }
}
