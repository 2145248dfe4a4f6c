//! The outermost layer of every call: a request id, a `call` span, the
//! per-call metrics and one log line per call.
//!
//! It wraps every route, the bearer gate included, so calls refused before
//! any handler runs still get their id echoed, their line and their count.
//!
//! Hand-written rather than tower-http's request-id and trace layers: a
//! client's id is checked before it reaches a log line, the metric label
//! comes from a fixed set, and the one line per call carries the gRPC code.

use std::{
    task::{Context, Poll},
    time::Instant,
};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use tower::{Layer, Service};
use tracing::Instrument;

use super::proto;
use crate::infra::metrics::Metrics;

/// The metadata that carries a call's id, both ways.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// Longer ids are replaced: the id lands in every log line of the call.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The label of every call to a path authd does not serve, whatever its
/// status. Clients choose paths, so labelling by them would let anyone grow
/// the metrics without bound.
const UNKNOWN_METHOD: &str = "unknown";

/// Served besides the contract's own methods (`proto::METHODS`); reflection
/// paths are labelled even when it is off, the set stays fixed either way.
const INFRASTRUCTURE_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Unknown paths are logged, but only this much of them.
const MAX_LOGGED_PATH_BYTES: usize = 128;

/// Adds [`AccessLog`] around a service, recording into `metrics`.
#[derive(Clone)]
pub(crate) struct AccessLogLayer {
    metrics: Metrics,
}

impl AccessLogLayer {
    /// Counts the calls it sees in `metrics`.
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`AccessLogLayer`] wraps around `S`.
#[derive(Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path();
        let method = method_label(path);
        let unknown_path = (method == UNKNOWN_METHOD).then(|| truncated(path).to_owned());
        let grpc = is_grpc(request.headers());
        let request_id = request_id(request.headers());
        // Handlers and anything they log see the same id the client gets.
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        let span = tracing::info_span!(
            "call",
            method,
            path = unknown_path.map(tracing::field::display),
            peer = crate::api::listener::peer(request.extensions()).map(tracing::field::display),
            request_id = %request_id.to_str().unwrap_or_default(),
        );
        let response = span.in_scope(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let mut result = response.await;
                let elapsed = started.elapsed();
                let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                match &mut result {
                    Ok(response) => {
                        response.headers_mut().insert(REQUEST_ID, request_id);
                        if grpc {
                            let code = grpc_code(response);
                            metrics.record_call(method, code, elapsed);
                            tracing::info!(code, latency_us, "call");
                        } else {
                            let http_status = response.status().as_u16();
                            tracing::info!(http_status, latency_us, "call");
                        }
                    }
                    Err(error) => tracing::warn!(%error, latency_us, "call failed"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The served method at `path`, or [`UNKNOWN_METHOD`]: never text from the
/// request, so the metrics hold a fixed set of series.
fn method_label(path: &str) -> &'static str {
    proto::METHODS
        .iter()
        .chain(&INFRASTRUCTURE_METHODS)
        .find(|served| **served == path)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// At most [`MAX_LOGGED_PATH_BYTES`] of `path`, cut at a character boundary.
fn truncated(path: &str) -> &str {
    let end = path
        .char_indices()
        .map(|(start, c)| start + c.len_utf8())
        .take_while(|end| *end <= MAX_LOGGED_PATH_BYTES)
        .last()
        .unwrap_or(0);
    &path[..end]
}

/// gRPC and gRPC-Web calls; anything else is plain HTTP (the JWKS, say),
/// which has an HTTP status but no gRPC code.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The client's `x-request-id` if it sent exactly one that is safe to log:
/// visible ASCII, at most 128 bytes. Otherwise a new UUIDv7, which sorts by
/// time.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(REQUEST_ID).into_iter();
    match (sent.next(), sent.next()) {
        (Some(id), None) if is_sane_request_id(id.as_bytes()) => id.clone(),
        _ => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
            // A UUID is always a valid header value; the fallback only
            // satisfies the type.
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// A failed call is answered "trailers-only", with the status in the
/// response headers; headers without a status start a normal response. For
/// streaming calls (reflection, health watch) the line marks the stream's
/// start.
fn grpc_code<R>(response: &Response<R>) -> &'static str {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    code_name(code)
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        io::Write,
        sync::{Arc, Mutex},
    };

    use tower::ServiceExt;

    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let sent = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(REQUEST_ID, HeaderValue::from_str(value).expect("value"));
            }
            request_id(&headers)
        };
        assert_eq!(sent(&["abc-123"]), "abc-123");
        let longest = "a".repeat(MAX_REQUEST_ID_BYTES);
        assert_eq!(sent(&[&longest]), longest.as_str());
        for bad in [
            &[][..],
            &[""],
            &["has space"],
            &["tab\there"],
            &[&"a".repeat(MAX_REQUEST_ID_BYTES + 1)],
            &["one", "two"],
        ] {
            let id = sent(bad);
            let id = uuid::Uuid::try_parse(id.to_str().expect("ascii")).expect("a UUID");
            assert_eq!(id.get_version_num(), 7, "{bad:?}");
        }
    }

    #[test]
    fn only_served_methods_are_labelled_by_their_path() {
        for served in [
            "/auth.v1.AuthService/Login",
            "/auth.v1.AuthService/IntrospectToken",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(method_label(served), served);
        }
        for made_up in [
            "/auth.v1.AuthService/Nope",
            "/auth.v1.AuthService/login",
            "/auth.v1.AuthService/Login/",
            "/grpc.health.v1.Health/List",
            "/",
            "",
        ] {
            assert_eq!(method_label(made_up), UNKNOWN_METHOD, "{made_up}");
        }
    }

    /// The fixed set is exactly what the served descriptors define, so a
    /// new RPC, or a library that adds one, cannot go unlabelled.
    #[test]
    fn the_labels_are_the_methods_of_every_served_descriptor() {
        use prost::Message;
        let mut defined: Vec<String> = [
            proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .flat_map(|bytes| {
            prost_types::FileDescriptorSet::decode(bytes)
                .expect("descriptors")
                .file
        })
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.into_iter().flat_map(move |service| {
                let prefix = format!("/{package}.{}/", service.name());
                service
                    .method
                    .into_iter()
                    .map(move |method| format!("{prefix}{}", method.name()))
            })
        })
        .collect();
        defined.sort();
        defined.dedup();
        let mut labelled: Vec<&str> = proto::METHODS
            .iter()
            .chain(&INFRASTRUCTURE_METHODS)
            .copied()
            .collect();
        labelled.sort_unstable();
        assert_eq!(defined, labelled);
    }

    #[test]
    fn logged_paths_are_cut_at_a_character_boundary() {
        let long = format!("/{}", "x".repeat(500));
        assert_eq!(truncated(&long).len(), MAX_LOGGED_PATH_BYTES);
        assert_eq!(truncated("/short"), "/short");
        let wide = "é".repeat(100);
        assert_eq!(truncated(&wide), "é".repeat(MAX_LOGGED_PATH_BYTES / 2));
        let odd = format!("x{wide}");
        assert_eq!(truncated(&odd).len(), MAX_LOGGED_PATH_BYTES - 1);
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log sink").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_json_line_per_call_carries_the_span_fields() {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer({
                let log = log.clone();
                move || log.clone()
            })
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let unauthenticated = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(tonic::Status::unauthenticated("no").into_http::<()>())
        });
        let metrics = Metrics::new();
        let service = AccessLogLayer::new(metrics.clone()).layer(unauthenticated);
        let call = |path: &str| {
            Request::builder()
                .uri(path)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(REQUEST_ID, "req-1")
                .body(())
                .expect("request")
        };
        let response = service
            .clone()
            .oneshot(call("/auth.v1.AuthService/GetMe"))
            .await
            .expect("response");
        assert_eq!(response.headers()[REQUEST_ID], "req-1");
        let made_up = format!("/auth.v1.AuthService/{}", "A".repeat(1000));
        service.oneshot(call(&made_up)).await.expect("response");

        let log = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        let line = &lines[0];
        assert_eq!(line["message"], "call");
        assert_eq!(line["code"], "UNAUTHENTICATED");
        assert!(line["latency_us"].is_u64(), "{line}");
        assert_eq!(line["span"]["name"], "call");
        assert_eq!(line["span"]["method"], "/auth.v1.AuthService/GetMe");
        assert_eq!(line["span"]["request_id"], "req-1");
        assert_eq!(
            line["span"].get("path"),
            None,
            "served methods need no path"
        );
        let unknown = &lines[1]["span"];
        assert_eq!(unknown["method"], UNKNOWN_METHOD);
        assert_eq!(unknown["path"], &made_up[..MAX_LOGGED_PATH_BYTES]);
        let counted = metrics.encode().expect("metrics");
        for series in [
            r#"authd_grpc_requests_total{method="/auth.v1.AuthService/GetMe",code="UNAUTHENTICATED"} 1"#,
            r#"authd_grpc_requests_total{method="unknown",code="UNAUTHENTICATED"} 1"#,
        ] {
            assert!(counted.contains(series), "{counted}");
        }
        assert!(!counted.contains("AAAA"), "{counted}");
    }
}
