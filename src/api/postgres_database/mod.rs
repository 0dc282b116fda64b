//! `PostgresDatabase`: one database in a cluster, with its owner and extensions.

pub mod conversion;
pub mod v1;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, core::crd::merge_crds};

use crate::api::{
    GROUP, STORAGE_VERSION,
    conversion::{Kind, Version},
};

/// Converts `PostgresDatabase` objects between every served version.
pub fn converter() -> Kind<v1::PostgresDatabaseSpec, v1::PostgresDatabaseStatus> {
    Kind::new(
        "PostgresDatabase",
        GROUP,
        vec![
            Version::spoke::<v1alpha1::PostgresDatabase>(),
            Version::hub::<v1::PostgresDatabase>(),
        ],
    )
}

/// One CRD that serves every version, storing `v1`.
pub fn crd() -> CustomResourceDefinition {
    merge_crds(
        vec![v1alpha1::PostgresDatabase::crd(), v1::PostgresDatabase::crd()],
        STORAGE_VERSION,
    )
    .expect("PostgresDatabase versions share group, kind and scope")
}
