//! Per-test databases: a temporary SQLite file, or a fresh PostgreSQL
//! database on the shared server.

use std::path::PathBuf;

use diesel::{SqliteConnection, sql_types::BigInt};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, sync_connection_wrapper::SyncConnectionWrapper,
};
use tempfile::TempDir;

use super::Backend;

/// The PostgreSQL server tests create their databases on. There is no skip:
/// without a reachable server the PostgreSQL tests fail.
fn postgres_server_url() -> String {
    std::env::var("AUTHD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped with it. It outlives the
/// applications started on it, so restarts can be tested.
pub(crate) struct TestDb {
    pub(crate) url: String,
    dir: TempDir,
    postgres_name: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl TestDb {
    pub(crate) async fn new(backend: Backend) -> Self {
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

    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Runs one SQL statement directly, bypassing the service.
    pub(crate) async fn execute(&self, sql: &str) {
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
    pub(crate) async fn count(&self, sql: &str) -> i64 {
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
