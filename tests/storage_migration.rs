//! Storage-version migration on a real kube-apiserver and etcd: objects written while `v1alpha1`
//! was the storage version are rewritten at `v1` by `tusk-operator migrate-storage`, after which
//! `status.storedVersions` is `[v1]` and a later release may stop serving `v1alpha1`. Before the
//! migration the apiserver refuses that same drop.
//!
//! This binary has a control plane of its own: it changes the CRDs' storage versions, which the
//! other apiserver tests rely on.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{PostParams, ResourceExt},
};
use serde_json::{Value, json};
use support::apiserver::{KINDS, api, crds, install};
use tusk_testenv::{ControlPlane, Wait, eventually};

/// The apiVersion of every stored object of the group, by etcd key, straight from etcd.
async fn stored_versions(plane: &ControlPlane) -> BTreeMap<String, String> {
    plane
        .etcd_prefix("/registry/tusk.dev/")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, value)| {
            let object: Value = serde_json::from_slice(&value)
                .unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {}", String::from_utf8_lossy(&value)));
            (key, object["apiVersion"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn samples(kind: &str) -> Vec<(&'static str, Value)> {
    match kind {
        "PostgresCluster" => vec![
            (
                "v1alpha1",
                json!({"version": "16", "replicas": 2, "storageSize": "1Gi", "parameters": {"work_mem": "8MB"}}),
            ),
            (
                "v1beta1",
                json!({"postgresVersion": 17, "instances": 3, "storage": {"size": "5Gi"}}),
            ),
            (
                "v1",
                json!({"postgres": {"version": 18, "image": "postgres:18"}, "storage": {"data": {"size": "2Gi"}}, "paused": true, "tls": {"mode": "Operator"}}),
            ),
        ],
        "PostgresUser" => vec![
            (
                "v1alpha1",
                json!({"cluster": "db", "username": "app", "connectionLimit": 5}),
            ),
            (
                "v1",
                json!({"cluster": {"name": "db"}, "roleName": "reporting", "memberOf": ["readers"], "createdb": true}),
            ),
        ],
        "PostgresDatabase" => vec![
            (
                "v1alpha1",
                json!({"cluster": "db", "owner": "app", "extensions": ["pg_trgm"]}),
            ),
            (
                "v1",
                json!({"cluster": {"name": "db"}, "owner": "app", "databaseName": "shop", "locale": "C.UTF-8"}),
            ),
        ],
        "PostgresBackup" => vec![
            ("v1alpha1", json!({"cluster": "db", "method": "dump"})),
            (
                "v1",
                json!({"cluster": {"name": "db"}, "target": {"volume": {"claimName": "backups"}}}),
            ),
        ],
        "PostgresBackupSchedule" => vec![
            (
                "v1alpha1",
                json!({"cluster": "db", "schedule": "@daily", "keepLast": 7}),
            ),
            (
                "v1",
                json!({"cluster": {"name": "db"}, "schedule": "0 3 * * *", "timeZone": "Europe/Berlin", "retention": {"maxAge": "30d"}}),
            ),
        ],
        other => panic!("{other}"),
    }
}

fn stored(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stored_at_v1alpha1_are_rewritten_at_v1_and_stored_versions_trimmed() {
    let plane = tusk_testenv::shared();
    let client = plane.client().await.unwrap();
    let crd_api = Api::<CustomResourceDefinition>::all(client.clone());

    // A release whose storage version was v1alpha1.
    let mut old_release = crds();
    for crd in &mut old_release {
        for version in &mut crd.spec.versions {
            version.storage = version.name == "v1alpha1";
        }
    }
    install(&client, &old_release).await;
    let ns = plane.namespace("migration").await.unwrap();
    let mut names = Vec::new();
    for (kind, _, _) in KINDS {
        for (i, (version, spec)) in samples(kind).into_iter().enumerate() {
            let name = format!("{}-{i}", kind.to_lowercase());
            let object = serde_json::from_value(json!({
                "apiVersion": format!("tusk.dev/{version}"), "kind": kind,
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap();
            api(&client, &ns, kind, version)
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{kind} {version}: {e}"));
            names.push((*kind, name));
        }
    }
    let before = stored_versions(plane).await;
    assert_eq!(before.len(), names.len());
    assert!(
        before.values().all(|v| v == "tusk.dev/v1alpha1"),
        "stored at v1alpha1 first: {before:#?}"
    );
    // What every object reads as at v1 before anything moves.
    let mut at_v1 = BTreeMap::new();
    for (kind, name) in &names {
        let o = api(&client, &ns, kind, "v1").get(name).await.unwrap();
        at_v1.insert(
            name.clone(),
            (
                o.data["spec"].clone(),
                o.annotations().clone(),
                o.labels().clone(),
            ),
        );
    }

    // The upgrade: v1 becomes the storage version.
    install(&client, &crds()).await;
    for (_, plural, _) in KINDS {
        let crd = crd_api.get(&format!("{plural}.tusk.dev")).await.unwrap();
        assert_eq!(stored(&crd), ["v1alpha1", "v1"], "{plural}");
    }
    // Wait until the apiserver writes at v1: a new object lands in etcd as v1.
    let probe_api = api(&client, &ns, "PostgresBackup", "v1alpha1");
    let mut attempt = 0;
    eventually(
        "the apiserver to switch its storage version to v1",
        Wait::up_to(Duration::from_secs(30)).every(Duration::from_millis(200)),
        async || {
            let name = format!("probe-{attempt}");
            attempt += 1;
            let probe = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1alpha1", "kind": "PostgresBackup",
                "metadata": {"name": name}, "spec": {"cluster": "db"},
            }))
            .unwrap();
            probe_api.create(&PostParams::default(), &probe).await.unwrap();
            let key = format!("/registry/tusk.dev/postgresbackups/{ns}/{name}");
            match stored_versions(plane).await.get(&key) {
                Some(stored) if stored == "tusk.dev/v1" => Ok(()),
                stored => Err(format!("{name} stored as {stored:?}")),
            }
        },
    )
    .await;
    let old_ones = stored_versions(plane)
        .await
        .into_iter()
        .filter(|(_, v)| v == "tusk.dev/v1alpha1")
        .count();
    assert_eq!(old_ones, names.len(), "nothing is rewritten by the upgrade alone");

    // Dropping v1alpha1 now would orphan those objects: the apiserver refuses it.
    let mut next_release = crd_api.get("postgresusers.tusk.dev").await.unwrap();
    next_release.spec.versions.retain(|v| v.name != "v1alpha1");
    next_release.spec.conversion = None;
    let refused = crd_api
        .replace("postgresusers.tusk.dev", &PostParams::default(), &next_release)
        .await
        .expect_err("dropping a stored version must be refused");
    assert!(
        refused
            .to_string()
            .contains("status.storedVersions[0]: Invalid value: \"v1alpha1\": missing from spec.versions"),
        "{refused}"
    );

    // The migration, through the real binary with the admin kubeconfig.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tusk-operator"))
        .arg("migrate-storage")
        .env("KUBECONFIG", plane.kubeconfig())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert!(
        stdout.contains("postgresclusters.tusk.dev: 3 objects rewritten at v1"),
        "{stdout}"
    );

    let after = stored_versions(plane).await;
    assert!(
        after.values().all(|v| v == "tusk.dev/v1"),
        "every object stored at v1 after the migration: {after:#?}"
    );
    for (_, plural, _) in KINDS {
        let crd = crd_api.get(&format!("{plural}.tusk.dev")).await.unwrap();
        assert_eq!(stored(&crd), ["v1"], "{plural}");
    }
    // Nothing was lost or changed on the way.
    for (kind, name) in &names {
        let o = api(&client, &ns, kind, "v1").get(name).await.unwrap();
        assert_eq!(
            (
                o.data["spec"].clone(),
                o.annotations().clone(),
                o.labels().clone()
            ),
            at_v1[name],
            "{name}"
        );
    }
    // And now the next release may stop serving v1alpha1.
    let mut next_release = crd_api.get("postgresusers.tusk.dev").await.unwrap();
    next_release.spec.versions.retain(|v| v.name != "v1alpha1");
    next_release.spec.conversion = None;
    crd_api
        .replace("postgresusers.tusk.dev", &PostParams::default(), &next_release)
        .await
        .expect("dropping v1alpha1 after the migration");
    let user = api(&client, &ns, "PostgresUser", "v1")
        .get("postgresuser-0")
        .await
        .unwrap();
    assert_eq!(user.data["spec"]["roleName"], "app");
}
