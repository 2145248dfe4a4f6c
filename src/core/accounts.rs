//! The core of authd: what each RPC means, independent of gRPC. Inputs are
//! already-validated domain values; outputs are domain values or an
//! [`Error`].

mod email;
mod mfa;
mod reset;
mod service_tokens;
mod sessions;
mod signups;

use std::{sync::Arc, time::Duration};

use authd_verify::Claims;
use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::{
    core::hasher::Hasher,
    core::kek::Keks,
    core::mail::Mail,
    core::passwords::{Owner, PasswordPolicy},
    core::refresh_token::RefreshToken,
    core::revocations::Revocations,
    core::throttle::Limits,
    core::tokens::{AccessToken, Subject, Tokens},
    core::totp::TotpSettings,
    domain::Error,
    domain::PasswordHash,
    domain::{
        Credentials, Email, NewUser, Password, Roles, User, Username,
        audit::{Actor, AuditEvent, EventType, Origin},
        mfa::Amr,
        session::Device,
    },
    infra::metrics::Metrics,
    store::{Database, NewSession, NewUserRecord, RefreshRecord, Revoke, Rotation, StoredPassword},
};
pub(crate) use mfa::MfaChallenge;
use reset::ResetQueue;
use signups::SignupLine;

/// How long refresh tokens live, how reuse is judged, when a session dies
/// of itself and how long ended sessions are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings {
    pub(crate) refresh_ttl: Duration,
    pub(crate) reuse_grace: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_per_user: Option<usize>,
    pub(crate) retention: Duration,
}

/// What an account must have proven before it may log in, and so what
/// Signup may tell about an address.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccountSettings {
    /// Login refuses an account whose address is not verified, and Signup
    /// answers a taken address as it answers a free one: an address that
    /// cannot be used before it is proven gains nothing from being refused
    /// as taken, which would tell anyone who has an account.
    pub(crate) require_verified_email: bool,
}

/// The tokens of a session: what Login and Refresh hand out.
pub(crate) struct SessionTokens {
    pub(crate) access: AccessToken,
    pub(crate) refresh: RefreshToken,
}

/// What a right password gets: a session, or the challenge of the user's
/// second factor.
pub(crate) enum LoginOutcome {
    Session(SessionTokens),
    Challenge(MfaChallenge),
}

/// What Login answers: its outcome, and whether the password, right as it
/// was, is one attackers know (common, or in the breached list), so the app
/// can ask the user to change it.
pub(crate) struct LoggedIn {
    pub(crate) outcome: LoginOutcome,
    pub(crate) password_compromised: bool,
}

#[derive(Clone)]
pub(crate) struct Accounts {
    db: Database,
    hasher: Hasher,
    tokens: Arc<Tokens>,
    limits: Limits,
    settings: AccountSettings,
    sessions: SessionSettings,
    signups: SignupLine,
    revocations: Revocations,
    keks: Arc<Keks>,
    totp: TotpSettings,
    mail: Mail,
    metrics: Metrics,
    resets: ResetQueue,
    passwords: PasswordPolicy,
}

/// What Accounts needs besides the database, the hashing stage and the
/// tokens.
pub(crate) struct AccountParts {
    pub(crate) settings: AccountSettings,
    pub(crate) limits: Limits,
    pub(crate) sessions: SessionSettings,
    pub(crate) revocations: Revocations,
    pub(crate) keks: Arc<Keks>,
    pub(crate) totp: TotpSettings,
    pub(crate) mail: Mail,
    pub(crate) metrics: Metrics,
    pub(crate) passwords: PasswordPolicy,
}

impl Accounts {
    pub(crate) fn new(
        db: Database,
        hasher: Hasher,
        tokens: Arc<Tokens>,
        parts: AccountParts,
    ) -> Self {
        let AccountParts {
            settings,
            limits,
            sessions,
            revocations,
            keks,
            totp,
            mail,
            metrics,
            passwords,
        } = parts;
        Self {
            db,
            hasher,
            tokens,
            limits,
            settings,
            sessions,
            signups: SignupLine::default(),
            revocations,
            keks,
            totp,
            mail,
            metrics,
            resets: ResetQueue::default(),
            passwords,
        }
    }

    /// A duplicate is refused before the hashing stage: signups of one email
    /// take turns in this process and each first looks the email up, so a
    /// double submit or a flood of one address costs no bcrypt. Then hash,
    /// then insert, holding no connection during bcrypt; the unique index
    /// still decides races between replicas. A password attackers would
    /// guess early is refused before all of it.
    ///
    /// With mail on, the user is stored with a verification token and its
    /// mail, in one transaction.
    ///
    /// With verified emails required, a taken address is not refused: it
    /// costs the same hash and gets a [`stand_in`] user, so neither the
    /// answer nor its time tells whether the address has an account, and
    /// its owner is told of the attempt by mail.
    pub(crate) async fn signup(&self, new: NewUser, origin: &Origin) -> Result<User, Error> {
        let owner = Owner {
            email: &new.email,
            username: &new.username,
        };
        self.passwords
            .check("password", &new.password, owner)
            .await?;
        let hide_taken = self.settings.require_verified_email;
        let _turn = self.signups.turn(&new.email).await;
        let taken = self.db.email_taken(&new.email).await?;
        if taken && !hide_taken {
            return Err(Error::EmailTaken);
        }
        let slot = self.hasher.slot().await?;
        let password_hash = self.hasher.hash(slot, &new.password).await?;
        let NewUser {
            email, username, ..
        } = new;
        if taken {
            self.signup_attempted(&email, origin).await;
            return Ok(stand_in(email, username));
        }
        let id = Uuid::now_v7();
        let verification = self.verification_for(id, &email)?;
        let inserted = self
            .db
            .insert_user(NewUserRecord {
                id,
                email: email.clone(),
                username: username.clone(),
                password_hash: Some(password_hash),
                roles: Roles::default(),
                email_verified: false,
                verification,
                events: vec![
                    AuditEvent::new(EventType::UserSignedUp, Actor::User(id), origin).user(id),
                ],
            })
            .await;
        match inserted {
            // Another replica signed the address up meanwhile.
            Err(Error::EmailTaken) if hide_taken => {
                self.signup_attempted(&email, origin).await;
                Ok(stand_in(email, username))
            }
            inserted => inserted,
        }
    }

    /// Unknown email and wrong password take the same path through the
    /// account throttle and one bcrypt verify, and end in the same error.
    /// Success starts a session, or, when the user has TOTP active, a
    /// challenge that [`Accounts::complete_login`] finishes.
    pub(crate) async fn login(
        &self,
        credentials: Credentials,
        device: Device,
        origin: &Origin,
    ) -> Result<LoggedIn, Error> {
        let (user, password) = self
            .db
            .find_user_by_email(&credentials.email)
            .await?
            .unzip();
        let failure = |kind| {
            let event = AuditEvent::new(kind, Actor::Anonymous, origin);
            match &user {
                Some(user) => event.user(user.id),
                // The address itself is not kept: it may be anyone's, or a
                // password typed into the wrong field.
                None => event.detail("email_hash", credentials.email.fingerprint()),
            }
        };
        let slot = self.hasher.slot().await?;
        // Counted only now that a hash is about to run: calls refused by a
        // full stage, or abandoned in its queue, never guessed anything.
        if let Err(error) = self.limits.begin_login(&credentials.email).await {
            if matches!(error, Error::AccountLocked { .. }) {
                self.db
                    .record(vec![failure(EventType::LoginThrottled)])
                    .await?;
            }
            return Err(error);
        }
        let verified = self
            .hasher
            .verify(
                slot,
                &credentials.password,
                password.as_ref().map(|password| &password.hash),
            )
            .await?;
        let failed = |reason: &str| failure(EventType::LoginFailed).detail("reason", reason);
        let (user, password) = match (user.clone(), password) {
            (Some(user), Some(password)) if verified => (user, password),
            _ => {
                self.limits.login_failed();
                self.db.record(vec![failed("invalid_credentials")]).await?;
                return Err(Error::InvalidCredentials);
            }
        };
        if user.disabled {
            self.db.record(vec![failed("disabled")]).await?;
            return Err(Error::AccountDisabled);
        }
        // Before any second factor: an unverified account gets no challenge
        // that it could not turn into a session anyway. The password was
        // right, so this attempt is no guess and clears the account's count.
        if self.settings.require_verified_email && !user.email_verified {
            self.limits.login_succeeded(&user.email).await;
            self.db.record(vec![failed("email_not_verified")]).await?;
            let requested = AuditEvent::new(
                EventType::EmailVerificationRequested,
                Actor::User(user.id),
                origin,
            )
            .user(user.id);
            self.mail
                .remind_verification(user.id, &user.email, vec![requested])
                .await?;
            return Err(Error::EmailNotVerified);
        }
        self.rehash_if_outdated(&user, &password.hash, &credentials.password)
            .await;
        let password_compromised = self.passwords.is_compromised(&credentials.password).await?;
        // The attempt stays counted until the second factor is answered, so
        // the password step and every wrong code draw on one budget.
        let outcome = if self.db.totp_active(user.id).await? {
            LoginOutcome::Challenge(self.challenge(user.id, password.version).await?)
        } else {
            LoginOutcome::Session(
                self.start_session(&user, password.version, device, Amr::Password, origin)
                    .await?,
            )
        };
        Ok(LoggedIn {
            outcome,
            password_compromised,
        })
    }

    /// Starts a session for a user who proved `amr`, unless the password
    /// changed after `password_version` was verified: then it is an old
    /// password, refused like any wrong one. Clears the account's failed
    /// logins.
    async fn start_session(
        &self,
        user: &User,
        password_version: i64,
        device: Device,
        amr: Amr,
        origin: &Origin,
    ) -> Result<SessionTokens, Error> {
        let refresh = RefreshToken::generate()?;
        let session_id = Uuid::now_v7();
        let created = self
            .db
            .create_session(NewSession {
                id: session_id,
                user_id: user.id,
                password_version,
                refresh: self.refresh_record(refresh.hash())?,
                device,
                amr,
                limit: self.session_limit(user.id, origin),
                events: vec![
                    AuditEvent::new(EventType::LoginSucceeded, Actor::User(user.id), origin)
                        .user(user.id)
                        .session(session_id)
                        .detail("amr", amr.as_stored()),
                ],
            })
            .await?;
        if self.sessions.max_per_user.is_some() {
            self.revocations.settle().await;
        }
        if !created {
            self.limits.login_failed();
            self.db
                .record(vec![
                    AuditEvent::new(EventType::LoginFailed, Actor::Anonymous, origin)
                        .user(user.id)
                        .detail("reason", "invalid_credentials"),
                ])
                .await?;
            return Err(Error::InvalidCredentials);
        }
        self.limits.login_succeeded(&user.email).await;
        Ok(SessionTokens {
            access: self.tokens.issue(
                Subject::User {
                    user_id: user.id,
                    session_id,
                    session_ends: self.sessions.ends(Utc::now()),
                    amr,
                    email_verified: user.email_verified,
                },
                &user.roles,
            )?,
            refresh,
        })
    }

    /// Spends a refresh token for the session's next tokens; see
    /// [`Database::rotate_refresh_token`] for the concurrency rules.
    pub(crate) async fn refresh(
        &self,
        presented: &str,
        origin: &Origin,
    ) -> Result<SessionTokens, Error> {
        let Some(presented) = RefreshToken::parse(presented) else {
            self.limits.refresh_token_invalid();
            return Err(Error::InvalidRefreshToken);
        };
        let successor = RefreshToken::generate()?;
        let rotation = self
            .db
            .rotate_refresh_token(
                presented.hash(),
                self.refresh_record(successor.hash())?,
                presented.seal(&successor),
                self.sessions.reuse_grace,
                self.sessions.liveness(),
                AuditEvent::new(EventType::RefreshReuseDetected, Actor::Anonymous, origin),
            )
            .await?;
        let (session, refresh) = match rotation {
            Rotation::Rotated(session) => (session, successor),
            Rotation::Replayed {
                session,
                successor_sealed,
            } => {
                let replayed = presented
                    .unseal(&successor_sealed)
                    .ok_or_else(|| Error::internal("a stored successor does not unseal"))?;
                (session, replayed)
            }
            Rotation::Reused { session_id } => {
                self.revocations.settle().await;
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
            access: self.tokens.issue(
                Subject::User {
                    user_id: session.user_id,
                    session_id: session.session_id,
                    session_ends: self.sessions.ends(session.session_created_at),
                    amr: session.amr,
                    email_verified: session.email_verified,
                },
                &session.roles,
            )?,
            refresh,
        })
    }

    /// The caller's profile, if the token's session is still live: from
    /// memory when the revocation view vouches for the session and the
    /// profile was read for it before.
    pub(crate) async fn me(&self, claims: &Claims) -> Result<User, Error> {
        let (user_id, session_id) = (claims.user_id()?, claims.session_id()?);
        match self.revoked_in_view(claims)? {
            Some(true) => return Err(Error::InvalidToken),
            Some(false) => {
                if let Some(user) = self.revocations.profile(user_id, session_id) {
                    return Ok(user);
                }
            }
            None => {}
        }
        let epoch = self.revocations.profile_epoch();
        let (user, _) = self.live_session_user(claims).await?;
        self.revocations
            .keep_profile(session_id, user.clone(), epoch);
        Ok(user)
    }

    pub(crate) async fn logout(
        &self,
        claims: &Claims,
        all_sessions: bool,
        origin: &Origin,
    ) -> Result<(), Error> {
        let user_id = self.live_session(claims).await?;
        let session_id = claims.session_id()?;
        let event = AuditEvent::new(EventType::SessionRevoked, Actor::User(user_id), origin)
            .user(user_id)
            .session(session_id);
        let (scope, event) = if all_sessions {
            (Revoke::User(user_id), event.detail("reason", "logout_all"))
        } else {
            (
                Revoke::Session(session_id),
                event.detail("reason", "logout"),
            )
        };
        self.db.revoke_sessions(scope, event).await?;
        self.revocations.settle().await;
        Ok(())
    }

    /// Checks the current password, stores the new one and ends every other
    /// session of the user, so a thief's sessions die with the old password.
    /// The change applies only to the password it checked: of concurrent
    /// changes one wins and the others are told so.
    pub(crate) async fn change_password(
        &self,
        claims: &Claims,
        current: Password,
        new: Password,
        origin: &Origin,
    ) -> Result<(), Error> {
        let (user, password) = self.live_session_user(claims).await?;
        let session_id = claims.session_id()?;
        // Like the length rules, before the current password is checked:
        // a refusal tells nothing about it and spends no guess.
        self.passwords
            .check("new_password", &new, Owner::of(&user))
            .await?;
        let slot = self.hasher.slot().await?;
        // A stolen access token must neither become a way to guess the
        // password nor lock the owner out: failures count per session, apart
        // from Login, and the guess that reaches the threshold (or any
        // beyond it, sent in parallel) ends the session, refresh token too.
        if !self.limits.begin_password_change(session_id).await {
            return self.end_guessing_session(&user, session_id, origin).await;
        }
        if !self
            .hasher
            .verify(slot, &current, Some(&password.hash))
            .await?
        {
            if self.limits.password_change_exhausted(session_id).await {
                return self.end_guessing_session(&user, session_id, origin).await;
            }
            return Err(Error::WrongPassword);
        }
        self.limits.password_change_succeeded(session_id).await;
        let slot = self.hasher.slot().await?;
        let new_hash = self.hasher.hash(slot, &new).await?;
        let changed = self
            .db
            .change_password(
                user.id,
                password.version,
                session_id,
                new_hash,
                AuditEvent::new(EventType::PasswordChanged, Actor::User(user.id), origin)
                    .user(user.id)
                    .session(session_id),
            )
            .await?;
        self.revocations.settle().await;
        changed.then_some(()).ok_or(Error::PasswordChanged)
    }

    async fn end_guessing_session(
        &self,
        user: &User,
        session_id: Uuid,
        origin: &Origin,
    ) -> Result<(), Error> {
        let event = AuditEvent::new(EventType::SessionRevoked, Actor::System, origin)
            .user(user.id)
            .session(session_id)
            .detail("reason", "password_guessing");
        self.db
            .revoke_sessions(Revoke::Session(session_id), event)
            .await?;
        self.revocations.settle().await;
        tracing::warn!("too many wrong current passwords: session revoked");
        Err(Error::GuessingSessionEnded)
    }

    /// A token's claims if it is active right now: valid, and its session
    /// live or its service account still there. Anything else is simply
    /// inactive.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Option<Claims>, Error> {
        let Ok(claims) = self.tokens.verify(token) else {
            return Ok(None);
        };
        if claims.is_service() {
            let Ok(id) = claims.user_id() else {
                return Ok(None);
            };
            return Ok(self.db.service_account_exists(id).await?.then_some(claims));
        }
        match self.live_session(&claims).await {
            Ok(_) => Ok(Some(claims)),
            Err(Error::InvalidToken) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Only service accounts, still there, may watch revocations: the feed
    /// tells which sessions exist, which is no user's business.
    pub(crate) async fn revocation_watcher(&self, claims: &Claims) -> Result<(), Error> {
        if !claims.is_service() {
            return Err(Error::PermissionDenied(
                "only service account tokens may watch revocations",
            ));
        }
        if self.db.service_account_exists(claims.user_id()?).await? {
            Ok(())
        } else {
            Err(Error::InvalidToken)
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

    /// The token's user, if its session is live. The signature was checked
    /// at the edge; the session is checked against the revocation view when
    /// that is current (a token never outlives its session's limits, so only
    /// revocation can end it early), else against the database.
    async fn live_session(&self, claims: &Claims) -> Result<Uuid, Error> {
        match self.revoked_in_view(claims)? {
            Some(true) => Err(Error::InvalidToken),
            Some(false) => claims.user_id().map_err(Error::from),
            None => self
                .live_session_user(claims)
                .await
                .map(|(user, _)| user.id),
        }
    }

    /// What the revocation view says of the token's session, if it can
    /// tell. A token past its `exp` (accepted within the verifiers' leeway)
    /// may have outlived its session's limits, which only the database
    /// knows.
    fn revoked_in_view(&self, claims: &Claims) -> Result<Option<bool>, Error> {
        if claims.exp <= Utc::now().timestamp() {
            return Ok(None);
        }
        Ok(self.revocations.is_revoked(claims.session_id()?))
    }

    /// The token's session checked against the database, with its user and
    /// password.
    async fn live_session_user(&self, claims: &Claims) -> Result<(User, StoredPassword), Error> {
        self.db
            .session_user(
                claims.session_id()?,
                claims.user_id()?,
                self.sessions.liveness(),
            )
            .await?
            .ok_or(Error::InvalidToken)
    }

    fn refresh_record(&self, token_hash: String) -> Result<RefreshRecord, Error> {
        let ttl = chrono::Duration::from_std(self.sessions.refresh_ttl).map_err(Error::internal)?;
        Ok(RefreshRecord {
            token_hash,
            expires_at: Utc::now() + ttl,
        })
    }
}

/// What Signup answers for a taken address when it must not say so: a user
/// as a new signup returns it, with a fresh id, that exists nowhere. Its
/// `created_at` has the store's precision, as a stored user's has.
fn stand_in(email: Email, username: Username) -> User {
    User {
        id: Uuid::now_v7(),
        email,
        username,
        created_at: Utc::now().trunc_subsecs(6),
        email_verified: false,
        roles: Roles::default(),
        disabled: false,
    }
}
