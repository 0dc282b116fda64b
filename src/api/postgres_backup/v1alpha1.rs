//! `PostgresBackup` v1alpha1: a backup of a cluster by name.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::v1::BackupPhase;
use crate::api::common::{BackupMethod, Condition, DNS_LABEL_PATTERN};

/// One backup run of a `PostgresCluster`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresBackup",
    namespaced,
    status = "PostgresBackupStatus",
    derive = "PartialEq",
    shortname = "pgbackup",
    category = "tusk",
    deprecated = "tusk.dev/v1alpha1 PostgresBackup is deprecated; use tusk.dev/v1 PostgresBackup",
    doc = "One backup run of a PostgresCluster (v1alpha1).",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the run is"
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
    /// Name of the `PostgresCluster` to back up, in the same namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub cluster: String,
    /// How to copy the data: `basebackup` (the default) or `dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "basebackup"))]
    pub method: Option<BackupMethod>,
}

/// The observed state of a `PostgresBackup`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// `Ready` and `Degraded`, each with a reason and a message.
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
    /// Where the backup is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}
