//! `PostgresDatabase` v1alpha1: a database with an owner and extension names.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    Condition, DNS_LABEL_PATTERN, RESERVED_DATABASES, RESERVED_ROLES, identifier_rules,
};

/// A database in a `PostgresCluster`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresDatabase",
    namespaced,
    status = "PostgresDatabaseStatus",
    derive = "PartialEq",
    shortname = "pgdb",
    category = "tusk",
    deprecated = "tusk.dev/v1alpha1 PostgresDatabase is deprecated; use tusk.dev/v1 PostgresDatabase",
    doc = "A database in a PostgresCluster (v1alpha1).",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.name",
        description = "The PostgreSQL database"
    ),
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".spec.owner",
        description = "Owner role"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.cluster == oldSelf.cluster",
        "message": "cluster is immutable: a PostgresDatabase cannot move to another cluster; create a new one"
    },
    {
        "rule": "(has(self.name) ? self.name : '') == (has(oldSelf.name) ? oldSelf.name : '')",
        "message": "name is immutable: Tusk does not rename databases"
    }
]))]
pub struct PostgresDatabaseSpec {
    /// Name of the `PostgresCluster` in the same namespace. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub cluster: String,
    /// Name of the database; defaults to the object's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("name", RESERVED_DATABASES)))]
    pub name: Option<String>,
    /// Role that owns the database.
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("owner", RESERVED_ROLES)))]
    pub owner: String,
    /// Names of extensions to create in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 64))]
    pub extensions: Option<Vec<String>>,
}

/// The observed state of a `PostgresDatabase`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabaseStatus {
    /// `Ready` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
