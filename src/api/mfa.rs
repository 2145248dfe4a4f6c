//! The second factor as clients see it: codes parsed from requests, and
//! challenges, secrets and recovery codes written into responses.

use secrecy::{ExposeSecret, SecretString};

use super::{convert::Violations, proto};
use crate::{
    core::accounts::{LoggedIn, LoginOutcome, MfaChallenge},
    core::totp::Enrollment,
    domain::{
        Error, Password,
        mfa::{SecondFactor, TotpCode},
    },
};

/// What CompleteLogin accepts, as named in an MfaChallenge.
const METHODS: [&str; 2] = ["totp", "recovery_code"];

pub(crate) fn complete_login(
    request: &proto::CompleteLoginRequest,
) -> Result<(&str, SecondFactor), Error> {
    let mut violations = Violations::default();
    if request.mfa_token.is_empty() {
        violations.push("mfa_token", "must not be empty");
    }
    let code = violations.check("code", SecondFactor::parse(&request.code));
    violations.into_result(code.map(|code| (request.mfa_token.as_str(), code)))
}

pub(crate) fn enroll(request: proto::EnrollTotpRequest) -> Result<Password, Error> {
    let mut violations = Violations::default();
    let password = violations.check(
        "current_password",
        Password::parse_existing(request.current_password),
    );
    violations.into_result(password)
}

pub(crate) fn totp_code(raw: &str) -> Result<TotpCode, Error> {
    let mut violations = Violations::default();
    let code = violations.check("code", TotpCode::parse(raw));
    violations.into_result(code)
}

pub(crate) fn disable(
    request: proto::DisableTotpRequest,
) -> Result<(Password, SecondFactor), Error> {
    let mut violations = Violations::default();
    let password = violations.check(
        "current_password",
        Password::parse_existing(request.current_password),
    );
    let code = violations.check("code", SecondFactor::parse(&request.code));
    violations.into_result(password.zip(code))
}

impl From<LoggedIn> for proto::LoginResponse {
    fn from(logged_in: LoggedIn) -> Self {
        let response = match logged_in.outcome {
            LoginOutcome::Session(tokens) => tokens.into(),
            LoginOutcome::Challenge(challenge) => Self {
                mfa_challenge: Some(challenge.into()),
                ..Self::default()
            },
        };
        Self {
            password_compromised: logged_in.password_compromised,
            ..response
        }
    }
}

impl From<MfaChallenge> for proto::MfaChallenge {
    fn from(challenge: MfaChallenge) -> Self {
        Self {
            mfa_token: challenge.token.encode(),
            methods: METHODS.map(str::to_owned).to_vec(),
            expires_in: i64::try_from(challenge.expires_in.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

impl From<Enrollment> for proto::EnrollTotpResponse {
    fn from(enrollment: Enrollment) -> Self {
        Self {
            secret: enrollment.secret.expose_secret().to_owned(),
            otpauth_uri: enrollment.otpauth_uri.expose_secret().to_owned(),
            qr_png: enrollment.qr_png,
        }
    }
}

pub(crate) fn shown(codes: Vec<SecretString>) -> Vec<String> {
    codes
        .iter()
        .map(|code| code.expose_secret().to_owned())
        .collect()
}
