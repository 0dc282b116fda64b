//! `PostgresCluster`: a PostgreSQL deployment.
//!
//! Three versions tell the API's history: `v1alpha1` was flat, `v1beta1` grouped storage and
//! PostgreSQL settings, and `v1` (the storage version) is complete.

pub mod conversion;
pub mod v1;
pub mod v1alpha1;
pub mod v1beta1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, core::crd::merge_crds};
use serde_json::json;

use crate::api::{
    GROUP, STORAGE_VERSION,
    common::{MAX_POSTGRES_MAJOR, MIN_POSTGRES_MAJOR},
    conversion::{Kind, Version},
};

/// PostgreSQL parameters that Tusk sets itself, because the pod layout, replication or TLS depend
/// on them. A cluster may not override them.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "archive_command",
    "config_file",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "ident_file",
    "listen_addresses",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "unix_socket_directories",
];

/// CEL rules that refuse [`RESERVED_PARAMETERS`] in a `parameters` map of the object they sit
/// on: one rule per parameter, so that each refusal names the parameter. (A single rule whose
/// message lists the offending keys with `filter(...).join(...)` is what a user would want, but
/// kube-apiserver's cost estimator refuses that message expression as over budget by more than
/// 100x, whatever bounds the map has.)
fn reserved_parameter_rules() -> Vec<serde_json::Value> {
    RESERVED_PARAMETERS
        .iter()
        .map(|p| {
            json!({
                "rule": format!("!has(self.parameters) || !('{p}' in self.parameters)"),
                "message": format!("parameters may not set {p}: Tusk manages it; all other PostgreSQL parameters are allowed"),
            })
        })
        .collect()
}

/// The CEL rule that lets the integer major version in `field` go up but never down. Its message
/// names both versions. The numbers are looked up in a literal list rather than written with
/// `string(int)`: kube-apiserver estimates `string(int)` as a string of unknown length and refuses
/// the message as over its cost budget. The static message is the fallback should the lookup fail.
fn no_downgrade_rule(field: &str) -> serde_json::Value {
    let names = (MIN_POSTGRES_MAJOR..=MAX_POSTGRES_MAJOR)
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let name = |side: &str| format!("[{names}][{side}.{field} - {MIN_POSTGRES_MAJOR}]");
    let (old, new) = (name("oldSelf"), name("self"));
    json!({
        "rule": format!("self.{field} >= oldSelf.{field}"),
        "message": format!("{field} cannot go down: a major-version downgrade is not possible"),
        "messageExpression": format!(
            "'{field} cannot go down from ' + {old} + ' to ' + {new} + \
             ': a major-version downgrade is not possible; allowed are ' + {old} + ' or higher'"
        ),
    })
}

/// Converts `PostgresCluster` objects between every served version.
pub fn converter() -> Kind<v1::PostgresClusterSpec, v1::PostgresClusterStatus> {
    Kind::new(
        "PostgresCluster",
        GROUP,
        vec![
            Version::spoke::<v1alpha1::PostgresCluster>(),
            Version::spoke::<v1beta1::PostgresCluster>(),
            Version::hub::<v1::PostgresCluster>(),
        ],
    )
}

/// One CRD that serves every version, storing `v1`.
pub fn crd() -> CustomResourceDefinition {
    merge_crds(
        vec![
            v1alpha1::PostgresCluster::crd(),
            v1beta1::PostgresCluster::crd(),
            v1::PostgresCluster::crd(),
        ],
        STORAGE_VERSION,
    )
    .expect("PostgresCluster versions share group, kind and scope")
}

/// The rules on v1's `spec.postgres`: no downgrade, no reserved parameters.
fn postgres_rules() -> serde_json::Value {
    let mut rules = vec![no_downgrade_rule("version")];
    rules.extend(reserved_parameter_rules());
    serde_json::Value::Array(rules)
}

/// The rules on v1beta1's `spec.postgresql`.
fn postgresql_rules() -> serde_json::Value {
    serde_json::Value::Array(reserved_parameter_rules())
}
