//! authd as a child process, as operators run it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{TestApp, TestDb};

/// A running `authd serve` child process and the addresses it bound.
pub(crate) struct Process {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
    /// The admin listener, when `--metrics-listen` was given.
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Every line it logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// `authd serve` on `db` with `extra` flags, logging JSON.
    pub(crate) fn start(db: &TestDb, extra: &[&str]) -> Self {
        Self::spawn(
            std::process::Command::new(env!("CARGO_BIN_EXE_authd")),
            db,
            extra,
        )
    }

    /// Runs `authd serve` through `command` (e.g. a shell that lowers a
    /// limit first), which must exec the arguments it is given.
    pub(crate) fn spawn(mut command: std::process::Command, db: &TestDb, extra: &[&str]) -> Self {
        use std::io::BufRead;
        // Any free port, unless the test names one (to restart in place).
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        command
            .args(["serve", "--bcrypt-cost", "4"])
            .args(listen)
            .args(["--database-url", &db.url, "--log-format", "json"])
            .args(extra);
        // A test that wants another level sets it on the command.
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start authd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut addr, mut metrics_addr) = (None, None);
        let log = Arc::new(Mutex::new(Vec::new()));
        let wants_metrics = extra.contains(&"--metrics-listen");
        while addr.is_none() || (wants_metrics && metrics_addr.is_none()) {
            let line = lines
                .next()
                .expect("authd logged where it serves")
                .expect("log line");
            let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            log.lock().expect("log").push(line.clone());
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
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().expect("log").push(line);
            }
        });
        Self {
            child,
            addr: addr.expect("address"),
            metrics_addr,
            log,
        }
    }

    /// A client-side handle on the process, reusing the test helpers.
    pub(crate) fn app(&self, db: &Arc<TestDb>) -> TestApp {
        TestApp::remote(self.addr, Arc::clone(db))
    }

    /// What the process logged so far, one JSON object per line.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// SIGKILL, as a crash or an OOM killer would: no cleanup at all.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status: a graceful stop exits 0.
    pub(crate) fn terminate(mut self) {
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
