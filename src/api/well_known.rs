//! Plain HTTP endpoints on the gRPC address, for services that verify access
//! tokens themselves: the JWKS and a minimal OpenID discovery document.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::token::Tokens;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[derive(Clone)]
struct WellKnown {
    tokens: Arc<Tokens>,
    cache_control: String,
}

/// Adds the well-known documents to the gRPC routes. `max_age` is how long
/// a client may cache the key set. Keys are published two refresh intervals
/// before they sign anything, so a cache that honours a max-age of one
/// interval always knows a key before it meets a token.
pub fn add_to(grpc: Router, tokens: Arc<Tokens>, max_age: Duration) -> Router {
    let documents = Router::new()
        .route(JWKS_PATH, get(jwks))
        .route(DISCOVERY_PATH, get(discovery))
        .with_state(WellKnown {
            tokens,
            cache_control: format!("public, max-age={}", max_age.as_secs()),
        });
    grpc.merge(documents).fallback(not_found)
}

/// An unknown path: UNIMPLEMENTED for a gRPC client, as tonic would answer,
/// and a plain 404 for anything else.
async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
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
    jwks_uri: String,
    id_token_signing_alg_values_supported: [&'a str; 1],
}

/// The JWKS address is the issuer's when the issuer is a URL, as OpenID
/// Discovery expects; otherwise it is this server as the client reached it.
async fn discovery(State(state): State<WellKnown>, request: Request) -> Response {
    let issuer = state.tokens.issuer();
    let base = if issuer.starts_with("https://") || issuer.starts_with("http://") {
        issuer.trim_end_matches('/').to_owned()
    } else {
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|host| host.to_str().ok())
                    .map(str::to_owned)
            });
        let Some(host) = host else {
            return (StatusCode::BAD_REQUEST, "a Host header is required").into_response();
        };
        format!("http://{host}")
    };
    let document = Discovery {
        issuer,
        jwks_uri: format!("{base}{JWKS_PATH}"),
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
