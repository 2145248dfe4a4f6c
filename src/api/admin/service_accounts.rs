//! The service-account RPCs of AdminService.

use chrono::{DateTime, SubsecRound, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{AdminApi, pb};
use crate::{
    api::convert::{Violations, required_id, time, timestamp},
    domain::{Roles, Username, service_account::ServiceAccount},
};

fn account(account: ServiceAccount) -> pb::ServiceAccount {
    pb::ServiceAccount {
        id: account.id.to_string(),
        name: account.name.as_str().to_owned(),
        roles: account.roles.to_vec(),
        created_at: Some(timestamp(account.created_at)),
    }
}

/// When a new key stops working: never when unset, else a time that has
/// not passed yet.
fn expiry(
    expires_at: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, &'static str> {
    let Some(expires_at) = time(expires_at)? else {
        return Ok(None);
    };
    let expires_at = expires_at.trunc_subsecs(6);
    if expires_at <= Utc::now() {
        return Err("must be in the future");
    }
    Ok(Some(expires_at))
}

pub(super) async fn create_service_account(
    api: &AdminApi,
    request: Request<pb::CreateServiceAccountRequest>,
) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
    let caller = api.caller(&request).await?;
    let request = request.into_inner();
    let mut violations = Violations::default();
    let name = violations.check("name", Username::parse(&request.name));
    let roles = violations.check(
        "roles",
        Roles::parse(request.roles.iter().map(String::as_str)),
    );
    let (name, roles) = violations.into_result(name.zip(roles))?;
    let created = api
        .admin
        .create_service_account(name, roles, caller.by())
        .await?;
    Ok(Response::new(pb::CreateServiceAccountResponse {
        api_key: created.api_key.encode(),
        key_id: created.key_id.to_string(),
        account: Some(account(created.account)),
    }))
}

pub(super) async fn list_service_accounts(
    api: &AdminApi,
    request: Request<pb::ListServiceAccountsRequest>,
) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
    api.caller(&request).await?;
    let accounts = api.admin.list_service_accounts().await?;
    Ok(Response::new(pb::ListServiceAccountsResponse {
        accounts: accounts.into_iter().map(account).collect(),
    }))
}

pub(super) async fn delete_service_account(
    api: &AdminApi,
    request: Request<pb::DeleteServiceAccountRequest>,
) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    api.admin.delete_service_account(id, caller.by()).await?;
    Ok(Response::new(pb::DeleteServiceAccountResponse {}))
}

pub(super) async fn create_api_key(
    api: &AdminApi,
    request: Request<pb::CreateApiKeyRequest>,
) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
    let caller = api.caller(&request).await?;
    let request = request.into_inner();
    let mut violations = Violations::default();
    let account = violations.check(
        "service_account_id",
        Uuid::parse_str(&request.service_account_id).map_err(|_| "must be a UUID"),
    );
    let expires_at = violations.check("expires_at", expiry(request.expires_at));
    let (account, expires_at) = violations.into_result(account.zip(expires_at))?;
    let created = api
        .admin
        .create_api_key(account, expires_at, caller.by())
        .await?;
    Ok(Response::new(pb::CreateApiKeyResponse {
        key_id: created.key_id.to_string(),
        api_key: created.api_key.encode(),
    }))
}

pub(super) async fn revoke_api_key(
    api: &AdminApi,
    request: Request<pb::RevokeApiKeyRequest>,
) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
    let caller = api.caller(&request).await?;
    let key_id = required_id("key_id", &request.get_ref().key_id)?;
    api.admin.revoke_api_key(key_id, caller.by()).await?;
    Ok(Response::new(pb::RevokeApiKeyResponse {}))
}
