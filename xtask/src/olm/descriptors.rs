//! Spec and status descriptors: how the OpenShift console shows and edits each field of each
//! served version.

use serde_json::{Value, json};

const CONDITIONS: &str = "urn:alm:descriptor:io.kubernetes.conditions";
const POD_COUNT: &str = "urn:alm:descriptor:com.tectonic.ui:podCount";
const NUMBER: &str = "urn:alm:descriptor:com.tectonic.ui:number";
const TEXT: &str = "urn:alm:descriptor:com.tectonic.ui:text";
const BOOLEAN: &str = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch";
const SECRET: &str = "urn:alm:descriptor:io.kubernetes:Secret";
const STORAGE_CLASS: &str = "urn:alm:descriptor:io.kubernetes:StorageClass";
const ADVANCED: &str = "urn:alm:descriptor:com.tectonic.ui:advanced";

type Row = (&'static str, &'static str, &'static str, &'static [&'static str]);

fn rows(rows: &[Row]) -> Value {
    rows.iter()
        .map(|(path, name, description, x)| {
            json!({"path": path, "displayName": name, "description": description, "x-descriptors": x})
        })
        .collect()
}

/// The spec descriptors of `kind` at `version`; every path exists in that version's schema.
pub fn spec_descriptors(kind: &str, version: &str) -> Value {
    let cluster_ref: &[Row] = &[(
        "cluster.name",
        "Cluster",
        "The PostgresCluster it belongs to",
        &[TEXT],
    )];
    let cluster_name: &[Row] = &[("cluster", "Cluster", "The PostgresCluster it belongs to", &[TEXT])];
    let table: &[Row] = match (kind, version) {
        ("PostgresCluster", "v1") => &[
            (
                "instances",
                "Instances",
                "Pods: one primary and the rest streaming replicas",
                &[POD_COUNT],
            ),
            (
                "postgres.version",
                "PostgreSQL version",
                "The PostgreSQL major version",
                &[NUMBER],
            ),
            (
                "storage.data.size",
                "Data volume size",
                "Size of each instance's data volume",
                &[TEXT],
            ),
            (
                "storage.data.storageClassName",
                "Storage class",
                "StorageClass of the data volumes",
                &[STORAGE_CLASS],
            ),
            (
                "paused",
                "Paused",
                "Stop reconciling this cluster",
                &[BOOLEAN, ADVANCED],
            ),
        ],
        ("PostgresCluster", "v1beta1") => &[
            (
                "instances",
                "Instances",
                "Pods: one primary and the rest streaming replicas",
                &[POD_COUNT],
            ),
            (
                "postgresVersion",
                "PostgreSQL version",
                "The PostgreSQL major version",
                &[NUMBER],
            ),
            (
                "storage.size",
                "Data volume size",
                "Size of each instance's data volume",
                &[TEXT],
            ),
            (
                "storage.storageClassName",
                "Storage class",
                "StorageClass of the data volumes",
                &[STORAGE_CLASS],
            ),
        ],
        ("PostgresCluster", _) => &[
            (
                "replicas",
                "Replicas",
                "Pods: one primary and the rest streaming replicas",
                &[POD_COUNT],
            ),
            (
                "version",
                "PostgreSQL version",
                "The PostgreSQL major version",
                &[TEXT],
            ),
            (
                "storageSize",
                "Data volume size",
                "Size of each instance's data volume",
                &[TEXT],
            ),
            (
                "storageClassName",
                "Storage class",
                "StorageClass of the data volumes",
                &[STORAGE_CLASS],
            ),
        ],
        ("PostgresUser", "v1") => &[
            ("roleName", "Role name", "The PostgreSQL role", &[TEXT]),
            ("login", "Login", "Whether the role may log in", &[BOOLEAN]),
            (
                "connectionLimit",
                "Connection limit",
                "Most concurrent connections",
                &[NUMBER],
            ),
            (
                "passwordSecret.name",
                "Password Secret",
                "Secret holding the password",
                &[SECRET],
            ),
            (
                "reclaimPolicy",
                "Reclaim policy",
                "Drop or keep the role on delete",
                &[
                    "urn:alm:descriptor:com.tectonic.ui:select:Retain",
                    "urn:alm:descriptor:com.tectonic.ui:select:Delete",
                ],
            ),
        ],
        ("PostgresUser", _) => &[
            ("username", "Role name", "The PostgreSQL role", &[TEXT]),
            ("login", "Login", "Whether the role may log in", &[BOOLEAN]),
            (
                "connectionLimit",
                "Connection limit",
                "Most concurrent connections",
                &[NUMBER],
            ),
            (
                "passwordSecretName",
                "Password Secret",
                "Secret holding the password",
                &[SECRET],
            ),
        ],
        ("PostgresDatabase", "v1") => &[
            (
                "databaseName",
                "Database name",
                "The PostgreSQL database",
                &[TEXT],
            ),
            ("owner", "Owner", "The role that owns it", &[TEXT]),
        ],
        ("PostgresDatabase", _) => &[
            ("name", "Database name", "The PostgreSQL database", &[TEXT]),
            ("owner", "Owner", "The role that owns it", &[TEXT]),
        ],
        ("PostgresBackup", "v1") => &[("method", "Method", "How the backup is taken", &[TEXT])],
        ("PostgresBackup", _) => &[("method", "Method", "How the backup is taken", &[TEXT])],
        ("PostgresBackupSchedule", "v1") => &[
            ("schedule", "Schedule", "Cron schedule", &[TEXT]),
            ("suspend", "Suspend", "Take no backups while set", &[BOOLEAN]),
            (
                "retention.keepLast",
                "Keep last",
                "How many backups to keep",
                &[NUMBER],
            ),
        ],
        ("PostgresBackupSchedule", _) => &[
            ("schedule", "Schedule", "Cron schedule", &[TEXT]),
            ("suspend", "Suspend", "Take no backups while set", &[BOOLEAN]),
            ("keepLast", "Keep last", "How many backups to keep", &[NUMBER]),
        ],
        _ => &[],
    };
    let reference = if version == "v1" {
        cluster_ref
    } else {
        cluster_name
    };
    let mut all = rows(table);
    if kind != "PostgresCluster" {
        all.as_array_mut()
            .expect("rows are an array")
            .extend(rows(reference).as_array().cloned().unwrap_or_default());
    }
    all
}

/// The status descriptors of `kind` at `version`.
pub fn status_descriptors(kind: &str, version: &str) -> Value {
    let mut table: Vec<Row> = vec![(
        "conditions",
        "Conditions",
        "Ready, Progressing and Degraded",
        &[CONDITIONS],
    )];
    match (kind, version) {
        ("PostgresCluster", "v1alpha1") => {
            table.push(("readyReplicas", "Ready replicas", "Pods ready", &[POD_COUNT]));
            table.push((
                "binding.name",
                "Binding",
                "servicebinding.io Secret with the superuser's connection",
                &[SECRET],
            ));
        }
        ("PostgresCluster", _) => {
            table.push(("readyInstances", "Ready instances", "Pods ready", &[POD_COUNT]));
            table.push(("currentPrimary", "Primary", "The pod that is primary", &[TEXT]));
            table.push((
                "binding.name",
                "Binding",
                "servicebinding.io Secret with the superuser's connection",
                &[SECRET],
            ));
        }
        ("PostgresUser", _) => {
            table.push((
                "binding.name",
                "Binding",
                "servicebinding.io Secret with this role's connection",
                &[SECRET],
            ));
        }
        ("PostgresBackup", _) => {
            table.push(("phase", "Phase", "Where the backup is", &[TEXT]));
        }
        _ => {}
    }
    rows(&table)
}
