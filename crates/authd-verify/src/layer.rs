//! The tower layer that requires a valid bearer token.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response, header::AUTHORIZATION};
use tonic::{Code, Status, body::Body, server::NamedService};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::Claims;

/// The message of the `UNAUTHENTICATED` status a request without a valid
/// token gets, the same for every reason.
pub const INVALID_TOKEN: &str = "missing or invalid access token";

/// The `reason` of the `google.rpc.ErrorInfo` in the `PERMISSION_DENIED`
/// status a token without a second factor gets from a method that requires
/// one (see [`RequireBearerLayer::require_second_factor`]): the client logs
/// in again with its second factor and retries.
pub const SECOND_FACTOR_REQUIRED: &str = "SECOND_FACTOR_REQUIRED";

/// Whatever checks access tokens for [`RequireBearerLayer`]: a
/// [`JwksVerifier`](crate::JwksVerifier), or authd's own keys in authd.
pub trait TokenVerifier: Send + Sync + 'static {
    /// The claims of `token` if it is valid, or `None`; why it is not is no
    /// business of the client that presented it.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>>;
}

/// A tower layer that lets a request through only with a valid
/// `authorization: Bearer <token>`, and puts the token's [`Claims`] in the
/// request extensions for the handler. Every other request is answered
/// `UNAUTHENTICATED` without reaching the service.
///
/// It sees the method path, which a tonic interceptor cannot, so public
/// methods are listed here and every other method, including ones added
/// later, needs a token.
pub struct RequireBearerLayer<V: ?Sized> {
    verifier: Arc<V>,
    public_methods: Arc<[String]>,
    roles: Arc<HashMap<String, Vec<String>>>,
    second_factor: Arc<[String]>,
}

impl<V: TokenVerifier + ?Sized> RequireBearerLayer<V> {
    /// Every method needs a token that `verifier` accepts.
    pub fn new(verifier: Arc<V>) -> Self {
        Self {
            verifier,
            public_methods: Arc::from([]),
            roles: Arc::default(),
            second_factor: Arc::from([]),
        }
    }

    /// Lets only tokens of a login with a second factor (`amr` holding
    /// `"otp"`) call these gRPC paths, in place of any listed before: step-up
    /// for what a stolen password alone must not reach. Any other valid
    /// token is answered `PERMISSION_DENIED` with a `google.rpc.ErrorInfo`
    /// whose reason is [`SECOND_FACTOR_REQUIRED`].
    ///
    /// ```no_run
    /// # use authd_verify::{JwksVerifier, RequireBearerLayer};
    /// # fn layer(verifier: std::sync::Arc<JwksVerifier>) -> RequireBearerLayer<JwksVerifier> {
    /// RequireBearerLayer::new(verifier).require_second_factor(["/shop.v1.Orders/Refund"])
    /// # }
    /// ```
    pub fn require_second_factor<I>(self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            second_factor: paths.into_iter().map(Into::into).collect(),
            ..self
        }
    }

    /// Lets these gRPC paths, like `/auth.v1.AuthService/Login`, through
    /// without a token, in place of any listed before.
    pub fn public_methods<I>(self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            public_methods: paths.into_iter().map(Into::into).collect(),
            ..self
        }
    }

    /// Lets a valid token call the gRPC path `method` only if it carries
    /// `role`; any other is answered `PERMISSION_DENIED`, naming the role.
    ///
    /// ```no_run
    /// # use authd_verify::{JwksVerifier, RequireBearerLayer};
    /// # fn layer(verifier: std::sync::Arc<JwksVerifier>) -> RequireBearerLayer<JwksVerifier> {
    /// RequireBearerLayer::new(verifier)
    ///     .require_role("/shop.v1.Orders/Refund", "billing:write")
    /// # }
    /// ```
    pub fn require_role(self, method: impl Into<String>, role: impl Into<String>) -> Self {
        self.require_any_role(method, [role])
    }

    /// Lets a valid token call the gRPC path `method` only if it carries at
    /// least one of `roles`.
    pub fn require_any_role<I>(self, method: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut required = HashMap::clone(&self.roles);
        required.insert(method.into(), roles.into_iter().map(Into::into).collect());
        Self {
            roles: Arc::new(required),
            ..self
        }
    }
}

impl<V: ?Sized> Clone for RequireBearerLayer<V> {
    fn clone(&self) -> Self {
        Self {
            verifier: Arc::clone(&self.verifier),
            public_methods: Arc::clone(&self.public_methods),
            roles: Arc::clone(&self.roles),
            second_factor: Arc::clone(&self.second_factor),
        }
    }
}

impl<S, V: ?Sized> Layer<S> for RequireBearerLayer<V> {
    type Service = RequireBearer<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearer {
            inner,
            verifier: Arc::clone(&self.verifier),
            public_methods: Arc::clone(&self.public_methods),
            roles: Arc::clone(&self.roles),
            second_factor: Arc::clone(&self.second_factor),
        }
    }
}

/// The service [`RequireBearerLayer`] wraps around `S`. It keeps `S`'s
/// [`NamedService`] name, so it can be added to tonic routes in its place.
pub struct RequireBearer<S, V: ?Sized> {
    inner: S,
    verifier: Arc<V>,
    public_methods: Arc<[String]>,
    roles: Arc<HashMap<String, Vec<String>>>,
    second_factor: Arc<[String]>,
}

impl<S: Clone, V: ?Sized> Clone for RequireBearer<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            verifier: Arc::clone(&self.verifier),
            public_methods: Arc::clone(&self.public_methods),
            roles: Arc::clone(&self.roles),
            second_factor: Arc::clone(&self.second_factor),
        }
    }
}

impl<S: NamedService, V: ?Sized> NamedService for RequireBearer<S, V> {
    const NAME: &'static str = S::NAME;
}

impl<S, V, B> Service<Request<B>> for RequireBearer<S, V>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    V: TokenVerifier + ?Sized,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The service polled ready goes with this request; its clone, not yet
        // polled, stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if self.public_methods.iter().any(|public| public == path) {
            return Box::pin(inner.call(request));
        }
        let verifier = Arc::clone(&self.verifier);
        let roles = Arc::clone(&self.roles);
        let needs_second_factor = self.second_factor.iter().any(|method| method == path);
        let token = bearer_token(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let claims = match token {
                Some(token) => verifier.verify(&token).await,
                None => None,
            };
            let Some(claims) = claims else {
                return Ok(Status::unauthenticated(INVALID_TOKEN).into_http());
            };
            if let Some(required) = roles.get(request.uri().path())
                && !required.iter().any(|role| claims.has_role(role))
            {
                return Ok(Status::permission_denied(missing_role(required)).into_http());
            }
            if needs_second_factor && !claims.has_second_factor() {
                return Ok(second_factor_required().into_http());
            }
            request.extensions_mut().insert(claims);
            inner.call(request).await
        })
    }
}

/// What a caller who logged in with a password alone is told.
fn second_factor_required() -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        "this method requires a login with a second factor",
        ErrorDetails::with_error_info(SECOND_FACTOR_REQUIRED, "authd", []),
    )
}

/// What a caller without any of `required` is told.
fn missing_role(required: &[String]) -> String {
    match required {
        [role] => format!("this method requires the role {role:?}"),
        _ => format!("this method requires one of the roles {required:?}"),
    }
}

/// The token of a single `authorization: Bearer <token>` entry. The scheme
/// is case-insensitive (RFC 9110); a repeated header is ambiguous and
/// refused, as is anything that is not visible ASCII.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
/// assert_eq!(authd_verify::bearer_token(&headers), Some("abc"));
/// ```
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
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
    use tonic::Code;

    use super::*;

    const REFUND: &str = "/shop.v1.Orders/Refund";
    const VOID: &str = "/shop.v1.Orders/Void";

    /// Accepts two tokens: "clerk" without roles, "accountant" with
    /// billing:write.
    struct TwoTokens;

    impl TokenVerifier for TwoTokens {
        fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
            let (roles, amr) = match token {
                "clerk" => (vec![], vec!["pwd".to_owned()]),
                "accountant" => (vec!["billing:write".to_owned()], vec![]),
                "clerk-otp" => (vec![], vec!["pwd".to_owned(), "otp".to_owned()]),
                _ => return Box::pin(async { None }),
            };
            let claims = Claims {
                iss: "authd".into(),
                sub: "0190a7b0-0000-7000-8000-000000000000".into(),
                aud: "authd".into(),
                exp: 0,
                iat: 0,
                nbf: 0,
                jti: "jti".into(),
                sid: None,
                roles,
                client_id: None,
                amr,
                email_verified: false,
            };
            Box::pin(async move { Some(claims) })
        }
    }

    /// Answers OK if the layer handed it the caller's claims.
    #[derive(Clone)]
    struct Handler;

    impl Service<Request<()>> for Handler {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<'static, Result<Response<Body>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            let status = match request.extensions().get::<Claims>() {
                Some(_) => Status::ok("handled"),
                None => Status::internal("no claims"),
            };
            Box::pin(async move { Ok(status.into_http()) })
        }
    }

    async fn call(path: &str, token: &str) -> Code {
        let mut service = RequireBearerLayer::new(Arc::new(TwoTokens))
            .require_role(REFUND, "billing:write")
            .require_second_factor([VOID])
            .layer(Handler);
        let request = Request::builder()
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .expect("request");
        let response = service.call(request).await.expect("infallible");
        Status::from_header_map(response.headers()).map_or(Code::Ok, |status| status.code())
    }

    #[tokio::test]
    async fn a_method_with_a_role_needs_a_token_carrying_it() {
        assert_eq!(call(REFUND, "clerk").await, Code::PermissionDenied);
        assert_eq!(call(REFUND, "accountant").await, Code::Ok);
        assert_eq!(call(REFUND, "forged").await, Code::Unauthenticated);
        assert_eq!(call("/shop.v1.Orders/List", "clerk").await, Code::Ok);
    }

    #[tokio::test]
    async fn a_step_up_method_needs_a_token_with_a_second_factor() {
        assert_eq!(call(VOID, "clerk").await, Code::PermissionDenied);
        assert_eq!(call(VOID, "accountant").await, Code::PermissionDenied);
        assert_eq!(call(VOID, "clerk-otp").await, Code::Ok);
        assert_eq!(call(VOID, "forged").await, Code::Unauthenticated);
        assert_eq!(call("/shop.v1.Orders/List", "clerk").await, Code::Ok);
    }

    fn headers(name: http::HeaderName, values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(&name, HeaderValue::from_bytes(value).expect("header"));
        }
        map
    }

    #[test]
    fn only_a_single_bearer_credential_is_taken() {
        let bearer =
            |values: &[&[u8]]| bearer_token(&headers(AUTHORIZATION, values)).map(str::to_owned);
        assert_eq!(bearer(&[b"Bearer abc"]).as_deref(), Some("abc"));
        assert_eq!(bearer(&[b"bEaReR  abc"]).as_deref(), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"Bearerabc",
            "Bearer é".as_bytes(),
        ] {
            assert_eq!(bearer(&[bad]), None, "{bad:?}");
        }
        assert_eq!(bearer(&[b"Bearer a", b"Bearer b"]), None);
        assert_eq!(bearer(&[]), None);
    }
}
