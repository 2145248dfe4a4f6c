//! The sender every replica runs: claims due mails from the outbox,
//! delivers them over SMTP, marks them sent; on failure tries again with
//! backoff until the give-up time. A mail may go out twice (a replica that
//! dies after the SMTP server accepted it, before marking it sent), never
//! zero times.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, SinglePart},
};
use secrecy::{ExposeSecret, SecretString};

use super::Inner;
use crate::{
    domain::mail::MailKind,
    infra::metrics::Metrics,
    store::{ClaimedMail, OutboxListener},
};

/// Mails claimed per round.
const BATCH: i64 = 4;
/// The most one delivery may take, all SMTP commands together.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim keeps other senders off a mail: longer than a round
/// of [`BATCH`] deliveries may take, so that no mail is sent twice while
/// it is being sent once.
const LEASE: Duration = Duration::from_secs(150);
const _: () = assert!(SEND_TIMEOUT.as_secs() * BATCH.unsigned_abs() < LEASE.as_secs());
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the sender sleeps: it also picks up mails other replicas
/// queued while their notifications did not reach it, and retries that
/// came due.
const POLL: Duration = Duration::from_secs(2);
const MIN_NAP: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often, at most, delivered mails and expired tokens are deleted.
const TIDY_EVERY: Duration = Duration::from_secs(3600);
/// How long delivered or given-up mails and expired tokens are kept.
const RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Builds the SMTP transport from `AUTHD_SMTP_URL`. The error never repeats
/// the URL, which may hold a password.
pub(super) fn transport(url: &SecretString) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder =
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret()).map_err(|_| {
            anyhow::anyhow!(
                "AUTHD_SMTP_URL must be smtp://host:port, smtp://host:port?tls=required or \
                 smtps://user:password@host:465"
            )
        })?;
    Ok(builder.timeout(Some(SMTP_TIMEOUT)).build())
}

/// The sender of one replica; [`Sender::run`] until the replica stops.
pub(crate) struct Sender {
    inner: Arc<Inner>,
    metrics: Metrics,
}

impl Sender {
    pub(super) fn new(inner: Arc<Inner>, metrics: Metrics) -> Self {
        metrics.mail_kinds(MailKind::ALL.map(MailKind::as_str));
        Self { inner, metrics }
    }

    /// Delivers mail as it comes due. Wakes when this process queues mail,
    /// when another replica does (PostgreSQL's notifications), and every
    /// [`POLL`] regardless.
    pub(crate) async fn run(self) {
        let transport = match transport(&self.inner.smtp_url) {
            Ok(transport) => transport,
            Err(error) => {
                tracing::error!(%error, "mail sender cannot start");
                return;
            }
        };
        let mut listener: Option<OutboxListener> = None;
        let mut tidied_at: Option<tokio::time::Instant> = None;
        loop {
            if listener.is_none() {
                listener = match self.inner.db.outbox_listener().await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "mail sender: cannot listen for queued mail");
                        None
                    }
                };
            }
            self.deliver_due(&transport).await;
            if tidied_at.is_none_or(|at| at.elapsed() >= TIDY_EVERY) {
                tidied_at = Some(tokio::time::Instant::now());
                self.tidy().await;
            }
            let nap = self.until_next_due().await;
            let heard = async {
                match listener.as_mut() {
                    Some(listening) => listening.queued().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.inner.db.mail_queued() => {}
                heard = heard => if let Err(error) = heard {
                    tracing::warn!(%error, "mail sender: lost the queued-mail listener");
                    listener = None;
                },
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// How long to sleep: until the next retry is due, at most [`POLL`],
    /// and never so little that the sender spins on the database.
    async fn until_next_due(&self) -> Duration {
        match self.inner.db.next_mail_due().await {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or_default()
                .clamp(MIN_NAP, POLL),
            Ok(None) | Err(_) => POLL,
        }
    }

    /// Claims and delivers due mails until none is left.
    async fn deliver_due(&self, transport: &AsyncSmtpTransport<Tokio1Executor>) {
        loop {
            let claimed = match self.inner.db.claim_mail(BATCH, LEASE).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "mail sender: cannot claim mail");
                    return;
                }
            };
            if let Ok(depth) = self.inner.db.outbox_depth().await {
                self.metrics.set_outbox_depth(depth);
            }
            if claimed.is_empty() {
                return;
            }
            for mail in claimed {
                self.deliver(transport, mail).await;
            }
        }
    }

    async fn deliver(&self, transport: &AsyncSmtpTransport<Tokio1Executor>, mail: ClaimedMail) {
        let kind = mail.kind.as_str();
        let outcome = match self.message(&mail) {
            Ok(message) => {
                match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
                    Ok(sent) => sent.map(drop).map_err(|error| {
                        // The SMTP server's reply and lettre's kind of failure;
                        // the message itself is never part of it.
                        (error.to_string(), refuses_recipient(&error))
                    }),
                    Err(_) => Err(("the SMTP server took too long".to_owned(), false)),
                }
            }
            Err(error) => Err((error, true)),
        };
        let recorded = match outcome {
            Ok(()) => {
                self.metrics.mail_sent(kind);
                self.inner.db.mark_mail_sent(&mail).await
            }
            Err((error, permanent)) => {
                self.metrics.mail_failed(kind);
                let age = (Utc::now() - mail.created_at).to_std().unwrap_or_default();
                if permanent || age >= self.inner.give_up_after {
                    tracing::warn!(
                        mail_id = %mail.id,
                        kind,
                        attempts = mail.attempts,
                        %error,
                        "mail not delivered: giving up"
                    );
                    self.inner.db.give_up_mail(&mail).await
                } else {
                    tracing::info!(
                        mail_id = %mail.id,
                        kind,
                        attempts = mail.attempts,
                        %error,
                        "mail delivery failed; will retry"
                    );
                    let next = Utc::now()
                        + chrono::Duration::from_std(backoff(mail.attempts)).unwrap_or_default();
                    self.inner.db.retry_mail(&mail, next).await
                }
            }
        };
        if let Err(error) = recorded {
            // The claim runs out and the mail is tried again: sent twice at
            // worst.
            tracing::warn!(mail_id = %mail.id, %error, "mail sender: cannot record delivery");
        }
    }

    /// The mail as it goes out; an error says why it never can.
    fn message(&self, mail: &ClaimedMail) -> Result<Message, String> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|_| "the recipient is not an address SMTP can deliver to".to_owned())?;
        let text = SinglePart::plain(mail.text_body.clone());
        let builder = Message::builder()
            .from(self.inner.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()));
        let built = match &mail.html_body {
            Some(html) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(text)
                    .singlepart(SinglePart::html(html.clone())),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|_| "the mail cannot be built".to_owned())
    }

    /// Deletes old delivered mails and expired tokens, a batch at a time.
    async fn tidy(&self) {
        let before = Utc::now() - RETENTION;
        loop {
            match self.inner.db.delete_old_mail(before, 500).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "mail sender: cannot delete old mail");
                    return;
                }
            }
        }
    }
}

/// 1s after the first failure, doubling, at most 5 minutes.
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Whether the SMTP server refused the mailbox itself (550 unavailable,
/// 551 not local, 553 name not allowed): trying again cannot help. Every
/// other failure, 5xx ones included (a rejected login after a password
/// rotation, a TLS requirement), is the server's or its operator's to fix,
/// so the mail waits with backoff until the give-up time.
fn refuses_recipient(error: &lettre::transport::smtp::Error) -> bool {
    error
        .status()
        .is_some_and(|code| matches!(u16::from(code), 550 | 551 | 553))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_RETRY);
    }
}
