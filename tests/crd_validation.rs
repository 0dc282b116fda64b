//! The CRDs as Tusk installs them: every version served, `v1` stored, older versions
//! deprecated, every field described, and the CEL rules accept valid objects and refuse invalid
//! ones with a message that names the field. CEL runs here in kube's client-side evaluator; the
//! control-plane tests run the same rules in a real kube-apiserver.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use support::samples::merge;
use tusk::crd::{CRD_DIR, ConversionWebhook, committed_files, crds};

fn crd(kind: &str) -> CustomResourceDefinition {
    crds(&ConversionWebhook::default_service())
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap()
}

fn schema(kind: &str, version: &str) -> Value {
    let crd = crd(kind);
    let v = crd.spec.versions.iter().find(|v| v.name == version).unwrap();
    serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// The CEL failures for `object` (created, or updated from `old`), as `path: message`.
fn cel_errors(kind: &str, version: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(kind, version), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn object(kind: &str, version: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("tusk.dev/{version}"), "kind": kind, "metadata": {"name": "x", "namespace": "apps"}, "spec": spec})
}

fn assert_refused(errors: Vec<String>, expected: &str) {
    assert!(
        errors.iter().any(|e| e == expected),
        "expected {expected:?}, got {errors:?}"
    );
}

fn cluster_v1(spec: Value) -> Value {
    let mut base = json!({"postgres": {"version": 17}, "instances": 3, "storage": {"data": {"size": "10Gi", "storageClassName": "fast"}}});
    merge(&mut base, spec);
    object("PostgresCluster", "v1", base)
}

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_DIR);
    for (name, yaml) in committed_files() {
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            committed == yaml,
            "{CRD_DIR}/{name} is out of date: run `cargo xtask crds`"
        );
    }
}

#[test]
fn every_kind_serves_its_versions_stores_v1_and_converts_through_the_webhook() {
    let expected = [
        (
            "PostgresCluster",
            vec!["v1", "v1beta1", "v1alpha1"],
            vec!["pgc", "pgcluster"],
        ),
        ("PostgresUser", vec!["v1", "v1alpha1"], vec!["pguser"]),
        ("PostgresDatabase", vec!["v1", "v1alpha1"], vec!["pgdb"]),
        ("PostgresBackup", vec!["v1", "v1alpha1"], vec!["pgbackup"]),
        (
            "PostgresBackupSchedule",
            vec!["v1", "v1alpha1"],
            vec!["pgbackupschedule", "pgbs"],
        ),
    ];
    for (kind, versions, short_names) in expected {
        let crd = crd(kind);
        assert_eq!(crd.spec.group, "tusk.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.categories, Some(vec!["tusk".to_owned()]), "{kind}");
        assert_eq!(
            crd.spec.names.short_names,
            Some(short_names.iter().map(|s| s.to_string()).collect()),
            "{kind}"
        );
        let names: Vec<_> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, versions, "{kind}");
        for v in &crd.spec.versions {
            assert!(v.served, "{kind} {} is served", v.name);
            assert_eq!(v.storage, v.name == "v1", "{kind} {} storage", v.name);
            assert_eq!(
                v.deprecated,
                Some(v.name != "v1").filter(|d| *d),
                "{kind} {} deprecated",
                v.name
            );
            if v.name != "v1" {
                let warning = v.deprecation_warning.as_deref().unwrap();
                assert!(warning.contains("use tusk.dev/v1"), "{warning}");
            }
            assert!(
                v.subresources.as_ref().unwrap().status.is_some(),
                "{kind} {} has a status subresource",
                v.name
            );
            let columns = v.additional_printer_columns.as_ref().unwrap();
            assert!(
                columns.iter().any(|c| c.name == "Age"),
                "{kind} {} columns",
                v.name
            );
            let scale = v.subresources.as_ref().unwrap().scale.as_ref();
            assert_eq!(
                scale.is_some(),
                kind == "PostgresCluster",
                "{kind} {} scale",
                v.name
            );
        }
        let conversion = crd.spec.conversion.unwrap();
        assert_eq!(conversion.strategy, "Webhook");
        let webhook = conversion.webhook.unwrap();
        assert_eq!(webhook.conversion_review_versions, vec!["v1"]);
        let service = webhook.client_config.unwrap().service.unwrap();
        assert_eq!(
            (service.name.as_str(), service.path.as_deref()),
            ("tusk-operator-service", Some("/convert"))
        );
    }
    let cluster = crd("PostgresCluster");
    let scale = |version: &str| {
        let v = cluster.spec.versions.iter().find(|v| v.name == version).unwrap();
        v.subresources
            .as_ref()
            .unwrap()
            .scale
            .as_ref()
            .unwrap()
            .spec_replicas_path
            .clone()
    };
    assert_eq!(scale("v1"), ".spec.instances");
    assert_eq!(scale("v1alpha1"), ".spec.replicas");
}

/// Every property of every schema carries a description, so `kubectl explain` reads well.
#[test]
fn every_field_is_described() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                let path = format!("{path}.{name}");
                let described = property
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                // apiVersion, kind and metadata are Kubernetes' own.
                if !described && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    missing.push(path.clone());
                }
                walk(&path, property, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}{{}}"), values, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in crds(&ConversionWebhook::default_service()) {
        for v in &crd.spec.versions {
            let schema =
                serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
                    .unwrap();
            walk(
                &format!("{}/{}", crd.spec.names.kind, v.name),
                &schema,
                &mut missing,
            );
        }
    }
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

#[test]
fn valid_samples_pass_every_rule() {
    let (_, _, full_spec) = support::samples::valid_specs()
        .into_iter()
        .find(|(kind, version, _)| *kind == "PostgresCluster" && *version == "v1")
        .unwrap();
    let full = object("PostgresCluster", "v1", full_spec);
    assert_eq!(
        cel_errors("PostgresCluster", "v1", &full, None),
        Vec::<String>::new()
    );
    let mut upgraded = full.clone();
    merge(
        &mut upgraded,
        json!({"spec": {"postgres": {"version": 18}, "storage": {"data": {"size": "20Gi"}}, "instances": 5}}),
    );
    assert_eq!(
        cel_errors("PostgresCluster", "v1", &upgraded, Some(&full)),
        Vec::<String>::new()
    );
    let samples = support::samples::valid_specs();
    for (kind, version, spec) in samples {
        let o = object(kind, version, spec);
        assert_eq!(
            cel_errors(kind, version, &o, None),
            Vec::<String>::new(),
            "{kind} {version}"
        );
        assert_eq!(
            cel_errors(kind, version, &o, Some(&o)),
            Vec::<String>::new(),
            "{kind} {version} unchanged update"
        );
    }
}

#[test]
fn cluster_rules_refuse_with_a_message_naming_the_field() {
    let base = cluster_v1(json!({}));
    let refuse = |patch: Value, old: Option<&Value>, expected: &str| {
        let mut o = base.clone();
        merge(&mut o, json!({"spec": patch}));
        assert_refused(cel_errors("PostgresCluster", "v1", &o, old), expected);
    };
    refuse(
        json!({"postgres": {"version": 16}}),
        Some(&base),
        "spec.postgres: version cannot go down from 17 to 16: a major-version downgrade is not possible; allowed are 17 or higher",
    );
    refuse(
        json!({"postgres": {"parameters": {"port": "5433", "work_mem": "4MB"}}}),
        None,
        "spec.postgres: parameters may not set port: Tusk manages it; all other PostgreSQL parameters are allowed",
    );
    refuse(
        json!({"storage": {"data": {"storageClassName": "slow"}}}),
        Some(&base),
        "spec.storage.data: storageClassName is immutable: a volume cannot move to another storage class; create a new cluster instead",
    );
    refuse(
        json!({"storage": {"data": {"size": "5Gi"}}}),
        Some(&base),
        "spec.storage.data: size may grow but never shrink: it is 10Gi, so allowed values are 10Gi or more",
    );
    refuse(
        json!({"storage": {"wal": {"size": "1Gi"}}}),
        Some(&base),
        "spec.storage: wal cannot be added or removed after the cluster is created; it may only be resized",
    );
    refuse(
        json!({"tls": {"mode": "Provided"}}),
        None,
        "spec.tls: tls.secretName is required when tls.mode is Provided, and not allowed with Disabled or Operator",
    );
    refuse(
        json!({"tls": {"mode": "Operator", "secretName": "x"}}),
        None,
        "spec.tls: tls.secretName is required when tls.mode is Provided, and not allowed with Disabled or Operator",
    );
    refuse(
        json!({"bootstrap": {"initdb": {}, "fromBackup": {"backupName": "b"}}}),
        None,
        "spec.bootstrap: bootstrap: set exactly one of initdb or fromBackup",
    );
    refuse(
        json!({"bootstrap": {"initdb": {"database": "app"}}}),
        Some(&base),
        "spec: bootstrap is immutable: it only applies when the cluster is first created",
    );
    refuse(
        json!({"instances": 1, "updateStrategy": {"primaryUpdateMethod": "Switchover"}}),
        None,
        "spec: updateStrategy.primaryUpdateMethod Switchover needs instances of 2 or more; with a single instance use Restart",
    );
    refuse(
        json!({"backup": {"target": {"volume": {"claimName": "b"}, "s3": {"bucket": "bkt", "credentialsSecret": "s"}}}}),
        None,
        "spec.backup.target: backup target: set exactly one of volume or s3",
    );

    let alpha = object(
        "PostgresCluster",
        "v1alpha1",
        json!({"version": "17", "storageSize": "10Gi", "storageClassName": "fast"}),
    );
    let mut down = alpha.clone();
    down["spec"]["version"] = json!("15");
    assert_refused(
        cel_errors("PostgresCluster", "v1alpha1", &down, Some(&alpha)),
        "spec: version cannot go down from 17 to 15: a major-version downgrade is not possible; allowed are 17 or higher",
    );
    let mut shrunk = alpha.clone();
    shrunk["spec"]["storageSize"] = json!("1Gi");
    assert_refused(
        cel_errors("PostgresCluster", "v1alpha1", &shrunk, Some(&alpha)),
        "spec: storageSize may grow but never shrink: it is 10Gi, so allowed values are 10Gi or more",
    );
    let beta = object(
        "PostgresCluster",
        "v1beta1",
        json!({"postgresVersion": 18, "storage": {"size": "1Gi"}}),
    );
    let mut down = beta.clone();
    down["spec"]["postgresVersion"] = json!(17);
    assert_refused(
        cel_errors("PostgresCluster", "v1beta1", &down, Some(&beta)),
        "spec: postgresVersion cannot go down from 18 to 17: a major-version downgrade is not possible; allowed are 18 or higher",
    );
}

#[test]
fn user_database_backup_and_schedule_rules_refuse_with_a_message_naming_the_field() {
    let user = object(
        "PostgresUser",
        "v1",
        json!({"cluster": {"name": "db"}, "roleName": "app"}),
    );
    let mut moved = user.clone();
    moved["spec"]["cluster"]["name"] = json!("other");
    assert_refused(
        cel_errors("PostgresUser", "v1", &moved, Some(&user)),
        "spec: cluster is immutable: a PostgresUser cannot move to another cluster; create a new one",
    );
    let mut renamed = user.clone();
    renamed["spec"]["roleName"] = json!("app2");
    assert_refused(
        cel_errors("PostgresUser", "v1", &renamed, Some(&user)),
        "spec: roleName is immutable: a role cannot be renamed; create a new PostgresUser",
    );
    let mut system = user.clone();
    system["spec"]["roleName"] = json!("pg_monitor");
    assert_refused(
        cel_errors("PostgresUser", "v1", &system, None),
        "spec.roleName: roleName may not start with pg_: PostgreSQL reserves that prefix for system roles and objects",
    );
    system["spec"]["roleName"] = json!("postgres");
    assert_refused(
        cel_errors("PostgresUser", "v1", &system, None),
        "spec.roleName: roleName may not be one of postgres, public, none, current_user, session_user, current_role, tusk_replication: Tusk or PostgreSQL use these",
    );
    let mut own_member = user.clone();
    own_member["spec"]["memberOf"] = json!(["app"]);
    assert_refused(
        cel_errors("PostgresUser", "v1", &own_member, None),
        "spec: memberOf may not include the role itself (roleName); allowed are other roles",
    );

    let db = object(
        "PostgresDatabase",
        "v1",
        json!({"cluster": {"name": "db"}, "owner": "app", "encoding": "UTF8"}),
    );
    let mut template = db.clone();
    template["spec"]["databaseName"] = json!("template1");
    assert_refused(
        cel_errors("PostgresDatabase", "v1", &template, None),
        "spec.databaseName: databaseName may not be one of postgres, template0, template1: Tusk or PostgreSQL use these",
    );
    let mut reencoded = db.clone();
    reencoded["spec"]["encoding"] = json!("LATIN1");
    assert_refused(
        cel_errors("PostgresDatabase", "v1", &reencoded, Some(&db)),
        "spec: encoding and locale are immutable: PostgreSQL fixes them when the database is created",
    );

    let backup = object("PostgresBackup", "v1", json!({"cluster": {"name": "db"}}));
    let mut changed = backup.clone();
    changed["spec"]["method"] = json!("dump");
    assert_refused(
        cel_errors("PostgresBackup", "v1", &changed, Some(&backup)),
        "spec: spec is immutable: a PostgresBackup records one run; create a new PostgresBackup to back up again",
    );

    let schedule = object(
        "PostgresBackupSchedule",
        "v1",
        json!({"cluster": {"name": "db"}, "schedule": "@daily", "retention": {}}),
    );
    assert_refused(
        cel_errors("PostgresBackupSchedule", "v1", &schedule, None),
        "spec.retention: retention: set keepLast, maxAge or both; omit retention to keep every backup",
    );
}
