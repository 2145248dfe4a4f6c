//! The outermost layer of every call: a request id, a `call` span, the
//! per-call metrics and one log line per call.
//!
//! It wraps every route, the bearer gate included, so calls refused before
//! any handler runs still get their id echoed, their line and their count.

use std::{
    task::{Context, Poll},
    time::Instant,
};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;

/// The metadata that carries a call's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// Longer ids are replaced: the id lands in every log line of the call.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Adds [`AccessLog`] around a service, recording into `metrics`.
#[derive(Clone)]
pub struct AccessLogLayer {
    metrics: Metrics,
}

impl AccessLogLayer {
    /// Counts the calls it sees in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
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
pub struct AccessLog<S> {
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
        let method = request.uri().path().to_owned();
        let grpc = is_grpc(request.headers());
        let request_id = request_id(request.headers());
        // Handlers and anything they log see the same id the client gets.
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        let span = tracing::info_span!(
            "call",
            %method,
            peer = crate::listener::peer(request.extensions()).map(tracing::field::display),
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
                            metrics.record_call(&method, code, elapsed);
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

/// gRPC and gRPC-Web calls; anything else is plain HTTP (the JWKS, say),
/// which has an HTTP status but no gRPC code.
fn is_grpc(headers: &HeaderMap) -> bool {
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
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
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
        let request = Request::builder()
            .uri("/auth.v1.AuthService/GetMe")
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(REQUEST_ID, "req-1")
            .body(())
            .expect("request");
        let response = service.oneshot(request).await.expect("response");
        assert_eq!(response.headers()[REQUEST_ID], "req-1");

        let log = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        let line = &lines[0];
        assert_eq!(line["message"], "call");
        assert_eq!(line["code"], "UNAUTHENTICATED");
        assert!(line["latency_us"].is_u64(), "{line}");
        assert_eq!(line["span"]["name"], "call");
        assert_eq!(line["span"]["method"], "/auth.v1.AuthService/GetMe");
        assert_eq!(line["span"]["request_id"], "req-1");
        let counted = metrics.encode().expect("metrics");
        assert!(
            counted.contains(
                r#"authd_grpc_requests_total{method="/auth.v1.AuthService/GetMe",code="UNAUTHENTICATED"} 1"#
            ),
            "{counted}"
        );
    }
}
