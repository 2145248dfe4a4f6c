//! Test harness: the real server on 127.0.0.1:0, called through the generated
//! client, on a fresh SQLite file or a fresh PostgreSQL database per test.

mod app;
mod db;
mod http;
mod jwt;
mod mail;
mod process;
mod tools;

pub(crate) use self::{
    app::{TestApp, authorized, config},
    db::TestDb,
    http::{get, sample, scrape},
    jwt::{jwt_claims, jwt_kid, new_signing_key_pem, write_key_file},
    mail::MailSink,
    process::Process,
    tools::{npm_project, venv},
};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// Long enough for any propagation the revocation feed promises within a
/// second, on a loaded machine.
pub(crate) const DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Polls until `check` holds, failing after [`DEADLINE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what} did not happen in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The field -> description map of an INVALID_ARGUMENT's BadRequest details.
pub(crate) fn violations(status: &tonic::Status) -> std::collections::BTreeMap<String, String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries google.rpc.BadRequest")
        .field_violations
        .into_iter()
        .map(|violation| (violation.field, violation.description))
        .collect()
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}
