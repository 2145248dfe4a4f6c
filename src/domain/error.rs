//! The one error type of authd. Every failure a client can see is a variant
//! here; `api::status` is the only place that decides what a client is told.

use std::{borrow::Cow, time::Duration};

use super::PasswordRefusal;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A rule a request field breaks, reported in a `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldViolation {
    pub(crate) field: &'static str,
    pub(crate) description: Cow<'static, str>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// `INVALID_ARGUMENT`, with a `google.rpc.BadRequest` that names every bad
    /// field, so a client can fix them all in one round trip.
    #[error("invalid request fields: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),

    /// `INVALID_ARGUMENT`, with one field violation on `field` saying why:
    /// a new password meets the length rules but is one attackers would
    /// guess early.
    #[error("password refused: {refusal:?}")]
    PasswordRefused {
        field: &'static str,
        refusal: PasswordRefusal,
    },

    /// `ALREADY_EXISTS`: the normalized email is registered.
    #[error("email already registered")]
    EmailTaken,

    /// `ALREADY_EXISTS`: another record holds this unique value; the text
    /// says which, e.g. "a service account with this name already exists".
    #[error("already exists: {0}")]
    AlreadyExists(&'static str),

    /// `NOT_FOUND`: the id names nothing of this kind, e.g. "user".
    #[error("{0} not found")]
    NotFound(&'static str),

    /// `PERMISSION_DENIED` "account disabled": the password was right, but
    /// an operator disabled the account. Only said to a caller who proved
    /// the password, so it reveals nothing to a guesser.
    #[error("account disabled")]
    AccountDisabled,

    /// `UNAUTHENTICATED`: the API key is unknown, expired or revoked, or its
    /// service account is gone. One variant, so the reasons cannot be told
    /// apart.
    #[error("invalid API key")]
    InvalidApiKey,

    /// `FAILED_PRECONDITION` "email not verified": the password was right,
    /// but the server requires a verified address before Login. Only said
    /// to a caller who proved the password.
    #[error("email not verified")]
    EmailNotVerified,

    /// `PERMISSION_DENIED`: the caller is who they claim, but this call is
    /// not theirs to make; the text says who may.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),

    /// `RESOURCE_EXHAUSTED`: this replica already streams as many watches
    /// as it allows.
    #[error("too many watches")]
    TooManyWatches,

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

    /// `UNAUTHENTICATED`: a second-factor code is wrong or already used, or
    /// the mfa_token is unknown, expired or spent. One variant, so the
    /// reasons cannot be told apart.
    #[error("invalid second factor")]
    InvalidSecondFactor,

    /// `FAILED_PRECONDITION`: the call needs TOTP in another state; the text
    /// says which, e.g. "TOTP is already active".
    #[error("TOTP state: {0}")]
    TotpState(&'static str),

    /// `FAILED_PRECONDITION` "email delivery is not configured": a call
    /// that sends mail, on a server without `AUTHD_SMTP_URL`.
    #[error("email delivery is not configured")]
    MailNotConfigured,

    /// `UNAUTHENTICATED`: a mailed token (reset, verification, email
    /// change) is unknown, expired, used or of another purpose. One
    /// variant, so the reasons cannot be told apart.
    #[error("invalid mail token")]
    InvalidMailToken,

    /// `FAILED_PRECONDITION` "email already verified": SendVerificationEmail
    /// for an address that is proven already.
    #[error("email already verified")]
    EmailAlreadyVerified,

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
    pub(crate) fn internal(source: impl Into<Source>) -> Self {
        Self::Internal(source.into())
    }

    pub(crate) fn unavailable(source: impl Into<Source>) -> Self {
        Self::Unavailable(source.into())
    }
}

impl From<authd_verify::InvalidToken> for Error {
    fn from(_: authd_verify::InvalidToken) -> Self {
        Error::InvalidToken
    }
}
