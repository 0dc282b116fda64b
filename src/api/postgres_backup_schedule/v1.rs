//! `PostgresBackupSchedule` v1: the storage version.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    BackupMethod, BackupTarget, CRON_PATTERN, ClusterReference, Condition, RETENTION_PATTERN,
};

/// Backups of a `PostgresCluster` on a cron schedule, like a CronJob: each run creates a
/// `PostgresBackup`, and old ones are pruned by the retention rules.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1",
    kind = "PostgresBackupSchedule",
    namespaced,
    status = "PostgresBackupScheduleStatus",
    derive = "PartialEq",
    shortname = "pgbackupschedule",
    shortname = "pgbs",
    category = "tusk",
    doc = "Backups of a PostgresCluster on a cron schedule, like a CronJob: each run creates a PostgresBackup, and old ones are pruned by the retention rules.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether runs are suspended"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "When the last run was scheduled"
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
    /// The cluster to back up. Immutable.
    pub cluster: ClusterReference,
    /// When to run: five cron fields (minute hour day-of-month month day-of-week) or a macro
    /// such as `@daily`.
    #[schemars(length(max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone of the schedule, for example `Europe/Paris`; UTC when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+/-]*$"))]
    pub time_zone: Option<String>,
    /// When true, no new runs start; runs in progress finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// How each run copies the data: `basebackup` (the default) or `dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<BackupMethod>,
    /// Where runs write; the cluster's `spec.backup.target` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// Which completed backups of this schedule to keep; all of them when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// Which backups of a schedule to keep. A backup is deleted once either rule lets it go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.keepLast) || has(self.maxAge)",
    "message": "retention: set keepLast, maxAge or both; omit retention to keep every backup"
}]))]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep this many of the newest completed backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: Option<i32>,
    /// Delete backups older than this, for example `30d`, `8w` or `6m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RETENTION_PATTERN))]
    pub max_age: Option<String>,
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
    /// When the last successful run completed, in RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_successful_time: Option<String>,
    /// When the next run is due, in RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_schedule_time: Option<String>,
    /// Name of the `PostgresBackup` the last run created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
}
