//! `auth.admin.v1.AdminService`: thin handlers, as in AuthService. The
//! bearer layer in front has already required a valid token and the role
//! each method needs ([`bearer_layer`]); every handler then asks the core
//! who the caller is ([`AdminApi::actor`]), which also checks that the
//! token's session, user or service account is still live.

mod audit;
mod paging;
mod service_accounts;
mod users;

use std::sync::Arc;

use authd_verify::{Claims, RequireBearerLayer};
use tonic::{Request, Response, Status};

use super::proto::admin::{
    self as pb, admin_service_server::AdminService, admin_service_server::SERVICE_NAME,
};
use crate::{
    core::{
        admin::{Admin, By},
        audit::Audit,
        tokens::Tokens,
    },
    domain::{
        Error,
        audit::{Actor, Origin},
        roles::{ADMIN, AUDITOR},
    },
};

/// The methods an `auditor` may call: those that change nothing. Every other
/// AdminService method, including any added later, needs `admin`.
const READ_ONLY_METHODS: [&str; 5] = [
    "GetUser",
    "ListUsers",
    "ListUserSessions",
    "ListAuditEvents",
    "WatchAuditEvents",
];

/// Requires a valid token on every AdminService method, with `admin`, or
/// `admin` or `auditor` on the read-only ones.
pub(crate) fn bearer_layer(tokens: Arc<Tokens>) -> RequireBearerLayer<Tokens> {
    let prefix = format!("/{SERVICE_NAME}/");
    super::proto::METHODS
        .iter()
        .filter_map(|path| Some((*path, path.strip_prefix(&prefix)?)))
        .fold(RequireBearerLayer::new(tokens), |layer, (path, method)| {
            if READ_ONLY_METHODS.contains(&method) {
                layer.require_any_role(path, [ADMIN, AUDITOR])
            } else {
                layer.require_role(path, ADMIN)
            }
        })
}

pub(crate) struct AdminApi {
    admin: Admin,
    audit: Audit,
    password_min_length: usize,
}

impl AdminApi {
    pub(crate) fn new(admin: Admin, audit: Audit, password_min_length: usize) -> Self {
        Self {
            admin,
            audit,
            password_min_length,
        }
    }

    /// The caller, once the core has checked that the token still stands
    /// for a live session of an enabled user, or an existing service
    /// account.
    async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Error> {
        let claims = request
            .extensions()
            .get::<Claims>()
            .ok_or(Error::InvalidToken)?;
        self.admin.actor(claims).await
    }
}

/// Who called and from where: what every change records.
pub(crate) struct Caller {
    pub(crate) actor: Actor,
    pub(crate) origin: Origin,
}

impl Caller {
    fn by(&self) -> By<'_> {
        By {
            actor: self.actor,
            origin: &self.origin,
        }
    }
}

impl AdminApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        Ok(Caller {
            actor: self.actor(request).await?,
            origin: super::origin(request),
        })
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        users::list_users(self, request).await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        users::get_user(self, request).await
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        users::create_user(self, request).await
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        users::update_user(self, request).await
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        users::delete_user(self, request).await
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        users::disable_user(self, request).await
    }

    async fn enable_user(
        &self,
        request: Request<pb::EnableUserRequest>,
    ) -> Result<Response<pb::EnableUserResponse>, Status> {
        users::enable_user(self, request).await
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        users::set_password(self, request).await
    }

    async fn reset_user_totp(
        &self,
        request: Request<pb::ResetUserTotpRequest>,
    ) -> Result<Response<pb::ResetUserTotpResponse>, Status> {
        users::reset_user_totp(self, request).await
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        users::list_user_sessions(self, request).await
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        users::revoke_user_sessions(self, request).await
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        service_accounts::create_service_account(self, request).await
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        service_accounts::list_service_accounts(self, request).await
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        service_accounts::delete_service_account(self, request).await
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        service_accounts::create_api_key(self, request).await
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        service_accounts::revoke_api_key(self, request).await
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        audit::list_audit_events(self, request).await
    }

    type WatchAuditEventsStream = audit::EventStream;

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        audit::watch_audit_events(self, request).await
    }
}
