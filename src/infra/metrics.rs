//! Prometheus metrics, served in the OpenMetrics text format at `/metrics` on
//! the admin listener (`AUTHD_METRICS_LISTEN`), never on the client-facing
//! port.
//!
//! Each [`Application`](crate::Application) has a registry of its own rather
//! than a process-wide one, so applications started side by side (tests,
//! embedders) never mix their numbers.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Where the admin listener serves the metrics; every other path is 404.
pub(crate) const PATH: &str = "/metrics";

/// What [`text::encode`] writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// From 1 ms (a token call on a warm pool) to 5 s (far past a cost-12 bcrypt
/// hash, 0.2 to 0.3 s, or a queue behind a few of them).
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const REFRESH_INVALID: &str = "invalid";
const REFRESH_REUSED: &str = "reused";

/// Labels are `&'static str` throughout: text a client sent can never
/// become a label, so the series are a fixed set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Handles on every series authd exports; cheap to clone, all clones count
/// into the same registry.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    hash_queue_depth: Gauge,
    hash_wait_seconds: Histogram,
    hash_rejected: Counter,
    login_failures: Counter,
    login_throttled: Family<ReasonLabels, Counter>,
    signup_throttled: Counter,
    refresh_throttled: Counter,
    introspect_throttled: Counter,
    refresh_rejected: Family<ReasonLabels, Counter>,
    pool_connections: Family<StateLabels, Gauge>,
    pool_max_connections: Gauge,
    connections: Gauge,
    connections_dropped: Family<ReasonLabels, Counter>,
    accept_errors: Counter,
    calls_shed: Counter,
    revocation_feed_current: Gauge,
    revoked_sessions: Gauge,
    outbox_depth: Gauge,
    mail_sent: Family<KindLabels, Counter>,
    mail_failed: Family<KindLabels, Counter>,
    mail_dropped: Counter,
    mail_throttled: Counter,
    mail_tokens_rejected: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every series at zero.
    pub(crate) fn new() -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let hash_queue_depth = Gauge::default();
        let hash_wait_seconds = latency_histogram();
        let hash_rejected = Counter::default();
        let login_failures = Counter::default();
        let login_throttled = Family::<ReasonLabels, Counter>::default();
        let signup_throttled = Counter::default();
        let refresh_throttled = Counter::default();
        let introspect_throttled = Counter::default();
        let refresh_rejected = Family::<ReasonLabels, Counter>::default();
        let pool_connections = Family::<StateLabels, Gauge>::default();
        let pool_max_connections = Gauge::default();
        let connections = Gauge::default();
        let connections_dropped = Family::<ReasonLabels, Counter>::default();
        let accept_errors = Counter::default();
        let calls_shed = Counter::default();
        let revocation_feed_current = Gauge::default();
        let revoked_sessions = Gauge::default();
        let outbox_depth = Gauge::default();
        let mail_sent = Family::<KindLabels, Counter>::default();
        let mail_failed = Family::<KindLabels, Counter>::default();
        let mail_dropped = Counter::default();
        let mail_throttled = Counter::default();
        let mail_tokens_rejected = Counter::default();
        // Series that exist from the start read 0 instead of missing, so
        // rate() and alerts work before the first event.
        for reason in ["client", "account"] {
            let _ = login_throttled.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["idle", "evicted", "refused"] {
            let _ = connections_dropped.get_or_create(&ReasonLabels { reason });
        }
        for reason in [REFRESH_INVALID, REFRESH_REUSED] {
            let _ = refresh_rejected.get_or_create(&ReasonLabels { reason });
        }

        let mut registry = Registry::with_prefix("authd");
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by method and status code",
            calls.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "Time from a call's arrival to its response headers, by method",
            Unit::Seconds,
            call_seconds.clone(),
        );
        registry.register(
            "hash_queue_depth",
            "Calls holding a place in the password hashing stage: hashing or queued",
            hash_queue_depth.clone(),
        );
        registry.register_with_unit(
            "hash_wait",
            "Time a call waited in the hashing queue for a core",
            Unit::Seconds,
            hash_wait_seconds.clone(),
        );
        registry.register(
            "hash_rejected",
            "Calls refused RESOURCE_EXHAUSTED because the hashing stage was full",
            hash_rejected.clone(),
        );
        registry.register(
            "login_failures",
            "Login calls refused for an unknown email or a wrong password",
            login_failures.clone(),
        );
        registry.register(
            "login_throttled",
            "Login calls refused by the client rate limit (client) or the per-account \
             throttle (account)",
            login_throttled.clone(),
        );
        registry.register(
            "signup_throttled",
            "Signup calls refused by the client rate limit",
            signup_throttled.clone(),
        );
        registry.register(
            "refresh_throttled",
            "Refresh calls refused by the client rate limit",
            refresh_throttled.clone(),
        );
        registry.register(
            "introspect_throttled",
            "IntrospectToken calls refused by the client rate limit",
            introspect_throttled.clone(),
        );
        registry.register(
            "refresh_rejected",
            "Refresh tokens refused: unknown, expired or of a revoked session (invalid), \
             or spent before, which revoked the session (reused)",
            refresh_rejected.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections: lent to a call (in_use) or idle in the pool",
            pool_connections.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Most database connections the pool opens (AUTHD_DB_POOL_SIZE)",
            pool_max_connections.clone(),
        );
        registry.register(
            "connections",
            "Open connections on the gRPC port, handshaking ones included",
            connections.clone(),
        );
        registry.register(
            "connections_dropped",
            "Connections closed by authd: idle too long (idle), closed to make room for a new \
             one (evicted), or refused because every open one was busy (refused)",
            connections_dropped.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts on the gRPC port, such as running out of file descriptors",
            accept_errors.clone(),
        );
        registry.register(
            "calls_shed",
            "Calls refused at once because AUTHD_MAX_CONCURRENT_CALLS were in progress",
            calls_shed.clone(),
        );
        registry.register(
            "revocation_feed_current",
            "1 while this replica's view of revoked sessions is caught up and listening, \
             0 while it reconnects (session checks then read the database)",
            revocation_feed_current.clone(),
        );
        registry.register(
            "revoked_sessions",
            "Revoked sessions this replica holds in memory, until their tokens expire",
            revoked_sessions.clone(),
        );
        registry.register(
            "outbox_depth",
            "Mails waiting in the outbox for delivery, as this replica's sender last counted",
            outbox_depth.clone(),
        );
        registry.register(
            "mail_sent",
            "Mails delivered to the SMTP server, by kind",
            mail_sent.clone(),
        );
        registry.register(
            "mail_failed",
            "Failed delivery attempts, by kind (each is retried until the give-up time)",
            mail_failed.clone(),
        );
        registry.register(
            "mail_requests_dropped",
            "RequestPasswordReset calls answered without a mail because the queue of pending \
             lookups was full",
            mail_dropped.clone(),
        );
        registry.register(
            "mail_throttled",
            "Calls that send or spend mailed links refused by the client rate limit",
            mail_throttled.clone(),
        );
        registry.register(
            "mail_tokens_rejected",
            "Mailed tokens presented that were unknown, expired or used",
            mail_tokens_rejected.clone(),
        );

        Self(Arc::new(Inner {
            registry,
            calls,
            call_seconds,
            hash_queue_depth,
            hash_wait_seconds,
            hash_rejected,
            login_failures,
            login_throttled,
            signup_throttled,
            refresh_throttled,
            introspect_throttled,
            refresh_rejected,
            pool_connections,
            pool_max_connections,
            connections,
            connections_dropped,
            accept_errors,
            calls_shed,
            revocation_feed_current,
            revoked_sessions,
            outbox_depth,
            mail_sent,
            mail_failed,
            mail_dropped,
            mail_throttled,
            mail_tokens_rejected,
        }))
    }

    /// The router of the admin listener: `GET /metrics`, and 404 for
    /// anything else. Pool figures are read from `pool` at each scrape.
    pub(crate) fn router(&self, pool: PoolStatus) -> Router {
        Router::new()
            .route(PATH, get(scrape))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state((self.clone(), pool))
    }

    /// The whole registry in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        text::encode(&mut body, &self.0.registry)?;
        Ok(body)
    }

    /// One call to `method` (a served method's path, or a fixed stand-in
    /// for all others), answered with `code` (its canonical name, e.g.
    /// `UNAUTHENTICATED`) after `elapsed`.
    pub(crate) fn record_call(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        let inner = &self.0;
        inner
            .calls
            .get_or_create(&CallLabels { method, code })
            .inc();
        inner
            .call_seconds
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// How many mails wait in the outbox.
    pub(crate) fn set_outbox_depth(&self, depth: i64) {
        self.0.outbox_depth.set(depth);
    }

    /// Makes the sent and failed series of these kinds of mail read 0
    /// until their first event.
    pub(crate) fn mail_kinds(&self, kinds: impl IntoIterator<Item = &'static str>) {
        for kind in kinds {
            let _ = self.0.mail_sent.get_or_create(&KindLabels { kind });
            let _ = self.0.mail_failed.get_or_create(&KindLabels { kind });
        }
    }

    /// A mail of `kind` was delivered.
    pub(crate) fn mail_sent(&self, kind: &'static str) {
        self.0.mail_sent.get_or_create(&KindLabels { kind }).inc();
    }

    /// A delivery attempt of a mail of `kind` failed.
    pub(crate) fn mail_failed(&self, kind: &'static str) {
        self.0.mail_failed.get_or_create(&KindLabels { kind }).inc();
    }

    /// A mail request was dropped because its queue was full.
    pub(crate) fn mail_request_dropped(&self) {
        self.0.mail_dropped.inc();
    }

    pub(crate) fn mail_throttled(&self) {
        self.0.mail_throttled.inc();
    }

    /// A mailed token was presented that is no live one.
    pub(crate) fn mail_token_rejected(&self) {
        self.0.mail_tokens_rejected.inc();
    }

    /// A login was refused for a wrong password or an unknown email.
    pub(crate) fn login_failed(&self) {
        self.0.login_failures.inc();
    }

    /// A call took a place in the hashing stage; [`Metrics::hash_left`]
    /// gives it back.
    pub(crate) fn hash_entered(&self) {
        self.0.hash_queue_depth.inc();
    }

    pub(crate) fn hash_left(&self) {
        self.0.hash_queue_depth.dec();
    }

    /// A call waited `wait` for a hashing permit.
    pub(crate) fn hash_waited(&self, wait: Duration) {
        self.0.hash_wait_seconds.observe(wait.as_secs_f64());
    }

    pub(crate) fn hash_rejected(&self) {
        self.0.hash_rejected.inc();
    }

    /// The client rate limit refused a Login call.
    pub(crate) fn login_throttled_by_client(&self) {
        self.login_throttled("client");
    }

    /// The client rate limit refused a Signup call.
    pub(crate) fn signup_throttled(&self) {
        self.0.signup_throttled.inc();
    }

    /// The client rate limit refused a Refresh call.
    pub(crate) fn refresh_throttled(&self) {
        self.0.refresh_throttled.inc();
    }

    /// The client rate limit refused an IntrospectToken call.
    pub(crate) fn introspect_throttled(&self) {
        self.0.introspect_throttled.inc();
    }

    /// Refresh refused a token that is not live.
    pub(crate) fn refresh_invalid(&self) {
        self.refresh_rejected(REFRESH_INVALID);
    }

    /// Refresh was handed a token spent before its grace interval, and
    /// revoked its session.
    pub(crate) fn refresh_reused(&self) {
        self.refresh_rejected(REFRESH_REUSED);
    }

    fn refresh_rejected(&self, reason: &'static str) {
        self.0
            .refresh_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The per-account throttle refused a login attempt.
    pub(crate) fn account_throttled(&self) {
        self.login_throttled("account");
    }

    fn login_throttled(&self, reason: &'static str) {
        self.0
            .login_throttled
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn set_revocation_feed(&self, current: bool, revoked_sessions: usize) {
        self.0.revocation_feed_current.set(i64::from(current));
        self.0.revoked_sessions.set(gauge_value(revoked_sessions));
    }

    pub(crate) fn set_open_connections(&self, open: usize) {
        self.0.connections.set(gauge_value(open));
    }

    /// authd closed or refused a connection; `reason` is `idle`, `evicted`
    /// or `refused`.
    pub(crate) fn connection_dropped(&self, reason: &'static str) {
        self.0
            .connections_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn accept_failed(&self) {
        self.0.accept_errors.inc();
    }

    pub(crate) fn call_shed(&self) {
        self.0.calls_shed.inc();
    }

    fn record_pool(&self, status: deadpool::Status) {
        let inner = &self.0;
        let in_use = status.size.saturating_sub(status.available);
        for (state, count) in [("in_use", in_use), ("idle", status.available)] {
            inner
                .pool_connections
                .get_or_create(&StateLabels { state })
                .set(gauge_value(count));
        }
        inner.pool_max_connections.set(gauge_value(status.max_size));
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Reads the database pool's figures, which only the store knows.
pub(crate) type PoolStatus = Arc<dyn Fn() -> deadpool::Status + Send + Sync>;

async fn scrape(State((metrics, pool)): State<(Metrics, PoolStatus)>) -> Response {
    metrics.record_pool(pool());
    match metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &str = "/auth.v1.AuthService/Login";

    /// The value of the sample named exactly `series` (name and labels).
    fn sample(metrics: &Metrics, series: &str) -> Option<f64> {
        let body = metrics.encode().expect("encode");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let metrics = Metrics::new();
        metrics.record_call(LOGIN, "OK", Duration::from_millis(3));
        metrics.record_call(LOGIN, "UNAUTHENTICATED", Duration::from_millis(3));
        metrics.login_failed();
        metrics.record_call("unknown", "UNIMPLEMENTED", Duration::ZERO);
        metrics.record_call("unknown", "UNIMPLEMENTED", Duration::ZERO);
        assert_eq!(
            sample(
                &metrics,
                r#"authd_grpc_requests_total{method="/auth.v1.AuthService/Login",code="OK"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &metrics,
                r#"authd_grpc_requests_total{method="unknown",code="UNIMPLEMENTED"}"#
            ),
            Some(2.0)
        );
        assert_eq!(sample(&metrics, "authd_login_failures_total"), Some(1.0));
        assert_eq!(
            sample(
                &metrics,
                r#"authd_grpc_request_duration_seconds_bucket{le="0.005",method="/auth.v1.AuthService/Login"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn throttles_are_counted_by_reason_and_start_at_zero() {
        let metrics = Metrics::new();
        assert_eq!(
            sample(&metrics, r#"authd_login_throttled_total{reason="account"}"#),
            Some(0.0)
        );
        metrics.account_throttled();
        metrics.login_throttled_by_client();
        metrics.signup_throttled();
        metrics.signup_throttled();
        assert_eq!(
            sample(&metrics, r#"authd_login_throttled_total{reason="account"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&metrics, r#"authd_login_throttled_total{reason="client"}"#),
            Some(1.0)
        );
        assert_eq!(sample(&metrics, "authd_signup_throttled_total"), Some(2.0));
        assert_eq!(sample(&metrics, "authd_refresh_throttled_total"), Some(0.0));
        metrics.refresh_throttled();
        metrics.introspect_throttled();
        metrics.introspect_throttled();
        assert_eq!(sample(&metrics, "authd_refresh_throttled_total"), Some(1.0));
        assert_eq!(
            sample(&metrics, "authd_introspect_throttled_total"),
            Some(2.0)
        );
    }

    #[test]
    fn refused_refresh_tokens_are_counted_by_reason_from_zero() {
        let metrics = Metrics::new();
        let rejected = |reason: &str| {
            sample(
                &metrics,
                &format!(r#"authd_refresh_rejected_total{{reason="{reason}"}}"#),
            )
        };
        assert_eq!(
            (rejected("invalid"), rejected("reused")),
            (Some(0.0), Some(0.0))
        );
        metrics.refresh_invalid();
        metrics.refresh_invalid();
        metrics.refresh_reused();
        assert_eq!(
            (rejected("invalid"), rejected("reused")),
            (Some(2.0), Some(1.0))
        );
    }

    #[test]
    fn pool_status_becomes_gauges() {
        let metrics = Metrics::new();
        metrics.record_pool(deadpool::Status {
            max_size: 10,
            size: 4,
            available: 3,
            waiting: 0,
        });
        assert_eq!(
            sample(&metrics, r#"authd_db_pool_connections{state="in_use"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&metrics, r#"authd_db_pool_connections{state="idle"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(&metrics, "authd_db_pool_max_connections"),
            Some(10.0)
        );
    }
}
