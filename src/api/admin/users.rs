//! The user-management RPCs of AdminService.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{AdminApi, paging, pb};
use crate::{
    api::convert::{Violations, required_id, timestamp},
    core::admin::{NewAccount, UserKey, UserUpdate},
    domain::{EMAIL_MAX_BYTES, Email, Error, Password, Role, Roles, UserFilter, Username},
};

/// No email is longer, so no longer text can match one.
const MAX_QUERY_BYTES: usize = EMAIL_MAX_BYTES;

/// The filters a page token is bound to, as text.
fn filter_texts(filter: &UserFilter) -> [&str; 3] {
    [
        filter.text.as_deref().unwrap_or_default(),
        filter.role.as_ref().map(Role::as_str).unwrap_or_default(),
        match filter.disabled {
            None => "",
            Some(false) => "enabled",
            Some(true) => "disabled",
        },
    ]
}

/// The filters, the position and the page size of a ListUsers request.
fn list_query(request: &pb::ListUsersRequest) -> Result<(UserFilter, Option<Uuid>, usize), Error> {
    let mut violations = Violations::default();
    let page_size = violations.check("page_size", paging::page_size(request.page_size));
    if request.query.len() > MAX_QUERY_BYTES {
        violations.push("query", "must be at most 254 bytes");
    }
    let role = if request.role.is_empty() {
        None
    } else {
        violations.check("role", Role::parse(&request.role))
    };
    let filter = UserFilter {
        text: (!request.query.is_empty()).then(|| request.query.to_lowercase()),
        role,
        disabled: request.disabled,
    };
    let after = violations.check(
        "page_token",
        paging::position(&request.page_token, &filter_texts(&filter)),
    );
    violations.finish()?;
    Ok((filter, after.flatten(), page_size.unwrap_or_default()))
}

pub(super) async fn list_users(
    api: &AdminApi,
    request: Request<pb::ListUsersRequest>,
) -> Result<Response<pb::ListUsersResponse>, Status> {
    api.caller(&request).await?;
    let (filter, after, page_size) = list_query(request.get_ref())?;
    let page = api.admin.list_users(&filter, after, page_size).await?;
    let next_page_token = match page.users.last() {
        Some(last) if page.more => paging::next_page_token(last.id, &filter_texts(&filter)),
        _ => String::new(),
    };
    Ok(Response::new(pb::ListUsersResponse {
        users: page.users.into_iter().map(Into::into).collect(),
        next_page_token,
    }))
}

fn user_key(request: &pb::GetUserRequest) -> Result<UserKey, Error> {
    let mut violations = Violations::default();
    let key = match (request.id.is_empty(), request.email.is_empty()) {
        (false, true) => violations.id("id", &request.id).map(UserKey::Id),
        (true, false) => violations
            .check("email", Email::parse(&request.email))
            .map(UserKey::Email),
        _ => {
            violations.push("id", "exactly one of id and email must be set");
            violations.push("email", "exactly one of id and email must be set");
            None
        }
    };
    violations.finish()?;
    key.ok_or_else(|| Error::internal("a user key without a violation did not parse"))
}

pub(super) async fn get_user(
    api: &AdminApi,
    request: Request<pb::GetUserRequest>,
) -> Result<Response<pb::GetUserResponse>, Status> {
    api.caller(&request).await?;
    let user = api.admin.get_user(user_key(request.get_ref())?).await?;
    Ok(Response::new(pb::GetUserResponse {
        user: Some(user.into()),
    }))
}

fn new_account(request: pb::CreateUserRequest, password_min: usize) -> Result<NewAccount, Error> {
    let mut violations = Violations::default();
    let email = violations.check("email", Email::parse(&request.email));
    let username = violations.check("username", Username::parse(&request.username));
    let password = if request.password.is_empty() {
        Some(None)
    } else {
        violations
            .check(
                "password",
                Password::parse_new(request.password, password_min),
            )
            .map(Some)
    };
    let roles = violations.check(
        "roles",
        Roles::parse(request.roles.iter().map(String::as_str)),
    );
    violations.finish()?;
    match (email, username, password, roles) {
        (Some(email), Some(username), Some(password), Some(roles)) => Ok(NewAccount {
            email,
            username,
            password,
            roles,
            email_verified: request.email_verified,
        }),
        _ => Err(Error::internal("a user without a violation did not parse")),
    }
}

pub(super) async fn create_user(
    api: &AdminApi,
    request: Request<pb::CreateUserRequest>,
) -> Result<Response<pb::CreateUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    let new = new_account(request.into_inner(), api.password_min_length)?;
    let user = api.admin.create_user(caller.by(), new).await?;
    Ok(Response::new(pb::CreateUserResponse {
        user: Some(user.into()),
    }))
}

/// The user named and the fields to apply, each parsed only if the mask
/// names it.
fn user_update(request: pb::UpdateUserRequest) -> Result<(Uuid, UserUpdate), Error> {
    let mut violations = Violations::default();
    let user = request.user.unwrap_or_default();
    let id = violations.id("user.id", &user.id);
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    if paths.is_empty() {
        violations.push("update_mask", "must name at least one field to change");
    }
    let mut update = UserUpdate::default();
    for path in &paths {
        let field = match path.as_str() {
            "username" => {
                update.username =
                    violations.check("user.username", Username::parse(&user.username));
                "username"
            }
            "email" => {
                update.email = violations.check("user.email", Email::parse(&user.email));
                "email"
            }
            "roles" => {
                update.roles = violations.check(
                    "user.roles",
                    Roles::parse(user.roles.iter().map(String::as_str)),
                );
                "roles"
            }
            "email_verified" => {
                update.email_verified = Some(user.email_verified);
                "email_verified"
            }
            _ => {
                violations.push(
                    "update_mask",
                    "may name only username, email, roles and email_verified",
                );
                continue;
            }
        };
        if !update.fields.contains(&field) {
            update.fields.push(field);
        }
    }
    violations.finish()?;
    let id = id.ok_or_else(|| Error::internal("an id without a violation did not parse"))?;
    Ok((id, update))
}

pub(super) async fn update_user(
    api: &AdminApi,
    request: Request<pb::UpdateUserRequest>,
) -> Result<Response<pb::UpdateUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    let (id, update) = user_update(request.into_inner())?;
    let user = api.admin.update_user(caller.by(), id, update).await?;
    Ok(Response::new(pb::UpdateUserResponse {
        user: Some(user.into()),
    }))
}

pub(super) async fn delete_user(
    api: &AdminApi,
    request: Request<pb::DeleteUserRequest>,
) -> Result<Response<pb::DeleteUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    api.admin.delete_user(caller.by(), id).await?;
    Ok(Response::new(pb::DeleteUserResponse {}))
}

pub(super) async fn disable_user(
    api: &AdminApi,
    request: Request<pb::DisableUserRequest>,
) -> Result<Response<pb::DisableUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    let user = api.admin.disable_user(caller.by(), id).await?;
    Ok(Response::new(pb::DisableUserResponse {
        user: Some(user.into()),
    }))
}

pub(super) async fn enable_user(
    api: &AdminApi,
    request: Request<pb::EnableUserRequest>,
) -> Result<Response<pb::EnableUserResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    let user = api.admin.enable_user(caller.by(), id).await?;
    Ok(Response::new(pb::EnableUserResponse {
        user: Some(user.into()),
    }))
}

fn new_password(
    request: pb::SetPasswordRequest,
    password_min: usize,
) -> Result<(Uuid, Password), Error> {
    let mut violations = Violations::default();
    let id = violations.id("id", &request.id);
    let password = violations.check(
        "password",
        Password::parse_new(request.password, password_min),
    );
    violations.finish()?;
    id.zip(password)
        .ok_or_else(|| Error::internal("a password without a violation did not parse"))
}

pub(super) async fn set_password(
    api: &AdminApi,
    request: Request<pb::SetPasswordRequest>,
) -> Result<Response<pb::SetPasswordResponse>, Status> {
    let caller = api.caller(&request).await?;
    let (id, password) = new_password(request.into_inner(), api.password_min_length)?;
    api.admin.set_password(caller.by(), id, password).await?;
    Ok(Response::new(pb::SetPasswordResponse {}))
}

pub(super) async fn reset_user_totp(
    api: &AdminApi,
    request: Request<pb::ResetUserTotpRequest>,
) -> Result<Response<pb::ResetUserTotpResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    api.admin.reset_totp(caller.by(), id).await?;
    Ok(Response::new(pb::ResetUserTotpResponse {}))
}

pub(super) async fn list_user_sessions(
    api: &AdminApi,
    request: Request<pb::ListUserSessionsRequest>,
) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
    api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    let sessions = api.admin.user_sessions(id).await?;
    Ok(Response::new(pb::ListUserSessionsResponse {
        sessions: sessions
            .into_iter()
            .map(|session| pb::Session {
                id: session.id.to_string(),
                created_at: Some(timestamp(session.created_at)),
            })
            .collect(),
    }))
}

pub(super) async fn revoke_user_sessions(
    api: &AdminApi,
    request: Request<pb::RevokeUserSessionsRequest>,
) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
    let caller = api.caller(&request).await?;
    let id = required_id("id", &request.get_ref().id)?;
    api.admin.revoke_user_sessions(caller.by(), id).await?;
    Ok(Response::new(pb::RevokeUserSessionsResponse {}))
}
