//! tonic answers a request message it cannot decode with INTERNAL, and one
//! over the size limit with OUT_OF_RANGE, both with library text such as
//! `failed to decode Protobuf message: buffer underflow`. Those are the
//! client's mistakes, so every service on the port answers them here with
//! the codes and fixed messages authd documents, before the access log
//! records the code.

use http::Response;
use tonic::{Code, Status};

/// Requests are a few short strings; anything bigger is refused before it
/// is decoded, on every service.
pub(crate) const MAX_REQUEST_BYTES: usize = 16 * 1024;

pub(crate) const MALFORMED: &str = "request message is malformed";
pub(crate) const TOO_LARGE: &str = "request message is larger than 16 KiB";

/// How tonic's messages for undecodable requests begin: protobuf that does
/// not decode, a truncated or wrongly flagged frame, no message at all.
const UNDECODABLE: [&str; 5] = [
    "failed to decode Protobuf message",
    "protocol error:",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "Error decompressing",
];
const OVERSIZED: &str = "Error, decoded message length too large";

/// Rewrites the status of a trailers-only response (how a call that fails
/// before its first response message is answered) when it is tonic's
/// answer to a malformed request. Anything else passes untouched.
pub(crate) fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    let replacement = match status.code() {
        Code::Internal if UNDECODABLE.iter().any(|start| message.starts_with(start)) => {
            Status::invalid_argument(MALFORMED)
        }
        Code::OutOfRange if message.starts_with(OVERSIZED) => Status::resource_exhausted(TOO_LARGE),
        _ => return response,
    };
    let headers = response.headers_mut();
    headers.remove("grpc-status-details-bin");
    if replacement.add_header(headers).is_err() {
        tracing::error!("cannot encode a fixed status");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: Status) -> Status {
        let response = rewrite(status.into_http::<()>());
        Status::from_header_map(response.headers()).expect("a status")
    }

    #[test]
    fn tonic_decoding_failures_become_fixed_client_errors() {
        let decoded = answered(Status::internal(
            "failed to decode Protobuf message: SignupRequest.email: invalid string value: \
             data is not UTF-8 encoded",
        ));
        assert_eq!(
            (decoded.code(), decoded.message()),
            (Code::InvalidArgument, MALFORMED)
        );
        let oversized = answered(Status::out_of_range(
            "Error, decoded message length too large: found 3145728 bytes, the limit is: 16384 \
             bytes",
        ));
        assert_eq!(
            (oversized.code(), oversized.message()),
            (Code::ResourceExhausted, TOO_LARGE)
        );
    }

    #[test]
    fn other_statuses_pass_untouched() {
        for status in [
            Status::internal("internal error"),
            Status::unauthenticated("missing or invalid access token"),
            Status::out_of_range("something else"),
        ] {
            let (code, message) = (status.code(), status.message().to_owned());
            let passed = answered(status);
            assert_eq!((passed.code(), passed.message()), (code, message.as_str()));
        }
    }
}
