//! Tusk's API on a real kube-apiserver (from `tusk-testenv`): the CRDs install and become
//! Established, the apiserver itself refuses invalid objects with Tusk's messages (OpenAPI schema
//! and CEL: every case of `support::refusals`, whose CEL cases the client-side tests run too),
//! and objects convert through Tusk's webhook on 127.0.0.1 as the apiserver calls it, losing
//! nothing across every version.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    apiserver::{KINDS, api, plane_with_crds},
    objects::{assert_contains, random_objects, user_view},
    refusals::{Attempt, refusals},
    samples::{cluster, merge},
};

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn object(kind: &str, version: &str, name: &str, spec: Value) -> DynamicObject {
    dynamic(json!({
        "apiVersion": format!("tusk.dev/{version}"),
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crd_installs_and_is_established() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let api = Api::<CustomResourceDefinition>::all(client);
    for (kind, plural, versions) in KINDS {
        let crd = api.get(&format!("{plural}.tusk.dev")).await.unwrap();
        let status = crd.status.unwrap();
        for condition in ["Established", "NamesAccepted"] {
            assert!(
                status
                    .conditions
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|c| c.type_ == condition && c.status == "True"),
                "{kind}: {condition} is not True: {:?}",
                status.conditions
            );
        }
        let mut served: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        served.sort();
        let mut expected = versions.to_vec();
        expected.sort();
        assert_eq!(served, expected, "{kind} serves");
        assert_eq!(status.stored_versions, Some(vec!["v1".to_owned()]), "{kind}");
        let url = crd.spec.conversion.as_ref().and_then(|c| c.webhook.as_ref());
        let url = url
            .and_then(|w| w.client_config.as_ref())
            .and_then(|c| c.url.as_deref());
        assert!(
            url.is_some_and(|u| u.starts_with("https://127.0.0.1:")),
            "{kind} converts through the test webhook: {url:?}"
        );
    }
}

/// Creates `object` asking for strict field validation, as `kubectl create` does: unknown fields
/// are refused instead of dropped with a warning.
async fn create_strict(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    version: &str,
    object: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    let (_, plural, _) = KINDS.iter().find(|(k, _, _)| *k == kind).unwrap();
    let request = http::Request::post(format!(
        "/apis/tusk.dev/{version}/namespaces/{ns}/{plural}?fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(object).unwrap())
    .unwrap();
    client.request(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_refuses_invalid_objects_with_tusks_messages() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("refusals").await.unwrap();
    let cases = refusals();
    assert!(cases.len() >= 68, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let Attempt {
            kind,
            version,
            old,
            spec,
        } = &case.attempt;
        let expected = case.apiserver_says();
        let api = api(&client, &ns, kind, version);
        let name = format!("case-{i}");
        if let Some(old) = old {
            api.create(&PostParams::default(), &object(kind, version, &name, old.clone()))
                .await
                .unwrap_or_else(|e| panic!("case {i}: the valid old object was refused: {e}"));
        }
        let mut new = object(kind, version, &name, spec.clone());
        let result = match old {
            // Unknown fields are refused only when the client asks for strict field validation,
            // as kubectl does; a server-side apply carries that request.
            None if case.strict() => create_strict(&client, &ns, kind, version, &new).await,
            None => api.create(&PostParams::default(), &new).await,
            Some(_) => {
                new.metadata.resource_version = api.get(&name).await.unwrap().metadata.resource_version;
                api.replace(&name, &PostParams::default(), &new).await
            }
        };
        match result {
            Err(kube::Error::Api(status)) if status.code == 422 || (case.strict() && status.code == 400) => {
                if !status.message.contains(&expected) {
                    wrong.push(format!(
                        "case {i} ({kind} {version}): expected {expected:?}\n  got {:?}",
                        status.message
                    ));
                }
            }
            other => wrong.push(format!(
                "case {i} ({kind} {version}): expected a refusal with {expected:?}, got {other:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_accepts_valid_samples_of_every_kind_and_version() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("valid").await.unwrap();
    let samples = support::samples::valid_specs();
    for (i, (kind, version, spec)) in samples.into_iter().enumerate() {
        let api = api(&client, &ns, kind, version);
        let created = api
            .create(
                &PostParams::default(),
                &object(kind, version, &format!("sample-{i}"), spec.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind} {version} refused: {e}"));
        assert_contains(&created.data["spec"], &spec, &format!("{kind} {version}"));
    }
}

/// Fails unless every field of `sent` is in `stored` with the same value (the apiserver may add
/// defaults, but must drop and change nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_objects_read_back_identically_at_every_version_through_the_apiserver() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("roundtrip").await.unwrap();
    let per_version = 20;
    let mut checked = 0;
    for (kind, _, versions) in KINDS {
        for version in *versions {
            for (i, mut generated) in random_objects(kind, version, per_version).into_iter().enumerate() {
                let name = format!("{}-{version}-{i}", kind.to_lowercase());
                generated["metadata"]["name"] = json!(name);
                generated["metadata"]["namespace"] = json!(ns);
                let status = generated.as_object_mut().unwrap().remove("status");
                let api_at = |v: &str| api(&client, &ns, kind, v);
                let sent = user_view(&generated);
                let created = api_at(version)
                    .create(&PostParams::default(), &dynamic(sent.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{name} refused: {e}\n{generated:#}"));
                let created = serde_json::to_value(&created).unwrap();
                assert_contains(&created, &sent, &name);
                let written = match status {
                    Some(status) => {
                        let patched = api_at(version)
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": status})),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("{name}: status refused: {e}\n{status:#}"));
                        let patched = serde_json::to_value(&patched).unwrap();
                        assert_contains(&patched["status"], &status, &format!("{name} status"));
                        patched
                    }
                    None => created,
                };
                let written = user_view(&written);
                // Read at every version: what the apiserver gives is what Tusk's own conversion
                // of the written object gives, and reading back at the version written gives
                // exactly what was written.
                for other in *versions {
                    let read = api_at(other).get(&name).await.unwrap();
                    let read = user_view(&serde_json::to_value(&read).unwrap());
                    let expected =
                        tusk::api::convert_object(written.clone(), &format!("tusk.dev/{other}"), 0).unwrap();
                    assert_eq!(read, user_view(&expected), "{name} read at {other}");
                }
                let back =
                    user_view(&serde_json::to_value(api_at(version).get(&name).await.unwrap()).unwrap());
                assert_eq!(back, written, "{name} read back");
                // Annotations are never defaulted: they read back exactly as sent, so no
                // conversion annotation appears that the user did not write.
                assert_eq!(
                    back["metadata"].get("annotations"),
                    sent["metadata"].get("annotations"),
                    "{name}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, per_version * 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_at_one_version_reads_back_at_another_without_loss() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("update").await.unwrap();
    let v1 = api(&client, &ns, "PostgresCluster", "v1");
    let alpha = api(&client, &ns, "PostgresCluster", "v1alpha1");
    let beta = api(&client, &ns, "PostgresCluster", "v1beta1");
    let spec = cluster(json!({
        "postgres": {"image": "postgres:17", "parameters": {"work_mem": "8MB"}},
        "storage": {"wal": {"size": "2Gi"}, "reclaimPolicy": "Delete"},
        "tls": {"mode": "Operator"},
        "monitoring": {"podMonitor": true},
        "paused": true,
    }));
    v1.create(
        &PostParams::default(),
        &object("PostgresCluster", "v1", "db", spec.clone()),
    )
    .await
    .unwrap();

    // Scale through v1alpha1, which knows neither TLS, monitoring, WAL volumes nor pausing.
    let mut old = alpha.get("db").await.unwrap();
    assert_eq!(old.data["spec"]["replicas"], 3);
    assert!(old.data["spec"].get("tls").is_none());
    old.data["spec"]["replicas"] = json!(5);
    old.data["spec"]["parameters"]["work_mem"] = json!("16MB");
    alpha.replace("db", &PostParams::default(), &old).await.unwrap();

    let now = v1.get("db").await.unwrap();
    let mut expected = spec.clone();
    merge(
        &mut expected,
        json!({"instances": 5, "postgres": {"parameters": {"work_mem": "16MB"}}}),
    );
    assert_eq!(
        now.data["spec"], expected,
        "the v1alpha1 edit wins; the fields it cannot see survive"
    );

    // Grow the data volume through v1beta1 with a server-side apply patch.
    beta.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"storage": {"size": "20Gi"}}})),
    )
    .await
    .unwrap();
    let now = v1.get("db").await.unwrap();
    merge(&mut expected, json!({"storage": {"data": {"size": "20Gi"}}}));
    assert_eq!(now.data["spec"], expected);
    let annotations = now.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(tusk::api::conversion::CONVERSION_DATA_ANNOTATION),
        "the stored v1 object carries no conversion stash: {annotations:?}"
    );

    // The status subresource through v1alpha1 reads back at v1.
    alpha
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 5, "readyReplicas": 4, "observedGeneration": 3}})),
        )
        .await
        .unwrap();
    let now = v1.get("db").await.unwrap();
    assert_eq!(
        now.data["status"],
        json!({"instances": 5, "readyInstances": 4, "observedGeneration": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_the_printer_columns_of_each_version() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("columns").await.unwrap();
    api(&client, &ns, "PostgresCluster", "v1")
        .create(
            &PostParams::default(),
            &object(
                "PostgresCluster",
                "v1",
                "db",
                cluster(json!({"instances": 3, "postgres": {"version": 16}})),
            ),
        )
        .await
        .unwrap();
    api(&client, &ns, "PostgresCluster", "v1")
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"instances": 3, "readyInstances": 2, "currentPrimary": "db-1",
                "conditions": [{"type": "Ready", "status": "False", "reason": "Scaling", "message": "2 of 3 ready",
                                "lastTransitionTime": "2026-11-22T00:00:00Z"}]}})),
        )
        .await
        .unwrap();
    for version in ["v1", "v1beta1", "v1alpha1"] {
        let out = plane
            .kubectl()
            .args([
                "get",
                &format!("postgresclusters.{version}.tusk.dev"),
                "-n",
                &ns,
                "-o",
                "wide",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let table = columns(&text);
        let row = &table[0];
        assert_eq!(row["NAME"], "db", "{version}:\n{text}");
        let (instances, ready, postgres) = match version {
            "v1alpha1" => ("REPLICAS", "READY", "VERSION"),
            _ => ("INSTANCES", "READY", "VERSION"),
        };
        assert_eq!(
            row.get(instances).map(String::as_str),
            Some("3"),
            "{version} {instances}:\n{text}"
        );
        assert_eq!(
            row.get(ready).map(String::as_str),
            Some("2"),
            "{version} {ready}:\n{text}"
        );
        assert_eq!(
            row.get(postgres).map(String::as_str),
            Some("16"),
            "{version} {postgres}:\n{text}"
        );
        if version != "v1alpha1" {
            assert_eq!(
                row.get("PRIMARY").map(String::as_str),
                Some("db-1"),
                "{version}:\n{text}"
            );
        }
        if version == "v1" {
            assert_eq!(
                row.get("STATUS").map(String::as_str),
                Some("Scaling"),
                "{version}:\n{text}"
            );
        }
    }
}

/// Parses `kubectl get` output into rows of column name to value (columns are split where the
/// header has runs of spaces).
fn columns(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, ch) in header.char_indices() {
        if ch != ' ' && prev_space {
            starts.push(i);
        }
        prev_space = ch == ' ';
    }
    let cell = |line: &str, k: usize| {
        let start = starts[k].min(line.len());
        let end = starts.get(k + 1).copied().unwrap_or(line.len()).min(line.len());
        line[start..end].trim().to_owned()
    };
    lines
        .map(|line| {
            (0..starts.len())
                .map(|k| (cell(header, k), cell(line, k)))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webhook_serves_fifty_concurrent_conversions() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("concurrent").await.unwrap();
    let v1 = api(&client, &ns, "PostgresCluster", "v1");
    for i in 0..50 {
        v1.create(
            &PostParams::default(),
            &object(
                "PostgresCluster",
                "v1",
                &format!("db-{i}"),
                cluster(json!({"instances": 1 + i % 10})),
            ),
        )
        .await
        .unwrap();
    }
    // Fifty reads at an old version at once: the apiserver sends fifty ConversionReviews
    // concurrently (each GET converts on its own).
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..50 {
        let alpha = api(&client, &ns, "PostgresCluster", "v1alpha1");
        reads.spawn(async move { (i, alpha.get(&format!("db-{i}")).await) });
    }
    let mut errors = Vec::new();
    let mut ok = 0;
    while let Some(joined) = reads.join_next().await {
        let (i, result) = joined.unwrap();
        match result {
            Ok(o) if o.data["spec"]["replicas"] == json!(1 + i % 10) => ok += 1,
            Ok(o) => errors.push(format!("db-{i}: wrong replicas {}", o.data["spec"]["replicas"])),
            Err(e) => errors.push(format!("db-{i}: {e}")),
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(ok, 50);
    // And one list of all fifty at each old version.
    for version in ["v1alpha1", "v1beta1"] {
        let list = api(&client, &ns, "PostgresCluster", version)
            .list(&Default::default())
            .await
            .unwrap();
        assert_eq!(list.items.len(), 50, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_samples_are_accepted_and_read_at_every_version() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("samples").await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let object: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let (_, _, versions) = KINDS.iter().find(|(k, _, _)| *k == kind).unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        api(&client, &ns, &kind, "v1")
            .create(&PostParams::default(), &dynamic(object.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for version in *versions {
            api(&client, &ns, &kind, version).get(&name).await.unwrap();
        }
        let back = api(&client, &ns, &kind, "v1").get(&name).await.unwrap();
        assert_contains(&back.data["spec"], &object["spec"], &path.display().to_string());
        seen.push(kind);
    }
    seen.sort();
    let mut kinds: Vec<String> = KINDS.iter().map(|(k, _, _)| (*k).to_owned()).collect();
    kinds.sort();
    assert_eq!(seen, kinds, "one sample per kind");
}
