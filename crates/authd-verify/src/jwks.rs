//! The verifier that fetches and caches authd's public keys.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use headers::{CacheControl, HeaderMapExt};
use http::{HeaderMap, StatusCode, header::ACCEPT};
use jsonwebtoken::{Validation, jwk::JwkSet};
use reqwest::{Client, Url, redirect};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::ring,
    pki_types::{CertificateDer, pem::PemObject},
};
use tokio::sync::Mutex;

use crate::{
    Claims, Keys, TOKEN_CACHE_CAPACITY, TokenCache, TokenVerifier, decoding_keys, parse_header,
    validation, verify_with,
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

/// Why a [`JwksVerifier`] could not get authd's keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The URL is not `http://host/...` or `https://host/...`.
    #[error("the JWKS URL must be an absolute http:// or https:// URL, not {0}")]
    Url(Url),
    /// The CA certificates given for an `https://` JWKS cannot be used.
    #[error("unusable CA certificates for the JWKS: {0}")]
    Ca(String),
    /// Connecting, sending or reading failed.
    #[error("cannot fetch the JWKS")]
    Http(#[source] reqwest::Error),
    /// The body was over 64 KiB.
    #[error("the JWKS is over {} KiB", MAX_JWKS_BYTES / 1024)]
    TooLarge,
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

impl From<reqwest::Error> for VerifyError {
    fn from(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else {
            Self::Http(error)
        }
    }
}

/// Verifies authd access tokens against authd's JWKS, fetched over
/// `https://` (or `http://` on a trusted network) and cached by `kid`.
///
/// The keys are fetched again once the `Cache-Control: max-age` they came
/// with has passed, or when a token names an unknown `kid`, at most once per
/// [`MIN_REFETCH_INTERVAL`]. A failed fetch is logged and the keys already
/// known stay in use.
///
/// A token that passed is remembered (by digest, in a [`TokenCache`] of
/// [`TOKEN_CACHE_CAPACITY`] tokens) until it expires, so its signature is
/// checked once rather than on every request. The cache is emptied when a
/// fetched key set drops a key, so a key authd withdrew vouches for nothing.
///
/// ```no_run
/// use authd_verify::JwksVerifier;
///
/// # async fn run(token: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let url = "https://authd.internal:50051/.well-known/jwks.json".parse()?;
/// let verifier = JwksVerifier::new(url, "authd", "my-service").await?;
/// if let Some(claims) = verifier.claims(token).await {
///     println!("user {}", claims.user_id()?);
/// }
/// # Ok(())
/// # }
/// ```
pub struct JwksVerifier {
    url: Url,
    client: Client,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch began. It is held for the whole fetch, so
    /// concurrent callers wait for that one instead of starting their own.
    last_fetch: Mutex<Instant>,
    verified: TokenCache,
}

struct KeySet {
    keys: Keys,
    fresh_until: Instant,
}

impl JwksVerifier {
    /// Fetches the JWKS at `jwks_url` (authd serves it at
    /// `/.well-known/jwks.json` on its gRPC address) and accepts tokens for
    /// `issuer` and `audience` only. An `https://` JWKS must present a
    /// certificate the system trusts. Fails if the first fetch does: a
    /// service that cannot verify anything should not start.
    pub async fn new(
        jwks_url: Url,
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
        jwks_url: Url,
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
        jwks_url: Url,
        issuer: &str,
        audience: &str,
        roots: RootCertStore,
    ) -> Result<Arc<Self>, VerifyError> {
        if !["http", "https"].contains(&jwks_url.scheme()) || !jwks_url.has_host() {
            return Err(VerifyError::Url(jwks_url));
        }
        // Built here rather than by reqwest, whose own configuration would
        // need aws-lc-rs or a process-wide default crypto provider.
        let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| VerifyError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(FETCH_TIMEOUT)
            // The JWKS is fetched from where it was configured, and nowhere
            // a redirect or the environment's proxy settings would send it.
            .redirect(redirect::Policy::none())
            .no_proxy()
            .build()?;
        let started = Instant::now();
        let (keys, max_age) = fetch(&client, &jwks_url).await?;
        Ok(Arc::new(Self {
            url: jwks_url,
            client,
            validation: validation(issuer, audience),
            keys: RwLock::new(Arc::new(KeySet {
                keys,
                fresh_until: started + max_age,
            })),
            last_fetch: Mutex::new(started),
            verified: TokenCache::new(TOKEN_CACHE_CAPACITY),
        }))
    }

    /// The claims of `token` if it is valid; see [`verify_with`].
    pub async fn claims(&self, token: &str) -> Option<Claims> {
        if let Some(claims) = self.verified.get(token) {
            return Some(claims);
        }
        let kid = parse_header(token).ok()?.kid?;
        let keys = self.keys_for(&kid).await;
        let claims = verify_with(token, &keys.keys, &self.validation).ok()?;
        self.verified.insert(token, claims.clone());
        // Keys replaced meanwhile may have dropped the one that signed it.
        // Checked after the insert: a swap before it shows here, and one
        // after it clears the cache after the insert (see `keys_for`), so no
        // order of the two leaves the token cached under withdrawn keys.
        if !Arc::ptr_eq(&keys, &self.current()) {
            self.verified.remove(token);
        }
        Some(claims)
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
            let dropped = current
                .keys
                .keys()
                .any(|kid| !fetched.keys.contains_key(kid));
            *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fetched);
            // After the swap, so that no verification against the old keys
            // can still enter the cache.
            if dropped {
                self.verified.clear();
            }
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
async fn fetch(client: &Client, url: &Url) -> Result<(Keys, Duration), VerifyError> {
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/jwk-set+json, application/json")
        .send()
        .await?;
    if response.status() != StatusCode::OK {
        return Err(VerifyError::Status(response.status()));
    }
    let max_age = max_age(response.headers());
    // reqwest reads a body of any size; a wrong endpoint must not fill memory.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(VerifyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let keys = decoding_keys(&serde_json::from_slice::<JwkSet>(&body)?);
    if keys.is_empty() {
        return Err(VerifyError::NoKeys);
    }
    Ok((keys, max_age))
}

/// The `max-age` of the `Cache-Control` header, within [`MAX_AGE_RANGE`].
fn max_age(headers: &HeaderMap) -> Duration {
    headers
        .typed_get::<CacheControl>()
        .and_then(|cache| cache.max_age())
        .unwrap_or(DEFAULT_MAX_AGE)
        .clamp(MAX_AGE_RANGE.0, MAX_AGE_RANGE.1)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderValue, header::CACHE_CONTROL};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::token::tests::{TestKey, set};

    #[test]
    fn max_age_is_read_and_kept_in_range() {
        let age = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CACHE_CONTROL, HeaderValue::from_str(value).expect("value"));
            }
            max_age(&headers).as_secs()
        };
        assert_eq!(age(&["public, max-age=30"]), 30);
        assert_eq!(age(&["public", "max-age=\"45\""]), 45);
        assert_eq!(age(&["public, max-age=0"]), 1);
        assert_eq!(age(&["max-age=31536000"]), 3600);
        assert_eq!(age(&["max-age=soon"]), 60);
        assert_eq!(age(&[]), 60);
    }

    /// A JWKS endpoint that serves whatever `jwks` holds and counts requests.
    struct FakeAuthd {
        url: Url,
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

        /// A fake serving `keys` and a verifier that fetched them from it.
        async fn start_verified(keys: &[&TestKey]) -> (Self, Arc<JwksVerifier>) {
            let fake = Self::start(&set(keys)).await;
            let verifier = JwksVerifier::new(fake.url.clone(), "iss", "aud")
                .await
                .expect("verifier");
            (fake, verifier)
        }

        fn publish(&self, jwks: &JwkSet) {
            *self.jwks.write().expect("lock") = serde_json::to_string(jwks).expect("json");
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    /// Makes `keys` the verifier's, fresh until `fresh_until`; returns the
    /// key set they replace.
    fn install(verifier: &JwksVerifier, keys: Keys, fresh_until: Instant) -> Arc<KeySet> {
        let installed = Arc::new(KeySet { keys, fresh_until });
        std::mem::replace(&mut *verifier.keys.write().expect("lock"), installed)
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
        let (old, new) = (TestKey::new(1), TestKey::new(2));
        let (fake, verifier) = FakeAuthd::start_verified(&[&old]).await;
        assert_eq!(fake.fetches(), 1);

        assert!(verifier.claims(&old.sign()).await.is_some());
        fake.publish(&set(&[&new]));
        let new = new.sign();

        // The first fetch was just now, so the new kid has to wait.
        assert!(verifier.claims(&new).await.is_none());
        assert_eq!(fake.fetches(), 1);

        *verifier.last_fetch.lock().await = Instant::now()
            .checked_sub(MIN_REFETCH_INTERVAL)
            .expect("a monotonic clock this far along");
        let verifications = (0..8).map(|_| verifier.claims(&new));
        let claims = futures_util::future::join_all(verifications).await;
        assert!(claims.iter().all(Option::is_some));
        assert_eq!(fake.fetches(), 2);

        let made_up = TestKey::new(3).sign();
        for _ in 0..8 {
            assert!(verifier.claims(&made_up).await.is_none());
        }
        assert_eq!(fake.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failed_refetch_keeps_the_known_keys() {
        let key = TestKey::new(1);
        let (fake, verifier) = FakeAuthd::start_verified(&[&key]).await;

        fake.publish(&set(&[]));
        install(&verifier, verifier.current().keys.clone(), Instant::now());
        assert!(verifier.claims(&key.sign()).await.is_some());
        assert_eq!(fake.fetches(), 2);
        assert!(verifier.current().fresh_until > Instant::now());
    }

    #[tokio::test]
    async fn a_verified_token_is_cached_until_its_key_is_withdrawn() {
        let (old, new) = (TestKey::new(1), TestKey::new(2));
        let (fake, verifier) = FakeAuthd::start_verified(&[&old]).await;
        let token = old.sign();
        assert!(verifier.claims(&token).await.is_some());
        assert!(verifier.claims("garbage").await.is_none());
        assert!(verifier.claims(&TestKey::new(3).sign()).await.is_none());
        assert_eq!(verifier.verified.len(), 1, "only verified tokens enter");

        // With no keys at all, only the cache can vouch for the token.
        let fresh = Instant::now() + Duration::from_secs(600);
        let known = install(&verifier, Keys::new(), fresh);
        assert!(verifier.claims(&token).await.is_some(), "a cache hit");

        // authd rotates the old key out; the next fetch notices.
        install(&verifier, known.keys.clone(), Instant::now());
        fake.publish(&set(&[&new]));
        assert!(verifier.claims(&new.sign()).await.is_some());
        assert_eq!(fake.fetches(), 2);
        assert!(verifier.claims(&token).await.is_none(), "its key is gone");
    }

    #[tokio::test]
    async fn only_http_and_https_urls_are_accepted() {
        for url in ["ftp://authd/.well-known/jwks.json", "file:///jwks.json"] {
            let result = JwksVerifier::new(url.parse().expect("url"), "iss", "aud").await;
            assert!(matches!(result, Err(VerifyError::Url(_))), "{url}");
        }
    }
}
