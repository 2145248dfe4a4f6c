//! A real SMTP server for the tests: Python's aiosmtpd on 127.0.0.1 (from
//! tests/mail/requirements.txt, in a venv like the TOTP tests'), writing
//! every mail it accepts to a temp dir, which [`MailSink`] reads back.

use std::{
    io::BufRead,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::venv;

/// The link templates the test apps mail; [`Mail::token`] reads the token
/// back out of them.
pub(crate) const RESET_URL: &str = "https://app.test/reset?token={token}";
pub(crate) const VERIFY_URL: &str = "https://app.test/verify?token={token}";
pub(crate) const CHANGE_URL: &str = "https://app.test/change-email?token={token}";
pub(crate) const FROM: &str = "authd <no-reply@authd.test>";

/// How long a test waits for mail: the sender wakes at once on a queued
/// mail, so this is only a bound for a loaded machine.
const MAIL_DEADLINE: Duration = Duration::from_secs(20);

/// A running SMTP sink. Dropping it stops the server; the mails go with
/// its temp dir.
pub(crate) struct MailSink {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

/// One delivered mail, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) message_id: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

impl Mail {
    /// The token of the mail's link (any of the link templates above).
    pub(crate) fn token(&self) -> String {
        let start = self.text.find("?token=").expect("a link with a token") + "?token=".len();
        let token: String = self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(!token.is_empty(), "empty token in {}", self.text);
        token
    }
}

impl MailSink {
    /// A sink on any free port.
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("mail dir");
        let (child, port) = spawn(&dir, None);
        Self {
            child: Some(child),
            dir,
            port,
        }
    }

    /// The port of a sink that is not running yet: for a test that starts
    /// authd while SMTP is down. [`MailSink::resume`] starts it there.
    pub(crate) fn stopped() -> Self {
        let mut sink = Self::start();
        sink.pause();
        sink
    }

    /// Stops the server; mails received so far stay readable.
    pub(crate) fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, on the same port.
    pub(crate) fn resume(&mut self) {
        assert!(self.child.is_none(), "the sink is running");
        let (child, _) = spawn(&self.dir, Some(self.port));
        self.child = Some(child);
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The flags that make authd mail through this sink.
    pub(crate) fn flags(&self) -> Vec<String> {
        [
            "--smtp-url",
            &self.url(),
            "--mail-from",
            FROM,
            "--password-reset-url",
            RESET_URL,
            "--email-verification-url",
            VERIFY_URL,
            "--email-change-url",
            CHANGE_URL,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Every mail received so far, oldest first.
    pub(crate) fn received(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read mail dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| parse(&std::fs::read(path).expect("read mail")))
            .collect()
    }

    /// Waits until at least `count` mails arrived, and returns them all.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Mail> {
        let started = std::time::Instant::now();
        loop {
            let mails = self.received();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                started.elapsed() < MAIL_DEADLINE,
                "{count} mail(s) expected, {} arrived",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The mails to `address` received so far.
    pub(crate) fn to(&self, address: &str) -> Vec<Mail> {
        self.received()
            .into_iter()
            .filter(|mail| mail.to == address)
            .collect()
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Starts the sink script on `port` (any free one if None); returns the
/// child and the port it listens on, once it accepts connections.
fn spawn(dir: &tempfile::TempDir, port: Option<u16>) -> (Child, u16) {
    let venv = venv("aiosmtpd", "tests/mail/requirements.txt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mail/sink.py");
    let mut command = Command::new(venv.join("bin/python"));
    command.arg(script).arg(dir.path());
    if let Some(port) = port {
        command.arg(port.to_string());
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the SMTP sink");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the sink prints its port");
    let port = line.trim().parse().expect("a port");
    (child, port)
}

fn parse(raw: &[u8]) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parsable mail");
    Mail {
        to: message
            .to()
            .and_then(|to| to.first())
            .and_then(|to| to.address())
            .expect("a To address")
            .to_owned(),
        subject: message.subject().unwrap_or_default().to_owned(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        text: message.body_text(0).unwrap_or_default().into_owned(),
        html: message.body_html(0).unwrap_or_default().into_owned(),
    }
}
