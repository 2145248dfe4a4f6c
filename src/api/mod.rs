//! The gRPC edge: generated code, proto <-> domain conversion, the bearer
//! token layer and the handlers. Handlers stay thin: parse, call the core,
//! convert back.

mod access_log;
mod bearer;
mod convert;

use tonic::{Request, Response, Status};

pub use access_log::AccessLogLayer;
pub use bearer::BearerAuthLayer;

use crate::{Error, service::Accounts, token::Claims};

/// Code generated from `proto/auth/v1/auth.proto`.
pub mod proto {
    tonic::include_proto!("auth.v1");

    /// The encoded descriptors that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");
}

use proto::{
    GetMeRequest, GetMeResponse, LoginRequest, LoginResponse, SignupRequest, SignupResponse,
    auth_service_server::AuthService,
};

pub struct AuthApi {
    accounts: Accounts,
    password_min_length: usize,
}

impl AuthApi {
    pub fn new(accounts: Accounts, password_min_length: usize) -> Self {
        Self {
            accounts,
            password_min_length,
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn signup(
        &self,
        request: Request<SignupRequest>,
    ) -> Result<Response<SignupResponse>, Status> {
        let new_user = convert::new_user(request.into_inner(), self.password_min_length)?;
        let user = self.accounts.signup(new_user).await?;
        Ok(Response::new(SignupResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let credentials = convert::credentials(request.into_inner())?;
        let token = self.accounts.login(credentials).await?;
        Ok(Response::new(token.into()))
    }

    async fn get_me(
        &self,
        request: Request<GetMeRequest>,
    ) -> Result<Response<GetMeResponse>, Status> {
        let claims = request
            .extensions()
            .get::<Claims>()
            .ok_or(Error::InvalidToken)?;
        let user = self.accounts.me(claims).await?;
        Ok(Response::new(GetMeResponse {
            user: Some(user.into()),
        }))
    }
}
