//! `PostgresUser`: one login role in a cluster, with its password in a Secret.

pub mod conversion;
pub mod v1;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, core::crd::merge_crds};

use crate::api::{
    GROUP, STORAGE_VERSION,
    conversion::{Kind, Version},
};

/// Converts `PostgresUser` objects between every served version.
pub fn converter() -> Kind<v1::PostgresUserSpec, v1::PostgresUserStatus> {
    Kind::new(
        "PostgresUser",
        GROUP,
        vec![
            Version::spoke::<v1alpha1::PostgresUser>(),
            Version::hub::<v1::PostgresUser>(),
        ],
    )
}

/// One CRD that serves every version, storing `v1`.
pub fn crd() -> CustomResourceDefinition {
    merge_crds(
        vec![v1alpha1::PostgresUser::crd(), v1::PostgresUser::crd()],
        STORAGE_VERSION,
    )
    .expect("PostgresUser versions share group, kind and scope")
}
