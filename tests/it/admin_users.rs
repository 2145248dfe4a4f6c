//! AdminService's user management, through the real client, as an operator
//! (and as callers who may not) would use it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use authd::api::proto::User;
use authd::api::proto::admin::{
    CreateApiKeyRequest, CreateServiceAccountRequest, CreateUserRequest,
    DeleteServiceAccountRequest, DeleteUserRequest, DisableUserRequest, EnableUserRequest,
    GetUserRequest, ListAuditEventsRequest, ListServiceAccountsRequest, ListUserSessionsRequest,
    ListUsersRequest, ListUsersResponse, RevokeApiKeyRequest, RevokeUserSessionsRequest,
    SetPasswordRequest, UpdateUserRequest, WatchAuditEventsRequest,
    admin_service_client::AdminServiceClient,
};
use tonic::{Code, Status, transport::Channel};

use crate::support::{
    Backend, PASSWORD, TestApp, authorized, backend_tests, jwt_claims, violations,
};

backend_tests!(
    paging_sees_every_user_once_while_users_are_created,
    filters_match_text_role_and_state_literally,
    bad_list_requests_name_the_field,
    only_admins_write_and_auditors_read,
    a_disabled_user_is_locked_out_everywhere_at_once,
    a_deleted_user_is_gone_but_its_audit_trail_keeps_the_id,
    get_user_takes_exactly_one_key,
    a_user_created_without_password_cannot_log_in_until_set,
    set_password_and_revoke_end_sessions,
    update_user_applies_the_masked_fields,
);

const ADMIN_EMAIL: &str = "root@example.com";
const NEW_PASSWORD: &str = "a brand new passphrase";

fn assert_field(status: &Status, field: &str) {
    let violations = violations(status);
    assert!(
        violations.contains_key(field),
        "{field} not in {violations:?}"
    );
}

/// An app and an admin's token.
async fn with_admin(backend: Backend) -> (TestApp, User, String) {
    let app = TestApp::spawn(backend).await;
    let (admin, token) = app.user_with_roles(ADMIN_EMAIL, &["admin"]).await;
    (app, admin, token)
}

struct Admin {
    client: AdminServiceClient<Channel>,
    token: String,
}

impl Admin {
    async fn new(app: &TestApp, token: &str) -> Self {
        Self {
            client: app.admin_client().await,
            token: token.to_owned(),
        }
    }

    async fn list(&mut self, request: ListUsersRequest) -> Result<ListUsersResponse, Status> {
        let request = authorized(request, &self.token);
        Ok(self.client.list_users(request).await?.into_inner())
    }

    /// The emails of one page of users matching `request`.
    async fn emails(&mut self, request: ListUsersRequest) -> Vec<String> {
        let page = self.list(request).await.expect("list users");
        page.users.into_iter().map(|user| user.email).collect()
    }

    async fn create(
        &mut self,
        email: &str,
        password: &str,
        roles: &[&str],
    ) -> Result<User, Status> {
        let request = CreateUserRequest {
            email: email.into(),
            username: "created".into(),
            password: password.into(),
            roles: roles.iter().map(|&role| role.to_owned()).collect(),
            email_verified: false,
        };
        let response = self
            .client
            .create_user(authorized(request, &self.token))
            .await?;
        Ok(response.into_inner().user.expect("the created user"))
    }

    async fn get(&mut self, id: &str) -> Result<User, Status> {
        let request = GetUserRequest {
            id: id.into(),
            email: String::new(),
        };
        let response = self
            .client
            .get_user(authorized(request, &self.token))
            .await?;
        Ok(response.into_inner().user.expect("the user"))
    }

    async fn disable(&mut self, id: &str) -> Result<User, Status> {
        let request = authorized(DisableUserRequest { id: id.into() }, &self.token);
        Ok(self
            .client
            .disable_user(request)
            .await?
            .into_inner()
            .user
            .expect("user"))
    }

    async fn enable(&mut self, id: &str) -> Result<User, Status> {
        let request = authorized(EnableUserRequest { id: id.into() }, &self.token);
        Ok(self
            .client
            .enable_user(request)
            .await?
            .into_inner()
            .user
            .expect("user"))
    }

    async fn set_password(&mut self, id: &str, password: &str) -> Result<(), Status> {
        let request = SetPasswordRequest {
            id: id.into(),
            password: password.into(),
        };
        self.client
            .set_password(authorized(request, &self.token))
            .await
            .map(drop)
    }

    async fn sessions(&mut self, id: &str) -> Result<Vec<String>, Status> {
        let request = authorized(ListUserSessionsRequest { id: id.into() }, &self.token);
        let sessions = self.client.list_user_sessions(request).await?.into_inner();
        Ok(sessions.sessions.into_iter().map(|s| s.id).collect())
    }

    async fn update(&mut self, user: User, paths: &[&str]) -> Result<User, Status> {
        let request = UpdateUserRequest {
            user: Some(user),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|&path| path.to_owned()).collect(),
            }),
        };
        let response = self
            .client
            .update_user(authorized(request, &self.token))
            .await?;
        Ok(response.into_inner().user.expect("the updated user"))
    }
}

fn query(text: &str) -> ListUsersRequest {
    ListUsersRequest {
        query: text.into(),
        ..ListUsersRequest::default()
    }
}

async fn audit_count(app: &TestApp, user_id: &str, event_type: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT COUNT(*) AS n FROM audit_events \
             WHERE user_id = '{user_id}' AND event_type = '{event_type}'"
        ))
        .await
}

/// Inserts `n` users straight into the database, in id order; returns their
/// ids in that order.
async fn insert_users(app: &TestApp, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let rows: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "('{id}', 'bulk{i}@example.com', 'bulk{i}@example.com', 'bulk {i}', '', \
                 CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        })
        .collect();
    app.db
        .execute(&format!(
            "INSERT INTO users (id, email, email_key, username, password_hash, created_at, \
             updated_at) VALUES {}",
            rows.join(", ")
        ))
        .await;
    ids
}

async fn paging_sees_every_user_once_while_users_are_created(backend: Backend) {
    let (app, admin, token) = with_admin(backend).await;
    let mut existing = vec![admin.id.clone()];
    existing.extend(insert_users(&app, 1000).await);

    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let creator = tokio::spawn({
        let (stop, created) = (Arc::clone(&stop), Arc::clone(&created));
        let mut creator = Admin::new(&app, &token).await;
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                creator
                    .create(&format!("late{i}@example.com"), "", &[])
                    .await
                    .expect("create during paging");
                created.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
        }
    });

    let mut pager = Admin::new(&app, &token).await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        // Lets the creator add users between pages.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let page = pager
            .list(ListUsersRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..ListUsersRequest::default()
            })
            .await
            .expect("page");
        assert!(page.users.len() <= 100);
        seen.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    stop.store(true, Ordering::Release);
    creator.await.expect("creator");

    assert!(
        created.load(Ordering::Acquire) > 0,
        "users were created meanwhile"
    );
    let pre_existing: Vec<&String> = seen.iter().filter(|id| existing.contains(id)).collect();
    assert_eq!(
        pre_existing,
        existing.iter().collect::<Vec<_>>(),
        "every pre-existing user once, in creation order"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "no user twice, ordered by creation");
}

async fn filters_match_text_role_and_state_literally(backend: Backend) {
    let (app, _, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    admin
        .create("Ann.Lee@Example.com", "", &["billing:read"])
        .await
        .expect("ann");
    let bob = admin
        .create("bob_x@example.com", "", &["axb"])
        .await
        .expect("bob");
    let mut carol = admin
        .create("carol@example.com", "", &[])
        .await
        .expect("carol");
    carol.username = "100% Carol".into();
    admin.update(carol, &["username"]).await.expect("rename");

    assert_eq!(admin.emails(query("ANN.l")).await, ["ann.lee@example.com"]);
    assert_eq!(admin.emails(query("100%")).await, ["carol@example.com"]);
    assert_eq!(
        admin.emails(query("%")).await,
        ["carol@example.com"],
        "% is literal"
    );
    assert_eq!(
        admin.emails(query("_")).await,
        ["bob_x@example.com"],
        "_ is literal"
    );
    assert!(admin.emails(query("nobody")).await.is_empty());

    let role = |role: &str| ListUsersRequest {
        role: role.into(),
        ..ListUsersRequest::default()
    };
    assert_eq!(
        admin.emails(role("billing:read")).await,
        ["ann.lee@example.com"]
    );
    assert!(
        admin.emails(role("billing")).await.is_empty(),
        "whole roles only"
    );
    assert!(
        admin.emails(role("a_b")).await.is_empty(),
        "_ is literal in roles"
    );
    assert_eq!(admin.emails(role("admin")).await, [ADMIN_EMAIL]);

    admin.disable(&bob.id).await.expect("disable bob");
    let state = |disabled: bool| ListUsersRequest {
        disabled: Some(disabled),
        ..ListUsersRequest::default()
    };
    assert_eq!(admin.emails(state(true)).await, ["bob_x@example.com"]);
    assert_eq!(
        admin.emails(state(false)).await,
        [ADMIN_EMAIL, "ann.lee@example.com", "carol@example.com"]
    );
    assert_eq!(admin.emails(ListUsersRequest::default()).await.len(), 4);
}

async fn bad_list_requests_name_the_field(backend: Backend) {
    let (app, _, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        admin.create(email, "", &[]).await.expect("create");
    }
    for page_size in [-1, 501] {
        let request = ListUsersRequest {
            page_size,
            ..ListUsersRequest::default()
        };
        assert_field(
            &admin.list(request).await.expect_err("bad size"),
            "page_size",
        );
    }
    let too_long = query(&"a".repeat(255));
    assert_field(&admin.list(too_long).await.expect_err("long"), "query");
    let bad_role = ListUsersRequest {
        role: "Not A Role".into(),
        ..ListUsersRequest::default()
    };
    assert_field(&admin.list(bad_role).await.expect_err("role"), "role");
    for garbage in ["garbage!", "AAAA", "dGVzdA"] {
        let request = ListUsersRequest {
            page_token: garbage.into(),
            ..ListUsersRequest::default()
        };
        assert_field(&admin.list(request).await.expect_err("token"), "page_token");
    }

    let first = admin
        .list(ListUsersRequest {
            page_size: 1,
            query: "example".into(),
            ..ListUsersRequest::default()
        })
        .await
        .expect("first page");
    assert_eq!(first.users.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let same = admin
        .list(ListUsersRequest {
            page_size: 1,
            query: "EXAMPLE".into(),
            page_token: first.next_page_token.clone(),
            ..ListUsersRequest::default()
        })
        .await
        .expect("the same filters, in another case");
    assert_ne!(same.users[0].id, first.users[0].id);
    for reused in [
        ListUsersRequest {
            query: "other".into(),
            ..ListUsersRequest::default()
        },
        ListUsersRequest {
            query: "example".into(),
            disabled: Some(false),
            ..ListUsersRequest::default()
        },
        ListUsersRequest {
            query: "example".into(),
            role: "admin".into(),
            ..ListUsersRequest::default()
        },
    ] {
        let request = ListUsersRequest {
            page_token: first.next_page_token.clone(),
            ..reused
        };
        assert_field(
            &admin.list(request).await.expect_err("reused"),
            "page_token",
        );
    }
    let all = admin
        .list(ListUsersRequest {
            page_size: 4,
            ..ListUsersRequest::default()
        })
        .await
        .expect("all");
    assert_eq!(all.users.len(), 4);
    assert!(all.next_page_token.is_empty(), "no token on the last page");
}

/// Calls every AdminService method with `token` (or none) and returns the
/// codes, by method.
async fn codes(app: &TestApp, token: Option<&str>, user_id: &str) -> BTreeMap<&'static str, Code> {
    fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => authorized(message, token),
            None => tonic::Request::new(message),
        }
    }
    fn code<T>(result: Result<T, Status>) -> Code {
        result.map_or_else(|status| status.code(), |_| Code::Ok)
    }
    let mut client = app.admin_client().await;
    let id = || user_id.to_owned();
    let mut codes = BTreeMap::new();
    codes.insert(
        "ListUsers",
        code(
            client
                .list_users(request(ListUsersRequest::default(), token))
                .await,
        ),
    );
    let get = GetUserRequest {
        id: id(),
        email: String::new(),
    };
    codes.insert("GetUser", code(client.get_user(request(get, token)).await));
    let sessions = ListUserSessionsRequest { id: id() };
    codes.insert(
        "ListUserSessions",
        code(client.list_user_sessions(request(sessions, token)).await),
    );
    let create = CreateUserRequest {
        email: "made@example.com".into(),
        username: "made".into(),
        ..CreateUserRequest::default()
    };
    codes.insert(
        "CreateUser",
        code(client.create_user(request(create, token)).await),
    );
    let update = UpdateUserRequest {
        user: Some(User {
            id: id(),
            email_verified: true,
            ..User::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["email_verified".into()],
        }),
    };
    codes.insert(
        "UpdateUser",
        code(client.update_user(request(update, token)).await),
    );
    let set = SetPasswordRequest {
        id: id(),
        password: NEW_PASSWORD.into(),
    };
    codes.insert(
        "SetPassword",
        code(client.set_password(request(set, token)).await),
    );
    let revoke = RevokeUserSessionsRequest { id: id() };
    codes.insert(
        "RevokeUserSessions",
        code(client.revoke_user_sessions(request(revoke, token)).await),
    );
    let disable = DisableUserRequest { id: id() };
    codes.insert(
        "DisableUser",
        code(client.disable_user(request(disable, token)).await),
    );
    let enable = EnableUserRequest { id: id() };
    codes.insert(
        "EnableUser",
        code(client.enable_user(request(enable, token)).await),
    );
    let delete = DeleteUserRequest { id: id() };
    codes.insert(
        "DeleteUser",
        code(client.delete_user(request(delete, token)).await),
    );
    let account = CreateServiceAccountRequest {
        name: "svc".into(),
        roles: vec![],
    };
    codes.insert(
        "CreateServiceAccount",
        code(client.create_service_account(request(account, token)).await),
    );
    codes.insert(
        "ListServiceAccounts",
        code(
            client
                .list_service_accounts(request(ListServiceAccountsRequest {}, token))
                .await,
        ),
    );
    let delete_account = DeleteServiceAccountRequest { id: id() };
    codes.insert(
        "DeleteServiceAccount",
        code(
            client
                .delete_service_account(request(delete_account, token))
                .await,
        ),
    );
    let key = CreateApiKeyRequest {
        service_account_id: id(),
        expires_at: None,
    };
    codes.insert(
        "CreateApiKey",
        code(client.create_api_key(request(key, token)).await),
    );
    let revoke_key = RevokeApiKeyRequest { key_id: id() };
    codes.insert(
        "RevokeApiKey",
        code(client.revoke_api_key(request(revoke_key, token)).await),
    );
    codes.insert(
        "ListAuditEvents",
        code(
            client
                .list_audit_events(request(ListAuditEventsRequest::default(), token))
                .await,
        ),
    );
    codes.insert(
        "WatchAuditEvents",
        code(
            client
                .watch_audit_events(request(WatchAuditEventsRequest::default(), token))
                .await,
        ),
    );
    codes
}

async fn only_admins_write_and_auditors_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (plain, plain_token) = app.user_with_token("plain@example.com").await;
    let (_, auditor_token) = app
        .user_with_roles("auditor@example.com", &["auditor"])
        .await;

    let as_plain = codes(&app, Some(&plain_token), &plain.id).await;
    assert_eq!(as_plain.len(), 17, "every AdminService method");
    for (method, code) in &as_plain {
        assert_eq!(*code, Code::PermissionDenied, "plain user calling {method}");
    }
    for (method, code) in codes(&app, None, &plain.id).await {
        assert_eq!(code, Code::Unauthenticated, "no token calling {method}");
    }
    let as_auditor = codes(&app, Some(&auditor_token), &plain.id).await;
    for read in ["GetUser", "ListUsers", "ListUserSessions"] {
        assert_eq!(as_auditor[read], Code::Ok, "auditor calling {read}");
    }
    let read_only = [
        "GetUser",
        "ListUsers",
        "ListUserSessions",
        "ListAuditEvents",
        "WatchAuditEvents",
    ];
    for (method, code) in &as_auditor {
        if !read_only.contains(method) {
            assert_eq!(*code, Code::PermissionDenied, "auditor calling {method}");
        }
    }
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM users WHERE email = 'made@example.com'")
            .await,
        0,
        "no refused call changed anything"
    );
    app.get_me(&plain_token)
        .await
        .expect("the plain user is untouched");
}

async fn a_disabled_user_is_locked_out_everywhere_at_once(backend: Backend) {
    let (app, admin_user, token) = with_admin(backend).await;
    let replica = TestApp::spawn_on(Arc::clone(&app.db), &[]).await;
    let email = "dora@example.com";
    let (user, _) = app.user_with_token(email).await;
    let session = app.login(email, PASSWORD).await.expect("login");
    replica
        .get_me(&session.access_token)
        .await
        .expect("live at first");

    let mut admin = Admin::new(&app, &token).await;
    let disabled = admin.disable(&user.id).await.expect("disable");
    assert!(disabled.disabled);
    for server in [&app, &replica] {
        let refused = server
            .get_me(&session.access_token)
            .await
            .expect_err("disabled");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let refresh = app
        .refresh(&session.refresh_token)
        .await
        .expect_err("no refresh");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let right = app.login(email, PASSWORD).await.expect_err("disabled");
    assert_eq!(right.code(), Code::PermissionDenied);
    assert_eq!(right.message(), "account disabled");
    let wrong = app
        .login(email, "not the password")
        .await
        .expect_err("wrong");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(admin.sessions(&user.id).await.expect("sessions").is_empty());
    assert_eq!(audit_count(&app, &user.id, "user.disabled").await, 1);

    let enabled = admin.enable(&user.id).await.expect("enable");
    assert!(!enabled.disabled);
    let again = app
        .login(email, PASSWORD)
        .await
        .expect("login once enabled");
    replica.get_me(&again.access_token).await.expect("works");
    assert_eq!(audit_count(&app, &user.id, "user.enabled").await, 1);

    // An admin disabled by another admin loses AdminService at once.
    let (second, second_token) = app.user_with_roles("second@example.com", &["admin"]).await;
    admin
        .disable(&second.id)
        .await
        .expect("disable the second admin");
    let mut second_admin = Admin::new(&replica, &second_token).await;
    let refused = second_admin
        .get(&admin_user.id)
        .await
        .expect_err("disabled admin");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn a_deleted_user_is_gone_but_its_audit_trail_keeps_the_id(backend: Backend) {
    let (app, _, token) = with_admin(backend).await;
    let email = "gone@example.com";
    let (user, user_token) = app.user_with_token(email).await;
    let mut admin = Admin::new(&app, &token).await;
    let delete = |id: &str| authorized(DeleteUserRequest { id: id.into() }, &token);
    admin
        .client
        .delete_user(delete(&user.id))
        .await
        .expect("delete");

    assert_eq!(
        admin.get(&user.id).await.expect_err("gone").code(),
        Code::NotFound
    );
    let again = admin
        .client
        .delete_user(delete(&user.id))
        .await
        .expect_err("again");
    assert_eq!(again.code(), Code::NotFound);
    assert_field(
        &admin
            .client
            .delete_user(delete("nope"))
            .await
            .expect_err("bad"),
        "id",
    );
    assert_eq!(
        app.get_me(&user_token).await.expect_err("deleted").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM sessions WHERE user_id = '{}'",
                user.id
            ))
            .await,
        0,
        "sessions are deleted with the user"
    );
    assert_eq!(audit_count(&app, &user.id, "user.deleted").await, 1);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE details LIKE '%{email}%' \
                 OR details LIKE '%tester%' OR actor_id LIKE '%{email}%' \
                 OR request_id LIKE '%{email}%'"
            ))
            .await,
        0,
        "no audit event holds the email or the name"
    );
    assert!(app.login(email, PASSWORD).await.is_err());
}

async fn get_user_takes_exactly_one_key(backend: Backend) {
    let (app, admin_user, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    let by_email = |email: &str| {
        authorized(
            GetUserRequest {
                id: String::new(),
                email: email.into(),
            },
            &token,
        )
    };
    let found = admin
        .client
        .get_user(by_email("  ROOT@example.COM "))
        .await
        .expect("any spelling of the mailbox")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(found.id, admin_user.id);
    assert_eq!(found.roles, ["admin"]);
    assert_eq!(
        admin.get(&admin_user.id).await.expect("by id").email,
        ADMIN_EMAIL
    );
    let unknown = admin.client.get_user(by_email("nobody@example.com")).await;
    assert_eq!(unknown.expect_err("unknown").code(), Code::NotFound);
    let unknown_id = admin.get(&uuid::Uuid::now_v7().to_string()).await;
    let unknown_id = unknown_id.expect_err("unknown id");
    assert_eq!(unknown_id.code(), Code::NotFound);
    assert_eq!(unknown_id.message(), "user not found");
    assert_field(&admin.get("not-a-uuid").await.expect_err("bad id"), "id");
    assert_field(&admin.get("").await.expect_err("neither"), "id");
    let both = GetUserRequest {
        id: admin_user.id.clone(),
        email: ADMIN_EMAIL.into(),
    };
    let both = admin.client.get_user(authorized(both, &token)).await;
    assert_field(&both.expect_err("both"), "email");
    assert_field(
        &admin
            .client
            .get_user(by_email("no-at"))
            .await
            .expect_err("bad"),
        "email",
    );
}

async fn a_user_created_without_password_cannot_log_in_until_set(backend: Backend) {
    let (app, admin_user, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    let email = "newbie@example.com";
    let request = CreateUserRequest {
        email: " NewBie@Example.com".into(),
        username: " Newbie ".into(),
        password: String::new(),
        roles: vec!["auditor".into(), "billing:read".into(), "auditor".into()],
        email_verified: true,
    };
    let user = admin
        .client
        .create_user(authorized(request, &token))
        .await
        .expect("create")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.email, email);
    assert_eq!(user.username, "Newbie");
    assert_eq!(user.roles, ["auditor", "billing:read"]);
    assert!(user.email_verified && !user.disabled);
    assert_eq!(admin.get(&user.id).await.expect("stored"), user);

    for password in [PASSWORD, "anything at all"] {
        let refused = app
            .login(email, password)
            .await
            .expect_err("no password yet");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "invalid email or password");
    }
    admin
        .set_password(&user.id, NEW_PASSWORD)
        .await
        .expect("set");
    let session = app.login(email, NEW_PASSWORD).await.expect("login");
    assert_eq!(
        jwt_claims(&session.access_token)["roles"],
        serde_json::json!(["auditor", "billing:read"])
    );

    let taken = admin
        .create("NEWBIE@example.com", "", &[])
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let bad = CreateUserRequest {
        email: "nope".into(),
        username: " ".into(),
        password: "short".into(),
        roles: vec!["Bad Role".into()],
        email_verified: false,
    };
    let bad = admin.client.create_user(authorized(bad, &token)).await;
    let fields = violations(&bad.expect_err("bad"));
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["email", "password", "roles", "username"]
    );
    assert_eq!(audit_count(&app, &user.id, "user.created").await, 1);
    assert_eq!(audit_count(&app, &user.id, "roles.changed").await, 1);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = '{}' \
                 AND event_type = 'user.created' AND actor_id = '{}'",
                user.id, admin_user.id
            ))
            .await,
        1,
        "the caller is the actor"
    );
    let plain = admin
        .create("plain@example.com", PASSWORD, &[])
        .await
        .expect("plain");
    assert_eq!(audit_count(&app, &plain.id, "roles.changed").await, 0);
    app.login("plain@example.com", PASSWORD)
        .await
        .expect("a created password works");
}

async fn set_password_and_revoke_end_sessions(backend: Backend) {
    let (app, _, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    let email = "sam@example.com";
    let (user, first) = app.user_with_token(email).await;
    let second = app
        .login(email, PASSWORD)
        .await
        .expect("login")
        .access_token;
    let sessions = admin.sessions(&user.id).await.expect("sessions");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0], jwt_claims(&second)["sid"], "newest first");
    assert_eq!(sessions[1], jwt_claims(&first)["sid"]);

    let short = admin
        .set_password(&user.id, "short")
        .await
        .expect_err("rules");
    assert_field(&short, "password");
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = admin
        .set_password(&unknown, NEW_PASSWORD)
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    admin
        .set_password(&user.id, NEW_PASSWORD)
        .await
        .expect("set");
    for token in [&first, &second] {
        assert_eq!(
            app.get_me(token).await.expect_err("revoked").code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        app.login(email, PASSWORD).await.expect_err("old").code(),
        Code::Unauthenticated
    );
    let third = app
        .login(email, NEW_PASSWORD)
        .await
        .expect("new password")
        .access_token;
    assert_eq!(audit_count(&app, &user.id, "password.set").await, 1);

    let revoke = |id: &str| authorized(RevokeUserSessionsRequest { id: id.into() }, &token);
    admin
        .client
        .revoke_user_sessions(revoke(&user.id))
        .await
        .expect("revoke");
    assert_eq!(
        app.get_me(&third).await.expect_err("revoked").code(),
        Code::Unauthenticated
    );
    assert!(admin.sessions(&user.id).await.expect("none").is_empty());
    let missing = admin.client.revoke_user_sessions(revoke(&unknown)).await;
    assert_eq!(missing.expect_err("unknown").code(), Code::NotFound);
    assert_eq!(
        admin.sessions(&unknown).await.expect_err("unknown").code(),
        Code::NotFound
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = '{}' \
                 AND event_type = 'session.revoked' AND details LIKE '%\"reason\":\"admin\"%'",
                user.id
            ))
            .await,
        1
    );
}

async fn update_user_applies_the_masked_fields(backend: Backend) {
    let (app, admin_user, token) = with_admin(backend).await;
    let mut admin = Admin::new(&app, &token).await;
    let (user, _) = app.user_with_token("uma@example.com").await;

    let mut change = User {
        id: user.id.clone(),
        username: "Uma T.".into(),
        email: "ignored@example.com".into(),
        email_verified: true,
        roles: vec!["support".into()],
        ..User::default()
    };
    let updated = admin
        .update(change.clone(), &["username", "email_verified", "username"])
        .await
        .expect("update");
    assert_eq!(updated.username, "Uma T.");
    assert!(updated.email_verified);
    assert_eq!(updated.email, "uma@example.com", "unmasked fields stay");
    assert!(updated.roles.is_empty());
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE user_id = '{}' \
                 AND event_type = 'user.updated' AND details LIKE '%username,email_verified%'",
                user.id
            ))
            .await,
        1
    );
    assert_eq!(audit_count(&app, &user.id, "roles.changed").await, 0);

    let roles = admin
        .update(change.clone(), &["roles"])
        .await
        .expect("roles");
    assert_eq!(roles.roles, ["support"]);
    assert_eq!(audit_count(&app, &user.id, "roles.changed").await, 1);
    let token_after = app
        .login("uma@example.com", PASSWORD)
        .await
        .expect("login")
        .access_token;
    assert_eq!(
        jwt_claims(&token_after)["roles"],
        serde_json::json!(["support"])
    );

    change.email = ADMIN_EMAIL.to_uppercase();
    let taken = admin
        .update(change.clone(), &["email"])
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    change.email = "Uma.New@example.com".into();
    let moved = admin
        .update(change.clone(), &["email"])
        .await
        .expect("email");
    assert_eq!(moved.email, "uma.new@example.com");
    app.login("UMA.NEW@example.com", PASSWORD)
        .await
        .expect("login with the new email");
    assert!(app.login("uma@example.com", PASSWORD).await.is_err());

    for paths in [&["password"][..], &[][..], &["roles", "id"][..]] {
        let refused = admin.update(change.clone(), paths).await.expect_err("mask");
        assert_field(&refused, "update_mask");
    }
    let bad_values = User {
        email: "nope".into(),
        username: String::new(),
        ..change.clone()
    };
    let refused = admin
        .update(bad_values, &["email", "username"])
        .await
        .expect_err("bad");
    assert_eq!(
        violations(&refused).keys().collect::<Vec<_>>(),
        ["user.email", "user.username"]
    );
    let unknown = User {
        id: uuid::Uuid::now_v7().to_string(),
        ..change.clone()
    };
    let missing = admin
        .update(unknown, &["email_verified"])
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let no_id = User {
        id: String::new(),
        ..change
    };
    assert_field(
        &admin.update(no_id, &["username"]).await.expect_err("no id"),
        "user.id",
    );
    assert_eq!(
        admin.get(&admin_user.id).await.expect("admin").email,
        ADMIN_EMAIL
    );
}
