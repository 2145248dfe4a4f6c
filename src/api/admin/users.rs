//! The user-management RPCs of AdminService.

use tonic::{Request, Response, Status};

use super::{AdminApi, pb};

pub(super) async fn list_users(
    api: &AdminApi,
    request: Request<pb::ListUsersRequest>,
) -> Result<Response<pb::ListUsersResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("ListUsers is not implemented yet"))
}

pub(super) async fn get_user(
    api: &AdminApi,
    request: Request<pb::GetUserRequest>,
) -> Result<Response<pb::GetUserResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("GetUser is not implemented yet"))
}

pub(super) async fn create_user(
    api: &AdminApi,
    request: Request<pb::CreateUserRequest>,
) -> Result<Response<pb::CreateUserResponse>, Status> {
    api.caller(&request).await?;
    let _ = api.password_min_length;
    Err(Status::unimplemented("CreateUser is not implemented yet"))
}

pub(super) async fn update_user(
    api: &AdminApi,
    request: Request<pb::UpdateUserRequest>,
) -> Result<Response<pb::UpdateUserResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("UpdateUser is not implemented yet"))
}

pub(super) async fn delete_user(
    api: &AdminApi,
    request: Request<pb::DeleteUserRequest>,
) -> Result<Response<pb::DeleteUserResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("DeleteUser is not implemented yet"))
}

pub(super) async fn disable_user(
    api: &AdminApi,
    request: Request<pb::DisableUserRequest>,
) -> Result<Response<pb::DisableUserResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("DisableUser is not implemented yet"))
}

pub(super) async fn enable_user(
    api: &AdminApi,
    request: Request<pb::EnableUserRequest>,
) -> Result<Response<pb::EnableUserResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("EnableUser is not implemented yet"))
}

pub(super) async fn set_password(
    api: &AdminApi,
    request: Request<pb::SetPasswordRequest>,
) -> Result<Response<pb::SetPasswordResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented("SetPassword is not implemented yet"))
}

pub(super) async fn list_user_sessions(
    api: &AdminApi,
    request: Request<pb::ListUserSessionsRequest>,
) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented(
        "ListUserSessions is not implemented yet",
    ))
}

pub(super) async fn revoke_user_sessions(
    api: &AdminApi,
    request: Request<pb::RevokeUserSessionsRequest>,
) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
    api.caller(&request).await?;
    Err(Status::unimplemented(
        "RevokeUserSessions is not implemented yet",
    ))
}
