//! Objects for tests that write through the apiserver: random valid objects of every kind and
//! version (the same on every run), and the part of an object a user wrote.

use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner},
};
use serde_json::Value;

/// Fails unless every field of `sent` is in `stored` with the same value.
pub fn assert_contains(stored: &Value, sent: &Value, context: &str) {
    match (stored, sent) {
        (Value::Object(stored_map), Value::Object(sent_map)) => {
            for (k, v) in sent_map {
                let Some(s) = stored_map.get(k) else {
                    panic!("{context}: {k} was dropped\nsent {sent:#}\nstored {stored:#}");
                };
                assert_contains(s, v, &format!("{context}.{k}"));
            }
        }
        _ => assert_eq!(stored, sent, "{context}"),
    }
}

/// Random valid objects of `kind` at `version`, the same on every run.
pub fn random_objects(kind: &str, version: &str, count: usize) -> Vec<Value> {
    let (kind, version) = (kind.to_owned(), version.to_owned());
    super::arbitrary::on_deep_stack(move || generate(&kind, &version, count))
}

fn generate(kind: &str, version: &str, count: usize) -> Vec<Value> {
    use super::arbitrary::*;
    let strategy = match (kind, version) {
        ("PostgresCluster", "v1") => cluster_v1().boxed(),
        ("PostgresCluster", "v1beta1") => cluster_v1beta1().boxed(),
        ("PostgresCluster", "v1alpha1") => cluster_v1alpha1().boxed(),
        ("PostgresUser", "v1") => user_v1().boxed(),
        ("PostgresUser", "v1alpha1") => user_v1alpha1().boxed(),
        ("PostgresDatabase", "v1") => database_v1().boxed(),
        ("PostgresDatabase", "v1alpha1") => database_v1alpha1().boxed(),
        ("PostgresBackup", "v1") => backup_v1().boxed(),
        ("PostgresBackup", "v1alpha1") => backup_v1alpha1().boxed(),
        ("PostgresBackupSchedule", "v1") => schedule_v1().boxed(),
        ("PostgresBackupSchedule", "v1alpha1") => schedule_v1alpha1().boxed(),
        other => panic!("no generator for {other:?}"),
    };
    let seed = format!("{kind}/{version}/tusk-apiserver-roundtrip-seed-32");
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed.as_bytes()[..32]);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// What a user wrote, as the apiserver gives it back: no server-set metadata.
pub fn user_view(object: &Value) -> Value {
    let mut o = object.clone();
    let meta = o["metadata"].as_object_mut().unwrap();
    meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
    if let Some(status) = o.get("status")
        && status.as_object().is_some_and(|s| s.is_empty())
    {
        o.as_object_mut().unwrap().remove("status");
    }
    o
}
