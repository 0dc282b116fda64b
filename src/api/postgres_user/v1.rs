//! `PostgresUser` v1: the storage version.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    Binding, ClusterReference, Condition, RESERVED_ROLES, ReclaimPolicy, identifier_rules,
};

/// A login role in a `PostgresCluster`, with its password in a Secret and a servicebinding.io
/// Secret for applications.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1",
    kind = "PostgresUser",
    namespaced,
    status = "PostgresUserStatus",
    derive = "PartialEq",
    shortname = "pguser",
    category = "tusk",
    doc = "A login role in a PostgresCluster, with its password in a Secret and a servicebinding.io Secret for applications.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The PostgresCluster"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".status.roleName",
        description = "The PostgreSQL role"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the role is in place"
    ),
    printcolumn(
        name = "Binding",
        type_ = "string",
        json_path = ".status.binding.name",
        description = "Secret with connection details"
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
        "rule": "(has(self.roleName) ? self.roleName : '') == (has(oldSelf.roleName) ? oldSelf.roleName : '')",
        "message": "roleName is immutable: a role cannot be renamed; create a new PostgresUser"
    },
    {
        "rule": "!has(self.roleName) || !has(self.memberOf) || !(self.roleName in self.memberOf)",
        "message": "memberOf may not include the role itself (roleName); allowed are other roles"
    }
]))]
pub struct PostgresUserSpec {
    /// The cluster the role lives in. Immutable.
    pub cluster: ClusterReference,
    /// Name of the PostgreSQL role; defaults to the object's name. Any characters are allowed; Tusk
    /// quotes it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = identifier_rules("roleName", RESERVED_ROLES)))]
    pub role_name: Option<String>,
    /// A Secret the user provides with the password. Without it, Tusk generates a password into a
    /// Secret it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecret>,
    /// Whether the role may log in (the default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<bool>,
    /// Whether the role may create databases (the default is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub createdb: Option<bool>,
    /// Whether the role may create other roles (the default is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub createrole: Option<bool>,
    /// Whether the role inherits the privileges of roles it is a member of (the default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<bool>,
    /// Most concurrent connections the role may open; -1 (the default) means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 10000))]
    pub connection_limit: Option<i32>,
    /// When the password stops working, in RFC 3339. Without it the password never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub valid_until: Option<String>,
    /// Roles this role is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "maxItems" = 64))]
    pub member_of: Option<Vec<String>>,
    /// Privileges on databases of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["database"], "maxItems" = 256))]
    pub privileges: Option<Vec<DatabasePrivileges>>,
    /// What happens to the role when this object is deleted: `Delete` (the default) drops it after
    /// reassigning what it owns to the database owner, `Retain` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent means Delete. There is deliberately no schema default: the apiserver would add it to
    // objects written at older versions, which cannot hold it, so every read at those versions
    // would carry a conversion annotation the user never wrote.
    pub reclaim_policy: Option<ReclaimPolicy>,
    /// Issue the role a client certificate of the cluster's CA, into its binding Secret
    /// (`tls.crt`, `tls.key`, renewed like the cluster's own). Over the network the role then
    /// logs in with that certificate only; its password still works on the pods' own socket.
    /// The cluster must have TLS (not `spec.tls.mode: Disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<bool>,
}

/// A Secret that holds the role's password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecret {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret that holds the password (the default is `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// Privileges on one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct DatabasePrivileges {
    /// Name of the database.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// Privileges granted on it.
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub privileges: Vec<DatabasePrivilege>,
}

/// A privilege on a database, as in `GRANT ... ON DATABASE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DatabasePrivilege {
    /// Connect to the database.
    Connect,
    /// Create schemas in the database.
    Create,
    /// Create temporary tables.
    Temporary,
    /// Every privilege above.
    All,
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
    /// The PostgreSQL role this object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    /// `resourceVersion` of the password Secret last applied; a change means a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_version: Option<String>,
}
