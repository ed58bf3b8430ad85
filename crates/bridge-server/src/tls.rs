//! TLS for the listener: rustls with a certificate and key read from PEM
//! files, and read again when either file changes, so that a renewal
//! (certbot and the like, which replace the files) takes effect without a
//! restart. Handshakes already made keep their certificate; new ones get
//! the new one. A renewed file that cannot be read or does not match its
//! key is logged and the last good certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the certificate files are looked at for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why the certificate cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {}: {message}", cert_file.display())]
pub struct TlsError {
    cert_file: PathBuf,
    message: String,
}

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    loaded_from: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl ReloadingCert {
    /// Reads the certificate chain and key; fails if they cannot be used.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let key = read_certified_key(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded_from: RwLock::new(modified_times(cert_file, key_file)),
        }))
    }

    /// A rustls server configuration that serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Reads the files again if they changed since the last load; returns
    /// whether a new certificate is in use.
    pub fn reload_if_changed(&self) -> bool {
        let times = modified_times(&self.cert_file, &self.key_file);
        if times.is_none()
            || *self
                .loaded_from
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                == times
        {
            return false;
        }
        match read_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                *self
                    .loaded_from
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = times;
                tracing::info!(cert_file = %self.cert_file.display(), "Loaded the renewed TLS certificate.");
                true
            }
            Err(error) => {
                // Perhaps caught half-written: tried again at the next poll.
                tracing::warn!(error = %error, "Cannot load the changed TLS certificate; keeping the one in use.");
                false
            }
        }
    }

    /// Looks at the files every [`RELOAD_POLL`] until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_POLL) => {}
                _ = stop.changed() => return,
            }
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

fn modified_times(cert_file: &Path, key_file: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    Some((modified(cert_file)?, modified(key_file)?))
}

fn read_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let fail = |message: String| TlsError {
        cert_file: cert_file.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|error| fail(format!("cannot read it: {error}")))?
        .collect::<Result<_, _>>()
        .map_err(|error| fail(format!("not a PEM certificate chain: {error}")))?;
    if chain.is_empty() {
        return Err(fail("holds no certificate".to_owned()));
    }
    // The key's own errors never quote it.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| {
        fail(format!(
            "cannot read a PEM private key from {}",
            key_file.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|error| fail(format!("does not go with its key: {error}")))?;
    Ok(certified)
}
