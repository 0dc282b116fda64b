//! `PostgresCluster` v1: the storage version, and the hub every other version converts through.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::postgres_rules;
use crate::api::common::{
    BackupConfiguration, BackupTarget, Binding, Condition, IMAGE_PATTERN, MAX_INSTANCES, MAX_POSTGRES_MAJOR,
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
    },
    {
        "rule": "!has(self.replication) || !has(self.replication.synchronous) || (has(self.instances) && self.replication.synchronous.number < self.instances)",
        "message": "replication.synchronous.number must be less than instances: it counts replicas, and the primary is one of the instances"
    },
    {
        "rule": "!has(self.replication) || !has(self.replication.synchronous) || !has(self.postgres.parameters) || !('synchronous_standby_names' in self.postgres.parameters)",
        "message": "postgres.parameters may not set synchronous_standby_names while replication.synchronous is set: Tusk names the standbys from replication.synchronous; keep one of the two"
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
    /// How long Tusk waits, after the primary's Lease expired (5 s without a renewal), before it
    /// promotes a replica: `0s` (the default) fails over as soon as the primary is known gone;
    /// a longer delay rides out short outages at the cost of a longer one when the primary is
    /// truly lost. A number with `s` or `m`, such as `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), regex(pattern = FAILOVER_DELAY_PATTERN))]
    pub failover_delay: Option<String>,
    /// Asks for a switchover: the named instance (a pod of this cluster, such as `db-1`) becomes
    /// the primary, with no committed transaction lost. Each value is carried out once and the
    /// outcome is in `status.switchover`; to ask again for an instance named before, set another
    /// or remove the field first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Switchover>,
    /// Streaming replication between the instances. Each replica always streams through a
    /// replication slot of its own on the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// Where the instances run. By default they spread across nodes (preferred pod
    /// anti-affinity on `kubernetes.io/hostname`) and across zones (a topology spread
    /// constraint on `topology.kubernetes.io/zone`, where nodes have that label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Who may reach the instances over the network. Off by default: without it, Tusk makes no
    /// NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// A NetworkPolicy `<cluster>` that admits, to the cluster's pods, only the operator (PostgreSQL
/// and the instance manager), the cluster's own pods (replication), the clients listed
/// (PostgreSQL), and anyone to `/metrics` (port 8443, which checks each caller's token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Keep the NetworkPolicy. False (or no `networkPolicy`) deletes the one Tusk made.
    pub enabled: bool,
    /// Who else may connect to PostgreSQL (port 5432), as NetworkPolicy peers: pods by label
    /// (in the cluster's namespace), namespaces by label, both together, or address blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub allowed_clients: Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>,
}

/// Where the instances run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// `Preferred` (the default): instances go to different nodes when they can. `Required`:
    /// never two on one node, so an instance waits (Pending) when no node is free. `Disabled`:
    /// no anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    /// The node label that keeps instances apart; `kubernetes.io/hostname` by default (one node
    /// each). `topology.kubernetes.io/zone` keeps them in different zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 316))]
    pub topology_key: Option<String>,
    /// Replaces Tusk's zone spread with these constraints (an empty list: none). The label
    /// selector of each may be left out: Tusk fills in the cluster's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<k8s_openapi::api::core::v1::TopologySpreadConstraint>>,
    /// Only nodes with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the instances tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
}

/// How strictly instances keep to different nodes (or `topologyKey` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AntiAffinity {
    /// When the scheduler can.
    Preferred,
    /// Always: an instance that cannot be placed apart stays Pending.
    Required,
    /// Not at all.
    Disabled,
}

/// Streaming replication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// Synchronous replication: a commit returns only once enough replicas have it on disk.
    /// Without it replication is asynchronous, and a failover may lose the last commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<Synchronous>,
}

/// Synchronous replication: PostgreSQL's `synchronous_standby_names`, kept by Tusk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Synchronous {
    /// `Any` (quorum: any `number` replicas) or `First` (the first `number` in instance order).
    pub method: SynchronousMethod,
    /// How many replicas must have each commit; less than `instances`.
    #[schemars(range(min = 1, max = 8))]
    pub number: i32,
    /// `Required` (the default): a commit waits until `number` replicas have it, even when that
    /// many are not there, and a failover only promotes a replica known to have every
    /// acknowledged commit. `Preferred`: only the replicas that stream count, so the primary
    /// goes on alone when none does, and acknowledged commits may be lost in a failover then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_durability: Option<DataDurability>,
}

/// How synchronous replicas are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SynchronousMethod {
    /// Any `number` of the replicas (a quorum).
    Any,
    /// The first `number` replicas, by instance name.
    First,
}

/// What synchronous replication guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataDurability {
    /// Never acknowledge a commit fewer than `number` replicas have.
    Required,
    /// Acknowledge once the streaming replicas (up to `number`) have it.
    Preferred,
}

/// `failoverDelay`: a number of seconds or minutes.
pub const FAILOVER_DELAY_PATTERN: &str = r"^[0-9]{1,5}(s|m)$";

/// A switchover the user asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Switchover {
    /// The instance (pod) to promote.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub to: String,
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

/// How the first instance gets its data. Set exactly one of `initdb`, `fromBackup` or
/// `recovery`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.initdb), has(self.fromBackup), has(self.recovery)].filter(x, x).size() == 1",
    "message": "bootstrap: set exactly one of initdb, fromBackup or recovery"
}]))]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Start an empty cluster with `initdb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitDb>,
    /// Restore the cluster from a completed `PostgresBackup`, replaying its archived WAL to the
    /// end (the same as `recovery.backup` with no target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
    /// Restore the cluster from a backup and replay archived WAL up to a target: point-in-time
    /// recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

/// A restore: which backups, and how far to replay. Set exactly one of `backup` or `source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.backup) != has(self.source)",
    "message": "recovery: set exactly one of backup or source"
}]))]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// A completed `PostgresBackup` in the same namespace; the WAL comes from where its cluster
    /// archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupReference>,
    /// Backups in an object store, such as another cluster's, possibly in another Kubernetes
    /// cluster; the newest backup that is consistent before the target is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RecoverySource>,
    /// Where replay stops; the end of the archived WAL when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,
}

/// A `PostgresBackup` by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupReference {
    /// Name of a completed `PostgresBackup` in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Another cluster's backups in an object store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySource {
    /// The store, as the source cluster's `spec.backup.target` names it; its credentials Secret
    /// must be in this cluster's namespace.
    pub target: BackupTarget,
    /// The name of the cluster whose backups these are (its objects are below `path/<name>/`).
    #[schemars(length(min = 1, max = 63), regex(pattern = crate::api::common::DNS_LABEL_PATTERN))]
    pub cluster_name: String,
}

/// Where replay stops. Set at most one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.time), has(self.lsn), has(self.xid), has(self.name)].filter(x, x).size() <= 1",
    "message": "recovery.target: set at most one of time, lsn, xid or name"
}]))]
#[serde(deny_unknown_fields)]
pub struct RecoveryTarget {
    /// Replay transactions committed before this time (RFC 3339, such as `2026-12-01T10:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub time: Option<String>,
    /// Replay up to this WAL location, such as `0/3000028`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 17), regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub lsn: Option<String>,
    /// Replay transactions before this transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), regex(pattern = r"^[0-9]+$"))]
    pub xid: Option<String>,
    /// Replay up to this restore point, made with `pg_create_restore_point`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
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
    "message": "tls.secretName is required when tls.mode is Provided, and not allowed with any other mode"
}, {
    "rule": "self.mode == 'CertManager' ? has(self.issuerRef) : !has(self.issuerRef)",
    "message": "tls.issuerRef is required when tls.mode is CertManager, and not allowed with any other mode"
}]))]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// `Disabled`: no TLS. `Operator`: Tusk issues a certificate. `Provided`: use `secretName`.
    /// `CertManager`: cert-manager issues it from `issuerRef`.
    pub mode: TlsMode,
    /// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt` (the CA that signed
    /// `tls.crt`); only with mode `Provided`. Label it `tusk.dev/cluster: <cluster>` and a
    /// change is served at once; otherwise at the next resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// The cert-manager issuer of the server certificate; only with mode `CertManager`. Tusk
    /// keeps a cert-manager `Certificate` named `<cluster>-server` for the names its own
    /// certificate would have, and serves what cert-manager stores in the Secret
    /// `<cluster>-server-cert`, renewals included. The issuer must store `ca.crt` (the CA and
    /// SelfSigned issuers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct IssuerRef {
    /// The issuer's name; an `Issuer` must be in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`; another kind for an external issuer of `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: Option<String>,
    /// The API group of the issuer: `cert-manager.io` (the default), or an external issuer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub group: Option<String>,
}

/// Where the server certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// No TLS; connections are plain text.
    Disabled,
    /// Tusk issues and rotates a certificate signed by the cluster's own CA.
    Operator,
    /// The certificate comes from a Secret the user manages.
    Provided,
    /// cert-manager issues and renews the certificate from `issuerRef`.
    CertManager,
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
    /// Continuous archiving and backups, when the cluster has `spec.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// Each instance as its instance manager last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub instance_status: Option<Vec<InstanceStatus>>,
    /// The instance Tusk is making the primary: the same as `currentPrimary` once it is, another
    /// during a failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// The timeline the primary writes; each promotion starts a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// The latest promotion of a replica: which, why and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion: Option<Promotion>,
    /// How the switchover of `spec.switchover` went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
}

/// A promotion of a replica to primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// The instance promoted.
    pub instance: String,
    /// The primary before it, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `Failover` (the primary was lost) or `Switchover` (asked for).
    pub reason: String,
    /// When the operator named it, RFC 3339.
    pub time: String,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the primary before (`from`) was first seen running as a replica on the new primary's
    /// timeline, RFC 3339; unset until it is. The `Rejoined` Event is recorded once, when this is
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoined_at: Option<String>,
}

/// How a switchover went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    /// The instance asked for (`spec.switchover.to`).
    pub to: String,
    /// `Pending` (waiting for the instance to be able to take over), `Running`, `Completed` or
    /// `Failed`.
    pub phase: String,
    /// What happened, or why it waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One instance as its instance manager last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The pod's name.
    pub name: String,
    /// `primary` or `replica` as PostgreSQL says (`pg_is_in_recovery`), or `unknown` when the
    /// instance manager or PostgreSQL did not answer.
    pub role: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// The timeline it writes or receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// How far its WAL goes: a primary's write position, a replica's received position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// A replica's replayed position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_lsn: Option<String>,
    /// Bytes of WAL a replica has not received yet, behind the primary's write position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Why the role is `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the instance last fenced itself: as the primary it could not keep the primary's
    /// Lease (cut off from the API server, or stalled), so it stopped PostgreSQL at once, before
    /// a replica could be promoted. Each new fence is also a `Fenced` Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub fenced_at: Option<String>,
    /// When the instance was last brought onto the primary's timeline: its WAL went past the
    /// point where that timeline forked off (it was the primary before a failover, or a replica
    /// that received more than the one promoted), so it was rewound with `pg_rewind`, or cloned
    /// afresh with its old data directory kept aside. Each one is also a `Rewound` Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub rewound_at: Option<String>,
    /// The image its instance manager was copied from, as its pod was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_manager: Option<String>,
    /// Whether that is an older instance manager than the operator deploys: the pod takes the
    /// current one when the rolling update restarts it (replicas first, the primary last), as
    /// `spec.updateStrategy` allows. An operator upgrade that keeps the instance manager leaves
    /// this `false` and restarts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_manager_outdated: Option<bool>,
}

/// What a cluster's archive holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The earliest time the cluster can be restored to: the stop of its oldest completed
    /// backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub first_recoverability_point: Option<String>,
    /// The last WAL file the primary archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_archived_wal_time: Option<String>,
    /// The last WAL file that failed to archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_failed_wal_time: Option<String>,
    /// The newest completed `PostgresBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_successful_backup_time: Option<String>,
}
