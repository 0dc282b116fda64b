//! `PostgresDatabase` v1: the storage version.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    ClusterReference, Condition, RESERVED_DATABASES, RESERVED_ROLES, ReclaimPolicy, identifier_rules,
};

/// A database in a `PostgresCluster`, with its owner and extensions.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1",
    kind = "PostgresDatabase",
    namespaced,
    status = "PostgresDatabaseStatus",
    derive = "PartialEq",
    shortname = "pgdb",
    category = "tusk",
    doc = "A database in a PostgresCluster, with its owner and extensions.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.databaseName",
        description = "The PostgreSQL database"
    ),
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".spec.owner",
        description = "Owner role"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the database is in place"
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
        "rule": "(has(self.databaseName) ? self.databaseName : '') == (has(oldSelf.databaseName) ? oldSelf.databaseName : '')",
        "message": "databaseName is immutable: Tusk does not rename databases"
    },
    {
        "rule": "(has(self.encoding) ? self.encoding : '') == (has(oldSelf.encoding) ? oldSelf.encoding : '') && (has(self.locale) ? self.locale : '') == (has(oldSelf.locale) ? oldSelf.locale : '')",
        "message": "encoding and locale are immutable: PostgreSQL fixes them when the database is created"
    }
]))]
pub struct PostgresDatabaseSpec {
    /// The cluster the database lives in. Immutable.
    pub cluster: ClusterReference,
    /// Name of the database; defaults to the object's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("databaseName", RESERVED_DATABASES)))]
    pub database_name: Option<String>,
    /// Role that owns the database, usually one managed by a `PostgresUser`.
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("owner", RESERVED_ROLES)))]
    pub owner: String,
    /// Extensions to create in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"], "maxItems" = 64))]
    pub extensions: Option<Vec<Extension>>,
    /// Character encoding, for example `UTF8` (the default is the cluster's). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub encoding: Option<String>,
    /// Locale, for example `C.UTF-8` (the default is the cluster's). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.@-]+$"))]
    pub locale: Option<String>,
    /// What happens to the database when this object is deleted: `Retain` (the default) keeps it,
    /// `Delete` drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent means Retain. There is deliberately no schema default: the apiserver would add it to
    // objects written at older versions, which cannot hold it, so every read at those versions
    // would carry a conversion annotation the user never wrote.
    pub reclaim_policy: Option<ReclaimPolicy>,
}

/// A PostgreSQL extension in a database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// Extension name, for example `pg_trgm`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9_][a-z0-9_-]*$"))]
    pub name: String,
    /// Version to install; the default version of the image when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
    /// Schema to install it into; `public` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub schema: Option<String>,
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
