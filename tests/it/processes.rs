//! Two `authd` processes on one PostgreSQL database, as operators run
//! replicas: they must behave as one service.

use std::sync::Arc;

use tonic::Code;

use crate::support::{Backend, PASSWORD, Process, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_behave_as_one_service() {
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let (one, two) = (Process::start(&db, &[]), Process::start(&db, &[]));
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
