//! Proving an address: the verification mail and its link, and changing
//! the account's email to a new address once a link mailed there proves
//! it. Every token is spent in the transaction that makes its change.

use authd_verify::Claims;
use uuid::Uuid;

use super::Accounts;
use crate::{
    domain::{
        Email, Error, FieldViolation, Password,
        audit::{Actor, AuditEvent, EventType, Origin},
        mail::{MailKind, MailToken, TokenPurpose},
    },
    store::{AfterSpend, NewMail, NewMailToken},
};

impl Accounts {
    /// The verification token and mail of a new account, for Signup to
    /// store with the user; none when mail is off.
    pub(super) fn verification_for(
        &self,
        user_id: Uuid,
        email: &Email,
    ) -> Result<Option<(NewMailToken, NewMail)>, Error> {
        if !self.mail.enabled() {
            return Ok(None);
        }
        self.mail
            .prepare_token(user_id, email, TokenPurpose::VerifyEmail)
            .map(Some)
    }

    /// Mails the caller a new verification link. Earlier links keep
    /// working until they expire or one of them verifies the address.
    pub(crate) async fn send_verification_email(
        &self,
        claims: &Claims,
        origin: &Origin,
    ) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        let (user, _) = self.live_session_user(claims).await?;
        if user.email_verified {
            return Err(Error::EmailAlreadyVerified);
        }
        let event = AuditEvent::new(
            EventType::EmailVerificationRequested,
            Actor::User(user.id),
            origin,
        )
        .user(user.id);
        self.mail
            .issue_token(user.id, &user.email, TokenPurpose::VerifyEmail, vec![event])
            .await
            .map(drop)
    }

    /// Marks the address the token was mailed to verified, if it is still
    /// the account's.
    pub(crate) async fn verify_email(
        &self,
        token: Option<MailToken>,
        origin: &Origin,
    ) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        let Some(token) = token else {
            return Err(self.rejected_token());
        };
        self.spend_token(
            token.hash(),
            TokenPurpose::VerifyEmail,
            AfterSpend::VerifyEmail,
            EventType::EmailVerified,
            origin,
        )
        .await
    }

    /// Mails a confirmation link to `new`, bound to the user and the
    /// address, once the password is proven: a wrong one counts as a
    /// failed login of the account. A newer request's link replaces an
    /// older one's.
    pub(crate) async fn request_email_change(
        &self,
        claims: &Claims,
        new: Email,
        current: Password,
        origin: &Origin,
    ) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        let (user, password) = self.live_session_user(claims).await?;
        self.check_password(&user, &password, &current, origin)
            .await?;
        self.limits.login_succeeded(&user.email).await;
        if new.key() == user.email.key() {
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: "new_email",
                description: "is already this account's email".into(),
            }]));
        }
        if self.db.email_taken(&new).await? {
            return Err(Error::EmailTaken);
        }
        let event = AuditEvent::new(
            EventType::EmailChangeRequested,
            Actor::User(user.id),
            origin,
        )
        .user(user.id);
        self.mail
            .issue_token(user.id, &new, TokenPurpose::ChangeEmail, vec![event])
            .await
            .map(drop)
    }

    /// Makes the address the token was mailed to the account's email,
    /// verified, and mails a notice to the old one: one transaction, in
    /// which the unique index refuses an address taken meanwhile. The old
    /// address is read first, to render the notice; the spend repeats the
    /// read as its condition.
    pub(crate) async fn confirm_email_change(
        &self,
        token: Option<MailToken>,
        origin: &Origin,
    ) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        let Some(token) = token else {
            return Err(self.rejected_token());
        };
        let hash = token.hash();
        let purpose = TokenPurpose::ChangeEmail;
        let Some(bound) = self.db.live_mail_token(&hash, purpose).await? else {
            return Err(self.rejected_token());
        };
        let (Some(user), Some(new)) = (self.db.find_user(bound.user_id).await?, bound.new_email)
        else {
            return Err(self.rejected_token());
        };
        let notice = self
            .mail
            .render(MailKind::EmailChanged, &user.email, None)?;
        let after = AfterSpend::ChangeEmail {
            from: user.email,
            to: Email::from_stored(new, None),
            notice,
        };
        self.spend_token(hash, purpose, after, EventType::EmailChanged, origin)
            .await
    }

    /// Spends a token for `after`, recorded as `kind` done by its user,
    /// then has every replica forget the user's cached profile, which the
    /// change made stale. A token that cannot be spent is refused like any
    /// bad link.
    async fn spend_token(
        &self,
        hash: String,
        purpose: TokenPurpose,
        after: AfterSpend,
        kind: EventType,
        origin: &Origin,
    ) -> Result<(), Error> {
        let origin = origin.clone();
        let spent = self
            .db
            .spend_mail_token(hash, purpose, after, move |user_id: Uuid| {
                vec![AuditEvent::new(kind, Actor::User(user_id), &origin).user(user_id)]
            })
            .await?;
        let Some(spent) = spent else {
            return Err(self.rejected_token());
        };
        self.revocations.user_changed(spent.user_id);
        Ok(())
    }

    /// Tells the owner of a taken address that someone tried to sign up
    /// with it (at most once per address per interval, see
    /// [`Mail::queue_notice`](crate::core::mail::Mail::queue_notice)).
    /// Best effort: the Signup it follows answers the same either way.
    pub(super) async fn signup_attempted(&self, email: &Email, origin: &Origin) {
        let notified = async {
            let Some((user, _)) = self.db.find_user_by_email(email).await? else {
                return Ok(false);
            };
            let event =
                AuditEvent::new(EventType::SignupAttempted, Actor::Anonymous, origin).user(user.id);
            self.mail
                .queue_notice(MailKind::SignupAttempt, &user.email, vec![event])
                .await
        };
        if let Err(error) = notified.await {
            tracing::warn!(%error, "sign-up attempt notice not queued");
        }
    }
}
