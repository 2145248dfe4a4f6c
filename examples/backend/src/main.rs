//! A backend service that accepts authd access tokens, verified offline
//! against authd's JWKS.
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
//! Settings: `AUTHD_JWKS_URL` (http:// or https://), `AUTHD_JWKS_CA_FILE`
//! (the PEM CA to trust for an https:// JWKS instead of the system's roots),
//! `AUTHD_ISSUER`, `AUTHD_AUDIENCE` (which must
//! match authd's) and `GREETER_LISTEN`.

use std::{env::VarError, future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use authd_verify::{Claims, INVALID_TOKEN, JwksVerifier, RequireBearerLayer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Server};
use tower::ServiceBuilder;

use proto::{
    BroadcastRequest, BroadcastResponse, GreetRequest, GreetResponse,
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

struct Greeter;

/// The caller's claims. The layer refuses requests without them; this
/// guards against serving a handler without the layer.
fn claims<T>(request: &Request<T>) -> Result<&Claims, Status> {
    request
        .extensions()
        .get::<Claims>()
        .ok_or_else(|| Status::unauthenticated(INVALID_TOKEN))
}

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn greet(
        &self,
        request: Request<GreetRequest>,
    ) -> Result<Response<GreetResponse>, Status> {
        Ok(Response::new(GreetResponse {
            message: format!("Hello, {}!", claims(&request)?.sub),
        }))
    }

    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        Ok(Response::new(BroadcastResponse {
            message: format!("Hello, everyone, from {}!", claims(&request)?.sub),
        }))
    }
}

/// Serves the greeter on `listener` until `shutdown` completes. Every method
/// needs a token that `verifier` accepts; Broadcast also needs its role.
async fn serve(
    listener: TcpListener,
    verifier: Arc<JwksVerifier>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let greeter = ServiceBuilder::new()
        .layer(RequireBearerLayer::new(verifier).require_role(BROADCAST_PATH, BROADCAST_ROLE))
        .service(GreeterServiceServer::new(Greeter));
    Server::builder()
        .add_service(greeter)
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt::init();
    let jwks_url = setting(
        "AUTHD_JWKS_URL",
        "http://127.0.0.1:50051/.well-known/jwks.json",
    )?;
    let jwks_url = jwks_url
        .parse()
        .with_context(|| format!("AUTHD_JWKS_URL={jwks_url} is not a URL"))?;
    let issuer = setting("AUTHD_ISSUER", "authd")?;
    let audience = setting("AUTHD_AUDIENCE", "authd")?;
    let listen = setting("GREETER_LISTEN", "127.0.0.1:50052")?;
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("GREETER_LISTEN={listen} is not an address"))?;

    let ca_file = setting("AUTHD_JWKS_CA_FILE", "")?;
    let verifier = if ca_file.is_empty() {
        JwksVerifier::new(jwks_url, &issuer, &audience).await
    } else {
        let ca = std::fs::read(&ca_file)
            .with_context(|| format!("cannot read AUTHD_JWKS_CA_FILE={ca_file}"))?;
        JwksVerifier::with_ca(jwks_url, &ca, &issuer, &audience).await
    }
    .context("cannot get authd's keys from AUTHD_JWKS_URL")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on GREETER_LISTEN={listen}"))?;
    tracing::info!(address = %listen, "greeter serving gRPC");
    serve(listener, verifier, interrupted()).await?;
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
    use authd_client::v1::{
        IssueServiceTokenRequest, LoginRequest, SignupRequest,
        auth_service_client::AuthServiceClient,
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use clap::Parser;
    use secrecy::ExposeSecret;
    use tonic::{Code, transport::Channel};

    use super::{proto::greeter_service_client::GreeterServiceClient, *};

    /// Starts a greeter on port 0 that trusts the authd at `authd` for
    /// `audience`, and returns a client to it.
    async fn greeter(authd: SocketAddr, audience: &str) -> GreeterServiceClient<Channel> {
        let url = format!("http://{authd}{JWKS_PATH}").parse().expect("url");
        let verifier = JwksVerifier::new(url, "authd", audience)
            .await
            .expect("verifier");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, verifier, std::future::pending()));
        GreeterServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
    }

    async fn greet(
        client: &mut GreeterServiceClient<Channel>,
        token: Option<&str>,
    ) -> Result<String, Status> {
        let mut request = Request::new(GreetRequest {});
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("metadata");
            request.metadata_mut().insert("authorization", value);
        }
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

    /// A user's access token: no roles.
    async fn user_token(auth: &mut AuthServiceClient<Channel>) -> (String, String) {
        let (email, password) = ("ada@example.com", "correct horse battery");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broadcast_needs_the_role_in_the_token() {
        let authd = authd().await;
        let mut auth = AuthServiceClient::connect(format!("http://{}", authd.addr))
            .await
            .expect("connect");
        let (_, user_token) = user_token(&mut auth).await;
        let account =
            authd::create_service_account(&authd.config, "announcer", &[BROADCAST_ROLE.to_owned()])
                .await
                .expect("service account");
        let service_token = auth
            .issue_service_token(IssueServiceTokenRequest {
                api_key: account.api_key.expose_secret().to_owned(),
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token;

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
            format!("Hello, everyone, from {}!", account.id)
        );
        // Greet still needs no role.
        greet(&mut client, Some(&user_token))
            .await
            .expect("greeting");

        authd.server.abort();
    }
}
