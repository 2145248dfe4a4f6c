//! The gRPC edge: generated code, proto <-> domain conversion, the bearer
//! token layer and the handlers. Handlers stay thin: parse, call the core,
//! convert back.

mod access_log;
pub(crate) mod admin;
mod bearer;
pub(crate) mod convert;
pub(crate) mod cors;
pub(crate) mod listener;
mod mail;
pub mod malformed;
mod mfa;
mod revocations;
mod sessions;
pub(crate) mod status;
pub mod well_known;

use authd_verify::Claims;
use tonic::{Request, Response, Status};

pub(crate) use access_log::AccessLogLayer;
pub(crate) use bearer::BearerAuthLayer;

use crate::{
    core::accounts::Accounts,
    core::revocations::Revocations,
    core::throttle::{Action, Limits},
    domain::{Error, audit::Origin, session::Device},
};

/// Code generated from `proto/auth/v1/auth.proto`.
pub mod proto {
    // The messages and the client are authd-client's; only the server stubs
    // are generated here.
    pub use authd_client::v1::*;

    tonic::include_proto!("auth.v1");

    /// The encoded descriptors that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");

    include!(concat!(env!("OUT_DIR"), "/auth_methods.rs"));

    /// `auth.admin.v1`: AdminService's server stubs, and authd-client's
    /// messages.
    pub mod admin {
        pub use authd_client::admin::v1::*;

        tonic::include_proto!("auth.admin.v1");
    }
}

use proto::{
    ChangePasswordRequest, ChangePasswordResponse, CompleteLoginRequest, CompleteLoginResponse,
    ConfirmTotpRequest, ConfirmTotpResponse, DisableTotpRequest, DisableTotpResponse,
    EnrollTotpRequest, EnrollTotpResponse, GetMeRequest, GetMeResponse, IntrospectTokenRequest,
    IntrospectTokenResponse, IssueServiceTokenRequest, IssueServiceTokenResponse,
    ListSessionsRequest, ListSessionsResponse, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, RefreshRequest, RefreshResponse, RegenerateRecoveryCodesRequest,
    RegenerateRecoveryCodesResponse, RequestPasswordResetRequest, RequestPasswordResetResponse,
    ResetPasswordRequest, ResetPasswordResponse, RevokeSessionRequest, RevokeSessionResponse,
    SignupRequest, SignupResponse, WatchRevocationsRequest, auth_service_server::AuthService,
};

/// The longest `x-request-id` recorded in the audit trail; the access log
/// layer has already replaced any that is not printable ASCII.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Where a call came from: its peer address and its request id.
pub(crate) fn origin<T>(request: &Request<T>) -> Origin {
    let request_id = request
        .metadata()
        .get(access_log::REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES)
        .map(str::to_owned);
    Origin {
        client_address: listener::peer(request.extensions()).map(|addr| addr.ip()),
        request_id,
    }
}

/// The claims the bearer layer verified. Only protected methods get here,
/// and the layer refuses them without claims, so this is a safety net.
fn claims<T>(request: &Request<T>) -> Result<&Claims, Error> {
    request
        .extensions()
        .get::<Claims>()
        .ok_or(Error::InvalidToken)
}

pub(crate) struct AuthApi {
    accounts: Accounts,
    revocations: Revocations,
    limits: Limits,
    password_min_length: usize,
}

impl AuthApi {
    pub(crate) fn new(
        accounts: Accounts,
        revocations: Revocations,
        limits: Limits,
        password_min_length: usize,
    ) -> Self {
        Self {
            accounts,
            revocations,
            limits,
            password_min_length,
        }
    }

    /// Counts the call against its client's rate for `action`.
    async fn limit_client<T>(&self, action: Action, request: &Request<T>) -> Result<(), Error> {
        let peer = crate::api::listener::peer(request.extensions()).map(|addr| addr.ip());
        self.limits
            .check_client(action, request.metadata().as_ref(), peer)
            .await
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn signup(
        &self,
        request: Request<SignupRequest>,
    ) -> Result<Response<SignupResponse>, Status> {
        self.limit_client(Action::Signup, &request).await?;
        let origin = origin(&request);
        let new_user = convert::new_user(request.into_inner(), self.password_min_length)?;
        let user = self.accounts.signup(new_user, &origin).await?;
        Ok(Response::new(SignupResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        self.limit_client(Action::Login, &request).await?;
        let origin = origin(&request);
        let device = sessions::device(&request);
        let (credentials, label) = convert::credentials(request.into_inner())?;
        let device = Device { label, ..device };
        let token = self.accounts.login(credentials, device, &origin).await?;
        Ok(Response::new(token.into()))
    }

    async fn complete_login(
        &self,
        request: Request<CompleteLoginRequest>,
    ) -> Result<Response<CompleteLoginResponse>, Status> {
        self.limit_client(Action::Login, &request).await?;
        let origin = origin(&request);
        let device = sessions::device(&request);
        let (mfa_token, code) = mfa::complete_login(request.get_ref())?;
        let tokens = self
            .accounts
            .complete_login(mfa_token, code, device, &origin)
            .await?;
        Ok(Response::new(tokens.into()))
    }

    async fn enroll_totp(
        &self,
        request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        let claims = claims(&request)?.clone();
        let origin = origin(&request);
        let current = mfa::enroll(request.into_inner())?;
        let enrollment = self.accounts.enroll_totp(&claims, current, &origin).await?;
        Ok(Response::new(enrollment.into()))
    }

    async fn confirm_totp(
        &self,
        request: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        let claims = claims(&request)?;
        let code = mfa::totp_code(&request.get_ref().code)?;
        let codes = self
            .accounts
            .confirm_totp(claims, code, &origin(&request))
            .await?;
        Ok(Response::new(ConfirmTotpResponse {
            recovery_codes: mfa::shown(codes),
        }))
    }

    async fn disable_totp(
        &self,
        request: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        let claims = claims(&request)?.clone();
        let origin = origin(&request);
        let (current, code) = mfa::disable(request.into_inner())?;
        self.accounts
            .disable_totp(&claims, current, code, &origin)
            .await?;
        Ok(Response::new(DisableTotpResponse {}))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<RegenerateRecoveryCodesResponse>, Status> {
        let claims = claims(&request)?;
        let code = mfa::totp_code(&request.get_ref().code)?;
        let codes = self
            .accounts
            .regenerate_recovery_codes(claims, code, &origin(&request))
            .await?;
        Ok(Response::new(RegenerateRecoveryCodesResponse {
            recovery_codes: mfa::shown(codes),
        }))
    }

    async fn get_me(
        &self,
        request: Request<GetMeRequest>,
    ) -> Result<Response<GetMeResponse>, Status> {
        let user = self.accounts.me(claims(&request)?).await?;
        Ok(Response::new(GetMeResponse {
            user: Some(user.into()),
        }))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        self.limit_client(Action::Refresh, &request).await?;
        let origin = origin(&request);
        let request = request.into_inner();
        let token = convert::required("refresh_token", &request.refresh_token)?;
        let tokens = self.accounts.refresh(token, &origin).await?;
        Ok(Response::new(tokens.into()))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let all_sessions = request.get_ref().all_sessions;
        self.accounts
            .logout(claims(&request)?, all_sessions, &origin(&request))
            .await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let claims = claims(&request)?.clone();
        let origin = origin(&request);
        let (current, new) =
            convert::password_change(request.into_inner(), self.password_min_length)?;
        self.accounts
            .change_password(&claims, current, new, &origin)
            .await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        self.limit_client(Action::Mail, &request).await?;
        let email = mail::reset_request(request.get_ref())?;
        self.accounts
            .request_password_reset(email, origin(&request))?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        self.limit_client(Action::Mail, &request).await?;
        let origin = origin(&request);
        let (token, new) = mail::reset(request.into_inner(), self.password_min_length)?;
        self.accounts.reset_password(token, new, &origin).await?;
        Ok(Response::new(ResetPasswordResponse {}))
    }

    async fn introspect_token(
        &self,
        request: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        self.limit_client(Action::Introspect, &request).await?;
        let token = convert::required("token", &request.get_ref().token)?;
        let claims = self.accounts.introspect(token).await?;
        Ok(Response::new(convert::introspection(claims)))
    }

    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        self.limit_client(Action::Login, &request).await?;
        let origin = origin(&request);
        let api_key = convert::required("api_key", &request.get_ref().api_key)?;
        let token = self.accounts.issue_service_token(api_key, &origin).await?;
        Ok(Response::new(convert::service_token(&token)))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let (list, current) = self.accounts.sessions(claims(&request)?).await?;
        Ok(Response::new(sessions::list(list, current)))
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        // Who asks comes first: an anonymous caller learns nothing of the
        // rules of session ids, as with ChangePassword and WatchRevocations.
        let claims = claims(&request)?;
        let session_id = sessions::session_id(&request.get_ref().session_id)?;
        self.accounts
            .revoke_session(claims, session_id, &origin(&request))
            .await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    type WatchRevocationsStream = revocations::EntryStream;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.accounts.revocation_watcher(claims(&request)?).await?;
        let cursor = revocations::cursor(&request.get_ref().cursor)?;
        let entries = self.revocations.watch(cursor)?;
        Ok(Response::new(revocations::entries(entries)))
    }
}
