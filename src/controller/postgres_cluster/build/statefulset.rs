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
            Affinity, Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
            PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
            ServiceAccountTokenProjection, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
            VolumeResourceRequirements, WeightedPodAffinityTerm,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{BuildConfig, meta, name_of};
use crate::controller::backup_target::{ResolvedRecovery, claim_mount_path, mount_path, volumes};
use crate::{
    api::{
        common::{BackupTarget, ReclaimPolicy},
        postgres_cluster::v1::{PostgresCluster, TlsMode},
    },
    facts::{
        cluster::{
            CONFIG_HASH_ANNOTATION, METRICS_PORT, METRICS_PORT_NAME, Names, POSTGRES_PORT,
            POSTGRES_PORT_NAME, STATUS_PORT, STATUS_PORT_NAME, labels, paths, selector,
        },
        operator,
    },
    instance::args::{InstanceSpec, PodIdentity},
};

/// The PostgreSQL image: the cluster's, or the default for its major version (see
/// [`BuildConfig::postgres_images`]).
pub fn postgres_image(cluster: &PostgresCluster, config: &BuildConfig) -> String {
    let major = cluster.spec.postgres.version;
    if let Some(image) = &cluster.spec.postgres.image {
        return image.clone();
    }
    if let Some(image) = config.postgres_images.get(&major) {
        return image.clone();
    }
    let built_in = &crate::facts::postgres_images::BUILT_IN.repository;
    match &config.postgres_image {
        Some(template) => template.replace("{major}", &major.to_string()),
        // A major the catalog lacks (the API admits none): its repository's major tag.
        None => format!("{built_in}:{major}"),
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
        kube_api_dir: Some(paths::KUBE_API_DIR.into()),
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

/// The volume `kube-api`: a ServiceAccount token of the pods' account and the cluster's CA, so
/// the instance manager can read and renew the primary's Lease (and nothing else: see
/// `build::access`). The account mounts no token by default.
fn kube_api_volume() -> Volume {
    Volume {
        name: KUBE_API_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3600),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// See [`kube_api_volume`].
const KUBE_API_VOLUME: &str = "kube-api";

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

/// The init container that copies the instance manager out of its image: the operator image of
/// the release that last changed it, so that only a new instance manager changes the template.
fn install_tusk(config: &BuildConfig) -> Container {
    Container {
        name: operator::INSTALL_CONTAINER.to_owned(),
        image: Some(config.instance_manager_image.clone()),
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

/// The volume of the cluster's TLS Secret.
const TLS_VOLUME: &str = "tls";

/// The workload.
pub fn desired_statefulset(
    cluster: &PostgresCluster,
    config: &BuildConfig,
    config_hash: &str,
    recovery: Option<&ResolvedRecovery>,
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
        mount(KUBE_API_VOLUME, paths::KUBE_API_DIR, true),
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
    let env: Vec<EnvVar> = PodIdentity::DOWNWARD_API
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
        .chain(config.proxy.iter().map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        }))
        .collect();
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        ..ContainerPort::default()
    };
    // The Secrets of the backup target and of the recovery source, each with its CA bundle, or
    // their claims. Paths in `archive.json` and `recovery.json` are relative to each one's
    // directory: the credentials Secret's mount, or the claim's.
    let mut secret_volumes: Vec<(&str, String)> = Vec::new();
    let mut claim_volumes: Vec<(&str, String)> = Vec::new();
    let mut instance = instance_spec(cluster);
    let own = spec.backup.as_ref().map(|b| &b.target);
    if let Some(target) = own.and_then(BackupTarget::object) {
        secret_volumes.push((volumes::BACKUP_CREDENTIALS, target.credentials_secret.to_owned()));
        if let Some(ca) = target.ca_bundle {
            secret_volumes.push((volumes::BACKUP_CA, ca.name.clone()));
        }
        instance.backup_target_dir = Some(mount_path(volumes::BACKUP_CREDENTIALS).into());
    }
    let own_claim = own.and_then(|t| t.volume.as_ref()).map(|v| v.claim_name.clone());
    if let Some(claim) = &own_claim {
        claim_volumes.push((volumes::BACKUP_VOLUME, claim.clone()));
        instance.backup_target_dir = Some(claim_mount_path(volumes::BACKUP_VOLUME).into());
    }
    if let Some(target) = recovery.and_then(|r| r.target.object()) {
        secret_volumes.push((
            volumes::RECOVERY_CREDENTIALS,
            target.credentials_secret.to_owned(),
        ));
        if let Some(ca) = target.ca_bundle {
            secret_volumes.push((volumes::RECOVERY_CA, ca.name.clone()));
        }
        instance.recovery_source_dir = Some(mount_path(volumes::RECOVERY_CREDENTIALS).into());
    }
    if let Some(claim) = recovery
        .and_then(|r| r.target.volume.as_ref())
        .map(|v| &v.claim_name)
    {
        // The same claim is mounted once, and both directories are its mount.
        let volume = if own_claim.as_ref() == Some(claim) {
            volumes::BACKUP_VOLUME
        } else {
            claim_volumes.push((volumes::RECOVERY_VOLUME, claim.clone()));
            volumes::RECOVERY_VOLUME
        };
        instance.recovery_source_dir = Some(claim_mount_path(volume).into());
    }
    for (volume, _) in &secret_volumes {
        mounts.push(mount(volume, &mount_path(volume), true));
    }
    // The certificates: a Secret whose files the kubelet replaces when the operator renews them;
    // the instance manager follows them and reloads PostgreSQL, so a renewal restarts nothing.
    let tls = super::tls_mode(cluster) != TlsMode::Disabled;
    if tls {
        mounts.push(mount(TLS_VOLUME, paths::TLS_DIR, true));
        instance.tls_dir = Some(paths::TLS_DIR.into());
    }
    for (volume, _) in &claim_volumes {
        mounts.push(mount(volume, &claim_mount_path(volume), false));
    }
    let postgres = Container {
        name: "postgres".to_owned(),
        image: Some(postgres_image(cluster, config)),
        command: Some(vec![paths::INSTANCE_BINARY.to_owned()]),
        args: Some(instance.to_args()),
        env: Some(env),
        ports: Some(vec![
            port(POSTGRES_PORT_NAME, POSTGRES_PORT),
            port(STATUS_PORT_NAME, STATUS_PORT),
            port(METRICS_PORT_NAME, METRICS_PORT),
        ]),
        startup_probe: Some(probe("/healthz", 360)),
        liveness_probe: Some(probe("/healthz", 3)),
        readiness_probe: Some(probe("/readyz", 3)),
        resources: spec.resources.clone(),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    // A `Volume` holds every kind of volume source in place (kilobytes each): the list is made
    // at its size, not grown to twice it by pushes, as reconciles build one at a time in
    // parallel.
    let mut volumes = Vec::with_capacity(6 + usize::from(tls) + secret_volumes.len() + claim_volumes.len());
    volumes.extend([
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
        kube_api_volume(),
    ]);
    if tls {
        volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.tls_secret()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (volume, secret) in secret_volumes {
        volumes.push(Volume {
            name: volume.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (volume, claim) in claim_volumes {
        volumes.push(Volume {
            name: volume.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Volume::default()
        });
    }
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
            // The operator restarts the pods of a new template itself, the primary last (see
            // postgres_cluster::rollout).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
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
                    affinity: affinity(cluster),
                    topology_spread_constraints: spread(cluster),
                    node_selector: cluster
                        .spec
                        .scheduling
                        .as_ref()
                        .and_then(|s| s.node_selector.clone()),
                    tolerations: cluster
                        .spec
                        .scheduling
                        .as_ref()
                        .and_then(|s| s.tolerations.clone()),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The pods' anti-affinity: apart on `scheduling.topologyKey` (nodes by default), preferred
/// unless the spec says `Required` or `Disabled`.
fn affinity(cluster: &PostgresCluster) -> Option<Affinity> {
    use crate::api::postgres_cluster::v1::AntiAffinity;
    let scheduling = cluster.spec.scheduling.as_ref();
    let kind = scheduling
        .and_then(|s| s.anti_affinity)
        .unwrap_or(AntiAffinity::Preferred);
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector(name_of(cluster))),
            ..LabelSelector::default()
        }),
        topology_key: scheduling
            .and_then(|s| s.topology_key.clone())
            .unwrap_or_else(|| HOSTNAME_KEY.to_owned()),
        ..PodAffinityTerm::default()
    };
    let anti = match kind {
        AntiAffinity::Disabled => return None,
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti),
        ..Affinity::default()
    })
}

/// The pods' topology spread: the spec's constraints (each without a selector gets the
/// cluster's), else across zones where nodes say their zone, as evenly as the scheduler can.
fn spread(cluster: &PostgresCluster) -> Option<Vec<TopologySpreadConstraint>> {
    let own = || LabelSelector {
        match_labels: Some(selector(name_of(cluster))),
        ..LabelSelector::default()
    };
    let constraints = match cluster
        .spec
        .scheduling
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.clone())
    {
        Some(list) => list
            .into_iter()
            .map(|mut c| {
                c.label_selector.get_or_insert_with(own);
                c
            })
            .collect(),
        None => vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: ZONE_KEY.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(own()),
            ..TopologySpreadConstraint::default()
        }],
    };
    (!constraints.is_empty()).then_some(constraints)
}

/// The node label that names the node.
const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
/// The node label that names the zone.
const ZONE_KEY: &str = "topology.kubernetes.io/zone";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn instances_spread_across_nodes_and_zones_unless_told_otherwise() {
        let set = desired_statefulset(
            &cluster(spec(json!({"instances": 3}))),
            &BuildConfig::default(),
            "h",
            None,
        );
        let pod = pod(&set);
        let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        let term = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (term.weight, term.pod_affinity_term.topology_key.as_str()),
            (100, HOSTNAME_KEY)
        );
        let zone = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(
            (zone.topology_key.as_str(), zone.when_unsatisfiable.as_str()),
            (ZONE_KEY, "ScheduleAnyway")
        );
        let strict = cluster(spec(json!({"scheduling": {
            "antiAffinity": "Required", "topologyKey": ZONE_KEY, "topologySpreadConstraints": [],
            "nodeSelector": {"pool": "db"}, "tolerations": [{"key": "db", "operator": "Exists"}],
        }})));
        let set = desired_statefulset(&strict, &BuildConfig::default(), "h", None);
        let pod = super::tests::pod(&set);
        let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        assert_eq!(
            anti.required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()[0]
                .topology_key,
            ZONE_KEY
        );
        assert!(pod.topology_spread_constraints.is_none());
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "db");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let none = cluster(spec(json!({"scheduling": {"antiAffinity": "Disabled"}})));
        assert!(pod_of(&none).affinity.is_none());
    }

    #[test]
    fn every_supported_major_defaults_to_a_pinned_image_and_the_flags_take_precedence() {
        use crate::api::common::{MAX_POSTGRES_MAJOR, MIN_POSTGRES_MAJOR};
        let of = |major: i32, config: &BuildConfig| {
            postgres_image(
                &cluster(
                    json!({"postgres": {"version": major}, "instances": 1, "storage": {"data": {"size": "1Gi"}}}),
                ),
                config,
            )
        };
        let built_in = &crate::facts::postgres_images::BUILT_IN;
        for major in MIN_POSTGRES_MAJOR..=MAX_POSTGRES_MAJOR {
            let entry = built_in.images.iter().find(|e| e.major == major);
            let entry = entry.unwrap_or_else(|| panic!("the catalog has no image for major {major}"));
            assert_eq!(
                of(major, &BuildConfig::default()),
                entry.reference(&built_in.repository)
            );
        }
        // --postgres-images names 16; --postgres-image covers the rest.
        let (postgres_images, postgres_image) = BuildConfig::postgres_images_from(
            Some("16=mirror/pg@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
            Some("mirror/postgres:{major}".to_owned()),
        )
        .unwrap();
        let config = BuildConfig {
            postgres_images,
            postgres_image,
            ..BuildConfig::default()
        };
        assert!(of(16, &config).starts_with("mirror/pg@sha256:"));
        assert_eq!(of(17, &config), "mirror/postgres:17");
        // Without a template, the majors the flag leaves out keep the built-in catalog's.
        let (postgres_images, postgres_image) =
            BuildConfig::postgres_images_from(Some("16=mirror/pg:16.1"), None).unwrap();
        let config = BuildConfig {
            postgres_images,
            postgres_image,
            ..BuildConfig::default()
        };
        assert_eq!(of(16, &config), "mirror/pg:16.1");
        assert_eq!(of(17, &config), of(17, &BuildConfig::default()));
        // The cluster's own image wins over all of them.
        let own = cluster(
            json!({"postgres": {"version": 16, "image": "mine:16.3"}, "instances": 1, "storage": {"data": {"size": "1Gi"}}}),
        );
        assert_eq!(super::postgres_image(&own, &config), "mine:16.3");
        let e = BuildConfig::postgres_images_from(Some("16"), None).unwrap_err();
        assert!(
            e.contains("--postgres-images") && e.contains("<major>=<image>"),
            "{e}"
        );
    }

    fn pod_of(c: &PostgresCluster) -> PodSpec {
        pod(&desired_statefulset(c, &BuildConfig::default(), "h", None)).clone()
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn the_instance_manager_runs_from_its_own_image_with_its_spec() {
        let c = cluster(spec(json!({"instances": 3})));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h", None);
        let pod = pod(&set);
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            init.image.as_deref(),
            Some(operator::DEFAULT_INSTANCE_MANAGER_IMAGE)
        );
        let main = &pod.containers[0];
        assert_eq!(
            main.image.as_deref(),
            Some(crate::facts::postgres_images::BUILT_IN.references()[&17].as_str())
        );
        // TLS is on by default: the pods mount the cluster's TLS Secret.
        let mut expected = instance_spec(&c);
        expected.tls_dir = Some(paths::TLS_DIR.into());
        assert_eq!(main.args.as_ref().unwrap(), &expected.to_args());
        let tls = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TLS_VOLUME)
            .unwrap();
        assert_eq!(
            tls.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("db-tls")
        );
        let disabled = cluster(spec(json!({"instances": 3, "tls": {"mode": "Disabled"}})));
        let plain = desired_statefulset(&disabled, &BuildConfig::default(), "h", None);
        let plain_pod = plain.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            plain_pod.containers[0].args.as_ref().unwrap(),
            &instance_spec(&disabled).to_args()
        );
        assert!(!plain_pod.volumes.iter().flatten().any(|v| v.name == TLS_VOLUME));
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
        assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "POD_IPS", "POD_UID"]);
    }

    #[test]
    fn a_wal_volume_and_the_reclaim_policy() {
        let c = cluster(spec(
            json!({"storage": {"data": {"size": "1Gi"}, "wal": {"size": "2Gi", "storageClassName": "fast"}, "reclaimPolicy": "Delete"}}),
        ));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h", None);
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
    fn the_pods_get_the_proxy_the_operator_runs_with() {
        let environment = [
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", ".svc,10.0.0.0/8"),
            ("http_proxy", ""),
        ];
        let proxy = BuildConfig::proxy_from(|name| {
            environment
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        });
        // Empty variables are left out.
        assert_eq!(
            proxy,
            [
                ("HTTPS_PROXY".to_owned(), "http://proxy:3128".to_owned()),
                ("NO_PROXY".to_owned(), ".svc,10.0.0.0/8".to_owned())
            ]
        );
        let config = BuildConfig {
            proxy,
            ..BuildConfig::default()
        };
        let set = desired_statefulset(&cluster(spec(json!({}))), &config, "h", None);
        let env = pod(&set).containers[0].env.clone().unwrap_or_default();
        let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("HTTPS_PROXY").as_deref(), Some("http://proxy:3128"));
        assert_eq!(value("NO_PROXY").as_deref(), Some(".svc,10.0.0.0/8"));
        assert_eq!(value("http_proxy"), None);
        let without = desired_statefulset(&cluster(spec(json!({}))), &BuildConfig::default(), "h", None);
        assert!(
            !pod(&without).containers[0]
                .env
                .iter()
                .flatten()
                .any(|e| e.name.ends_with("PROXY")),
            "no proxy, no variable"
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
            None,
        );
        let security = pod(&set).security_context.as_ref().unwrap();
        assert_eq!((security.run_as_user, security.fs_group), (None, None));
        let set = desired_statefulset(&c, &BuildConfig::default(), "h", None);
        let security = pod(&set).security_context.as_ref().unwrap();
        assert_eq!((security.run_as_user, security.fs_group), (Some(999), Some(999)));
        let container = pod(&set).containers[0].security_context.as_ref().unwrap();
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(container.allow_privilege_escalation, Some(false));
    }
}
