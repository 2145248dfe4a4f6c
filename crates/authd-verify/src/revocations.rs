//! The sessions authd ended, pushed to this service by `WatchRevocations`,
//! so that their tokens are refused offline before they expire.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use authd_client::v1::{
    IntrospectTokenRequest, IssueServiceTokenRequest, WatchRevocationsRequest,
    WatchRevocationsResponse, auth_service_client::AuthServiceClient,
};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::Channel,
};

use crate::{Claims, LEEWAY, TokenVerifier, cache::unix_now};

/// The default of [`RevocationsBuilder::stale_after`]: authd sends a
/// heartbeat every second, so this tolerates two lost ones.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3);
/// How long a fallback IntrospectToken call may take before the token is
/// refused.
const INTROSPECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long IssueServiceToken, or opening the stream, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often revocations past their `not_after` are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// For an entry without `not_after`, which authd never sends: kept rather
/// than ignored, since ignoring a revocation would accept its tokens.
const UNBOUNDED_ENTRY_LIFETIME: i64 = 24 * 3600;

/// What a service does with a session's token while its view of the
/// revocations is stale (see [`RevocationsBuilder::stale_after`]).
/// Service accounts' tokens belong to no session and are unaffected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Ask authd's `IntrospectToken` about each token and accept it only if
    /// authd answers that it is active; the answers are not cached. The
    /// default: no token is ever accepted unchecked, and a service stays up
    /// when only the stream is broken. When authd itself is down, every
    /// session's token is refused, as with [`Fallback::Reject`].
    #[default]
    Introspect,
    /// Refuse every session's token (fail closed), without calling authd.
    Reject,
}

/// The sessions authd revoked, kept current by a background task that
/// watches authd's `WatchRevocations` stream. Wrap a verifier with
/// [`Revocations::wrap`] so that it refuses tokens of revoked sessions,
/// offline: while the view is current, no request calls authd.
///
/// ```no_run
/// use authd_verify::{Fallback, JwksVerifier, RequireBearerLayer, Revocations};
/// use tonic::transport::Channel;
///
/// # async fn run(api_key: String) -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = JwksVerifier::new(
///     "http://127.0.0.1:50051/.well-known/jwks.json".parse()?,
///     "authd",
///     "authd",
/// )
/// .await?;
/// let authd = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
/// let revocations = Revocations::builder(authd, api_key)
///     .fallback(Fallback::Introspect)
///     .start();
/// let layer = RequireBearerLayer::new(revocations.wrap(verifier));
/// # Ok(())
/// # }
/// ```
///
/// The task exchanges the service account's API key for a token
/// (`IssueServiceToken`, again once half its lifetime has passed), watches,
/// and reconnects with the last cursor it saw (with backoff) whenever the
/// stream ends, fails or stays silent longer than `stale_after`, so no
/// revocation is missed. A revoked session is forgotten once its
/// `not_after` (plus [`LEEWAY`]) has passed, as all its tokens have expired
/// by then: memory follows the revocations that still matter.
///
/// The view is *current* once the backlog has arrived (authd's first
/// heartbeat), and stays so for `stale_after` after each message from authd
/// (heartbeats come every second) until the stream ends. While it is not
/// (from the start until the backlog is in, from the moment a stream ends
/// until its successor's backlog is in, and whenever authd was silent for
/// longer than `stale_after`), the [`Fallback`] decides about every
/// session's token.
/// The task ends when the last clone of the `Revocations` is dropped.
#[derive(Clone)]
pub struct Revocations {
    shared: Arc<Shared>,
    client: AuthServiceClient<Channel>,
    fallback: Fallback,
}

/// Settings of [`Revocations`]; [`RevocationsBuilder::start`] starts it.
pub struct RevocationsBuilder {
    channel: Channel,
    api_key: SecretString,
    stale_after: Duration,
    fallback: Fallback,
}

struct Shared {
    /// Revoked session id → when to forget it (Unix seconds).
    revoked: RwLock<HashMap<String, i64>>,
    started: Instant,
    /// When the view was last known current, in milliseconds since
    /// `started`, plus one; 0 for never.
    current_at: AtomicU64,
    stale_after: Duration,
}

impl Revocations {
    /// Watches the authd at `channel` with a token of the service account
    /// whose API key (`authd_sk_...`) is `api_key`. A lazily connecting
    /// channel (`Endpoint::connect_lazy`) lets the service start while authd
    /// is down; the fallback covers the meantime.
    pub fn builder(channel: Channel, api_key: impl Into<String>) -> RevocationsBuilder {
        RevocationsBuilder {
            channel,
            api_key: SecretString::from(api_key.into()),
            stale_after: DEFAULT_STALE_AFTER,
            fallback: Fallback::default(),
        }
    }

    /// Wraps `verifier` so that it refuses the tokens of revoked sessions.
    pub fn wrap<V: TokenVerifier + ?Sized>(&self, verifier: Arc<V>) -> Arc<WithRevocations<V>> {
        Arc::new(WithRevocations {
            inner: verifier,
            revocations: self.clone(),
        })
    }

    /// Whether the view is current: the backlog is in, the stream that
    /// delivered it is still open and authd was heard from within
    /// `stale_after`.
    pub fn is_current(&self) -> bool {
        self.shared.is_current()
    }

    /// Whether authd revoked `session_id` (an access token's `sid`), as far
    /// as this view knows.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        let forget_after = self
            .shared
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session_id)
            .copied();
        forget_after.is_some_and(|forget_after| unix_now() <= forget_after)
    }

    /// How many revoked sessions are remembered.
    pub fn len(&self) -> usize {
        self.shared
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no revoked session is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the token `claims` were verified from may be accepted: a
    /// service account's always, a session's unless it is revoked, and
    /// while the view is stale only as the fallback allows.
    pub async fn allows(&self, token: &str, claims: &Claims) -> bool {
        let Some(session_id) = &claims.sid else {
            return true;
        };
        if self.is_revoked(session_id) {
            return false;
        }
        if self.is_current() {
            return true;
        }
        match self.fallback {
            Fallback::Reject => false,
            Fallback::Introspect => self.introspect(token).await,
        }
    }

    async fn introspect(&self, token: &str) -> bool {
        let request = IntrospectTokenRequest {
            token: token.to_owned(),
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(INTROSPECT_TIMEOUT, client.introspect_token(request)).await {
            Ok(Ok(response)) => response.into_inner().active,
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), "IntrospectToken failed: refusing the token");
                false
            }
            Err(_) => {
                tracing::warn!("IntrospectToken timed out: refusing the token");
                false
            }
        }
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.len())
            .field("current", &self.is_current())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl RevocationsBuilder {
    /// How long the view stays current after authd was last heard from,
    /// before the [`Fallback`] applies and the silent stream is replaced;
    /// [`DEFAULT_STALE_AFTER`] by default. It bounds how long a revoked
    /// session's token can still be accepted when the stream goes silent
    /// without ending; keep it well above authd's heartbeat interval of one
    /// second.
    pub fn stale_after(self, stale_after: Duration) -> Self {
        Self {
            stale_after,
            ..self
        }
    }

    /// What to do while the view is stale: [`Fallback::Introspect`] by
    /// default.
    pub fn fallback(self, fallback: Fallback) -> Self {
        Self { fallback, ..self }
    }

    /// Starts watching in a background task.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(self) -> Revocations {
        let shared = Arc::new(Shared {
            revoked: RwLock::default(),
            started: Instant::now(),
            current_at: AtomicU64::new(0),
            stale_after: self.stale_after,
        });
        let client = AuthServiceClient::new(self.channel);
        let watcher = Watcher {
            shared: Arc::downgrade(&shared),
            client: client.clone(),
            api_key: self.api_key,
            token: None,
            cursor: String::new(),
            last_prune: Instant::now(),
        };
        tokio::spawn(watcher.run());
        Revocations {
            shared,
            client,
            fallback: self.fallback,
        }
    }
}

impl fmt::Debug for RevocationsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationsBuilder")
            .field("stale_after", &self.stale_after)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn is_current(&self) -> bool {
        match self.current_at.load(Ordering::Acquire) {
            0 => false,
            at => {
                let since = self.started.elapsed().as_millis();
                since.saturating_sub(u128::from(at - 1)) <= self.stale_after.as_millis()
            }
        }
    }

    fn mark_stale(&self) {
        self.current_at.store(0, Ordering::Release);
    }

    fn mark_current(&self) {
        let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.current_at.store(at + 1, Ordering::Release);
    }

    fn revoke(&self, session_id: String, forget_after: i64) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session_id, forget_after);
    }

    fn prune(&self) {
        let now = unix_now();
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, forget_after| *forget_after >= now);
    }
}

/// The background task's state.
struct Watcher {
    /// Weak, so that dropping the last `Revocations` ends the task.
    shared: Weak<Shared>,
    client: AuthServiceClient<Channel>,
    api_key: SecretString,
    token: Option<ServiceToken>,
    /// The last cursor received: a reconnect resumes after it.
    cursor: String,
    last_prune: Instant,
}

struct ServiceToken {
    bearer: AsciiMetadataValue,
    renew_at: Instant,
}

/// Why a watch ended.
enum Ended {
    /// Every `Revocations` is gone: stop.
    Dropped,
    /// Reconnect after a pause; `heard` says whether anything arrived, which
    /// resets the backoff.
    Retry { heard: bool },
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            let heard = match self.watch().await {
                Ended::Dropped => return,
                Ended::Retry { heard } => heard,
            };
            // Revocations may happen before the next stream's backlog
            // arrives: until then the view cannot vouch for a session.
            if let Some(shared) = self.shared.upgrade() {
                shared.mark_stale();
            }
            if heard {
                backoff = BACKOFF.0;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// One stream, from connecting until it ends.
    async fn watch(&mut self) -> Ended {
        let Some(stale_after) = self.shared.upgrade().map(|shared| shared.stale_after) else {
            return Ended::Dropped;
        };
        let bearer = match self.bearer().await {
            Ok(bearer) => bearer,
            Err(status) => {
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    "cannot get a service token to watch authd's revocations",
                );
                return Ended::Retry { heard: false };
            }
        };
        let mut request = Request::new(WatchRevocationsRequest {
            cursor: self.cursor.clone(),
        });
        request.metadata_mut().insert("authorization", bearer);
        let opened = tokio::time::timeout(CALL_TIMEOUT, self.client.watch_revocations(request));
        let mut stream = match opened.await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                self.failed(&status);
                return Ended::Retry { heard: false };
            }
            Err(_) => {
                tracing::warn!("authd did not open the revocation stream in time");
                return Ended::Retry { heard: false };
            }
        };
        let mut backlog_done = false;
        let mut heard = false;
        loop {
            let entry = match tokio::time::timeout(stale_after, stream.message()).await {
                Ok(Ok(Some(entry))) => entry,
                Ok(Ok(None)) => {
                    tracing::info!("authd ended the revocation stream: reconnecting");
                    return Ended::Retry { heard };
                }
                Ok(Err(status)) => {
                    self.failed(&status);
                    return Ended::Retry { heard };
                }
                Err(_) => {
                    tracing::warn!(
                        ?stale_after,
                        "the revocation stream went silent: reconnecting"
                    );
                    return Ended::Retry { heard };
                }
            };
            let Some(shared) = self.shared.upgrade() else {
                return Ended::Dropped;
            };
            heard = true;
            self.receive(&shared, entry, &mut backlog_done);
            if self.last_prune.elapsed() >= PRUNE_INTERVAL {
                shared.prune();
                self.last_prune = Instant::now();
            }
        }
    }

    fn receive(
        &mut self,
        shared: &Shared,
        entry: WatchRevocationsResponse,
        backlog_done: &mut bool,
    ) {
        let WatchRevocationsResponse {
            cursor,
            session_id,
            not_after,
            ..
        } = entry;
        if session_id.is_empty() {
            *backlog_done = true;
        } else {
            let forget_after = not_after.map_or(unix_now() + UNBOUNDED_ENTRY_LIFETIME, |at| {
                at.seconds.saturating_add(LEEWAY.as_secs().cast_signed())
            });
            shared.revoke(session_id, forget_after);
        }
        if *backlog_done {
            shared.mark_current();
        }
        if !cursor.is_empty() {
            self.cursor = cursor;
        }
    }

    /// Acts on the status a watch failed with.
    fn failed(&mut self, status: &Status) {
        match status.code() {
            // The token expired or was withdrawn: a new one next time.
            Code::Unauthenticated => self.token = None,
            // A cursor this server does not know: start over from the whole
            // backlog, which repeats nothing harmful.
            Code::InvalidArgument => self.cursor.clear(),
            _ => {}
        }
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            "watching authd's revocations failed: reconnecting",
        );
    }

    /// The `authorization` value for the stream, from a service token
    /// issued anew once half its lifetime has passed.
    async fn bearer(&mut self) -> Result<AsciiMetadataValue, Status> {
        if let Some(token) = &self.token
            && Instant::now() < token.renew_at
        {
            return Ok(token.bearer.clone());
        }
        let request = IssueServiceTokenRequest {
            api_key: self.api_key.expose_secret().to_owned(),
        };
        let issued = tokio::time::timeout(CALL_TIMEOUT, self.client.issue_service_token(request))
            .await
            .map_err(|_| Status::deadline_exceeded("IssueServiceToken timed out"))??
            .into_inner();
        let mut bearer = MetadataValue::try_from(format!("Bearer {}", issued.access_token))
            .map_err(|_| Status::internal("authd issued a token that is no metadata value"))?;
        bearer.set_sensitive(true);
        let lifetime = Duration::from_secs(issued.expires_in.max(0).cast_unsigned());
        self.token = Some(ServiceToken {
            bearer: bearer.clone(),
            renew_at: Instant::now() + lifetime / 2,
        });
        Ok(bearer)
    }
}

/// A verifier that also refuses the tokens of sessions authd revoked; made
/// by [`Revocations::wrap`].
pub struct WithRevocations<V: ?Sized> {
    inner: Arc<V>,
    revocations: Revocations,
}

impl<V: TokenVerifier + ?Sized> TokenVerifier for WithRevocations<V> {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
        Box::pin(async move {
            let claims = self.inner.verify(token).await?;
            self.revocations
                .allows(token, &claims)
                .await
                .then_some(claims)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        future::Future,
        sync::{Mutex, atomic::AtomicUsize},
    };

    use authd_client::v1::{IntrospectTokenResponse, IssueServiceTokenResponse};
    use prost_types::Timestamp;
    use tokio::{net::TcpListener, sync::mpsc};
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use tonic::{
        Response,
        transport::{Endpoint, Server},
    };

    use super::*;

    mod server {
        #![allow(missing_docs, unreachable_pub)]
        tonic::include_proto!("auth.v1");
    }
    use server::auth_service_server::{AuthService, AuthServiceServer};

    const API_KEY: &str = "authd_sk_test";
    const IN_TIME: Duration = Duration::from_secs(5);

    type Entries = mpsc::Sender<Result<WatchRevocationsResponse, Status>>;

    /// One WatchRevocations call the fake received: its cursor, and the
    /// sending end of the stream it answered with.
    struct Watch {
        cursor: String,
        entries: Entries,
    }

    impl Watch {
        async fn send(&self, entry: WatchRevocationsResponse) {
            self.entries
                .send(Ok(entry))
                .await
                .expect("the watcher listens");
        }

        /// Ends the stream with `status`.
        async fn fail(&self, status: Status) {
            self.entries
                .send(Err(status))
                .await
                .expect("the watcher listens");
        }
    }

    /// An authd that issues tokens for [`API_KEY`], hands each watch to the
    /// test and answers IntrospectToken from a set of active tokens.
    #[derive(Clone)]
    struct FakeAuthd {
        watches: mpsc::UnboundedSender<Watch>,
        active: Arc<Mutex<HashSet<String>>>,
        introspections: Arc<AtomicUsize>,
        issued: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl AuthService for FakeAuthd {
        async fn issue_service_token(
            &self,
            request: Request<IssueServiceTokenRequest>,
        ) -> Result<Response<IssueServiceTokenResponse>, Status> {
            if request.get_ref().api_key != API_KEY {
                return Err(Status::unauthenticated("invalid API key"));
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(IssueServiceTokenResponse {
                access_token: format!("service-{n}"),
                token_type: "Bearer".into(),
                expires_in: 600,
            }))
        }

        async fn watch_revocations(
            &self,
            request: Request<WatchRevocationsRequest>,
        ) -> Result<Response<tonic::codegen::BoxStream<WatchRevocationsResponse>>, Status> {
            let bearer = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            if !bearer.starts_with("Bearer service-") {
                return Err(Status::unauthenticated("missing or invalid access token"));
            }
            let (entries, stream) = mpsc::channel(16);
            let cursor = request.into_inner().cursor;
            self.watches
                .send(Watch { cursor, entries })
                .expect("the test listens");
            Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
        }

        async fn introspect_token(
            &self,
            request: Request<IntrospectTokenRequest>,
        ) -> Result<Response<IntrospectTokenResponse>, Status> {
            self.introspections.fetch_add(1, Ordering::SeqCst);
            let active = self
                .active
                .lock()
                .expect("lock")
                .contains(&request.get_ref().token);
            Ok(Response::new(IntrospectTokenResponse {
                active,
                ..IntrospectTokenResponse::default()
            }))
        }
    }

    struct Harness {
        fake: FakeAuthd,
        watches: mpsc::UnboundedReceiver<Watch>,
        channel: Channel,
    }

    impl Harness {
        async fn start() -> Self {
            let (watches, received) = mpsc::unbounded_channel();
            let fake = FakeAuthd {
                watches,
                active: Arc::default(),
                introspections: Arc::default(),
                issued: Arc::default(),
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(
                Server::builder()
                    .add_service(AuthServiceServer::new(fake.clone()))
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_lazy();
            Self {
                fake,
                watches: received,
                channel,
            }
        }

        fn revocations(&self, fallback: Fallback, stale_after: Duration) -> Revocations {
            Revocations::builder(self.channel.clone(), API_KEY)
                .fallback(fallback)
                .stale_after(stale_after)
                .start()
        }

        async fn next_watch(&mut self) -> Watch {
            tokio::time::timeout(IN_TIME, self.watches.recv())
                .await
                .expect("a watch in time")
                .expect("the fake runs")
        }

        fn introspections(&self) -> usize {
            self.fake.introspections.load(Ordering::SeqCst)
        }
    }

    fn revoked(cursor: &str, session_id: &str, not_after: i64) -> WatchRevocationsResponse {
        WatchRevocationsResponse {
            cursor: cursor.into(),
            session_id: session_id.into(),
            revoked_at: Some(Timestamp {
                seconds: unix_now(),
                nanos: 0,
            }),
            not_after: Some(Timestamp {
                seconds: not_after,
                nanos: 0,
            }),
        }
    }

    fn heartbeat(cursor: &str) -> WatchRevocationsResponse {
        WatchRevocationsResponse {
            cursor: cursor.into(),
            ..WatchRevocationsResponse::default()
        }
    }

    /// Verifies "user:<sid>" as a session's token and "service:<id>" as a
    /// service account's, so that only the revocation check decides.
    struct BySid;

    impl TokenVerifier for BySid {
        fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
            let claims = |sid: Option<&str>, client_id: Option<&str>| Claims {
                iss: "authd".into(),
                sub: "subject".into(),
                aud: "authd".into(),
                exp: unix_now() + 600,
                iat: unix_now(),
                nbf: unix_now(),
                jti: "jti".into(),
                sid: sid.map(str::to_owned),
                roles: Vec::new(),
                client_id: client_id.map(str::to_owned),
                amr: Vec::new(),
                email_verified: false,
            };
            let verified = if let Some(sid) = token.strip_prefix("user:") {
                Some(claims(Some(sid), None))
            } else {
                token
                    .strip_prefix("service:")
                    .map(|id| claims(None, Some(id)))
            };
            Box::pin(std::future::ready(verified))
        }
    }

    async fn accepts(verifier: &WithRevocations<BySid>, token: &str) -> bool {
        verifier.verify(token).await.is_some()
    }

    /// Waits until `check` holds, for at most [`IN_TIME`].
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + IN_TIME;
        while !check().await {
            assert!(Instant::now() < deadline, "not in time: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_backlog_then_live_entries_revoke_sessions() {
        let mut authd = Harness::start().await;
        let revocations = authd.revocations(Fallback::Reject, DEFAULT_STALE_AFTER);
        let verifier = revocations.wrap(Arc::new(BySid));
        assert!(!revocations.is_current());
        assert!(!accepts(&verifier, "user:c").await, "no backlog yet");

        let watch = authd.next_watch().await;
        assert_eq!(watch.cursor, "", "a first watch asks for everything");
        let now = unix_now();
        watch.send(revoked("1", "a", now + 600)).await;
        let long_expired = now - LEEWAY.as_secs().cast_signed() - 60;
        watch.send(revoked("2", "b", long_expired)).await;
        eventually("the backlog arrives", || async {
            revocations.is_revoked("a")
        })
        .await;
        assert!(!revocations.is_current(), "the backlog is not complete");
        assert!(!accepts(&verifier, "user:c").await);

        watch.send(heartbeat("2")).await;
        eventually("the heartbeat makes it current", || async {
            revocations.is_current()
        })
        .await;
        assert!(!accepts(&verifier, "user:a").await);
        assert!(
            accepts(&verifier, "user:b").await,
            "b's tokens expired anyway"
        );
        assert!(accepts(&verifier, "user:c").await);
        assert!(accepts(&verifier, "service:x").await);
        assert!(!accepts(&verifier, "garbage").await);

        watch.send(revoked("3", "c", now + 600)).await;
        eventually("a live entry revokes", || async {
            !accepts(&verifier, "user:c").await
        })
        .await;
        assert_eq!(authd.introspections(), 0, "no call while current");
    }

    #[tokio::test]
    async fn a_reconnect_resumes_after_the_last_cursor() {
        let mut authd = Harness::start().await;
        let revocations = authd.revocations(Fallback::Reject, DEFAULT_STALE_AFTER);

        let watch = authd.next_watch().await;
        watch.send(revoked("1", "a", unix_now() + 600)).await;
        watch.send(heartbeat("2")).await;
        drop(watch);
        let watch = authd.next_watch().await;
        assert_eq!(watch.cursor, "2", "the stream ended: resume after it");
        assert!(revocations.is_revoked("a"), "kept across the reconnect");

        watch.send(revoked("3", "b", unix_now() + 600)).await;
        watch.fail(Status::unavailable("shutting down")).await;
        let watch = authd.next_watch().await;
        assert_eq!(watch.cursor, "3", "the stream failed: resume after it");
        assert_eq!(authd.fake.issued.load(Ordering::SeqCst), 1, "token reused");

        watch.fail(Status::unauthenticated("expired")).await;
        let watch = authd.next_watch().await;
        assert_eq!(watch.cursor, "3");
        assert_eq!(authd.fake.issued.load(Ordering::SeqCst), 2, "a new token");

        watch.fail(Status::invalid_argument("unknown cursor")).await;
        let watch = authd.next_watch().await;
        assert_eq!(watch.cursor, "", "an unknown cursor: start over");
        assert!(revocations.is_revoked("a") && revocations.is_revoked("b"));

        drop(revocations);
        tokio::time::timeout(IN_TIME, watch.entries.closed())
            .await
            .expect("dropping the last Revocations ends the watch");
    }

    #[tokio::test]
    async fn a_silent_stream_turns_stale_and_is_replaced() {
        let mut authd = Harness::start().await;
        let stale_after = Duration::from_millis(300);
        let revocations = authd.revocations(Fallback::Reject, stale_after);
        let verifier = revocations.wrap(Arc::new(BySid));

        let watch = authd.next_watch().await;
        watch.send(heartbeat("1")).await;
        eventually("current", || async { revocations.is_current() }).await;
        assert!(accepts(&verifier, "user:a").await);

        // The server keeps the stream open but says nothing more.
        eventually("stale", || async { !revocations.is_current() }).await;
        assert!(!accepts(&verifier, "user:a").await, "fails closed");
        assert!(accepts(&verifier, "service:x").await);
        let again = authd.next_watch().await;
        assert_eq!(again.cursor, "1");
        drop(watch);

        again.send(heartbeat("2")).await;
        eventually("current again", || async {
            accepts(&verifier, "user:a").await
        })
        .await;
    }

    #[tokio::test]
    async fn while_stale_introspection_decides() {
        let mut authd = Harness::start().await;
        authd
            .fake
            .active
            .lock()
            .expect("lock")
            .insert("user:live".into());
        let revocations = authd.revocations(Fallback::default(), DEFAULT_STALE_AFTER);
        let verifier = revocations.wrap(Arc::new(BySid));

        assert!(accepts(&verifier, "user:live").await);
        assert!(!accepts(&verifier, "user:ended").await);
        assert_eq!(authd.introspections(), 2, "one call per token, no cache");
        assert!(accepts(&verifier, "service:x").await);
        assert!(!accepts(&verifier, "garbage").await);
        assert_eq!(authd.introspections(), 2, "only sessions' valid tokens");

        let watch = authd.next_watch().await;
        watch.send(revoked("1", "live", unix_now() + 600)).await;
        watch.send(heartbeat("1")).await;
        eventually("current", || async { revocations.is_current() }).await;
        assert!(!accepts(&verifier, "user:live").await, "revoked");
        assert!(accepts(&verifier, "user:ended").await, "not revoked");
        assert_eq!(authd.introspections(), 2, "no call while current");
    }

    #[tokio::test]
    async fn without_authd_the_introspection_fallback_refuses() {
        let unused = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = unused.local_addr().expect("addr");
        drop(unused);
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let revocations = Revocations::builder(channel, API_KEY).start();
        let verifier = revocations.wrap(Arc::new(BySid));
        assert!(!accepts(&verifier, "user:a").await);
        assert!(accepts(&verifier, "service:x").await);
    }

    #[tokio::test]
    async fn debug_shows_no_api_key() {
        let authd = Harness::start().await;
        let builder = Revocations::builder(authd.channel.clone(), API_KEY);
        let mut printed = format!("{builder:?}");
        printed.push_str(&format!("{:?}", builder.start()));
        assert!(!printed.contains(API_KEY), "{printed}");
        assert!(printed.contains("Introspect"), "{printed}");
    }

    #[test]
    fn sessions_are_forgotten_after_not_after() {
        let shared = Shared {
            revoked: RwLock::default(),
            started: Instant::now(),
            current_at: AtomicU64::new(0),
            stale_after: DEFAULT_STALE_AFTER,
        };
        shared.revoke("over".into(), unix_now() - 1);
        shared.revoke("live".into(), unix_now() + 60);
        shared.prune();
        let revoked = shared.revoked.read().expect("lock");
        assert_eq!(revoked.keys().collect::<Vec<_>>(), ["live"]);
    }
}
