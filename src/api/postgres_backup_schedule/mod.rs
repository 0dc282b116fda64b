//! `PostgresBackupSchedule`: backups on a cron schedule, like a CronJob.

pub mod conversion;
pub mod v1;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, core::crd::merge_crds};

use crate::api::{
    GROUP, STORAGE_VERSION,
    conversion::{Kind, Version},
};

/// Converts `PostgresBackupSchedule` objects between every served version.
pub fn converter() -> Kind<v1::PostgresBackupScheduleSpec, v1::PostgresBackupScheduleStatus> {
    Kind::new(
        "PostgresBackupSchedule",
        GROUP,
        vec![
            Version::spoke::<v1alpha1::PostgresBackupSchedule>(),
            Version::hub::<v1::PostgresBackupSchedule>(),
        ],
    )
}

/// One CRD that serves every version, storing `v1`.
pub fn crd() -> CustomResourceDefinition {
    merge_crds(
        vec![
            v1alpha1::PostgresBackupSchedule::crd(),
            v1::PostgresBackupSchedule::crd(),
        ],
        STORAGE_VERSION,
    )
    .expect("PostgresBackupSchedule versions share group, kind and scope")
}
