//! The framework floor for benchmarks: `auth.v1.AuthService` served by bare
//! tonic, with `GetMe` answering a constant user (no bearer layer, no
//! database, no access log) and every other method `UNIMPLEMENTED`.
//!
//! authd's GetMe throughput is reported as a fraction of this server's,
//! measured by the same load generator in the same run:
//!
//! ```sh
//! cargo run --release --example floor -- --listen 127.0.0.1:50061
//! cargo run --release --example loadgen -- --target http://127.0.0.1:50061 \
//!   --scenario getme --no-setup
//! ```
//!
//! `bench/run.sh` does both; BENCHMARKS.md explains the method.

use std::net::SocketAddr;

use anyhow::Context;
use authd::api::proto::{
    ChangePasswordRequest, ChangePasswordResponse, CompleteLoginRequest, CompleteLoginResponse,
    ConfirmTotpRequest, ConfirmTotpResponse, DisableTotpRequest, DisableTotpResponse,
    EnrollTotpRequest, EnrollTotpResponse, GetMeRequest, GetMeResponse, IntrospectTokenRequest,
    IntrospectTokenResponse, IssueServiceTokenRequest, IssueServiceTokenResponse,
    ListSessionsRequest, ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, RefreshRequest, RefreshResponse, RegenerateRecoveryCodesRequest,
    RegenerateRecoveryCodesResponse, RequestPasswordResetRequest, RequestPasswordResetResponse,
    ResetPasswordRequest, ResetPasswordResponse, RevokeSessionRequest, RevokeSessionResponse,
    SignupRequest, SignupResponse, User, WatchRevocationsRequest, WatchRevocationsResponse,
    auth_service_server::{AuthService, AuthServiceServer},
};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Server};

// authd's HTTP/2 limits (src/app.rs, src/api/malformed.rs), so that the two
// servers differ only in the work authd does per call.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 64;
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// A bare tonic AuthService whose GetMe returns a constant user.
#[derive(Parser)]
#[command(name = "floor")]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
}

struct Floor {
    user: User,
}

fn unimplemented() -> Status {
    Status::unimplemented("the floor server answers GetMe only")
}

#[tonic::async_trait]
impl AuthService for Floor {
    async fn signup(&self, _: Request<SignupRequest>) -> Result<Response<SignupResponse>, Status> {
        Err(unimplemented())
    }

    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(unimplemented())
    }

    async fn complete_login(
        &self,
        _: Request<CompleteLoginRequest>,
    ) -> Result<Response<CompleteLoginResponse>, Status> {
        Err(unimplemented())
    }

    async fn enroll_totp(
        &self,
        _: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        Err(unimplemented())
    }

    async fn confirm_totp(
        &self,
        _: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        Err(unimplemented())
    }

    async fn disable_totp(
        &self,
        _: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        Err(unimplemented())
    }

    async fn regenerate_recovery_codes(
        &self,
        _: Request<RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<RegenerateRecoveryCodesResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_me(&self, _: Request<GetMeRequest>) -> Result<Response<GetMeResponse>, Status> {
        // A fresh message per call, as authd builds one from its database row.
        Ok(Response::new(GetMeResponse {
            user: Some(self.user.clone()),
        }))
    }

    async fn refresh(
        &self,
        _: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        Err(unimplemented())
    }

    async fn logout(&self, _: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        Err(unimplemented())
    }

    async fn change_password(
        &self,
        _: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        Err(unimplemented())
    }

    async fn request_password_reset(
        &self,
        _: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        Err(unimplemented())
    }

    async fn reset_password(
        &self,
        _: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        Err(unimplemented())
    }

    async fn introspect_token(
        &self,
        _: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        Err(unimplemented())
    }

    async fn issue_service_token(
        &self,
        _: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        Err(unimplemented())
    }

    async fn revoke_session(
        &self,
        _: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        Err(unimplemented())
    }

    type WatchRevocationsStream =
        futures_util::stream::Empty<Result<WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(unimplemented())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let id = uuid::Uuid::now_v7();
    // The same sizes as the user loadgen signs up on authd, so both servers
    // encode a response of the same length.
    let floor = Floor {
        user: User {
            id: id.to_string(),
            email: format!("loadgen-{}-getme@example.com", id.simple()),
            username: "loadgen".into(),
            created_at: Some(std::time::SystemTime::now().into()),
            ..User::default()
        },
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("floor serving gRPC on {}", args.listen);
    Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .add_service(AuthServiceServer::new(floor).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), authd::shutdown_signal())
        .await
        .context("gRPC server failed")
}
