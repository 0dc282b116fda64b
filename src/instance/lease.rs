//! The primary's right to lead: the `coordination.k8s.io` Lease `<cluster>-primary` in the
//! cluster's namespace. Its holder is the only instance that may accept writes, and only the
//! operator hands it to another instance.
//!
//! - The primary's instance manager renews it every [`RENEW_EVERY`]. It measures from the moment
//!   it *sent* its last successful renewal, so its own view of the lease ends no later than the
//!   operator's, which measures from when it *saw* the renewal.
//! - When it has not renewed for [`FENCE_AFTER`], it stops PostgreSQL at once (an immediate
//!   shutdown): a primary cut off from the API stops taking writes.
//! - The operator hands the lease on only once it has seen no renewal for [`LEASE_DURATION`],
//!   later than [`FENCE_AFTER`]: by then the old primary has fenced itself.
//! - A replica that finds itself the holder promotes, after its first successful renewal.

use std::{path::Path, time::Duration};

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

pub use crate::facts::cluster::{FENCE_AFTER, LEASE_DURATION, RENEW_EVERY};

use super::Error;

/// Who holds the lease, as this instance reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This pod.
    Me,
    /// Another pod.
    Other(String),
    /// Nobody: an instance that lost its volume gave it up.
    Nobody,
}

/// The lease of one cluster, from one pod.
#[derive(Clone)]
pub struct Leases {
    api: Api<Lease>,
    name: String,
    pod: String,
}

impl Leases {
    /// The lease of `cluster` in `namespace`, as `pod` sees it.
    pub fn new(client: Client, namespace: &str, cluster: &str, pod: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: crate::facts::cluster::Names(cluster).primary_lease(),
            pod: pod.to_owned(),
        }
    }

    /// Reads the lease.
    pub async fn read(&self) -> Result<Lease, kube::Error> {
        self.api.get(&self.name).await
    }

    /// Who holds `lease`.
    pub fn holder(&self, lease: &Lease) -> Holder {
        match lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) {
            Some(holder) if holder == self.pod => Holder::Me,
            Some(holder) if !holder.is_empty() => Holder::Other(holder.to_owned()),
            _ => Holder::Nobody,
        }
    }

    /// Whether a primary ever held `lease`: the cluster has data then, and an instance with an
    /// empty volume must clone it, never `initdb`.
    pub fn initialized(lease: &Lease) -> bool {
        lease.spec.as_ref().is_some_and(|s| s.renew_time.is_some())
    }

    /// Renews `lease`, which this pod holds. The write carries the lease's resourceVersion: a
    /// lease the operator handed on meanwhile is never taken back.
    pub async fn renew(&self, mut lease: Lease) -> Result<Lease, kube::Error> {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await
    }

    /// Gives `lease` up: an instance that holds it but lost its data must not lead, and the
    /// operator hands it to the most advanced replica at once.
    pub async fn release(&self, mut lease: Lease) -> Result<Lease, kube::Error> {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(String::new());
        self.api.replace(&self.name, &PostParams::default(), &lease).await
    }
}

/// The pod's client of the API: the server from the kubelet's environment
/// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`), the ServiceAccount token and the
/// cluster's CA from the projected volume `dir` (`token`, `ca.crt`). The token file is read
/// again as the kubelet rotates it.
pub fn client(dir: &Path) -> Result<Client, Error> {
    Client::try_from(config(dir)?).map_err(|e| Error::Config(format!("the API client: {e}")))
}

/// The configuration [`client`] makes its client from.
pub fn config(dir: &Path) -> Result<kube::Config, Error> {
    let env = |name: &str| {
        std::env::var(name)
            .map_err(|_| Error::Config(format!("{name} is not set: the kubelet sets it in every pod")))
    };
    let host = env("KUBERNETES_SERVICE_HOST")?;
    let port = env("KUBERNETES_SERVICE_PORT")?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| Error::Config(format!("the API server https://{host}:{port}: {e}")))?;
    let ca =
        std::fs::read(dir.join("ca.crt")).map_err(super::io(format!("reading {}/ca.crt", dir.display())))?;
    let certificates =
        pem_certificates(&ca).map_err(|e| Error::Config(format!("{}/ca.crt: {e}", dir.display())))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(certificates);
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(2));
    config.write_timeout = Some(Duration::from_secs(2));
    Ok(config)
}

/// The DER of each certificate in a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if certificates.is_empty() {
        return Err("no certificate".into());
    }
    Ok(certificates)
}
