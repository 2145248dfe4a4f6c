//! Plain HTTP endpoints on the gRPC address, for services that verify access
//! tokens themselves: the JWKS and a minimal OpenID discovery document.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use url::Url;

use crate::core::tokens::Tokens;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[derive(Clone)]
struct WellKnown {
    tokens: Arc<Tokens>,
    cache_control: String,
    jwks_uri: Option<Arc<str>>,
}

/// Where discovery says the JWKS is, decided from configuration alone:
/// request headers are the client's to choose, and a shared cache would
/// hand a forged `Host` back to everyone. In order: `public_url`; the
/// issuer when it is an http(s) URL, as OpenID Discovery expects; else the
/// address authd is bound to, with `https` when it serves TLS. `None` when
/// that address is a wildcard, which no client can reach: discovery is
/// then off (404), and the log says how to turn it on.
pub(crate) fn jwks_uri(
    public_url: Option<&Url>,
    issuer: &str,
    bound: SocketAddr,
    tls: bool,
) -> Option<String> {
    let base = if let Some(url) = public_url {
        url.as_str().trim_end_matches('/').to_owned()
    } else if Url::parse(issuer).is_ok_and(|url| is_public_base(&url)) {
        issuer.trim_end_matches('/').to_owned()
    } else if bound.ip().is_unspecified() {
        tracing::warn!(
            address = %bound,
            "no discovery document: set AUTHD_PUBLIC_URL (or an http(s) AUTHD_ISSUER) to the \
             address clients reach authd at"
        );
        return None;
    } else {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{bound}")
    };
    Some(format!("{base}{JWKS_PATH}"))
}

/// An absolute http(s) URL that can prefix a path: a host, and no
/// credentials, query or fragment.
pub(crate) fn is_public_base(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
}

/// Adds the well-known documents to the gRPC routes. `max_age` is how long
/// a client may cache the key set. Keys are published two refresh intervals
/// before they sign anything, so a cache that honours a max-age of one
/// interval always knows a key before it meets a token. Discovery is served
/// only with a `jwks_uri` (see [`jwks_uri`]).
pub(crate) fn add_to(
    grpc: Router,
    tokens: Arc<Tokens>,
    max_age: Duration,
    jwks_uri: Option<String>,
) -> Router {
    let mut documents = Router::new().route(JWKS_PATH, get(jwks));
    if jwks_uri.is_some() {
        documents = documents.route(DISCOVERY_PATH, get(discovery));
    }
    let documents = documents.with_state(WellKnown {
        tokens,
        cache_control: format!("public, max-age={}", max_age.as_secs()),
        jwks_uri: jwks_uri.map(Arc::from),
    });
    grpc.merge(documents).fallback(not_found)
}

/// An unknown path: UNIMPLEMENTED for a gRPC client, as tonic would answer,
/// and a plain 404 for anything else.
async fn not_found(request: Request) -> Response {
    if super::access_log::is_grpc(request.headers()) {
        tonic::Status::unimplemented("no such method").into_http()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn jwks(State(state): State<WellKnown>) -> Response {
    json(
        &state.tokens.jwks(),
        "application/jwk-set+json",
        &state.cache_control,
    )
}

#[derive(Serialize)]
struct Discovery<'a> {
    issuer: &'a str,
    jwks_uri: &'a str,
    id_token_signing_alg_values_supported: [&'a str; 1],
}

async fn discovery(State(state): State<WellKnown>) -> Response {
    let Some(jwks_uri) = state.jwks_uri.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let document = Discovery {
        issuer: state.tokens.issuer(),
        jwks_uri,
        id_token_signing_alg_values_supported: ["EdDSA"],
    };
    json(&document, "application/json", &state.cache_control)
}

fn json(body: &impl Serialize, content_type: &'static str, cache_control: &str) -> Response {
    match serde_json::to_string(body) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, cache_control),
            ],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot serialize a well-known document");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwks_uri_comes_from_configuration_in_order() {
        let bound: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let public = Url::parse("https://auth.example.com/authd/").expect("url");
        let uri = |public, issuer, bound, tls| jwks_uri(public, issuer, bound, tls);
        assert_eq!(
            uri(Some(&public), "https://issuer.example", bound, false).as_deref(),
            Some("https://auth.example.com/authd/.well-known/jwks.json")
        );
        assert_eq!(
            uri(None, "https://issuer.example/", bound, false).as_deref(),
            Some("https://issuer.example/.well-known/jwks.json")
        );
        assert_eq!(
            uri(None, "authd", bound, true).as_deref(),
            Some("https://127.0.0.1:8443/.well-known/jwks.json")
        );
        assert_eq!(
            uri(None, "https://issuer.example/?q#f", bound, false).as_deref(),
            Some("http://127.0.0.1:8443/.well-known/jwks.json"),
            "an issuer that cannot prefix a path is not used"
        );
        let wildcard: SocketAddr = "[::]:50051".parse().expect("addr");
        assert_eq!(uri(None, "authd", wildcard, true), None);
    }
}
