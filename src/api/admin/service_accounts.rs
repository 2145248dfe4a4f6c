//! The service-account RPCs of AdminService.

use tonic::{Request, Response, Status};

use super::{AdminApi, pb};

pub(super) async fn create_service_account(
    api: &AdminApi,
    request: Request<pb::CreateServiceAccountRequest>,
) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}

pub(super) async fn list_service_accounts(
    api: &AdminApi,
    request: Request<pb::ListServiceAccountsRequest>,
) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}

pub(super) async fn delete_service_account(
    api: &AdminApi,
    request: Request<pb::DeleteServiceAccountRequest>,
) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}

pub(super) async fn create_api_key(
    api: &AdminApi,
    request: Request<pb::CreateApiKeyRequest>,
) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}

pub(super) async fn revoke_api_key(
    api: &AdminApi,
    request: Request<pb::RevokeApiKeyRequest>,
) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("not implemented yet"))
}
