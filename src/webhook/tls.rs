//! A serving certificate that follows its files on disk.
//!
//! OLM (or cert-manager, or a test) replaces `tls.crt` and `tls.key` while the server runs.
//! [`ReloadingCert`] re-reads them on an interval and hands new TLS handshakes the newest pair
//! that loads and matches; the listener and open connections are never touched. A pair caught
//! half-written (a new certificate with the old key) is skipped until both files agree.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The key does not belong to the certificate, or is of an unsupported type.
    #[error("{key} does not fit {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The certificate and key files of the serving certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

/// A certificate resolver that serves the newest valid pair of [`CertFiles`].
pub struct ReloadingCert {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certified_key(
    files: &CertFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, what, reason: String| TlsError::Pem {
        path: path.to_owned(),
        what,
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            &files.cert,
            "certificate",
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error(&files.key, "private key", e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

impl ReloadingCert {
    /// Loads the files once; fails if they do not hold a matching certificate and key.
    pub fn load(files: CertFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = Arc::new(certified_key(&files, &cert_pem, &key_pem, &provider)?);
        Ok(Self {
            files,
            provider,
            current: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
        })
    }

    /// Re-reads the files. Returns whether a new certificate is now served; on error the old
    /// one stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.files.cert)?;
        let key_pem = read(&self.files.key)?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.cert_pem == cert_pem && current.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = Arc::new(certified_key(&self.files, &cert_pem, &key_pem, &self.provider)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        Ok(true)
    }

    /// Whether the pair on disk is the pair served: what readiness waits for, so that a replica
    /// takes conversion traffic only with the certificate the CRDs' `caBundle` trusts now. `Err`
    /// says what differs or what cannot be read.
    pub fn serves_files(&self) -> Result<(), String> {
        let cert_pem = read(&self.files.cert).map_err(|e| e.to_string())?;
        let key_pem = read(&self.files.key).map_err(|e| e.to_string())?;
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        if current.cert_pem == cert_pem && current.key_pem == key_pem {
            Ok(())
        } else {
            Err(format!(
                "{} changed and is not served yet",
                self.files.cert.display()
            ))
        }
    }

    /// Reloads every `interval` until the task is dropped, logging what happens.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "serving a new certificate"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "keeping the current certificate"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).key.clone())
    }
}

/// A certificate that never changes, such as a self-signed one made at start.
#[derive(Debug)]
pub struct FixedCert(Arc<CertifiedKey>);

impl FixedCert {
    /// The pair `cert` (PEM chain) and `key` (PEM).
    pub fn new(cert: &str, key: &str, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let files = CertFiles {
            cert: PathBuf::from("(generated certificate)"),
            key: PathBuf::from("(generated key)"),
        };
        certified_key(&files, cert.as_bytes(), key.as_bytes(), provider).map(|k| Self(Arc::new(k)))
    }
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
