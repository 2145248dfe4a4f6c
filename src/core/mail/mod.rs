//! Mail: rendering the mails authd sends, queueing them in the outbox with
//! the change they announce, and the sender that delivers them over SMTP.
//!
//! Without `AUTHD_SMTP_URL` there is no sender and every call that would
//! mail answers [`Error::MailNotConfigured`], queueing nothing.

mod sender;
mod templates;

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::Utc;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub(crate) use sender::Sender;
use templates::Templates;

use crate::{
    domain::{
        Email, Error,
        audit::AuditEvent,
        mail::{MailKind, MailToken, TokenPurpose},
    },
    store::{Database, NewMail, NewMailToken},
};

/// Where mail goes out, what it says, and how long its links work.
#[derive(Debug, Clone)]
pub(crate) struct MailSettings {
    /// None: mail is off.
    pub(crate) smtp_url: Option<SecretString>,
    /// The From of every mail, e.g. `authd <no-reply@example.com>`.
    pub(crate) from: Option<String>,
    /// Link templates, each with `{token}`.
    pub(crate) password_reset_url: Option<String>,
    pub(crate) email_verification_url: Option<String>,
    pub(crate) email_change_url: Option<String>,
    pub(crate) password_reset_ttl: Duration,
    pub(crate) email_verification_ttl: Duration,
    /// Files here replace the built-in subjects and bodies.
    pub(crate) template_dir: Option<PathBuf>,
    /// How long the sender keeps retrying a mail before it gives up.
    pub(crate) give_up_after: Duration,
    /// At most one password reset mail per address per this interval.
    pub(crate) reset_interval: Duration,
}

/// The placeholder of a link template.
const TOKEN_PLACEHOLDER: &str = "{token}";

/// What composes mail: cheap to clone. Off (every method answers
/// [`Error::MailNotConfigured`]) when no SMTP server is configured.
#[derive(Clone)]
pub(crate) struct Mail(Option<Arc<Inner>>);

struct Inner {
    db: Database,
    smtp_url: SecretString,
    from: Mailbox,
    /// The right-hand side of every Message-ID: the From address's domain.
    message_id_domain: String,
    links: Links,
    templates: Templates,
    password_reset_ttl: Duration,
    email_verification_ttl: Duration,
    give_up_after: Duration,
    reset_interval: Duration,
}

struct Links {
    password_reset: String,
    email_verification: String,
    email_change: String,
}

impl Mail {
    /// Checks the settings and loads the templates: any mistake is a
    /// startup error that names the setting, never a mail that fails later.
    pub(crate) fn new(settings: &MailSettings, db: Database) -> anyhow::Result<Self> {
        let Some(smtp_url) = settings.smtp_url.clone() else {
            return Ok(Self(None));
        };
        let from: Mailbox = settings
            .from
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("AUTHD_SMTP_URL is set: AUTHD_MAIL_FROM is required"))?
            .parse()
            .map_err(|_| {
                anyhow::anyhow!(
                    "AUTHD_MAIL_FROM must be an address like authd <no-reply@example.com>"
                )
            })?;
        let link = |value: &Option<String>, name: &str| -> anyhow::Result<String> {
            match value {
                Some(value) if value.contains(TOKEN_PLACEHOLDER) => Ok(value.clone()),
                Some(_) => anyhow::bail!("{name} must contain {TOKEN_PLACEHOLDER}"),
                None => anyhow::bail!("AUTHD_SMTP_URL is set: {name} is required"),
            }
        };
        let links = Links {
            password_reset: link(&settings.password_reset_url, "AUTHD_PASSWORD_RESET_URL")?,
            email_verification: link(
                &settings.email_verification_url,
                "AUTHD_EMAIL_VERIFICATION_URL",
            )?,
            email_change: link(&settings.email_change_url, "AUTHD_EMAIL_CHANGE_URL")?,
        };
        let templates = Templates::load(settings.template_dir.as_deref())?;
        // Fails now on a URL lettre cannot use, not at the first mail.
        sender::transport(&smtp_url)?;
        Ok(Self(Some(Arc::new(Inner {
            db,
            smtp_url,
            message_id_domain: from.email.domain().to_owned(),
            from,
            links,
            templates,
            password_reset_ttl: settings.password_reset_ttl,
            email_verification_ttl: settings.email_verification_ttl,
            give_up_after: settings.give_up_after,
            reset_interval: settings.reset_interval,
        }))))
    }

    pub(crate) fn enabled(&self) -> bool {
        self.0.is_some()
    }

    fn inner(&self) -> Result<&Inner, Error> {
        self.0.as_deref().ok_or(Error::MailNotConfigured)
    }

    /// How long a token of `purpose` works.
    pub(crate) fn ttl(&self, purpose: TokenPurpose) -> Result<Duration, Error> {
        let inner = self.inner()?;
        Ok(match purpose {
            TokenPurpose::PasswordReset => inner.password_reset_ttl,
            TokenPurpose::VerifyEmail | TokenPurpose::ChangeEmail => inner.email_verification_ttl,
        })
    }

    /// Renders a mail of `kind` to `recipient`, with `token`'s link for the
    /// kinds that carry one. The Message-ID is made here and stored with
    /// the mail, so every delivery attempt repeats it.
    pub(crate) fn render(
        &self,
        kind: MailKind,
        recipient: &Email,
        token: Option<&MailToken>,
    ) -> Result<NewMail, Error> {
        let inner = self.inner()?;
        let link = kind.purpose().zip(token).map(|(purpose, token)| {
            let template = match purpose {
                TokenPurpose::PasswordReset => &inner.links.password_reset,
                TokenPurpose::VerifyEmail => &inner.links.email_verification,
                TokenPurpose::ChangeEmail => &inner.links.email_change,
            };
            SecretString::from(template.replace(TOKEN_PLACEHOLDER, &token.encode()))
        });
        let rendered = inner
            .templates
            .render(kind, link.as_ref().map(ExposeSecret::expose_secret));
        Ok(NewMail {
            kind,
            recipient: recipient.as_str().to_owned(),
            subject: rendered.subject,
            text_body: rendered.text,
            html_body: Some(rendered.html),
            message_id: format!("<{}@{}>", Uuid::now_v7(), inner.message_id_domain),
        })
    }

    /// Makes a token for `purpose`, stores its hash and queues the mail
    /// with its link to `recipient`, with `events`, in one transaction; see
    /// [`Mail::prepare_token`] for what replaces what. False when a password
    /// reset is held back by the reset interval of the previous one.
    pub(crate) async fn issue_token(
        &self,
        user_id: Uuid,
        recipient: &Email,
        purpose: TokenPurpose,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let (token, mail) = self.prepare_token(user_id, recipient, purpose)?;
        self.inner()?.db.issue_mail_token(token, mail, events).await
    }

    /// A new token for `purpose` and its mail to `recipient`, for the
    /// caller to store in the transaction that needs them (as Signup does
    /// with the user). A password reset or email change token makes the
    /// user's older ones of its purpose unusable: only the latest link
    /// works. A reset is also not issued within the reset interval of the
    /// user's previous one, nor a change link within that of the previous
    /// one to the same new address. A verification or change token is
    /// bound to the address it is mailed to.
    pub(crate) fn prepare_token(
        &self,
        user_id: Uuid,
        recipient: &Email,
        purpose: TokenPurpose,
    ) -> Result<(NewMailToken, NewMail), Error> {
        let inner = self.inner()?;
        let token = MailToken::generate()?;
        let mail = self.render(purpose.mail_kind(), recipient, Some(&token))?;
        let ttl = chrono::Duration::from_std(self.ttl(purpose)?).map_err(Error::internal)?;
        let token = NewMailToken {
            hash: token.hash(),
            user_id,
            purpose,
            new_email: (purpose != TokenPurpose::PasswordReset)
                .then(|| recipient.as_str().to_owned()),
            expires_at: Utc::now() + ttl,
            supersede: purpose != TokenPurpose::VerifyEmail,
            not_within: (purpose != TokenPurpose::VerifyEmail).then_some(inner.reset_interval),
        };
        Ok((token, mail))
    }

    /// A new verification link for a user whose login it blocks, unless
    /// one went out within the reset interval: with the password proven,
    /// an expired or lost link never locks the owner out, and logging in
    /// again and again cannot flood the inbox.
    pub(crate) async fn remind_verification(
        &self,
        user_id: Uuid,
        email: &Email,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let purpose = TokenPurpose::VerifyEmail;
        let (mut token, mail) = self.prepare_token(user_id, email, purpose)?;
        let inner = self.inner()?;
        token.not_within = Some(inner.reset_interval);
        inner.db.issue_mail_token(token, mail, events).await
    }

    /// Queues a notice (a mail without a token) with `events`. A sign-up
    /// attempt notice goes to an address at most once per reset interval,
    /// so that signing up with someone's address cannot flood their inbox;
    /// false when one is held back.
    pub(crate) async fn queue_notice(
        &self,
        kind: MailKind,
        recipient: &Email,
        events: Vec<AuditEvent>,
    ) -> Result<bool, Error> {
        let inner = self.inner()?;
        let mail = self.render(kind, recipient, None)?;
        let not_within = (kind == MailKind::SignupAttempt).then_some(inner.reset_interval);
        inner.db.queue_mail(mail, not_within, events).await
    }

    /// The sender to run on this replica, when mail is on.
    pub(crate) fn sender(&self, metrics: crate::infra::metrics::Metrics) -> Option<Sender> {
        self.0
            .as_ref()
            .map(|inner| Sender::new(Arc::clone(inner), metrics))
    }
}
