//! `PostgresCluster` v1alpha1: the first, flat shape of the API.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::common::{
    Binding, Condition, MAX_INSTANCES, MAX_POSTGRES_MAJOR, MAX_QUANTITY_LENGTH, MIN_POSTGRES_MAJOR,
    STORAGE_QUANTITY_PATTERN,
};

/// A PostgreSQL cluster: one primary and zero or more streaming replicas.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresCluster",
    namespaced,
    status = "PostgresClusterStatus",
    derive = "PartialEq",
    shortname = "pgc",
    shortname = "pgcluster",
    category = "tusk",
    deprecated = "tusk.dev/v1alpha1 PostgresCluster is deprecated; use tusk.dev/v1 PostgresCluster",
    doc = "A PostgreSQL cluster: one primary and zero or more streaming replicas (v1alpha1).",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "PostgreSQL major version"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Instances ready to serve"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "int(self.version) >= int(oldSelf.version)",
        "messageExpression": "'version cannot go down from ' + oldSelf.version + ' to ' + self.version + ': a major-version downgrade is not possible; allowed are ' + oldSelf.version + ' or higher'"
    },
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "storageClassName is immutable: a volume cannot move to another storage class; create a new cluster instead"
    },
    {
        "rule": "quantity(self.storageSize).compareTo(quantity(oldSelf.storageSize)) >= 0",
        "messageExpression": "'storageSize may grow but never shrink: it is ' + oldSelf.storageSize + ', so allowed values are ' + oldSelf.storageSize + ' or more'"
    }
]))]
#[schemars(transform = add_reserved_parameter_rules)]
pub struct PostgresClusterSpec {
    /// PostgreSQL major version as a string, for example `"16"`. It may go up but never down.
    pub version: MajorVersion,
    /// Number of PostgreSQL instances: one primary plus `replicas - 1` streaming replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_INSTANCES), extend("default" = 1))]
    pub replicas: Option<i32>,
    /// Size of each instance's data volume, a Kubernetes quantity such as `10Gi`.
    #[schemars(regex(pattern = STORAGE_QUANTITY_PATTERN), length(max = MAX_QUANTITY_LENGTH))]
    pub storage_size: String,
    /// StorageClass of the data volumes; the cluster default when omitted. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// `postgresql.conf` parameters, by name. Tusk-managed parameters such as `port` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 256))]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// A PostgreSQL major version written as a decimal string, the way v1alpha1 spelled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MajorVersion(pub i32);

impl fmt::Display for MajorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for MajorVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MajorVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        let canonical =
            !text.starts_with('0') && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<i32>() {
            Ok(major) if canonical => Ok(Self(major)),
            _ => Err(serde::de::Error::custom(format!(
                "version {text:?} is not a PostgreSQL major version; allowed are \"{MIN_POSTGRES_MAJOR}\" to \"{MAX_POSTGRES_MAJOR}\""
            ))),
        }
    }
}

impl JsonSchema for MajorVersion {
    fn schema_name() -> Cow<'static, str> {
        "MajorVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let majors = (MIN_POSTGRES_MAJOR..=MAX_POSTGRES_MAJOR)
            .map(|m| m.to_string())
            .collect::<Vec<_>>();
        json_schema!({
            "type": "string",
            "enum": majors,
        })
    }
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
    pub replicas: Option<i32>,
    /// Number of instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The Secret with superuser connection details (servicebinding.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// Appends the reserved-parameter rules to the spec's own rules.
fn add_reserved_parameter_rules(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(rules)) = schema.get_mut("x-kubernetes-validations") {
        rules.extend(super::reserved_parameter_rules());
    }
}
