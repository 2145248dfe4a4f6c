//! An authd served inside the test, and the calls tests make on it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use authd::api::proto::admin::admin_service_client::AdminServiceClient;
use authd::{
    Application,
    api::proto::{
        ChangePasswordRequest, GetMeRequest, IntrospectTokenRequest, IntrospectTokenResponse,
        LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RefreshResponse, SignupRequest,
        User, auth_service_client::AuthServiceClient,
    },
    config::{Cli, Config},
};
use clap::Parser;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, metadata::MetadataValue, transport::Channel};

use super::{Backend, PASSWORD, TestDb};

/// A running authd: served by this test, or a separate process.
pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The settings every test app runs with: port 0, the cheapest bcrypt, and
/// limits out of the way; tests of the limits set their own (the last value
/// of a flag wins).
pub(crate) fn config(db: &TestDb, extra: &[&str]) -> anyhow::Result<Config> {
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
    pub(crate) async fn spawn(backend: Backend) -> Self {
        Self::spawn_on(Arc::new(TestDb::new(backend).await), &[]).await
    }

    pub(crate) async fn spawn_with(backend: Backend, extra: &[&str]) -> Self {
        Self::spawn_on(Arc::new(TestDb::new(backend).await), extra).await
    }

    /// Starts an app on an existing database, e.g. a restart or a replica.
    pub(crate) async fn spawn_on(db: Arc<TestDb>, extra: &[&str]) -> Self {
        let config = config(&db, extra).expect("test config");
        let app = Application::build(&config).await.expect("build app");
        Self::serve(app, db)
    }

    /// Serves an application built by the test itself.
    pub(crate) fn serve(app: Application, db: Arc<TestDb>) -> Self {
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
    pub(crate) fn remote(addr: SocketAddr, db: Arc<TestDb>) -> Self {
        Self {
            addr,
            db,
            shutdown: None,
            server: None,
        }
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub(crate) async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let server = self.server.as_mut().expect("a server this test runs");
        let stopped = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server stops within 10s");
        stopped.expect("server task").expect("server ran cleanly");
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub(crate) async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    pub(crate) async fn signup(
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

    pub(crate) async fn login(&self, email: &str, password: &str) -> Result<LoginResponse, Status> {
        let response = self
            .client()
            .await
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
                device_label: String::new(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Signs a user up and logs in, returning the user and its access token.
    pub(crate) async fn user_with_token(&self, email: &str) -> (User, String) {
        self.user_with_roles(email, &[]).await
    }

    /// Signs a user up, gives them `roles` straight in the database (as an
    /// operator bootstrapping would), logs in, and returns the user and a
    /// token that carries the roles.
    pub(crate) async fn user_with_roles(&self, email: &str, roles: &[&str]) -> (User, String) {
        let user = self
            .signup(email, PASSWORD, "tester")
            .await
            .expect("signup");
        if !roles.is_empty() {
            self.db
                .execute(&format!(
                    "UPDATE users SET roles = '{}' WHERE id = '{}'",
                    roles.join(" "),
                    user.id
                ))
                .await;
        }
        let token = self
            .login(email, PASSWORD)
            .await
            .expect("login")
            .access_token;
        (user, token)
    }

    pub(crate) async fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// GetMe with the raw `authorization` metadata value given, if any.
    pub(crate) async fn get_me_with(&self, authorization: Option<&[u8]>) -> Result<User, Status> {
        let mut request = Request::new(GetMeRequest {});
        if let Some(value) = authorization {
            let value = MetadataValue::try_from(value).expect("metadata value");
            request.metadata_mut().insert("authorization", value);
        }
        let response = self.client().await.get_me(request).await?;
        Ok(response.into_inner().user.expect("get_me returns the user"))
    }

    pub(crate) async fn get_me(&self, token: &str) -> Result<User, Status> {
        self.get_me_with(Some(format!("Bearer {token}").as_bytes()))
            .await
    }

    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<RefreshResponse, Status> {
        let request = RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        Ok(self.client().await.refresh(request).await?.into_inner())
    }

    pub(crate) async fn logout(
        &self,
        access_token: &str,
        all_sessions: bool,
    ) -> Result<(), Status> {
        let request = authorized(LogoutRequest { all_sessions }, access_token);
        self.client().await.logout(request).await.map(drop)
    }

    pub(crate) async fn change_password(
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

    pub(crate) async fn introspect(&self, token: &str) -> Result<IntrospectTokenResponse, Status> {
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
    pub(crate) async fn http_get(&self, path: &str, http2: bool) -> (u16, http::HeaderMap, String) {
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
pub(crate) fn authorized<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {access_token}")
        .parse()
        .expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
