//! Settings: every one a flag with an environment variable, validated once at
//! startup into a [`Config`] that holds only usable values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use url::Url;

use crate::{
    api::listener::ListenerSettings,
    api::well_known::is_public_base,
    core::accounts::{AccountSettings, SessionSettings},
    core::audit::AuditSettings,
    core::kek::KekSettings,
    core::keys::KeySettings,
    core::mail::MailSettings,
    core::passwords::PasswordSettings,
    core::revocations::RevocationSettings,
    core::throttle::{LimitSettings, Lockout, Rate},
    core::totp::TotpSettings,
    domain::PASSWORD_MAX_BYTES,
    infra::{telemetry::LogFormat, tls::TlsSettings},
    store::{DatabaseUrl, PoolSettings},
};

// No Debug: Settings hold DATABASE_URL and AUTHD_REDIS_URL, passwords
// included, as plain strings until Config wraps them as secrets.
#[derive(Parser)]
#[command(
    name = "authd",
    version,
    about = "Authentication service: signup, login and signed access tokens over gRPC",
    // A flag given twice takes the last value, so wrappers can override.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage the signing keys kept in the database.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage service accounts, directly in the database.
    #[command(subcommand)]
    ServiceAccounts(ServiceAccountsCommand),
    /// Manage users' roles in the database, e.g. to make the first admin.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServiceAccountsCommand {
    /// Create a service account with one API key, printed once: only its
    /// hash is stored. Recorded in the audit trail as done by "system".
    Create {
        /// A unique name: 1 to 64 characters, as a username.
        name: String,
        /// A role its tokens carry, e.g. admin; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UsersCommand {
    /// Give the user with this email a role (e.g. admin).
    GrantRole { email: String, role: String },
    /// Take a role from the user with this email.
    RevokeRole { email: String, role: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Store a new signing key. Every replica publishes it within one
    /// AUTHD_KEY_REFRESH and signs with it after two; the old key keeps
    /// verifying until its tokens have expired.
    Rotate,
    /// Encrypt every stored signing key under AUTHD_KEY_ENCRYPTION_KEY_FILE,
    /// decrypting with AUTHD_PREVIOUS_KEY_ENCRYPTION_KEY_FILE where a key was
    /// encrypted with that one. All keys or none, in one transaction.
    Rewrap,
}

#[derive(Args)]
pub struct Settings {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "AUTHD_LISTEN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub(crate) listen: SocketAddr,

    /// postgres://… or postgresql://… for PostgreSQL; sqlite://PATH for an
    /// SQLite file, created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://authd.db",
        hide_env_values = true,
        global = true
    )]
    pub(crate) database_url: String,

    /// Most database connections kept open.
    #[arg(long, env = "AUTHD_DB_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub(crate) db_pool_size: u16,

    /// How long a call waits for a database connection before it fails
    /// UNAVAILABLE.
    #[arg(long, env = "AUTHD_DB_TIMEOUT", default_value = "5s", value_parser = parse_duration,
          global = true)]
    pub(crate) db_timeout: Duration,

    /// How long startup keeps retrying an unreachable database before it
    /// gives up and exits.
    #[arg(long, env = "AUTHD_DB_STARTUP_TIMEOUT", default_value = "30s",
          value_parser = parse_duration, global = true)]
    pub(crate) db_startup_timeout: Duration,

    /// Most Login calls per client (peer address, or the trusted forwarded
    /// header), e.g. 60/min.
    #[arg(
        long,
        env = "AUTHD_LOGIN_RATE",
        default_value = "60/min",
        global = true
    )]
    pub(crate) login_rate: Rate,

    /// Most Signup calls per client, e.g. 20/min.
    #[arg(
        long,
        env = "AUTHD_SIGNUP_RATE",
        default_value = "20/min",
        global = true
    )]
    pub(crate) signup_rate: Rate,

    /// Most RequestPasswordReset and ResetPassword calls per client (and
    /// the other calls that send or spend a mailed link), e.g. 10/min.
    #[arg(long, env = "AUTHD_MAIL_RATE", default_value = "10/min", global = true)]
    pub(crate) mail_rate: Rate,

    /// Most Refresh calls per client, e.g. 600/min.
    #[arg(
        long,
        env = "AUTHD_REFRESH_RATE",
        default_value = "600/min",
        global = true
    )]
    pub(crate) refresh_rate: Rate,

    /// Most IntrospectToken calls per client, e.g. 1000/s. Generous, since
    /// many services may introspect from one address.
    #[arg(
        long,
        env = "AUTHD_INTROSPECT_RATE",
        default_value = "1000/s",
        global = true
    )]
    pub(crate) introspect_rate: Rate,

    /// Consecutive failed logins for one email before it must wait.
    #[arg(long, env = "AUTHD_LOCKOUT_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub(crate) lockout_threshold: u32,

    /// The first wait after the threshold; it doubles with every further
    /// failure.
    #[arg(long, env = "AUTHD_LOCKOUT_BASE", default_value = "30s", value_parser = parse_duration,
          global = true)]
    pub(crate) lockout_base: Duration,

    /// The longest wait between login attempts for one email.
    #[arg(long, env = "AUTHD_LOCKOUT_MAX", default_value = "15m", value_parser = parse_duration,
          global = true)]
    pub(crate) lockout_max: Duration,

    /// A header that a proxy in front of authd sets to the client address
    /// (e.g. x-forwarded-for); rate limits then key on its rightmost entry.
    /// Only set this behind such a proxy: clients can send any header.
    #[arg(long, env = "AUTHD_TRUSTED_FORWARDED_HEADER", global = true)]
    pub(crate) trusted_forwarded_header: Option<http::HeaderName>,

    /// Rate limits count IPv6 clients by this many leading bits of their
    /// address (32 to 128): a host is usually given a whole /64.
    #[arg(long, env = "AUTHD_IPV6_PREFIX_LENGTH", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(32..=128), global = true)]
    pub(crate) ipv6_prefix_length: u8,

    /// Redis for rate-limit and throttle counters shared by all replicas
    /// (redis://host:6379/). Without it each replica counts on its own.
    #[arg(long, env = "AUTHD_REDIS_URL", hide_env_values = true, global = true)]
    pub(crate) redis_url: Option<String>,

    /// Prefix of every Redis key authd writes.
    #[arg(
        long,
        env = "AUTHD_REDIS_PREFIX",
        default_value = "authd:",
        global = true
    )]
    pub(crate) redis_prefix: String,

    /// Password-hashing calls that may wait for a core beyond those being
    /// hashed; more are refused at once. Default: twice the cores.
    #[arg(long, env = "AUTHD_HASH_QUEUE", global = true)]
    pub(crate) hash_queue: Option<usize>,

    /// Access token lifetime, whole seconds from 1s to 24h (e.g. 90s, 15m).
    #[arg(long, env = "AUTHD_TOKEN_TTL", default_value = "15m", value_parser = parse_token_ttl,
          global = true)]
    pub(crate) token_ttl: Duration,

    /// Refresh token lifetime; each refresh starts a new one (e.g. 30d).
    #[arg(long, env = "AUTHD_REFRESH_TTL", default_value = "30d", value_parser = parse_duration,
          global = true)]
    pub(crate) refresh_ttl: Duration,

    /// How long after a refresh the spent refresh token still returns the
    /// same successor instead of counting as reuse (0s to 1m).
    #[arg(long, env = "AUTHD_REFRESH_REUSE_GRACE", default_value = "10s",
          value_parser = parse_reuse_grace, global = true)]
    pub(crate) refresh_reuse_grace: Duration,

    /// A session not used (by Login or Refresh) for this long is dead: its
    /// tokens stop working at authd. Off unless set (e.g. 14d).
    #[arg(long, env = "AUTHD_SESSION_IDLE_TIMEOUT", value_parser = parse_duration, global = true)]
    pub(crate) session_idle_timeout: Option<Duration>,

    /// A session this old is dead, however often it was refreshed. Off
    /// unless set (e.g. 90d).
    #[arg(long, env = "AUTHD_SESSION_MAX_AGE", value_parser = parse_duration, global = true)]
    pub(crate) session_max_age: Option<Duration>,

    /// Most live sessions per user: a Login beyond it ends the least
    /// recently used ones. Off unless set.
    #[arg(long, env = "AUTHD_MAX_SESSIONS_PER_USER",
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub(crate) max_sessions_per_user: Option<u32>,

    /// How long ended sessions and expired refresh tokens are kept before
    /// every replica's housekeeping deletes them (e.g. 7d).
    #[arg(long, env = "AUTHD_SESSION_RETENTION", default_value = "7d",
          value_parser = parse_duration, global = true)]
    pub(crate) session_retention: Duration,

    /// How long audit events are kept (e.g. 90d, 1y). Every replica deletes
    /// older ones now and then.
    #[arg(long, env = "AUTHD_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration,
          global = true)]
    pub(crate) audit_retention: Duration,

    /// The issuer authenticator apps show beside a user's TOTP codes. No
    /// ':' (it separates issuer and account in the otpauth URI).
    #[arg(long, env = "AUTHD_TOTP_ISSUER", default_value = "authd", value_parser = parse_totp_issuer,
          global = true)]
    pub(crate) totp_issuer: String,

    /// How long a Login's second-factor challenge (its mfa_token) may be
    /// answered with CompleteLogin: long enough to find the phone.
    #[arg(long, env = "AUTHD_MFA_CHALLENGE_TTL", default_value = "5m",
          value_parser = parse_duration, global = true)]
    pub(crate) mfa_challenge_ttl: Duration,

    /// Most WatchAuditEvents streams one replica serves at once; more are
    /// refused with RESOURCE_EXHAUSTED. Each idle watch reads the database
    /// four times a second.
    #[arg(long, env = "AUTHD_MAX_AUDIT_WATCHES", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub(crate) max_audit_watches: u16,

    /// Most WatchRevocations streams one replica serves at once; more are
    /// refused with RESOURCE_EXHAUSTED. Watches share the replica's feed and
    /// read the database only to catch up.
    #[arg(long, env = "AUTHD_MAX_REVOCATION_WATCHES", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub(crate) max_revocation_watches: u16,

    /// How often each replica reloads signing keys from the database. New
    /// keys sign two intervals after rotation; the JWKS may be cached for one.
    #[arg(long, env = "AUTHD_KEY_REFRESH", default_value = "30s", value_parser = parse_duration,
          global = true)]
    pub(crate) key_refresh: Duration,

    /// Rotate the signing key automatically once it is this old (e.g. 30d).
    /// Off unless set.
    #[arg(long, env = "AUTHD_KEY_ROTATION_PERIOD", value_parser = parse_duration, global = true)]
    pub(crate) key_rotation_period: Option<Duration>,

    /// The `iss` claim of issued tokens, and the only one accepted.
    #[arg(long, env = "AUTHD_ISSUER", default_value = "authd", value_parser = parse_non_empty,
          global = true)]
    pub(crate) issuer: String,

    /// The address clients reach authd at (e.g. https://auth.example.com),
    /// for the discovery document's jwks_uri. Default: the issuer when it is
    /// an http(s) URL, else the listen address.
    #[arg(long, env = "AUTHD_PUBLIC_URL", value_parser = parse_public_url, global = true)]
    pub(crate) public_url: Option<Url>,

    /// The `aud` claim of issued tokens, and the only one accepted.
    #[arg(long, env = "AUTHD_AUDIENCE", default_value = "authd", value_parser = parse_non_empty,
          global = true)]
    pub(crate) audience: String,

    /// bcrypt work factor for new password hashes (4 to 31).
    #[arg(long, env = "AUTHD_BCRYPT_COST", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31), global = true)]
    pub(crate) bcrypt_cost: u32,

    /// Login refuses an account whose email is not verified (FAILED_PRECONDITION
    /// "email not verified"), and Signup answers a taken email like a new
    /// one, so it no longer tells who has an account.
    #[arg(long, env = "AUTHD_REQUIRE_VERIFIED_EMAIL", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub(crate) require_verified_email: bool,

    /// Shortest password accepted at signup, in characters (8 to 72).
    #[arg(long, env = "AUTHD_PASSWORD_MIN_LENGTH", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(8..=PASSWORD_MAX_BYTES as i64), global = true)]
    pub(crate) password_min_length: u16,

    /// Weakest new password accepted, as zxcvbn's score from 0 (anything the
    /// other rules allow) to 4; 3 means "safely unguessable" (over 10^8
    /// guesses).
    #[arg(long, env = "AUTHD_PASSWORD_MIN_SCORE", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(0..=4), global = true)]
    pub(crate) password_min_score: u8,

    /// Breached passwords to refuse: Have I Been Pwned's SHA-1 list
    /// (`HASH:COUNT` lines sorted by hash), read in place, never loaded.
    /// Login reports a right password found in it as compromised.
    #[arg(long, env = "AUTHD_BREACHED_PASSWORDS_FILE", global = true)]
    pub(crate) breached_passwords_file: Option<PathBuf>,

    /// PKCS#8 PEM Ed25519 private key to sign tokens with. Without it, authd
    /// generates a key on first start and keeps it in the database.
    #[arg(long, env = "AUTHD_SIGNING_KEY_FILE", global = true)]
    pub(crate) signing_key_file: Option<PathBuf>,

    /// Key-encryption key: a file holding 32 random bytes in base64
    /// (`openssl rand -base64 32`). With it, signing keys stored in the
    /// database are encrypted with it (XChaCha20-Poly1305).
    #[arg(long, env = "AUTHD_KEY_ENCRYPTION_KEY_FILE", global = true)]
    pub(crate) key_encryption_key_file: Option<PathBuf>,

    /// The key-encryption key being replaced, used only to decrypt keys
    /// still encrypted with it (while `authd keys rewrap` moves them).
    #[arg(
        long,
        env = "AUTHD_PREVIOUS_KEY_ENCRYPTION_KEY_FILE",
        requires = "key_encryption_key_file",
        global = true
    )]
    pub(crate) previous_key_encryption_key_file: Option<PathBuf>,

    /// PEM certificate chain to serve TLS with; needs AUTHD_TLS_KEY_FILE.
    /// Without it authd serves plaintext. Reloaded on SIGHUP or change.
    #[arg(
        long,
        env = "AUTHD_TLS_CERT_FILE",
        requires = "tls_key_file",
        global = true
    )]
    pub(crate) tls_cert_file: Option<PathBuf>,

    /// PEM private key of AUTHD_TLS_CERT_FILE.
    #[arg(
        long,
        env = "AUTHD_TLS_KEY_FILE",
        requires = "tls_cert_file",
        global = true
    )]
    pub(crate) tls_key_file: Option<PathBuf>,

    /// PEM CA certificate(s): with it, every client must present a
    /// certificate signed by one of them (mutual TLS).
    #[arg(
        long,
        env = "AUTHD_TLS_CLIENT_CA_FILE",
        requires = "tls_cert_file",
        global = true
    )]
    pub(crate) tls_client_ca_file: Option<PathBuf>,

    /// Web origins (comma-separated, e.g. https://app.example.com) whose
    /// pages may call authd with gRPC-Web; `*` allows any. Without it
    /// browsers' same-origin rules keep other sites' pages out.
    #[arg(
        long,
        env = "AUTHD_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) cors_allowed_origins: Vec<http::HeaderValue>,

    /// Serve gRPC server reflection (v1 and v1alpha), so tools like grpcurl
    /// need no proto file.
    #[arg(long, env = "AUTHD_REFLECTION", default_value_t = true, action = clap::ArgAction::Set,
          global = true)]
    pub(crate) reflection: bool,

    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish before
    /// they are dropped.
    #[arg(long, env = "AUTHD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration,
          global = true)]
    pub(crate) shutdown_grace: Duration,

    /// Log line format. Verbosity comes from RUST_LOG (default "info").
    #[arg(long, env = "AUTHD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text,
          global = true)]
    pub(crate) log_format: LogFormat,

    /// Most connections open at once on the gRPC port. At the cap a new
    /// connection closes the one idle the longest, or is refused if every
    /// one is busy.
    #[arg(long, env = "AUTHD_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub(crate) max_connections: u32,

    /// How long a connection may go without a call in progress before it is
    /// closed; this includes connections that never send anything.
    #[arg(long, env = "AUTHD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          global = true)]
    pub(crate) idle_timeout: Duration,

    /// Most calls in progress at once over all connections; more are
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTHD_MAX_CONCURRENT_CALLS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub(crate) max_concurrent_calls: u32,

    /// How long a call may take to its response, waiting for its request
    /// message included; then it is cancelled.
    #[arg(long, env = "AUTHD_CALL_TIMEOUT", default_value = "30s", value_parser = parse_duration,
          global = true)]
    pub(crate) call_timeout: Duration,

    /// How often an HTTP/2 connection that sends nothing is pinged; one
    /// that does not answer within 10s is closed.
    #[arg(long, env = "AUTHD_KEEPALIVE_INTERVAL", default_value = "30s",
          value_parser = parse_duration, global = true)]
    pub(crate) keepalive_interval: Duration,

    /// The SMTP server that delivers authd's mail: smtp://host:port (plain),
    /// smtp://host:port?tls=required (STARTTLS), smtps://user:password@host:465
    /// (implicit TLS). Off unless set: password reset and email
    /// verification then answer FAILED_PRECONDITION.
    #[arg(long, env = "AUTHD_SMTP_URL", global = true)]
    pub(crate) smtp_url: Option<String>,

    /// The From of every mail, e.g. "Example <no-reply@example.com>".
    /// Required with AUTHD_SMTP_URL.
    #[arg(long, env = "AUTHD_MAIL_FROM", global = true)]
    pub(crate) mail_from: Option<String>,

    /// The link of a password reset mail, with {token} where the token
    /// goes, e.g. https://app.example.com/reset?token={token}. Required with
    /// AUTHD_SMTP_URL.
    #[arg(long, env = "AUTHD_PASSWORD_RESET_URL", global = true)]
    pub(crate) password_reset_url: Option<String>,

    /// The link of an email verification mail, with {token}. Required with
    /// AUTHD_SMTP_URL.
    #[arg(long, env = "AUTHD_EMAIL_VERIFICATION_URL", global = true)]
    pub(crate) email_verification_url: Option<String>,

    /// The link of an email change confirmation, with {token}. Required
    /// with AUTHD_SMTP_URL.
    #[arg(long, env = "AUTHD_EMAIL_CHANGE_URL", global = true)]
    pub(crate) email_change_url: Option<String>,

    /// How long a password reset link works.
    #[arg(long, env = "AUTHD_PASSWORD_RESET_TTL", default_value = "1h",
          value_parser = parse_mail_duration, global = true)]
    pub(crate) password_reset_ttl: Duration,

    /// How long an email verification or email change link works.
    #[arg(long, env = "AUTHD_EMAIL_VERIFICATION_TTL", default_value = "24h",
          value_parser = parse_mail_duration, global = true)]
    pub(crate) email_verification_ttl: Duration,

    /// At most one password reset mail per address per this interval;
    /// further requests are answered as usual and send nothing. The same
    /// holds for the notice that someone tried to sign up with an address.
    #[arg(long, env = "AUTHD_PASSWORD_RESET_INTERVAL", default_value = "1m",
          value_parser = parse_mail_duration, global = true)]
    pub(crate) password_reset_interval: Duration,

    /// A directory of files that replace the built-in mail texts:
    /// <kind>.subject, <kind>.txt and <kind>.html (README: "Mail").
    #[arg(long, env = "AUTHD_MAIL_TEMPLATE_DIR", global = true)]
    pub(crate) mail_template_dir: Option<PathBuf>,

    /// How long the outbox keeps retrying a mail the SMTP server does not
    /// take; then the mail is kept, marked given up, and a warning logged.
    #[arg(long, env = "AUTHD_MAIL_GIVE_UP_AFTER", default_value = "24h",
          value_parser = parse_mail_duration, global = true)]
    pub(crate) mail_give_up_after: Duration,

    /// Address of the admin listener that serves Prometheus metrics at
    /// /metrics, and nothing else. Off unless set; keep it away from
    /// clients.
    #[arg(long, env = "AUTHD_METRICS_LISTEN", global = true)]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

/// The validated settings the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) listener: ListenerSettings,
    pub(crate) database_url: DatabaseUrl,
    pub(crate) pool: PoolSettings,
    pub(crate) limits: LimitSettings,
    pub(crate) hash_queue: Option<usize>,
    pub(crate) token_ttl: Duration,
    pub(crate) accounts: AccountSettings,
    pub(crate) sessions: SessionSettings,
    pub(crate) audit: AuditSettings,
    pub(crate) revocations: RevocationSettings,
    pub(crate) totp: TotpSettings,
    pub(crate) mail: MailSettings,
    pub(crate) keys: KeySettings,
    pub(crate) issuer: String,
    pub(crate) public_url: Option<Url>,
    pub(crate) audience: String,
    pub(crate) bcrypt_cost: u32,
    pub(crate) password_min_length: usize,
    pub(crate) passwords: PasswordSettings,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) cors_allowed_origins: Vec<http::HeaderValue>,
    pub(crate) reflection: bool,
    pub(crate) shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub(crate) metrics_listen: Option<SocketAddr>,
}

impl TryFrom<Settings> for Config {
    type Error = String;

    fn try_from(settings: Settings) -> Result<Self, String> {
        if settings.require_verified_email && settings.smtp_url.is_none() {
            return Err(
                "AUTHD_REQUIRE_VERIFIED_EMAIL=true needs AUTHD_SMTP_URL: without mail \
                        no user could verify an address, and so none could log in"
                    .into(),
            );
        }
        Ok(Self {
            listen: settings.listen,
            listener: ListenerSettings {
                max_connections: usize::try_from(settings.max_connections)
                    .map_err(|_| "AUTHD_MAX_CONNECTIONS is too large")?,
                idle_timeout: settings.idle_timeout,
                max_concurrent_calls: usize::try_from(settings.max_concurrent_calls)
                    .map_err(|_| "AUTHD_MAX_CONCURRENT_CALLS is too large")?,
                call_timeout: settings.call_timeout,
                keepalive_interval: settings.keepalive_interval,
            },
            database_url: DatabaseUrl::parse(&settings.database_url)?,
            pool: PoolSettings {
                size: usize::from(settings.db_pool_size),
                timeout: settings.db_timeout,
                startup_timeout: settings.db_startup_timeout,
            },
            limits: LimitSettings {
                login: settings.login_rate,
                signup: settings.signup_rate,
                mail: settings.mail_rate,
                refresh: settings.refresh_rate,
                introspect: settings.introspect_rate,
                lockout: Lockout {
                    threshold: settings.lockout_threshold,
                    base: settings.lockout_base,
                    max: settings.lockout_max.max(settings.lockout_base),
                },
                forwarded_header: settings.trusted_forwarded_header,
                ipv6_prefix_length: settings.ipv6_prefix_length,
                redis_url: settings.redis_url.map(SecretString::from),
                redis_prefix: settings.redis_prefix,
            },
            hash_queue: settings.hash_queue,
            token_ttl: settings.token_ttl,
            accounts: AccountSettings {
                require_verified_email: settings.require_verified_email,
            },
            sessions: SessionSettings {
                refresh_ttl: settings.refresh_ttl,
                reuse_grace: settings.refresh_reuse_grace,
                idle_timeout: settings.session_idle_timeout,
                max_age: settings.session_max_age,
                max_per_user: settings
                    .max_sessions_per_user
                    .map(usize::try_from)
                    .transpose()
                    .map_err(|_| "AUTHD_MAX_SESSIONS_PER_USER is too large")?,
                retention: settings.session_retention,
            },
            totp: TotpSettings {
                issuer: settings.totp_issuer,
                challenge_ttl: settings.mfa_challenge_ttl,
            },
            mail: MailSettings {
                smtp_url: settings.smtp_url.map(SecretString::from),
                from: settings.mail_from,
                password_reset_url: settings.password_reset_url,
                email_verification_url: settings.email_verification_url,
                email_change_url: settings.email_change_url,
                password_reset_ttl: settings.password_reset_ttl,
                email_verification_ttl: settings.email_verification_ttl,
                template_dir: settings.mail_template_dir,
                give_up_after: settings.mail_give_up_after,
                reset_interval: settings.password_reset_interval,
            },
            audit: AuditSettings {
                retention: settings.audit_retention,
                max_watches: usize::from(settings.max_audit_watches),
            },
            revocations: RevocationSettings {
                max_watches: usize::from(settings.max_revocation_watches),
            },
            keys: KeySettings {
                file: settings.signing_key_file,
                refresh: settings.key_refresh,
                rotation_period: settings.key_rotation_period,
                token_ttl: settings.token_ttl,
                encryption: KekSettings {
                    file: settings.key_encryption_key_file,
                    previous_file: settings.previous_key_encryption_key_file,
                },
            },
            issuer: settings.issuer,
            public_url: settings.public_url,
            audience: settings.audience,
            bcrypt_cost: settings.bcrypt_cost,
            password_min_length: usize::from(settings.password_min_length),
            passwords: PasswordSettings {
                min_score: settings.password_min_score,
                breached_file: settings.breached_passwords_file,
            },
            tls: settings
                .tls_cert_file
                .zip(settings.tls_key_file)
                .map(|(cert, key)| TlsSettings {
                    cert,
                    key,
                    client_ca: settings.tls_client_ca_file,
                }),
            cors_allowed_origins: settings.cors_allowed_origins,
            reflection: settings.reflection,
            shutdown_grace: settings.shutdown_grace,
            log_format: settings.log_format,
            metrics_listen: settings.metrics_listen,
        })
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err("expected a positive duration such as 500ms, 90s, 15m or 30d".to_owned()),
    }
}

/// Mail lifetimes and intervals are added to timestamps: bounded, so no
/// setting can overflow a date on a request path.
fn parse_mail_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        duration if duration <= Duration::from_secs(30 * 86_400) => Ok(duration),
        _ => Err("expected a duration from 1s to 30d".to_owned()),
    }
}

fn parse_totp_issuer(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.contains(':') {
        return Err("expected a name without ':', such as the service's".to_owned());
    }
    Ok(value.to_owned())
}

fn parse_reuse_grace(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(grace) if grace <= Duration::from_secs(60) => Ok(grace),
        _ => Err("expected a duration from 0s to 1m".to_owned()),
    }
}

fn parse_token_ttl(value: &str) -> Result<Duration, String> {
    let ttl = parse_duration(value)?;
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(1) || ttl > Duration::from_secs(86_400)
    {
        return Err("must be a whole number of seconds from 1s to 24h".into());
    }
    Ok(ttl)
}

fn parse_public_url(value: &str) -> Result<Url, String> {
    match Url::parse(value) {
        Ok(url) if is_public_base(&url) => Ok(url),
        _ => Err(
            "must be an absolute http:// or https:// URL without credentials, query or fragment"
                .into(),
        ),
    }
}

fn parse_non_empty(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_picks_the_backend_and_hides_the_value_in_errors() {
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:pw@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("sqlite:///var/lib/a.db"),
            Ok(DatabaseUrl::Sqlite(p)) if p == std::path::Path::new("/var/lib/a.db")
        ));
        let error = DatabaseUrl::parse("postgress://u:secret@h/db").expect_err("bad scheme");
        assert!(!error.contains("secret") && error.contains("DATABASE_URL"));
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn token_ttl_is_whole_seconds_within_a_day() {
        assert_eq!(parse_token_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_token_ttl("15m"), Ok(Duration::from_secs(900)));
        for bad in ["0s", "1500ms", "25h", "soon"] {
            assert!(parse_token_ttl(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mail_durations_stay_within_a_month() {
        assert_eq!(parse_mail_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_mail_duration("30d"),
            Ok(Duration::from_secs(30 * 86_400))
        );
        for bad in ["0s", "31d", "1000000years", "soon"] {
            assert!(parse_mail_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_public_url_is_an_absolute_http_url_that_can_prefix_a_path() {
        for good in ["https://auth.example.com", "http://10.0.0.1:8080/authd/"] {
            assert!(parse_public_url(good).is_ok(), "{good} refused");
        }
        for bad in [
            "auth.example.com",
            "/authd",
            "ftp://auth.example.com",
            "https://auth.example.com/?x=1",
            "https://auth.example.com/#top",
            "https://user:pw@auth.example.com",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_flag_values_stop_parsing_and_name_the_setting() {
        let error = Cli::try_parse_from(["authd", "--bcrypt-cost", "99"])
            .err()
            .expect("out of range");
        assert!(error.to_string().contains("--bcrypt-cost"));
        let error = Cli::try_parse_from(["authd", "serve", "--reflection", "maybe"])
            .err()
            .expect("not a bool");
        assert!(error.to_string().contains("--reflection"));
    }

    #[test]
    fn verified_emails_cannot_be_required_without_mail() {
        let config = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["authd"], args].concat()).expect("parses");
            Config::try_from(cli.settings)
        };
        let error = config(&["--require-verified-email", "true"]).expect_err("no SMTP");
        assert!(
            error.contains("AUTHD_REQUIRE_VERIFIED_EMAIL") && error.contains("AUTHD_SMTP_URL"),
            "{error}"
        );
        assert!(config(&["--require-verified-email", "false"]).is_ok());
        assert!(
            config(&[
                "--require-verified-email",
                "true",
                "--smtp-url",
                "smtp://127.0.0.1:2525"
            ])
            .is_ok()
        );
    }

    #[test]
    fn the_password_min_score_is_3_unless_set_within_0_to_4() {
        let cli = Cli::try_parse_from(["authd"]).expect("defaults");
        assert_eq!(cli.settings.password_min_score, 3);
        assert!(cli.settings.breached_passwords_file.is_none());
        for bad in ["5", "40", "strong"] {
            let error = Cli::try_parse_from(["authd", "--password-min-score", bad])
                .err()
                .expect("out of range");
            assert!(error.to_string().contains("--password-min-score"), "{bad}");
        }
    }

    #[test]
    fn the_ipv6_prefix_length_is_64_unless_set_within_32_to_128() {
        let cli = Cli::try_parse_from(["authd"]).expect("defaults");
        assert_eq!(cli.settings.ipv6_prefix_length, 64);
        for bad in ["31", "129", "sixty"] {
            let error = Cli::try_parse_from(["authd", "--ipv6-prefix-length", bad])
                .err()
                .expect("out of range");
            assert!(error.to_string().contains("--ipv6-prefix-length"), "{bad}");
        }
    }
}
