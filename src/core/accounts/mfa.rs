//! The second factor: enrolling TOTP, recovery codes, and finishing a Login
//! with a code. Every wrong password or code here counts as a failed login
//! of the account, so the lockout bounds guessing whatever the RPC.

use std::time::Duration;

use authd_verify::Claims;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{Accounts, SessionTokens};
use crate::{
    core::refresh_token::RefreshToken,
    core::totp::{Enrollment, matching_step, recovery_code_hash, recovery_codes},
    domain::{
        Error, FieldViolation, Password, User,
        audit::{Actor, AuditEvent, EventType, Origin},
        mfa::{Amr, SecondFactor, TotpCode},
        session::Device,
    },
    store::{AfterFactor, Challenge, Factor, StoredPassword},
};

/// A Login waiting for its second factor. The token is of the same make as
/// a refresh token: 256 random bits, stored only as a hash.
pub(crate) struct MfaChallenge {
    pub(crate) token: RefreshToken,
    pub(crate) expires_in: Duration,
}

impl Accounts {
    /// Stores a challenge for a user whose password at `password_version`
    /// was just verified.
    pub(super) async fn challenge(
        &self,
        user_id: Uuid,
        password_version: i64,
    ) -> Result<MfaChallenge, Error> {
        let token = RefreshToken::generate()?;
        let ttl = chrono::Duration::from_std(self.totp.challenge_ttl).map_err(Error::internal)?;
        self.db
            .create_mfa_challenge(
                token.hash(),
                Challenge {
                    user_id,
                    password_version,
                },
                Utc::now() + ttl,
            )
            .await?;
        Ok(MfaChallenge {
            token,
            expires_in: self.totp.challenge_ttl,
        })
    }

    /// Finishes a Login with a TOTP or recovery code: the session starts as
    /// Login's would, with `amr` `pwd otp`. A challenge that is unknown,
    /// expired or spent is refused like a wrong code.
    pub(crate) async fn complete_login(
        &self,
        mfa_token: &str,
        code: SecondFactor,
        device: Device,
        origin: &Origin,
    ) -> Result<SessionTokens, Error> {
        let token = RefreshToken::parse(mfa_token).ok_or(Error::InvalidSecondFactor)?;
        let challenge = self
            .db
            .mfa_challenge(&token.hash())
            .await?
            .ok_or(Error::InvalidSecondFactor)?;
        let user = self
            .db
            .find_user(challenge.user_id)
            .await?
            .ok_or(Error::InvalidSecondFactor)?;
        if user.disabled {
            return Err(Error::AccountDisabled);
        }
        self.spend(
            &user,
            &code,
            AfterFactor::Challenge(token.hash()),
            Vec::new(),
            origin,
        )
        .await?;
        self.start_session(
            &user,
            challenge.password_version,
            device,
            Amr::PasswordAndOtp,
            origin,
        )
        .await
    }

    /// A new pending secret for the caller, replacing any pending one.
    pub(crate) async fn enroll_totp(
        &self,
        claims: &Claims,
        current: Password,
        origin: &Origin,
    ) -> Result<Enrollment, Error> {
        let (user, password) = self.live_session_user(claims).await?;
        self.check_password(&user, &password, &current, origin)
            .await?;
        self.limits.login_succeeded(&user.email).await;
        let enrollment = self.totp.enroll(user.email.as_str())?;
        let sealed = self
            .keks
            .seal_totp(user.id, enrollment.secret.expose_secret())?;
        let event = self.event(EventType::TotpEnrolled, &user, claims, origin)?;
        if !self.db.enroll_totp(user.id, sealed, event).await? {
            return Err(Error::TotpState("TOTP is already active"));
        }
        Ok(enrollment)
    }

    /// Activates the pending secret with a current code; the recovery codes,
    /// returned here only.
    pub(crate) async fn confirm_totp(
        &self,
        claims: &Claims,
        code: TotpCode,
        origin: &Origin,
    ) -> Result<Vec<SecretString>, Error> {
        let (user, _) = self.live_session_user(claims).await?;
        let stored = match self.db.totp_secret(user.id).await? {
            None => {
                return Err(Error::TotpState(
                    "no TOTP enrollment is pending: call EnrollTotp first",
                ));
            }
            Some(stored) if stored.active => {
                return Err(Error::TotpState("TOTP is already active"));
            }
            Some(stored) => stored,
        };
        let secret = self.keks.open_totp(user.id, &stored.secret)?;
        let Some(step) = matching_step(&secret, &code, now()) else {
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: "code",
                description: "does not match the enrolled secret: enter the code the app shows now"
                    .into(),
            }]));
        };
        let (shown, hashes) = recovery_codes()?;
        let event = self.event(EventType::TotpEnabled, &user, claims, origin)?;
        if !self.db.enable_totp(user.id, step, hashes, event).await? {
            return Err(Error::TotpState("TOTP is already active"));
        }
        Ok(shown)
    }

    /// Turns TOTP off, given the password and a TOTP or recovery code.
    pub(crate) async fn disable_totp(
        &self,
        claims: &Claims,
        current: Password,
        code: SecondFactor,
        origin: &Origin,
    ) -> Result<(), Error> {
        let (user, password) = self.live_session_user(claims).await?;
        self.require_active(user.id).await?;
        self.check_password(&user, &password, &current, origin)
            .await?;
        let event = self.event(EventType::TotpDisabled, &user, claims, origin)?;
        self.spend(&user, &code, AfterFactor::Disable, vec![event], origin)
            .await?;
        self.limits.login_succeeded(&user.email).await;
        Ok(())
    }

    /// Replaces every recovery code, given a TOTP code.
    pub(crate) async fn regenerate_recovery_codes(
        &self,
        claims: &Claims,
        code: TotpCode,
        origin: &Origin,
    ) -> Result<Vec<SecretString>, Error> {
        let (user, _) = self.live_session_user(claims).await?;
        self.require_active(user.id).await?;
        let (shown, hashes) = recovery_codes()?;
        let event = self.event(EventType::RecoveryCodesRegenerated, &user, claims, origin)?;
        self.spend(
            &user,
            &SecondFactor::Totp(code),
            AfterFactor::ReplaceRecoveryCodes(hashes),
            vec![event],
            origin,
        )
        .await?;
        self.limits.login_succeeded(&user.email).await;
        Ok(shown)
    }

    async fn require_active(&self, user_id: Uuid) -> Result<(), Error> {
        if self.db.totp_active(user_id).await? {
            Ok(())
        } else {
            Err(Error::TotpState("TOTP is not active"))
        }
    }

    /// Checks the caller's current password as Login does: one attempt of
    /// the account's login budget, left counted for the caller to clear once
    /// everything it asks for is proven.
    pub(super) async fn check_password(
        &self,
        user: &User,
        stored: &StoredPassword,
        given: &Password,
        origin: &Origin,
    ) -> Result<(), Error> {
        let slot = self.hasher.slot().await?;
        self.begin_attempt(user, origin).await?;
        if self.hasher.verify(slot, given, Some(&stored.hash)).await? {
            return Ok(());
        }
        self.failed_attempt(user, origin, "wrong_password", Error::WrongPassword)
            .await
    }

    /// Spends `code` of the user's active TOTP, doing `after` in the same
    /// transaction as `events`. A wrong, replayed or used code is a failed
    /// login of the account.
    async fn spend(
        &self,
        user: &User,
        code: &SecondFactor,
        after: AfterFactor,
        mut events: Vec<AuditEvent>,
        origin: &Origin,
    ) -> Result<(), Error> {
        self.begin_attempt(user, origin).await?;
        let factor = match self.db.totp_secret(user.id).await? {
            Some(stored) if stored.active => match code {
                SecondFactor::Totp(code) => {
                    let secret = self.keks.open_totp(user.id, &stored.secret)?;
                    matching_step(&secret, code, now()).map(Factor::Step)
                }
                SecondFactor::Recovery(code) => {
                    events.push(
                        AuditEvent::new(EventType::RecoveryCodeUsed, Actor::User(user.id), origin)
                            .user(user.id),
                    );
                    Some(Factor::RecoveryCode(recovery_code_hash(code)))
                }
            },
            _ => None,
        };
        let spent = match factor {
            Some(factor) => {
                self.db
                    .spend_second_factor(user.id, factor, after, events)
                    .await?
            }
            None => false,
        };
        if spent {
            return Ok(());
        }
        self.failed_attempt(user, origin, "invalid_code", Error::InvalidSecondFactor)
            .await
    }

    /// Counts and records a failed login of the user for `reason`, and
    /// answers `error`; the attempt stays reserved.
    async fn failed_attempt(
        &self,
        user: &User,
        origin: &Origin,
        reason: &str,
        error: Error,
    ) -> Result<(), Error> {
        self.limits.login_failed();
        self.db
            .record(vec![
                AuditEvent::new(EventType::LoginFailed, Actor::Anonymous, origin)
                    .user(user.id)
                    .detail("reason", reason),
            ])
            .await?;
        Err(error)
    }

    /// Reserves one attempt of the account's login budget; a locked account
    /// is refused and the refusal recorded.
    async fn begin_attempt(&self, user: &User, origin: &Origin) -> Result<(), Error> {
        let Err(error) = self.limits.begin_login(&user.email).await else {
            return Ok(());
        };
        if matches!(error, Error::AccountLocked { .. }) {
            self.db
                .record(vec![
                    AuditEvent::new(EventType::LoginThrottled, Actor::Anonymous, origin)
                        .user(user.id),
                ])
                .await?;
        }
        Err(error)
    }

    fn event(
        &self,
        kind: EventType,
        user: &User,
        claims: &Claims,
        origin: &Origin,
    ) -> Result<AuditEvent, Error> {
        Ok(AuditEvent::new(kind, Actor::User(user.id), origin)
            .user(user.id)
            .session(claims.session_id()?))
    }
}

/// Unix seconds; a clock before 1970 reads as 1970, where no code matches.
fn now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or_default()
}
