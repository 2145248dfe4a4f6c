//! Overload: the hashing stage refuses what it cannot take at once, token
//! calls stay served meanwhile, and client deadlines leave no half-done work.

use std::time::Duration;

use authd::api::proto::{LoginRequest, SignupRequest};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{Backend, PASSWORD, TestApp, backend_tests};

backend_tests!(
    a_login_flood_is_refused_fast_while_get_me_is_served,
    timed_out_logins_give_their_place_back,
    a_signup_past_its_deadline_is_all_or_nothing,
);

/// bcrypt at cost 10 takes long enough that a burst outruns the stage.
const SLOW_HASHING: [&str; 4] = ["--bcrypt-cost", "10", "--hash-queue", "0"];

async fn a_login_flood_is_refused_fast_while_get_me_is_served(backend: Backend) {
    let app = TestApp::spawn_with(backend, &SLOW_HASHING).await;
    let (user, token) = app.user_with_token("flood@example.com").await;
    let client = app.client().await;
    let flood = (0..24).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .login(LoginRequest {
                    email: "flood@example.com".into(),
                    password: PASSWORD.into(),
                    device_label: String::new(),
                })
                .await
        }
    });
    let (results, me) = tokio::join!(futures_util::future::join_all(flood), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.get_me(&token).await
    });
    assert_eq!(me.expect("GetMe is served during the flood").id, user.id);
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    assert!(
        refused.len() >= 12,
        "most of the burst is refused: {results:?}"
    );
    for status in refused {
        assert_eq!(status.message(), "server busy, retry later");
        assert!(status.get_details_retry_info().is_some());
    }
    assert!(results.iter().any(Result::is_ok), "the stage keeps working");
}

async fn timed_out_logins_give_their_place_back(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--bcrypt-cost", "10", "--hash-queue", "8"]).await;
    app.signup("tess@example.com", PASSWORD, "tess")
        .await
        .expect("signup");
    let client = app.client().await;
    let impatient = (0..10).map(|_| {
        let mut client = client.clone();
        async move {
            let mut request = Request::new(LoginRequest {
                email: "tess@example.com".into(),
                password: PASSWORD.into(),
                device_label: String::new(),
            });
            request.set_timeout(Duration::from_millis(5));
            client.login(request).await
        }
    });
    for result in futures_util::future::join_all(impatient).await {
        let status = result.expect_err("deadline");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    // Had the abandoned calls kept their places, the stage would be full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.login("tess@example.com", PASSWORD)
        .await
        .expect("the stage has room again");
}

async fn a_signup_past_its_deadline_is_all_or_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--bcrypt-cost", "8"]).await;
    let mut client = app.client().await;
    for (i, timeout_ms) in [1u64, 5, 20, 50, 100, 200].into_iter().enumerate() {
        let email = format!("deadline{i}@example.com");
        let mut request = Request::new(SignupRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            username: "deadline".into(),
        });
        request.set_timeout(Duration::from_millis(timeout_ms));
        let outcome = client.signup(request).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = app
            .db
            .count(&format!(
                "SELECT COUNT(*) AS n FROM users WHERE email = '{email}'"
            ))
            .await;
        let again = app.signup(&email, PASSWORD, "deadline").await;
        match rows {
            0 => {
                assert!(outcome.is_err(), "a success leaves a user");
                again.expect("an absent user can sign up");
            }
            1 => {
                assert_eq!(again.expect_err("present").code(), Code::AlreadyExists);
                app.login(&email, PASSWORD)
                    .await
                    .expect("a present user is complete");
            }
            n => panic!("{n} rows for one email"),
        }
    }
}
