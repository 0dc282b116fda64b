//! The `PostgresCluster` controller on the real control plane: the real `tusk-operator run`
//! binary creates every child with owner references, kwok runs the pods, the status goes Ready,
//! scaling and a parameter change roll through, and deletion keeps or removes the volumes as the
//! cluster's reclaim policy says. The operator runs with only its generated RBAC, and the pods
//! are admitted at the `restricted` Pod Security level.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::apiserver::{OPERATOR_NAMESPACE, Operator, operator_requests, plane_with_crds, start_operator};
use tusk::api::postgres_cluster::v1::PostgresCluster;
use tusk_testenv::{eventually, process::Supervised};

/// The operator's resync interval in these tests, short so that steady state can be watched.
const RESYNC_SECONDS: u64 = 3;

/// Starts the operator once for this test binary, with only its generated RBAC.
async fn operator(plane: &tusk_testenv::ControlPlane) -> &'static Supervised {
    &running(plane).await.process
}

/// The operator of this test binary, started on first use.
async fn running(plane: &tusk_testenv::ControlPlane) -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            let args = [format!("--resync-interval={RESYNC_SECONDS}s")];
            start_operator(plane, "tusk-operator", &args, "info,kube=warn").await
        })
        .await
}

/// A namespace for one test, where pods must meet the `restricted` Pod Security level.
async fn restricted_namespace(plane: &tusk_testenv::ControlPlane, prefix: &str) -> String {
    let ns = plane.namespace(prefix).await.unwrap();
    let client = plane.client().await.unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
            ),
        )
        .await
        .unwrap();
    // The level is enforced: a pod that ignores it is refused.
    let bare: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(plane.client().await.unwrap(), &ns)
        .create(&PostParams::default(), &bare)
        .await
        .expect_err("a pod without a restricted security context is refused");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted:latest\""),
        "{refused}"
    );
    ns
}

fn cluster(name: &str, instances: i32, reclaim: &str) -> PostgresCluster {
    serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {
            "postgres": {"version": 17, "parameters": {"work_mem": "8MB"}},
            "instances": instances,
            "storage": {"data": {"size": "1Gi"}, "reclaimPolicy": reclaim},
        },
    }))
    .unwrap()
}

/// Waits until the cluster is Ready with `instances` ready instances and its status is current.
async fn wait_ready(api: &Api<PostgresCluster>, name: &str, instances: i32) -> PostgresCluster {
    eventually(
        &format!("{name} Ready with {instances} instances"),
        Duration::from_secs(180),
        || async {
            let c = api.get(name).await.ok()?;
            let status = c.status.clone()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == tusk::api::common::ConditionStatus::True);
            (ready
                && status.ready_instances == Some(instances)
                && status.instances == Some(instances)
                && status.observed_generation == c.metadata.generation)
                .then_some(c)
        },
    )
    .await
}

async fn owned_by<K>(client: &Client, ns: &str, name: &str, owner: &PostgresCluster) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let child = Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
    let refs = child.meta().owner_references.clone().unwrap_or_default();
    assert!(
        refs.iter().any(|r| r.uid == owner.uid().unwrap()
            && r.controller == Some(true)
            && r.kind == "PostgresCluster"),
        "{} {name} is not controlled by the cluster: {refs:?}",
        K::kind(&())
    );
    child
}

async fn password(client: &Client, ns: &str, name: &str) -> Vec<u8> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{name}-superuser"))
        .await
        .unwrap();
    secret.data.unwrap()["password"].0.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_created_scaled_reconfigured_and_deleted() {
    let plane = plane_with_crds().await;
    let operator = operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "lifecycle").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("db", 1, "Delete"))
        .await
        .unwrap();

    // Create: every child, controlled by the cluster, and Ready.
    let db = wait_ready(&clusters, "db", 1).await;
    assert!(operator.alive(), "{}", operator.log_tail(40));
    owned_by::<Secret>(&client, &ns, "db-superuser", &db).await;
    let config: ConfigMap = owned_by(&client, &ns, "db-config", &db).await;
    owned_by::<ServiceAccount>(&client, &ns, "db", &db).await;
    for service in ["db-rw", "db-ro", "db-pods"] {
        owned_by::<Service>(&client, &ns, service, &db).await;
    }
    owned_by::<PodDisruptionBudget>(&client, &ns, "db", &db).await;
    let sts: StatefulSet = owned_by(&client, &ns, "db", &db).await;
    assert!(config.data.unwrap()["postgresql.conf"].contains("work_mem = '8MB'"));
    assert_eq!(
        db.status.as_ref().unwrap().current_primary.as_deref(),
        Some("db-0")
    );
    // The superuser Secret is the cluster's servicebinding.io binding.
    assert_eq!(
        db.status
            .as_ref()
            .unwrap()
            .binding
            .as_ref()
            .map(|b| b.name.as_str()),
        Some("db-superuser")
    );
    let binding = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db-superuser")
        .await
        .unwrap();
    let entry = |k: &str| String::from_utf8(binding.data.as_ref().unwrap()[k].0.clone()).unwrap();
    assert_eq!(
        (entry("type"), entry("host"), entry("port"), entry("username")),
        (
            "postgresql".to_owned(),
            format!("db-rw.{ns}.svc"),
            "5432".to_owned(),
            "postgres".to_owned()
        )
    );
    // db-0 holds the primary's Lease, but no instance manager runs here (kwok plays the kubelet),
    // so nothing says it accepts writes: it is not labelled primary, and -rw selects nobody.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let primary = pods.get("db-0").await.unwrap();
    assert_eq!(
        primary.labels().get("tusk.dev/role").map(String::as_str),
        Some("replica")
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("db-primary")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("db-0"),
        "the first pod bootstraps"
    );
    let first_password = password(&client, &ns, "db").await;
    assert_eq!(first_password.len(), 32);

    // Scale 1 -> 3 -> 1.
    let scale = |n: i32| json!({"spec": {"instances": n}});
    clusters
        .patch("db", &PatchParams::default(), &Patch::Merge(scale(3)))
        .await
        .unwrap();
    wait_ready(&clusters, "db", 3).await;
    for replica in ["db-1", "db-2"] {
        let pod = pods.get(replica).await.unwrap();
        assert_eq!(
            pod.labels().get("tusk.dev/role").map(String::as_str),
            Some("replica"),
            "{replica}"
        );
    }
    clusters
        .patch("db", &PatchParams::default(), &Patch::Merge(scale(1)))
        .await
        .unwrap();
    wait_ready(&clusters, "db", 1).await;

    // A parameter change rewrites the ConfigMap and rolls the pods.
    let before = pods.get("db-0").await.unwrap().uid();
    let hash_before = sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone();
    clusters
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"postgres": {"parameters": {"work_mem": "64MB"}}}})),
        )
        .await
        .unwrap();
    let configs = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    eventually("the ConfigMap to change", Duration::from_secs(60), || async {
        let c = configs.get("db-config").await.ok()?;
        c.data?["postgresql.conf"]
            .contains("work_mem = '64MB'")
            .then_some(())
    })
    .await;
    eventually("pod db-0 to be replaced", Duration::from_secs(120), || async {
        let pod = pods.get_opt("db-0").await.ok()??;
        (pod.uid() != before).then_some(())
    })
    .await;
    let db = wait_ready(&clusters, "db", 1).await;
    let sts: StatefulSet = owned_by(&client, &ns, "db", &db).await;
    assert_ne!(
        sts.spec.unwrap().template.metadata.unwrap().annotations,
        hash_before
    );
    assert_eq!(
        password(&client, &ns, "db").await,
        first_password,
        "the password never changes"
    );

    // Delete with reclaimPolicy Delete: the children and the volume go.
    clusters.delete("db", &DeleteParams::default()).await.unwrap();
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    eventually(
        "the children and the PVC to be gone",
        Duration::from_secs(120),
        || async {
            let sts_gone = statefulsets.get_opt("db").await.ok()?.is_none();
            let secret_gone = Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt("db-superuser")
                .await
                .ok()?
                .is_none();
            let pvc_gone = claims.get_opt("data-db-0").await.ok()?.is_none();
            (sts_gone && secret_gone && pvc_gone).then_some(())
        },
    )
    .await;
    assert!(operator.alive(), "{}", operator.log_tail(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_with_reclaim_policy_retain_keeps_its_volumes() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "retain").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("keep", 2, "Retain"))
        .await
        .unwrap();
    wait_ready(&clusters, "keep", 2).await;
    clusters.delete("keep", &DeleteParams::default()).await.unwrap();
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    eventually(
        "the StatefulSet to be collected",
        Duration::from_secs(120),
        || async { statefulsets.get_opt("keep").await.ok()?.is_none().then_some(()) },
    )
    .await;
    // Give the garbage collector time to do anything it would do to the claims.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    for claim in ["data-keep-0", "data-keep-1"] {
        let pvc = claims
            .get(claim)
            .await
            .unwrap_or_else(|e| panic!("{claim} was removed: {e}"));
        assert!(
            pvc.metadata.deletion_timestamp.is_none(),
            "{claim} is being deleted"
        );
    }
}

/// A converged cluster's resync sends the apiserver nothing, not even a read: what it applied,
/// its Secrets, its StatefulSet and its pods are known from the watches. A child changed by hand
/// is still seen at once, read once and put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_cluster_costs_no_request_on_resync_and_drift_is_repaired() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "steady").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("calm", 2, "Delete"))
        .await
        .unwrap();
    wait_ready(&clusters, "calm", 2).await;
    // Let events from getting there settle, then watch several resyncs: each one reconciles the
    // cluster (the reconcile counter moves), and none sends a request.
    tokio::time::sleep(Duration::from_secs(2 * RESYNC_SECONDS)).await;
    let operator = running(plane).await;
    let reconciles = || async {
        let text = operator.metrics().await.unwrap();
        let line = "tusk_reconciles_total{kind=\"PostgresCluster\"} ";
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .expect("the reconcile counter");
        count.parse::<f64>().unwrap()
    };
    let (before, mark) = (reconciles().await, plane.audit_events().len());
    tokio::time::sleep(Duration::from_secs(4 * RESYNC_SECONDS)).await;
    let requests = operator_requests(&plane.audit_events()[mark..], &ns);
    let after = reconciles().await;
    assert!(
        after >= before + 3.0,
        "the cluster was reconciled at each resync: {before} then {after}"
    );
    assert!(
        requests.is_empty(),
        "requests in {} s of steady state ({} reconciles): {requests:#?}",
        4 * RESYNC_SECONDS,
        after - before
    );

    // Drift: the ConfigMap edited by hand is put back, with one read and one apply.
    let configs = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let want = configs.get("calm-config").await.unwrap().data;
    let mark = plane.audit_events().len();
    configs
        .patch(
            "calm-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"postgresql.conf": "work_mem = '1GB'"}})),
        )
        .await
        .unwrap();
    eventually("the ConfigMap put back", Duration::from_secs(30), || async {
        (configs.get("calm-config").await.ok()?.data == want).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2 * RESYNC_SECONDS)).await;
    let requests = operator_requests(&plane.audit_events()[mark..], &ns);
    let config = |verb: &str| {
        requests
            .iter()
            .filter(|r| *r == &format!("{verb} configmaps/calm-config"))
            .count()
    };
    assert_eq!(
        (config("get"), config("patch")),
        (1, 1),
        "one read and one apply repair the ConfigMap: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.ends_with(" configmaps/calm-config") || r.contains(" events/")),
        "nothing else is read or written: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_freezes_the_children_until_unpaused() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "paused").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("frozen", 1, "Delete"))
        .await
        .unwrap();
    wait_ready(&clusters, "frozen", 1).await;
    let set = |patch: serde_json::Value| {
        let clusters = clusters.clone();
        async move {
            clusters
                .patch(
                    "frozen",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": patch})),
                )
                .await
                .unwrap()
        }
    };
    set(json!({"paused": true, "postgres": {"parameters": {"work_mem": "99MB"}}})).await;
    let reason = |c: &PostgresCluster, t: &str| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t).map(|c| c.reason.clone()))
    };
    eventually("Progressing=Paused", Duration::from_secs(30), || async {
        let c = clusters.get("frozen").await.ok()?;
        (reason(&c, "Progressing").as_deref() == Some("Paused")
            && c.status.as_ref()?.observed_generation == c.metadata.generation)
            .then_some(())
    })
    .await;
    // Several resyncs later the ConfigMap still has the old value.
    tokio::time::sleep(Duration::from_secs(3 * RESYNC_SECONDS)).await;
    let configs = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let conf = configs.get("frozen-config").await.unwrap().data.unwrap()["postgresql.conf"].clone();
    assert!(
        conf.contains("work_mem = '8MB'") && !conf.contains("99MB"),
        "{conf}"
    );
    set(json!({"paused": false})).await;
    eventually(
        "the change to apply once unpaused",
        Duration::from_secs(30),
        || async {
            let c = configs.get("frozen-config").await.ok()?;
            c.data?["postgresql.conf"]
                .contains("work_mem = '99MB'")
                .then_some(())
        },
    )
    .await;
    wait_ready(&clusters, "frozen", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_secret_tusk_cannot_use_shows_as_degraded_until_fixed() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "badsecret").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let bad: Secret = serde_json::from_value(json!({
        "metadata": {"name": "odd-superuser"},
        "data": {"username": "cG9zdGdyZXM=", "password": "/w=="},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &bad).await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("odd", 1, "Delete"))
        .await
        .unwrap();
    let degraded = eventually("Degraded=InvalidSecret", Duration::from_secs(30), || async {
        let c = clusters.get("odd").await.ok()?;
        c.status?.conditions?.into_iter().find(|c| {
            c.type_ == "Degraded"
                && c.status == tusk::api::common::ConditionStatus::True
                && c.reason == "InvalidSecret"
        })
    })
    .await;
    assert!(
        degraded
            .message
            .contains("Secret odd-superuser: data.password is not UTF-8"),
        "{}",
        degraded.message
    );
    assert!(
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt("odd")
            .await
            .unwrap()
            .is_none(),
        "nothing is built on a Secret Tusk cannot read"
    );
    secrets
        .delete("odd-superuser", &DeleteParams::default())
        .await
        .unwrap();
    let c = wait_ready(&clusters, "odd", 1).await;
    let degraded = c
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "AsExpected");
}

/// `kubectl create secret generic` makes an `Opaque` Secret, and the apiserver refuses to change a
/// Secret's type: a superuser Secret and a TLS Secret the user made that way keep their type and
/// what they hold (the password, a key of their own), and the cluster comes up on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_the_user_made_keep_their_type_and_what_they_hold() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "ownsecret").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "mine-superuser"},
        "stringData": {"username": "postgres", "password": "chosen-by-the-user"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &theirs).await.unwrap();
    // The TLS Secret too, which Tusk makes as kubernetes.io/tls.
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "mine-tls"},
        "stringData": {"note": "made before the cluster"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &theirs).await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("mine", 1, "Delete"))
        .await
        .unwrap();
    let c = wait_ready(&clusters, "mine", 1).await;
    assert_eq!(
        c.status.and_then(|s| s.binding).map(|b| b.name).as_deref(),
        Some("mine-superuser")
    );
    let kept = secrets.get("mine-superuser").await.unwrap();
    assert_eq!(
        kept.type_.as_deref(),
        Some("Opaque"),
        "the type the user chose is kept"
    );
    let data = kept.data.unwrap();
    assert_eq!(
        data["password"].0, b"chosen-by-the-user",
        "the user's password is kept"
    );
    assert!(
        String::from_utf8(data["uri"].0.clone())
            .unwrap()
            .contains("chosen-by-the-user"),
        "the binding's entries are added to it"
    );
    let kept = secrets.get("mine-tls").await.unwrap();
    assert_eq!(
        kept.type_.as_deref(),
        Some("Opaque"),
        "the TLS Secret keeps its type"
    );
    let data = kept.data.unwrap();
    assert_eq!(
        data["note"].0, b"made before the cluster",
        "what the user stored is kept"
    );
    assert!(
        data.contains_key("tls.crt") && data.contains_key("tls.key"),
        "the server certificate is added to it: {:?}",
        data.keys()
    );
}

/// A child the apiserver refuses (here an admission policy that takes no headless Service in the
/// namespace) is named in the cluster's status with the apiserver's reason, not only in the
/// operator's log; once the policy is gone, the cluster comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_the_apiserver_refuses_is_told_in_the_status() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "refused").await;
    let policy_name = format!("no-headless-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": policy_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["services"],
            }]},
            "validations": [{
                "expression": "!object.metadata.name.endsWith('-pods')",
                "message": "this namespace takes no headless Service",
            }],
        },
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": policy_name},
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }))
    .unwrap();
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    // The policy is in force once the apiserver refuses such a Service.
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe: Service = serde_json::from_value(json!({
        "metadata": {"name": "probe-pods"},
        "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
    }))
    .unwrap();
    eventually("the policy in force", Duration::from_secs(30), async || {
        services.create(&dry_run, &probe).await.is_err().then_some(())
    })
    .await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("held", 1, "Delete"))
        .await
        .unwrap();
    let degraded = degraded_with(&clusters, "held", "ChildRefused").await;
    assert_eq!(degraded.status, tusk::api::common::ConditionStatus::True);
    let status = clusters.get("held").await.unwrap().status.unwrap();
    assert_eq!(
        status.observed_generation, None,
        "a spec not all applied is not claimed as observed"
    );
    assert_eq!(
        status.binding, None,
        "no binding is named before the children are made"
    );
    assert!(
        degraded.message.contains("the apiserver refused a Service")
            && degraded
                .message
                .contains("this namespace takes no headless Service"),
        "{}",
        degraded.message
    );
    // Gone the policy, the next try makes the rest; a change to the cluster brings it at once.
    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy gone", Duration::from_secs(30), async || {
        services.create(&dry_run, &probe).await.is_ok().then_some(())
    })
    .await;
    clusters
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/nudge": "1"}}})),
        )
        .await
        .unwrap();
    wait_ready(&clusters, "held", 1).await;
    owned_by::<Service>(&client, &ns, "held-pods", &clusters.get("held").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_schedules_say_what_they_wait_for_and_leave_the_spec_alone() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("backupkinds").await.unwrap();
    for (kind, name, spec, expected) in [
        (
            "PostgresBackup",
            "x",
            json!({"cluster": {"name": "db"}}),
            ("False", "ClusterNotFound", "spec.cluster.name"),
        ),
        (
            "PostgresBackupSchedule",
            "x",
            json!({"cluster": {"name": "db"}, "schedule": "@daily", "timeZone": "Europe/Paris"}),
            ("True", "Scheduled", "next run"),
        ),
        (
            "PostgresBackupSchedule",
            "mars",
            json!({"cluster": {"name": "db"}, "schedule": "@daily", "timeZone": "Mars/Olympus"}),
            ("False", "InvalidTimeZone", "spec.timeZone"),
        ),
    ] {
        let api = support::apiserver::api(&client, &ns, kind, "v1");
        let object = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": kind, "metadata": {"name": name}, "spec": spec.clone(),
        }))
        .unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
        let status = eventually(
            &format!("{kind} {name} status"),
            Duration::from_secs(30),
            || async {
                let o = api.get(name).await.ok()?;
                let status = o.data.get("status")?.clone();
                (status["observedGeneration"] == json!(1)).then_some(status)
            },
        )
        .await;
        let ready = &status["conditions"][0];
        assert_eq!(ready["type"], "Ready", "{kind} {name}");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some(expected.0), Some(expected.1)),
            "{kind} {name}: {status:#}"
        );
        let message = ready["message"].as_str().unwrap();
        if expected.2 == "next run" {
            assert!(status["nextScheduleTime"].is_string(), "{status:#}");
        } else {
            assert!(message.contains(expected.2), "{kind} {name}: {message}");
        }
        let spec_after = api.get(name).await.unwrap().data["spec"].clone();
        for (field, value) in spec.as_object().unwrap() {
            assert_eq!(&spec_after[field], value, "{kind}: spec.{field} is untouched");
        }
    }
}

/// The `Degraded` condition of `name` once its reason is `reason`.
async fn degraded_with(api: &Api<PostgresCluster>, name: &str, reason: &str) -> tusk::api::common::Condition {
    eventually(&format!("Degraded={reason}"), Duration::from_secs(30), || async {
        let c = api.get(name).await.ok()?;
        c.status?.conditions?.into_iter().find(|c| {
            c.type_ == "Degraded"
                && c.status == tusk::api::common::ConditionStatus::True
                && c.reason == reason
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_pod_would_refuse_is_degraded_never_a_crash_loop() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "pwrule").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    for (name, password, rule) in [
        ("twolines", "first\nsecond", "must be one line"),
        ("empty", "", "must not be empty"),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-superuser")},
            "stringData": {"username": "postgres", "password": password},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        clusters
            .create(&PostParams::default(), &cluster(name, 1, "Delete"))
            .await
            .unwrap();
        let degraded = degraded_with(&clusters, name, "InvalidSecret").await;
        let expected = format!("Secret {name}-superuser: data.password {rule}");
        assert!(degraded.message.contains(&expected), "{}", degraded.message);
        assert!(
            Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .unwrap()
                .is_none(),
            "no pod is given a password it would refuse"
        );
    }
    // The user is told with an Event too.
    let event = support::event(&client, &ns, "InvalidSecret", |_| true).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reporting_controller.as_deref(), Some("tusk-operator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reconcile_is_caught_counted_and_retried_while_others_are_served() {
    let plane = plane_with_crds().await;
    let operator = running(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "panic").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    // The debug build's fault hook makes this cluster's every reconcile panic.
    let mut boom = cluster("boom", 1, "Delete");
    boom.metadata.annotations = Some([("tusk.dev/fault-injection".to_owned(), "panic".to_owned())].into());
    clusters.create(&PostParams::default(), &boom).await.unwrap();
    let panics = || async {
        let metrics = operator.metrics().await.ok()?;
        metrics
            .lines()
            .find(|l| l.starts_with("tusk_reconcile_errors_total{kind=\"PostgresCluster\",error=\"panic\"}"))?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()
    };
    // Caught and retried: the count keeps growing, with backoff.
    let first = eventually("a panic counted", Duration::from_secs(30), panics).await;
    eventually(
        "the panicking cluster retried",
        Duration::from_secs(30),
        || async { panics().await.filter(|n| *n > first) },
    )
    .await;
    // Meanwhile every other object is served.
    clusters
        .create(&PostParams::default(), &cluster("calm", 1, "Delete"))
        .await
        .unwrap();
    wait_ready(&clusters, "calm", 1).await;
    assert!(
        operator.process.alive(),
        "the operator survives a panicking reconcile"
    );
    assert!(
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt("boom")
            .await
            .unwrap()
            .is_none()
    );
    // Once the fault is gone, the retried cluster converges.
    clusters
        .patch(
            "boom",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tusk.dev/fault-injection": null}}})),
        )
        .await
        .unwrap();
    wait_ready(&clusters, "boom", 1).await;
}

/// Instances spread across nodes and zones: four fake kwok Nodes in two zones, tainted so only
/// this test's pods (which tolerate the taint and select the nodes) run there. By default the
/// three instances land on three nodes in both zones; with `antiAffinity: Required` a fifth
/// instance finds no free node and stays Pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_spread_across_nodes_and_zones() {
    let plane = plane_with_crds().await;
    let _ = operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "spread").await;
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let mut made = Vec::new();
    for (suffix, zone) in [
        ("a1", "zone-a"),
        ("a2", "zone-a"),
        ("b1", "zone-b"),
        ("b2", "zone-b"),
    ] {
        let name = format!("{ns}-{suffix}");
        let node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                    "topology.kubernetes.io/zone": zone, "tusk.dev/test-pool": ns,
                },
            },
            "spec": {"taints": [{"key": "tusk.dev/test-pool", "value": ns, "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        made.push((name, zone));
    }
    let scheduling = |extra: serde_json::Value| {
        let mut s = json!({
            "nodeSelector": {"tusk.dev/test-pool": ns},
            "tolerations": [{"key": "tusk.dev/test-pool", "operator": "Equal", "value": ns, "effect": "NoSchedule"}],
        });
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    let create = |name: &str, instances: i32, scheduling: serde_json::Value| {
        serde_json::from_value::<PostgresCluster>(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": name},
            "spec": {"postgres": {"version": 17}, "instances": instances, "storage": {"data": {"size": "1Gi"}}, "scheduling": scheduling},
        }))
        .unwrap()
    };
    clusters
        .create(&PostParams::default(), &create("db", 3, scheduling(json!({}))))
        .await
        .unwrap();
    wait_ready(&clusters, "db", 3).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let placed = |prefix: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&kube::api::ListParams::default().labels(&format!("tusk.dev/cluster={prefix}")))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|p| Some((p.name_any(), p.spec?.node_name?)))
                .collect::<Vec<(String, String)>>()
        }
    };
    let db = placed("db").await;
    let on: std::collections::BTreeSet<&String> = db.iter().map(|(_, n)| n).collect();
    assert_eq!(on.len(), 3, "three nodes: {db:?}");
    let zones: std::collections::BTreeSet<&str> = db
        .iter()
        .map(|(_, node)| {
            made.iter()
                .find(|(n, _)| n == node)
                .map(|(_, z)| *z)
                .expect("one of the test's nodes")
        })
        .collect();
    assert_eq!(zones.len(), 2, "both zones: {db:?}");

    clusters
        .create(
            &PostParams::default(),
            &create("strict", 5, scheduling(json!({"antiAffinity": "Required"}))),
        )
        .await
        .unwrap();
    let pending = eventually("strict-4 unschedulable", Duration::from_secs(180), || async {
        let pod = pods.get_opt("strict-4").await.ok()??;
        pod.status?.conditions?.into_iter().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })
    })
    .await;
    let strict = placed("strict").await;
    let on: std::collections::BTreeSet<&String> = strict.iter().map(|(_, n)| n).collect();
    assert_eq!(
        (strict.len(), on.len()),
        (4, 4),
        "one instance per node: {strict:?}; {pending:?}"
    );

    for name in ["db", "strict"] {
        clusters.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (name, _) in &made {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
    }
}

/// `spec.networkPolicy`: enabled, the cluster owns a NetworkPolicy `<cluster>` that selects its
/// pods and admits its own pods, the operator, `/metrics` and the listed clients; disabled, Tusk
/// deletes the one it made and leaves a NetworkPolicy it did not make alone. (Nothing here
/// enforces NetworkPolicies: kwok runs no network plugin, so what traffic it stops is for a real
/// cluster to show.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_policy_is_kept_while_asked_for_and_removed_after() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "netpol").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    let mut guarded = cluster("guarded", 1, "Delete");
    guarded.spec.network_policy = serde_json::from_value(json!({
        "enabled": true,
        "allowedClients": [{"podSelector": {"matchLabels": {"app": "web"}}}],
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &guarded).await.unwrap();
    let guarded = wait_ready(&clusters, "guarded", 1).await;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let policy: NetworkPolicy = owned_by(&client, &ns, "guarded", &guarded).await;
    let spec = serde_json::to_value(policy.spec.unwrap()).unwrap();
    assert_eq!(
        spec["podSelector"],
        json!({"matchLabels": {"tusk.dev/cluster": "guarded"}})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 4, "{spec:#}");
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}})
    );
    assert_eq!(
        ingress[3]["from"],
        json!([{"podSelector": {"matchLabels": {"app": "web"}}}])
    );

    // Someone else's NetworkPolicy in the namespace stays whatever Tusk does.
    let foreign: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "foreign"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &foreign).await.unwrap();

    clusters
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networkPolicy": {"enabled": false}}})),
        )
        .await
        .unwrap();
    eventually(
        "the NetworkPolicy to be deleted",
        Duration::from_secs(30),
        || async { policies.get_opt("guarded").await.ok()?.is_none().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2 * RESYNC_SECONDS)).await;
    assert!(policies.get_opt("foreign").await.unwrap().is_some());
    assert!(policies.get_opt("guarded").await.unwrap().is_none());
}

/// `tls.mode: CertManager` where cert-manager's API is not served: `Degraded`, naming the field
/// and what to do, and no pod is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_mode_without_cert_manager_says_so() {
    let plane = plane_with_crds().await;
    operator(plane).await;
    let client = plane.client().await.unwrap();
    let ns = restricted_namespace(plane, "no-cert-manager").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    let mut db = cluster("db", 1, "Delete");
    db.spec.tls =
        serde_json::from_value(json!({"mode": "CertManager", "issuerRef": {"name": "corp"}})).unwrap();
    clusters.create(&PostParams::default(), &db).await.unwrap();
    let degraded = eventually(
        "Degraded CertManagerNotInstalled",
        Duration::from_secs(60),
        async || {
            let status = clusters.get("db").await.ok()?.status?;
            status
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.reason == "CertManagerNotInstalled")
        },
    )
    .await;
    assert!(
        degraded.message.starts_with(
            "spec.tls.issuerRef: tls.mode CertManager needs cert-manager, and this Kubernetes cluster \
             does not serve its Certificate API (cert-manager.io/v1)"
        ),
        "{}",
        degraded.message
    );
    let statefulsets = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), &ns);
    assert!(
        statefulsets.get_opt("db").await.unwrap().is_none(),
        "no pods without a certificate"
    );
}

/// A Secret Tusk makes when it is not there (the superuser's, the CA, the certificate) is taken
/// as absent from its watch of every Secret, without a read. Someone may have made it a moment
/// before, still unseen by that watch: Tusk's is then made with a create, which fails, never
/// with an apply, which would take theirs over (its `stringData` leaves `data` owned by no
/// field manager, so even an apply without force would), and the next read finds theirs.
#[tokio::test]
async fn a_secret_taken_as_absent_but_made_meanwhile_is_never_overwritten() {
    use futures::TryStreamExt;
    use kube::runtime::watcher;
    use tusk::controller::{apply, known::Known};

    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("unseen").await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret = |name: &str, password: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"password": password},
        }))
        .unwrap()
    };
    let known = std::sync::Arc::new(Known::new().0);
    // The watch lists, then is read no further: what happens next, it does not see.
    let mut events = Box::pin(known.note(true, watcher(secrets.clone(), watcher::Config::default())));
    while let Some(event) = events.try_next().await.unwrap() {
        if matches!(event, watcher::Event::InitDone) {
            break;
        }
    }
    let params = PostParams {
        field_manager: Some("kubectl-create".into()),
        ..PostParams::default()
    };
    secrets
        .create(&params, &secret("db-superuser", "theirs"))
        .await
        .unwrap();
    let password = |s: &Secret| s.data.as_ref().unwrap()["password"].0.clone();

    assert!(
        known
            .read_own(&secrets, &ns, "db-superuser")
            .await
            .unwrap()
            .is_none(),
        "taken as absent: the watch has not seen it"
    );
    let error = apply::ensure(&client, &known, &secret("db-superuser", "ours"))
        .await
        .expect_err("Tusk's write must not take their Secret over");
    assert!(
        matches!(&error, kube::Error::Api(status) if status.is_already_exists()),
        "{error}"
    );
    assert_eq!(password(&secrets.get("db-superuser").await.unwrap()), b"theirs");
    let read = known.read_own(&secrets, &ns, "db-superuser").await.unwrap();
    assert_eq!(
        read.as_deref().map(password),
        Some(b"theirs".to_vec()),
        "the next read asks the apiserver"
    );

    // A Secret nobody made is made by that same create.
    assert!(known.read_own(&secrets, &ns, "db-ca").await.unwrap().is_none());
    let outcome = apply::ensure(&client, &known, &secret("db-ca", "ours"))
        .await
        .unwrap();
    assert!(matches!(outcome, apply::Outcome::Created), "{outcome:?}");
    assert_eq!(password(&secrets.get("db-ca").await.unwrap()), b"ours");
}
