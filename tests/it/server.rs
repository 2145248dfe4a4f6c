use std::{sync::Arc, time::Duration};

use authd::{Application, api::proto::SignupRequest};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::support::{self, Backend, PASSWORD, TestApp, TestDb, backend_tests};

backend_tests!(
    reflection_lists_the_service_in_v1_and_v1alpha,
    reflection_can_be_switched_off,
    health_reports_serving,
    a_restart_keeps_the_signing_key,
    replicas_on_one_database_share_the_signing_key,
    oversized_requests_are_refused_by_every_service,
    malformed_messages_are_invalid_argument_with_a_fixed_message,
    reflection_describes_the_error_details_authd_sends,
    shutdown_turns_health_not_serving_and_lets_calls_finish,
);

async fn v1_services(app: &TestApp) -> Result<Vec<String>, tonic::Status> {
    use v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response = responses.next().await.expect("one response")?;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

async fn v1alpha_services(app: &TestApp) -> Vec<String> {
    use v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

async fn reflection_lists_the_service_in_v1_and_v1alpha(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let v1 = v1_services(&app).await.expect("v1 reflection");
    let v1alpha = v1alpha_services(&app).await;
    for services in [&v1, &v1alpha] {
        assert!(
            services.iter().any(|s| s == "auth.v1.AuthService"),
            "{services:?}"
        );
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "{services:?}"
        );
    }
}

async fn reflection_can_be_switched_off(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--reflection", "false"]).await;
    let status = v1_services(&app).await.expect_err("reflection is off");
    assert_eq!(status.code(), Code::Unimplemented);
}

async fn health_check(app: &TestApp, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

async fn health_reports_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for service in ["", "auth.v1.AuthService"] {
        assert_eq!(
            health_check(&app, service).await.expect(service),
            ServingStatus::Serving
        );
    }
    let unknown = health_check(&app, "no.such.Service")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn a_restart_keeps_the_signing_key(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let first = TestApp::spawn_on(Arc::clone(&db), &[]).await;
    let (user, token) = first.user_with_token("rita@example.com").await;
    first.stop().await;

    let second = TestApp::spawn_on(db, &[]).await;
    let me = second
        .get_me(&token)
        .await
        .expect("a token from before the restart");
    assert_eq!(me.id, user.id);
    let again = second
        .login("rita@example.com", PASSWORD)
        .await
        .expect("login");
    let kid = |token: &str| jsonwebtoken::decode_header(token).expect("header").kid;
    assert_eq!(kid(&token), kid(&again.access_token));
}

async fn replicas_on_one_database_share_the_signing_key(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    // Both start at once: they race to migrate and to create the first key.
    let (a, b) = tokio::join!(
        TestApp::spawn_on(Arc::clone(&db), &[]),
        TestApp::spawn_on(Arc::clone(&db), &[]),
    );
    let (user, token_from_a) = a.user_with_token("sam@example.com").await;
    assert_eq!(
        b.get_me(&token_from_a).await.expect("b verifies a").id,
        user.id
    );
    let token_from_b = b
        .login("sam@example.com", PASSWORD)
        .await
        .expect("login")
        .access_token;
    assert_eq!(
        a.get_me(&token_from_b).await.expect("a verifies b").id,
        user.id
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM signing_keys").await,
        1,
        "only one key is kept"
    );
}

const TOO_LARGE: &str = "request message is larger than 16 KiB";

async fn oversized_requests_are_refused_by_every_service(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let status = app
        .client()
        .await
        .signup(SignupRequest {
            email: "tia@example.com".into(),
            password: PASSWORD.into(),
            username: "t".repeat(17 * 1024),
        })
        .await
        .expect_err("over 16 KiB");
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, TOO_LARGE)
    );
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 0);

    let three_mib = "s".repeat(3 * 1024 * 1024);
    let status = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: three_mib.clone(),
        })
        .await
        .expect_err("over 16 KiB");
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, TOO_LARGE)
    );

    // Reflection reads a stream of requests: an oversized one ends the
    // stream without an answer.
    use v1::{server_reflection_client::ServerReflectionClient, server_reflection_request};
    let request = v1::ServerReflectionRequest {
        host: three_mib,
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let answers = ServerReflectionClient::new(app.channel().await)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .map(|response| response.into_inner());
    if let Ok(mut answers) = answers {
        assert!(
            !matches!(answers.next().await, Some(Ok(_))),
            "an oversized reflection request was answered"
        );
    }
}

/// Bytes sent as they are, to feed the server what no generated client
/// would send.
#[derive(Clone, Debug, Default, PartialEq)]
struct RawBytes(Vec<u8>);

impl prost::Message for RawBytes {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::WireType,
        _: &mut impl bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        unreachable!("only ever encoded")
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

async fn call_raw(app: &TestApp, path: &'static str, bytes: &[u8]) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary::<_, tonic_health::pb::HealthCheckResponse, _>(
        tonic::Request::new(RawBytes(bytes.to_vec())),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("malformed bytes are refused")
}

async fn malformed_messages_are_invalid_argument_with_a_fixed_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases: [(&str, &[u8]); 4] = [
        ("email not UTF-8", &[0x0a, 0x01, 0xff]),
        ("length past the end", &[0x0a, 0x05, b'a']),
        ("nested groups past the recursion limit", &[0x2b; 200]),
        ("a truncated varint", &[0x08, 0x80]),
    ];
    for path in [
        "/auth.v1.AuthService/Signup",
        "/auth.v1.AuthService/Login",
        "/grpc.health.v1.Health/Check",
    ] {
        for (case, bytes) in cases {
            let status = call_raw(&app, path, bytes).await;
            assert_eq!(
                (status.code(), status.message()),
                (Code::InvalidArgument, "request message is malformed"),
                "{path}: {case}"
            );
        }
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM users").await, 0);
    app.signup("still@example.com", PASSWORD, "s")
        .await
        .expect("the server keeps serving");
}

async fn reflection_describes_the_error_details_authd_sends(backend: Backend) {
    use v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = TestApp::spawn(backend).await;
    let mut client = ServerReflectionClient::new(app.channel().await);
    for symbol in ["google.rpc.BadRequest", "google.rpc.RetryInfo"] {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let response = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection")
            .into_inner()
            .next()
            .await
            .expect("an answer")
            .expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{symbol} is not described: {response:?}");
        };
        let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
            files.file_descriptor_proto[0].as_slice(),
        )
        .expect("a file descriptor");
        let name = symbol.trim_start_matches("google.rpc.");
        assert!(
            file.message_type
                .iter()
                .any(|message| message.name() == name),
            "{symbol} not in {:?}",
            file.name()
        );
    }
}

async fn shutdown_turns_health_not_serving_and_lets_calls_finish(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut health = HealthClient::new(app.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);

    let stopped = tokio::spawn(app.stop());
    // The watch is an in-flight call: it keeps being served after the signal
    // and reports the change.
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a status change")
        .expect("stream open")
        .expect("ok");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    stopped.await.expect("stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_stops_startup_without_leaking_the_password() {
    let db = TestDb::new(Backend::Sqlite).await;
    let unreachable = "postgres://postgres:s3cret@127.0.0.1:1/authd";
    let config = support::config(
        &db,
        &["--db-startup-timeout", "1s", "--database-url", unreachable],
    )
    .expect("config");
    let error = Application::build(&config)
        .await
        .err()
        .expect("no database");
    let message = format!("{error:#}");
    assert!(
        message.contains("cannot connect to the database"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_postgres_database_gives_unavailable_and_not_serving() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.signup("uma@example.com", PASSWORD, "uma")
        .await
        .expect("signup");
    let name = app.db.url.rsplit('/').next().expect("name").to_owned();
    let admin = TestDb::new(Backend::Postgres).await;
    admin
        .execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await;

    let status = app
        .login("uma@example.com", PASSWORD)
        .await
        .expect_err("database gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "service temporarily unavailable, retry later"
    );

    // The health watcher checks every 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = health_check(&app, "auth.v1.AuthService")
            .await
            .expect("health");
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
