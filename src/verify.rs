//! Accepting authd access tokens in other Rust services, verified offline
//! against the keys authd publishes, with exactly the checks authd applies.
//!
//! ```no_run
//! use authd::verify::{JwksVerifier, RequireBearerLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "http://127.0.0.1:50051/.well-known/jwks.json".parse()?;
//! let verifier = JwksVerifier::new(url, "authd", "authd").await?;
//! let layer = RequireBearerLayer::new(verifier);
//! // tower::ServiceBuilder::new().layer(layer).service(MyServiceServer::new(..)),
//! // then read `authd::token::Claims` from the request extensions.
//! # Ok(())
//! # }
//! ```
//!
//! Verification needs no call to authd per request, so it cannot see a
//! session that was revoked there: a token stays acceptable until it expires.
//! A service that must honour logout at once calls authd's `IntrospectToken`.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::{BoxFuture, ready};
use http::{
    HeaderMap, HeaderValue, Request, Response, StatusCode, Uri,
    header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL},
    uri::Scheme,
};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{DecodingKey, Validation};
use tokio::sync::Mutex;
use tokio_rustls::rustls::{
    ClientConfig, RootCertStore,
    crypto::ring,
    pki_types::{CertificateDer, pem::PemObject},
};
use tonic::{Status, body::Body, server::NamedService};
use tower::{Layer, Service};

use crate::{
    api::status::INVALID_TOKEN,
    token::{self, Claims, JwkSet, Tokens},
};

/// The shortest time between two fetches caused by tokens whose `kid` is
/// unknown, so that made-up key ids cannot make a service hammer authd.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// authd's JWKS holds a few keys in well under 2 KiB.
const MAX_JWKS_BYTES: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// For a JWKS served without a max-age.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// A max-age of 0 would mean a fetch per request, and one of days would
/// hide a key rotation for days.
const MAX_AGE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Whatever checks access tokens for [`RequireBearerLayer`]: authd's own
/// [`Tokens`], or a [`JwksVerifier`] in another service.
pub trait TokenVerifier: Send + Sync + 'static {
    /// The claims of `token` if it is valid, or `None`; why it is not is no
    /// business of the client that presented it.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>>;
}

impl TokenVerifier for Tokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
        Box::pin(ready(Tokens::verify(self, token).ok()))
    }
}

/// Why a [`JwksVerifier`] could not get authd's keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The URL is not `http://host/...` or `https://host/...`.
    #[error("the JWKS URL must be an absolute http:// or https:// URL, not {0}")]
    Url(Uri),
    /// The CA certificates given for an `https://` JWKS cannot be used.
    #[error("unusable CA certificates for the JWKS: {0}")]
    Ca(String),
    /// Connecting, sending or reading failed, or the body was over 64 KiB.
    #[error("cannot fetch the JWKS")]
    Http(#[source] BoxError),
    /// The endpoint answered something other than 200 OK.
    #[error("the JWKS endpoint answered {0}")]
    Status(StatusCode),
    /// The whole fetch took longer than 5 seconds.
    #[error("the JWKS did not arrive within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// The body is not a JWKS.
    #[error("the JWKS is not a JSON Web Key Set")]
    Json(#[from] serde_json::Error),
    /// The JWKS has no Ed25519 signing key, so nothing could be verified.
    #[error("the JWKS holds no Ed25519 signing key")]
    NoKeys,
}

/// Verifies authd access tokens against authd's JWKS, fetched over
/// `https://` (or `http://` on a trusted network) and cached by `kid`.
///
/// The keys are fetched again once the `Cache-Control: max-age` they came
/// with has passed, or when a token names an unknown `kid`, at most once per
/// [`MIN_REFETCH_INTERVAL`]. A failed fetch is logged and the keys already
/// known stay in use.
pub struct JwksVerifier {
    url: Uri,
    client: HttpClient,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch began. It is held for the whole fetch, so
    /// concurrent callers wait for that one instead of starting their own.
    last_fetch: Mutex<Instant>,
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fresh_until: Instant,
}

impl JwksVerifier {
    /// Fetches the JWKS at `jwks_url` (authd serves it at
    /// [`JWKS_PATH`](crate::api::well_known::JWKS_PATH) on its gRPC address)
    /// and accepts tokens for `issuer` and `audience` only. An `https://`
    /// JWKS must present a certificate the system trusts. Fails if the first
    /// fetch does: a service that cannot verify anything should not start.
    pub async fn new(
        jwks_url: Uri,
        issuer: &str,
        audience: &str,
    ) -> Result<Arc<Self>, VerifyError> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Self::start(jwks_url, issuer, audience, roots).await
    }

    /// Like [`JwksVerifier::new`], but an `https://` JWKS must present a
    /// certificate signed by one of the PEM CA certificates in `ca_pem`,
    /// the usual case for a private PKI between services.
    pub async fn with_ca(
        jwks_url: Uri,
        ca_pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Arc<Self>, VerifyError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| VerifyError::Ca(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| VerifyError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(VerifyError::Ca("no certificate in the PEM".into()));
        }
        Self::start(jwks_url, issuer, audience, roots).await
    }

    async fn start(
        jwks_url: Uri,
        issuer: &str,
        audience: &str,
        roots: RootCertStore,
    ) -> Result<Arc<Self>, VerifyError> {
        let scheme_ok = [Some(&Scheme::HTTP), Some(&Scheme::HTTPS)].contains(&jwks_url.scheme());
        if !scheme_ok || jwks_url.host().is_none() {
            return Err(VerifyError::Url(jwks_url));
        }
        let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| VerifyError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let started = Instant::now();
        let (keys, max_age) = fetch(&client, &jwks_url).await?;
        Ok(Arc::new(Self {
            url: jwks_url,
            client,
            validation: token::validation(issuer, audience),
            keys: RwLock::new(Arc::new(KeySet {
                keys,
                fresh_until: started + max_age,
            })),
            last_fetch: Mutex::new(started),
        }))
    }

    /// The claims of `token` if it is valid; see [`token::verify_with`].
    pub async fn claims(&self, token: &str) -> Option<Claims> {
        let kid = token::parse_header(token).ok()?.kid?;
        let keys = self.keys_for(&kid).await;
        token::verify_with(token, &keys.keys, &self.validation).ok()
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The keys to check a token signed by `kid` against, fetched anew first
    /// if they are stale or lack `kid` and a fetch is due.
    async fn keys_for(&self, kid: &str) -> Arc<KeySet> {
        let current = self.current();
        let known = current.keys.contains_key(kid);
        if known && Instant::now() < current.fresh_until {
            return current;
        }
        // Stale keys still verify, so one caller refreshes them while the
        // rest go on. A caller with an unknown kid waits: the fetch under way
        // may bring it.
        let mut last_fetch = if known {
            match self.last_fetch.try_lock() {
                Ok(guard) => guard,
                Err(_) => return current,
            }
        } else {
            self.last_fetch.lock().await
        };
        let current = self.current();
        let now = Instant::now();
        let stale = now >= current.fresh_until;
        let unknown_and_due = !current.keys.contains_key(kid)
            && now.duration_since(*last_fetch) >= MIN_REFETCH_INTERVAL;
        if stale || unknown_and_due {
            *last_fetch = now;
            let fetched = match fetch(&self.client, &self.url).await {
                Ok((keys, max_age)) => KeySet {
                    keys,
                    fresh_until: now + max_age,
                },
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        url = %self.url,
                        "cannot refresh authd's JWKS: keeping the keys already known",
                    );
                    KeySet {
                        keys: current.keys.clone(),
                        fresh_until: now + MIN_REFETCH_INTERVAL,
                    }
                }
            };
            *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fetched);
        }
        self.current()
    }
}

impl TokenVerifier for JwksVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<Claims>> {
        Box::pin(self.claims(token))
    }
}

/// The usable keys of the JWKS at `url` and how long they may be cached.
async fn fetch(
    client: &HttpClient,
    url: &Uri,
) -> Result<(HashMap<String, DecodingKey>, Duration), VerifyError> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = url.clone();
    request.headers_mut().insert(
        ACCEPT,
        HeaderValue::from_static("application/jwk-set+json, application/json"),
    );
    let download = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| VerifyError::Http(error.into()))?;
        if response.status() != StatusCode::OK {
            return Err(VerifyError::Status(response.status()));
        }
        let max_age = max_age(response.headers());
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(VerifyError::Http)?;
        Ok((body.to_bytes(), max_age))
    };
    let (body, max_age) = tokio::time::timeout(FETCH_TIMEOUT, download)
        .await
        .map_err(|_| VerifyError::Timeout)??;
    let keys = serde_json::from_slice::<JwkSet>(&body)?.decoding_keys();
    if keys.is_empty() {
        return Err(VerifyError::NoKeys);
    }
    Ok((keys, max_age))
}

/// The `max-age` of a `Cache-Control` header, within [`MAX_AGE_RANGE`].
fn max_age(headers: &HeaderMap) -> Duration {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, seconds) = directive.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            seconds.trim().trim_matches('"').parse().ok()
        })
        .map_or(DEFAULT_MAX_AGE, Duration::from_secs)
        .clamp(MAX_AGE_RANGE.0, MAX_AGE_RANGE.1)
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
}

impl<V: TokenVerifier + ?Sized> RequireBearerLayer<V> {
    /// Every method needs a token that `verifier` accepts.
    pub fn new(verifier: Arc<V>) -> Self {
        Self {
            verifier,
            public_methods: Arc::from([]),
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
}

impl<V: ?Sized> Clone for RequireBearerLayer<V> {
    fn clone(&self) -> Self {
        Self {
            verifier: Arc::clone(&self.verifier),
            public_methods: Arc::clone(&self.public_methods),
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
        }
    }
}

/// The service [`RequireBearerLayer`] wraps around `S`. It keeps `S`'s
/// [`NamedService`] name, so it can be added to tonic routes in its place.
pub struct RequireBearer<S, V: ?Sized> {
    inner: S,
    verifier: Arc<V>,
    public_methods: Arc<[String]>,
}

impl<S: Clone, V: ?Sized> Clone for RequireBearer<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            verifier: Arc::clone(&self.verifier),
            public_methods: Arc::clone(&self.public_methods),
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
        let token = bearer_token(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let claims = match token {
                Some(token) => verifier.verify(&token).await,
                None => None,
            };
            match claims {
                Some(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                None => Ok(Status::unauthenticated(INVALID_TOKEN).into_http()),
            }
        })
    }
}

/// The token of a single `authorization: Bearer <token>` entry. The scheme
/// is case-insensitive (RFC 9110); a repeated header is ambiguous and
/// refused, as is anything that is not visible ASCII.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use secrecy::ExposeSecret;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use uuid::Uuid;

    use super::*;
    use crate::token::{KeyPair, Keyring};

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

    #[test]
    fn max_age_is_read_and_kept_in_range() {
        let age = |values: &[&[u8]]| max_age(&headers(CACHE_CONTROL, values)).as_secs();
        assert_eq!(age(&[b"public, max-age=30"]), 30);
        assert_eq!(age(&[b"public", b"Max-Age=\"45\""]), 45);
        assert_eq!(age(&[b"public, max-age=0"]), 1);
        assert_eq!(age(&[b"max-age=31536000"]), 3600);
        assert_eq!(age(&[b"max-age=soon"]), 60);
        assert_eq!(age(&[]), 60);
    }

    fn tokens(key: KeyPair) -> Tokens {
        let keyring = Keyring::new(key, &[]).expect("keyring");
        Tokens::new(keyring, "iss".into(), "aud".into(), Duration::from_secs(60))
    }

    /// A JWKS endpoint that serves whatever `jwks` holds and counts requests.
    struct FakeAuthd {
        url: Uri,
        jwks: Arc<RwLock<String>>,
        fetches: Arc<AtomicUsize>,
    }

    impl FakeAuthd {
        async fn start(jwks: &JwkSet) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().expect("addr")
            );
            let fake = Self {
                url: url.parse().expect("url"),
                jwks: Arc::new(RwLock::new(serde_json::to_string(jwks).expect("json"))),
                fetches: Arc::default(),
            };
            let (jwks, fetches) = (Arc::clone(&fake.jwks), Arc::clone(&fake.fetches));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, Arc::clone(&jwks), Arc::clone(&fetches)));
                }
            });
            fake
        }

        fn publish(&self, jwks: &JwkSet) {
            *self.jwks.write().expect("lock") = serde_json::to_string(jwks).expect("json");
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    /// HTTP/1.1 with keep-alive, just enough for bodiless GETs.
    async fn serve(mut stream: TcpStream, jwks: Arc<RwLock<String>>, fetches: Arc<AtomicUsize>) {
        let mut received = Vec::new();
        let mut buffer = [0; 1024];
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..read]);
            while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                received.drain(..end + 4);
                fetches.fetch_add(1, Ordering::SeqCst);
                let body = jwks.read().expect("lock").clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: public, max-age=600\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let (old, new) = (
            KeyPair::generate().expect("key"),
            KeyPair::generate().expect("key"),
        );
        let fake = FakeAuthd::start(&JwkSet {
            keys: vec![old.public_jwk()],
        })
        .await;
        let verifier = JwksVerifier::new(fake.url.clone(), "iss", "aud")
            .await
            .expect("verifier");
        assert_eq!(fake.fetches(), 1);

        let old = tokens(old)
            .issue(Uuid::now_v7(), Uuid::now_v7())
            .expect("issue");
        assert!(verifier.claims(old.token.expose_secret()).await.is_some());
        fake.publish(&JwkSet {
            keys: vec![new.public_jwk()],
        });
        let new = tokens(new)
            .issue(Uuid::now_v7(), Uuid::now_v7())
            .expect("issue");
        let new = new.token.expose_secret();

        // The first fetch was just now, so the new kid has to wait.
        assert!(verifier.claims(new).await.is_none());
        assert_eq!(fake.fetches(), 1);

        *verifier.last_fetch.lock().await = Instant::now()
            .checked_sub(MIN_REFETCH_INTERVAL)
            .expect("a monotonic clock this far along");
        let verifications = (0..8).map(|_| verifier.claims(new));
        let claims = futures_util::future::join_all(verifications).await;
        assert!(claims.iter().all(Option::is_some));
        assert_eq!(fake.fetches(), 2);

        let made_up = tokens(KeyPair::generate().expect("key"))
            .issue(Uuid::now_v7(), Uuid::now_v7())
            .expect("issue");
        for _ in 0..8 {
            assert!(
                verifier
                    .claims(made_up.token.expose_secret())
                    .await
                    .is_none()
            );
        }
        assert_eq!(fake.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failed_refetch_keeps_the_known_keys() {
        let key = KeyPair::generate().expect("key");
        let fake = FakeAuthd::start(&JwkSet {
            keys: vec![key.public_jwk()],
        })
        .await;
        let verifier = JwksVerifier::new(fake.url.clone(), "iss", "aud")
            .await
            .expect("verifier");
        let issued = tokens(key)
            .issue(Uuid::now_v7(), Uuid::now_v7())
            .expect("issue");

        fake.publish(&JwkSet::default());
        let stale = Arc::new(KeySet {
            keys: verifier.current().keys.clone(),
            fresh_until: Instant::now(),
        });
        *verifier.keys.write().expect("lock") = stale;
        assert!(
            verifier
                .claims(issued.token.expose_secret())
                .await
                .is_some()
        );
        assert_eq!(fake.fetches(), 2);
        assert!(verifier.current().fresh_until > Instant::now());
    }

    #[tokio::test]
    async fn only_absolute_http_and_https_urls_are_accepted() {
        for url in [
            "ftp://authd/.well-known/jwks.json",
            "/.well-known/jwks.json",
        ] {
            let result = JwksVerifier::new(url.parse().expect("uri"), "iss", "aud").await;
            assert!(matches!(result, Err(VerifyError::Url(_))), "{url}");
        }
    }
}
