//! How each `PostgresCluster` version maps to the hub (`v1`).

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::{Deserialize, Serialize};

use super::{v1, v1alpha1, v1beta1};
use crate::api::{
    common::{BackupConfiguration, ReclaimPolicy, VolumeSpec},
    conversion::{Lost, Parts, Spoke},
};

type Hub = Parts<v1::PostgresClusterSpec, v1::PostgresClusterStatus>;

/// The `v1` spec fields `v1alpha1` and `v1beta1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wal: Option<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reclaim_policy: Option<ReclaimPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bootstrap: Option<v1::Bootstrap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<BackupConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<v1::TlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    monitoring: Option<v1::MonitoringSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update_strategy: Option<v1::UpdateStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failover_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switchover: Option<v1::Switchover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replication: Option<v1::Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduling: Option<v1::Scheduling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network_policy: Option<v1::NetworkPolicySpec>,
}

/// The `v1` status fields `v1alpha1` and `v1beta1` cannot express.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres_version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<v1::BackupStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_status: Option<Vec<v1::InstanceStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeline: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_promotion: Option<v1::Promotion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switchover: Option<v1::SwitchoverStatus>,
}

/// Splits the hub spec's fields that no spoke has (`v1alpha1` also lacks `resources` and
/// `backup`; the caller takes those first when the spoke has them).
fn split_spec_common(spec: &mut v1::PostgresClusterSpec) -> SpecLost {
    SpecLost {
        image: spec.postgres.image.take(),
        wal: spec.storage.wal.take(),
        reclaim_policy: spec.storage.reclaim_policy.take(),
        resources: spec.resources.take(),
        bootstrap: spec.bootstrap.take(),
        backup: spec.backup.take(),
        tls: spec.tls.take(),
        monitoring: spec.monitoring.take(),
        update_strategy: spec.update_strategy.take(),
        paused: spec.paused.take(),
        failover_delay: spec.failover_delay.take(),
        switchover: spec.switchover.take(),
        replication: spec.replication.take(),
        scheduling: spec.scheduling.take(),
        network_policy: spec.network_policy.take(),
    }
}

fn hub_spec(
    postgres: v1::PostgresSpec,
    instances: Option<i32>,
    data: VolumeSpec,
    lost: SpecLost,
) -> v1::PostgresClusterSpec {
    v1::PostgresClusterSpec {
        postgres: v1::PostgresSpec {
            image: lost.image,
            ..postgres
        },
        instances,
        storage: v1::StorageSpec {
            data,
            wal: lost.wal,
            reclaim_policy: lost.reclaim_policy,
        },
        resources: lost.resources,
        bootstrap: lost.bootstrap,
        backup: lost.backup,
        tls: lost.tls,
        monitoring: lost.monitoring,
        update_strategy: lost.update_strategy,
        paused: lost.paused,
        failover_delay: lost.failover_delay,
        switchover: lost.switchover,
        replication: lost.replication,
        scheduling: lost.scheduling,
        network_policy: lost.network_policy,
    }
}

impl Spoke<v1::PostgresClusterSpec, v1::PostgresClusterStatus> for v1alpha1::PostgresCluster {
    type Spec = v1alpha1::PostgresClusterSpec;
    type Status = v1alpha1::PostgresClusterStatus;
    type Lost = Lost<SpecLost, StatusLost>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let mut spec = hub.spec;
        let spec_lost = split_spec_common(&mut spec);
        let spoke_spec = v1alpha1::PostgresClusterSpec {
            version: v1alpha1::MajorVersion(spec.postgres.version),
            replicas: spec.instances,
            storage_size: spec.storage.data.size,
            storage_class_name: spec.storage.data.storage_class_name,
            parameters: spec.postgres.parameters,
        };
        let (status, status_lost) = match hub.status {
            None => (None, StatusLost::default()),
            Some(s) => (
                Some(v1alpha1::PostgresClusterStatus {
                    conditions: s.conditions,
                    observed_generation: s.observed_generation,
                    replicas: s.instances,
                    ready_replicas: s.ready_instances,
                    binding: s.binding,
                }),
                StatusLost {
                    current_primary: s.current_primary,
                    postgres_version: s.postgres_version,
                    backup: s.backup,
                    instance_status: s.instance_status,
                    target_primary: s.target_primary,
                    timeline: s.timeline,
                    last_promotion: s.last_promotion,
                    switchover: s.switchover,
                },
            ),
        };
        (
            Parts {
                spec: spoke_spec,
                status,
            },
            Lost {
                spec: spec_lost,
                status: status_lost,
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let postgres = v1::PostgresSpec {
            version: s.version.0,
            image: None,
            parameters: s.parameters,
        };
        let data = VolumeSpec {
            size: s.storage_size,
            storage_class_name: s.storage_class_name,
        };
        let spec = hub_spec(postgres, s.replicas, data, lost.spec);
        let status = spoke.status.map(|s| v1::PostgresClusterStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
            instances: s.replicas,
            ready_instances: s.ready_replicas,
            current_primary: lost.status.current_primary,
            postgres_version: lost.status.postgres_version,
            backup: lost.status.backup,
            instance_status: lost.status.instance_status,
            target_primary: lost.status.target_primary,
            timeline: lost.status.timeline,
            last_promotion: lost.status.last_promotion,
            switchover: lost.status.switchover,
            binding: s.binding,
        });
        Parts { spec, status }
    }
}

impl Spoke<v1::PostgresClusterSpec, v1::PostgresClusterStatus> for v1beta1::PostgresCluster {
    type Spec = v1beta1::PostgresClusterSpec;
    type Status = v1beta1::PostgresClusterStatus;
    type Lost = Lost<SpecLost, StatusLost>;

    fn split(hub: Hub) -> (Parts<Self::Spec, Self::Status>, Self::Lost) {
        let mut spec = hub.spec;
        let resources = spec.resources.take();
        let backup = spec.backup.take();
        let spec_lost = split_spec_common(&mut spec);
        let spoke_spec = v1beta1::PostgresClusterSpec {
            postgres_version: spec.postgres.version,
            instances: spec.instances,
            storage: spec.storage.data,
            postgresql: spec
                .postgres
                .parameters
                .map(|parameters| v1beta1::PostgresqlSpec { parameters }),
            resources,
            backup,
        };
        let (status, status_lost) = match hub.status {
            None => (None, StatusLost::default()),
            Some(s) => (
                Some(v1beta1::PostgresClusterStatus {
                    conditions: s.conditions,
                    observed_generation: s.observed_generation,
                    instances: s.instances,
                    ready_instances: s.ready_instances,
                    current_primary: s.current_primary,
                    binding: s.binding,
                }),
                StatusLost {
                    current_primary: None,
                    postgres_version: s.postgres_version,
                    backup: s.backup,
                    instance_status: s.instance_status,
                    target_primary: s.target_primary,
                    timeline: s.timeline,
                    last_promotion: s.last_promotion,
                    switchover: s.switchover,
                },
            ),
        };
        (
            Parts {
                spec: spoke_spec,
                status,
            },
            Lost {
                spec: spec_lost,
                status: status_lost,
            },
        )
    }

    fn apply(spoke: Parts<Self::Spec, Self::Status>, lost: Self::Lost) -> Hub {
        let s = spoke.spec;
        let postgres = v1::PostgresSpec {
            version: s.postgres_version,
            image: None,
            parameters: s.postgresql.map(|p| p.parameters),
        };
        let mut lost_spec = lost.spec;
        // v1beta1 has these itself; what it says wins over anything stashed.
        lost_spec.resources = s.resources;
        lost_spec.backup = s.backup;
        let spec = hub_spec(postgres, s.instances, s.storage, lost_spec);
        let status = spoke.status.map(|s| v1::PostgresClusterStatus {
            conditions: s.conditions,
            observed_generation: s.observed_generation,
            instances: s.instances,
            ready_instances: s.ready_instances,
            current_primary: s.current_primary,
            postgres_version: lost.status.postgres_version,
            backup: lost.status.backup,
            instance_status: lost.status.instance_status,
            target_primary: lost.status.target_primary,
            timeline: lost.status.timeline,
            last_promotion: lost.status.last_promotion,
            switchover: lost.status.switchover,
            binding: s.binding,
        });
        Parts { spec, status }
    }
}
