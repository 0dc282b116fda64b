//! How the operator itself is deployed: its names, namespace, ports, paths, images and the
//! environment variables its command line reads. The CSV, a plain install, the demo and the tests
//! all take these from here.

/// The operator's name: its binary, its Deployment and ServiceAccount, its leader-election
/// Lease, the field manager of everything it writes and the `managed-by` label on it.
pub const NAME: &str = "tusk-operator";

/// The Service in front of the conversion webhook: `<deployment>-service`, the name OLM gives it.
pub const WEBHOOK_SERVICE: &str = "tusk-operator-service";

/// The Service that exposes the operator's `/metrics`.
pub const METRICS_SERVICE: &str = "tusk-operator-metrics";

/// The namespace of a plain install, and the one OperatorHub suggests.
pub const NAMESPACE: &str = "tusk-system";

/// How many replicas of the operator run: one leads and reconciles, every one serves the
/// conversion webhook, so that an upgrade or a drained node never leaves the webhook without an
/// answer. A PodDisruptionBudget keeps one of them available.
pub const REPLICAS: i32 = 2;

/// The port the conversion webhook listens on in the pod.
pub const WEBHOOK_PORT: u16 = 9443;

/// The port of the webhook's Service.
pub const WEBHOOK_SERVICE_PORT: u16 = 443;

/// The port of `/healthz` and `/readyz` in the pod (plain HTTP, for the kubelet's probes).
pub const STATUS_PORT: u16 = 8081;

/// The port of `/metrics` in the pod: HTTPS, for callers with a token that may `get` it.
pub const METRICS_PORT: u16 = 8443;

/// The non-resource URL a metrics reader needs `get` on.
pub const METRICS_PATH: &str = "/metrics";

/// The path the conversion webhook serves.
pub const CONVERT_PATH: &str = "/convert";

/// Where OLM mounts the webhook's serving certificate (`tls.crt`, `tls.key`).
pub const CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";

/// The operator binary in the operator image.
pub const BINARY_PATH: &str = "/usr/local/bin/tusk-operator";

/// The operator image's repository.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/tusk-operator/tusk-operator";

/// The operator image this build of Tusk ships as.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/tusk-operator/tusk-operator:", env!("CARGO_PKG_VERSION"));

/// The release whose operator image carries the instance manager this build deploys: PostgreSQL
/// pods copy the instance manager from that image, not from this build's. An operator upgrade
/// that keeps it changes no pod template, so it restarts no database. Set it to the open release
/// whenever the instance manager changes, or what it needs from its pod (its command line, its
/// mounts, its environment): then the pods take the new one through a rolling update, replicas
/// first, the primary last by a switchover, as `spec.updateStrategy` allows.
pub const INSTANCE_MANAGER: &str = "1.1.0";

/// The image of [`INSTANCE_MANAGER`].
pub const DEFAULT_INSTANCE_MANAGER_IMAGE: &str = "ghcr.io/tusk-operator/tusk-operator:1.1.0";

/// The init container of a PostgreSQL pod that copies the instance manager out of its image:
/// its image is the instance manager the pod runs.
pub const INSTALL_CONTAINER: &str = "install-tusk";

/// The environment variables `tusk-operator` reads, each the twin of a command-line flag.
pub mod env {
    /// `--instance-manager-image`.
    pub const INSTANCE_MANAGER_IMAGE: &str = "TUSK_INSTANCE_MANAGER_IMAGE";
    /// `--postgres-image`.
    pub const POSTGRES_IMAGE: &str = "TUSK_POSTGRES_IMAGE";
    /// `--postgres-images`.
    pub const POSTGRES_IMAGES: &str = "TUSK_POSTGRES_IMAGES";
    /// `--postgres-uid`.
    pub const POSTGRES_UID: &str = "TUSK_POSTGRES_UID";
    /// `--status-listen`.
    pub const STATUS_LISTEN: &str = "TUSK_STATUS_LISTEN";
    /// `--metrics-listen`.
    pub const METRICS_LISTEN: &str = "TUSK_METRICS_LISTEN";
    /// `--listen` of the webhook.
    pub const WEBHOOK_LISTEN: &str = "TUSK_WEBHOOK_LISTEN";
    /// `--cert-dir` of the webhook.
    pub const WEBHOOK_CERT_DIR: &str = "TUSK_WEBHOOK_CERT_DIR";
    /// `--sql-endpoints`.
    pub const SQL_ENDPOINTS: &str = "TUSK_SQL_ENDPOINTS";
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "TUSK_LOG_FORMAT";
    /// The pod's name, from the Downward API (`metadata.name`).
    pub const POD_NAME: &str = "POD_NAME";
    /// The pod's namespace, from the Downward API (`metadata.namespace`).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The pod's uid (the Downward API's `metadata.uid`).
    pub const POD_UID: &str = "POD_UID";
    /// The pod's IP addresses, from the Downward API (`status.podIPs`).
    pub const POD_IPS: &str = "POD_IPS";
    /// The proxy variables of the cluster-wide proxy, which OLM sets in the operator's
    /// Deployment. The operator honours them for its own outbound calls and passes those it has
    /// to the PostgreSQL pods, whose instance managers call the object store.
    pub const PROXY: [&str; 6] = [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_operators_name() {
        assert_eq!(WEBHOOK_SERVICE, format!("{NAME}-service"));
        assert_eq!(METRICS_SERVICE, format!("{NAME}-metrics"));
        assert_eq!(BINARY_PATH, format!("/usr/local/bin/{NAME}"));
        assert_eq!(IMAGE_REPOSITORY, format!("ghcr.io/{NAME}/{NAME}"));
        assert_eq!(
            DEFAULT_IMAGE,
            format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            DEFAULT_INSTANCE_MANAGER_IMAGE,
            format!("{IMAGE_REPOSITORY}:{INSTANCE_MANAGER}")
        );
    }
}
