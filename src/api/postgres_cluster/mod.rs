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

/// The CEL rule that refuses [`RESERVED_PARAMETERS`] in a `parameters` map of the object it sits on.
fn reserved_parameters_rule() -> serde_json::Value {
    let list = RESERVED_PARAMETERS
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    json!({
        "rule": format!("!has(self.parameters) || self.parameters.all(k, !(k in [{list}]))"),
        "messageExpression": format!(
            "'parameters may not set ' + self.parameters.filter(k, k in [{list}]).join(', ') + \
             ': Tusk manages these; all other PostgreSQL parameters are allowed'"
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
