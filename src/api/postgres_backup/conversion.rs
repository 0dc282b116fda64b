//! How `PostgresBackup` v1alpha1 maps to the hub (`v1`).

use serde::{Deserialize, Serialize};

use super::{v1, v1alpha1};
use crate::api::{
    common::{BackupTarget, ClusterReference},
    conversion::{Lost, Parts, Spoke},
};

type Hub = Parts<v1::PostgresBackupSpec, v1::PostgresBackupStatus>;

/// The `v1` spec fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<BackupTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<v1::BackupInstance>,
}

/// The `v1` status fields `v1alpha1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    begin_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    begin_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeline: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Spoke<v1::PostgresBackupSpec, v1::PostgresBackupStatus> for v1alpha1::PostgresBackup {
    type Spec = v1alpha1::PostgresBackupSpec;
    type Status = v1alpha1::PostgresBackupStatus;
    type Lost = Lost<SpecLost, StatusLost>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let s = hub.spec;
        let spec = v1alpha1::PostgresBackupSpec {
            cluster: s.cluster.name,
            method: s.method,
        };
        let (status, status_lost) = match hub.status {
            None => (None, StatusLost::default()),
            Some(s) => (
                Some(v1alpha1::PostgresBackupStatus {
                    conditions: s.conditions,
                    observed_generation: s.observed_generation,
                    phase: s.phase,
                    started_at: s.started_at,
                    completed_at: s.completed_at,
                    location: s.location,
                }),
                StatusLost {
                    size_bytes: s.size_bytes,
                    begin_wal: s.begin_wal,
                    end_wal: s.end_wal,
                    begin_lsn: s.begin_lsn,
                    end_lsn: s.end_lsn,
                    timeline: s.timeline,
                    instance_name: s.instance_name,
                    postgres_version: s.postgres_version,
                    error: s.error,
                },
            ),
        };
        (
            Parts { spec, status },
            Lost {
                spec: SpecLost {
                    target: s.target,
                    instance: s.instance,
                },
                status: status_lost,
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let spec = v1::PostgresBackupSpec {
            cluster: ClusterReference { name: s.cluster },
            method: s.method,
            target: lost.spec.target,
            instance: lost.spec.instance,
        };
        let l = lost.status;
        let status = spoke.status.map(|s| v1::PostgresBackupStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
            phase: s.phase,
            started_at: s.started_at,
            completed_at: s.completed_at,
            location: s.location,
            size_bytes: l.size_bytes,
            begin_wal: l.begin_wal,
            end_wal: l.end_wal,
            begin_lsn: l.begin_lsn,
            end_lsn: l.end_lsn,
            timeline: l.timeline,
            instance_name: l.instance_name,
            postgres_version: l.postgres_version,
            error: l.error,
        });
        Parts { spec, status }
    }
}
