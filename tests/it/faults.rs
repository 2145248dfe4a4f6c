//! Database faults, against a PostgreSQL instance each test creates, starts
//! and stops itself (never the shared one): startup before the database is
//! up, the database lost and regained under load, and an exhausted pool.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use authd::Application;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tempfile::TempDir;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{self, Backend, PASSWORD, TestApp, TestDb};

/// A throwaway PostgreSQL cluster on a free port. PostgreSQL refuses to run
/// as root, so as root it runs as the `postgres` user.
struct PrivatePostgres {
    _dir: TempDir,
    data: PathBuf,
    port: u16,
}

fn bin(name: &str) -> PathBuf {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin").join(name))
        .find(|path| path.exists());
    installed.unwrap_or_else(|| PathBuf::from(name))
}

fn as_postgres_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(output.status.success(), "{command:?}: {output:?}");
}

impl PrivatePostgres {
    fn init() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        run(Command::new("chmod").arg("755").arg(dir.path()));
        let root = Command::new("id").arg("-u").output().expect("id").stdout;
        if root.trim_ascii() == b"0" {
            run(Command::new("chown").arg("postgres:postgres").arg(&data));
        }
        run(as_postgres_user(&bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self {
            _dir: dir,
            data,
            port,
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        run(as_postgres_user(&bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &options, "-l"])
            .arg(self.data.join("log"))
            .args(["-w", "start"]));
    }

    fn stop(&self) {
        run(as_postgres_user(&bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres_user(&bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn fault_config(url: &str, db: &TestDb, extra: &[&str]) -> authd::config::Config {
    let mut args = vec!["--database-url", url, "--db-timeout", "2s"];
    args.extend_from_slice(extra);
    support::config(db, &args).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_for_a_database_that_comes_up() {
    let postgres = PrivatePostgres::init();
    let db = TestDb::new(Backend::Sqlite).await;
    let config = fault_config(&postgres.url(), &db, &["--db-startup-timeout", "30s"]);
    let building = tokio::spawn(async move { Application::build(&config).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!building.is_finished(), "still waiting for the database");
    postgres.start();
    let app = building
        .await
        .expect("join")
        .expect("built once the database is up");
    assert!(app.local_addr().is_ok());

    let never = PrivatePostgres::init();
    let config = fault_config(&never.url(), &db, &["--db-startup-timeout", "1s"]);
    let error = Application::build(&config).await.err().expect("gives up");
    assert!(format!("{error:#}").contains("cannot connect to the database"));
}

async fn health(app: &TestApp) -> Option<ServingStatus> {
    let mut client = HealthClient::new(app.channel().await);
    let request = HealthCheckRequest {
        service: "auth.v1.AuthService".into(),
    };
    Some(client.check(request).await.ok()?.into_inner().status())
}

async fn wait_for_health(app: &TestApp, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(app).await != Some(want) {
        assert!(Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_gives_unavailable_then_heals_without_losing_rows() {
    let postgres = PrivatePostgres::init();
    postgres.start();
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let config = fault_config(&postgres.url(), &db, &[]);
    let app = Application::build(&config).await.expect("build");
    let app = TestApp::serve(app, Arc::clone(&db));

    // Signups keep coming while the database goes away and comes back.
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let codes = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let (confirmed, codes, running) = (confirmed.clone(), codes.clone(), running.clone());
        let client = app.client().await;
        async move {
            let mut i = 0;
            while AtomicBool::load(&running, Ordering::Acquire) {
                i += 1;
                let email = format!("load{i}@example.com");
                let mut client = client.clone();
                let request = authd::api::proto::SignupRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    username: "load".into(),
                };
                let outcome = tokio::time::timeout(Duration::from_secs(10), client.signup(request))
                    .await
                    .expect("no call hangs");
                match outcome {
                    Ok(_) => drop(confirmed.lock().expect("lock").insert(email)),
                    Err(status) => codes.lock().expect("lock").push(status.code()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    postgres.stop();
    let lost_at = Instant::now();
    let status = loop {
        match app.signup("probe@example.com", PASSWORD, "probe").await {
            Err(status) if status.code() == Code::Unavailable => break status,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        assert!(
            lost_at.elapsed() < Duration::from_secs(10),
            "UNAVAILABLE within seconds"
        );
    };
    assert_eq!(
        status.message(),
        "service temporarily unavailable, retry later"
    );
    wait_for_health(&app, ServingStatus::NotServing).await;

    postgres.start();
    wait_for_health(&app, ServingStatus::Serving).await;
    let healed = Instant::now();
    while app
        .signup("after@example.com", PASSWORD, "after")
        .await
        .is_err()
    {
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "service resumes by itself"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.store(false, Ordering::Release);
    load.await.expect("load");

    let codes = codes.lock().expect("lock").clone();
    assert!(
        codes.iter().all(|code| *code == Code::Unavailable),
        "{codes:?}"
    );
    let confirmed = confirmed.lock().expect("lock").clone();
    assert!(confirmed.len() >= 5, "the load ran: {}", confirmed.len());
    for email in &confirmed {
        app.login(email, PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{email} was confirmed but is lost: {status:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_gives_unavailable_never_a_hang() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &["--db-pool-size", "1", "--db-timeout", "1s"],
    )
    .await;
    app.signup("pool@example.com", PASSWORD, "pool")
        .await
        .expect("signup");

    // Another client holds the users table: the app's one connection waits
    // on the lock, and every other call waits for that connection.
    let mut blocker = AsyncPgConnection::establish(&app.db.url)
        .await
        .expect("connect");
    diesel::sql_query("BEGIN")
        .execute(&mut blocker)
        .await
        .expect("begin");
    diesel::sql_query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let calls = (0..3).map(|_| app.login("pool@example.com", PASSWORD));
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("no call hangs");
    for result in results {
        assert_eq!(result.expect_err("blocked").code(), Code::Unavailable);
    }

    diesel::sql_query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("rollback");
    app.login("pool@example.com", PASSWORD)
        .await
        .expect("works again");
}
