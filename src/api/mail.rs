//! Requests of the mail flows, parsed into domain values.

use super::{convert::Violations, proto};
use crate::domain::{Email, Error, Password, mail::MailToken};

/// A mailed token as the client sent it: empty is a malformed request;
/// anything that cannot be one of ours is None, which the core refuses
/// like an unknown token, so junk never reaches a query.
pub(crate) fn mail_token(field: &'static str, raw: &str) -> Result<Option<MailToken>, Error> {
    let mut violations = Violations::default();
    let token = violations.check(field, token(raw));
    violations.into_result(token)
}

fn token(raw: &str) -> Result<Option<MailToken>, &'static str> {
    if raw.is_empty() {
        return Err("must not be empty");
    }
    Ok(MailToken::parse(raw))
}

/// RequestPasswordReset: the email under Signup's rules.
pub(crate) fn reset_request(request: &proto::RequestPasswordResetRequest) -> Result<Email, Error> {
    let mut violations = Violations::default();
    let email = violations.check("email", Email::parse(&request.email));
    violations.into_result(email)
}

/// ResetPassword: the token, and the new password under Signup's rules.
pub(crate) fn reset(
    request: proto::ResetPasswordRequest,
    password_min: usize,
) -> Result<(Option<MailToken>, Password), Error> {
    let mut violations = Violations::default();
    let token = violations.check("token", token(&request.token));
    let new = violations.check(
        "new_password",
        Password::parse_new(request.new_password, password_min),
    );
    violations.into_result(token.zip(new))
}

/// RequestEmailChange: the new address under Signup's rules, and the
/// current password.
pub(crate) fn email_change(
    request: proto::RequestEmailChangeRequest,
) -> Result<(Email, Password), Error> {
    let mut violations = Violations::default();
    let email = violations.check("new_email", Email::parse(&request.new_email));
    let password = violations.check(
        "current_password",
        Password::parse_existing(request.current_password),
    );
    violations.into_result(email.zip(password))
}
