//! Tusk's test environment: a real Kubernetes control plane run as local processes on loopback.
//!
//! [`ControlPlane::start`] starts etcd, kube-apiserver (RBAC, service-account signing, its own CA
//! and serving certificates, an admin kubeconfig), kube-controller-manager, kube-scheduler and kwok
//! with one fake Node, from the programs `hack/testbin.sh` builds. [`shared`] gives every test in a
//! test binary the same control plane; [`ControlPlane::namespace`] gives each test its own
//! namespace.
//!
//! [`olm`] adds a real OLM (its `olm` and `catalog` operators as local processes) and `opm serve`
//! of a catalog. [`ConnectProxy`] lets kube-apiserver reach a webhook behind a Service: it
//! tunnels the apiserver's `cluster` egress to processes on loopback.
//!
//! [`cert_manager`] adds cert-manager: its CRDs, and its controllers for Certificates and CA and
//! SelfSigned issuers and its cainjector as local processes.
//!
//! [`olmv1`] adds OLM v1: catalogd and operator-controller as local processes, with cert-manager
//! as their certificate provider, installing from catalog images in a loopback registry.
//!
//! [`postgres`] runs real PostgreSQL servers (15 and 18, from `hack/postgres.sh`) on loopback.
//!
//! [`eventually()`] is how every test and harness waits for a condition: a timeout, an interval,
//! and a failure that says what was awaited and what was last seen.
//!
//! Every component runs under a small supervisor whose standard input is a pipe held by the test
//! process. When the test process ends, however it ends (a normal exit, a panic, SIGKILL), the pipe
//! closes and the supervisor stops its component, so no process outlives the test.

pub mod azure;
pub mod cert_manager;
pub mod connect;
pub mod control_plane;
pub mod eventually;
pub mod https;
pub mod image;
pub mod olm;
pub mod olmv1;
pub mod pki;
pub mod pod;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod s3;
pub mod toolchain;

pub use connect::ConnectProxy;
pub use control_plane::{ControlPlane, Options, shared};
pub use eventually::{Seen, Unmet, Wait, eventually};
pub use toolchain::Toolchain;

/// Why the environment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The toolchain from `hack/testbin.sh` is missing or incomplete.
    #[error("test toolchain: {0}")]
    Toolchain(String),
    /// A component did not start or did not become ready.
    #[error("{component}: {message}")]
    Component {
        /// The component, such as `kube-apiserver`.
        component: &'static str,
        /// What went wrong, with the tail of its log.
        message: String,
    },
    /// A local file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A request to the apiserver failed.
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Makes ring the process's TLS provider, as `tusk-operator`'s main does: a test binary links
/// both of rustls's providers, so rustls cannot pick one on its own. Idempotent.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// GET `path` on `host`:`port` over plain HTTP/1.0; the status code and body.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}
