//! TLS for the gRPC and HTTP listener, optionally requiring client
//! certificates. Certificates are reloaded on SIGHUP and when their files
//! change; a reload only affects new handshakes, so live connections stay up.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped, so
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// With it, clients must present a certificate signed by this CA.
    pub(crate) client_ca: Option<PathBuf>,
}

/// The current server configuration, swapped whole on reload.
#[derive(Clone)]
pub(crate) struct Tls {
    settings: TlsSettings,
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the certificates once, so a bad file stops startup.
    pub(crate) fn load(settings: TlsSettings) -> anyhow::Result<Self> {
        let config = server_config(&settings)?;
        Ok(Self {
            settings,
            config: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reload(&self) {
        match server_config(&self.settings) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                tracing::info!("TLS certificates reloaded");
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "TLS reload failed; keeping the old certificates"
                );
            }
        }
    }

    /// Reloads on SIGHUP and whenever a certificate file's modification time
    /// changes. Runs until aborted.
    pub(crate) async fn watch(self) {
        let mut stamps = self.stamps();
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| tracing::error!(%error, "cannot listen for SIGHUP"))
            .ok();
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hangup_received => self.reload(),
                () = tokio::time::sleep(WATCH_INTERVAL) => {
                    let now = self.stamps();
                    if now != stamps {
                        stamps = now;
                        self.reload();
                    }
                }
            }
        }
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let settings = &self.settings;
        [
            Some(&settings.cert),
            Some(&settings.key),
            settings.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
    }

    /// Runs the TLS handshake on an accepted connection with the current
    /// certificates. A failed handshake (a plaintext client, a missing
    /// client certificate) or one not finished in time is logged and the
    /// connection dropped, so half-open connections cannot pile up.
    pub(crate) fn handshake<IO>(
        &self,
        tcp: IO,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<TlsStream<IO>>> + Send + use<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let acceptor = TlsAcceptor::from(self.current());
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
    }
}

fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(&settings.cert, "AUTHD_TLS_CERT_FILE")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).with_context(|| {
        format!(
            "AUTHD_TLS_KEY_FILE {}: no PEM private key",
            settings.key.display()
        )
    })?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "AUTHD_TLS_CLIENT_CA_FILE")? {
                roots.add(cert).with_context(|| {
                    format!("AUTHD_TLS_CLIENT_CA_FILE {}: unusable CA", path.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("AUTHD_TLS_CLIENT_CA_FILE: cannot verify clients with it")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("AUTHD_TLS_CERT_FILE and AUTHD_TLS_KEY_FILE do not form a usable pair")?;
    // gRPC needs HTTP/2; HTTP/1.1 serves the JWKS to plain HTTP clients.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{setting} {}: cannot read PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{setting} {}: no certificate in it",
        path.display()
    );
    Ok(certs)
}
