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
    GreetRequest, GreetResponse,
    greeter_service_server::{GreeterService, GreeterServiceServer},
};

mod proto {
    // Generated code marks everything `pub`; this binary exports nothing.
    #![allow(unreachable_pub)]
    tonic::include_proto!("greeter.v1");
}

struct Greeter;

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn greet(
        &self,
        request: Request<GreetRequest>,
    ) -> Result<Response<GreetResponse>, Status> {
        // The layer refuses requests without claims; this guards against
        // serving the handler without the layer.
        let claims = request
            .extensions()
            .get::<Claims>()
            .ok_or_else(|| Status::unauthenticated(INVALID_TOKEN))?;
        Ok(Response::new(GreetResponse {
            message: format!("Hello, {}!", claims.sub),
        }))
    }
}

/// Serves the greeter on `listener` until `shutdown` completes. Every method
/// needs a token that `verifier` accepts.
async fn serve(
    listener: TcpListener,
    verifier: Arc<JwksVerifier>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let greeter = ServiceBuilder::new()
        .layer(RequireBearerLayer::new(verifier))
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
    use authd_client::v1::{LoginRequest, SignupRequest, auth_service_client::AuthServiceClient};
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use clap::Parser;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_greeter_accepts_only_valid_authd_tokens() {
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
        let authd = app.local_addr().expect("addr");
        let server = tokio::spawn(app.run_until(std::future::pending()));

        let mut auth = AuthServiceClient::connect(format!("http://{authd}"))
            .await
            .expect("connect");
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
            })
            .await
            .expect("login")
            .into_inner()
            .access_token;

        let mut client = greeter(authd, "authd").await;
        let greeting = greet(&mut client, Some(&token)).await.expect("greeting");
        assert_eq!(greeting, format!("Hello, {}!", user.id));

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
}
