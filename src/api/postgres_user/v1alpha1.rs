//! `PostgresUser` v1alpha1: a login role with a few attributes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{Binding, Condition, DNS_LABEL_PATTERN, RESERVED_ROLES, identifier_rules};

/// A login role in a `PostgresCluster`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresUser",
    namespaced,
    status = "PostgresUserStatus",
    derive = "PartialEq",
    shortname = "pguser",
    category = "tusk",
    deprecated = "tusk.dev/v1alpha1 PostgresUser is deprecated; use tusk.dev/v1 PostgresUser",
    doc = "A login role in a PostgresCluster (v1alpha1).",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Username",
        type_ = "string",
        json_path = ".spec.username",
        description = "The PostgreSQL role"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.cluster == oldSelf.cluster",
        "message": "cluster is immutable: a PostgresUser cannot move to another cluster; create a new one"
    },
    {
        "rule": "(has(self.username) ? self.username : '') == (has(oldSelf.username) ? oldSelf.username : '')",
        "message": "username is immutable: a role cannot be renamed; create a new PostgresUser"
    }
]))]
pub struct PostgresUserSpec {
    /// Name of the `PostgresCluster` in the same namespace. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub cluster: String,
    /// Name of the PostgreSQL role; defaults to the object's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("username", RESERVED_ROLES)))]
    pub username: Option<String>,
    /// Name of a Secret with key `password`; without it, Tusk generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub password_secret_name: Option<String>,
    /// Whether the role may log in (the default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<bool>,
    /// Most concurrent connections the role may open; -1 (the default) means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 10000))]
    pub connection_limit: Option<i32>,
}

/// The observed state of a `PostgresUser`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUserStatus {
    /// `Ready` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret with connection details for applications (servicebinding.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}
