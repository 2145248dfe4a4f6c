//! Service accounts: created by an operator, they exchange an API key for
//! access tokens that work at authd and verify offline like users' tokens.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, SystemTime},
};

use authd::api::{
    proto::admin::{
        CreateApiKeyRequest, CreateServiceAccountRequest, CreateServiceAccountResponse,
        DeleteServiceAccountRequest, ListServiceAccountsRequest, RevokeApiKeyRequest,
        ServiceAccount,
    },
    proto::{GetMeRequest, IssueServiceTokenRequest, IssueServiceTokenResponse},
    well_known::JWKS_PATH,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::support::{Backend, TestApp, authorized, backend_tests, jwt_claims, violations};

backend_tests!(
    a_service_token_is_an_access_token_for_the_account,
    revoked_expired_and_malformed_keys_are_refused_alike,
    deleting_an_account_ends_its_keys_and_tokens,
    names_are_unique_and_fields_are_checked,
    only_admins_manage_service_accounts,
    the_command_line_creates_an_account_whose_key_works,
);

/// The app, with an admin user's token to manage service accounts with.
async fn app_with_admin(backend: Backend) -> (TestApp, String) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.user_with_roles("root@example.com", &["admin"]).await;
    (app, token)
}

async fn create(
    app: &TestApp,
    token: &str,
    name: &str,
    roles: &[&str],
) -> Result<CreateServiceAccountResponse, Status> {
    let request = CreateServiceAccountRequest {
        name: name.into(),
        roles: roles.iter().map(|&role| role.to_owned()).collect(),
    };
    let response = app
        .admin_client()
        .await
        .create_service_account(authorized(request, token))
        .await?;
    Ok(response.into_inner())
}

async fn issue(app: &TestApp, api_key: &str) -> Result<IssueServiceTokenResponse, Status> {
    let request = IssueServiceTokenRequest {
        api_key: api_key.into(),
    };
    Ok(app
        .client()
        .await
        .issue_service_token(request)
        .await?
        .into_inner())
}

async fn list(app: &TestApp, token: &str) -> Result<Vec<ServiceAccount>, Status> {
    let request = authorized(ListServiceAccountsRequest {}, token);
    let response = app
        .admin_client()
        .await
        .list_service_accounts(request)
        .await?;
    Ok(response.into_inner().accounts)
}

async fn create_key(
    app: &TestApp,
    token: &str,
    service_account_id: &str,
    expires_at: Option<SystemTime>,
) -> Result<(String, String), Status> {
    let request = CreateApiKeyRequest {
        service_account_id: service_account_id.into(),
        expires_at: expires_at.map(Into::into),
    };
    let response = app
        .admin_client()
        .await
        .create_api_key(authorized(request, token))
        .await?
        .into_inner();
    Ok((response.key_id, response.api_key))
}

async fn revoke(app: &TestApp, token: &str, key_id: &str) -> Result<(), Status> {
    let request = RevokeApiKeyRequest {
        key_id: key_id.into(),
    };
    app.admin_client()
        .await
        .revoke_api_key(authorized(request, token))
        .await
        .map(drop)
}

async fn delete(app: &TestApp, token: &str, id: &str) -> Result<(), Status> {
    let request = DeleteServiceAccountRequest { id: id.into() };
    app.admin_client()
        .await
        .delete_service_account(authorized(request, token))
        .await
        .map(drop)
}

/// The fields an INVALID_ARGUMENT names.
fn bad_fields(status: &Status) -> BTreeSet<String> {
    violations(status).into_keys().collect()
}

fn assert_invalid_key(outcome: Result<IssueServiceTokenResponse, Status>, case: &str) {
    let status = outcome.expect_err(case);
    assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    assert_eq!(status.message(), "invalid API key", "{case}");
}

/// Audit events of `kind` whose details name `service_account_id`.
async fn audit_count(app: &TestApp, kind: &str, service_account_id: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = '{kind}' \
             AND details LIKE '%\"service_account_id\":\"{service_account_id}\"%'"
        ))
        .await
}

async fn a_service_token_is_an_access_token_for_the_account(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    let created = create(&app, &admin, "  deployer ", &["admin", "deploy:write"])
        .await
        .expect("create");
    let account = created.account.clone().expect("the account");
    assert_eq!(account.name, "deployer");
    assert_eq!(account.roles, ["admin", "deploy:write"]);
    assert!(
        created.api_key.starts_with("authd_sk_"),
        "a recognizable key"
    );

    // Only the key's hash is stored; no row anywhere holds the key.
    let secret = &created.api_key["authd_sk_".len()..];
    let bytes = URL_SAFE_NO_PAD.decode(secret).expect("base64url");
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let stored = format!(
        "SELECT COUNT(*) AS n FROM api_keys WHERE id = '{}' AND key_hash = '{hash}'",
        created.key_id
    );
    assert_eq!(app.db.count(&stored).await, 1);
    for table_and_column in [
        "api_keys WHERE key_hash",
        "service_accounts WHERE name",
        "audit_events WHERE details",
    ] {
        let leaked = format!("SELECT COUNT(*) AS n FROM {table_and_column} LIKE '%{secret}%'");
        assert_eq!(app.db.count(&leaked).await, 0, "{table_and_column}");
    }

    let issued = issue(&app, &created.api_key).await.expect("issue");
    assert_eq!(issued.token_type, "Bearer");
    assert!(issued.expires_in > 0);
    let token = issued.access_token;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], account.id.as_str());
    assert_eq!(claims["client_id"], account.id.as_str());
    assert_eq!(
        claims["roles"],
        serde_json::json!(["admin", "deploy:write"])
    );
    assert!(claims.get("sid").is_none(), "no session: {claims}");
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let user_claims = jwt_claims(&admin);
    assert_eq!(claims["iss"], user_claims["iss"]);
    assert_eq!(claims["aud"], user_claims["aud"]);

    // Offline, with the same verifier other services use.
    let url = format!("http://{}{JWKS_PATH}", app.addr)
        .parse()
        .expect("url");
    let issuer = user_claims["iss"].as_str().expect("iss");
    let audience = user_claims["aud"].as_str().expect("aud");
    let verifier = authd_verify::JwksVerifier::new(url, issuer, audience)
        .await
        .expect("verifier");
    let verified = verifier.claims(&token).await.expect("verifies offline");
    assert!(verified.is_service() && verified.has_role("admin"));
    assert_eq!(verified.sid, None);

    // At authd: AdminService serves it, IntrospectToken calls it active.
    let accounts = list(&app, &token).await.expect("a service token lists");
    assert_eq!(accounts, std::slice::from_ref(&account));
    let introspected = app.introspect(&token).await.expect("introspect");
    assert!(introspected.active);
    assert_eq!(introspected.client_id, account.id);
    assert_eq!(introspected.sid, "");
    assert_eq!(introspected.roles, ["admin", "deploy:write"]);
    let used = format!(
        "SELECT COUNT(*) AS n FROM api_keys WHERE id = '{}' AND last_used_at IS NOT NULL",
        created.key_id
    );
    assert_eq!(app.db.count(&used).await, 1);

    // It stands for no user: the user RPCs refuse it.
    let me = app
        .client()
        .await
        .get_me(authorized(GetMeRequest {}, &token))
        .await
        .expect_err("no session");
    assert_eq!(me.code(), Code::Unauthenticated);

    let issued_by_account = format!(
        "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'service_token.issued' \
         AND actor_type = 'service_account' AND actor_id = '{}' AND user_id IS NULL \
         AND details LIKE '%\"key_id\":\"{}\"%'",
        account.id, created.key_id
    );
    assert_eq!(app.db.count(&issued_by_account).await, 1);
    assert_eq!(
        audit_count(&app, "service_account.created", &account.id).await,
        1
    );
    let key_created = format!(
        "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'api_key.created' \
         AND actor_type = 'user' AND details LIKE '%\"key_id\":\"{}\"%'",
        created.key_id
    );
    assert_eq!(app.db.count(&key_created).await, 1);
}

async fn revoked_expired_and_malformed_keys_are_refused_alike(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    let created = create(&app, &admin, "worker", &[]).await.expect("create");
    let id = created.account.expect("account").id;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let (second_id, second) = create_key(&app, &admin, &id, Some(in_an_hour))
        .await
        .expect("a second key");
    let (_, third) = create_key(&app, &admin, &id, None)
        .await
        .expect("a third key");
    assert_eq!(audit_count(&app, "api_key.created", &id).await, 3);
    for key in [&created.api_key, &second, &third] {
        issue(&app, key).await.expect("every new key works");
    }

    revoke(&app, &admin, &created.key_id).await.expect("revoke");
    revoke(&app, &admin, &created.key_id)
        .await
        .expect("revoking again is fine");
    assert_invalid_key(issue(&app, &created.api_key).await, "revoked");
    assert_eq!(audit_count(&app, "api_key.revoked", &id).await, 1);

    app.db
        .execute(&format!(
            "UPDATE api_keys SET expires_at = '2000-01-01 00:00:00' WHERE id = '{second_id}'"
        ))
        .await;
    assert_invalid_key(issue(&app, &second).await, "expired");
    issue(&app, &third).await.expect("the others still work");

    let unknown = format!("authd_sk_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
    for (garbage, case) in [
        (unknown.as_str(), "unknown"),
        ("authd_sk_short", "malformed"),
        (&third[..third.len() - 1], "truncated"),
        ("Bearer nonsense", "not a key"),
    ] {
        assert_invalid_key(issue(&app, garbage).await, case);
    }
    let empty = issue(&app, "").await.expect_err("empty");
    assert_eq!(bad_fields(&empty), BTreeSet::from(["api_key".to_owned()]));

    let past = SystemTime::now() - Duration::from_secs(1);
    let status = create_key(&app, &admin, &id, Some(past))
        .await
        .expect_err("a key that never works");
    assert_eq!(
        bad_fields(&status),
        BTreeSet::from(["expires_at".to_owned()])
    );
    let status = create_key(&app, &admin, "nope", None)
        .await
        .expect_err("not an id");
    assert_eq!(
        bad_fields(&status),
        BTreeSet::from(["service_account_id".to_owned()])
    );
    let nobody = "0190a7b0-0000-7000-8000-000000000000";
    let status = create_key(&app, &admin, nobody, None)
        .await
        .expect_err("no such account");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = revoke(&app, &admin, nobody).await.expect_err("no such key");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = revoke(&app, &admin, "").await.expect_err("not an id");
    assert_eq!(bad_fields(&status), BTreeSet::from(["key_id".to_owned()]));
}

async fn deleting_an_account_ends_its_keys_and_tokens(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    let created = create(&app, &admin, "robot", &["admin"])
        .await
        .expect("create");
    let id = created.account.expect("account").id;
    let token = issue(&app, &created.api_key)
        .await
        .expect("issue")
        .access_token;
    list(&app, &token).await.expect("live before");

    delete(&app, &admin, &id).await.expect("delete");
    let keys = format!("SELECT COUNT(*) AS n FROM api_keys WHERE service_account_id = '{id}'");
    assert_eq!(app.db.count(&keys).await, 0, "keys go with the account");
    let status = list(&app, &token).await.expect_err("token ended");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!app.introspect(&token).await.expect("introspect").active);
    assert_invalid_key(issue(&app, &created.api_key).await, "deleted account");
    assert_eq!(audit_count(&app, "service_account.deleted", &id).await, 1);

    let status = delete(&app, &admin, &id).await.expect_err("already gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "service account not found");
    let status = delete(&app, &admin, "robot").await.expect_err("not an id");
    assert_eq!(bad_fields(&status), BTreeSet::from(["id".to_owned()]));
    assert_eq!(audit_count(&app, "service_account.deleted", &id).await, 1);
}

async fn names_are_unique_and_fields_are_checked(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    create(&app, &admin, "billing", &["billing:read"])
        .await
        .expect("create");
    let status = create(&app, &admin, " billing ", &[])
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(
        status.message(),
        "a service account with this name already exists"
    );
    let status = create(&app, &admin, " ", &["Admin"])
        .await
        .expect_err("bad fields");
    assert_eq!(
        bad_fields(&status),
        BTreeSet::from(["name".to_owned(), "roles".to_owned()])
    );
    create(&app, &admin, "search", &[]).await.expect("create");
    let names: Vec<_> = list(&app, &admin)
        .await
        .expect("list")
        .into_iter()
        .map(|account| account.name)
        .collect();
    assert_eq!(names, ["billing", "search"], "oldest first");
    let accounts = app
        .db
        .count("SELECT COUNT(*) AS n FROM service_accounts")
        .await;
    assert_eq!(accounts, 2);
}

async fn only_admins_manage_service_accounts(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    let reader = create(&app, &admin, "reader", &["billing:read"])
        .await
        .expect("create");
    let reader_id = reader.account.expect("account").id;
    let token = issue(&app, &reader.api_key)
        .await
        .expect("issue")
        .access_token;
    let (_, auditor) = app
        .user_with_roles("auditor@example.com", &["auditor"])
        .await;
    for (caller, who) in [(&token, "service account"), (&auditor, "auditor")] {
        let status = create(&app, caller, "sneaky", &["admin"])
            .await
            .expect_err("not an admin");
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        let status = create_key(&app, caller, &reader_id, None)
            .await
            .expect_err("not an admin");
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        let status = delete(&app, caller, &reader_id)
            .await
            .expect_err("not an admin");
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
    }
    let status = list(&app, "garbage").await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(list(&app, &admin).await.expect("list").len(), 1);
}

async fn the_command_line_creates_an_account_whose_key_works(backend: Backend) {
    let (app, admin) = app_with_admin(backend).await;
    let output = Command::new(env!("CARGO_BIN_EXE_authd"))
        .args([
            "service-accounts",
            "create",
            "ci",
            "--role",
            "deploy:write",
            "--role",
            "admin",
            "--database-url",
            &app.db.url,
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run authd");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let api_key = stdout
        .split_whitespace()
        .find(|word| word.starts_with("authd_sk_"))
        .expect("the key is printed");
    let account = list(&app, &admin).await.expect("list").remove(0);
    assert!(stdout.contains(&account.id), "{stdout}");
    assert_eq!(account.roles, ["admin", "deploy:write"]);

    let token = issue(&app, api_key).await.expect("the key works");
    assert_eq!(jwt_claims(&token.access_token)["sub"], account.id.as_str());
    let by_system = format!(
        "SELECT COUNT(*) AS n FROM audit_events WHERE actor_type = 'system' \
         AND event_type IN ('service_account.created', 'api_key.created') \
         AND details LIKE '%{}%'",
        account.id
    );
    assert_eq!(app.db.count(&by_system).await, 2);

    let again = Command::new(env!("CARGO_BIN_EXE_authd"))
        .args([
            "service-accounts",
            "create",
            "ci",
            "--database-url",
            &app.db.url,
        ])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run authd");
    assert!(!again.status.success(), "a duplicate name fails");
    assert!(!String::from_utf8_lossy(&again.stdout).contains("authd_sk_"));
}
