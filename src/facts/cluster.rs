//! Everything Tusk names about one `PostgresCluster`: its children's names, the labels and
//! selectors on them, the ports and paths of its pods, the superuser, and which pod holds which
//! role. The controller builds from these, the instance manager runs by them, and the tests look
//! for them.

use std::collections::BTreeMap;

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = super::operator::NAME;

/// Label with the cluster's name, on every child and every pod.
pub const CLUSTER_LABEL: &str = "tusk.dev/cluster";
/// Label with the pod's role (see [`Role`]). The `-rw` and `-ro` Services select on it.
pub const ROLE_LABEL: &str = "tusk.dev/role";
/// Pod-template annotation with a hash of the configuration; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "tusk.dev/config-hash";
/// The recommended label naming who manages an object; Tusk's children say [`FIELD_MANAGER`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The recommended label naming what an object is for (a binding Secret says `binding`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The PostgreSQL port.
pub const POSTGRES_PORT: u16 = 5432;
/// The instance manager's `/healthz` and `/readyz` port, and the operator's calls to it.
pub const STATUS_PORT: u16 = 8000;
/// The instance manager's `/metrics` port: HTTPS, for a token that may `get` `/metrics`.
pub const METRICS_PORT: u16 = 8443;
/// Name of the metrics port on the container.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Name of the PostgreSQL port on the container and the Services.
pub const POSTGRES_PORT_NAME: &str = "postgres";
/// Name of the instance manager's port on the container.
pub const STATUS_PORT_NAME: &str = "status";

/// The PostgreSQL superuser.
pub const SUPERUSER: &str = "postgres";
/// The database every cluster has, where the operator's sessions start.
pub const MAINTENANCE_DATABASE: &str = "postgres";

/// The `postgres` user of the default image (`docker.io/library/postgres`), which pods run as
/// unless told otherwise.
pub const DEFAULT_POSTGRES_UID: i64 = 999;

/// Keys of the cluster's ConfigMap, and the files the instance manager writes from them.
pub const POSTGRESQL_CONF: &str = "postgresql.conf";
/// See [`POSTGRESQL_CONF`].
pub const PG_HBA_CONF: &str = "pg_hba.conf";
/// Key of the cluster's ConfigMap with the TLS security profile the pods' `/metrics` follow
/// (`tls_profile::Profile::to_json`). Outside the configuration hash: a change reaches running
/// pods, and restarts none.
pub const TLS_PROFILE_FILE: &str = "tls-profile.json";
/// The key of the superuser Secret that holds the password.
pub const PASSWORD_KEY: &str = "password";

/// The role a pod holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes writes; the `-rw` Service selects it.
    Primary,
    /// Streams from the primary; the `-ro` Service selects it.
    Replica,
}

impl Role {
    /// The value of [`ROLE_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// The ordinal of the pod that bootstraps a cluster with `initdb` and is its first primary.
pub const FIRST_PRIMARY_ORDINAL: i32 = 0;

/// How long the primary's Lease holds without a renewal, as the operator measures it from the
/// last renewal it saw: the operator hands the Lease to a replica only after this.
pub const LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the primary renews its Lease.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the primary takes writes without a successful renewal, measured from when it sent
/// the last one: a second before anyone may take the Lease over, for clocks that run apart.
pub const FENCE_AFTER: std::time::Duration = std::time::Duration::from_secs(4);

/// Where things live in a PostgreSQL pod.
pub mod paths {
    /// Mount of the data volume.
    pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
    /// The data directory, one level below the mount (a volume's root may hold `lost+found`).
    pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
    /// Mount of the WAL volume, when the cluster has one.
    pub const WAL_MOUNT: &str = "/var/lib/postgresql/wal";
    /// The WAL directory on it.
    pub const WALDIR: &str = "/var/lib/postgresql/wal/pg_wal";
    /// Mount of the cluster's ConfigMap.
    pub const CONFIG_DIR: &str = "/etc/tusk/config";
    /// Mount of the superuser Secret.
    pub const SUPERUSER_DIR: &str = "/etc/tusk/superuser";
    /// The superuser's password in it.
    pub const SUPERUSER_PASSWORD_FILE: &str = "/etc/tusk/superuser/password";
    /// Where the init container copies the instance manager.
    pub const TUSK_BIN_DIR: &str = "/tusk/bin";
    /// The instance manager in it.
    pub const INSTANCE_BINARY: &str = "/tusk/bin/tusk-operator";
    /// PostgreSQL's Unix socket directory.
    pub const SOCKET_DIR: &str = "/var/run/postgresql";
    /// The projected ServiceAccount token and CA the instance manager reaches the API with.
    pub const KUBE_API_DIR: &str = "/var/run/secrets/tusk/kube-api";
    /// A writable temporary directory (the root filesystem is read-only).
    pub const TMP: &str = "/tmp";
    /// Mount of the cluster's TLS Secret (`<cluster>-tls`, see [`super::tls`]).
    pub const TLS_DIR: &str = "/etc/tusk/tls";
}

/// The cluster's TLS Secret, `<cluster>-tls`: what every pod mounts at [`paths::TLS_DIR`]. The
/// operator assembles it whatever the certificates' source (its CA, the user's Secret), so the
/// instance manager reads one layout.
pub mod tls {
    /// The server certificate (leaf first).
    pub const SERVER_CERT: &str = "tls.crt";
    /// Its private key.
    pub const SERVER_KEY: &str = "tls.key";
    /// The CA that signed the server certificate: what clients verify the server with.
    pub const CA: &str = "ca.crt";
    /// The CA that signs client certificates (the cluster's own): PostgreSQL's `ssl_ca_file`.
    pub const CLIENT_CA: &str = "client-ca.crt";
    /// The replication role's client certificate.
    pub const REPLICATION_CERT: &str = "replication.crt";
    /// Its private key.
    pub const REPLICATION_KEY: &str = "replication.key";
    /// Every key, in the order the instance manager copies them.
    pub const KEYS: [&str; 6] = [
        SERVER_CERT,
        SERVER_KEY,
        CA,
        CLIENT_CA,
        REPLICATION_CERT,
        REPLICATION_KEY,
    ];
    /// The cluster CA's Secret keys (`<cluster>-ca`, never mounted): the certificate and its key.
    pub const CA_KEY: &str = "ca.key";
}

/// The role replicas stream as, logging in with a client certificate of the cluster's CA.
pub const REPLICATION_USER: &str = "tusk_replication";

/// The group of the roles that log in over the network with a client certificate only
/// (`PostgresUser.spec.clientCertificate`): `pg_hba.conf` sends its members to `cert`.
pub const CLIENT_CERTIFICATE_GROUP: &str = "tusk_client_certificate";

/// The names of one cluster's children and pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    /// The cluster's own name.
    pub fn cluster(&self) -> &str {
        self.0
    }
    /// The superuser Secret (also the cluster's binding Secret).
    pub fn superuser_secret(&self) -> String {
        format!("{}-superuser", self.0)
    }
    /// The cluster's CA (`ca.crt`, `ca.key`): the operator's alone, never mounted.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.0)
    }
    /// The TLS Secret every pod mounts ([`tls`]).
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.0)
    }
    /// The cert-manager `Certificate` of the server, with `tls.mode: CertManager`.
    pub fn server_certificate(&self) -> String {
        format!("{}-server", self.0)
    }
    /// The Secret cert-manager stores that certificate in.
    pub fn server_certificate_secret(&self) -> String {
        format!("{}-server-cert", self.0)
    }
    /// The ConfigMap with `postgresql.conf` and `pg_hba.conf`.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.0)
    }
    /// The StatefulSet, the pods' ServiceAccount and the PodDisruptionBudget.
    pub fn workload(&self) -> String {
        self.0.to_owned()
    }
    /// The Service of the primary.
    pub fn rw_service(&self) -> String {
        format!("{}-rw", self.0)
    }
    /// The Service of the replicas.
    pub fn ro_service(&self) -> String {
        format!("{}-ro", self.0)
    }
    /// The headless Service of every pod (the StatefulSet's `serviceName`).
    pub fn pods_service(&self) -> String {
        format!("{}-pods", self.0)
    }
    /// The pod with `ordinal`.
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.0)
    }
    /// The Lease whose holder is the primary, and the Role and RoleBinding that let the pods
    /// read and renew it.
    pub fn primary_lease(&self) -> String {
        format!("{}-primary", self.0)
    }
    /// The pod that bootstraps the cluster and is its first primary.
    pub fn first_primary(&self) -> String {
        self.pod(FIRST_PRIMARY_ORDINAL)
    }
    /// The `PostgresUser` that `spec.bootstrap.initdb` makes.
    pub fn bootstrap_user(&self) -> String {
        format!("{}-owner", self.0)
    }
    /// The `PostgresDatabase` that `spec.bootstrap.initdb` makes.
    pub fn bootstrap_database(&self) -> String {
        format!("{}-database", self.0)
    }
    /// The host of the primary's Service in `namespace`, as pods and applications reach it.
    pub fn rw_host(&self, namespace: &str) -> String {
        format!("{}.{namespace}.svc", self.rw_service())
    }
}

/// The binding Secret of the `PostgresUser` named `user`.
pub fn binding_secret(user: &str) -> String {
    format!("{user}-binding")
}

/// The labels every child and pod of `cluster` carries.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "postgresql".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
        (CLUSTER_LABEL.to_owned(), cluster.to_owned()),
    ])
}

/// The selector of every pod of `cluster`.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CLUSTER_LABEL.to_owned(), cluster.to_owned())])
}

/// The selector of the pods of `cluster` that hold `role`.
pub fn role_selector(cluster: &str, role: Role) -> BTreeMap<String, String> {
    let mut selector = selector(cluster);
    selector.insert(ROLE_LABEL.to_owned(), role.label().to_owned());
    selector
}

/// `key=value,...` for a list or watch.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The label selector of everything Tusk manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}")
}

/// Selects objects that name a cluster but are not Tusk's: the Secrets cert-manager stores
/// server certificates in, and users' own certificate Secrets labelled for their cluster.
pub fn named_for_a_cluster_selector() -> String {
    format!("{CLUSTER_LABEL},{MANAGED_BY_LABEL}!={FIELD_MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_names() {
        let n = Names("db");
        assert_eq!(
            [
                n.superuser_secret(),
                n.config_map(),
                n.workload(),
                n.rw_service(),
                n.ro_service(),
                n.pods_service(),
                n.first_primary(),
                n.bootstrap_user(),
                n.bootstrap_database(),
                n.rw_host("shop"),
            ],
            [
                "db-superuser",
                "db-config",
                "db",
                "db-rw",
                "db-ro",
                "db-pods",
                "db-0",
                "db-owner",
                "db-database",
                "db-rw.shop.svc"
            ]
        );
        assert_eq!(binding_secret("app"), "app-binding");
    }

    #[test]
    fn selectors() {
        assert_eq!(
            label_selector(&role_selector("db", Role::Primary)),
            "tusk.dev/cluster=db,tusk.dev/role=primary"
        );
        assert_eq!(managed_selector(), "app.kubernetes.io/managed-by=tusk-operator");
        assert!(
            labels("db")
                .iter()
                .all(|(k, v)| selector("db").get(k).is_none_or(|s| s == v))
        );
    }

    #[test]
    fn paths_nest_where_the_pod_mounts_them() {
        use paths::*;
        assert!(PGDATA.starts_with(DATA_MOUNT));
        assert!(WALDIR.starts_with(WAL_MOUNT));
        assert!(SUPERUSER_PASSWORD_FILE.starts_with(SUPERUSER_DIR));
        assert!(SUPERUSER_PASSWORD_FILE.ends_with(PASSWORD_KEY));
        assert_eq!(
            INSTANCE_BINARY,
            format!("{TUSK_BIN_DIR}/{}", super::super::operator::NAME)
        );
    }
}
