//! A client for authd's gRPC API: the generated tonic client and the message
//! types of `auth.v1`, from the same proto file the server is built from.
//!
//! ```no_run
//! use authd_client::v1::{LoginRequest, auth_service_client::AuthServiceClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut authd = AuthServiceClient::connect("http://127.0.0.1:50051").await?;
//! let login = authd
//!     .login(LoginRequest {
//!         email: "ada@example.com".into(),
//!         password: "correct horse battery".into(),
//!         device_label: "laptop".into(),
//!     })
//!     .await?
//!     .into_inner();
//! println!("access token expires in {}s", login.expires_in);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

/// The `auth.v1` package: `AuthService` and its messages.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub)]
    tonic::include_proto!("auth.v1");
}

/// The `auth.admin.v1` package: `AdminService`, for operators and their
/// tools.
pub mod admin {
    /// Version 1 of the admin contract.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub)]
        tonic::include_proto!("auth.admin.v1");
    }
}

/// A `Debug` for a message that prints `secret` fields as `"<redacted>"`.
macro_rules! redacting_debug {
    ($($module:ident)::+, $message:ident { $($field:ident),* } secret { $($secret:ident),+ }) => {
        impl std::fmt::Debug for $($module)::+::$message {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &"<redacted>"))+
                    .finish()
            }
        }
    };
}

redacting_debug!(v1, SignupRequest { email, username } secret { password });
redacting_debug!(v1, LoginRequest { email, device_label } secret { password });
redacting_debug!(v1, LoginResponse { token_type, expires_in, mfa_challenge, password_compromised } secret { access_token, refresh_token });
redacting_debug!(v1, MfaChallenge { methods, expires_in } secret { mfa_token });
redacting_debug!(v1, CompleteLoginRequest {} secret { mfa_token, code });
redacting_debug!(v1, CompleteLoginResponse { token_type, expires_in } secret { access_token, refresh_token });
redacting_debug!(v1, EnrollTotpRequest {} secret { current_password });
redacting_debug!(v1, EnrollTotpResponse {} secret { secret, otpauth_uri, qr_png });
redacting_debug!(v1, ConfirmTotpRequest {} secret { code });
redacting_debug!(v1, ConfirmTotpResponse {} secret { recovery_codes });
redacting_debug!(v1, DisableTotpRequest {} secret { current_password, code });
redacting_debug!(v1, RegenerateRecoveryCodesRequest {} secret { code });
redacting_debug!(v1, RegenerateRecoveryCodesResponse {} secret { recovery_codes });
redacting_debug!(v1, RefreshRequest {} secret { refresh_token });
redacting_debug!(v1, RefreshResponse { token_type, expires_in } secret { access_token, refresh_token });
redacting_debug!(v1, ChangePasswordRequest {} secret { current_password, new_password });
redacting_debug!(v1, ResetPasswordRequest {} secret { token, new_password });
redacting_debug!(v1, IntrospectTokenRequest {} secret { token });
redacting_debug!(v1, IssueServiceTokenRequest {} secret { api_key });
redacting_debug!(v1, IssueServiceTokenResponse { token_type, expires_in } secret { access_token });
redacting_debug!(v1, VerifyEmailRequest {} secret { token });
redacting_debug!(v1, RequestEmailChangeRequest { new_email } secret { current_password });
redacting_debug!(v1, ConfirmEmailChangeRequest {} secret { token });
redacting_debug!(admin::v1, CreateUserRequest { email, username, roles, email_verified } secret { password });
redacting_debug!(admin::v1, SetPasswordRequest { id } secret { password });
redacting_debug!(admin::v1, CreateServiceAccountResponse { account, key_id } secret { api_key });
redacting_debug!(admin::v1, CreateApiKeyResponse { key_id } secret { api_key });

#[cfg(test)]
mod tests {
    use super::v1::{
        ChangePasswordRequest, ConfirmEmailChangeRequest, ConfirmTotpResponse, LoginRequest,
        LoginResponse, MfaChallenge, RequestEmailChangeRequest, ResetPasswordRequest,
        SignupRequest, VerifyEmailRequest,
    };

    #[test]
    fn debug_hides_passwords() {
        let login = LoginRequest {
            email: "ada@example.com".into(),
            password: "hunter2".into(),
            device_label: String::new(),
        };
        let printed = format!("{login:?}");
        assert!(printed.contains("ada@example.com") && !printed.contains("hunter2"));
        let change = ChangePasswordRequest {
            current_password: "old-pw-1".into(),
            new_password: "new-pw-2".into(),
        };
        let printed = format!("{change:?}");
        assert!(!printed.contains("old-pw-1") && !printed.contains("new-pw-2"));
        let reset = ResetPasswordRequest {
            token: "resettokensecret".into(),
            new_password: "new-pw-3".into(),
        };
        let printed = format!("{reset:?}");
        assert!(!printed.contains("resettokensecret") && !printed.contains("new-pw-3"));
        let verify = VerifyEmailRequest {
            token: "verifytokensecret".into(),
        };
        let change = RequestEmailChangeRequest {
            new_email: "new@example.com".into(),
            current_password: "old-pw-4".into(),
        };
        let confirm = ConfirmEmailChangeRequest {
            token: "changetokensecret".into(),
        };
        let printed = format!("{verify:?} {change:?} {confirm:?}");
        for secret in ["verifytokensecret", "old-pw-4", "changetokensecret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("new@example.com"));
        let signup = SignupRequest {
            email: "a@example.com".into(),
            password: "hunter2hunter2".into(),
            username: "a".into(),
        };
        let login = LoginResponse {
            access_token: "eyJsecret".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: "refreshsecret".into(),
            mfa_challenge: Some(MfaChallenge {
                mfa_token: "mfasecret".into(),
                methods: vec!["totp".into()],
                expires_in: 300,
            }),
            password_compromised: false,
        };
        let codes = ConfirmTotpResponse {
            recovery_codes: vec!["RECOVERYSECRET".into()],
        };
        let printed = format!("{signup:?} {login:?} {codes:?}");
        for secret in [
            "hunter2",
            "eyJsecret",
            "refreshsecret",
            "mfasecret",
            "RECOVERYSECRET",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("a@example.com"));
    }
}
