//! Test harness: the real server on 127.0.0.1:0, called through the generated
//! client, on a fresh SQLite file or a fresh PostgreSQL database per test.
#![allow(dead_code, unused_macros, unused_imports, unreachable_pub)] // each test binary uses a subset

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use authd::{
    Application,
    api::proto::{
        ChangePasswordRequest, GetMeRequest, IntrospectTokenRequest, IntrospectTokenResponse,
        LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RefreshResponse, SignupRequest,
        User, auth_service_client::AuthServiceClient,
    },
    config::{Cli, Config},
    token::KeyPair,
};
use clap::Parser;
use diesel::{SqliteConnection, sql_types::BigInt};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, sync_connection_wrapper::SyncConnectionWrapper,
};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, metadata::MetadataValue, transport::Channel};

pub const PASSWORD: &str = "correct horse battery";

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on. There is no skip:
/// without a reachable server the PostgreSQL tests fail.
fn postgres_server_url() -> String {
    std::env::var("AUTHD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped with it. It outlives the
/// applications started on it, so restarts can be tested.
pub struct TestDb {
    pub url: String,
    dir: TempDir,
    postgres_name: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("authd.db").display()),
                dir,
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("authd_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin =
                    AsyncPgConnection::establish(&format!("{}/postgres", postgres_server_url()))
                        .await
                        .expect("PostgreSQL must be reachable for the PostgreSQL tests");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                Self {
                    url: format!("{}/{name}", postgres_server_url()),
                    dir,
                    postgres_name: Some(name),
                }
            }
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Runs one SQL statement directly, bypassing the service.
    pub async fn execute(&self, sql: &str) {
        if self.postgres_name.is_some() {
            let mut conn = AsyncPgConnection::establish(&self.url)
                .await
                .expect("connect");
            diesel::sql_query(sql).execute(&mut conn).await.expect(sql);
        } else {
            let mut conn = self.sqlite().await;
            diesel::sql_query(sql).execute(&mut conn).await.expect(sql);
        }
    }

    /// Counts rows with a `SELECT COUNT(*) AS n …` statement.
    pub async fn count(&self, sql: &str) -> i64 {
        let rows: Vec<Count> = if self.postgres_name.is_some() {
            let mut conn = AsyncPgConnection::establish(&self.url)
                .await
                .expect("connect");
            diesel::sql_query(sql).load(&mut conn).await.expect(sql)
        } else {
            let mut conn = self.sqlite().await;
            diesel::sql_query(sql).load(&mut conn).await.expect(sql)
        };
        rows.into_iter().next().expect("one row").n
    }

    /// A connection that waits for the app's writes, as the app's own do.
    async fn sqlite(&self) -> SyncConnectionWrapper<SqliteConnection> {
        let path = self.url.trim_start_matches("sqlite://");
        let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
            .await
            .expect("open sqlite");
        diesel::sql_query("PRAGMA busy_timeout = 5000")
            .execute(&mut conn)
            .await
            .expect("busy_timeout");
        conn
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a thread with its own runtime does the cleanup.
        let admin_url = format!("{}/postgres", postgres_server_url());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A running authd: served by this test, or a separate process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: std::sync::Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The settings every test app runs with: port 0, the cheapest bcrypt, and
/// limits out of the way; tests of the limits set their own (the last value
/// of a flag wins).
pub fn config(db: &TestDb, extra: &[&str]) -> anyhow::Result<Config> {
    let mut args = vec![
        "authd",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--bcrypt-cost",
        "4",
        "--login-rate",
        "100000/min",
        "--signup-rate",
        "100000/min",
        "--refresh-rate",
        "100000/min",
        "--introspect-rate",
        "100000/min",
        "--hash-queue",
        "1000",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args)?;
    Config::try_from(cli.settings).map_err(anyhow::Error::msg)
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_on(std::sync::Arc::new(TestDb::new(backend).await), &[]).await
    }

    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> Self {
        Self::spawn_on(std::sync::Arc::new(TestDb::new(backend).await), extra).await
    }

    /// Starts an app on an existing database, e.g. a restart or a replica.
    pub async fn spawn_on(db: std::sync::Arc<TestDb>, extra: &[&str]) -> Self {
        let config = config(&db, extra).expect("test config");
        let app = Application::build(&config).await.expect("build app");
        Self::serve(app, db)
    }

    /// Serves an application built by the test itself.
    pub fn serve(app: Application, db: std::sync::Arc<TestDb>) -> Self {
        let addr = app.local_addr().expect("bound address");
        let (shutdown, stop) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = stop.await;
        }));
        Self {
            addr,
            db,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Talks to an authd that something else runs, e.g. a child process.
    pub fn remote(addr: SocketAddr, db: std::sync::Arc<TestDb>) -> Self {
        Self {
            addr,
            db,
            shutdown: None,
            server: None,
        }
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let server = self.server.as_mut().expect("a server this test runs");
        let stopped = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server stops within 10s");
        stopped.expect("server task").expect("server ran cleanly");
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        username: &str,
    ) -> Result<User, Status> {
        let response = self
            .client()
            .await
            .signup(SignupRequest {
                email: email.into(),
                password: password.into(),
                username: username.into(),
            })
            .await?;
        Ok(response.into_inner().user.expect("signup returns the user"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<LoginResponse, Status> {
        let response = self
            .client()
            .await
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Signs a user up and logs in, returning the user and its access token.
    pub async fn user_with_token(&self, email: &str) -> (User, String) {
        let user = self
            .signup(email, PASSWORD, "tester")
            .await
            .expect("signup");
        let token = self
            .login(email, PASSWORD)
            .await
            .expect("login")
            .access_token;
        (user, token)
    }

    /// GetMe with the raw `authorization` metadata value given, if any.
    pub async fn get_me_with(&self, authorization: Option<&[u8]>) -> Result<User, Status> {
        let mut request = Request::new(GetMeRequest {});
        if let Some(value) = authorization {
            let value = MetadataValue::try_from(value).expect("metadata value");
            request.metadata_mut().insert("authorization", value);
        }
        let response = self.client().await.get_me(request).await?;
        Ok(response.into_inner().user.expect("get_me returns the user"))
    }

    pub async fn get_me(&self, token: &str) -> Result<User, Status> {
        self.get_me_with(Some(format!("Bearer {token}").as_bytes()))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshResponse, Status> {
        let request = RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        Ok(self.client().await.refresh(request).await?.into_inner())
    }

    pub async fn logout(&self, access_token: &str, all_sessions: bool) -> Result<(), Status> {
        let request = authorized(LogoutRequest { all_sessions }, access_token);
        self.client().await.logout(request).await.map(drop)
    }

    pub async fn change_password(
        &self,
        access_token: &str,
        current_password: &str,
        new_password: &str,
    ) -> Result<(), Status> {
        let request = authorized(
            ChangePasswordRequest {
                current_password: current_password.into(),
                new_password: new_password.into(),
            },
            access_token,
        );
        self.client().await.change_password(request).await.map(drop)
    }

    pub async fn introspect(&self, token: &str) -> Result<IntrospectTokenResponse, Status> {
        let request = IntrospectTokenRequest {
            token: token.into(),
        };
        Ok(self
            .client()
            .await
            .introspect_token(request)
            .await?
            .into_inner())
    }

    /// GET on the app's address over HTTP/1.1 or HTTP/2 (prior knowledge):
    /// status, headers and body.
    pub async fn http_get(&self, path: &str, http2: bool) -> (u16, http::HeaderMap, String) {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::{client::legacy::Client, rt::TokioExecutor};
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://{}{path}", self.addr).parse().expect("uri");
        let response = client.get(uri).await.expect("http get");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let body = String::from_utf8(body.to_vec()).expect("utf-8 body");
        (parts.status.as_u16(), parts.headers, body)
    }
}

/// A request with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {access_token}")
        .parse()
        .expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The decoded payload of a JWT, unverified: for asserting what it claims.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

pub fn jwt_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A running `authd serve` child process and the addresses it bound.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The admin listener, when `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
}

impl Process {
    /// `authd serve` on `db` with `extra` flags, logging JSON.
    pub fn start(db: &TestDb, extra: &[&str]) -> Self {
        Self::spawn(
            std::process::Command::new(env!("CARGO_BIN_EXE_authd")),
            db,
            extra,
        )
    }

    /// Runs `authd serve` through `command` (e.g. a shell that lowers a
    /// limit first), which must exec the arguments it is given.
    pub fn spawn(mut command: std::process::Command, db: &TestDb, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--bcrypt-cost", "4"])
            .args(["--database-url", &db.url, "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start authd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut addr, mut metrics_addr) = (None, None);
        let wants_metrics = extra.contains(&"--metrics-listen");
        while addr.is_none() || (wants_metrics && metrics_addr.is_none()) {
            let line = lines
                .next()
                .expect("authd logged where it serves")
                .expect("log line");
            let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            let address = || {
                event["address"]
                    .as_str()
                    .expect("address")
                    .parse::<SocketAddr>()
                    .expect("addr")
            };
            match event["message"].as_str() {
                Some("authd serving gRPC") => addr = Some(address()),
                Some(message) if message.starts_with("authd serving metrics") => {
                    metrics_addr = Some(address());
                }
                _ => {}
            }
        }
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            addr: addr.expect("address"),
            metrics_addr,
        }
    }

    /// A client-side handle on the process, reusing the test helpers.
    pub fn app(&self, db: &std::sync::Arc<TestDb>) -> TestApp {
        TestApp::remote(self.addr, std::sync::Arc::clone(db))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status: a graceful stop exits 0.
    pub fn terminate(mut self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "authd exited with {status}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "authd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.1: status, content type and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let response = client.get(uri).await.expect("http get");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|value| value.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).expect("utf-8 body");
    (status, content_type, body)
}

pub async fn scrape(addr: SocketAddr) -> String {
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// The value of the sample named exactly `series`, labels included.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

/// A key file for apps whose tokens a test needs to forge variations of.
pub fn write_key_file(db: &TestDb) -> (PathBuf, String) {
    let key = KeyPair::generate().expect("key");
    let path = db.dir().join("signing-key.pem");
    std::fs::write(&path, key.pkcs8_pem()).expect("write key");
    (path, key.pkcs8_pem().to_owned())
}

/// A virtualenv under the test target dir built from `requirements` (a path
/// from the crate root); returns the venv's directory. A copy of the
/// requirements, written last, marks a complete venv that matches them, so
/// a changed pin rebuilds it. Tests run in parallel: the first to need a
/// venv builds it, the rest wait.
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let requirements = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(requirements);
    let wanted = std::fs::read_to_string(&requirements).expect("requirements");
    let stamp = dir.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_ref() != Some(&wanted) {
        let created = std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(created.success());
        let installed = std::process::Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .expect("pip install");
        assert!(
            installed.success(),
            "pip install -r {}",
            requirements.display()
        );
        std::fs::write(&stamp, wanted).expect("write stamp");
    }
    dir
}

/// Installs `dir`'s npm packages when node_modules is missing or older than
/// the lockfile (npm writes its hidden lockfile last, so its age is the
/// install's). `npm install` rather than `npm ci`: npm 11 writes lockfiles
/// that its own `ci` rejects when a package has per-platform optional
/// dependencies; the lockfile and exact pins still decide the versions.
pub fn node_modules(dir: &std::path::Path) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(dir.join("package-lock.json")) {
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .expect("npm install");
        assert!(status.success(), "npm install in {}", dir.display());
    }
}
