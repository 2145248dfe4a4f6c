//! Accepting authd access tokens in other Rust
//! services, verified offline against the keys authd publishes, with exactly
//! the checks authd applies: authd verifies its own tokens with this crate.
//!
//! A tonic service that requires a valid token on every method:
//!
//! ```no_run
//! use authd_verify::{Claims, JwksVerifier, RequireBearerLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "http://127.0.0.1:50051/.well-known/jwks.json".parse()?;
//! let verifier = JwksVerifier::new(url, "authd", "authd").await?;
//! let layer = RequireBearerLayer::new(verifier);
//! // tower::ServiceBuilder::new().layer(layer).service(MyServiceServer::new(..)),
//! // then each handler reads the caller's `Claims` from the request:
//! // `request.extensions().get::<Claims>()`.
//! # Ok(())
//! # }
//! ```
//!
//! A method that only some callers may use needs one more line: a valid
//! token without the role gets `PERMISSION_DENIED`, naming the role.
//!
//! ```no_run
//! # use authd_verify::{JwksVerifier, RequireBearerLayer};
//! # fn layer(verifier: std::sync::Arc<JwksVerifier>) -> RequireBearerLayer<JwksVerifier> {
//! RequireBearerLayer::new(verifier).require_role("/shop.v1.Orders/Refund", "billing:write")
//! # }
//! ```
//!
//! Roles are those the user or service account had when the token was
//! issued ([`Claims::roles`], [`Claims::has_role`]). A service account's
//! token has a `client_id` and no session ([`Claims::is_service`]).
//!
//! Verification needs no call to authd per request, so on its own it cannot
//! see a session that was revoked there: a token stays acceptable until it
//! expires. [`Revocations`] closes that gap: it watches authd's stream of
//! ended sessions with a service account's API key, and the verifier it
//! wraps refuses their tokens within about a second, still offline:
//!
//! ```no_run
//! # use authd_verify::{JwksVerifier, RequireBearerLayer, Revocations};
//! # async fn run(verifier: std::sync::Arc<JwksVerifier>) {
//! let authd = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let revocations = Revocations::builder(authd, "authd_sk_...").start();
//! let layer = RequireBearerLayer::new(revocations.wrap(verifier));
//! # }
//! ```
#![deny(missing_docs)]

mod cache;
mod jwks;
mod layer;
mod revocations;
mod token;

pub use cache::{TOKEN_CACHE_CAPACITY, TokenCache};
pub use jsonwebtoken::jwk::JwkSet;
pub use jwks::{JwksVerifier, MIN_REFETCH_INTERVAL, VerifyError};
pub use layer::{
    INVALID_TOKEN, RequireBearer, RequireBearerLayer, SECOND_FACTOR_REQUIRED, TokenVerifier,
    bearer_token,
};
pub use reqwest::Url;
pub use revocations::{
    DEFAULT_STALE_AFTER, Fallback, Revocations, RevocationsBuilder, WithRevocations,
};
pub use token::{
    Claims, InvalidToken, Keys, LEEWAY, TOKEN_TYPE, decoding_keys, ed25519_jwk, parse_header,
    validation, verify_with,
};
