//! A backend service that accepts authd access tokens, verified offline
//! against authd's JWKS, and with revocations on refuses the tokens of
//! sessions authd ended, still without a call per request.
//!
//! With authd running on its defaults:
//!
//! ```sh
//! cargo run -p backend
//! grpcurl -plaintext -import-path examples/backend/proto -proto greeter/v1/greeter.proto \
//!   -H "authorization: Bearer $TOKEN" 127.0.0.1:50052 greeter.v1.GreeterService/Greet
//! ```
//!
//! `Broadcast` also needs the role `greeter:broadcast` in the token, e.g. a
//! service account's from `authd service-accounts create announcer --role
//! greeter:broadcast` and IssueServiceToken: that is one
//! `require_role` on the layer.
//!
//! `Confide` needs a login with a second factor (step-up): one
//! `require_second_factor` on the layer. `GREETER_SECOND_FACTOR_METHODS`
//! lists the gRPC paths that need one, comma separated (default: Confide's;
//! empty for none).
//!
//! Settings: `AUTHD_JWKS_URL` (http:// or https://), `AUTHD_JWKS_CA_FILE`
//! (the PEM CA to trust for an https:// JWKS and gRPC URL instead of the
//! system's roots), `AUTHD_ISSUER`, `AUTHD_AUDIENCE` (which must match
//! authd's) and `GREETER_LISTEN`. Revocations are on when both
//! `AUTHD_GRPC_URL` (authd's gRPC address) and `AUTHD_API_KEY` (a service
//! account's key) are set; `AUTHD_REVOCATION_FALLBACK` is `introspect` (the
//! default) or `reject`. `GREETER_NO_AUTH=1` serves every request without any
//! token check: a baseline for benchmarks, never for production.

use std::{env::VarError, future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use authd_verify::{
    Claims, Fallback, INVALID_TOKEN, JwksVerifier, RequireBearerLayer, Revocations, TokenVerifier,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Request, Response, Status,
    transport::{Certificate, ClientTlsConfig, Endpoint, Server},
};
use tower::ServiceBuilder;

use proto::{
    BroadcastRequest, BroadcastResponse, ConfideRequest, ConfideResponse, GreetRequest,
    GreetResponse,
    greeter_service_server::{GreeterService, GreeterServiceServer},
};

mod proto {
    // Generated code marks everything `pub`; this binary exports nothing.
    #![allow(unreachable_pub)]
    tonic::include_proto!("greeter.v1");
}

/// The role Broadcast needs: the layer checks it, so the handler need not.
const BROADCAST_ROLE: &str = "greeter:broadcast";
const BROADCAST_PATH: &str = "/greeter.v1.GreeterService/Broadcast";
/// What needs a second factor unless `GREETER_SECOND_FACTOR_METHODS` says
/// otherwise.
const CONFIDE_PATH: &str = "/greeter.v1.GreeterService/Confide";
/// Whom the greeter greets when no token is checked at all.
const ANONYMOUS: &str = "anonymous";

struct Greeter {
    /// Serving without the bearer layer (`GREETER_NO_AUTH=1`).
    no_auth: bool,
}

impl Greeter {
    /// The caller's subject. The layer refuses requests without claims;
    /// this guards against serving a handler without the layer by mistake.
    fn caller<'a, T>(&self, request: &'a Request<T>) -> Result<&'a str, Status> {
        match request.extensions().get::<Claims>() {
            Some(claims) => Ok(&claims.sub),
            None if self.no_auth => Ok(ANONYMOUS),
            None => Err(Status::unauthenticated(INVALID_TOKEN)),
        }
    }
}

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn greet(
        &self,
        request: Request<GreetRequest>,
    ) -> Result<Response<GreetResponse>, Status> {
        Ok(Response::new(GreetResponse {
            message: format!("Hello, {}!", self.caller(&request)?),
        }))
    }

    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        Ok(Response::new(BroadcastResponse {
            message: format!("Hello, everyone, from {}!", self.caller(&request)?),
        }))
    }

    async fn confide(
        &self,
        request: Request<ConfideRequest>,
    ) -> Result<Response<ConfideResponse>, Status> {
        Ok(Response::new(ConfideResponse {
            message: format!("Just between us, {}.", self.caller(&request)?),
        }))
    }
}

/// Who checks tokens, and which methods need a second factor.
struct Checks {
    verifier: Arc<dyn TokenVerifier>,
    second_factor: Vec<String>,
}

/// Serves the greeter on `listener` until `shutdown` completes. Every method
/// needs a token that the verifier accepts, Broadcast also its role and the
/// second-factor methods a token with `otp`; without checks, nothing is
/// checked.
async fn serve(
    listener: TcpListener,
    checks: Option<Checks>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let router = match checks {
        Some(Checks {
            verifier,
            second_factor,
        }) => Server::builder().add_service(
            ServiceBuilder::new()
                .layer(
                    RequireBearerLayer::new(verifier)
                        .require_role(BROADCAST_PATH, BROADCAST_ROLE)
                        .require_second_factor(second_factor),
                )
                .service(GreeterServiceServer::new(Greeter { no_auth: false })),
        ),
        None => Server::builder().add_service(GreeterServiceServer::new(Greeter { no_auth: true })),
    };
    router
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// An environment variable, or `default` when it is unset.
fn setting(name: &str, default: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(VarError::NotPresent) => Ok(default.to_owned()),
        Err(VarError::NotUnicode(_)) => anyhow::bail!("{name} is not valid UTF-8"),
    }
}

/// The verifier the settings ask for: the JWKS, and the revocation feed
/// when `AUTHD_GRPC_URL` and `AUTHD_API_KEY` are set.
async fn verifier() -> anyhow::Result<Arc<dyn TokenVerifier>> {
    let jwks_url = setting(
        "AUTHD_JWKS_URL",
        "http://127.0.0.1:50051/.well-known/jwks.json",
    )?;
    let jwks_url = jwks_url
        .parse()
        .with_context(|| format!("AUTHD_JWKS_URL={jwks_url} is not a URL"))?;
    let issuer = setting("AUTHD_ISSUER", "authd")?;
    let audience = setting("AUTHD_AUDIENCE", "authd")?;
    let ca_file = setting("AUTHD_JWKS_CA_FILE", "")?;
    let ca = if ca_file.is_empty() {
        None
    } else {
        Some(
            std::fs::read(&ca_file)
                .with_context(|| format!("cannot read AUTHD_JWKS_CA_FILE={ca_file}"))?,
        )
    };
    let jwks = match &ca {
        None => JwksVerifier::new(jwks_url, &issuer, &audience).await,
        Some(ca) => JwksVerifier::with_ca(jwks_url, ca, &issuer, &audience).await,
    }
    .context("cannot get authd's keys from AUTHD_JWKS_URL")?;

    let grpc_url = setting("AUTHD_GRPC_URL", "")?;
    let api_key = setting("AUTHD_API_KEY", "")?;
    match (grpc_url.is_empty(), api_key.is_empty()) {
        (true, true) => {
            tracing::info!("revocations off: a token is accepted until it expires");
            Ok(jwks)
        }
        (false, false) => {
            let fallback = match setting("AUTHD_REVOCATION_FALLBACK", "introspect")?.as_str() {
                "introspect" => Fallback::Introspect,
                "reject" => Fallback::Reject,
                other => anyhow::bail!(
                    "AUTHD_REVOCATION_FALLBACK={other}: expected introspect or reject"
                ),
            };
            let channel = authd_channel(&grpc_url, ca.as_deref())?;
            let revocations = Revocations::builder(channel, api_key)
                .fallback(fallback)
                .start();
            tracing::info!(%grpc_url, ?fallback, "revocations on");
            Ok(revocations.wrap(jwks))
        }
        _ => anyhow::bail!("set both AUTHD_GRPC_URL and AUTHD_API_KEY for revocations, or neither"),
    }
}

/// A channel to authd's gRPC address that connects when first used, so the
/// greeter starts while authd is down (the fallback covers the meantime).
fn authd_channel(url: &str, ca: Option<&[u8]>) -> anyhow::Result<tonic::transport::Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("AUTHD_GRPC_URL={url} is not a URL"))?;
    if url.starts_with("https://") {
        let tls = match ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .context("cannot set up TLS for AUTHD_GRPC_URL")?;
    }
    Ok(endpoint.connect_lazy())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt::init();
    let listen = setting("GREETER_LISTEN", "127.0.0.1:50052")?;
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("GREETER_LISTEN={listen} is not an address"))?;
    let second_factor = setting("GREETER_SECOND_FACTOR_METHODS", CONFIDE_PATH)?
        .split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect();
    let checks = match setting("GREETER_NO_AUTH", "")?.as_str() {
        "" | "0" => Some(Checks {
            verifier: verifier().await?,
            second_factor,
        }),
        "1" => {
            tracing::warn!(
                "GREETER_NO_AUTH=1: EVERY REQUEST IS SERVED WITHOUT ANY TOKEN CHECK. \
                 This is a benchmark baseline; never run it where anyone can reach it."
            );
            None
        }
        other => anyhow::bail!("GREETER_NO_AUTH={other}: expected 1 or 0"),
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on GREETER_LISTEN={listen}"))?;
    tracing::info!(address = %listen, "greeter serving gRPC");
    serve(listener, checks, interrupted()).await?;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT), for a graceful stop; SIGTERM keeps its
/// default of ending the process at once, which an example can afford.
async fn interrupted() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use authd::{
        Application,
        api::well_known::JWKS_PATH,
        config::{Cli, Config},
    };
    use std::time::{Duration, Instant};

    use authd_client::{
        admin::v1::{CreateServiceAccountRequest, admin_service_client::AdminServiceClient},
        v1::{
            CompleteLoginRequest, ConfirmTotpRequest, EnrollTotpRequest, IssueServiceTokenRequest,
            LoginRequest, LogoutRequest, SignupRequest, auth_service_client::AuthServiceClient,
        },
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use clap::Parser;
    use secrecy::ExposeSecret;
    use tonic::{Code, transport::Channel};
    use tonic_types::StatusExt;

    use super::{proto::greeter_service_client::GreeterServiceClient, *};

    /// A verifier of the tokens the authd at `authd` issues for `audience`.
    async fn jwks(authd: SocketAddr, audience: &str) -> Arc<JwksVerifier> {
        let url = format!("http://{authd}{JWKS_PATH}").parse().expect("url");
        JwksVerifier::new(url, "authd", audience)
            .await
            .expect("verifier")
    }

    /// Starts a greeter on port 0 that trusts the authd at `authd` for
    /// `audience`, and returns a client to it.
    async fn greeter(authd: SocketAddr, audience: &str) -> GreeterServiceClient<Channel> {
        greeter_with(Some(jwks(authd, audience).await)).await
    }

    async fn greeter_with(
        verifier: Option<Arc<dyn TokenVerifier>>,
    ) -> GreeterServiceClient<Channel> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let checks = verifier.map(|verifier| Checks {
            verifier,
            second_factor: vec![CONFIDE_PATH.to_owned()],
        });
        tokio::spawn(serve(listener, checks, std::future::pending()));
        GreeterServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
    }

    fn with_bearer<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        let value = format!("Bearer {token}").parse().expect("metadata");
        request.metadata_mut().insert("authorization", value);
        request
    }

    async fn greet(
        client: &mut GreeterServiceClient<Channel>,
        token: Option<&str>,
    ) -> Result<String, Status> {
        let request = match token {
            Some(token) => with_bearer(GreetRequest {}, token),
            None => Request::new(GreetRequest {}),
        };
        Ok(client.greet(request).await?.into_inner().message)
    }

    /// An authd serving in-process on a fresh SQLite file.
    struct Authd {
        addr: SocketAddr,
        config: Config,
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
        _dir: tempfile::TempDir,
    }

    async fn authd() -> Authd {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = format!("sqlite://{}", dir.path().join("authd.db").display());
        let cli = Cli::try_parse_from([
            "authd",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
            "--bcrypt-cost",
            "4",
        ])
        .expect("settings");
        let config = Config::try_from(cli.settings).expect("config");
        let app = Application::build(&config).await.expect("authd");
        let addr = app.local_addr().expect("addr");
        let server = tokio::spawn(app.run_until(std::future::pending()));
        Authd {
            addr,
            config,
            server,
            _dir: dir,
        }
    }

    const EMAIL: &str = "ada@example.com";
    const PASSWORD: &str = "correct horse battery";

    /// A user's access token: no roles.
    async fn user_token(auth: &mut AuthServiceClient<Channel>) -> (String, String) {
        let (email, password) = (EMAIL, PASSWORD);
        let user = auth
            .signup(SignupRequest {
                email: email.into(),
                password: password.into(),
                username: "Ada".into(),
            })
            .await
            .expect("signup")
            .into_inner()
            .user
            .expect("user");
        let token = auth
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
                device_label: String::new(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token;
        (user.id, token)
    }

    /// A service account with `role`, made as `authd service-accounts
    /// create` does, and a token of it: its id and the token.
    async fn service_account(
        authd: &Authd,
        auth: &mut AuthServiceClient<Channel>,
        name: &str,
        role: &str,
    ) -> (String, String) {
        let account = authd::create_service_account(&authd.config, name, &[role.to_owned()])
            .await
            .expect("service account");
        let token = auth
            .issue_service_token(IssueServiceTokenRequest {
                api_key: account.api_key.expose_secret().to_owned(),
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token;
        (account.id.to_string(), token)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_greeter_accepts_only_valid_authd_tokens() {
        let Authd {
            addr: authd,
            server,
            ..
        } = authd().await;

        let mut auth = AuthServiceClient::connect(format!("http://{authd}"))
            .await
            .expect("connect");
        let (user_id, token) = user_token(&mut auth).await;

        let mut client = greeter(authd, "authd").await;
        let greeting = greet(&mut client, Some(&token)).await.expect("greeting");
        assert_eq!(greeting, format!("Hello, {user_id}!"));

        // The same claims and signature under a key id authd never published.
        let (_, signed) = token.split_once('.').expect("a JWT");
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"unknown"}"#);
        let unknown_key = format!("{header}.{signed}");
        for bad in [None, Some("garbage"), Some(unknown_key.as_str())] {
            let status = greet(&mut client, bad).await.expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
            assert_eq!(status.message(), INVALID_TOKEN);
        }

        let mut elsewhere = greeter(authd, "another-service").await;
        let status = greet(&mut elsewhere, Some(&token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated);

        server.abort();
    }

    /// The TOTP code of `secret` (base32) `steps` steps from now; authd
    /// accepts one step either way.
    fn code(secret: &str, steps: u64) -> String {
        let totp = totp_rs::Builder::new()
            .with_secret(totp_rs::Secret::try_from_base32(secret).expect("base32"))
            .build()
            .expect("totp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        totp.generate(now + 30 * steps).to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn confide_needs_a_second_factor_in_the_token() {
        let authd = authd().await;
        let mut auth = AuthServiceClient::connect(format!("http://{}", authd.addr))
            .await
            .expect("connect");
        let (user_id, password_token) = user_token(&mut auth).await;
        let mut client = greeter(authd.addr, "authd").await;

        let refused = client
            .confide(with_bearer(ConfideRequest {}, &password_token))
            .await
            .expect_err("a password-only token");
        assert_eq!(refused.code(), Code::PermissionDenied);
        let info = refused.get_error_details().error_info().cloned();
        assert_eq!(
            info.map(|info| info.reason).as_deref(),
            Some(authd_verify::SECOND_FACTOR_REQUIRED)
        );
        assert!(greet(&mut client, Some(&password_token)).await.is_ok());

        let secret = auth
            .enroll_totp(with_bearer(
                EnrollTotpRequest {
                    current_password: PASSWORD.into(),
                },
                &password_token,
            ))
            .await
            .expect("enroll")
            .into_inner()
            .secret;
        auth.confirm_totp(with_bearer(
            ConfirmTotpRequest {
                code: code(&secret, 0),
            },
            &password_token,
        ))
        .await
        .expect("confirm");
        let challenge = auth
            .login(LoginRequest {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                device_label: String::new(),
            })
            .await
            .expect("login")
            .into_inner()
            .mfa_challenge
            .expect("a challenge");
        let otp_token = auth
            .complete_login(CompleteLoginRequest {
                mfa_token: challenge.mfa_token,
                code: code(&secret, 1),
            })
            .await
            .expect("complete")
            .into_inner()
            .access_token;

        let confided = client
            .confide(with_bearer(ConfideRequest {}, &otp_token))
            .await
            .expect("an otp token")
            .into_inner()
            .message;
        assert_eq!(confided, format!("Just between us, {user_id}."));
        assert!(greet(&mut client, Some(&otp_token)).await.is_ok());
        authd.server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broadcast_needs_the_role_in_the_token() {
        let authd = authd().await;
        let mut auth = AuthServiceClient::connect(format!("http://{}", authd.addr))
            .await
            .expect("connect");
        let (_, user_token) = user_token(&mut auth).await;
        let (account, service_token) =
            service_account(&authd, &mut auth, "announcer", BROADCAST_ROLE).await;

        let mut client = greeter(authd.addr, "authd").await;
        let broadcast = |token: String| {
            let mut client = client.clone();
            async move {
                let mut request = Request::new(BroadcastRequest {});
                let value = format!("Bearer {token}").parse().expect("metadata");
                request.metadata_mut().insert("authorization", value);
                client
                    .broadcast(request)
                    .await
                    .map(|r| r.into_inner().message)
            }
        };
        let denied = broadcast(user_token.clone()).await.expect_err("no role");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains(BROADCAST_ROLE), "{denied:?}");
        assert_eq!(
            broadcast(service_token).await.expect("broadcast"),
            format!("Hello, everyone, from {account}!")
        );
        // Greet still needs no role.
        greet(&mut client, Some(&user_token))
            .await
            .expect("greeting");

        authd.server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logged_out_session_is_refused_within_seconds_without_calls() {
        let authd = authd().await;
        let grpc = format!("http://{}", authd.addr);
        let mut auth = AuthServiceClient::connect(grpc.clone())
            .await
            .expect("connect");

        // An operator creates the greeter's own service account through
        // the admin API.
        let (_, operator_token) = service_account(&authd, &mut auth, "ops", "admin").await;
        let mut admin = AdminServiceClient::connect(grpc.clone())
            .await
            .expect("connect");
        let request = CreateServiceAccountRequest {
            name: "greeter".into(),
            roles: Vec::new(),
        };
        let api_key = admin
            .create_service_account(with_bearer(request, &operator_token))
            .await
            .expect("service account")
            .into_inner()
            .api_key;

        // Reject: a token can only pass while the feed is current, so
        // every acceptance below was decided offline.
        let channel = tonic::transport::Endpoint::from_shared(grpc)
            .expect("endpoint")
            .connect_lazy();
        let revocations = Revocations::builder(channel, api_key)
            .fallback(Fallback::Reject)
            .start();
        let mut client =
            greeter_with(Some(revocations.wrap(jwks(authd.addr, "authd").await))).await;

        let (user_id, token) = user_token(&mut auth).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !revocations.is_current() {
            assert!(
                Instant::now() < deadline,
                "the revocation feed is not current"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let greeting = greet(&mut client, Some(&token)).await.expect("greeting");
        assert_eq!(greeting, format!("Hello, {user_id}!"));

        auth.logout(with_bearer(
            LogoutRequest {
                all_sessions: false,
            },
            &token,
        ))
        .await
        .expect("logout");
        let logged_out = Instant::now();
        let refused = loop {
            match greet(&mut client, Some(&token)).await {
                Ok(_) => {
                    assert!(
                        logged_out.elapsed() < Duration::from_secs(2),
                        "the greeter still accepts a logged-out session's token"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => break status,
            }
        };
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(
            revocations.is_current(),
            "refused by the feed, not the fallback"
        );

        authd.server.abort();
    }

    #[tokio::test]
    async fn without_auth_every_request_is_served() {
        let mut client = greeter_with(None).await;
        for token in [None, Some("garbage")] {
            let greeting = greet(&mut client, token).await.expect("greeting");
            assert_eq!(greeting, format!("Hello, {ANONYMOUS}!"));
        }
    }
}
