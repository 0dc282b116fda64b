//! `PostgresCluster` v1beta1: storage and PostgreSQL settings grouped, backups added.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{no_downgrade_rule, postgresql_rules};
use crate::api::common::{
    BackupConfiguration, Binding, Condition, MAX_INSTANCES, MAX_POSTGRES_MAJOR, MIN_POSTGRES_MAJOR,
    VolumeSpec,
};

/// A PostgreSQL cluster: one primary and zero or more streaming replicas.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1beta1",
    kind = "PostgresCluster",
    namespaced,
    status = "PostgresClusterStatus",
    derive = "PartialEq",
    shortname = "pgc",
    shortname = "pgcluster",
    category = "tusk",
    deprecated = "tusk.dev/v1beta1 PostgresCluster is deprecated; use tusk.dev/v1 PostgresCluster",
    doc = "A PostgreSQL cluster: one primary and zero or more streaming replicas (v1beta1).",
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.instances"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".spec.postgresVersion",
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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [no_downgrade_rule("postgresVersion")]))]
#[serde(deny_unknown_fields)]
pub struct PostgresClusterSpec {
    /// PostgreSQL major version. It may go up (a major upgrade) but never down.
    #[schemars(range(min = MIN_POSTGRES_MAJOR, max = MAX_POSTGRES_MAJOR))]
    pub postgres_version: i32,
    /// Number of PostgreSQL instances: one primary plus `instances - 1` streaming replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_INSTANCES), extend("default" = 1))]
    pub instances: Option<i32>,
    /// The data volume of each instance.
    pub storage: VolumeSpec,
    /// PostgreSQL configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresqlSpec>,
    /// CPU and memory for each PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where and how long to keep backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfiguration>,
}

/// PostgreSQL configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = postgresql_rules()))]
pub struct PostgresqlSpec {
    /// `postgresql.conf` parameters, by name. Tusk-managed parameters such as `port` are refused.
    #[schemars(extend("maxProperties" = 256))]
    pub parameters: BTreeMap<String, String>,
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
    /// The Secret with superuser connection details (servicebinding.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}
