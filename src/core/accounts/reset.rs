//! Password reset by mail. A request is answered before anything is looked
//! up: a bounded queue hands the address to a worker that finds the account
//! and queues the mail, so known and unknown addresses get the same answer
//! in the same time, and a flood of requests is dropped at the queue
//! instead of growing memory.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::Accounts;
use crate::{
    core::passwords::Owner,
    domain::{
        Email, Error, Password,
        audit::{Actor, AuditEvent, EventType, Origin},
        mail::{MailToken, TokenPurpose},
    },
    store::AfterSpend,
};

/// Requests waiting for the worker; more are dropped (and counted).
const QUEUE: usize = 256;

pub(super) struct ResetRequest {
    email: Email,
    origin: Origin,
}

/// The queue between RequestPasswordReset and its worker.
#[derive(Clone)]
pub(super) struct ResetQueue {
    sender: mpsc::Sender<ResetRequest>,
    /// Taken by the worker when the application starts serving.
    receiver: Arc<Mutex<Option<mpsc::Receiver<ResetRequest>>>>,
}

impl Default for ResetQueue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: Arc::new(Mutex::new(Some(receiver))),
        }
    }
}

impl Accounts {
    /// Takes a reset request for `email`; the mail, if the address is an
    /// account's, is queued after the call is answered.
    pub(crate) fn request_password_reset(&self, email: Email, origin: Origin) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        if self
            .resets
            .sender
            .try_send(ResetRequest { email, origin })
            .is_err()
        {
            self.metrics.mail_request_dropped();
        }
        Ok(())
    }

    /// Works through reset requests until `stop` completes, then through
    /// those already answered, so a restart loses none it has taken;
    /// returns at once if another worker already took the queue.
    pub(crate) async fn serve_reset_requests(self, stop: impl Future<Output = ()>) {
        let taken = self
            .resets
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut requests) = taken else {
            return;
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.send_reset(request).await,
                    None => return,
                },
                () = &mut stop => break,
            }
        }
        requests.close();
        while let Some(request) = requests.recv().await {
            self.send_reset(request).await;
        }
    }

    async fn send_reset(&self, request: ResetRequest) {
        if let Err(error) = self.queue_reset_mail(request).await {
            tracing::warn!(%error, "password reset mail not queued");
        }
    }

    /// Queues a reset mail to the account with this email, if it is a
    /// known, enabled one. Its stored address is the recipient, not the
    /// one typed.
    async fn queue_reset_mail(&self, request: ResetRequest) -> Result<(), Error> {
        let Some((user, _)) = self.db.find_user_by_email(&request.email).await? else {
            return Ok(());
        };
        if user.disabled {
            return Ok(());
        }
        let event = AuditEvent::new(
            EventType::PasswordResetRequested,
            Actor::Anonymous,
            &request.origin,
        )
        .user(user.id);
        self.mail
            .issue_token(
                user.id,
                &user.email,
                TokenPurpose::PasswordReset,
                vec![event],
            )
            .await
            .map(drop)
    }

    /// Sets a new password with a reset token: the same password rules as
    /// Signup, every session of the user ended, the login throttle of the
    /// account cleared. The token is checked before the hash is spent on
    /// it, and spent in the transaction that sets the password.
    pub(crate) async fn reset_password(
        &self,
        token: Option<MailToken>,
        new: Password,
        origin: &Origin,
    ) -> Result<(), Error> {
        if !self.mail.enabled() {
            return Err(Error::MailNotConfigured);
        }
        let purpose = TokenPurpose::PasswordReset;
        let Some(token) = token else {
            return Err(self.rejected_token());
        };
        let hash = token.hash();
        let Some(bound) = self.db.live_mail_token(&hash, purpose).await? else {
            return Err(self.rejected_token());
        };
        if let Some(user) = self.db.find_user(bound.user_id).await? {
            self.passwords
                .check("new_password", &new, Owner::of(&user))
                .await?;
        }
        let slot = self.hasher.slot().await?;
        let new_hash = self.hasher.hash(slot, &new).await?;
        let origin = origin.clone();
        let spent = self
            .db
            .spend_mail_token(
                hash,
                purpose,
                AfterSpend::ResetPassword(new_hash),
                move |user_id: Uuid| {
                    vec![
                        AuditEvent::new(EventType::PasswordReset, Actor::User(user_id), &origin)
                            .user(user_id),
                    ]
                },
            )
            .await?;
        let Some(spent) = spent else {
            return Err(self.rejected_token());
        };
        self.revocations.settle().await;
        if let Some(user) = self.db.find_user(spent.user_id).await? {
            self.limits.login_succeeded(&user.email).await;
        }
        Ok(())
    }

    pub(super) fn rejected_token(&self) -> Error {
        self.metrics.mail_token_rejected();
        Error::InvalidMailToken
    }
}
