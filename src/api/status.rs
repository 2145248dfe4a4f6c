//! What a client is told: the one place where [`Error`] becomes a gRPC
//! status.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Error, FieldViolation, PasswordRefusal};

pub(crate) const INVALID_CREDENTIALS: &str = "invalid email or password";
const INVALID_SECOND_FACTOR: &str = "invalid or expired code or challenge";
const INVALID_MAIL_TOKEN: &str = "invalid or expired link";
/// What an overloaded hashing stage suggests: about the time a short queue
/// takes to drain.
const OVERLOAD_RETRY: Duration = Duration::from_secs(1);

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(violations) => bad_request(&violations),
            Error::PasswordRefused { field, refusal } => bad_request(&[FieldViolation {
                field,
                description: password_refusal(refusal).into(),
            }]),
            Error::EmailTaken => Status::already_exists("a user with this email already exists"),
            Error::AlreadyExists(what) => Status::already_exists(what),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::AccountDisabled => Status::permission_denied("account disabled"),
            Error::EmailNotVerified => Status::failed_precondition("email not verified"),
            Error::PermissionDenied(who_may) => Status::permission_denied(who_may),
            Error::InvalidApiKey => Status::unauthenticated("invalid API key"),
            Error::TooManyWatches => {
                Status::resource_exhausted("too many watches are open on this server, retry later")
            }
            Error::InvalidCredentials => Status::unauthenticated(INVALID_CREDENTIALS),
            Error::InvalidToken => Status::unauthenticated(authd_verify::INVALID_TOKEN),
            Error::InvalidRefreshToken => Status::unauthenticated("invalid refresh token"),
            Error::WrongPassword => Status::unauthenticated("current password is incorrect"),
            Error::GuessingSessionEnded => Status::unauthenticated(
                "too many wrong current passwords: this session has ended, log in again",
            ),
            Error::InvalidSecondFactor => Status::unauthenticated(INVALID_SECOND_FACTOR),
            Error::TotpState(what) => Status::failed_precondition(what),
            Error::MailNotConfigured => {
                Status::failed_precondition("email delivery is not configured")
            }
            Error::InvalidMailToken => Status::unauthenticated(INVALID_MAIL_TOKEN),
            Error::EmailAlreadyVerified => Status::failed_precondition("email already verified"),
            Error::PasswordChanged => Status::aborted(
                "the password was changed by another request meanwhile; nothing was changed",
            ),
            Error::RateLimited { retry_after } => retry_later(
                "too many requests from this client, retry later",
                retry_after,
            ),
            Error::AccountLocked { retry_after } => retry_later(
                "too many failed logins for this account, retry later",
                retry_after,
            ),
            Error::Overloaded => retry_later("server busy, retry later", OVERLOAD_RETRY),
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("service temporarily unavailable, retry later")
            }
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// INVALID_ARGUMENT naming every bad field, in the message and in a
/// `google.rpc.BadRequest`.
fn bad_request(violations: &[FieldViolation]) -> Status {
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.description.as_ref());
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}

/// Why a password was refused, for the user choosing it; never the
/// password itself.
fn password_refusal(refusal: PasswordRefusal) -> &'static str {
    match refusal {
        PasswordRefusal::Common => {
            "is one of the most commonly used passwords; choose a less common one"
        }
        PasswordRefusal::PersonalData => {
            "must not contain the email address's name or the username"
        }
        PasswordRefusal::Breached => {
            "appears in a data breach, so attackers already know it; choose another"
        }
        PasswordRefusal::TooGuessable => {
            "is too easy to guess; use a longer password, e.g. several unrelated words"
        }
    }
}

/// RESOURCE_EXHAUSTED with the wait in `google.rpc.RetryInfo`, rounded up
/// to whole seconds so clients never retry a moment too early.
fn retry_later(message: &str, retry_after: Duration) -> Status {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(Duration::from_secs(seconds))),
    )
}
