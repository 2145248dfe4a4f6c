//! The bearer-token gate in front of AuthService: the same
//! [`RequireBearerLayer`] other services use, with authd's own [`Tokens`] and
//! the RPCs that need no token.

use std::sync::Arc;

use authd_verify::{Claims, RequireBearer, RequireBearerLayer, TokenVerifier};
use futures_util::future::{BoxFuture, ready};
use tower::Layer;

use crate::core::tokens::Tokens;

const PUBLIC_METHODS: [&str; 8] = [
    "/auth.v1.AuthService/Signup",
    "/auth.v1.AuthService/RequestPasswordReset",
    "/auth.v1.AuthService/ResetPassword",
    "/auth.v1.AuthService/Login",
    "/auth.v1.AuthService/CompleteLogin",
    "/auth.v1.AuthService/Refresh",
    "/auth.v1.AuthService/IntrospectToken",
    "/auth.v1.AuthService/IssueServiceToken",
];

/// Requires a token on every AuthService method but the public ones.
#[derive(Clone)]
pub(crate) struct BearerAuthLayer(RequireBearerLayer<Tokens>);

impl BearerAuthLayer {
    /// Checks tokens against `tokens`' current keyring.
    pub(crate) fn new(tokens: Arc<Tokens>) -> Self {
        Self(RequireBearerLayer::new(tokens).public_methods(PUBLIC_METHODS))
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = RequireBearer<S, Tokens>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

impl TokenVerifier for Tokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
        Box::pin(ready(Tokens::verify(self, token).ok()))
    }
}
