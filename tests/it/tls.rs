//! TLS and mutual TLS, with certificates made by the test, and reloading
//! them without dropping live connections.

use std::{path::Path, sync::Arc, time::Duration};

use authd::api::proto::{GetMeRequest, auth_service_client::AuthServiceClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::{self, Backend, PASSWORD, TestApp, TestDb};

/// A certificate authority, and what it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM private key.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Starts authd with TLS from `server`, and mutual TLS when `client_ca`.
async fn spawn_tls(server: &Issued, client_ca: Option<&Ca>) -> TestApp {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let dir = db.dir();
    let mut args = vec![
        "--tls-cert-file".to_owned(),
        write(&dir, "server.pem", &server.cert),
        "--tls-key-file".to_owned(),
        write(&dir, "server-key.pem", &server.key),
    ];
    if let Some(ca) = client_ca {
        args.push("--tls-client-ca-file".to_owned());
        args.push(write(&dir, "client-ca.pem", &ca.pem()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestApp::spawn_on(db, &args).await
}

async fn tls_channel(
    app: &TestApp,
    ca: &Ca,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    Channel::from_shared(format!("https://{}", app.addr))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

/// Signup, Login and GetMe over `channel`.
async fn round_trip(channel: Channel, email: &str) -> Result<(), tonic::Status> {
    let mut client = AuthServiceClient::new(channel);
    client
        .signup(authd::api::proto::SignupRequest {
            email: email.into(),
            password: PASSWORD.into(),
            username: "tls".into(),
        })
        .await?;
    let login = client
        .login(authd::api::proto::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            device_label: String::new(),
        })
        .await?
        .into_inner();
    let request = support::authorized(GetMeRequest {}, &login.access_token);
    let me = client
        .get_me(request)
        .await?
        .into_inner()
        .user
        .expect("user");
    assert_eq!(me.email, email);
    Ok(())
}

/// Whether a connection attempt, or the first calls on it, fail.
async fn refused(channel: Result<Channel, tonic::transport::Error>, email: &str) -> bool {
    match channel {
        Err(_) => true,
        Ok(channel) => round_trip(channel, email).await.is_err(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_refuses_plaintext() {
    let ca = Ca::new();
    let app = spawn_tls(&ca.issue(&["localhost"]), None).await;
    let channel = tls_channel(&app, &ca, None).await.expect("TLS connects");
    round_trip(channel, "tls@example.com")
        .await
        .expect("calls over TLS");

    let plaintext = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await;
    assert!(
        refused(plaintext, "plain@example.com").await,
        "plaintext must not reach the service"
    );
    let untrusting = tls_channel(&app, &Ca::new(), None).await;
    assert!(
        refused(untrusting, "x@example.com").await,
        "a client that does not trust the server's CA gets nowhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let (server_ca, client_ca) = (Ca::new(), Ca::new());
    let app = spawn_tls(&server_ca.issue(&["localhost"]), Some(&client_ca)).await;

    let with_cert = tls_channel(&app, &server_ca, Some(&client_ca.issue(&["client"])))
        .await
        .expect("connects");
    round_trip(with_cert, "mtls@example.com")
        .await
        .expect("a certified client is served");

    let without = tls_channel(&app, &server_ca, None).await;
    assert!(
        refused(without, "anon@example.com").await,
        "no client certificate, no service"
    );
    let wrong = tls_channel(&app, &server_ca, Some(&Ca::new().issue(&["client"]))).await;
    assert!(
        refused(wrong, "rogue@example.com").await,
        "a certificate from another CA is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificates_are_reloaded_without_dropping_live_connections() {
    let (old_ca, new_ca) = (Ca::new(), Ca::new());
    let app = spawn_tls(&old_ca.issue(&["localhost"]), None).await;
    let live = tls_channel(&app, &old_ca, None).await.expect("connects");
    round_trip(live.clone(), "before@example.com")
        .await
        .expect("works");

    let renewed = new_ca.issue(&["localhost"]);
    let dir = app.db.dir();
    write(&dir, "server-key.pem", &renewed.key);
    write(&dir, "server.pem", &renewed.cert);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = tls_channel(&app, &new_ca, None).await;
        if let Ok(channel) = attempt
            && round_trip(channel, "after@example.com").await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The connection made before the reload is still up and still served.
    round_trip(live, "during@example.com")
        .await
        .expect("live connection kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_verify_tokens_against_the_jwks_over_https() {
    use authd_verify::{JwksVerifier, Url};
    let ca = Ca::new();
    let app = spawn_tls(&ca.issue(&["localhost"]), None).await;
    let channel = tls_channel(&app, &ca, None).await.expect("connects");
    round_trip(channel.clone(), "jwks@example.com")
        .await
        .expect("signup");
    let mut client = AuthServiceClient::new(channel);
    let login = client
        .login(authd::api::proto::LoginRequest {
            email: "jwks@example.com".into(),
            password: PASSWORD.into(),
            device_label: String::new(),
        })
        .await
        .expect("login")
        .into_inner();

    let url: Url = format!(
        "https://localhost:{}/.well-known/jwks.json",
        app.addr.port()
    )
    .parse()
    .expect("uri");
    let verifier = JwksVerifier::with_ca(url.clone(), ca.pem().as_bytes(), "authd", "authd")
        .await
        .expect("fetches the JWKS over TLS");
    let claims = verifier
        .claims(&login.access_token)
        .await
        .expect("verifies");
    let me = support::jwt_claims(&login.access_token);
    assert_eq!(me["sub"], claims.sub.as_str());

    let stranger = Ca::new();
    let untrusted = JwksVerifier::with_ca(url, stranger.pem().as_bytes(), "authd", "authd").await;
    assert!(
        untrusted.is_err(),
        "a JWKS behind an untrusted certificate is refused"
    );
}

/// Served over TLS only, discovery says https, and a forged Host changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_over_tls_says_https_whatever_the_host_header() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    use tokio_rustls::rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, pem::PemObject},
    };
    let ca = Ca::new();
    let app = spawn_tls(&ca.issue(&["localhost"]), None).await;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA"))
        .expect("root");
    let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<bytes::Bytes>>(connector);
    let request = http::Request::get(format!(
        "https://localhost:{}/.well-known/openid-configuration",
        app.addr.port()
    ))
    .header(http::header::HOST, "evil.example")
    .body(Empty::new())
    .expect("request");
    let response = client.request(request).await.expect("discovery over TLS");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let document: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        document["jwks_uri"],
        format!("https://{}/.well-known/jwks.json", app.addr).as_str()
    );
}
