//! The bearer-token gate in front of AuthService: the same
//! [`RequireBearerLayer`] other services use, with authd's own [`Tokens`] and
//! the RPCs that need no token.

use std::sync::Arc;

use tower::Layer;

use crate::{
    token::Tokens,
    verify::{RequireBearer, RequireBearerLayer},
};

const PUBLIC_METHODS: [&str; 4] = [
    "/auth.v1.AuthService/Signup",
    "/auth.v1.AuthService/Login",
    "/auth.v1.AuthService/Refresh",
    "/auth.v1.AuthService/IntrospectToken",
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
