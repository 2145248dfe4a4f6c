//! The wiring: builds every part from the [`Config`] into one
//! [`Application`], serves it, and runs the one-shot commands.

use std::{future::Future, net::SocketAddr, num::NonZero, sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::Server};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};
use tower::ServiceBuilder;

use crate::{
    api::listener::{self, CallLimitLayer, KEEPALIVE_TIMEOUT, ListenerSettings},
    api::{
        AccessLogLayer, AuthApi, BearerAuthLayer,
        admin::{self, AdminApi},
        malformed::{self, MAX_REQUEST_BYTES},
        proto::admin::admin_service_server::AdminServiceServer,
        proto::auth_service_server::AuthServiceServer,
        well_known,
    },
    config::{Config, UsersCommand},
    core::tokens::Tokens,
    core::{
        accounts::{AccountParts, Accounts},
        admin::{self as admin_users, Admin, service_accounts},
        audit::Audit,
        hasher::Hasher,
        kek::Keks,
        keys::{self, KeySettings},
        mail::Mail,
        passwords::PasswordPolicy,
        revocations::Revocations,
        throttle::Limits,
    },
    domain::{
        Email, Role, Roles, Username,
        audit::{Actor, Origin},
    },
    infra::{
        metrics::{self, Metrics},
        tls::Tls,
    },
    store::Database,
};

/// Calls at once on one HTTP/2 connection: more streams are refused by
/// HTTP/2 itself.
const MAX_CONCURRENT_STREAMS: u32 = 64;
/// A call's headers are a method, a content type and a token of a few
/// hundred bytes. A header list is held in memory whole, so a large limit
/// lets a client make authd hold far more than it sends (HPACK repeats a
/// header with one byte); larger lists are refused by HTTP/2.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A fully built service, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    database: Database,
    tokens: Arc<Tokens>,
    api: AuthApi,
    admin_api: AdminApi,
    audit: Audit,
    accounts: Accounts,
    mail: Mail,
    revocations: Revocations,
    tls: Option<Tls>,
    cors: Option<tower_http::cors::CorsLayer>,
    reflection: bool,
    shutdown_grace: Duration,
    keys: KeySettings,
    listener_settings: ListenerSettings,
    keks: Arc<Keks>,
    metrics: Metrics,
    metrics_listener: Option<TcpListener>,
    jwks_uri: Option<String>,
}

impl Application {
    /// Connects and migrates the database, loads the signing key and binds
    /// the listener. Every failure here is a startup error with context.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let database = connect_and_migrate(config).await?;
        let keks = Arc::new(Keks::load(&config.keys.encryption).await?);
        let keyring = keys::load(&database, &config.keys, &keks).await?;
        let tokens = Arc::new(Tokens::new(
            keyring,
            config.issuer.clone(),
            config.audience.clone(),
            config.token_ttl,
        ));
        let cores = std::thread::available_parallelism().map_or(1, NonZero::get);
        let queue = config.hash_queue.unwrap_or(2 * cores);
        let metrics = Metrics::new();
        let stored_cost = database.max_password_cost().await?;
        let hasher = Hasher::new(config.bcrypt_cost, cores, queue, &metrics, stored_cost).await?;
        let limits = Limits::new(config.limits.clone(), &metrics)
            .await
            .context("cannot connect to the Redis named by AUTHD_REDIS_URL")?;
        let revocations = Revocations::new(database.clone(), config.revocations, &metrics);
        let passwords = PasswordPolicy::load(&config.passwords)?;
        let admin = Admin::new(
            database.clone(),
            hasher.clone(),
            config.sessions,
            revocations.clone(),
            passwords.clone(),
        );
        let audit = Audit::new(database.clone(), config.audit);
        let mail = Mail::new(&config.mail, database.clone())?;
        let accounts = Accounts::new(
            database.clone(),
            hasher,
            Arc::clone(&tokens),
            AccountParts {
                settings: config.accounts,
                limits: limits.clone(),
                sessions: config.sessions,
                revocations: revocations.clone(),
                keks: Arc::clone(&keks),
                totp: config.totp.clone(),
                mail: mail.clone(),
                metrics: metrics.clone(),
                passwords,
            },
        );
        let tls = config.tls.clone().map(Tls::load).transpose()?;
        if tls.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(
                address = %config.listen,
                "serving plaintext on a non-loopback address: passwords and tokens cross the \
                 network unencrypted; set AUTHD_TLS_CERT_FILE and AUTHD_TLS_KEY_FILE"
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on AUTHD_LISTEN={}", config.listen))?;
        let jwks_uri = well_known::jwks_uri(
            config.public_url.as_ref(),
            &config.issuer,
            listener.local_addr()?,
            tls.is_some(),
        );
        Ok(Self {
            listener,
            database,
            tokens,
            api: AuthApi::new(
                accounts.clone(),
                revocations.clone(),
                limits,
                config.password_min_length,
            ),
            admin_api: AdminApi::new(admin, audit.clone(), config.password_min_length),
            audit,
            accounts,
            mail,
            revocations,
            tls,
            cors: crate::api::cors::cors(&config.cors_allowed_origins),
            reflection: config.reflection,
            shutdown_grace: config.shutdown_grace,
            keys: config.keys.clone(),
            listener_settings: config.listener,
            keks,
            metrics,
            metrics_listener: bind_metrics(config.metrics_listen).await?,
            jwks_uri,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when `AUTHD_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    /// Serves until `shutdown` completes. Health turns NOT_SERVING first, so
    /// load balancers stop sending work, then in-flight calls finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::Serving).await;
        let watcher = tokio::spawn(watch_database(self.database.clone(), reporter.clone()));
        let (stop_metrics, metrics_stop) = tokio::sync::oneshot::channel();
        let metrics_server = self.metrics_listener.map(|listener| {
            let router = {
                let database = self.database.clone();
                self.metrics
                    .router(Arc::new(move || database.pool_status()))
            };
            tokio::spawn(serve_metrics(listener, router, metrics_stop))
        });
        let audit_pruner = tokio::spawn(self.audit.keep_within_retention());
        let session_tidier = tokio::spawn(self.accounts.clone().keep_tidy());
        // Without SMTP nothing is ever queued, so neither runs.
        let (stop_resets, resets_stop) = tokio::sync::oneshot::channel::<()>();
        let mail_tasks = self.mail.sender(self.metrics.clone()).map(|sender| {
            let stop = async {
                let _ = resets_stop.await;
            };
            (
                tokio::spawn(sender.run()),
                tokio::spawn(self.accounts.serve_reset_requests(stop)),
            )
        });
        let revocation_feed = tokio::spawn(self.revocations.clone().keep_current());
        let jwks_max_age = self.keys.refresh;
        let key_refresher = tokio::spawn(keys::keep_fresh(
            self.database,
            Arc::clone(&self.tokens),
            self.keys,
            self.keks,
        ));

        let routes = routes(
            health,
            self.api,
            self.admin_api,
            self.tokens,
            self.reflection,
            jwks_max_age,
            self.jwks_uri,
        )?;

        let shutdown_grace = self.shutdown_grace;
        let tls_watcher = self.tls.clone().map(|tls| tokio::spawn(tls.watch()));
        let (began_stopping, stopping_began) = tokio::sync::oneshot::channel();
        let stopping = async {
            shutdown.await;
            watcher.abort();
            key_refresher.abort();
            audit_pruner.abort();
            session_tidier.abort();
            if let Some((sender, _)) = &mail_tasks {
                sender.abort();
            }
            revocation_feed.abort();
            self.revocations.stop();
            if let Some(tls_watcher) = &tls_watcher {
                tls_watcher.abort();
            }
            set_health(&reporter, ServingStatus::NotServing).await;
            tracing::info!("shutting down: finishing in-flight calls");
            let _ = stop_metrics.send(());
            let _ = began_stopping.send(());
        };
        tracing::info!(
            address = %self.listener.local_addr()?,
            tls = self.tls.is_some(),
            "authd serving gRPC"
        );
        let limits = self.listener_settings;
        let router = Server::builder()
            // HTTP/1.1 too, so plain HTTP clients can fetch the JWKS.
            .accept_http1(true)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            // Also ends a call whose request message never arrives.
            .timeout(limits.call_timeout)
            .layer(AccessLogLayer::new(self.metrics.clone()))
            .layer(CallLimitLayer::new(&limits, self.metrics.clone()))
            .layer(tower::util::MapResponseLayer::new(malformed::rewrite))
            // Preflight requests are answered here, before any routing.
            .layer(tower::util::option_layer(self.cors))
            .add_routes(Routes::from(routes));
        let serve: BoxFuture<'_, Result<(), tonic::transport::Error>> = match self.tls {
            None => {
                let incoming = listener::incoming(self.listener, limits, self.metrics, |tcp| {
                    std::future::ready(Some(tcp))
                });
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopping))
            }
            Some(tls) => {
                let incoming =
                    listener::incoming(self.listener, limits, self.metrics, move |tcp| {
                        let peer = tcp.remote();
                        tls.handshake(tcp, peer)
                    });
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopping))
            }
        };
        // Streams such as a load balancer's health watch never end by
        // themselves, so waiting for in-flight calls is bounded.
        let grace_over = async {
            if stopping_began.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(shutdown_grace).await;
        };
        let served = tokio::select! {
            biased;
            served = serve => served.context("gRPC server failed"),
            () = grace_over => {
                tracing::warn!("shutdown grace period over: dropping the calls still open");
                Ok(())
            }
        };
        // Reset requests already answered OK become outbox rows before the
        // process ends; the next sender to run delivers them.
        let _ = stop_resets.send(());
        if let Some((_, resets)) = mail_tasks
            && tokio::time::timeout(shutdown_grace, resets).await.is_err()
        {
            tracing::warn!("shutdown grace period over: password reset requests left unmailed");
        }
        if let Some(metrics_server) = metrics_server {
            metrics_server.await.context("metrics listener panicked")?;
        }
        served
    }
}

/// Every service on the port: health, AuthService (behind gRPC-Web
/// translation and the bearer gate), reflection when enabled, and the
/// well-known documents.
fn routes(
    health: HealthServer<impl Health>,
    api: AuthApi,
    admin_api: AdminApi,
    tokens: Arc<Tokens>,
    reflection: bool,
    jwks_max_age: Duration,
    jwks_uri: Option<String>,
) -> anyhow::Result<axum::Router> {
    let mut routes = Routes::builder();
    routes
        .add_service(health.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            ServiceBuilder::new()
                // Only AuthService speaks gRPC-Web: tonic-web refuses other
                // HTTP/1.1 requests, which would include the JWKS.
                .layer(tonic_web::GrpcWebLayer::new())
                .layer(BearerAuthLayer::new(Arc::clone(&tokens)))
                .service(AuthServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES)),
        )
        .add_service(
            ServiceBuilder::new()
                .layer(admin::bearer_layer(Arc::clone(&tokens)))
                .service(
                    AdminServiceServer::new(admin_api).max_decoding_message_size(MAX_REQUEST_BYTES),
                ),
        );
    if reflection {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::api::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // The error details authd sends (BadRequest, RetryInfo),
                // so grpcurl shows them by field name.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        routes
            .add_service(
                builder()
                    .build_v1()?
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                builder()
                    .build_v1alpha()?
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            );
    }
    let routes = well_known::add_to(
        routes.routes().into_axum_router(),
        tokens,
        jwks_max_age,
        jwks_uri,
    );
    Ok(routes)
}

/// Binds the admin listener, if one is configured.
async fn bind_metrics(address: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on AUTHD_METRICS_LISTEN={address}"))?;
    Ok(Some(listener))
}

/// Serves the metrics router on its own listener, apart from the gRPC port
/// so metrics never face clients, until `stop` fires or is dropped (which
/// happens if the gRPC server fails). A scrape in progress is finished.
async fn serve_metrics(
    listener: TcpListener,
    router: axum::Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "authd serving metrics at {}", metrics::PATH);
    }
    let stopped = async {
        let _ = stop.await;
    };
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(%error, "metrics listener failed");
    }
}

/// `authd migrate`: apply pending migrations and stop.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    connect_and_migrate(config).await.map(drop)
}

/// `authd keys rotate`: store the next signing key and stop.
pub async fn rotate_keys(config: &Config) -> anyhow::Result<keys::Rotated> {
    let database = connect_and_migrate(config).await?;
    let keks = Keks::load(&config.keys.encryption).await?;
    keys::load(&database, &config.keys, &keks).await?;
    keys::rotate(&database, &config.keys, &keks).await
}

/// `authd keys rewrap`: encrypt every stored signing key under the current
/// key-encryption key and stop.
pub async fn rewrap_keys(config: &Config) -> anyhow::Result<keys::Rewrapped> {
    let database = connect_and_migrate(config).await?;
    let keks = Keks::load(&config.keys.encryption).await?;
    keys::rewrap(&database, &keks).await
}

/// What `authd service-accounts create` made: the key exists only here.
pub struct ServiceAccountCreated {
    pub id: uuid::Uuid,
    pub api_key: secrecy::SecretString,
}

/// `authd service-accounts create`: a service account and its first key,
/// recorded in the audit trail as done by the system, then stop.
pub async fn create_service_account(
    config: &Config,
    name: &str,
    roles: &[String],
) -> anyhow::Result<ServiceAccountCreated> {
    let name = Username::parse(name)
        .map_err(|why| anyhow::anyhow!("invalid service account name: {why}"))?;
    let roles = Roles::parse(roles.iter().map(String::as_str))
        .map_err(|why| anyhow::anyhow!("invalid --role: {why}"))?;
    let database = connect_and_migrate(config).await?;
    let by = admin_users::By {
        actor: Actor::System,
        origin: &Origin::default(),
    };
    let created = service_accounts::create_service_account(&database, name, roles, by).await?;
    Ok(ServiceAccountCreated {
        id: created.account.id,
        api_key: created.api_key.encode().into(),
    })
}

/// `authd users grant-role|revoke-role`: gives or takes one role of one
/// user, recorded as done by the system; returns what changed, to print.
pub async fn change_role(config: &Config, command: &UsersCommand) -> anyhow::Result<String> {
    let (email, role, grant) = match command {
        UsersCommand::GrantRole { email, role } => (email, role, true),
        UsersCommand::RevokeRole { email, role } => (email, role, false),
    };
    let email = Email::parse(email).map_err(|why| anyhow::anyhow!("invalid email: {why}"))?;
    let role = Role::parse(role).map_err(|why| anyhow::anyhow!("invalid role {role:?}: {why}"))?;
    let database = connect_and_migrate(config).await?;
    let outcome = admin_users::change_role(&database, &email, role.clone(), grant)
        .await
        .context("cannot change the user's roles")?;
    let (user, role) = (outcome.user.id, role.as_str());
    let roles = outcome.user.roles.to_stored();
    Ok(match (outcome.changed, grant) {
        (true, true) => format!("granted role {role} to user {user}; roles now: {roles}"),
        (true, false) => format!("revoked role {role} from user {user}; roles now: {roles}"),
        (false, true) => format!("user {user} already has role {role}; nothing changed"),
        (false, false) => format!("user {user} does not have role {role}; nothing changed"),
    })
}

async fn connect_and_migrate(config: &Config) -> anyhow::Result<Database> {
    // The longest an access token issued before a revocation is accepted
    // after it, by authd or by a verifier.
    let revocation_window = config.token_ttl + authd_verify::LEEWAY;
    let database = Database::connect(&config.database_url, config.pool, revocation_window)
        .await
        .context("cannot connect to the database named by DATABASE_URL")?;
    database
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    database.backfill_email_keys().await?;
    Ok(database)
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(crate::api::proto::auth_service_server::SERVICE_NAME, status)
        .await;
    reporter
        .set_service_status(
            crate::api::proto::admin::admin_service_server::SERVICE_NAME,
            status,
        )
        .await;
}

/// Health follows the database: without it no RPC can succeed, so the
/// service reports NOT_SERVING until it is reachable again.
async fn watch_database(database: Database, reporter: HealthReporter) {
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
        let reachable = database.ping().await.is_ok();
        if !reachable {
            database.forget_idle_connections();
        }
        if reachable != serving {
            serving = reachable;
            tracing::warn!(reachable, "database reachability changed");
            let status = if reachable {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
