//! The listening socket and the connections on it, for plaintext and TLS
//! alike: accepting without spinning, a cap on open connections, closing
//! the ones that carry no calls, and a bound on calls in progress.
//!
//! A connection is *busy* while a call on it is in progress (from its
//! headers to the end of its response body) and *idle* otherwise. An idle
//! connection is closed after [`ListenerSettings::idle_timeout`], whether
//! it never sent a byte, sent only the HTTP/2 preface, or answers keepalive
//! pings without ever calling. When the cap is reached, a new connection
//! closes the connection idle the longest; if none is idle it is refused.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use futures_util::{future::BoxFuture, task::AtomicWaker};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Sleep,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TlsConnectInfo};
use tower::{Layer, Service};

use crate::{domain::Error, infra::metrics::Metrics};

/// The first pause after a failed accept; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while accepting keeps failing. Without it a
/// process out of file descriptors retries in a busy loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Limits on connections and calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerSettings {
    /// Most connections open at once, handshaking ones included.
    pub(crate) max_connections: usize,
    /// How long a connection may stay idle before it is closed.
    pub(crate) idle_timeout: Duration,
    /// Most calls in progress at once, over all connections, counted until
    /// their response headers; more are refused at once.
    pub(crate) max_concurrent_calls: usize,
    /// How long a call may take to its response headers, waiting for its
    /// request message included.
    pub(crate) call_timeout: Duration,
    /// How often an HTTP/2 connection with nothing to read is pinged; one
    /// that does not answer within [`KEEPALIVE_TIMEOUT`] is closed.
    pub(crate) keepalive_interval: Duration,
}

/// How long an HTTP/2 keepalive ping may go unanswered.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server knows about the connection a call arrived on. tonic puts
/// it in every request's extensions; [`peer`] reads it.
#[derive(Clone)]
pub(crate) struct ConnectionInfo {
    remote: SocketAddr,
    activity: Arc<Activity>,
}

/// The client address of a call, on plaintext and TLS connections alike.
pub(crate) fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    Some(connection(extensions)?.remote)
}

fn connection(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

/// The open connections, so that the cap can be kept and the longest idle
/// one found.
#[derive(Clone)]
struct Registry(Arc<RegistryInner>);

struct RegistryInner {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Idle times are kept as milliseconds since this instant, so they fit
    /// an atomic.
    epoch: Instant,
    settings: ListenerSettings,
    metrics: Metrics,
}

/// One connection's state, shared by its socket and the calls on it.
struct Activity {
    id: u64,
    calls: AtomicUsize,
    /// When the last call ended (or the connection opened), in milliseconds
    /// since the registry's epoch.
    idle_since: AtomicU64,
    closing: AtomicBool,
    reader: AtomicWaker,
    epoch: Instant,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::Acquire) == 0)
            .then(|| self.epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire)))
    }

    /// Makes the connection's next read see the end of the stream, which
    /// ends the connection.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.reader.wake();
    }

    fn call_started(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }
}

/// Marks its connection busy until dropped.
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    fn new(settings: ListenerSettings, metrics: Metrics) -> Self {
        Self(Arc::new(RegistryInner {
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            settings,
            metrics,
        }))
    }

    /// A place for a new connection: a free one, or the one of the
    /// connection idle the longest, which is closed. None when every open
    /// connection is busy.
    fn admit(&self) -> Option<Arc<Activity>> {
        let inner = &self.0;
        let mut open = inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= inner.settings.max_connections {
            let (&oldest, _) = open
                .iter()
                .filter_map(|(id, activity)| Some((id, activity.idle_since()?)))
                .min_by_key(|&(_, since)| since)?;
            if let Some(evicted) = open.remove(&oldest) {
                evicted.close();
                inner.metrics.connection_dropped("evicted");
            }
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            id,
            calls: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            epoch: inner.epoch,
        });
        activity.idle_since.store(activity.now(), Ordering::Release);
        open.insert(id, Arc::clone(&activity));
        inner.metrics.set_open_connections(open.len());
        Some(activity)
    }

    fn remove(&self, activity: &Activity) {
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&activity.id);
        self.0.metrics.set_open_connections(open.len());
    }
}

pin_project! {
    /// A TCP connection that ends itself when it has been idle too long or
    /// was chosen to make room, and leaves the registry when dropped.
    pub(crate) struct Guarded {
        #[pin]
        tcp: TcpStream,
        remote: SocketAddr,
        activity: Arc<Activity>,
        registry: Registry,
        idle_timer: Pin<Box<Sleep>>,
    }

    impl PinnedDrop for Guarded {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.registry.remove(this.activity);
        }
    }
}

impl Guarded {
    fn new(
        tcp: TcpStream,
        remote: SocketAddr,
        activity: Arc<Activity>,
        registry: Registry,
    ) -> Self {
        let idle_timeout = registry.0.settings.idle_timeout;
        Self {
            tcp,
            remote,
            activity,
            registry,
            idle_timer: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }
}

impl Guarded {
    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            remote: self.remote,
            activity: Arc::clone(&self.activity),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let activity = &**this.activity;
        activity.reader.register(cx.waker());
        // A read that returns no bytes is the end of the stream: hyper then
        // closes the connection, on HTTP/1.1 and HTTP/2 alike.
        if activity.closing.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(read) = this.tcp.poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        let idle_timeout = this.registry.0.settings.idle_timeout;
        while this.idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = match activity.idle_since() {
                Some(since) => since + idle_timeout,
                None => Instant::now() + idle_timeout,
            };
            if deadline <= Instant::now() {
                activity.closing.store(true, Ordering::Release);
                this.registry.0.metrics.connection_dropped("idle");
                return Poll::Ready(Ok(()));
            }
            this.idle_timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        Poll::Pending
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The connections accepted on `listener`, each admitted under the cap and
/// then passed through `handshake` (TLS, or nothing) in a task of its own,
/// so a slow client never holds up the others. Accept errors (such as
/// running out of file descriptors) are logged, counted and followed by a
/// pause that grows while they last.
pub(crate) fn incoming<IO, H, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    metrics: Metrics,
    handshake: H,
) -> ReceiverStream<io::Result<IO>>
where
    IO: Send + 'static,
    H: Fn(Guarded) -> F + Send + 'static,
    F: Future<Output = Option<IO>> + Send + 'static,
{
    let registry = Registry::new(settings, metrics.clone());
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped taking connections: so do we.
                () = sender.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(error) => {
                    metrics.accept_failed();
                    tracing::warn!(%error, retry_in = ?backoff, "accepting a connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let Some(activity) = registry.admit() else {
                metrics.connection_dropped("refused");
                tracing::debug!(%remote, "connection refused: every open connection is busy");
                continue;
            };
            // Calls are small messages, answered at once: Nagle's delay
            // would only add latency.
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%remote, %error, "cannot set TCP_NODELAY");
            }
            let guarded = Guarded::new(tcp, remote, activity, registry.clone());
            let ready = handshake(guarded);
            let sender = sender.clone();
            tokio::spawn(async move {
                if let Some(io) = ready.await {
                    let _ = sender.send(Ok(io)).await;
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Bounds the calls in progress over all connections, and keeps each
/// connection marked busy while a call on it runs, so it is not closed as
/// idle under a call.
#[derive(Clone)]
pub(crate) struct CallLimitLayer {
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

impl CallLimitLayer {
    pub(crate) fn new(settings: &ListenerSettings, metrics: Metrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_concurrent_calls)),
            metrics,
        }
    }
}

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimit {
            inner,
            permits: Arc::clone(&self.permits),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`CallLimitLayer`] wraps around `S`.
#[derive(Clone)]
pub(crate) struct CallLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

impl<S, B, R> Service<Request<B>> for CallLimit<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<Tracked<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.call_shed();
            let grpc = super::access_log::is_grpc(request.headers());
            return Box::pin(std::future::ready(Ok(busy(grpc))));
        };
        let busy = connection(request.extensions()).map(|info| info.activity.call_started());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            drop::<OwnedSemaphorePermit>(permit);
            Ok(response.map(|body| Tracked::Body { body, busy }))
        })
    }
}

/// The answer to a call that found every place taken.
fn busy<R>(grpc: bool) -> Response<Tracked<R>> {
    if grpc {
        return tonic::Status::from(Error::Overloaded).into_http();
    }
    let mut response = Response::new(Tracked::Empty);
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}

pin_project! {
    /// A response body that keeps its connection busy until it ends.
    #[project = TrackedProjection]
    #[derive(Default)]
    pub(crate) enum Tracked<B> {
        Body {
            #[pin]
            body: B,
            busy: Option<CallGuard>,
        },
        #[default]
        Empty,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project() {
            TrackedProjection::Body { body, busy } => {
                let frame = ready!(body.poll_frame(cx));
                if frame.is_none() {
                    busy.take();
                }
                Poll::Ready(frame)
            }
            TrackedProjection::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Body { body, .. } => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Body { body, .. } => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}
