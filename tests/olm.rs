//! Tusk installed and upgraded by real OLM: the `olm` and `catalog` operators from
//! operator-lifecycle-manager run as local processes against the local control plane, `opm serve`
//! serves the generator's inlined test catalog, and a CatalogSource reaches it by address. OLM
//! creates the operator's Deployment (kwok runs its pods), its Service, certificate and RBAC;
//! the real `tusk-operator` then runs as a local process with that certificate and the
//! ServiceAccount OLM made, and the apiserver reaches its conversion webhook through the Service,
//! tunnelled by an egress-selector CONNECT proxy to loopback.
//!
//! The operator binary is this build (1.1.0). The controllers of 0.1.0 and 0.2.0 watched the
//! versions those releases stored; this build's controllers watch `v1`, which those releases do
//! not serve. So at 0.2.0 the local process serves only the conversion webhook, and the
//! controllers run from 1.0.0 on.
//!
//! The OperatorHub scenario also runs OLM's packageserver and reads the `PackageManifest` as the
//! OpenShift console does. One scenario runs real PostgreSQL under OLM: local pods of this build's instance manager
//! (`support::local_cluster`), which the operator reaches through its `--sql-endpoints` map.
//!
//! The harness is in `tusk_testenv::olm::install` (the cluster with OLM, catalogs, Subscriptions,
//! InstallPlans, CSVs, the local operator pod) and in `support::olm` (Tusk's pod arguments, its
//! catalog from the generator, and the objects written and checked across upgrades); this file
//! holds the scenarios.

mod support;

use std::{collections::BTreeSet, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    apiserver::{KINDS, api as tusk_api},
    olm::{
        HEAD, NEXT, PACKAGE, Readers, SERVICE, Written, canonical_rule, catalog_files, csv_name,
        inputs_with_drop, postmaster, predicted_stored, push_images, ready, reconciled, repo, served,
        served_by_both, spec_view, tusk_operator, validation_errors,
    },
};
use tusk_testenv::{
    eventually,
    olm::{
        OPERATORS_NAMESPACE,
        install::{INSTALL, OlmCluster, olm_api, value, while_olm_settles},
        operator::{Mode, PodEvent},
    },
};
use xtask::olm::{Inputs, catalog, fixture};

/// Every object `api` lists, as JSON.
async fn listed<K>(api: Api<K>) -> Vec<Value>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operatorhub_install_from_the_stable_channel() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&catalog_files(&[catalog::blobs(&inputs, true)])).await;
    env.subscribe(PACKAGE, "stable", false, None).await;
    let csv = env.succeeded(&csv_name(HEAD)).await;
    println!(
        "OLM: {} {}: {}",
        csv_name(HEAD),
        csv["status"]["phase"],
        csv["status"]["message"]
    );
    let subscription = value(
        &olm_api(&env.client, OPERATORS_NAMESPACE, "Subscription", "subscriptions")
            .get(PACKAGE)
            .await
            .unwrap(),
    );
    assert_eq!(subscription["status"]["installedCSV"], csv_name(HEAD));
    let plan = env
        .finished_plan(subscription["status"]["installPlanRef"]["name"].as_str().unwrap())
        .await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    // A webhook that is always there: two replicas that roll one by one, spread over nodes, and
    // a PodDisruptionBudget OLM made from the bundle.
    let deployment =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), OPERATORS_NAMESPACE)
            .get(PACKAGE)
            .await
            .unwrap();
    let spec = serde_json::to_value(deployment.spec.unwrap()).unwrap();
    assert_eq!(spec["replicas"], 2, "{spec:#}");
    assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{spec:#}");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0, "{spec:#}");
    assert_eq!(
        spec["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let budget = eventually("OLM to make the PodDisruptionBudget", INSTALL, async || {
        Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
            env.client.clone(),
            OPERATORS_NAMESPACE,
        )
        .get(PACKAGE)
        .await
        .ok()
    })
    .await;
    let budget = serde_json::to_value(budget.spec.unwrap()).unwrap();
    assert_eq!(budget["minAvailable"], 1, "{budget:#}");
    assert_eq!(
        budget["selector"]["matchLabels"]["app.kubernetes.io/name"],
        PACKAGE
    );

    // The CRDs convert through the Service OLM made, with OLM's CA, once OLM has settled them
    // (it may re-apply the bundle's placeholder after the CSV is Succeeded).
    env.conversion_through_olm().await;
    let crds: Api<DynamicObject> = Api::all_with(
        env.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    for (_, plural, versions) in KINDS {
        // OLM may put the bundle's placeholder back for a moment after the wait above, and then
        // its own Service again: the CRD is read once it points at OLM's namespace.
        let name = format!("{plural}.tusk.dev");
        let crd = eventually(
            &format!("{name} to point at OLM's namespace"),
            INSTALL,
            async || {
                let crd = value(&crds.get(&name).await.ok()?);
                (crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["namespace"]
                    == OPERATORS_NAMESPACE)
                    .then_some(crd)
            },
        )
        .await;
        let conversion = &crd["spec"]["conversion"];
        assert_eq!(conversion["strategy"], "Webhook", "{plural}");
        let service = &conversion["webhook"]["clientConfig"]["service"];
        assert_eq!(service["name"], SERVICE);
        assert_eq!(service["namespace"], OPERATORS_NAMESPACE);
        assert_eq!(service["path"], "/convert");
        assert_eq!(service["port"], 443);
        assert!(
            !conversion["webhook"]["clientConfig"]["caBundle"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(crd["spec"]["versions"].as_array().unwrap().len(), versions.len());
    }

    // OperatorHub's view: the PackageManifest that OLM's packageserver serves from the
    // catalog, as the OpenShift console reads it. Channels and their heads are the plan's; every
    // head shows what the CSV OLM installed says, and the icon is Tusk's.
    let manifest = env.package_manifest().await;
    let status = &manifest.data["status"];
    assert_eq!(status["packageName"], PACKAGE, "{status:#}");
    assert_eq!(status["defaultChannel"], inputs.plan.default_channel.as_str());
    let heads: std::collections::BTreeMap<String, String> = inputs
        .plan
        .channels
        .iter()
        .filter_map(|channel| {
            let head = inputs
                .plan
                .releases
                .iter()
                .rev()
                .find(|r| r.channels.contains(channel))?;
            Some((channel.clone(), csv_name(&head.version.to_string())))
        })
        .collect();
    let shown: std::collections::BTreeMap<String, String> = status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["currentCSV"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(shown, heads, "each channel and its head");
    let installed = &csv["spec"];
    // The console reads the icon from the `icon` subresource (packageserver strips it from the
    // object): the default channel head's, not packageserver's default icon (no ETag).
    let icon = env
        .client
        .send(
            http::Request::get(format!(
                "/apis/packages.operators.coreos.com/v1/namespaces/{OPERATORS_NAMESPACE}/packagemanifests/{PACKAGE}/icon"
            ))
            .body(Vec::new())
            .unwrap()
            .map(kube::client::Body::from),
        )
        .await
        .unwrap();
    let etag = icon.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let media = icon
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let icon = {
        use http_body_util::BodyExt;
        icon.into_body().collect().await.unwrap().to_bytes()
    };
    assert_eq!(
        icon.as_ref(),
        std::fs::read(repo().join(&inputs.plan.icon)).unwrap().as_slice(),
        "the icon"
    );
    assert_eq!(media.as_deref(), Some("image/svg+xml"));
    assert_eq!(
        etag,
        Some(format!(
            "\"{PACKAGE}.{}.{}\"",
            inputs.plan.default_channel,
            csv_name(HEAD)
        ))
    );
    for channel in status["channels"].as_array().unwrap() {
        let shown = &channel["currentCSVDesc"];
        let name = &channel["name"];
        assert_eq!(shown["version"], HEAD, "{name}");
        for field in [
            "displayName",
            "description",
            "provider",
            "installModes",
            "keywords",
            "maintainers",
            "links",
            "maturity",
        ] {
            assert_eq!(shown[field], installed[field], "{name}: {field}");
        }
        // What the tile and details page show from the CSV's annotations: capability level,
        // categories, the short description, the repository, the features.
        // (The installed CSV has OLM's own annotations besides.)
        let annotations = shown["annotations"].as_object().unwrap();
        for (key, value) in annotations {
            assert_eq!(
                value, &csv["metadata"]["annotations"][key],
                "{name}: annotation {key}"
            );
        }
        for key in [
            "capabilities",
            "categories",
            "description",
            "containerImage",
            "repository",
            "support",
        ] {
            assert!(annotations.contains_key(key), "{name}: annotation {key}");
        }
        // Each owned API as packageserver describes it (`descriptionsForCRDs`: name, version,
        // kind, display name and description; the descriptors reach the console from the
        // installed CSV, not from the PackageManifest).
        let described: Vec<Value> = installed["customresourcedefinitions"]["owned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|crd| {
                json!({
                    "name": crd["name"], "version": crd["version"], "kind": crd["kind"],
                    "displayName": crd["displayName"], "description": crd["description"],
                })
            })
            .collect();
        assert_eq!(
            shown["customresourcedefinitions"]["owned"],
            json!(described),
            "{name}: the owned APIs"
        );
        assert!(!shown["description"].as_str().unwrap_or_default().is_empty());
        let owned = shown["customresourcedefinitions"]["owned"].as_array().unwrap();
        let kinds: BTreeSet<String> = owned
            .iter()
            .map(|crd| {
                assert!(crd["displayName"].is_string(), "{name}: {crd:#}");
                crd["name"].as_str().unwrap().to_owned()
            })
            .collect();
        let every_kind: BTreeSet<String> = KINDS
            .iter()
            .map(|(_, plural, _)| format!("{plural}.tusk.dev"))
            .collect();
        assert_eq!(kinds, every_kind, "{name}: the owned APIs");
    }
    let head = &status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == status["defaultChannel"])
        .unwrap()["currentCSVDesc"];
    println!(
        "OperatorHub shows {} from {}: {} by {}, channels {:?} (default {}), {} owned APIs: {}",
        status["packageName"],
        status["catalogSource"],
        head["displayName"],
        head["provider"]["name"],
        shown.keys().collect::<Vec<_>>(),
        status["defaultChannel"],
        head["customresourcedefinitions"]["owned"]
            .as_array()
            .map_or(0, Vec::len),
        head["customresourcedefinitions"]["owned"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!(
                "{} ({})",
                c["displayName"].as_str().unwrap_or_default(),
                c["version"].as_str().unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );

    // The RBAC OLM created is exactly what the CSV declares.
    let declared = |field: &str| -> BTreeSet<String> {
        csv["spec"]["install"]["spec"][field][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(canonical_rule)
            .collect()
    };
    let owned_by_csv = |items: Vec<Value>| -> Vec<Value> {
        items
            .into_iter()
            .filter(|o| {
                o["metadata"]["labels"]["olm.owner"] == csv_name(HEAD).as_str()
                    || o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["name"] == csv_name(HEAD).as_str()))
            })
            .collect()
    };
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]| {
        canonical_rule(
            &json!({"apiGroups": groups, "resources": resources, "verbs": verbs, "resourceNames": names}),
        )
    };
    let mut lifted = declared("permissions");
    lifted.insert(rule(&[""], &["namespaces"], &["get", "list", "watch"], &[]));
    // OLM lifts `permissions` to a ClusterRole only when its authorizer does not find them
    // granted cluster-wide already (`permissionStatus` in ensureRBACInTargetNamespace). Tusk's
    // `clusterPermissions` cover every rule of its `permissions`, so whether OLM lifts depends on
    // whether its cache holds the ClusterRoleBinding at that sync: both outcomes are OLM's.
    let rules = |field: &str| {
        csv["spec"]["install"]["spec"][field][0]["rules"]
            .as_array()
            .cloned()
            .unwrap()
    };
    let cluster_rules = rules("clusterPermissions");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let covered = rules("permissions").iter().all(|namespaced| {
        strings(&namespaced["apiGroups"]).iter().all(|group| {
            strings(&namespaced["resources"]).iter().all(|resource| {
                strings(&namespaced["verbs"]).iter().all(|verb| {
                    cluster_rules.iter().any(|cluster| {
                        strings(&cluster["apiGroups"]).contains(group)
                            && strings(&cluster["resources"]).contains(resource)
                            && strings(&cluster["verbs"]).contains(verb)
                            && strings(&cluster["resourceNames"]).is_empty()
                    })
                })
            })
        })
    });
    println!("the CSV's clusterPermissions cover its permissions: {covered}");
    let lifted_role = ("ClusterRole".to_owned(), lifted);
    // The bundle's own ClusterRole for metrics readers, which OLM installs as it is.
    let metrics_reader =
        serde_json::to_value(tusk::rbac::metrics_reader_role("tusk-operator-metrics-reader")).unwrap();
    let mut expected = vec![
        ("ClusterRole".to_owned(), declared("clusterPermissions")),
        (
            "ClusterRole".to_owned(),
            metrics_reader["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(canonical_rule)
                .collect(),
        ),
        lifted_role.clone(),
        ("Role".to_owned(), declared("permissions")),
        (
            "Role".to_owned(),
            [rule(&[""], &["secrets"], &["get"], &[&format!("{SERVICE}-cert")])].into(),
        ),
        (
            "Role".to_owned(),
            [rule(
                &["operators.coreos.com"],
                &["operatorconditions"],
                &["get", "patch", "update"],
                &[&csv_name(HEAD)],
            )]
            .into(),
        ),
    ];
    expected.sort();
    let unlifted: Vec<(String, BTreeSet<String>)> =
        expected.iter().filter(|r| **r != lifted_role).cloned().collect();
    // OLM makes the lifted ClusterRole of an AllNamespaces install, when it does, at the end of
    // a CSV sync (ensureRBACInTargetNamespace in syncClusterServiceVersion), which may come after
    // the CSV already says Succeeded: look until everything is there (or a minute passed).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let made = loop {
        let cluster_roles = owned_by_csv(
            listed(Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(
                env.client.clone(),
            ))
            .await,
        );
        let roles = owned_by_csv(
            listed(Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(
                env.client.clone(),
                OPERATORS_NAMESPACE,
            ))
            .await,
        );
        let granted = |roles: &[Value]| -> BTreeSet<String> {
            roles
                .iter()
                .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| canonical_rule(&r))
                .collect()
        };
        // The CSV's two permission sets, exactly, plus what OLM adds on its own: for an
        // AllNamespaces install it also grants `permissions` cluster-wide with read access to
        // namespaces (unless it finds them granted cluster-wide already: see `covered`), and it
        // lets the account read its serving certificate and update its OperatorCondition.
        let mut made: Vec<(String, BTreeSet<String>)> = Vec::new();
        for role in cluster_roles.iter().chain(&roles) {
            let rules = granted(std::slice::from_ref(role));
            made.push((role["kind"].as_str().unwrap().to_owned(), rules));
        }
        made.sort();
        if made == expected || (covered && made == unlifted) || std::time::Instant::now() > deadline {
            for role in cluster_roles.iter().chain(&roles) {
                println!("OLM made {} {}", role["kind"], role["metadata"]["name"]);
            }
            break made;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !(covered && made == unlifted) {
        assert_eq!(made, expected);
    }
    assert!(
        made.iter().flat_map(|(_, rules)| rules).all(|r| !r.contains('*')),
        "no wildcards"
    );

    // The real operator, as OLM's ServiceAccount, with OLM's certificate.
    env.run_operator(Mode::Run).await;
    let examples: Vec<Value> =
        serde_json::from_str(csv["metadata"]["annotations"]["alm-examples"].as_str().unwrap()).unwrap();
    let example = examples
        .iter()
        .find(|e| e["kind"] == "PostgresCluster" && e["apiVersion"] == "tusk.dev/v1")
        .unwrap()
        .clone();
    let namespace = env.plane.namespace("hub").await.unwrap();
    let clusters = tusk_api(&env.client, &namespace, "PostgresCluster", "v1");
    let object: DynamicObject = serde_json::from_value(example.clone()).unwrap();
    let post = PostParams::default();
    while_olm_settles("creating the alm-examples cluster", || {
        clusters.create(&post, &object)
    })
    .await;
    let name = example["metadata"]["name"].as_str().unwrap().to_owned();
    eventually(
        "the alm-examples PostgresCluster to be Ready",
        Duration::from_secs(180),
        || async {
            let cluster = value(&clusters.get(&name).await.ok()?);
            cluster["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        },
    )
    .await;
    // Reading it at v1alpha1 goes apiserver -> Service -> egress proxy -> the local webhook.
    let old_api = tusk_api(&env.client, &namespace, "PostgresCluster", "v1alpha1");
    let old = while_olm_settles("reading it at v1alpha1", || old_api.get(&name)).await;
    assert_eq!(value(&old)["spec"]["replicas"], example["spec"]["instances"]);
    let ip = Api::<k8s_openapi::api::core::v1::Service>::namespaced(env.client.clone(), OPERATORS_NAMESPACE)
        .get(SERVICE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    assert!(
        env.proxy.connects().contains(&(format!("{ip}:443"), true)),
        "{:?}",
        env.proxy.connects()
    );
    assert!(
        env.plane.non_loopback_connections().is_empty(),
        "{:?}",
        env.plane.non_loopback_connections()
    );
}

/// What readers saw through an operator upgrade, and when no operator process served the
/// webhook: printed, and held to no moment without a ready replica and no failed request but
/// OLM's own. OLM v0 updates a CRD by writing the bundle's CRD whole (its catalog operator's
/// `NewCRDV1Step` calls `Update`), whose conversion webhook names the Service in the namespace
/// the bundle suggests, `tusk-system`, without a CA: until its olm operator writes the install's
/// own Service and CA back, conversions fail with `service "tusk-operator-service" not found`
/// whatever the operator does. And OLM gives each new CSV a new CA: it writes the new CA into
/// the CRDs and the new certificate into the Secret, so for a moment the apiserver trusts one
/// and the replica behind the Service serves the other (`certificate signed by unknown
/// authority`). The local pod here takes the new certificate when its Secret changes; a replica
/// could narrow that moment further by being ready only while the CRDs' `caBundle` trusts its
/// certificate, which Tusk does not do yet. Both kinds are counted apart.
///
/// A third kind belongs to the released 1.0.0 alone, so it is counted apart only when
/// `released_replaced` says 1.0.0's binary is the replica being replaced: on SIGTERM, 1.0.0's
/// server closes its idle keep-alive connections at once. The apiserver calls conversion webhooks
/// over HTTP/1.1 and does not retry a POST that meets a connection closed under it, so a
/// conversion sent just then fails with `EOF`. It counts as 1.0.0's only when the failure falls
/// between the SIGTERM to a process of a released program and a second after it was gone, and a
/// tunnel to that process closed within a second of it. Later releases drain instead: each
/// response says `Connection: close` while the replica is terminating
/// (`tests/webhook_server.rs`), and the upgrade from the head holds them to no failure at all.
async fn through_the_upgrade(
    env: &OlmCluster,
    since: std::time::Instant,
    readers: Readers,
    step: &str,
    released_replaced: bool,
) {
    // A few more rounds after the new operator took over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = readers.stop().await;
    let gaps = env.serving_gaps(since);
    let longest = gaps.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let olm_placeholder = format!(
        "tusk-operator-service.{}.svc:443/convert?timeout=30s\": service \"tusk-operator-service\" not found",
        tusk::facts::operator::NAMESPACE
    );
    let rotation = "tls: failed to verify certificate: x509: certificate signed by unknown authority";
    let started = stats.started.expect("the readers say when they started");
    let every_event = env.operator_events();
    let events: Vec<_> = every_event
        .iter()
        .filter(|(at, _)| *at >= started)
        .cloned()
        .collect();
    let tunnels = env.proxy.tunnels();
    let second = Duration::from_secs(1);
    // When each released process was sent SIGTERM and when it was gone, by port.
    let released_stops: Vec<(u16, std::time::Instant, Option<std::time::Instant>)> = events
        .iter()
        .filter_map(|(at, event)| match event {
            PodEvent::Terminating { port } => Some((*port, *at)),
            _ => None,
        })
        .filter(|(port, _)| {
            every_event.iter().any(|(_, e)| {
                matches!(e, PodEvent::Started { port: p, program } if p == port && *program != tusk_operator().program)
            })
        })
        .map(|(port, at)| {
            let gone = events.iter().find_map(|(gone, e)| (*e == PodEvent::Gone { port }).then_some(*gone));
            (port, at, gone)
        })
        .collect();
    let closed_by_released = |at: Duration, why: &str| {
        let at = started + at;
        released_replaced
            && why.contains("/convert?timeout=30s\": EOF")
            && released_stops.iter().any(|(port, terminating, gone)| {
                at >= *terminating
                    && gone.is_none_or(|gone| at <= gone + second)
                    && tunnels.iter().any(|t| {
                        t.to.port() == *port
                            && t.closed.is_some_and(|closed| {
                                closed.max(at).saturating_duration_since(closed.min(at)) <= second
                            })
                    })
            })
    };
    let (olm, rest): (Vec<_>, Vec<_>) = stats
        .failures
        .iter()
        .partition(|(_, _, why)| why.contains(&olm_placeholder));
    let (rotated, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(_, _, why)| why.contains(rotation));
    let (released, tusk): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|(at, _, why)| closed_by_released(*at, why));
    println!(
        "{step}: readers made {} requests at every version both releases serve: {} failed while OLM wrote the bundle's CRDs over its own conversion config, {} while OLM's new CA and the certificate served differed, {} on a keep-alive connection the released 1.0.0 closed at SIGTERM, {} otherwise; longest failing stretch {:?}, slowest request {:?}. No operator replica served the webhook for {:?} at most ({} gaps)",
        stats.requests,
        olm.len(),
        rotated.len(),
        released.len(),
        tusk.len(),
        stats.longest_gap,
        stats.slowest,
        longest,
        gaps.len(),
    );
    for (at, what, why) in stats.failures.iter().take(10) {
        println!("  {at:?}: {what}: {why}");
    }
    assert!(gaps.is_empty(), "{step}: no replica served the webhook: {gaps:?}");
    if !tusk.is_empty() {
        // Which process each failure met: the kubelet's steps and the proxy's tunnels, in time
        // since the readers started.
        let offset = |at: std::time::Instant| at.saturating_duration_since(started);
        let mut timeline: Vec<(Duration, String)> = events
            .iter()
            .map(|(at, event)| (offset(*at), event.to_string()))
            .collect();
        for tunnel in &tunnels {
            if tunnel.closed.is_none_or(|closed| closed >= started) {
                timeline.push((
                    offset(tunnel.opened),
                    format!("tunnel to {} -> {} opened", tunnel.target, tunnel.to),
                ));
                if let Some(closed) = tunnel.closed {
                    timeline.push((
                        offset(closed),
                        format!(
                            "tunnel to {} -> {} closed: {}",
                            tunnel.target, tunnel.to, tunnel.ended
                        ),
                    ));
                }
            }
        }
        timeline.extend(
            tusk.iter()
                .map(|(at, what, why)| (*at, format!("FAILED {what}: {why}"))),
        );
        timeline.sort();
        let timeline: Vec<String> = timeline
            .iter()
            .map(|(at, what)| format!("  {at:?}: {what}"))
            .collect();
        panic!("{step}: requests failed: {tusk:#?}\n{}", timeline.join("\n"));
    }
}

/// The operator's writes in `namespace` since `since`, from the apiserver's audit log, by verb
/// and resource (`patch statefulsets`, `patch postgresclusters/status`): how many.
fn operator_writes(
    env: &OlmCluster,
    namespace: &str,
    since: k8s_openapi::jiff::Timestamp,
) -> std::collections::BTreeMap<String, usize> {
    let user = format!("system:serviceaccount:{OPERATORS_NAMESPACE}:{PACKAGE}");
    let mut writes = std::collections::BTreeMap::new();
    for event in env.plane.audit_events() {
        let at: Option<k8s_openapi::jiff::Timestamp> = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok());
        let verb = event["verb"].as_str().unwrap_or_default();
        if event["user"]["username"] != user.as_str()
            || event["objectRef"]["namespace"] != namespace
            || event["stage"] != "ResponseComplete"
            || !["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
            || at.is_none_or(|at| at < since)
        {
            continue;
        }
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
            None => object["resource"].as_str().unwrap_or_default().to_owned(),
        };
        *writes.entry(format!("{verb} {resource}")).or_insert(0) += 1;
    }
    writes
}

/// The writes of [`operator_writes`] to a cluster's children (StatefulSets, Services, Secrets,
/// RBAC...), which a quiet takeover does not make.
fn child_writes(writes: &std::collections::BTreeMap<String, usize>) -> Vec<&String> {
    writes
        .keys()
        .filter(|w| {
            let resource = w.split_once(' ').map_or("", |(_, r)| r);
            [
                "statefulsets",
                "configmaps",
                "secrets",
                "services",
                "poddisruptionbudgets",
                "serviceaccounts",
                "roles",
                "rolebindings",
            ]
            .contains(&resource)
        })
        .collect()
}

/// The pods of `namespace` that run their StatefulSet's current template, by name: their uid.
async fn current_pods(env: &OlmCluster, namespace: &str) -> std::collections::BTreeMap<String, String> {
    let sets = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(env.client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap();
    let revisions: BTreeSet<String> = sets
        .items
        .iter()
        .filter_map(|s| s.status.as_ref()?.update_revision.clone())
        .collect();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"))
                .is_some_and(|r| revisions.contains(r))
        })
        .map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap()))
        .collect()
}

/// Every StatefulSet in `namespace`: its generation and its pod template, as JSON.
async fn statefulsets(
    env: &OlmCluster,
    namespace: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(env.client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let template = serde_json::to_string(&s.spec.as_ref().unwrap().template).unwrap();
            (
                s.metadata.name.clone().unwrap(),
                (s.metadata.generation.unwrap_or_default(), template),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_upgrades_across_crd_versions_keep_every_object() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&catalog_files(&[catalog::blobs(&inputs, true)])).await;
    env.subscribe(PACKAGE, "candidate", true, Some(&csv_name("0.1.0")))
        .await;

    // 0.1.0: every kind at v1alpha1 only.
    let plan = env.approve(&csv_name("0.1.0")).await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    env.succeeded(&csv_name("0.1.0")).await;
    let mut written = Written::create(&env).await;
    let reads = written.check(&env, &served(&inputs, "0.1.0")).await;
    assert_eq!(env.stored_versions().await, predicted_stored(&inputs, &["0.1.0"]));
    println!("0.1.0: {} objects, {reads} reads", written.objects.len());

    // 0.2.0: PostgresCluster stores v1beta1 and converts through the webhook, served from the
    // moment OLM makes its Service (OLM lists the existing objects through it while upgrading).
    env.upgrade("0.1.0", "0.2.0", Mode::Webhook).await;
    let reads = written.check(&env, &served(&inputs, "0.2.0")).await;
    assert_eq!(
        env.stored_versions().await,
        predicted_stored(&inputs, &["0.1.0", "0.2.0"])
    );
    println!("0.2.0: {reads} reads");

    // 1.0.0: v1 everywhere; the controllers run, as 1.0.0's own binary built from the commit
    // the plan records. It reconciles clusters, users and databases, and marks backups and
    // schedules `NotReconciled`: it had no backup controllers.
    env.upgrade("0.2.0", "1.0.0", Mode::Run).await;
    let reads = written.check(&env, &served(&inputs, "1.0.0")).await;
    assert_eq!(
        env.stored_versions().await,
        predicted_stored(&inputs, &["0.1.0", "0.2.0", "1.0.0"])
    );
    let every_kind: Vec<&str> = KINDS.iter().map(|(kind, _, _)| *kind).collect();
    reconciled(&env, &written, &every_kind).await;
    let schedules = every_minute(&env, &written.namespace, "postgrescluster-0").await;
    // A change made through v1alpha1 is reconciled too.
    let first = written.objects[0].1.clone();
    let patched = tusk_api(&env.client, &written.namespace, "PostgresCluster", "v1alpha1")
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}, "spec": {"parameters": {"work_mem": "8MB"}}})),
        )
        .await
        .unwrap();
    written.objects[0].2 = spec_view(&value(&patched));
    reconciled(&env, &written, &every_kind).await;
    // The genuine 1.0.0 ran: it told the schedule it does not reconcile it.
    let not_reconciled = eventually(
        "1.0.0 to mark every-minute NotReconciled",
        Duration::from_secs(60),
        async || {
            let schedule = value(&schedules.get("every-minute").await.ok()?);
            let ready = schedule["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["reason"] == "NotReconciled").then_some(ready)
        },
    )
    .await;
    println!("1.0.0 on every-minute: {}", not_reconciled["message"]);
    let made_by_1_0_0 = statefulsets(&env, &written.namespace).await;
    assert!(
        made_by_1_0_0
            .values()
            .all(|(_, template)| template.contains("tusk-operator:1.0.0")),
        "1.0.0's pods copy the instance manager from its image"
    );
    println!(
        "1.0.0: {reads} reads, every cluster, user and database reconciled by 1.0.0's own binary; reads retried while OLM settled the CRDs so far: {}",
        written.retried.load(std::sync::atomic::Ordering::Relaxed)
    );

    // 1.1.0, the head: the same versions as 1.0.0. It adopts everything, the backup kinds
    // 1.0.0 did not reconcile included, and it brings a new instance manager: it says which
    // instances run 1.0.0's, and its template names its own.
    let readers = Readers::start(
        &env.client,
        &written.namespace,
        served_by_both(&served(&inputs, "1.0.0"), &served(&inputs, HEAD)),
    );
    let since = std::time::Instant::now();
    let writes_since = k8s_openapi::jiff::Timestamp::now();
    env.upgrade("1.0.0", HEAD, Mode::Run).await;
    through_the_upgrade(&env, since, readers, &format!("1.0.0 -> {HEAD}"), true).await;
    let reads = written.check(&env, &served(&inputs, HEAD)).await;
    println!("{HEAD}: {reads} reads");
    reconciled(&env, &written, &every_kind).await;
    let backups = tusk_api(&env.client, &written.namespace, "PostgresBackup", "v1");
    let run = eventually(
        "every-minute's first run created once a release reconciles schedules",
        Duration::from_secs(120),
        async || {
            let list = backups
                .list(&kube::api::ListParams::default().labels("tusk.dev/schedule=every-minute"))
                .await
                .ok()?;
            list.items.first().map(|b| b.metadata.name.clone().unwrap())
        },
    )
    .await;
    println!("{HEAD}: the schedule 1.0.0 did not reconcile made {run}");
    let outdated = support::event(&env.client, &written.namespace, "InstanceManagerOutdated", |_| {
        true
    })
    .await;
    println!("{HEAD}: {}", outdated.note.unwrap_or_default());
    let adopted = eventually(
        "every StatefulSet on 1.1.0's instance manager",
        Duration::from_secs(120),
        async || {
            let now = statefulsets(&env, &written.namespace).await;
            now.values()
                .all(|(_, t)| t.contains(tusk::facts::operator::DEFAULT_INSTANCE_MANAGER_IMAGE))
                .then_some(now)
        },
    )
    .await;
    assert_eq!(adopted.len(), made_by_1_0_0.len());
    println!(
        "1.0.0 -> {HEAD}: the operator's writes in {} while it took over, from the audit log: {:#?}",
        written.namespace,
        operator_writes(&env, &written.namespace, writes_since)
    );

    // Before migration, the next release may not drop v1alpha1: `cargo xtask validate` says so.
    let next = inputs_with_drop(HEAD);
    let refused = validation_errors(&next);
    assert!(
        refused.iter().any(|f| f.contains(&format!("tusk-operator.v{NEXT} drops postgresclusters.tusk.dev v1alpha1, which objects may still be stored in after upgrading from tusk-operator.v{HEAD}"))),
        "{refused:#?}"
    );
    println!("validate before migration: {}", refused[0]);

    // Migrate storage; storedVersions becomes [v1] and the drop is safe.
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_tusk-operator"))
        .arg("migrate-storage")
        .env("KUBECONFIG", env.plane.kubeconfig())
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let v1: BTreeSet<String> = ["v1".to_owned()].into();
    assert!(env.stored_versions().await.values().all(|s| s == &v1));
    env.serve(&catalog_files(&[catalog::blobs(&next, true)])).await;
    let before_next = statefulsets(&env, &written.namespace).await;
    let pods_before = current_pods(&env, &written.namespace).await;
    let readers = Readers::start(
        &env.client,
        &written.namespace,
        served_by_both(&served(&inputs, HEAD), &served(&next, NEXT)),
    );
    let since = std::time::Instant::now();
    let writes_since = k8s_openapi::jiff::Timestamp::now();
    env.upgrade(HEAD, NEXT, Mode::Run).await;
    through_the_upgrade(&env, since, readers, &format!("{HEAD} -> {NEXT}"), false).await;
    let reads = written.check(&env, &served(&next, NEXT)).await;
    println!("{NEXT} (drops v1alpha1 after migration): {reads} reads");
    // An operator upgrade that keeps the instance manager changes no pod template: every
    // StatefulSet is as 1.1.0 left it, generation and template, so no pod restarts.
    reconciled(&env, &written, &every_kind).await;
    let after = statefulsets(&env, &written.namespace).await;
    assert_eq!(
        after, before_next,
        "{NEXT} changed a StatefulSet that {HEAD} made"
    );
    let pods_after = current_pods(&env, &written.namespace).await;
    let restarted: Vec<&String> = pods_before
        .iter()
        .filter(|(name, uid)| pods_after.get(*name) != Some(uid))
        .map(|(name, _)| name)
        .collect();
    println!(
        "{HEAD} -> {NEXT}: {} StatefulSets, none changed; PostgreSQL pods restarted: {} of the {} that ran the current template",
        after.len(),
        restarted.len(),
        pods_before.len()
    );
    assert!(restarted.is_empty(), "{NEXT} restarted {restarted:?}");
    // A quiet takeover: it rewrites no child of a cluster. (Pods may still be restarted by
    // the rollout 1.1.0 began onto its own instance manager; the count shows them.)
    let writes = operator_writes(&env, &written.namespace, writes_since);
    println!(
        "{HEAD} -> {NEXT}: the operator's writes in {} while it took over, from the audit log: {writes:#?}",
        written.namespace
    );
    let children = child_writes(&writes);
    assert!(children.is_empty(), "{NEXT} rewrote children: {children:?}");
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(env.client.clone());
    let clusters = crds.get("postgresclusters.tusk.dev").await.unwrap();
    assert!(!clusters.spec.versions.iter().any(|v| v.name == "v1alpha1"));
}

/// Creates `PostgresBackupSchedule` `every-minute` of `cluster` in `namespace`; returns the
/// schedules' API.
async fn every_minute(env: &OlmCluster, namespace: &str, cluster: &str) -> Api<DynamicObject> {
    let schedules = tusk_api(&env.client, namespace, "PostgresBackupSchedule", "v1");
    schedules
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresBackupSchedule",
                "metadata": {"name": "every-minute"},
                "spec": {"cluster": {"name": cluster}, "schedule": "* * * * *"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    schedules
}

/// Operator upgrades through real OLM, as the databases see them. The head release is installed
/// from the catalog and runs three clusters of real PostgreSQL (local pods of this build's
/// instance manager): `alpha` with three instances, `primaryUpdate: Supervised` and a backup
/// schedule onto a claim, `beta` and `gamma` with one; each has a user and a database.
///
/// First OLM upgrades Tusk to the next release, which keeps the instance manager, with a
/// connection held open on every instance. Every PostgreSQL keeps its postmaster (PID and start
/// time), every held connection still reads and writes, no pod or StatefulSet is replaced,
/// readers at every served version see no failure but OLM's own, the new operator writes no
/// child, every object is Ready for it with no instance manager outdated, and a backup completes.
///
/// Then OLM upgrades to a release that brings a new instance manager. The instances report it
/// outdated, the one-instance clusters restart, `alpha`'s replicas restart highest ordinal first,
/// its primary waits for the user, and restarts once the user switched over; then every instance
/// runs the new instance manager, and no row is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_through_olm_restart_no_database_until_the_instance_manager_changes() {
    use std::net::SocketAddr;
    use support::{
        apiserver::map_endpoint,
        local_cluster::{LocalCluster, POSTGRES_PORT, STATUS_PORT},
        olm::{AFTER_NEXT, inputs_with_new_instance_manager, sql_endpoints},
    };
    const MAJOR: u32 = 18;
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    let next = inputs_with_drop(HEAD);
    env.serve(&catalog_files(&[catalog::blobs(&next, true)])).await;
    env.subscribe(PACKAGE, "stable", true, Some(&csv_name(HEAD)))
        .await;
    let plan = env.approve(&csv_name(HEAD)).await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    env.succeeded(&csv_name(HEAD)).await;
    env.conversion_through_olm().await;
    env.run_operator(Mode::Run).await;

    let namespace = env.plane.namespace("databases").await.unwrap();
    let map = sql_endpoints(&env);
    let claims = tempfile::tempdir().unwrap();
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(env.client.clone(), &namespace)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    let shapes = [("alpha", 3), ("beta", 1), ("gamma", 1)];
    let names = shapes.map(|(name, _)| name);
    let mut clusters = Vec::new();
    for (name, instances) in shapes {
        let mut spec = json!({"postgres": {"version": MAJOR}, "instances": instances, "storage": {"data": {"size": "1Gi"}}});
        if name == names[0] {
            spec["backup"] = json!({"target": {"volume": {"claimName": "backups"}}, "archiveTimeout": "10s"});
            spec["updateStrategy"] = json!({"primaryUpdate": "Supervised"});
        }
        let postgres = tusk_testenv::postgres::Postgres::get(MAJOR)
            .unwrap_or_else(|e| panic!("PostgreSQL {MAJOR}: {e}"));
        let mut c = LocalCluster::create(&env.plane, &namespace, name, spec, postgres).await;
        c.share_claims(claims.path());
        for ordinal in 0..instances {
            let address = SocketAddr::new(c.ip(ordinal), STATUS_PORT);
            map_endpoint(&map, &namespace, &format!("{name}/{name}-{ordinal}"), address);
        }
        for ordinal in 0..instances {
            c.start(ordinal).await;
            c.wait_ready(ordinal, Duration::from_secs(180)).await;
        }
        map_endpoint(
            &map,
            &namespace,
            name,
            SocketAddr::new(c.rw_address(), POSTGRES_PORT),
        );
        for (kind, object, spec) in [
            (
                "PostgresUser",
                format!("{name}-app"),
                json!({"cluster": {"name": name}}),
            ),
            (
                "PostgresDatabase",
                format!("{name}-shop"),
                json!({"cluster": {"name": name}, "owner": format!("{name}-app")}),
            ),
        ] {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": kind, "metadata": {"name": object}, "spec": spec,
            }))
            .unwrap();
            tusk_api(&env.client, &namespace, kind, "v1")
                .create(&PostParams::default(), &object)
                .await
                .unwrap();
        }
        clusters.push(c);
    }
    every_minute(&env, &namespace, names[0]).await;
    let every_object = || {
        names.iter().flat_map(|name| {
            [
                ("PostgresCluster", (*name).to_owned()),
                ("PostgresUser", format!("{name}-app")),
                ("PostgresDatabase", format!("{name}-shop")),
            ]
        })
    };
    for (kind, name) in every_object() {
        ready(&env, &namespace, kind, &name).await;
    }
    let instances: usize = clusters.iter().map(|c| c.pods.len()).sum();
    println!(
        "{HEAD}: {} clusters of real PostgreSQL {MAJOR} ({instances} instances), each with a user and a database, Ready",
        names.len(),
    );

    // Held through the upgrade: a connection to each PostgreSQL, and what shows it kept running.
    for c in &clusters {
        c.connect_rw()
            .await
            .unwrap()
            .batch_execute("CREATE TABLE held (at text NOT NULL); INSERT INTO held VALUES ('before')")
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        for (ordinal, pod) in &c.pods {
            let db = c.connect(*ordinal).await.unwrap();
            let started = postmaster(&db).await;
            held.push((i, *ordinal, db, started, pod.main.pid()));
        }
    }
    let sets_before = statefulsets(&env, &namespace).await;
    let pods_before = current_pods(&env, &namespace).await;
    assert_eq!(pods_before.len(), instances, "{pods_before:?}");

    let readers = Readers::start(
        &env.client,
        &namespace,
        served_by_both(&served(&inputs, HEAD), &served(&next, NEXT)),
    );
    let since = std::time::Instant::now();
    let writes_since = k8s_openapi::jiff::Timestamp::now();
    env.upgrade(HEAD, NEXT, Mode::Run).await;
    through_the_upgrade(
        &env,
        since,
        readers,
        &format!("{HEAD} -> {NEXT} with real PostgreSQL"),
        false,
    )
    .await;
    for (kind, name) in every_object() {
        let status = ready(&env, &namespace, kind, &name).await;
        if kind == "PostgresCluster" {
            for instance in status["instanceStatus"].as_array().unwrap() {
                assert_eq!(instance["instanceManagerOutdated"], false, "{name}: {instance:#}");
            }
        }
    }
    ready(&env, &namespace, "PostgresBackupSchedule", "every-minute").await;
    // Backups still run, from the instance managers that kept running.
    let backup: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresBackup",
        "metadata": {"name": "after-the-upgrade"},
        "spec": {"cluster": {"name": names[0]}},
    }))
    .unwrap();
    let backups = tusk_api(&env.client, &namespace, "PostgresBackup", "v1");
    backups.create(&PostParams::default(), &backup).await.unwrap();
    let after_upgrade = eventually(
        "the backup after the upgrade to complete",
        Duration::from_secs(180),
        async || {
            let backup = value(&backups.get("after-the-upgrade").await.ok()?);
            (backup["status"]["phase"] == "Completed").then_some(backup)
        },
    )
    .await;
    // The kubelet's part: a pod whose object was replaced would start again now.
    let mut replaced = Vec::new();
    for c in &mut clusters {
        replaced.extend(c.sync_pods().await.into_iter().map(|o| format!("{}-{o}", c.name)));
    }
    assert!(replaced.is_empty(), "{NEXT} replaced pods {replaced:?}");
    assert_eq!(
        current_pods(&env, &namespace).await,
        pods_before,
        "the same pod objects"
    );
    assert_eq!(
        statefulsets(&env, &namespace).await,
        sets_before,
        "no StatefulSet changed"
    );
    let mut restarted = Vec::new();
    for (i, ordinal, db, started, instance_manager) in &held {
        let c = &clusters[*i];
        let pod = format!("{}-{ordinal}", c.name);
        let rows: i64 = db
            .query_one("SELECT count(*) FROM held", &[])
            .await
            .unwrap_or_else(|e| panic!("{pod}: the held connection: {e}"))
            .get(0);
        assert_eq!(rows, 1, "{pod}");
        if postmaster(db).await != *started || c.pods[ordinal].main.pid() != *instance_manager {
            restarted.push(pod);
        }
    }
    for c in &clusters {
        c.connect_rw()
            .await
            .unwrap()
            .execute("INSERT INTO held VALUES ('after')", &[])
            .await
            .unwrap_or_else(|e| panic!("{}: writing after the upgrade: {e}", c.name));
    }
    println!(
        "{HEAD} -> {NEXT} through OLM: PostgreSQL restarted in {} of {} instances ({restarted:?}); {} held connections kept; the same {} pods and StatefulSets; a backup after the upgrade Completed at {}",
        restarted.len(),
        held.len(),
        held.len(),
        pods_before.len(),
        after_upgrade["status"]["location"],
    );
    assert!(restarted.is_empty(), "PostgreSQL restarted in {restarted:?}");
    let writes = operator_writes(&env, &namespace, writes_since);
    println!(
        "{HEAD} -> {NEXT}: the operator's writes in {namespace} while it took over, from the audit log: {writes:#?}"
    );
    let children = child_writes(&writes);
    assert!(children.is_empty(), "{NEXT} rewrote children: {children:?}");
    drop(held);

    // A release with a new instance manager: the pods roll, as `updateStrategy` allows.
    let after = inputs_with_new_instance_manager();
    let image = format!("{}:{AFTER_NEXT}", after.plan.images.operator);
    env.serve(&catalog_files(&[catalog::blobs(&after, true)])).await;
    env.upgrade(NEXT, AFTER_NEXT, Mode::Run).await;
    let told = support::event(&env.client, &namespace, "InstanceManagerOutdated", |e| {
        e.note.as_deref().is_some_and(|n| n.contains(&image))
    })
    .await;
    println!("{AFTER_NEXT}: {}", told.note.unwrap_or_default());
    let [alpha, one_instance @ ..] = clusters.as_mut_slice() else {
        unreachable!("three clusters")
    };
    let primary = alpha.labelled_primary().await.expect("alpha has a primary");
    let alpha_status = || async {
        let object = value(
            &tusk_api(&env.client, &namespace, "PostgresCluster", "v1")
                .get("alpha")
                .await
                .ok()?,
        );
        Some(object["status"].clone())
    };
    let mut rolled: Vec<String> = Vec::new();
    eventually(
        "the one-instance clusters restarted, and alpha's replicas, its rollout waiting for the user",
        Duration::from_secs(300),
        async || {
            for c in std::iter::once(&mut *alpha).chain(one_instance.iter_mut()) {
                let name = c.name.clone();
                rolled.extend(c.sync_pods().await.into_iter().map(|o| format!("{name}-{o}")));
            }
            let status = alpha_status().await?;
            let waiting = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "WaitingForUser");
            (waiting && rolled.len() == 4).then_some(())
        },
    )
    .await;
    let alpha_rolled: Vec<&String> = rolled.iter().filter(|p| p.starts_with("alpha-")).collect();
    assert_eq!(
        alpha_rolled,
        ["alpha-2", "alpha-1", "alpha-0"]
            .iter()
            .filter(|p| **p != primary)
            .collect::<Vec<_>>(),
        "alpha's replicas, highest ordinal first, not its primary {primary}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        alpha.sync_pods().await.is_empty(),
        "alpha's primary waits for the user"
    );
    let to = alpha_rolled[0].clone();
    alpha.switch_over_and_restart(&primary, &to).await;
    for c in &clusters {
        eventually(
            &format!("every instance of {} on {image}", c.name),
            Duration::from_secs(180),
            async || {
                let status = ready(&env, &namespace, "PostgresCluster", &c.name).await;
                status["instanceStatus"]
                    .as_array()?
                    .iter()
                    .all(|i| i["instanceManager"] == image.as_str() && i["instanceManagerOutdated"] == false)
                    .then_some(())
            },
        )
        .await;
        let rows: i64 = eventually(
            &format!("{}'s primary to answer through -rw", c.name),
            Duration::from_secs(60),
            async || {
                let db = c.connect_rw().await.ok()?;
                let row = db.query_one("SELECT count(*) FROM held", &[]).await.ok()?;
                Some(row.get(0))
            },
        )
        .await;
        assert_eq!(rows, 2, "{}: every row written before", c.name);
    }
    println!(
        "{NEXT} -> {AFTER_NEXT} (a new instance manager) through OLM: restarted {rolled:?}, then {primary} after the user's switchover to {to}; every instance runs {image}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_range_upgrades_straight_to_the_head() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&catalog_files(&[catalog::blobs(&inputs, true)])).await;
    env.subscribe(PACKAGE, "fast", true, Some(&csv_name("0.1.0")))
        .await;
    env.approve(&csv_name("0.1.0")).await;
    env.succeeded(&csv_name("0.1.0")).await;
    // The next plan is for the head itself: its skipRange covers 0.1.0.
    let plan = env.approve(&csv_name(HEAD)).await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    let csv = env.succeeded(&csv_name(HEAD)).await;
    println!("OLM: {} {} from 0.1.0", csv_name(HEAD), csv["status"]["phase"]);
    env.gone(&csv_name("0.1.0")).await;
    assert!(
        env.csv(&csv_name("0.2.0")).await.is_none(),
        "0.2.0 was never installed"
    );
    let plans = olm_api(&env.client, OPERATORS_NAMESPACE, "InstallPlan", "installplans")
        .list(&Default::default())
        .await
        .unwrap();
    let installed: BTreeSet<String> = plans
        .items
        .iter()
        .flat_map(|p| {
            value(p)["spec"]["clusterServiceVersionNames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        installed,
        [csv_name("0.1.0"), csv_name(HEAD)].into_iter().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_that_requires_tusk_brings_it_in() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&catalog_files(&[
        catalog::blobs(&inputs, true),
        fixture::blobs(PACKAGE, ">=1.0.0"),
    ]))
    .await;
    env.subscribe(fixture::PACKAGE, "stable", false, None).await;
    env.succeeded(&format!("{}.v{}", fixture::PACKAGE, fixture::VERSION))
        .await;
    let csv = env.succeeded(&csv_name(HEAD)).await;
    println!(
        "OLM: {} {} as a dependency of {}",
        csv_name(HEAD),
        csv["status"]["phase"],
        fixture::PACKAGE
    );
    let subscriptions = olm_api(&env.client, OPERATORS_NAMESPACE, "Subscription", "subscriptions")
        .list(&Default::default())
        .await
        .unwrap();
    let packages: BTreeSet<String> = subscriptions
        .items
        .iter()
        .map(|s| value(s)["spec"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        packages,
        [fixture::PACKAGE.to_owned(), PACKAGE.to_owned()]
            .into_iter()
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_keeps_crds_and_objects_and_unhooks_conversion() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&catalog_files(&[catalog::blobs(&inputs, true)])).await;
    env.subscribe(PACKAGE, "stable", false, None).await;
    env.succeeded(&csv_name(HEAD)).await;
    env.run_operator(Mode::Run).await;
    let namespace = env.plane.namespace("kept").await.unwrap();
    let sample: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("config/samples/postgrescluster.yaml")).unwrap(),
    )
    .unwrap();
    let clusters = tusk_api(&env.client, &namespace, "PostgresCluster", "v1");
    let object: DynamicObject = serde_json::from_value(sample.clone()).unwrap();
    let post = PostParams::default();
    while_olm_settles("creating the sample cluster", || clusters.create(&post, &object)).await;

    // OLM re-creates a deleted CSV while the InstallPlan that made it is still executing, so
    // the uninstall starts once the plan is Complete, as an administrator's would.
    let subscription = value(
        &olm_api(&env.client, OPERATORS_NAMESPACE, "Subscription", "subscriptions")
            .get(PACKAGE)
            .await
            .unwrap(),
    );
    let plan = env
        .finished_plan(subscription["status"]["installPlanRef"]["name"].as_str().unwrap())
        .await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    let subscriptions = olm_api(&env.client, OPERATORS_NAMESPACE, "Subscription", "subscriptions");
    subscriptions
        .delete(PACKAGE, &DeleteParams::default())
        .await
        .unwrap();
    // The CSV goes only once the Subscription is gone: while OLM still sees the Subscription it
    // may install its CSV again.
    eventually("the Subscription to be gone", INSTALL, || async {
        subscriptions.get(PACKAGE).await.is_err().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    olm_api(
        &env.client,
        OPERATORS_NAMESPACE,
        "ClusterServiceVersion",
        "clusterserviceversions",
    )
    .delete(&csv_name(HEAD), &DeleteParams::default())
    .await
    .unwrap();
    env.gone(&csv_name(HEAD)).await;
    env.deployment_gone().await;
    env.want(None).await;
    for crd in env.conversion_unhooked().await {
        println!(
            "{} after uninstall: conversion {:?}",
            crd.metadata.name.unwrap_or_default(),
            crd.spec.conversion.map(|c| c.strategy)
        );
    }
    let kept = tusk_api(&env.client, &namespace, "PostgresCluster", "v1")
        .get(sample["metadata"]["name"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(value(&kept)["spec"], sample["spec"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olm_refuses_an_upgrade_that_drops_a_stored_version() {
    let mut env = OlmCluster::start(tusk_operator()).await;
    // 0.1.0 stores v1alpha1; the next release replaces it and serves v1alpha1 no more.
    let next = inputs_with_drop("0.1.0");
    env.serve(&catalog_files(&[catalog::blobs(&next, true)])).await;
    env.subscribe(PACKAGE, "candidate", true, Some(&csv_name("0.1.0")))
        .await;
    env.approve(&csv_name("0.1.0")).await;
    env.succeeded(&csv_name("0.1.0")).await;
    let written = Written::create(&env).await;

    // `cargo xtask validate` refuses that catalog before it is published...
    let refused = validation_errors(&next);
    let expected = format!(
        "tusk-operator.v{NEXT} drops postgresclusters.tusk.dev v1alpha1, which objects may still be stored in after upgrading from tusk-operator.v0.1.0"
    );
    assert!(refused.iter().any(|f| f.contains(&expected)), "{refused:#?}");

    // ...and OLM refuses the upgrade.
    let plan = env.approve(&csv_name(NEXT)).await;
    assert_eq!(plan["status"]["phase"], "Failed", "{:#}", plan["status"]);
    let message = plan["status"]["message"].as_str().unwrap_or_default().to_owned()
        + &plan["status"]["conditions"].to_string();
    assert!(
        message.contains("risk of data loss updating")
            && message.contains(
                "new CRD removes version v1alpha1 that is listed as a stored version on the existing CRD"
            ),
        "{message}"
    );
    println!("OLM: {message}");
    // Nothing was lost: 0.1.0 is still installed (OLM marks it as being replaced), NEXT never
    // succeeded, the CRDs still serve v1alpha1, and every object reads back.
    let old = env.csv(&csv_name("0.1.0")).await.unwrap();
    let new = env.csv(&csv_name(NEXT)).await;
    println!(
        "OLM: {} is {}, {} is {}",
        csv_name("0.1.0"),
        old["status"]["phase"],
        csv_name(NEXT),
        new.as_ref()
            .map(|c| c["status"]["phase"].to_string())
            .unwrap_or_else(|| "absent".into())
    );
    assert!(
        matches!(old["status"]["phase"].as_str(), Some("Succeeded" | "Replacing")),
        "{:#}",
        old["status"]
    );
    assert!(new.is_none_or(|c| c["status"]["phase"] != "Succeeded"));
    written.check(&env, &served(&next, "0.1.0")).await;
}

/// OLM v0 installs and upgrades Tusk from images, as a cluster pulls them: the catalog image in a
/// registry on loopback, run as its own `opm serve` of its `/configs`, whose bundles are images
/// referenced by digest, none inlined. Each bundle reaches OLM through a real unpack Job: the
/// Job controller makes its pod, and its containers run as local processes (OLM's `cpb` in the
/// bundle image pulled by that digest, then `opm alpha bundle extract` as the pod's
/// ServiceAccount); OLM installs what they wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_and_upgrades_from_the_catalog_image_through_real_unpack_jobs() {
    let registry = tusk_testenv::registry::Registry::start().await.unwrap();
    let host = registry.host();
    let mut inputs = Inputs::load(&repo()).unwrap();
    let pushed = push_images(&mut inputs, &registry).await;

    let mut env = OlmCluster::start(tusk_operator()).await;
    env.run_unpack_pods().await;
    let catalog_image = env.serve_image(pushed.last().unwrap()).await;
    // What the catalog image serves: every bundle an image in the registry, by digest.
    let served: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(catalog_image.path(&format!("/configs/{PACKAGE}/catalog.yaml"))).unwrap(),
    )
    .unwrap();
    let bundle_image = |version: &str| -> String {
        let bundle = served
            .iter()
            .find(|b| b["schema"] == "olm.bundle" && b["name"] == csv_name(version))
            .unwrap_or_else(|| panic!("no bundle {version} in the catalog image"));
        assert!(
            bundle["properties"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["type"] != "olm.bundle.object"),
            "{version} is not inlined"
        );
        bundle["image"].as_str().unwrap().to_owned()
    };
    for version in ["1.0.0", "1.1.0"] {
        let image = bundle_image(version);
        assert!(
            image.starts_with(&format!("{host}/tusk/tusk-operator-bundle@sha256:")),
            "{image}"
        );
        assert!(pushed.contains(&image), "{image} was pushed: {pushed:#?}");
    }

    env.subscribe(PACKAGE, "stable", true, Some(&csv_name("1.0.0")))
        .await;
    env.approve(&csv_name("1.0.0")).await;
    env.succeeded(&csv_name("1.0.0")).await;
    let plan = env.approve(&csv_name("1.1.0")).await;
    assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
    let csv = env.succeeded(&csv_name("1.1.0")).await;
    // The CSV OLM installed is the one in the bundle image: the open release's date, its images.
    let open = inputs.plan.releases.last().unwrap();
    assert_eq!(
        csv["metadata"]["annotations"]["createdAt"],
        format!("{}T00:00:00Z", open.date)
    );
    assert_eq!(
        csv["metadata"]["annotations"]["containerImage"],
        format!("{host}/tusk/tusk-operator:1.1.0")
    );

    // The console's view of an image-based catalog: packageserver shows each channel head's CSV
    // from the catalog's olm.csv.metadata, without unpacking its bundle image.
    let manifest = env.package_manifest().await;
    let stable = manifest.data["status"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stable")
        .unwrap()
        .clone();
    assert_eq!(stable["currentCSV"], csv_name("1.1.0"));
    for field in [
        "displayName",
        "description",
        "provider",
        "installModes",
        "keywords",
    ] {
        assert_eq!(
            stable["currentCSVDesc"][field], csv["spec"][field],
            "the console's {field}"
        );
    }
    assert_eq!(
        stable["currentCSVDesc"]["annotations"]["createdAt"],
        csv["metadata"]["annotations"]["createdAt"]
    );

    // Each bundle went through its own unpack Job, which completed, and whose pod pulled the
    // bundle image by digest.
    let ran = env.run_unpack_pods().await.ran();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(env.client.clone(), tusk_testenv::olm::OLM_NAMESPACE);
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), tusk_testenv::olm::OLM_NAMESPACE);
    for version in ["1.0.0", "1.1.0"] {
        let image = bundle_image(version);
        let pod = ran
            .iter()
            .find(|r| r.image == image)
            .unwrap_or_else(|| panic!("no unpack pod pulled {image}: {ran:#?}"));
        assert_eq!(pod.outcome, Ok(()), "{pod:#?}");
        assert_eq!(Some(pod.digest.as_str()), image.split_once('@').map(|(_, d)| d));
        let job = jobs.get(&pod.config_map).await.unwrap();
        let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True"),
            "{conditions:#?}"
        );
        let written = config_maps.get(&pod.config_map).await.unwrap();
        let keys: Vec<String> = written
            .data
            .unwrap_or_default()
            .into_keys()
            .chain(written.binary_data.unwrap_or_default().into_keys())
            .collect();
        assert!(
            keys.iter().any(|k| k.contains("clusterserviceversion")),
            "{version}: {keys:?}"
        );
        println!(
            "OLM unpacked {version} from {image} in Job {} ({} files)",
            pod.config_map,
            keys.len()
        );
    }
    assert_eq!(ran.len(), 2, "one unpack pod per bundle installed: {ran:#?}");
}
