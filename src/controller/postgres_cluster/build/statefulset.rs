//! The StatefulSet `<cluster>`: the pods, their volumes, and the instance manager's command line
//! built from [`InstanceSpec`], the struct the instance manager parses.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{
            StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
            StatefulSetUpdateStrategy,
        },
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
            EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{BuildConfig, meta, name_of};
use crate::{
    api::{common::ReclaimPolicy, postgres_cluster::v1::PostgresCluster},
    facts::{
        cluster::{
            CONFIG_HASH_ANNOTATION, Names, POSTGRES_PORT, POSTGRES_PORT_NAME, STATUS_PORT, STATUS_PORT_NAME,
            labels, paths, selector,
        },
        operator,
    },
    instance::args::{InstanceSpec, PodIdentity},
};

/// The PostgreSQL image: the cluster's, or the default for its major version.
pub fn postgres_image(cluster: &PostgresCluster, config: &BuildConfig) -> String {
    match &cluster.spec.postgres.image {
        Some(image) => image.clone(),
        None => config
            .postgres_image
            .replace("{major}", &cluster.spec.postgres.version.to_string()),
    }
}

/// What the instance manager of each pod of `cluster` is told.
pub fn instance_spec(cluster: &PostgresCluster) -> InstanceSpec {
    let spec = &cluster.spec;
    let initdb = spec.bootstrap.as_ref().and_then(|b| b.initdb.as_ref());
    InstanceSpec {
        initdb_encoding: initdb.and_then(|i| i.encoding.clone()),
        initdb_locale: initdb.and_then(|i| i.locale.clone()),
        // Checksums are on unless the cluster turns them off.
        data_checksums: initdb.and_then(|i| i.data_checksums) != Some(false),
        waldir: spec.storage.wal.as_ref().map(|_| paths::WALDIR.into()),
        ..InstanceSpec::for_cluster(name_of(cluster))
    }
}

/// Non-root, no privilege escalation, every capability dropped, read-only root, the runtime's
/// seccomp profile: the `restricted` Pod Security level.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

fn pod_security(config: &BuildConfig) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        run_as_user: config.postgres_uid,
        run_as_group: config.postgres_uid,
        fs_group: config.postgres_uid,
        ..PodSecurityContext::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn probe(path: &str, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(STATUS_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn quantities(entries: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn claim(name: &str, volume: &crate::api::common::VolumeSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(quantities(&[("storage", &volume.size)])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: volume.storage_class_name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The init container that copies the instance manager out of the operator image.
fn install_tusk(config: &BuildConfig) -> Container {
    Container {
        name: "install-tusk".to_owned(),
        image: Some(config.operator_image.clone()),
        command: Some(vec![
            operator::BINARY_PATH.to_owned(),
            "copy-binary".to_owned(),
            format!("--to={}", paths::INSTANCE_BINARY),
        ]),
        volume_mounts: Some(vec![mount("tusk-bin", paths::TUSK_BIN_DIR, false)]),
        security_context: Some(restricted()),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
            limits: Some(quantities(&[("memory", "64Mi")])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// The workload.
pub fn desired_statefulset(
    cluster: &PostgresCluster,
    config: &BuildConfig,
    config_hash: &str,
) -> StatefulSet {
    let name = name_of(cluster);
    let names = Names(name);
    let spec = &cluster.spec;
    let mut mounts = vec![
        mount("data", paths::DATA_MOUNT, false),
        mount("config", paths::CONFIG_DIR, true),
        mount("superuser", paths::SUPERUSER_DIR, true),
        mount("tusk-bin", paths::TUSK_BIN_DIR, true),
        mount("run", paths::SOCKET_DIR, false),
        mount("tmp", paths::TMP, false),
    ];
    let mut claims = vec![claim("data", &spec.storage.data)];
    if let Some(wal) = &spec.storage.wal {
        mounts.push(mount("wal", paths::WAL_MOUNT, false));
        claims.push(claim("wal", wal));
    }
    let when_deleted = match spec.storage.reclaim_policy {
        Some(ReclaimPolicy::Delete) => "Delete",
        // Absent means Retain: a user's data outlives the cluster unless they ask otherwise.
        Some(ReclaimPolicy::Retain) | None => "Retain",
    };
    let env = PodIdentity::DOWNWARD_API
        .iter()
        .map(|(variable, field)| EnvVar {
            name: (*variable).to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: (*field).to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        ..ContainerPort::default()
    };
    let postgres = Container {
        name: "postgres".to_owned(),
        image: Some(postgres_image(cluster, config)),
        command: Some(vec![paths::INSTANCE_BINARY.to_owned()]),
        args: Some(instance_spec(cluster).to_args()),
        env: Some(env),
        ports: Some(vec![
            port(POSTGRES_PORT_NAME, POSTGRES_PORT),
            port(STATUS_PORT_NAME, STATUS_PORT),
        ]),
        startup_probe: Some(probe("/healthz", 360)),
        liveness_probe: Some(probe("/healthz", 3)),
        readiness_probe: Some(probe("/readyz", 3)),
        resources: spec.resources.clone(),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "superuser".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.superuser_secret()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("tusk-bin"),
        empty_dir("run"),
        empty_dir("tmp"),
    ];
    StatefulSet {
        metadata: meta(cluster, names.workload()),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.instances.unwrap_or(1)),
            service_name: Some(names.pods_service()),
            selector: LabelSelector {
                match_labels: Some(selector(name)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("OrderedReady".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.to_owned()),
                when_scaled: Some("Retain".to_owned()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.workload()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(pod_security(config)),
                    init_containers: Some(vec![install_tusk(config)]),
                    containers: vec![postgres],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn the_instance_manager_runs_from_the_operator_image_with_its_spec() {
        let c = cluster(spec(json!({"instances": 3})));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h");
        let pod = pod(&set);
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some(operator::DEFAULT_IMAGE));
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("docker.io/library/postgres:17"));
        assert_eq!(main.args.as_ref().unwrap(), &instance_spec(&c).to_args());
        assert!(
            main.args
                .as_ref()
                .unwrap()
                .contains(&"--primary-host=db-rw".to_owned())
        );
        assert!(
            main.args
                .as_ref()
                .unwrap()
                .contains(&"--data-checksums".to_owned())
        );
        assert_eq!(set.spec.as_ref().unwrap().replicas, Some(3));
        let env: Vec<_> = main
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "POD_IPS"]);
    }

    #[test]
    fn a_wal_volume_and_the_reclaim_policy() {
        let c = cluster(spec(
            json!({"storage": {"data": {"size": "1Gi"}, "wal": {"size": "2Gi", "storageClassName": "fast"}, "reclaimPolicy": "Delete"}}),
        ));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h");
        let spec = set.spec.as_ref().unwrap();
        let claims = spec.volume_claim_templates.as_ref().unwrap();
        assert_eq!(
            serde_json::to_value(&claims[1]).unwrap(),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "wal"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}, "storageClassName": "fast"}})
        );
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        assert!(
            pod(&set).containers[0]
                .args
                .as_ref()
                .unwrap()
                .contains(&"--waldir=/var/lib/postgresql/wal/pg_wal".to_owned())
        );
    }

    #[test]
    fn restricted_and_the_uid_only_when_given() {
        let c = cluster(spec(json!({})));
        let set = desired_statefulset(
            &c,
            &BuildConfig {
                postgres_uid: None,
                ..BuildConfig::default()
            },
            "h",
        );
        let security = pod(&set).security_context.as_ref().unwrap();
        assert_eq!((security.run_as_user, security.fs_group), (None, None));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h");
        let security = pod(&set).security_context.as_ref().unwrap();
        assert_eq!((security.run_as_user, security.fs_group), (Some(999), Some(999)));
        let container = pod(&set).containers[0].security_context.as_ref().unwrap();
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(container.allow_privilege_escalation, Some(false));
    }
}
