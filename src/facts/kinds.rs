//! The registry of kinds: Tusk's own, and the kinds of the objects its controllers write. The
//! CRDs and converters ([`crate::api`]), RBAC ([`crate::rbac`]), the controllers' watches, the
//! CSV and the tests check themselves against it, so a kind added in one place and forgotten in
//! another fails a test.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    events::v1::Event,
    policy::v1::PodDisruptionBudget,
    rbac::v1::{Role, RoleBinding},
};

/// The API group of every Tusk kind.
pub const GROUP: &str = "tusk.dev";

/// The version every Tusk kind stores, and the hub of conversion.
pub const STORAGE_VERSION: &str = "v1";

/// A kind as the apiserver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group; `""` is the core group.
    pub group: &'static str,
    /// Kind, such as `StatefulSet`.
    pub kind: &'static str,
    /// Resource (plural) in URLs and RBAC rules, such as `statefulsets`.
    pub plural: &'static str,
}

const fn of<K: k8s_openapi::Resource>() -> Kind {
    Kind {
        group: K::GROUP,
        kind: K::KIND,
        plural: K::URL_PATH_SEGMENT,
    }
}

const fn tusk(kind: &'static str, plural: &'static str) -> Kind {
    Kind {
        group: GROUP,
        kind,
        plural,
    }
}

/// `PostgresCluster`.
pub const POSTGRES_CLUSTER: Kind = tusk("PostgresCluster", "postgresclusters");
/// `PostgresUser`.
pub const POSTGRES_USER: Kind = tusk("PostgresUser", "postgresusers");
/// `PostgresDatabase`.
pub const POSTGRES_DATABASE: Kind = tusk("PostgresDatabase", "postgresdatabases");
/// `PostgresBackup`.
pub const POSTGRES_BACKUP: Kind = tusk("PostgresBackup", "postgresbackups");
/// `PostgresBackupSchedule`.
pub const POSTGRES_BACKUP_SCHEDULE: Kind = tusk("PostgresBackupSchedule", "postgresbackupschedules");

/// Every Tusk kind, in the order the CRDs, the CSV and OperatorHub list them.
pub const TUSK_KINDS: [Kind; 5] = [
    POSTGRES_CLUSTER,
    POSTGRES_USER,
    POSTGRES_DATABASE,
    POSTGRES_BACKUP,
    POSTGRES_BACKUP_SCHEDULE,
];

/// What a `PostgresCluster` owns and the operator applies.
pub const CLUSTER_CHILDREN: [Kind; 10] = [
    of::<Secret>(),
    of::<ConfigMap>(),
    of::<ServiceAccount>(),
    of::<Role>(),
    of::<RoleBinding>(),
    of::<StatefulSet>(),
    of::<Service>(),
    of::<PodDisruptionBudget>(),
    POSTGRES_USER,
    POSTGRES_DATABASE,
];

/// What a `PostgresUser` owns: its binding Secret.
pub const USER_CHILDREN: [Kind; 1] = [of::<Secret>()];

/// The kind whose role label the operator patches, and the kind of what it reports to users.
pub const POD: Kind = of::<Pod>();
/// See [`POD`].
pub const EVENT: Kind = of::<Event>();
/// The primary's Lease of each cluster: created by the operator (never applied over, since its
/// holder changes), handed to a replica on failover, renewed by the primary.
pub const LEASE: Kind = of::<Lease>();
