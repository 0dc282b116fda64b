//! `PostgresBackupSchedule` v1alpha1: a cron schedule with a count of backups to keep.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{CRON_PATTERN, Condition, DNS_LABEL_PATTERN};

/// Backups of a `PostgresCluster` on a cron schedule.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresBackupSchedule",
    namespaced,
    status = "PostgresBackupScheduleStatus",
    derive = "PartialEq",
    shortname = "pgbackupschedule",
    shortname = "pgbs",
    category = "tusk",
    deprecated = "tusk.dev/v1alpha1 PostgresBackupSchedule is deprecated; use tusk.dev/v1 PostgresBackupSchedule",
    doc = "Backups of a PostgresCluster on a cron schedule (v1alpha1).",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.cluster == oldSelf.cluster",
    "message": "cluster is immutable: a schedule cannot move to another cluster; create a new one"
}]))]
#[serde(deny_unknown_fields)]
pub struct PostgresBackupScheduleSpec {
    /// Name of the `PostgresCluster` to back up, in the same namespace. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub cluster: String,
    /// When to run: five cron fields or a macro such as `@daily`.
    #[schemars(length(max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// When true, no new runs start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Keep this many of the newest completed backups; all when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: Option<i32>,
}

/// The observed state of a `PostgresBackupSchedule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupScheduleStatus {
    /// `Ready` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run was scheduled, in RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_schedule_time: Option<String>,
}
