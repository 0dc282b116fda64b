//! The operator's HTTPS servers as OpenShift expects them, on the real control plane: the
//! conversion webhook and `/metrics` follow the cluster's TLS security profile
//! (`apiservers.config.openshift.io/cluster`, from OpenShift's own CRD) without a restart, use
//! Intermediate where that API does not exist, and `/metrics` lets in only a token that may `get`
//! it (401 without a valid token, 403 without the right).

mod support;

use std::{net::SocketAddr, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    apiserver::{Operator, api, plane_with_crds, start_operator},
    https,
    local_cluster::{LocalCluster, STATUS_PORT},
};
use tusk_testenv::{ControlPlane, eventually, postgres::Postgres};

const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;

/// Whether PostgreSQL on pod `ordinal` completes a TLS handshake with a client speaking only
/// `version` (OpenSSL's own PostgreSQL STARTTLS): `Ok(200)` when it does, for [`answers`].
fn postgres_handshake(
    pod: &LocalCluster,
    ordinal: i32,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<u16, String> {
    let flag = if version == TLS12 { "-tls1_2" } else { "-tls1_3" };
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", flag, "-connect"])
        .arg(format!("{}:5432", pod.ip(ordinal)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&out.stdout).contains("-----BEGIN CERTIFICATE-----") {
        Ok(200)
    } else {
        Err(format!(
            "PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        ))
    }
}

/// What each server answers a client speaking only `version`: the operator's webhook and
/// `/metrics`, the PostgreSQL pod's `/metrics`, and PostgreSQL itself; `Ok(status)` or the
/// handshake's error.
async fn answers(
    operator: &Operator,
    pod: &LocalCluster,
    version: &'static rustls::SupportedProtocolVersion,
) -> [Result<u16, String>; 4] {
    let client = https::client(&operator.ca_der, &[version]);
    let webhook = SocketAddr::from(([127, 0, 0, 1], operator.webhook_port));
    let metrics = SocketAddr::from(([127, 0, 0, 1], operator.metrics_port));
    let token = https::metrics_reader_token().await;
    [
        https::get(&client, webhook, "/healthz", None)
            .await
            .map(|(s, _)| s),
        https::get(&client, metrics, "/metrics", Some(token))
            .await
            .map(|(s, _)| s),
        pod.metrics_over(0, Some(token), &[version]).await.map(|(s, _)| s),
        postgres_handshake(pod, 0, version),
    ]
}

/// Waits until the three servers accept (`true`) or refuse (`false`) a client speaking only
/// `version`. The pod follows its ConfigMap, which the kubelet would sync; here the test syncs
/// the pod's volumes while it waits.
async fn until_all(
    operator: &Operator,
    pod: &LocalCluster,
    version: &'static rustls::SupportedProtocolVersion,
    accepted: bool,
) {
    let what = format!(
        "the webhook, the operator's /metrics, the pod's /metrics and PostgreSQL {} {version:?} clients",
        if accepted { "accept" } else { "refuse" }
    );
    eventually(&what, Duration::from_secs(60), async || {
        pod.sync_volumes().await;
        let got = answers(operator, pod, version).await;
        got.iter()
            .all(|a| if accepted { a == &Ok(200) } else { a.is_err() })
            .then_some(())
    })
    .await;
}

fn api_servers(client: kube::Client) -> Api<DynamicObject> {
    let (group, version, kind) = tusk::tls_profile::API_SERVER_GVK;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        tusk::tls_profile::API_SERVER_PLURAL,
    );
    Api::all_with(client, &resource)
}

/// Installs OpenShift's APIServer CRD (from github.com/openshift/api, see hack/testbin.sh).
fn install_openshift_config_crd(plane: &ControlPlane) {
    let dir = plane.toolchain().share("openshift-crds");
    let mut apply = plane.kubectl();
    apply
        .args(["apply", "--server-side", "-f"])
        .arg(format!("{}/", dir.display()));
    let out = apply.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut wait = plane.kubectl();
    wait.args([
        "wait",
        "--for=condition=Established",
        "crd/apiservers.config.openshift.io",
        "--timeout=60s",
    ]);
    let out = wait.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The operator of this test binary, started on first use. Two operators on one control plane
/// would both reconcile every cluster. Resyncs are an hour apart: what these tests see happen
/// follows from events alone.
async fn operator(plane: &'static ControlPlane) -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            start_operator(
                plane,
                "tusk-operator",
                &["--resync-interval=1h".to_owned()],
                "info,kube=warn",
            )
            .await
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webhook_and_metrics_follow_the_clusters_tls_profile_without_a_restart() {
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let operator = operator(plane).await;
    // A PostgreSQL pod, whose /metrics follow the profile through the cluster's ConfigMap.
    let postgres = Postgres::get(18).unwrap_or_else(|e| panic!("PostgreSQL 18: {e}"));
    let ns = plane.namespace("tls-profile").await.unwrap();
    let db: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "db"},
        "spec": {"postgres": {"version": 18}, "instances": 1, "storage": {"data": {"size": "1Gi"}}},
    }))
    .unwrap();
    api(&client, &ns, "PostgresCluster", "v1")
        .create(&PostParams::default(), &db)
        .await
        .unwrap();
    let mut pod = LocalCluster::new(plane, &ns, "db", postgres).await;
    operator.map_instance(&ns, "db", "db-0", SocketAddr::new(pod.ip(0), STATUS_PORT));
    pod.start(0).await;
    pod.wait_ready(0, Duration::from_secs(120)).await;
    let started = pod.pods[&0].main.pid();
    let postmaster_started = pod.postmaster_start(0).await;

    // No config.openshift.io API: Intermediate, so TLS 1.2 and 1.3 both get in.
    until_all(operator, &pod, TLS12, true).await;
    until_all(operator, &pod, TLS13, true).await;
    let pid = operator.process.pid();
    assert!(pid.is_some(), "the operator runs");

    install_openshift_config_crd(plane);
    let servers = api_servers(client.clone());
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "config.openshift.io/v1", "kind": "APIServer",
        "metadata": {"name": "cluster"},
        "spec": {"tlsSecurityProfile": {"type": "Modern", "modern": {}}},
    }))
    .unwrap();
    servers.create(&PostParams::default(), &cluster).await.unwrap();
    // Modern: TLS 1.2 is refused by every server, TLS 1.3 accepted.
    until_all(operator, &pod, TLS12, false).await;
    let refused = answers(operator, &pod, TLS12).await;
    eprintln!("Modern: a TLS 1.2 client gets {refused:?}");
    assert_eq!(
        answers(operator, &pod, TLS13).await,
        [Ok(200), Ok(200), Ok(200), Ok(200)]
    );

    // Intermediate again: TLS 1.2 gets in, with no restart.
    let intermediate =
        json!({"spec": {"tlsSecurityProfile": {"type": "Intermediate", "modern": null, "intermediate": {}}}});
    servers
        .patch("cluster", &PatchParams::default(), &Patch::Merge(&intermediate))
        .await
        .unwrap();
    until_all(operator, &pod, TLS12, true).await;
    assert_eq!(
        answers(operator, &pod, TLS13).await,
        [Ok(200), Ok(200), Ok(200), Ok(200)]
    );

    // Custom: TLS 1.3 and one cipher. TLS 1.2 is refused again.
    let modern_custom = json!({"spec": {"tlsSecurityProfile": {"type": "Custom", "intermediate": null, "custom": {
        "minTLSVersion": "VersionTLS13", "ciphers": ["TLS_AES_128_GCM_SHA256"],
    }}}});
    servers
        .patch("cluster", &PatchParams::default(), &Patch::Merge(&modern_custom))
        .await
        .unwrap();
    until_all(operator, &pod, TLS12, false).await;

    // Deleted: Intermediate.
    servers.delete("cluster", &Default::default()).await.unwrap();
    until_all(operator, &pod, TLS12, true).await;
    assert_eq!(
        pod.pods[&0].main.pid(),
        started,
        "the pod's instance manager was not restarted"
    );
    assert_eq!(
        pod.postmaster_start(0).await,
        postmaster_started,
        "the postmaster was not restarted"
    );

    assert!(operator.process.alive(), "{}", operator.process.log_tail(30));
    assert_eq!(operator.process.pid(), pid, "the operator was not restarted");
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(
        log.contains("TLS security profile applied"),
        "{}",
        operator.process.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_need_a_token_that_may_get_them() {
    let plane = plane_with_crds().await;
    let operator = operator(plane).await;
    let client = https::client(&operator.ca_der, &[]);
    let metrics = SocketAddr::from(([127, 0, 0, 1], operator.metrics_port));
    let get = async |token: Option<&str>| {
        eventually("/metrics answers", Duration::from_secs(30), async || {
            https::get(&client, metrics, "/metrics", token).await.ok()
        })
        .await
    };

    let (status, body) = get(None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(Some("not-a-token")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not valid"), "{body}");

    // A ServiceAccount that may read Pods, not /metrics.
    let reader: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }))
    .unwrap();
    let stranger = https::token_for(plane, "monitoring", "pod-reader", &reader).await;
    let (status, body) = get(Some(&stranger)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("system:serviceaccount:monitoring:pod-reader may not get /metrics"),
        "{body}"
    );

    // Bound to the bundle's metrics-reader ClusterRole: 200 and the metrics, once the
    // controllers have started (after leader election).
    let reader = https::metrics_reader_token().await;
    let (status, body) = get(Some(reader)).await;
    assert_eq!(status, 200, "{body}");
    eventually("the controllers' gauges", Duration::from_secs(30), async || {
        let (status, body) = https::get(&client, metrics, "/metrics", Some(reader))
            .await
            .ok()?;
        assert_eq!(status, 200, "{body}");
        body.contains("tusk_managed_objects{kind=\"PostgresCluster\"} 0")
            .then_some(())
    })
    .await;

    // The plain status port serves health, not metrics.
    let (status, _) = support::http_get("127.0.0.1", operator.status_port, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = support::http_get("127.0.0.1", operator.status_port, "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// A Provided Secret labelled `tusk.dev/cluster: <cluster>` (and cert-manager's Secrets, which
/// Tusk labels so) is served as soon as it changes: with an hour between resyncs, only the watch
/// on such Secrets can carry a replaced certificate into `<cluster>-tls` within a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labelled_certificate_secret_is_followed_at_once() {
    use k8s_openapi::api::core::v1::Secret;
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let operator = operator(plane).await;
    let ns = plane.namespace("labelled").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now();
    let authority = tusk::pki::new_authority(&ns, "mine", now).unwrap();
    let leaf = || {
        tusk::pki::issue(
            &authority,
            &tusk::pki::Leaf::Server(tusk::pki::server_names(&ns, "db", 1, "cluster.local")),
            k8s_openapi::jiff::Timestamp::now(),
            k8s_openapi::jiff::SignedDuration::from_hours(24),
        )
        .unwrap()
    };
    let secret = |cert: &tusk::pki::KeyedCert| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "db-certs", "labels": {"tusk.dev/cluster": "db"}},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": cert.cert, "tls.key": cert.key, "ca.crt": authority.cert},
        }))
        .unwrap()
    };
    let first = leaf();
    secrets
        .create(&PostParams::default(), &secret(&first))
        .await
        .unwrap();
    let db: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster", "metadata": {"name": "db"},
        "spec": {
            "postgres": {"version": 18}, "instances": 1, "storage": {"data": {"size": "1Gi"}},
            "tls": {"mode": "Provided", "secretName": "db-certs"},
        },
    }))
    .unwrap();
    api(&client, &ns, "PostgresCluster", "v1")
        .create(&PostParams::default(), &db)
        .await
        .unwrap();
    // Converged, so nothing but an event reconciles it again before the hour is out.
    let postgres = Postgres::get(18).unwrap_or_else(|e| panic!("PostgreSQL 18: {e}"));
    let mut pod = LocalCluster::new(plane, &ns, "db", postgres).await;
    operator.map_instance(&ns, "db", "db-0", SocketAddr::new(pod.ip(0), STATUS_PORT));
    pod.start(0).await;
    pod.wait_ready(0, Duration::from_secs(120)).await;
    let clusters = api(&client, &ns, "PostgresCluster", "v1");
    eventually("db Ready", Duration::from_secs(60), async || {
        let object = clusters.get("db").await.ok()?;
        let conditions = object.data["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let served = async |cert: &str| {
        let data = secrets.get_opt("db-tls").await.ok()??.data?;
        (data.get("tls.crt")?.0 == cert.as_bytes()).then_some(())
    };
    eventually(
        "db-tls with the first certificate",
        Duration::from_secs(60),
        async || served(&first.cert).await,
    )
    .await;
    let second = leaf();
    secrets
        .replace("db-certs", &PostParams::default(), &secret(&second))
        .await
        .unwrap();
    eventually(
        "db-tls with the replaced certificate",
        Duration::from_secs(60),
        async || served(&second.cert).await,
    )
    .await;
}
