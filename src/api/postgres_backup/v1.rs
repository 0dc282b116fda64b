//! `PostgresBackup` v1: the storage version.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{BackupMethod, BackupTarget, ClusterReference, Condition};

/// One backup run of a `PostgresCluster`, like a Job: create it to take a backup; its status
/// says how it went and where the backup is.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1",
    kind = "PostgresBackup",
    namespaced,
    status = "PostgresBackupStatus",
    derive = "PartialEq",
    shortname = "pgbackup",
    category = "tusk",
    doc = "One backup run of a PostgresCluster, like a Job: create it to take a backup; its status says how it went and where the backup is.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Method",
        type_ = "string",
        json_path = ".spec.method",
        description = "How the backup copies data"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the run is"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startedAt",
        description = "When the run started"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "spec is immutable: a PostgresBackup records one run; create a new PostgresBackup to back up again"
}]))]
#[serde(deny_unknown_fields)]
pub struct PostgresBackupSpec {
    /// The cluster to back up.
    pub cluster: ClusterReference,
    /// How to copy the data: `basebackup` (the default) or `dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "basebackup"))]
    pub method: Option<BackupMethod>,
    /// Where to write this backup; the cluster's `spec.backup.target` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// Which instance takes it: `PreferReplica` (the default: a ready replica, else the primary)
    /// or `Primary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<BackupInstance>,
}

/// Which instance takes a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupInstance {
    /// A ready replica, so the primary does no extra work; the primary when none is ready.
    PreferReplica,
    /// The primary.
    Primary,
}

/// Where a backup run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Waiting to start.
    Pending,
    /// Copying data.
    Running,
    /// Finished; the backup is usable.
    Completed,
    /// Finished without a usable backup; see the conditions.
    Failed,
}

/// The observed state of a `PostgresBackup`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// `Ready` (the backup completed) and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// When the run started, in RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub started_at: Option<String>,
    /// When the run finished, in RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completed_at: Option<String>,
    /// Where the backup is: a path in the volume or an `s3://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Size of the backup in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size_bytes: Option<i64>,
    /// First write-ahead log segment needed to restore the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_wal: Option<String>,
    /// Last write-ahead log segment needed to restore the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_wal: Option<String>,
    /// The WAL location the backup starts at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_lsn: Option<String>,
    /// The WAL location from which a restore of the backup is consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    /// The timeline the backup was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// The pod that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The PostgreSQL version it was taken from, as `postgres --version` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// Why it failed, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
