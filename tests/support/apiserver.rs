//! Tusk's CRDs on the real control plane from `tusk-testenv`, converting through Tusk's webhook
//! server, which runs in the test process on 127.0.0.1.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, PostParams},
    core::GroupVersionKind,
};
use tusk::{
    crd::{ConversionWebhook, WebhookEndpoint},
    webhook::{
        server::{Config, Server},
        tls::CertFiles,
    },
};
use tusk_testenv::{ControlPlane, Wait, eventually, pki::Ca};

/// Every kind, its plural (from Tusk's registry of kinds), and the versions it serves, oldest
/// first (what the tests expect of the CRDs).
pub const KINDS: &[(&str, &str, &[&str])] = {
    use tusk::facts::kinds::*;
    &[
        (
            POSTGRES_CLUSTER.kind,
            POSTGRES_CLUSTER.plural,
            &["v1alpha1", "v1beta1", "v1"],
        ),
        (POSTGRES_USER.kind, POSTGRES_USER.plural, &["v1alpha1", "v1"]),
        (
            POSTGRES_DATABASE.kind,
            POSTGRES_DATABASE.plural,
            &["v1alpha1", "v1"],
        ),
        (POSTGRES_BACKUP.kind, POSTGRES_BACKUP.plural, &["v1alpha1", "v1"]),
        (
            POSTGRES_BACKUP_SCHEDULE.kind,
            POSTGRES_BACKUP_SCHEDULE.plural,
            &["v1alpha1", "v1"],
        ),
    ]
};

/// The URL of Tusk's webhook and the CA that signed its certificate.
pub struct Webhook {
    pub url: String,
    pub ca_pem: String,
}

/// Starts Tusk's conversion webhook server on 127.0.0.1 for the rest of the test process, on a
/// thread and runtime of its own, and returns how to reach it.
pub fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        let ca = Ca::new("tusk webhook test CA");
        let cert = ca.loopback_serving_cert("tusk-webhook");
        let dir: PathBuf = tempfile::tempdir().unwrap().keep();
        std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
        std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(Config {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    cert_files: CertFiles {
                        cert: dir.join("tls.crt"),
                        key: dir.join("tls.key"),
                    },
                    ..Config::default()
                })
                .await
                .unwrap();
                tx.send(server.local_addr().port()).unwrap();
                server.run(std::future::pending()).await;
            });
        });
        let port = rx.recv().expect("the webhook server starts");
        Webhook {
            url: format!("https://127.0.0.1:{port}{}", tusk::facts::operator::CONVERT_PATH),
            ca_pem: ca.cert_pem(),
        }
    })
}

/// Tusk's CRDs with conversion pointed at the test's webhook.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let webhook = webhook();
    tusk::crd::crds(&ConversionWebhook {
        endpoint: WebhookEndpoint::Url(webhook.url.clone()),
        ca_bundle: Some(webhook.ca_pem.as_bytes().to_vec()),
    })
}

/// Creates (or replaces) `crds` and waits until every one is Established.
pub async fn install(client: &Client, crds: &[CustomResourceDefinition]) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap();
        match api.get_opt(&name).await.unwrap() {
            None => {
                api.create(&PostParams::default(), crd).await.unwrap();
            }
            Some(current) => {
                let mut crd = crd.clone();
                crd.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &crd).await.unwrap();
            }
        }
    }
    for crd in crds {
        wait_established(&api, crd.metadata.name.as_deref().unwrap()).await;
    }
}

pub async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) {
    eventually(
        &format!("CRD {name} to be Established"),
        Wait::up_to(Duration::from_secs(60)).every(Duration::from_millis(100)),
        async || {
            let crd = api.get(name).await.unwrap();
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                Ok(())
            } else {
                Err(format!("conditions {conditions:?}"))
            }
        },
    )
    .await;
}

/// The API of `kind` at `version` in `namespace`.
pub fn api(client: &Client, namespace: &str, kind: &str, version: &str) -> Api<DynamicObject> {
    let (_, plural, _) = KINDS.iter().find(|(k, _, _)| *k == kind).unwrap();
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(tusk::api::GROUP, version, kind), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The control plane of this test binary with Tusk's CRDs installed, started once.
pub async fn plane_with_crds() -> &'static ControlPlane {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let plane = tusk_testenv::shared();
    INSTALLED
        .get_or_init(|| async {
            let client = plane.client().await.unwrap();
            install(&client, &crds()).await;
        })
        .await;
    plane
}

/// The namespace and ServiceAccount the operator runs as in tests: a plain install's.
pub use tusk::facts::operator::{NAME as OPERATOR_ACCOUNT, NAMESPACE as OPERATOR_NAMESPACE};

/// The operator's requests in namespace `ns` among `events`, as `verb resource/name`.
pub fn operator_requests(events: &[serde_json::Value], ns: &str) -> Vec<String> {
    let operator_user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}");
    events
        .iter()
        // A request is logged at ResponseComplete; a watch also at ResponseStarted.
        .filter(|e| e["stage"] != "ResponseStarted")
        .filter(|e| e["user"]["username"] == operator_user.as_str() && e["objectRef"]["namespace"] == ns)
        .map(|e| {
            format!(
                "{} {}/{}",
                e["verb"].as_str().unwrap_or_default(),
                e["objectRef"]["resource"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// A kubeconfig for the operator's ServiceAccount, bound to exactly the ClusterRole built from
/// `tusk::rbac`, so tests run the operator with least privilege, never as admin.
pub async fn operator_kubeconfig(plane: &ControlPlane) -> PathBuf {
    plane
        .service_account_kubeconfig(
            OPERATOR_NAMESPACE,
            OPERATOR_ACCOUNT,
            &tusk::rbac::cluster_role(OPERATOR_ACCOUNT),
        )
        .await
        .unwrap()
}

/// A `tusk-operator run` the test started, with its status port and log file.
pub struct Operator {
    /// The supervised process; it cannot outlive the test binary.
    pub process: tusk_testenv::process::Supervised,
    /// Port of `/healthz` and `/readyz` on 127.0.0.1.
    pub status_port: u16,
    /// Port of `/metrics` (HTTPS, with a token) on 127.0.0.1.
    pub metrics_port: u16,
    /// The CA of its serving certificate (DER).
    pub ca_der: Vec<u8>,
    /// Port of the conversion webhook on 127.0.0.1.
    pub webhook_port: u16,
    /// The directory of its serving certificate (`tls.crt`, `tls.key`).
    pub cert_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Its `--sql-endpoints` file; [`Operator::map_cluster`] adds to it.
    pub sql_endpoints: PathBuf,
}

impl Operator {
    /// Its `/metrics`, read over HTTPS with a token that may (see
    /// [`super::https::metrics_reader_token`]).
    pub async fn metrics(&self) -> Result<String, String> {
        let connector = super::https::client(&self.ca_der, &[]);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        let token = super::https::metrics_reader_token().await;
        match super::https::get(&connector, address, "/metrics", Some(token)).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("/metrics answered {status}: {body}")),
        }
    }

    /// Makes the operator reach `namespace`/`cluster` at `address` (loopback).
    pub fn map_cluster(&self, namespace: &str, cluster: &str, address: std::net::SocketAddr) {
        map_endpoint(&self.sql_endpoints, namespace, cluster, address);
    }

    /// Makes the operator reach the instance manager of `namespace`/`cluster`'s pod `pod` at
    /// `address` (loopback).
    pub fn map_instance(&self, namespace: &str, cluster: &str, pod: &str, address: std::net::SocketAddr) {
        self.map_cluster(namespace, &format!("{cluster}/{pod}"), address);
    }
}

/// Adds `namespace/cluster address` to the operator's `--sql-endpoints` file `file`: the operator
/// reaches `cluster` (or, as `cluster/pod`, that pod's instance manager) at `address` (loopback).
pub fn map_endpoint(file: &std::path::Path, namespace: &str, cluster: &str, address: std::net::SocketAddr) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    writeln!(file, "{namespace}/{cluster} {address}").unwrap();
}

/// Starts the real operator binary as `name` on loopback with its generated RBAC (never admin),
/// a serving certificate from a fresh CA, `RUST_LOG=rust_log`, and `extra_args` after the common
/// ones.
pub async fn start_operator(
    plane: &ControlPlane,
    name: &str,
    extra_args: &[String],
    rust_log: &str,
) -> Operator {
    start_operator_with_env(plane, name, extra_args, rust_log, &[]).await
}

/// [`start_operator`] with more environment variables, such as a proxy's.
pub async fn start_operator_with_env(
    plane: &ControlPlane,
    name: &str,
    extra_args: &[String],
    rust_log: &str,
    env: &[(&str, &str)],
) -> Operator {
    use tusk_testenv::control_plane::free_port;
    let kubeconfig = operator_kubeconfig(plane).await;
    let dir = tempfile::tempdir().unwrap().keep();
    let ca = Ca::new("operator test CA");
    let cert = ca.loopback_serving_cert(tusk::facts::operator::NAME);
    std::fs::write(dir.join("tls.crt"), cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), cert.key_pem).unwrap();
    let status_port = free_port().unwrap();
    let metrics_port = free_port().unwrap();
    let webhook_port = free_port().unwrap();
    // Clusters whose pods run locally are added as tests start their PostgreSQL; until then the
    // map is empty, and the operator never looks up in-cluster Service names.
    let sql_endpoints = dir.join("sql-endpoints");
    std::fs::write(&sql_endpoints, "").unwrap();
    let mut args = vec![
        "run".to_owned(),
        format!("--listen=127.0.0.1:{webhook_port}"),
        format!("--cert-dir={}", dir.display()),
        format!("--status-listen=127.0.0.1:{status_port}"),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
        format!("--leader-election-namespace={OPERATOR_NAMESPACE}"),
        format!("--sql-endpoints={}", sql_endpoints.display()),
    ];
    args.extend_from_slice(extra_args);
    let process = tusk_testenv::process::Supervised::spawn_with_env(
        &dir,
        name,
        env!("CARGO_BIN_EXE_tusk-operator").as_ref(),
        &args,
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("RUST_LOG", rust_log.as_ref()),
        ]
        .into_iter()
        .chain(env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(v))))
        .collect::<Vec<_>>(),
    )
    .unwrap();
    Operator {
        process,
        status_port,
        metrics_port,
        ca_der: ca.cert_der(),
        webhook_port,
        cert_dir: dir.clone(),
        log: dir.join("logs").join(format!("{name}.log")),
        sql_endpoints,
    }
}
