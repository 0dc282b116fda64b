//! How `PostgresBackupSchedule` v1alpha1 maps to the hub (`v1`).

use serde::{Deserialize, Serialize};

use super::{v1, v1alpha1};
use crate::api::{
    common::{BackupMethod, BackupTarget, ClusterReference},
    conversion::{Lost, Parts, Spoke},
};

type Hub = Parts<v1::PostgresBackupScheduleSpec, v1::PostgresBackupScheduleStatus>;

/// The `v1` spec fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<BackupMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<BackupTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_max_age: Option<String>,
}

/// The `v1` status fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_successful_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_backup_name: Option<String>,
}

impl Spoke<v1::PostgresBackupScheduleSpec, v1::PostgresBackupScheduleStatus>
    for v1alpha1::PostgresBackupSchedule
{
    type Spec = v1alpha1::PostgresBackupScheduleSpec;
    type Status = v1alpha1::PostgresBackupScheduleStatus;
    type Lost = Lost<SpecLost, StatusLost>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let s = hub.spec;
        let (keep_last, retention_max_age) = match s.retention {
            Some(r) => (r.keep_last, r.max_age),
            None => (None, None),
        };
        let spec = v1alpha1::PostgresBackupScheduleSpec {
            cluster: s.cluster.name,
            schedule: s.schedule,
            suspend: s.suspend,
            keep_last,
        };
        let spec_lost = SpecLost {
            time_zone: s.time_zone,
            method: s.method,
            target: s.target,
            retention_max_age,
        };
        let (status, status_lost) = match hub.status {
            None => (None, StatusLost::default()),
            Some(s) => (
                Some(v1alpha1::PostgresBackupScheduleStatus {
                    conditions: s.conditions,
                    observed_generation: s.observed_generation,
                    last_schedule_time: s.last_schedule_time,
                }),
                StatusLost {
                    last_successful_time: s.last_successful_time,
                    next_schedule_time: s.next_schedule_time,
                    last_backup_name: s.last_backup_name,
                },
            ),
        };
        (
            Parts { spec, status },
            Lost {
                spec: spec_lost,
                status: status_lost,
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let l = lost.spec;
        // v1 requires keepLast or maxAge in a retention, so "neither" means no retention at all.
        let retention = match (s.keep_last, l.retention_max_age) {
            (None, None) => None,
            (keep_last, max_age) => Some(v1::Retention { keep_last, max_age }),
        };
        let spec = v1::PostgresBackupScheduleSpec {
            cluster: ClusterReference { name: s.cluster },
            schedule: s.schedule,
            time_zone: l.time_zone,
            suspend: s.suspend,
            method: l.method,
            target: l.target,
            retention,
        };
        let sl = lost.status;
        let status = spoke.status.map(|s| v1::PostgresBackupScheduleStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
            last_schedule_time: s.last_schedule_time,
            last_successful_time: sl.last_successful_time,
            next_schedule_time: sl.next_schedule_time,
            last_backup_name: sl.last_backup_name,
        });
        Parts { spec, status }
    }
}
