//! `PostgresBackup`: one backup run of a cluster, like a Job.

pub mod conversion;
pub mod v1;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, core::crd::merge_crds};

use crate::api::{
    GROUP, STORAGE_VERSION,
    conversion::{Kind, Version},
};

/// Converts `PostgresBackup` objects between every served version.
pub fn converter() -> Kind<v1::PostgresBackupSpec, v1::PostgresBackupStatus> {
    Kind::new(
        "PostgresBackup",
        GROUP,
        vec![
            Version::spoke::<v1alpha1::PostgresBackup>(),
            Version::hub::<v1::PostgresBackup>(),
        ],
    )
}

/// One CRD that serves every version, storing `v1`.
pub fn crd() -> CustomResourceDefinition {
    merge_crds(
        vec![v1alpha1::PostgresBackup::crd(), v1::PostgresBackup::crd()],
        STORAGE_VERSION,
    )
    .expect("PostgresBackup versions share group, kind and scope")
}
