//! The exact mapping between versions, on hand-written objects.

use serde_json::{Value, json};
use tusk::api::convert_object;

fn convert(object: Value, version: &str) -> Value {
    convert_object(object, &format!("tusk.dev/{version}"), 0).unwrap()
}

fn meta() -> Value {
    json!({"name": "db", "namespace": "apps", "uid": "2a4e7e36-5a0b-4bd6-9d51-6c2b3cb2b7f1", "generation": 4})
}

#[test]
fn cluster_v1alpha1_maps_field_by_field_to_v1_and_v1beta1() {
    let alpha = json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": meta(),
        "spec": {"version": "16", "replicas": 3, "storageSize": "20Gi", "storageClassName": "fast", "parameters": {"work_mem": "8MB"}},
        "status": {"observedGeneration": 4, "replicas": 3, "readyReplicas": 2, "binding": {"name": "db-superuser"}},
    });
    assert_eq!(
        convert(alpha.clone(), "v1"),
        json!({
            "apiVersion": "tusk.dev/v1",
            "kind": "PostgresCluster",
            "metadata": meta(),
            "spec": {
                "postgres": {"version": 16, "parameters": {"work_mem": "8MB"}},
                "instances": 3,
                "storage": {"data": {"size": "20Gi", "storageClassName": "fast"}},
            },
            "status": {"observedGeneration": 4, "instances": 3, "readyInstances": 2, "binding": {"name": "db-superuser"}},
        })
    );
    assert_eq!(
        convert(alpha, "v1beta1"),
        json!({
            "apiVersion": "tusk.dev/v1beta1",
            "kind": "PostgresCluster",
            "metadata": meta(),
            "spec": {
                "postgresVersion": 16,
                "instances": 3,
                "storage": {"size": "20Gi", "storageClassName": "fast"},
                "postgresql": {"parameters": {"work_mem": "8MB"}},
            },
            "status": {"observedGeneration": 4, "instances": 3, "readyInstances": 2, "binding": {"name": "db-superuser"}},
        })
    );
}

#[test]
fn cluster_v1_fields_an_old_version_lacks_travel_in_the_annotation() {
    let v1 = json!({
        "apiVersion": "tusk.dev/v1",
        "kind": "PostgresCluster",
        "metadata": {"name": "db", "annotations": {"team": "payments"}},
        "spec": {
            "postgres": {"version": 17, "image": "postgres:17.2"},
            "instances": 2,
            "storage": {"data": {"size": "10Gi"}, "wal": {"size": "2Gi"}, "reclaimPolicy": "Delete"},
            "paused": true,
        },
        "status": {"instances": 2, "currentPrimary": "db-0", "postgresVersion": 17},
    });
    let alpha = convert(v1.clone(), "v1alpha1");
    assert_eq!(
        alpha,
        json!({
            "apiVersion": "tusk.dev/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db", "annotations": {
                "team": "payments",
                "tusk.dev/conversion-data": r#"{"spec":{"image":"postgres:17.2","wal":{"size":"2Gi"},"reclaimPolicy":"Delete","paused":true},"status":{"currentPrimary":"db-0","postgresVersion":17}}"#,
            }},
            "spec": {"version": "17", "replicas": 2, "storageSize": "10Gi"},
            "status": {"replicas": 2},
        })
    );
    assert_eq!(convert(alpha, "v1"), v1);

    // v1beta1 has the current primary itself, so less travels in the annotation.
    let beta = convert(v1.clone(), "v1beta1");
    assert_eq!(beta["status"], json!({"instances": 2, "currentPrimary": "db-0"}));
    assert_eq!(
        beta["metadata"]["annotations"]["tusk.dev/conversion-data"],
        r#"{"spec":{"image":"postgres:17.2","wal":{"size":"2Gi"},"reclaimPolicy":"Delete","paused":true},"status":{"postgresVersion":17}}"#
    );
    assert_eq!(convert(beta, "v1"), v1);
}

/// A user edits an object through an old version: the edit wins, and what the old version
/// cannot express is kept.
#[test]
fn an_edit_through_an_old_version_keeps_the_fields_it_cannot_see() {
    let v1 = json!({
        "apiVersion": "tusk.dev/v1",
        "kind": "PostgresCluster",
        "metadata": {"name": "db"},
        "spec": {"postgres": {"version": 16, "image": "postgres:16.4"}, "storage": {"data": {"size": "10Gi"}}, "tls": {"mode": "Operator"}},
    });
    let mut alpha = convert(v1, "v1alpha1");
    alpha["spec"]["version"] = json!("17");
    alpha["spec"]["storageSize"] = json!("20Gi");
    assert_eq!(
        convert(alpha, "v1"),
        json!({
            "apiVersion": "tusk.dev/v1",
            "kind": "PostgresCluster",
            "metadata": {"name": "db"},
            "spec": {"postgres": {"version": 17, "image": "postgres:16.4"}, "storage": {"data": {"size": "20Gi"}}, "tls": {"mode": "Operator"}},
        })
    );

    // Extensions are matched by name: removing one through v1alpha1 drops its details and keeps
    // everything else only v1 has.
    let db = json!({
        "apiVersion": "tusk.dev/v1",
        "kind": "PostgresDatabase",
        "metadata": {"name": "app"},
        "spec": {
            "cluster": {"name": "db"},
            "owner": "app",
            "extensions": [{"name": "pg_trgm", "version": "1.6"}, {"name": "hstore", "schema": "ext"}, {"name": "citext"}],
            "encoding": "UTF8",
            "reclaimPolicy": "Delete",
        },
    });
    let mut alpha = convert(db, "v1alpha1");
    assert_eq!(
        alpha["spec"]["extensions"],
        json!(["pg_trgm", "hstore", "citext"])
    );
    alpha["spec"]["extensions"] = json!(["hstore", "citext", "uuid-ossp"]);
    assert_eq!(
        convert(alpha, "v1")["spec"],
        json!({
            "cluster": {"name": "db"},
            "owner": "app",
            "extensions": [{"name": "hstore", "schema": "ext"}, {"name": "citext"}, {"name": "uuid-ossp"}],
            "encoding": "UTF8",
            "reclaimPolicy": "Delete",
        })
    );
}

#[test]
fn user_database_backup_and_schedule_map_field_by_field() {
    let user = json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresUser",
        "metadata": {"name": "app"},
        "spec": {"cluster": "db", "username": "app", "passwordSecretName": "app-password", "login": true, "connectionLimit": 20},
    });
    assert_eq!(
        convert(user, "v1")["spec"],
        json!({"cluster": {"name": "db"}, "roleName": "app", "passwordSecret": {"name": "app-password"}, "login": true, "connectionLimit": 20})
    );

    let db = json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresDatabase",
        "metadata": {"name": "app"},
        "spec": {"cluster": "db", "name": "app", "owner": "app", "extensions": ["pg_trgm"]},
    });
    assert_eq!(
        convert(db, "v1")["spec"],
        json!({"cluster": {"name": "db"}, "databaseName": "app", "owner": "app", "extensions": [{"name": "pg_trgm"}]})
    );

    let backup = json!({
        "apiVersion": "tusk.dev/v1",
        "kind": "PostgresBackup",
        "metadata": {"name": "nightly-1"},
        "spec": {"cluster": {"name": "db"}, "method": "basebackup", "target": {"volume": {"claimName": "backups"}}},
        "status": {"phase": "Completed", "location": "/backups/db/1", "sizeBytes": 1048576},
    });
    let alpha = convert(backup.clone(), "v1alpha1");
    assert_eq!(alpha["spec"], json!({"cluster": "db", "method": "basebackup"}));
    assert_eq!(
        alpha["status"],
        json!({"phase": "Completed", "location": "/backups/db/1"})
    );
    assert_eq!(
        alpha["metadata"]["annotations"]["tusk.dev/conversion-data"],
        r#"{"spec":{"target":{"volume":{"claimName":"backups"}}},"status":{"sizeBytes":1048576}}"#
    );
    assert_eq!(convert(alpha, "v1"), backup);

    let schedule = json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresBackupSchedule",
        "metadata": {"name": "nightly"},
        "spec": {"cluster": "db", "schedule": "0 3 * * *", "keepLast": 7},
    });
    assert_eq!(
        convert(schedule, "v1")["spec"],
        json!({"cluster": {"name": "db"}, "schedule": "0 3 * * *", "retention": {"keepLast": 7}})
    );
}

#[test]
fn an_annotation_value_tusk_did_not_write_is_kept_as_it_is() {
    let alpha = json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": "db", "annotations": {"tusk.dev/conversion-data": "hand-written"}},
        "spec": {"version": "16", "storageSize": "1Gi"},
    });
    let v1 = convert(alpha.clone(), "v1");
    assert_eq!(v1["metadata"], alpha["metadata"]);
    assert_eq!(convert(v1, "v1alpha1"), alpha);
}
