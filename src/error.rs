//! The one error type of authd. Every failure a client can see is a variant
//! here, and `From<Error> for Status` is the only place that decides what a
//! client is told.

use std::{borrow::Cow, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A rule a request field breaks, reported in a `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: Cow<'static, str>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `INVALID_ARGUMENT`, with a `google.rpc.BadRequest` that names every bad
    /// field, so a client can fix them all in one round trip.
    #[error("invalid request fields: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),

    /// `ALREADY_EXISTS`: the normalized email is registered.
    #[error("email already registered")]
    EmailTaken,

    /// `UNAUTHENTICATED`: unknown email or wrong password. The two cases are
    /// one variant so that nothing downstream can tell them apart.
    #[error("invalid credentials")]
    InvalidCredentials,

    /// `UNAUTHENTICATED`: the bearer token is missing, malformed, forged or
    /// expired, or names a user that no longer exists.
    #[error("invalid access token")]
    InvalidToken,

    /// `UNAUTHENTICATED`: the refresh token is unknown, expired, revoked or
    /// reused. One variant, so the reasons cannot be told apart.
    #[error("invalid refresh token")]
    InvalidRefreshToken,

    /// `UNAUTHENTICATED`: the current password given to ChangePassword is
    /// wrong.
    #[error("wrong current password")]
    WrongPassword,

    /// `UNAUTHENTICATED`: this session has sent as many wrong current
    /// passwords to ChangePassword as the lockout threshold, so it has been
    /// revoked: a stolen token buys no further guesses.
    #[error("password change guessing: session revoked")]
    GuessingSessionEnded,

    /// `ABORTED`: the password changed between this ChangePassword's check
    /// of the current password and its write, so nothing was changed.
    #[error("password changed concurrently")]
    PasswordChanged,

    /// `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo`: this client sent
    /// more Login or Signup calls than its rate allows.
    #[error("client rate limit exceeded")]
    RateLimited { retry_after: Duration },

    /// `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo`: too many failed
    /// logins for this email, whether or not it has an account.
    #[error("account login throttled")]
    AccountLocked { retry_after: Duration },

    /// `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo`: the password
    /// hashing stage and its queue are full. Answered at once rather than
    /// after seconds in a queue.
    #[error("password hashing stage full")]
    Overloaded,

    /// `UNAVAILABLE`: the database cannot be reached or no connection came
    /// free in time. Worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Source),

    /// `INTERNAL`: a fault that is ours, never the client's. Logged in full,
    /// answered with a fixed message.
    #[error("internal error: {0}")]
    Internal(#[source] Source),
}

impl Error {
    pub fn internal(source: impl Into<Source>) -> Self {
        Self::Internal(source.into())
    }

    pub fn unavailable(source: impl Into<Source>) -> Self {
        Self::Unavailable(source.into())
    }
}

pub const INVALID_CREDENTIALS: &str = "invalid email or password";
/// What an overloaded hashing stage suggests: about the time a short queue
/// takes to drain.
const OVERLOAD_RETRY: Duration = Duration::from_secs(1);

impl From<authd_verify::InvalidToken> for Error {
    fn from(_: authd_verify::InvalidToken) -> Self {
        Error::InvalidToken
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field, v.description.as_ref());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {summary}"),
                    details,
                )
            }
            Error::EmailTaken => Status::already_exists("a user with this email already exists"),
            Error::InvalidCredentials => Status::unauthenticated(INVALID_CREDENTIALS),
            Error::InvalidToken => Status::unauthenticated(authd_verify::INVALID_TOKEN),
            Error::InvalidRefreshToken => Status::unauthenticated("invalid refresh token"),
            Error::WrongPassword => Status::unauthenticated("current password is incorrect"),
            Error::GuessingSessionEnded => Status::unauthenticated(
                "too many wrong current passwords: this session has ended, log in again",
            ),
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
