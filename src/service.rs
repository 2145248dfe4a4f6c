//! The core of authd: what each RPC means, independent of gRPC. Inputs are
//! already-validated domain values; outputs are domain values or an
//! [`Error`].

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use crate::{
    Error,
    domain::{Credentials, NewUser, Password, User},
    limits::Limits,
    password::{Hasher, PasswordHash},
    session::RefreshToken,
    store::{Database, NewUserRecord, RefreshRecord, Revoke, Rotation},
    token::{AccessToken, Claims, Tokens},
};

/// How long refresh tokens live and how reuse is judged.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub refresh_ttl: Duration,
    pub reuse_grace: Duration,
}

/// The tokens of a session: what Login and Refresh hand out.
pub struct SessionTokens {
    pub access: AccessToken,
    pub refresh: RefreshToken,
}

#[derive(Clone)]
pub struct Accounts {
    db: Database,
    hasher: Hasher,
    tokens: Arc<Tokens>,
    limits: Limits,
    sessions: SessionSettings,
}

impl Accounts {
    pub fn new(
        db: Database,
        hasher: Hasher,
        tokens: Arc<Tokens>,
        limits: Limits,
        sessions: SessionSettings,
    ) -> Self {
        Self {
            db,
            hasher,
            tokens,
            limits,
            sessions,
        }
    }

    /// Hashes first, then inserts: no connection is held during bcrypt, and
    /// the unique index (not a prior lookup) decides duplicates.
    pub async fn signup(&self, new: NewUser) -> Result<User, Error> {
        let slot = self.hasher.slot().await?;
        let password_hash = self.hasher.hash(slot, &new.password).await?;
        self.db
            .insert_user(NewUserRecord {
                email: &new.email,
                username: &new.username,
                password_hash: &password_hash,
            })
            .await
    }

    /// Unknown email and wrong password take the same path through the
    /// account throttle and one bcrypt verify, and end in the same error.
    /// Success starts a session.
    pub async fn login(&self, credentials: Credentials) -> Result<SessionTokens, Error> {
        let (user, hash) = self
            .db
            .find_user_by_email(&credentials.email)
            .await?
            .unzip();
        let slot = self.hasher.slot().await?;
        // Counted only now that a hash is about to run: calls refused by a
        // full stage, or abandoned in its queue, never guessed anything.
        self.limits.begin_login(&credentials.email).await?;
        let verified = self
            .hasher
            .verify(slot, &credentials.password, hash.as_ref())
            .await?;
        let (user, hash) = match (user, hash) {
            (Some(user), Some(hash)) if verified => (user, hash),
            _ => {
                self.limits.login_failed();
                return Err(Error::InvalidCredentials);
            }
        };
        self.limits.login_succeeded(&credentials.email).await;
        self.rehash_if_outdated(&user, &hash, &credentials.password)
            .await;
        let refresh = RefreshToken::generate()?;
        let session_id = self
            .db
            .create_session(user.id, self.refresh_record(&refresh.hash())?)
            .await?;
        Ok(SessionTokens {
            access: self.tokens.issue(user.id, session_id)?,
            refresh,
        })
    }

    /// Spends a refresh token for the session's next tokens; see
    /// [`Database::rotate_refresh_token`] for the concurrency rules.
    pub async fn refresh(&self, presented: &str) -> Result<SessionTokens, Error> {
        let Some(presented) = RefreshToken::parse(presented) else {
            self.limits.refresh_token_invalid();
            return Err(Error::InvalidRefreshToken);
        };
        let successor = RefreshToken::generate()?;
        let rotation = self
            .db
            .rotate_refresh_token(
                &presented.hash(),
                self.refresh_record(&successor.hash())?,
                &presented.seal(&successor),
                self.sessions.reuse_grace,
            )
            .await?;
        let (user_id, session_id, refresh) = match rotation {
            Rotation::Rotated {
                session_id,
                user_id,
            } => (user_id, session_id, successor),
            Rotation::Replayed {
                session_id,
                user_id,
                successor_sealed,
            } => {
                let replayed = presented
                    .unseal(&successor_sealed)
                    .ok_or_else(|| Error::internal("a stored successor does not unseal"))?;
                (user_id, session_id, replayed)
            }
            Rotation::Reused { session_id } => {
                // The session id, never the token: enough to investigate.
                tracing::warn!(%session_id, "refresh token reused: session revoked");
                self.limits.refresh_token_reused();
                return Err(Error::InvalidRefreshToken);
            }
            Rotation::Rejected => {
                self.limits.refresh_token_invalid();
                return Err(Error::InvalidRefreshToken);
            }
        };
        Ok(SessionTokens {
            access: self.tokens.issue(user_id, session_id)?,
            refresh,
        })
    }

    /// The caller's profile, if the token's session is still live.
    pub async fn me(&self, claims: &Claims) -> Result<User, Error> {
        self.live_session_user(claims).await.map(|(user, _)| user)
    }

    pub async fn logout(&self, claims: &Claims, all_sessions: bool) -> Result<(), Error> {
        let (user, _) = self.live_session_user(claims).await?;
        let scope = if all_sessions {
            Revoke::User(user.id)
        } else {
            Revoke::Session(claims.session_id()?)
        };
        self.db.revoke_sessions(scope).await
    }

    /// Checks the current password, stores the new one and ends every other
    /// session of the user, so a thief's sessions die with the old password.
    pub async fn change_password(
        &self,
        claims: &Claims,
        current: Password,
        new: Password,
    ) -> Result<(), Error> {
        let (user, hash) = self.live_session_user(claims).await?;
        let slot = self.hasher.slot().await?;
        // The same throttle as Login: a stolen access token must not become
        // a way to guess the password.
        self.limits.begin_login(&user.email).await?;
        if !self.hasher.verify(slot, &current, Some(&hash)).await? {
            return Err(Error::WrongPassword);
        }
        self.limits.login_succeeded(&user.email).await;
        let slot = self.hasher.slot().await?;
        let new_hash = self.hasher.hash(slot, &new).await?;
        self.db
            .change_password(user.id, claims.session_id()?, &new_hash)
            .await
    }

    /// A token's claims if it is active right now: valid and its session
    /// live. Anything else is simply inactive.
    pub async fn introspect(&self, token: &str) -> Result<Option<Claims>, Error> {
        let Ok(claims) = self.tokens.verify(token) else {
            return Ok(None);
        };
        match self.live_session_user(&claims).await {
            Ok(_) => Ok(Some(claims)),
            Err(Error::InvalidToken) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A hash made at another cost than the configured one is replaced
    /// while the password is at hand. Best effort: the login has succeeded
    /// either way, and a busy hashing stage simply tries next time.
    async fn rehash_if_outdated(&self, user: &User, stored: &PasswordHash, password: &Password) {
        if stored.cost() == Some(self.hasher.cost()) {
            return;
        }
        let rehashed = match self.hasher.slot().await {
            Ok(slot) => match self.hasher.hash(slot, password).await {
                Ok(hash) => self.db.replace_password_hash(user.id, stored, &hash).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = rehashed {
            tracing::warn!(%error, "password rehash skipped");
        }
    }

    /// The token's signature was checked at the edge; its session can only be
    /// checked here, against the database, so revocation takes effect at once.
    async fn live_session_user(&self, claims: &Claims) -> Result<(User, PasswordHash), Error> {
        self.db
            .session_user(claims.session_id()?, claims.user_id()?)
            .await?
            .ok_or(Error::InvalidToken)
    }

    fn refresh_record<'a>(&self, token_hash: &'a str) -> Result<RefreshRecord<'a>, Error> {
        let ttl = chrono::Duration::from_std(self.sessions.refresh_ttl).map_err(Error::internal)?;
        Ok(RefreshRecord {
            token_hash,
            expires_at: Utc::now() + ttl,
        })
    }
}
