//! The bearer-token gate in front of AuthService. It sees the method path,
//! which a tonic interceptor cannot, so public RPCs are listed here and every
//! other method, including ones added later, requires a token by default.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response, header::AUTHORIZATION};
use tonic::{Status, body::Body, server::NamedService};
use tower::{Layer, Service};

use crate::{error::INVALID_TOKEN, token::Tokens};

const PUBLIC_METHODS: [&str; 4] = [
    "/auth.v1.AuthService/Signup",
    "/auth.v1.AuthService/Login",
    "/auth.v1.AuthService/Refresh",
    "/auth.v1.AuthService/IntrospectToken",
];

#[derive(Clone)]
pub struct BearerAuthLayer {
    tokens: Arc<Tokens>,
}

impl BearerAuthLayer {
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self { tokens }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            tokens: Arc::clone(&self.tokens),
        }
    }
}

#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S: NamedService> NamedService for BearerAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if PUBLIC_METHODS.contains(&request.uri().path()) {
            return Either::Right(self.inner.call(request));
        }
        let claims = bearer_token(request.headers()).and_then(|t| self.tokens.verify(t).ok());
        match claims {
            Some(claims) => {
                request.extensions_mut().insert(claims);
                Either::Right(self.inner.call(request))
            }
            None => Either::Left(ready(
                Ok(Status::unauthenticated(INVALID_TOKEN).into_http()),
            )),
        }
    }
}

/// The token of a single `authorization: Bearer <token>` entry. The scheme
/// is case-insensitive (RFC 9110); a repeated header is ambiguous and
/// refused, as is anything that is not visible ASCII.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    let well_formed =
        scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ');
    well_formed.then_some(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("header"),
            );
        }
        map
    }

    #[test]
    fn only_a_single_bearer_credential_is_taken() {
        assert_eq!(bearer_token(&headers(&[b"Bearer abc"])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[b"bEaReR  abc"])), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"Bearerabc",
            "Bearer é".as_bytes(),
        ] {
            assert_eq!(bearer_token(&headers(&[bad])), None, "{bad:?}");
        }
        assert_eq!(bearer_token(&headers(&[b"Bearer a", b"Bearer b"])), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
