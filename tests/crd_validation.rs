//! The CRDs as Tusk installs them: every version served, `v1` stored, older versions
//! deprecated, every field described, and the CEL rules accept valid objects and refuse invalid
//! ones with a message that names the field. CEL runs here in kube's client-side evaluator, over
//! the CEL cases of the refusal table in `support::refusals`; the apiserver tests run the same
//! table, schema refusals included, in a real kube-apiserver.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use support::{
    refusals::{Attempt, refusals},
    samples::merge,
};
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

/// Every refusal of the shared table that a CEL rule makes: the client-side evaluator refuses the
/// object with exactly the rule's message at the field's path. (The apiserver tests run the whole
/// table, schema refusals included.)
#[test]
fn cel_rules_refuse_with_a_message_naming_the_field() {
    let cases = refusals();
    let mut judged = 0;
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let Some(expected) = case.cel_says() else {
            continue;
        };
        let Attempt {
            kind,
            version,
            old,
            spec,
        } = &case.attempt;
        let old = old.as_ref().map(|old| object(kind, version, old.clone()));
        let errors = cel_errors(kind, version, &object(kind, version, spec.clone()), old.as_ref());
        if !errors.contains(&expected) {
            wrong.push(format!(
                "case {i} ({kind} {version}): expected {expected:?}, got {errors:?}"
            ));
        }
        judged += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} of {judged} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Every CEL case these tests had before the table was shared, and the apiserver's.
    assert!(judged >= 35, "{judged} CEL cases");
}
