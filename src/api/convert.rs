//! Every conversion between proto messages and domain values, and the
//! redacting `Debug` of messages that carry secrets.

use std::borrow::Cow;

use authd_verify::Claims;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::proto;
use crate::{
    core::accounts::SessionTokens,
    core::tokens::AccessToken,
    domain::Error,
    domain::FieldViolation,
    domain::session::DeviceLabel,
    domain::{Credentials, Email, NewUser, Password, User, Username},
};

/// Collects the outcome of parsing one field, so that a request reports every
/// bad field at once rather than the first.
#[derive(Default)]
pub(crate) struct Violations(Vec<FieldViolation>);

impl Violations {
    pub(crate) fn check<T, E>(&mut self, field: &'static str, parsed: Result<T, E>) -> Option<T>
    where
        E: Into<Cow<'static, str>>,
    {
        parsed
            .map_err(|description| {
                self.0.push(FieldViolation {
                    field,
                    description: description.into(),
                })
            })
            .ok()
    }

    pub(crate) fn push(&mut self, field: &'static str, description: impl Into<Cow<'static, str>>) {
        self.0.push(FieldViolation {
            field,
            description: description.into(),
        });
    }

    /// INVALID_ARGUMENT naming every violation, if there is one.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }

    /// The parsed fields, or INVALID_ARGUMENT naming every bad one. A field
    /// missing without a violation would be a bug of ours.
    pub(crate) fn into_result<T>(self, parsed: Option<T>) -> Result<T, Error> {
        self.finish()?;
        parsed.ok_or_else(|| Error::internal("a field failed to parse without a violation"))
    }

    /// An id field: present and a UUID.
    pub(crate) fn id(&mut self, field: &'static str, raw: &str) -> Option<Uuid> {
        if raw.is_empty() {
            self.push(field, "must not be empty");
            return None;
        }
        self.check(
            field,
            Uuid::parse_str(raw).map_err(|_| "must be an id (a UUID)"),
        )
    }
}

/// The one id field of a request.
pub(crate) fn required_id(field: &'static str, raw: &str) -> Result<Uuid, Error> {
    let mut violations = Violations::default();
    let id = violations.id(field, raw);
    violations.into_result(id)
}

/// An optional timestamp field.
pub(crate) fn time(
    raw: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, &'static str> {
    raw.map(|time| {
        u32::try_from(time.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(time.seconds, nanos))
            .ok_or("must be a valid timestamp")
    })
    .transpose()
}

/// A protobuf timestamp of `time`.
pub(crate) fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Always below 1e9, so the cast cannot truncate.
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

pub(crate) fn new_user(
    request: proto::SignupRequest,
    password_min: usize,
) -> Result<NewUser, Error> {
    let mut violations = Violations::default();
    let email = violations.check("email", Email::parse(&request.email));
    let password = violations.check(
        "password",
        Password::parse_new(request.password, password_min),
    );
    let username = violations.check("username", Username::parse(&request.username));
    match (email, password, username) {
        (Some(email), Some(password), Some(username)) => Ok(NewUser {
            email,
            username,
            password,
        }),
        _ => Err(Error::InvalidArgument(violations.0)),
    }
}

pub(crate) fn credentials(
    request: proto::LoginRequest,
) -> Result<(Credentials, Option<DeviceLabel>), Error> {
    let mut violations = Violations::default();
    let email = violations.check("email", Email::parse(&request.email));
    let password = violations.check("password", Password::parse_existing(request.password));
    let label = violations.check("device_label", DeviceLabel::parse(&request.device_label));
    match (email, password, label) {
        (Some(email), Some(password), Some(label)) => Ok((Credentials { email, password }, label)),
        _ => Err(Error::InvalidArgument(violations.0)),
    }
}

impl From<User> for proto::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            username: user.username.as_str().to_owned(),
            created_at: Some(timestamp(user.created_at)),
            email_verified: user.email_verified,
            roles: user.roles.to_vec(),
            disabled: user.disabled,
        }
    }
}

/// A ChangePassword request: the new password under Signup's rules, the
/// current one only as something bcrypt can compare.
pub(crate) fn password_change(
    request: proto::ChangePasswordRequest,
    password_min: usize,
) -> Result<(Password, Password), Error> {
    let mut violations = Violations::default();
    let current = violations.check(
        "current_password",
        Password::parse_existing(request.current_password),
    );
    let new = violations.check(
        "new_password",
        Password::parse_new(request.new_password, password_min),
    );
    match (current, new) {
        (Some(current), Some(new)) => Ok((current, new)),
        _ => Err(Error::InvalidArgument(violations.0)),
    }
}

/// A field that must not be empty, e.g. a token to check.
pub(crate) fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(vec![FieldViolation {
            field,
            description: "must not be empty".into(),
        }]));
    }
    Ok(value)
}

fn expires_in(token: &AccessToken) -> i64 {
    i64::try_from(token.expires_in.as_secs()).unwrap_or(i64::MAX)
}

impl From<SessionTokens> for proto::LoginResponse {
    fn from(tokens: SessionTokens) -> Self {
        Self {
            access_token: tokens.access.token.expose_secret().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: expires_in(&tokens.access),
            refresh_token: tokens.refresh.encode(),
            mfa_challenge: None,
            password_compromised: false,
        }
    }
}

pub(crate) fn service_token(token: &AccessToken) -> proto::IssueServiceTokenResponse {
    proto::IssueServiceTokenResponse {
        access_token: token.token.expose_secret().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: expires_in(token),
    }
}

/// Refresh and CompleteLogin answer with LoginResponse's token fields.
macro_rules! session_tokens_response {
    ($($response:ty),+) => {$(
        impl From<SessionTokens> for $response {
            fn from(tokens: SessionTokens) -> Self {
                let login = proto::LoginResponse::from(tokens);
                Self {
                    access_token: login.access_token,
                    token_type: login.token_type,
                    expires_in: login.expires_in,
                    refresh_token: login.refresh_token,
                }
            }
        }
    )+};
}
session_tokens_response!(proto::RefreshResponse, proto::CompleteLoginResponse);

/// What IntrospectToken answers: the claims of an active token, or only
/// `active: false`.
pub(crate) fn introspection(claims: Option<Claims>) -> proto::IntrospectTokenResponse {
    let Some(claims) = claims else {
        return proto::IntrospectTokenResponse::default();
    };
    proto::IntrospectTokenResponse {
        active: true,
        sub: claims.sub,
        iss: claims.iss,
        aud: claims.aud,
        exp: claims.exp,
        iat: claims.iat,
        nbf: claims.nbf,
        jti: claims.jti,
        sid: claims.sid.unwrap_or_default(),
        token_type: "access_token".to_owned(),
        roles: claims.roles,
        client_id: claims.client_id.unwrap_or_default(),
    }
}

/// A stream's resume cursor as this server sends it (an id in decimal), or
/// None when empty; anything else is a field violation of `cursor` saying
/// `what` it must be.
pub(crate) fn cursor(raw: &str, what: &'static str) -> Result<Option<i64>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let mut violations = Violations::default();
    let cursor = violations.check(
        "cursor",
        raw.parse::<i64>()
            .ok()
            .filter(|cursor| *cursor >= 0)
            .ok_or(what),
    );
    violations.finish()?;
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_reported() {
        let request = proto::SignupRequest {
            email: "nope".into(),
            password: "short".into(),
            username: " ".into(),
        };
        let Err(Error::InvalidArgument(violations)) = new_user(request, 8) else {
            panic!("expected invalid argument");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["email", "password", "username"]);
    }
}
