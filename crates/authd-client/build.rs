//! Compiles authd's public proto contract with the pure-Rust `protox`, so
//! building the client never needs a system `protoc`.

/// The messages that carry passwords or tokens. Their generated `Debug` is
/// skipped for one that redacts them (`src/lib.rs`), so none can leak into a
/// log, on the server (which uses these types) or in a client.
const SECRET_MESSAGES: [&str; 24] = [
    "auth.v1.SignupRequest",
    "auth.v1.LoginRequest",
    "auth.v1.LoginResponse",
    "auth.v1.RefreshRequest",
    "auth.v1.RefreshResponse",
    "auth.v1.ChangePasswordRequest",
    "auth.v1.ResetPasswordRequest",
    "auth.v1.IntrospectTokenRequest",
    "auth.v1.IssueServiceTokenRequest",
    "auth.v1.IssueServiceTokenResponse",
    "auth.v1.MfaChallenge",
    "auth.v1.CompleteLoginRequest",
    "auth.v1.CompleteLoginResponse",
    "auth.v1.EnrollTotpRequest",
    "auth.v1.EnrollTotpResponse",
    "auth.v1.ConfirmTotpRequest",
    "auth.v1.ConfirmTotpResponse",
    "auth.v1.DisableTotpRequest",
    "auth.v1.RegenerateRecoveryCodesRequest",
    "auth.v1.RegenerateRecoveryCodesResponse",
    "auth.admin.v1.CreateUserRequest",
    "auth.admin.v1.SetPasswordRequest",
    "auth.admin.v1.CreateServiceAccountResponse",
    "auth.admin.v1.CreateApiKeyResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(
        ["auth/v1/auth.proto", "auth/admin/v1/admin.proto"],
        ["../../proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        // `src/lib.rs` gives them a redacting Debug.
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
