//! proptest strategies for valid objects of every kind and version, as the apiserver would send
//! them: JSON with apiVersion, kind, metadata, spec and sometimes status.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ResourceRequirements, apimachinery::pkg::api::resource::Quantity};
use proptest::{collection::vec, option::of, prelude::*, sample::select};
use serde::Serialize;
use serde_json::{Value, json};
use tusk::api::{
    common::*, conversion::CONVERSION_DATA_ANNOTATION, postgres_backup as backup,
    postgres_backup_schedule as schedule, postgres_cluster as cluster, postgres_database as database,
    postgres_user as user,
};

/// Runs `work` on a thread with a stack deep enough for these strategies: the cluster ones nest
/// so deep that they overflow a test thread's 2 MiB once proptest is optimised.
pub fn on_deep_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(work)
        .expect("spawn a thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

pub fn dns_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]"
}

/// PostgreSQL identifiers: anything but the reserved names, including quotes and spaces.
pub fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,20}",
        select(vec![
            "x\"; DROP TABLE t; --".to_owned(),
            "Mixed Case".to_owned(),
            "ünïcödé".to_owned()
        ]),
    ]
}

pub fn timestamp() -> impl Strategy<Value = String> {
    (2020u32..2030, 1u32..13, 1u32..29, 0u32..24, any::<bool>()).prop_map(|(y, mo, d, h, frac)| {
        if frac {
            format!("{y}-{mo:02}-{d:02}T{h:02}:30:00.123456Z")
        } else {
            format!("{y}-{mo:02}-{d:02}T{h:02}:00:00Z")
        }
    })
}

fn quantity() -> impl Strategy<Value = String> {
    select(vec!["1Gi", "500Mi", "10Gi", "1.5Ti", "100G", "2"]).prop_map(str::to_owned)
}

fn image() -> impl Strategy<Value = String> {
    select(vec![
        "postgres:16".to_owned(),
        "registry.example.com:5000/pg/postgres:17.2".to_owned(),
        format!("ghcr.io/tusk/postgres@sha256:{}", "a1".repeat(32)),
    ])
}

pub fn condition() -> impl Strategy<Value = Condition> {
    (
        select(vec!["Ready", "Progressing", "Degraded"]),
        select(vec![
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ]),
        of(0i64..100),
        timestamp(),
        "[A-Z][A-Za-z]{0,12}",
        ".{0,30}",
    )
        .prop_map(
            |(t, status, observed_generation, last_transition_time, reason, message)| Condition {
                type_: t.to_owned(),
                status,
                observed_generation,
                last_transition_time,
                reason,
                message,
            },
        )
}

/// Conditions with distinct types, as the list-map schema demands.
pub fn conditions() -> impl Strategy<Value = Option<Vec<Condition>>> {
    of(vec(condition(), 0..3).prop_map(|mut c| {
        c.sort_by(|a, b| a.type_.cmp(&b.type_));
        c.dedup_by(|a, b| a.type_ == b.type_);
        c
    }))
}

fn parameters() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z_]{3,20}", "[ -~]{0,12}", 0..4)
}

fn resources() -> impl Strategy<Value = ResourceRequirements> {
    let map = || {
        of(proptest::collection::btree_map(
            select(vec!["cpu".to_owned(), "memory".to_owned()]),
            quantity().prop_map(Quantity),
            0..3,
        ))
    };
    (map(), map()).prop_map(|(limits, requests)| ResourceRequirements {
        claims: None,
        limits,
        requests,
    })
}

fn volume() -> impl Strategy<Value = VolumeSpec> {
    (quantity(), of(dns_name())).prop_map(|(size, storage_class_name)| VolumeSpec {
        size,
        storage_class_name,
    })
}

fn backup_target() -> impl Strategy<Value = BackupTarget> {
    prop_oneof![
        dns_name().prop_map(|claim_name| BackupTarget {
            volume: Some(VolumeTarget { claim_name }),
            s3: None,
            azure: None,
            gcs: None,
        }),
        (
            "[a-z0-9]{3,24}",
            "[a-z0-9]{3,20}",
            of("[a-z/]{1,10}"),
            of(Just("https://azurite.example:10000/acct".to_owned())),
            dns_name(),
            of((dns_name(), "[a-z.]{1,10}")),
        )
            .prop_map(
                |(storage_account, container, path, endpoint, credentials_secret, ca)| {
                    BackupTarget {
                        volume: None,
                        s3: None,
                        azure: Some(AzureTarget {
                            storage_account,
                            container,
                            path,
                            endpoint,
                            credentials_secret,
                            ca_bundle: ca.map(|(name, key)| SecretKeySelector { name, key }),
                        }),
                        gcs: None,
                    }
                }
            ),
        ("[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", of("[a-z/]{1,10}"), dns_name()).prop_map(
            |(bucket, path, credentials_secret)| BackupTarget {
                volume: None,
                s3: None,
                azure: None,
                gcs: Some(GcsTarget {
                    bucket,
                    path,
                    credentials_secret,
                    ca_bundle: None,
                }),
            }
        ),
        (
            "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
            of("[a-z/]{1,10}"),
            of(Just("https://minio.example:9000".to_owned())),
            of(Just("eu-west-1".to_owned())),
            dns_name(),
            of((dns_name(), "[a-z.]{1,10}")),
            of(prop_oneof![
                Just(ServerSideEncryption {
                    type_: SseType::Aes256,
                    kms_key_id: None
                }),
                "[a-z0-9-]{1,20}".prop_map(|k| ServerSideEncryption {
                    type_: SseType::AwsKms,
                    kms_key_id: Some(k)
                }),
            ])
        )
            .prop_map(
                |(bucket, path, endpoint, region, credentials_secret, ca, server_side_encryption)| {
                    BackupTarget {
                        volume: None,
                        s3: Some(S3Target {
                            bucket,
                            path,
                            endpoint,
                            region,
                            credentials_secret,
                            ca_bundle: ca.map(|(name, key)| SecretKeySelector { name, key }),
                            server_side_encryption,
                        }),
                        azure: None,
                        gcs: None,
                    }
                }
            ),
    ]
}

fn backup_configuration() -> impl Strategy<Value = BackupConfiguration> {
    (
        backup_target(),
        of(select(vec!["30d".to_owned(), "8w".to_owned(), "6m".to_owned()])),
        of(select(vec!["30s".to_owned(), "5min".to_owned(), "1h".to_owned()])),
        of(select(vec![BackupCompression::Zstd, BackupCompression::None])),
    )
        .prop_map(
            |(target, retention, archive_timeout, compression)| BackupConfiguration {
                target,
                retention,
                archive_timeout,
                compression,
            },
        )
}

fn major() -> impl Strategy<Value = i32> {
    MIN_POSTGRES_MAJOR..=MAX_POSTGRES_MAJOR
}

fn instances() -> impl Strategy<Value = Option<i32>> {
    of(1..=MAX_INSTANCES)
}

/// Metadata as the apiserver sends it, sometimes with annotations, and sometimes with a value in
/// the conversion annotation that Tusk did not write. Those values are either not in Tusk's stash
/// form (so they must come back untouched), or stashes that fit any object of the kinds they
/// name (top-level spec fields of a cluster). A stash made stale by an edit at an older version
/// is a different case, covered by the fixture tests: there the edit wins.
pub fn metadata() -> impl Strategy<Value = Value> {
    let foreign = select(vec![
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"previous":"x"}"#.to_owned(),
        r#"{"spec":{"paused":true}}"#.to_owned(),
        r#"{"spec":{"image":"postgres:16"}}"#.to_owned(),
        r#"{"previous":"{\"spec\":{\"paused\":true}}"}"#.to_owned(),
        r#"{"spec": {"paused": true}}"#.to_owned(),
    ]);
    let annotations = of(proptest::collection::btree_map(
        prop_oneof![
            Just(CONVERSION_DATA_ANNOTATION.to_owned()),
            "example\\.com/[a-z]{1,6}"
        ],
        prop_oneof![foreign, "[ -~]{0,10}"],
        1..3,
    ));
    let labels = of(proptest::collection::btree_map(
        "[a-z]{1,6}",
        "[a-z0-9]{0,6}",
        1..3,
    ));
    (dns_name(), dns_name(), 1i64..50, labels, annotations).prop_map(
        |(name, namespace, generation, labels, annotations)| {
            let mut m = json!({
                "name": name,
                "namespace": namespace,
                "uid": "6f1c7a52-0d6b-4a59-9a0e-2b0c0d7f3e11",
                "resourceVersion": "4711",
                "generation": generation,
                "creationTimestamp": "2026-11-21T10:00:00Z",
            });
            if let Some(labels) = labels {
                m["labels"] = json!(labels);
            }
            if let Some(annotations) = annotations {
                m["annotations"] = json!(annotations);
            }
            m
        },
    )
}

fn object<S: Serialize, T: Serialize>(
    kind: &str,
    version: &str,
    meta: Value,
    spec: S,
    status: Option<T>,
) -> Value {
    let mut o = json!({
        "apiVersion": format!("tusk.dev/{version}"),
        "kind": kind,
        "metadata": meta,
        "spec": spec,
    });
    if let Some(status) = status {
        o["status"] = serde_json::to_value(status).unwrap();
    }
    o
}

// ---------------------------------------------------------------- PostgresCluster

pub fn cluster_v1() -> impl Strategy<Value = Value> {
    use cluster::v1::*;
    let postgres =
        (major(), of(image()), of(parameters())).prop_map(|(version, image, parameters)| PostgresSpec {
            version,
            image,
            parameters,
        });
    let storage = (
        volume(),
        of(volume()),
        of(select(vec![ReclaimPolicy::Retain, ReclaimPolicy::Delete])),
    )
        .prop_map(|(data, wal, reclaim_policy)| StorageSpec {
            data,
            wal,
            reclaim_policy,
        });
    let bootstrap = prop_oneof![
        (
            of(identifier()),
            of(identifier()),
            of(Just("UTF8".to_owned())),
            of(Just("C.UTF-8".to_owned())),
            of(any::<bool>())
        )
            .prop_map(|(database, owner, encoding, locale, data_checksums)| Bootstrap {
                initdb: Some(InitDb {
                    database,
                    owner,
                    encoding,
                    locale,
                    data_checksums
                }),
                from_backup: None,
                recovery: None,
            }),
        dns_name().prop_map(|backup_name| Bootstrap {
            initdb: None,
            from_backup: Some(FromBackup { backup_name }),
            recovery: None,
        }),
        (
            prop_oneof![
                dns_name().prop_map(|name| (Some(BackupReference { name }), None)),
                (backup_target(), dns_name())
                    .prop_map(|(target, cluster_name)| (None, Some(RecoverySource { target, cluster_name }))),
            ],
            of(prop_oneof![
                timestamp().prop_map(|t| RecoveryTarget {
                    time: Some(t),
                    lsn: None,
                    xid: None,
                    name: None
                }),
                "[0-9A-F]{1,8}/[0-9A-F]{1,8}".prop_map(|l| RecoveryTarget {
                    time: None,
                    lsn: Some(l),
                    xid: None,
                    name: None
                }),
                "[0-9]{1,9}".prop_map(|x| RecoveryTarget {
                    time: None,
                    lsn: None,
                    xid: Some(x),
                    name: None
                }),
                identifier().prop_map(|n| RecoveryTarget {
                    time: None,
                    lsn: None,
                    xid: None,
                    name: Some(n)
                }),
            ]),
        )
            .prop_map(|((backup, source), target)| Bootstrap {
                initdb: None,
                from_backup: None,
                recovery: Some(Recovery {
                    backup,
                    source,
                    target
                }),
            }),
    ];
    let tls = prop_oneof![
        select(vec![TlsMode::Disabled, TlsMode::Operator]).prop_map(|mode| TlsSpec {
            mode,
            secret_name: None,
            issuer_ref: None,
        }),
        dns_name().prop_map(|s| TlsSpec {
            mode: TlsMode::Provided,
            secret_name: Some(s),
            issuer_ref: None,
        }),
        (
            dns_name(),
            of(select(vec!["Issuer", "ClusterIssuer"])),
            of(dns_name())
        )
            .prop_map(|(name, kind, group)| TlsSpec {
                mode: TlsMode::CertManager,
                secret_name: None,
                issuer_ref: Some(IssuerRef {
                    name,
                    kind: kind.map(str::to_owned),
                    group,
                }),
            }),
    ];
    let monitoring =
        (of(any::<bool>()), of(dns_name())).prop_map(|(pod_monitor, custom_queries_config_map)| {
            MonitoringSpec {
                pod_monitor,
                custom_queries_config_map,
            }
        });
    let update = (
        of(select(vec![
            PrimaryUpdate::Unsupervised,
            PrimaryUpdate::Supervised,
        ])),
        of(select(vec![
            PrimaryUpdateMethod::Restart,
            PrimaryUpdateMethod::Switchover,
        ])),
    );
    let spec = (
        postgres,
        instances(),
        storage,
        of(resources()),
        of(bootstrap),
        of(backup_configuration()),
        of(tls),
        of(monitoring),
        of(update),
        of(any::<bool>()),
        of("[0-9]{1,5}(s|m)"),
        (
            of(dns_name().prop_map(|to| Switchover {
                to: to
                    .chars()
                    .take(63)
                    .collect::<String>()
                    .trim_end_matches('-')
                    .to_owned(),
            })),
            of(of((
                select(vec![SynchronousMethod::Any, SynchronousMethod::First]),
                of(select(vec![DataDurability::Required, DataDurability::Preferred])),
            ))),
            of((
                of(select(vec![
                    AntiAffinity::Preferred,
                    AntiAffinity::Required,
                    AntiAffinity::Disabled,
                ])),
                of(select(vec![
                    "kubernetes.io/hostname".to_owned(),
                    "topology.kubernetes.io/zone".to_owned(),
                ])),
                of(prop_oneof![
                    Just(Vec::new()),
                    (1i32..3).prop_map(|max_skew| vec![
                        k8s_openapi::api::core::v1::TopologySpreadConstraint {
                            max_skew,
                            topology_key: "topology.kubernetes.io/zone".into(),
                            when_unsatisfiable: "DoNotSchedule".into(),
                            ..Default::default()
                        }
                    ]),
                ]),
                of(identifier()
                    .prop_map(|pool| std::collections::BTreeMap::from([("pool".to_owned(), pool)]))),
            )
                .prop_map(
                    |(anti_affinity, topology_key, topology_spread_constraints, node_selector)| Scheduling {
                        anti_affinity,
                        topology_key,
                        topology_spread_constraints,
                        node_selector,
                        tolerations: None,
                    },
                )
                .boxed()),
            of((
                any::<bool>(),
                of(vec(
                    (identifier(), identifier(), any::<bool>()).prop_map(|(key, value, namespaces)| {
                        let selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                            match_labels: Some(BTreeMap::from([(key, value)])),
                            ..Default::default()
                        });
                        k8s_openapi::api::networking::v1::NetworkPolicyPeer {
                            namespace_selector: if namespaces { selector.clone() } else { None },
                            pod_selector: if namespaces { None } else { selector },
                            ip_block: None,
                        }
                    }),
                    0..3,
                )),
            )
                .prop_map(|(enabled, allowed_clients)| cluster::v1::NetworkPolicySpec {
                    enabled,
                    allowed_clients,
                })),
        )
            // Boxed: the value trees of this many fields would not fit a test thread's stack.
            .boxed(),
    )
        .prop_map(
            |(
                postgres,
                instances,
                storage,
                resources,
                bootstrap,
                backup,
                tls,
                monitoring,
                update,
                paused,
                failover_delay,
                (switchover, replication, scheduling, network_policy),
            )| {
                // Switchover and synchronous replication need two instances (CEL rules); keep
                // generated objects valid.
                let instances = match (update, &replication) {
                    (Some((_, Some(PrimaryUpdateMethod::Switchover))), _) | (_, Some(Some(_))) => {
                        Some(instances.unwrap_or(2).max(2))
                    }
                    _ => instances,
                };
                PostgresClusterSpec {
                    postgres,
                    instances,
                    storage,
                    resources,
                    bootstrap,
                    backup,
                    tls,
                    monitoring,
                    update_strategy: update.map(|(primary_update, primary_update_method)| UpdateStrategy {
                        primary_update,
                        primary_update_method,
                    }),
                    paused,
                    failover_delay,
                    switchover,
                    // `number` stays below `instances` (a CEL rule).
                    replication: replication.map(|synchronous| Replication {
                        synchronous: synchronous.map(|(method, data_durability)| Synchronous {
                            method,
                            number: (instances.unwrap_or(1) - 1).clamp(1, 8),
                            data_durability,
                        }),
                    }),
                    scheduling,
                    network_policy,
                }
            },
        );
    let status = of((
        conditions(),
        of(1i64..50),
        instances(),
        instances(),
        of(dns_name()),
        of(major()),
        of(dns_name()),
        of((of(timestamp()), of("[0-9A-F]{24}"), of(dns_name()))),
        // Names are the list's keys: unique.
        of(vec(instance_status(), 0..3).prop_map(|list| {
            list.into_iter()
                .enumerate()
                .map(|(i, s)| cluster::v1::InstanceStatus {
                    name: format!("{}-{i}", s.name),
                    ..s
                })
                .collect::<Vec<_>>()
        })),
        (
            of(dns_name()),
            of(1i64..100),
            of((
                dns_name(),
                of(dns_name()),
                select(vec!["Failover", "Switchover"]),
                timestamp(),
                of("[a-z ]{0,20}"),
                of(timestamp()),
            )
                .prop_map(|(instance, from, reason, time, message, rejoined_at)| Promotion {
                    instance,
                    from,
                    reason: reason.to_owned(),
                    time,
                    message,
                    rejoined_at,
                })),
            of((
                dns_name(),
                select(vec!["Pending", "Running", "Completed", "Failed"]),
                of("[a-z ]{0,20}"),
            )
                .prop_map(|(to, phase, message)| SwitchoverStatus {
                    to,
                    phase: phase.to_owned(),
                    message,
                })),
        ),
    )
        .prop_map(
            |(
                conditions,
                observed_generation,
                instances,
                ready_instances,
                current_primary,
                postgres_version,
                binding,
                backup,
                instance_status,
                (target_primary, timeline, last_promotion, switchover),
            )| PostgresClusterStatus {
                conditions,
                observed_generation,
                instances,
                ready_instances,
                current_primary,
                postgres_version,
                binding: binding.map(|name| Binding { name }),
                backup: backup.map(|(at, wal, name)| BackupStatus {
                    first_recoverability_point: at.clone(),
                    last_archived_wal: wal.clone(),
                    last_archived_wal_time: at.clone(),
                    last_failed_wal: wal,
                    last_failed_wal_time: at.clone(),
                    last_successful_backup: name,
                    last_successful_backup_time: at,
                }),
                instance_status,
                target_primary,
                timeline,
                last_promotion,
                switchover,
            },
        ));
    (metadata(), spec, status).prop_map(|(m, spec, status)| object("PostgresCluster", "v1", m, spec, status))
}

fn instance_status() -> impl Strategy<Value = cluster::v1::InstanceStatus> {
    (
        dns_name(),
        prop_oneof![Just("primary"), Just("replica"), Just("unknown")],
        any::<bool>(),
        of(1i64..100),
        of("[0-9A-F]{1,8}/[0-9A-F]{1,8}"),
        of(0i64..1_000_000),
        of("[a-z ]{0,20}"),
        of(timestamp()),
        of(timestamp()),
        of("reg\\.example/tusk-operator:1\\.[0-9]\\.0"),
        of(any::<bool>()),
    )
        .prop_map(
            |(
                name,
                role,
                ready,
                timeline,
                lsn,
                lag_bytes,
                message,
                fenced_at,
                rewound_at,
                instance_manager,
                instance_manager_outdated,
            )| {
                cluster::v1::InstanceStatus {
                    name,
                    role: role.to_owned(),
                    ready,
                    timeline,
                    replayed_lsn: lsn.clone(),
                    lsn,
                    lag_bytes,
                    message,
                    fenced_at,
                    rewound_at,
                    instance_manager,
                    instance_manager_outdated,
                }
            },
        )
}

pub fn cluster_v1beta1() -> impl Strategy<Value = Value> {
    use cluster::v1beta1::*;
    let spec = (
        major(),
        instances(),
        volume(),
        of(parameters()),
        of(resources()),
        of(backup_configuration()),
    )
        .prop_map(
            |(postgres_version, instances, storage, parameters, resources, backup)| PostgresClusterSpec {
                postgres_version,
                instances,
                storage,
                postgresql: parameters.map(|parameters| PostgresqlSpec { parameters }),
                resources,
                backup,
            },
        );
    let status = of((
        conditions(),
        of(1i64..50),
        instances(),
        instances(),
        of(dns_name()),
        of(dns_name()),
    )
        .prop_map(
            |(conditions, observed_generation, instances, ready_instances, current_primary, binding)| {
                PostgresClusterStatus {
                    conditions,
                    observed_generation,
                    instances,
                    ready_instances,
                    current_primary,
                    binding: binding.map(|name| Binding { name }),
                }
            },
        ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresCluster", "v1beta1", m, spec, status))
}

pub fn cluster_v1alpha1() -> impl Strategy<Value = Value> {
    use cluster::v1alpha1::*;
    let spec = (major(), instances(), quantity(), of(dns_name()), of(parameters())).prop_map(
        |(version, replicas, storage_size, storage_class_name, parameters)| PostgresClusterSpec {
            version: MajorVersion(version),
            replicas,
            storage_size,
            storage_class_name,
            parameters,
        },
    );
    let status = of((
        conditions(),
        of(1i64..50),
        instances(),
        instances(),
        of(dns_name()),
    )
        .prop_map(
            |(conditions, observed_generation, replicas, ready_replicas, binding)| PostgresClusterStatus {
                conditions,
                observed_generation,
                replicas,
                ready_replicas,
                binding: binding.map(|name| Binding { name }),
            },
        ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresCluster", "v1alpha1", m, spec, status))
}

// ---------------------------------------------------------------- PostgresUser

pub fn user_v1() -> impl Strategy<Value = Value> {
    use user::v1::*;
    let privileges = vec(
        (
            identifier(),
            proptest::sample::subsequence(
                vec![
                    DatabasePrivilege::Connect,
                    DatabasePrivilege::Create,
                    DatabasePrivilege::Temporary,
                    DatabasePrivilege::All,
                ],
                1..=4,
            ),
        )
            .prop_map(|(database, privileges)| DatabasePrivileges { database, privileges }),
        0..3,
    )
    .prop_map(|mut p| {
        p.sort_by(|a, b| a.database.cmp(&b.database));
        p.dedup_by(|a, b| a.database == b.database);
        p
    });
    let secret = (dns_name(), of("[a-z.]{1,8}")).prop_map(|(name, key)| PasswordSecret { name, key });
    let flags = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
    );
    let spec = (
        dns_name(),
        of(identifier()),
        of(secret),
        flags,
        of(-1i32..100),
        of(timestamp()),
        of(vec("[a-z]{1,8}", 0..3)),
        of(privileges),
        of(select(vec![ReclaimPolicy::Retain, ReclaimPolicy::Delete])),
        of(any::<bool>()),
    )
        .prop_map(
            |(
                cluster,
                role_name,
                password_secret,
                (login, createdb, createrole, inherit),
                connection_limit,
                valid_until,
                member_of,
                privileges,
                reclaim_policy,
                client_certificate,
            )| {
                let member_of = member_of.map(|mut m| {
                    m.sort();
                    m.dedup();
                    m.retain(|r| Some(r) != role_name.as_ref());
                    m
                });
                PostgresUserSpec {
                    cluster: ClusterReference { name: cluster },
                    role_name,
                    password_secret,
                    login,
                    createdb,
                    createrole,
                    inherit,
                    connection_limit,
                    valid_until,
                    member_of,
                    privileges,
                    reclaim_policy,
                    client_certificate,
                }
            },
        );
    let status = of((
        conditions(),
        of(1i64..50),
        of(dns_name()),
        of(identifier()),
        of("[0-9]{1,6}"),
    )
        .prop_map(
            |(conditions, observed_generation, binding, role_name, password_secret_version)| {
                PostgresUserStatus {
                    conditions,
                    observed_generation,
                    binding: binding.map(|name| Binding { name }),
                    role_name,
                    password_secret_version,
                }
            },
        ));
    (metadata(), spec, status).prop_map(|(m, spec, status)| object("PostgresUser", "v1", m, spec, status))
}

pub fn user_v1alpha1() -> impl Strategy<Value = Value> {
    use user::v1alpha1::*;
    let spec = (
        dns_name(),
        of(identifier()),
        of(dns_name()),
        of(any::<bool>()),
        of(-1i32..100),
    )
        .prop_map(
            |(cluster, username, password_secret_name, login, connection_limit)| PostgresUserSpec {
                cluster,
                username,
                password_secret_name,
                login,
                connection_limit,
            },
        );
    let status = of((conditions(), of(1i64..50), of(dns_name())).prop_map(
        |(conditions, observed_generation, binding)| PostgresUserStatus {
            conditions,
            observed_generation,
            binding: binding.map(|name| Binding { name }),
        },
    ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresUser", "v1alpha1", m, spec, status))
}

// ---------------------------------------------------------------- PostgresDatabase

fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    names.into_iter().filter(|n| seen.insert(n.clone())).collect()
}

pub fn database_v1() -> impl Strategy<Value = Value> {
    use database::v1::*;
    let extension = ("[a-z_]{1,10}", of("[0-9.]{1,4}"), of("[a-z]{1,6}"));
    let extensions = vec(extension, 0..4).prop_map(|exts| {
        let mut seen = std::collections::BTreeSet::new();
        exts.into_iter()
            .filter(|(n, _, _)| seen.insert(n.clone()))
            .map(|(name, version, schema)| Extension {
                name,
                version,
                schema,
            })
            .collect::<Vec<_>>()
    });
    let spec = (
        dns_name(),
        of(identifier()),
        identifier(),
        of(extensions),
        of(Just("UTF8".to_owned())),
        of(Just("C".to_owned())),
        of(select(vec![ReclaimPolicy::Retain, ReclaimPolicy::Delete])),
    )
        .prop_map(
            |(cluster, database_name, owner, extensions, encoding, locale, reclaim_policy)| {
                PostgresDatabaseSpec {
                    cluster: ClusterReference { name: cluster },
                    database_name,
                    owner,
                    extensions,
                    encoding,
                    locale,
                    reclaim_policy,
                }
            },
        );
    let status = of(
        (conditions(), of(1i64..50)).prop_map(|(conditions, observed_generation)| PostgresDatabaseStatus {
            conditions,
            observed_generation,
        }),
    );
    (metadata(), spec, status).prop_map(|(m, spec, status)| object("PostgresDatabase", "v1", m, spec, status))
}

pub fn database_v1alpha1() -> impl Strategy<Value = Value> {
    use database::v1alpha1::*;
    let spec = (
        dns_name(),
        of(identifier()),
        identifier(),
        of(vec("[a-z_]{1,10}", 0..4).prop_map(unique_names)),
    )
        .prop_map(|(cluster, name, owner, extensions)| PostgresDatabaseSpec {
            cluster,
            name,
            owner,
            extensions,
        });
    let status = of(
        (conditions(), of(1i64..50)).prop_map(|(conditions, observed_generation)| PostgresDatabaseStatus {
            conditions,
            observed_generation,
        }),
    );
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresDatabase", "v1alpha1", m, spec, status))
}

// ---------------------------------------------------------------- PostgresBackup

fn method() -> impl Strategy<Value = BackupMethod> {
    select(vec![BackupMethod::Basebackup, BackupMethod::Dump])
}

fn phase() -> impl Strategy<Value = backup::v1::BackupPhase> {
    use backup::v1::BackupPhase::*;
    select(vec![Pending, Running, Completed, Failed])
}

pub fn backup_v1() -> impl Strategy<Value = Value> {
    use backup::v1::*;
    let spec = (
        dns_name(),
        of(method()),
        of(backup_target()),
        of(select(vec![
            BackupInstance::PreferReplica,
            BackupInstance::Primary,
        ])),
    )
        .prop_map(|(cluster, method, target, instance)| PostgresBackupSpec {
            cluster: ClusterReference { name: cluster },
            method,
            target,
            instance,
        });
    let status = of((
        conditions(),
        of(1i64..50),
        of(phase()),
        of(timestamp()),
        of(timestamp()),
        of("s3://[a-z/]{1,12}"),
        of(0i64..1 << 40),
        of("[0-9A-F]{24}"),
        of("[0-9A-F]{24}"),
        of((
            "[0-9A-F]{1,8}/[0-9A-F]{1,8}",
            1i64..10,
            dns_name(),
            "PostgreSQL 1[5-8]",
            "[a-z ]{1,20}",
        )),
    )
        .prop_map(
            |(
                conditions,
                observed_generation,
                phase,
                started_at,
                completed_at,
                location,
                size_bytes,
                begin_wal,
                end_wal,
                run,
            )| PostgresBackupStatus {
                conditions,
                observed_generation,
                phase,
                started_at,
                completed_at,
                location,
                size_bytes,
                begin_wal,
                end_wal,
                begin_lsn: run.as_ref().map(|r| r.0.clone()),
                end_lsn: run.as_ref().map(|r| r.0.clone()),
                timeline: run.as_ref().map(|r| r.1),
                instance_name: run.as_ref().map(|r| r.2.clone()),
                postgres_version: run.as_ref().map(|r| r.3.clone()),
                error: run.map(|r| r.4),
            },
        ));
    (metadata(), spec, status).prop_map(|(m, spec, status)| object("PostgresBackup", "v1", m, spec, status))
}

pub fn backup_v1alpha1() -> impl Strategy<Value = Value> {
    use backup::v1alpha1::*;
    let spec =
        (dns_name(), of(method())).prop_map(|(cluster, method)| PostgresBackupSpec { cluster, method });
    let status = of((
        conditions(),
        of(1i64..50),
        of(phase()),
        of(timestamp()),
        of(timestamp()),
        of("s3://[a-z/]{1,12}"),
    )
        .prop_map(
            |(conditions, observed_generation, phase, started_at, completed_at, location)| {
                PostgresBackupStatus {
                    conditions,
                    observed_generation,
                    phase,
                    started_at,
                    completed_at,
                    location,
                }
            },
        ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresBackup", "v1alpha1", m, spec, status))
}

// ---------------------------------------------------------------- PostgresBackupSchedule

fn cron() -> impl Strategy<Value = String> {
    select(vec![
        "@daily",
        "0 3 * * *",
        "*/15 * * * 1-5",
        "30 2 1 JAN,JUL SUN",
    ])
    .prop_map(str::to_owned)
}

pub fn schedule_v1() -> impl Strategy<Value = Value> {
    use schedule::v1::*;
    let retention = prop_oneof![
        (1i32..1000, of(Just("30d".to_owned()))).prop_map(|(k, max_age)| Retention {
            keep_last: Some(k),
            max_age
        }),
        Just(Retention {
            keep_last: None,
            max_age: Some("8w".to_owned())
        }),
    ];
    let spec = (
        dns_name(),
        cron(),
        of(Just("Europe/Paris".to_owned())),
        of(any::<bool>()),
        of(method()),
        of(backup_target()),
        of(retention),
    )
        .prop_map(
            |(cluster, schedule, time_zone, suspend, method, target, retention)| PostgresBackupScheduleSpec {
                cluster: ClusterReference { name: cluster },
                schedule,
                time_zone,
                suspend,
                method,
                target,
                retention,
            },
        );
    let status = of((
        conditions(),
        of(1i64..50),
        of(timestamp()),
        of(timestamp()),
        of(timestamp()),
        of(dns_name()),
    )
        .prop_map(
            |(
                conditions,
                observed_generation,
                last_schedule_time,
                last_successful_time,
                next_schedule_time,
                last_backup_name,
            )| PostgresBackupScheduleStatus {
                conditions,
                observed_generation,
                last_schedule_time,
                last_successful_time,
                next_schedule_time,
                last_backup_name,
            },
        ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresBackupSchedule", "v1", m, spec, status))
}

pub fn schedule_v1alpha1() -> impl Strategy<Value = Value> {
    use schedule::v1alpha1::*;
    let spec = (dns_name(), cron(), of(any::<bool>()), of(1i32..1000)).prop_map(
        |(cluster, schedule, suspend, keep_last)| PostgresBackupScheduleSpec {
            cluster,
            schedule,
            suspend,
            keep_last,
        },
    );
    let status = of((conditions(), of(1i64..50), of(timestamp())).prop_map(
        |(conditions, observed_generation, last_schedule_time)| PostgresBackupScheduleStatus {
            conditions,
            observed_generation,
            last_schedule_time,
        },
    ));
    (metadata(), spec, status)
        .prop_map(|(m, spec, status)| object("PostgresBackupSchedule", "v1alpha1", m, spec, status))
}
