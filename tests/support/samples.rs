//! Valid specs of every kind and version, shared by the client-side CEL tests and the apiserver
//! tests.

use serde_json::{Value, json};

/// Merges `patch` into `base`; a null in `patch` removes the field.
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// A valid v1 `PostgresCluster` spec with `patch` merged in.
pub fn cluster(patch: Value) -> Value {
    let mut spec = json!({"postgres": {"version": 17}, "instances": 3, "storage": {"data": {"size": "10Gi", "storageClassName": "fast"}}});
    merge(&mut spec, patch);
    spec
}

/// One valid spec per kind and version, using most fields.
pub fn valid_specs() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "PostgresCluster",
            "v1",
            cluster(json!({
                "postgres": {"image": "postgres:17", "parameters": {"max_connections": "200"}},
                "storage": {"wal": {"size": "2Gi"}, "reclaimPolicy": "Delete"},
                "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
                "backup": {"target": {"s3": {"bucket": "backups", "credentialsSecret": "s3"}}, "retention": "30d"},
                "tls": {"mode": "Provided", "secretName": "db-tls"},
                "updateStrategy": {"primaryUpdateMethod": "Switchover"},
            })),
        ),
        (
            "PostgresCluster",
            "v1beta1",
            json!({"postgresVersion": 16, "storage": {"size": "1Gi"}, "postgresql": {"parameters": {"work_mem": "8MB"}}}),
        ),
        (
            "PostgresCluster",
            "v1alpha1",
            json!({"version": "16", "replicas": 2, "storageSize": "1Gi"}),
        ),
        (
            "PostgresUser",
            "v1",
            json!({"cluster": {"name": "db"}, "roleName": "x\"; DROP TABLE t; --", "memberOf": ["readers"], "validUntil": "2030-01-01T00:00:00Z"}),
        ),
        (
            "PostgresUser",
            "v1alpha1",
            json!({"cluster": "db", "username": "app"}),
        ),
        (
            "PostgresDatabase",
            "v1",
            json!({"cluster": {"name": "db"}, "databaseName": "app", "owner": "app", "extensions": [{"name": "pg_trgm"}]}),
        ),
        (
            "PostgresDatabase",
            "v1alpha1",
            json!({"cluster": "db", "owner": "app", "extensions": ["pg_trgm"]}),
        ),
        (
            "PostgresBackup",
            "v1",
            json!({"cluster": {"name": "db"}, "target": {"volume": {"claimName": "backups"}}}),
        ),
        ("PostgresBackup", "v1alpha1", json!({"cluster": "db"})),
        (
            "PostgresBackupSchedule",
            "v1",
            json!({"cluster": {"name": "db"}, "schedule": "0 3 * * *", "retention": {"keepLast": 7}}),
        ),
        (
            "PostgresBackupSchedule",
            "v1alpha1",
            json!({"cluster": "db", "schedule": "@daily", "keepLast": 7}),
        ),
    ]
}
