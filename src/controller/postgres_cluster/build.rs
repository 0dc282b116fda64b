//! The desired children of a `PostgresCluster`: pure functions from the cluster (and the one
//! value read from the cluster, the superuser password) to Kubernetes objects.
//!
//! The workload is a StatefulSet, not Pods plus PVCs managed one by one. A StatefulSet gives Tusk
//! stable pod names (`<cluster>-0` is the first primary), one PVC per pod from a template, the PVC
//! retention policy that `storage.reclaimPolicy` maps onto (`persistentVolumeClaimRetentionPolicy`,
//! GA since Kubernetes 1.32), ordered start-up, and rolling updates driven by the pod template
//! hash, all from the kube-controller-manager. Pods plus PVCs (CloudNativePG's choice) would let
//! Tusk pick which pod to restart first during a switchover; when failover arrives, the rollout
//! can switch to `updateStrategy: OnDelete` and keep the StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use serde_json::json;

use crate::api::{
    common::ReclaimPolicy, postgres_cluster::v1::PostgresCluster, postgres_database::v1::PostgresDatabase,
    postgres_user::v1::PostgresUser,
};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "tusk-operator";
/// Label with the cluster's name, on every child and every pod.
pub const CLUSTER_LABEL: &str = "tusk.dev/cluster";
/// Label with the pod's role: `primary` or `replica`. The `-rw` and `-ro` Services select on it.
pub const ROLE_LABEL: &str = "tusk.dev/role";
/// Pod-template annotation with a hash of the configuration; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "tusk.dev/config-hash";
/// The PostgreSQL port.
pub const POSTGRES_PORT: i32 = 5432;
/// The instance manager's health and metrics port.
pub const STATUS_PORT: i32 = 8000;
/// Where the instance manager binary is copied to in each pod.
pub const TUSK_BIN_DIR: &str = "/tusk/bin";
/// The PostgreSQL superuser's name.
pub const SUPERUSER: &str = "postgres";

/// What the builders need besides the cluster.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The operator's image; an init container copies the binary from it.
    pub operator_image: String,
    /// The PostgreSQL image when a cluster names none; `{major}` is replaced by the version.
    pub postgres_image: String,
    /// The user (and group, and `fsGroup`) PostgreSQL pods run as: the image's `postgres` user.
    /// `None` leaves it to the platform, as OpenShift's `restricted-v2` SCC assigns one.
    pub postgres_uid: Option<i64>,
}

/// The `postgres` user of the default image (`docker.io/library/postgres`).
pub const DEFAULT_POSTGRES_UID: i64 = 999;

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            operator_image: crate::DEFAULT_OPERATOR_IMAGE.to_owned(),
            postgres_image: crate::DEFAULT_POSTGRES_IMAGE.to_owned(),
            postgres_uid: Some(DEFAULT_POSTGRES_UID),
        }
    }
}

/// Every child a cluster should have.
#[derive(Clone, Debug)]
pub struct Children {
    /// The superuser Secret.
    pub superuser: Secret,
    /// The PostgreSQL configuration.
    pub config: ConfigMap,
    /// The account the pods run as.
    pub service_account: ServiceAccount,
    /// The workload.
    pub statefulset: StatefulSet,
    /// `-rw`, `-ro` and the headless `-pods`.
    pub services: [Service; 3],
    /// Keeps voluntary disruptions to one pod at a time.
    pub pdb: PodDisruptionBudget,
    /// The application role and database `spec.bootstrap.initdb` asks for, as a `PostgresUser`
    /// and a `PostgresDatabase` the SQL controllers converge like any other.
    pub bootstrap: Option<(PostgresUser, PostgresDatabase)>,
}

/// Names of a cluster's children.
pub fn superuser_secret_name(cluster: &str) -> String {
    format!("{cluster}-superuser")
}
/// The ConfigMap's name.
pub fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// The headless Service's name (also the StatefulSet's `serviceName`).
pub fn pods_service_name(cluster: &str) -> String {
    format!("{cluster}-pods")
}
/// The name of the pod with `ordinal`.
pub fn pod_name(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// Builds every child of `cluster`; `password` is the superuser's password.
pub fn children(cluster: &PostgresCluster, password: &str, config: &BuildConfig) -> Children {
    let configmap = desired_config(cluster);
    let hash = config_hash(&configmap);
    Children {
        superuser: desired_superuser_secret(cluster, password),
        statefulset: desired_statefulset(cluster, config, &hash),
        config: configmap,
        service_account: desired_service_account(cluster),
        services: desired_services(cluster),
        pdb: desired_pdb(cluster),
        bootstrap: desired_bootstrap(cluster),
    }
}

/// The `PostgresUser` `<cluster>-owner` and `PostgresDatabase` `<cluster>-database` for
/// `spec.bootstrap.initdb.database` and its `owner` (the database's name when absent). The
/// user's binding Secret, `<cluster>-owner-binding`, is how applications connect.
pub fn desired_bootstrap(cluster: &PostgresCluster) -> Option<(PostgresUser, PostgresDatabase)> {
    let initdb = cluster.spec.bootstrap.as_ref()?.initdb.as_ref()?;
    let database = initdb.database.clone()?;
    let owner = initdb.owner.clone().unwrap_or_else(|| database.clone());
    let name = name_of(cluster);
    let mut user: PostgresUser = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresUser",
        "metadata": {},
        "spec": {
            "cluster": {"name": name},
            "roleName": owner,
            "privileges": [{"database": database, "privileges": ["CONNECT"]}],
        },
    }))
    .expect("a PostgresUser is well-formed");
    user.metadata = meta(cluster, format!("{name}-owner"));
    let mut db: PostgresDatabase = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresDatabase",
        "metadata": {},
        "spec": {"cluster": {"name": name}, "databaseName": database, "owner": owner},
    }))
    .expect("a PostgresDatabase is well-formed");
    db.metadata = meta(cluster, format!("{name}-database"));
    Some((user, db))
}

fn name_of(cluster: &PostgresCluster) -> String {
    cluster.metadata.name.clone().expect("a stored object has a name")
}

/// The labels every child and pod carries.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "postgresql".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (CLUSTER_LABEL.to_owned(), cluster.to_owned()),
    ])
}

fn owner(cluster: &PostgresCluster) -> OwnerReference {
    cluster
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid")
}

fn meta(cluster: &PostgresCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(labels(&name_of(cluster))),
        owner_references: Some(vec![owner(cluster)]),
        ..ObjectMeta::default()
    }
}

/// The superuser Secret, in the `kubernetes.io/basic-auth` shape, with the entries of a
/// servicebinding.io binding (`type`, `provider`, `host`, `port`, `database`, `uri`) so that
/// `status.binding.name` can name it.
pub fn desired_superuser_secret(cluster: &PostgresCluster, password: &str) -> Secret {
    let name = name_of(cluster);
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or("default");
    let entries =
        crate::controller::sql_target::binding_entries(&crate::controller::sql_target::BindingData {
            cluster: &name,
            namespace,
            username: SUPERUSER,
            password,
            database: "postgres",
        });
    Secret {
        metadata: meta(cluster, superuser_secret_name(&name)),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        data: Some(entries),
        ..Secret::default()
    }
}

/// Parameters Tusk sets in the ConfigMap. The CRD refuses them in `spec.postgres.parameters`,
/// together with those the instance manager sets on `postgres`'s command line for its pod
/// (`listen_addresses`, `port`, `unix_socket_directories`) and the files it places
/// (`hba_file`, `config_file`, `data_directory`).
fn managed_parameters() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("password_encryption", "'scram-sha-256'".to_owned()),
        ("wal_level", "'replica'".to_owned()),
        ("hot_standby", "'on'".to_owned()),
    ])
}

/// Quotes a parameter value for `postgresql.conf`.
pub fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The configuration: `postgresql.conf` (Tusk's parameters, then the user's) and `pg_hba.conf`.
pub fn desired_config(cluster: &PostgresCluster) -> ConfigMap {
    let name = name_of(cluster);
    let mut conf = String::from("# Written by Tusk; edit spec.postgres.parameters instead.\n");
    for (key, value) in managed_parameters() {
        conf.push_str(&format!("{key} = {value}\n"));
    }
    for (key, value) in cluster.spec.postgres.parameters.iter().flatten() {
        conf.push_str(&format!("{key} = {}\n", conf_value(value)));
    }
    // Local connections need the password too: the instance manager has it, and the user a
    // process in the pod runs as need not be called postgres (OpenShift assigns any UID).
    let hba = "# Written by Tusk.\n\
               local all all scram-sha-256\n\
               host replication all all scram-sha-256\n\
               host all all all scram-sha-256\n";
    ConfigMap {
        metadata: meta(cluster, config_name(&name)),
        data: Some(BTreeMap::from([
            ("postgresql.conf".to_owned(), conf),
            ("pg_hba.conf".to_owned(), hba.to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

/// A stable hash of the ConfigMap's data (FNV-1a, 64 bits): the same on every operator build, so
/// an operator upgrade alone never rolls the pods.
pub fn config_hash(config: &ConfigMap) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in config.data.iter().flatten() {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The account the PostgreSQL pods run as.
pub fn desired_service_account(cluster: &PostgresCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster, name_of(cluster)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The PostgreSQL image: the cluster's, or the default for its major version.
pub fn postgres_image(cluster: &PostgresCluster, config: &BuildConfig) -> String {
    match &cluster.spec.postgres.image {
        Some(image) => image.clone(),
        None => config
            .postgres_image
            .replace("{major}", &cluster.spec.postgres.version.to_string()),
    }
}

/// The workload.
pub fn desired_statefulset(
    cluster: &PostgresCluster,
    config: &BuildConfig,
    config_hash: &str,
) -> StatefulSet {
    let name = name_of(cluster);
    let spec = &cluster.spec;
    let selector = BTreeMap::from([(CLUSTER_LABEL.to_owned(), name.clone())]);
    let restricted = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let mut mounts = vec![
        json!({"name": "data", "mountPath": "/var/lib/postgresql/data"}),
        json!({"name": "config", "mountPath": "/etc/tusk/config", "readOnly": true}),
        json!({"name": "superuser", "mountPath": "/etc/tusk/superuser", "readOnly": true}),
        json!({"name": "tusk-bin", "mountPath": TUSK_BIN_DIR, "readOnly": true}),
        json!({"name": "run", "mountPath": "/var/run/postgresql"}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut claims = vec![claim("data", &spec.storage.data)];
    if let Some(wal) = &spec.storage.wal {
        mounts.push(json!({"name": "wal", "mountPath": "/var/lib/postgresql/wal"}));
        claims.push(claim("wal", wal));
    }
    let mut instance_args = vec![
        "instance".to_owned(),
        format!("--cluster={name}"),
        "--pgdata=/var/lib/postgresql/data/pgdata".to_owned(),
        "--config-dir=/etc/tusk/config".to_owned(),
        "--superuser-password-file=/etc/tusk/superuser/password".to_owned(),
        format!("--primary-host={name}-rw"),
        format!("--postgres-port={POSTGRES_PORT}"),
        format!("--status-port={STATUS_PORT}"),
        "--socket-dir=/var/run/postgresql".to_owned(),
    ];
    let initdb = spec.bootstrap.as_ref().and_then(|b| b.initdb.as_ref());
    if let Some(encoding) = initdb.and_then(|i| i.encoding.as_ref()) {
        instance_args.push(format!("--initdb-encoding={encoding}"));
    }
    if let Some(locale) = initdb.and_then(|i| i.locale.as_ref()) {
        instance_args.push(format!("--initdb-locale={locale}"));
    }
    // Checksums are on unless the cluster turns them off.
    if initdb.and_then(|i| i.data_checksums) != Some(false) {
        instance_args.push("--data-checksums".to_owned());
    }
    if spec.storage.wal.is_some() {
        instance_args.push("--waldir=/var/lib/postgresql/wal/pg_wal".to_owned());
    }
    let when_deleted = match spec.storage.reclaim_policy {
        Some(ReclaimPolicy::Delete) => "Delete",
        // Absent means Retain: a user's data outlives the cluster unless they ask otherwise.
        Some(ReclaimPolicy::Retain) | None => "Retain",
    };
    let probe = |path: &str, failures: i32| {
        json!({
            "httpGet": {"path": path, "port": STATUS_PORT},
            "periodSeconds": 10,
            "failureThreshold": failures,
        })
    };
    let mut pod_security = json!({
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if let Some(uid) = config.postgres_uid {
        pod_security["runAsUser"] = json!(uid);
        pod_security["runAsGroup"] = json!(uid);
        pod_security["fsGroup"] = json!(uid);
    }
    let mut statefulset: StatefulSet = serde_json::from_value(json!({
        "spec": {
            "replicas": spec.instances.unwrap_or(1),
            "serviceName": pods_service_name(&name),
            "selector": {"matchLabels": selector},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
            "template": {
                "metadata": {
                    "labels": labels(&name),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": pod_security,
                    "initContainers": [{
                        "name": "install-tusk",
                        "image": config.operator_image,
                        "command": ["/usr/local/bin/tusk-operator", "copy-binary", format!("--to={TUSK_BIN_DIR}/tusk-operator")],
                        "volumeMounts": [{"name": "tusk-bin", "mountPath": TUSK_BIN_DIR}],
                        "securityContext": restricted,
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                    }],
                    "containers": [{
                        "name": "postgres",
                        "image": postgres_image(cluster, config),
                        "command": [format!("{TUSK_BIN_DIR}/tusk-operator")],
                        "args": instance_args,
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                        ],
                        "ports": [
                            {"name": "postgres", "containerPort": POSTGRES_PORT},
                            {"name": "status", "containerPort": STATUS_PORT},
                        ],
                        "startupProbe": probe("/healthz", 360),
                        "livenessProbe": probe("/healthz", 3),
                        "readinessProbe": probe("/readyz", 3),
                        "resources": spec.resources,
                        "securityContext": restricted,
                        "volumeMounts": mounts,
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": config_name(&name)}},
                        {"name": "superuser", "secret": {"secretName": superuser_secret_name(&name)}},
                        {"name": "tusk-bin", "emptyDir": {}},
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": claims,
        },
    }))
    .expect("the StatefulSet is well-formed");
    statefulset.metadata = meta(cluster, name);
    statefulset
}

fn claim(name: &str, volume: &crate::api::common::VolumeSpec) -> serde_json::Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": volume.size}},
    });
    if let Some(class) = &volume.storage_class_name {
        spec["storageClassName"] = json!(class);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

/// `-rw` (the primary), `-ro` (the replicas) and the headless `-pods` (every pod, ready or not,
/// for replication and the StatefulSet's DNS names).
pub fn desired_services(cluster: &PostgresCluster) -> [Service; 3] {
    let name = name_of(cluster);
    let service = |suffix: &str, role: Option<&str>, headless: bool| {
        let mut selector = BTreeMap::from([(CLUSTER_LABEL.to_owned(), name.clone())]);
        if let Some(role) = role {
            selector.insert(ROLE_LABEL.to_owned(), role.to_owned());
        }
        let mut spec = json!({
            "selector": selector,
            "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres"}],
        });
        if headless {
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = json!(true);
        }
        let mut s: Service = serde_json::from_value(json!({"spec": spec})).expect("a Service is well-formed");
        s.metadata = meta(cluster, format!("{name}-{suffix}"));
        s
    };
    [
        service("rw", Some("primary"), false),
        service("ro", Some("replica"), false),
        service("pods", None, true),
    ]
}

/// At most one pod of the cluster down at a time for voluntary disruptions (drains).
pub fn desired_pdb(cluster: &PostgresCluster) -> PodDisruptionBudget {
    let name = name_of(cluster);
    let mut pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {CLUSTER_LABEL: name}},
        },
    }))
    .expect("a PodDisruptionBudget is well-formed");
    pdb.metadata = meta(cluster, name);
    pdb
}
