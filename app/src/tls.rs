//! HTTPS for the API listener: the certificate chain and key of
//! `tls.cert_path` and `tls.key_path`, re-read when the files change.
//!
//! cert-manager renews a certificate in place (the Secret, then the files of
//! its volume, change). [`ReloadingCertificate`] is the listener's
//! certificate resolver: every TLS handshake takes the pair loaded last, so
//! a renewed certificate is served from the next handshake on, without a
//! restart, while connections already open keep theirs. [`watch`] reads the
//! files every `tls.reload_interval_seconds` and swaps in a new pair only
//! when it is complete and consistent (the key matches the certificate); a
//! half-written or broken pair is reported and the current one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::configuration::TlsSettings;
use crate::metrics::Metrics;

/// The certificate the listener presents, replaced when its files change.
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents as last read (loaded or refused), so unchanged
    /// files are not parsed again and a broken pair is reported once.
    last_read: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().expect("never poisoned")))
    }
}

/// What a look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
}

impl ReloadingCertificate {
    /// Loads the pair named by `tls`; fails (naming the key) when it is
    /// unusable, so start-up stops before anything else.
    pub fn load(tls: &TlsSettings) -> anyhow::Result<Arc<ReloadingCertificate>> {
        let cert_path = tls.cert_path.clone().context("tls.cert_path is set")?;
        let key_path = tls.key_path.clone().context("tls.key_path is set")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = read_pair(&cert_path, &key_path)?;
        let certified = certified_key(&cert_pem, &key_pem, &cert_path, &key_path, &provider)?;
        Ok(Arc::new(ReloadingCertificate {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(certified)),
            last_read: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// The listener's configuration: TLS 1.2 and 1.3 only, ring provider,
    /// this resolver.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        Ok(
            ServerConfig::builder_with_provider(Arc::clone(&self.provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .context("Failed to configure TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>),
        )
    }

    /// Reads the files and, when they changed, loads the new pair. An
    /// unusable pair is an error and the current one stays.
    pub fn reload_if_changed(&self) -> anyhow::Result<Reload> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path)?;
        {
            let mut last_read = self.last_read.lock().expect("never poisoned");
            if last_read.0 == cert_pem && last_read.1 == key_pem {
                return Ok(Reload::Unchanged);
            }
            *last_read = (cert_pem.clone(), key_pem.clone());
        }
        let certified = certified_key(
            &cert_pem,
            &key_pem,
            &self.cert_path,
            &self.key_path,
            &self.provider,
        )?;
        *self.current.write().expect("never poisoned") = Arc::new(certified);
        Ok(Reload::Reloaded)
    }
}

/// Looks at the files every `every` for as long as the process runs, logs
/// and counts each reload (`todo_tls_certificate_reloads_total{result}`).
pub async fn watch(certificate: Arc<ReloadingCertificate>, every: Duration, metrics: Metrics) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is now: the files were just read
    loop {
        ticks.tick().await;
        match certificate.reload_if_changed() {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Reloaded) => {
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(
                    cert_path = %certificate.cert_path.display(),
                    "loaded the renewed TLS certificate; new connections use it"
                );
            }
            Err(error) => {
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::warn!(
                    error = format!("{error:#}"),
                    "the TLS certificate files changed but cannot be used; still serving the previous certificate"
                );
            }
        }
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert = std::fs::read(cert_path)
        .with_context(|| format!("Failed to open tls.cert_path {}", cert_path.display()))?;
    let key = std::fs::read(key_path)
        .with_context(|| format!("Failed to open tls.key_path {}", key_path.display()))?;
    Ok((cert, key))
}

/// Parses the PEM chain and key and checks that they belong together.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("Failed to parse tls.cert_path {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.cert_path {} holds no PEM certificate",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).with_context(|| {
        format!(
            "Failed to parse tls.key_path {} (PEM private key expected)",
            key_path.display()
        )
    })?;
    CertifiedKey::from_der(certs, key, provider)
        .context("The TLS certificate and key do not form a usable pair")
}
