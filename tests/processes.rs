//! Two `authd` processes on one PostgreSQL database, as operators run
//! replicas: they must behave as one service.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{Backend, PASSWORD, TestApp, TestDb};
use tonic::Code;

/// A running `authd serve` child process and the address it bound.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(db: &TestDb) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_authd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--bcrypt-cost", "4"])
            .args(["--database-url", &db.url, "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start authd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("authd logged that it serves")
                .expect("log line");
            let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            if event["message"] == "authd serving gRPC" {
                break event["address"]
                    .as_str()
                    .expect("address")
                    .parse()
                    .expect("addr");
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }

    /// A client-side handle on the replica, reusing the test helpers.
    fn app(&self, db: &Arc<TestDb>) -> TestApp {
        TestApp::remote(self.addr, Arc::clone(db))
    }

    /// SIGTERM, then the exit status: a graceful stop exits 0.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_behave_as_one_service() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let (one, two) = (Replica::start(&db), Replica::start(&db));
    let (a, b) = (one.app(&db), two.app(&db));

    let user = a
        .signup("yuri@example.com", PASSWORD, "yuri")
        .await
        .expect("signup");
    let login = a
        .login("yuri@example.com", PASSWORD)
        .await
        .expect("login on one");
    assert_eq!(
        b.get_me(&login.access_token)
            .await
            .expect("get_me on two")
            .id,
        user.id
    );
    let refreshed = b
        .refresh(&login.refresh_token)
        .await
        .expect("refresh on two");
    assert_eq!(
        a.get_me(&refreshed.access_token)
            .await
            .expect("get_me on one")
            .id,
        user.id
    );
    let reuse = a
        .refresh(&login.refresh_token)
        .await
        .expect("within the grace");
    assert_eq!(
        reuse.refresh_token, refreshed.refresh_token,
        "one session, one successor"
    );

    a.logout(&refreshed.access_token, false)
        .await
        .expect("logout on one");
    let status = b
        .get_me(&refreshed.access_token)
        .await
        .expect_err("two sees the logout");
    assert_eq!(status.code(), Code::Unauthenticated);

    one.terminate();
    two.terminate();
}
