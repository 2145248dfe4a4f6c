//! Requests of the mail flows, parsed into domain values.

use super::{
    convert::{Violations, required},
    proto,
};
use crate::domain::{Email, Error, Password, mail::MailToken};

/// A mailed token as the client sent it: empty is a malformed request;
/// anything that cannot be one of ours is None, which the core refuses
/// like an unknown token, so junk never reaches a query.
#[expect(
    dead_code,
    reason = "email verification and change (issue 12, part B) use it"
)]
pub(crate) fn mail_token(field: &'static str, raw: &str) -> Result<Option<MailToken>, Error> {
    required(field, raw).map(MailToken::parse)
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
    let token = if request.token.is_empty() {
        violations.push("token", "must not be empty");
        None
    } else {
        Some(MailToken::parse(&request.token))
    };
    let new = violations.check(
        "new_password",
        Password::parse_new(request.new_password, password_min),
    );
    violations.into_result(token.zip(new))
}
