//! `PostgresCluster` v1: the storage version, and the hub every other version converts through.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::postgres_rules;
use crate::api::common::{
    BackupConfiguration, Binding, Condition, IMAGE_PATTERN, MAX_INSTANCES, MAX_POSTGRES_MAJOR,
    MIN_POSTGRES_MAJOR, ReclaimPolicy, VolumeSpec,
};

/// A PostgreSQL cluster: one primary and zero or more streaming replicas, with their storage,
/// Services, credentials and backups.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1",
    kind = "PostgresCluster",
    namespaced,
    status = "PostgresClusterStatus",
    derive = "PartialEq",
    shortname = "pgc",
    shortname = "pgcluster",
    category = "tusk",
    doc = "A PostgreSQL cluster: one primary and zero or more streaming replicas, with storage, Services, credentials and backups.",
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.instances"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".spec.postgres.version",
        description = "PostgreSQL major version"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".spec.instances",
        description = "Desired instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "Instances ready to serve"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "Pod running the primary"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.bootstrap) == has(oldSelf.bootstrap) && (!has(self.bootstrap) || self.bootstrap == oldSelf.bootstrap)",
        "message": "bootstrap is immutable: it only applies when the cluster is first created"
    },
    {
        "rule": "!has(self.updateStrategy) || !has(self.updateStrategy.primaryUpdateMethod) || self.updateStrategy.primaryUpdateMethod != 'Switchover' || (has(self.instances) && self.instances >= 2)",
        "message": "updateStrategy.primaryUpdateMethod Switchover needs instances of 2 or more; with a single instance use Restart"
    }
]))]
pub struct PostgresClusterSpec {
    /// The PostgreSQL server: major version, image and configuration.
    pub postgres: PostgresSpec,
    /// Number of PostgreSQL instances: one primary plus `instances - 1` streaming replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_INSTANCES), extend("default" = 1))]
    pub instances: Option<i32>,
    /// Persistent volumes for data and, optionally, write-ahead log.
    pub storage: StorageSpec,
    /// CPU and memory for each PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the first instance gets its data. Immutable; only used when the cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// Where and how long to keep backups. `PostgresBackup` and `PostgresBackupSchedule` use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfiguration>,
    /// TLS for client connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Metrics collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// How Tusk rolls out changes that restart PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// When true, Tusk stops changing the cluster's children until it is set back to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = postgres_rules()))]
pub struct PostgresSpec {
    /// PostgreSQL major version. It may go up (a major upgrade) but never down.
    #[schemars(range(min = MIN_POSTGRES_MAJOR, max = MAX_POSTGRES_MAJOR))]
    pub version: i32,
    /// PostgreSQL container image, pinned by tag or digest. Defaults to the image Tusk ships for
    /// `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,
    /// `postgresql.conf` parameters, by name. Tusk-managed parameters such as `port` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 256))]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// Persistent volumes of each instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.wal) == has(oldSelf.wal)",
    "message": "wal cannot be added or removed after the cluster is created; it may only be resized"
}]))]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// The data volume (`PGDATA`).
    pub data: VolumeSpec,
    /// A separate volume for write-ahead log. Without it, WAL lives on the data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<VolumeSpec>,
    /// What happens to the volumes when the cluster is deleted: `Retain` (the default) keeps them,
    /// `Delete` removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent means Retain. There is deliberately no schema default: the apiserver would add it to
    // objects written at older versions, which cannot hold it, so every read at those versions
    // would carry a conversion annotation the user never wrote.
    pub reclaim_policy: Option<ReclaimPolicy>,
}

/// How the first instance gets its data. Set exactly one of `initdb` or `fromBackup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.initdb) != has(self.fromBackup)",
    "message": "bootstrap: set exactly one of initdb or fromBackup"
}]))]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Start an empty cluster with `initdb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitDb>,
    /// Restore the cluster from a completed `PostgresBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// Options for `initdb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct InitDb {
    /// An application database to create, owned by `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub database: Option<String>,
    /// Owner role of `database`; defaults to the database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub owner: Option<String>,
    /// Character encoding of the cluster, for example `UTF8` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub encoding: Option<String>,
    /// Locale of the cluster, for example `C.UTF-8` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.@-]+$"))]
    pub locale: Option<String>,
    /// Enable data page checksums (the default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_checksums: Option<bool>,
}

/// A backup to restore from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Name of a completed `PostgresBackup` in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub backup_name: String,
}

/// TLS for client connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.mode == 'Provided' ? has(self.secretName) : !has(self.secretName)",
    "message": "tls.secretName is required when tls.mode is Provided, and not allowed with Disabled or Operator"
}]))]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// `Disabled`: no TLS. `Operator`: Tusk issues a certificate. `Provided`: use `secretName`.
    pub mode: TlsMode,
    /// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and optionally `ca.crt`; only with
    /// mode `Provided`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

/// Where the server certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// No TLS; connections are plain text.
    Disabled,
    /// Tusk issues and rotates a self-signed certificate.
    Operator,
    /// The certificate comes from a Secret the user manages.
    Provided,
}

/// Metrics collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a Prometheus Operator `PodMonitor` for the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor: Option<bool>,
    /// A ConfigMap in the same namespace whose key `queries.yaml` adds custom metrics queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub custom_queries_config_map: Option<String>,
}

/// How changes that restart PostgreSQL are rolled out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `Unsupervised` (the default) updates the primary automatically after the replicas;
    /// `Supervised` waits for a user to do it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_update: Option<PrimaryUpdate>,
    /// `Switchover` (the default with 2 or more instances) moves the primary role to an updated
    /// replica first; `Restart` restarts the primary in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_update_method: Option<PrimaryUpdateMethod>,
}

/// Who updates the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PrimaryUpdate {
    /// Tusk updates the primary after the replicas.
    Unsupervised,
    /// A user triggers the primary update.
    Supervised,
}

/// How the primary is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PrimaryUpdateMethod {
    /// Promote an updated replica, then update the old primary.
    Switchover,
    /// Restart the primary in place.
    Restart,
}

/// The observed state of a `PostgresCluster`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of instances that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    /// Number of instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i32>,
    /// Name of the pod that runs the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// PostgreSQL major version the instances run now; differs from `spec.postgres.version`
    /// during a major upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<i32>,
    /// The Secret with superuser connection details (servicebinding.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}
