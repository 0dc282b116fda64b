//! `cargo xtask bench-controller`: creates many `PostgresCluster` objects at once on the local
//! control plane and prints a table: the time until all are Ready, the operator's peak RSS, its
//! API requests by verb, and its writes in steady state. The operator is the release binary,
//! running with only its generated RBAC; its requests are counted from the apiserver's audit log.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};
use tusk::api::{common::ConditionStatus, postgres_cluster::v1::PostgresCluster};
use tusk_testenv::{ControlPlane, Options, control_plane::free_port, pki::Ca, process::Supervised};

const NAMESPACE: &str = "bench";
use tusk::facts::operator::{NAME as OPERATOR_ACCOUNT, NAMESPACE as OPERATOR_NAMESPACE};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Peak and current resident memory of `pid`, in KiB, from /proc.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn requests_by_verb(events: &[Value], user: &str) -> BTreeMap<String, usize> {
    let mut by_verb = BTreeMap::new();
    for event in events {
        // A watch is logged when it starts and when it ends; count each request once.
        if event["stage"] == "ResponseStarted" {
            continue;
        }
        if event["user"]["username"] == user && event["objectRef"]["resource"] != "leases" {
            *by_verb
                .entry(event["verb"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
    }
    by_verb
}

/// How many of `items` have a `Ready` condition that is `True`.
pub fn count_ready<K>(
    items: &[K],
    conditions: impl Fn(&K) -> Option<&Vec<tusk::api::common::Condition>>,
) -> usize {
    items
        .iter()
        .filter(|item| {
            conditions(item).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            })
        })
        .count()
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The release build of the operator, running with only its generated RBAC on a fresh local
/// control plane that has Tusk's CRDs (converted by the operator's webhook).
pub struct Operator {
    /// The control plane.
    pub plane: ControlPlane,
    /// The operator's process.
    pub process: Supervised,
    /// How to read its `/metrics`.
    pub metrics: MetricsReader,
}

/// Reads an operator's `/metrics` over HTTPS with a token that may.
#[derive(Clone)]
pub struct MetricsReader {
    port: u16,
    ca_der: Vec<u8>,
    token: String,
}

impl MetricsReader {
    /// The metrics text.
    pub async fn read(&self) -> Result<String, String> {
        let connector = tusk_testenv::https::client(&self.ca_der, &[]);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        match tusk_testenv::https::get(&connector, address, "/metrics", Some(&self.token)).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("/metrics answered {status}: {body}")),
        }
    }
}

/// Builds the release operator, starts the control plane, installs the CRDs, and runs the
/// operator with `--resync-interval` and the arguments `extra_args` returns; it gets the
/// operator's directory, to write files such as a `--sql-endpoints` map.
pub async fn start_operator(
    root: &Path,
    resync: u64,
    extra_args: impl FnOnce(&Path) -> Result<Vec<String>, String>,
) -> Result<Operator, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--release", "--bin", "tusk-operator"])
        .current_dir(root)
        .status()
        .map_err(err)?;
    if !status.success() {
        return Err("cargo build --release --bin tusk-operator failed".into());
    }
    let plane = ControlPlane::start(Options::default()).await.map_err(err)?;
    let client = plane.client().await.map_err(err)?;

    // The operator: release build, its own webhook (the CRDs point at it), its own RBAC.
    let ca = Ca::new("bench CA");
    let cert = ca.loopback_serving_cert("tusk-operator");
    let dir = plane.dir().join("operator");
    std::fs::create_dir_all(&dir).map_err(err)?;
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).map_err(err)?;
    std::fs::write(dir.join("tls.key"), &cert.key_pem).map_err(err)?;
    let port = free_port().map_err(err)?;
    let crds = tusk::crd::crds(&tusk::crd::ConversionWebhook {
        endpoint: tusk::crd::WebhookEndpoint::Url(format!(
            "https://127.0.0.1:{port}{}",
            tusk::facts::operator::CONVERT_PATH
        )),
        ca_bundle: Some(ca.cert_pem().into_bytes()),
    });
    let crd_api = Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(client.clone());
    for crd in &crds {
        crd_api.create(&PostParams::default(), crd).await.map_err(err)?;
    }
    let kubeconfig = plane
        .service_account_kubeconfig(
            OPERATOR_NAMESPACE,
            OPERATOR_ACCOUNT,
            &tusk::rbac::cluster_role(OPERATOR_ACCOUNT),
        )
        .await
        .map_err(err)?;
    let status_port = free_port().map_err(err)?;
    let metrics_port = free_port().map_err(err)?;
    let reader = plane
        .service_account_kubeconfig(
            "monitoring",
            "metrics-reader",
            &tusk::rbac::metrics_reader_role("metrics-reader"),
        )
        .await
        .map_err(err)?;
    let reader: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reader).map_err(err)?).map_err(err)?;
    let metrics = MetricsReader {
        port: metrics_port,
        ca_der: ca.cert_der(),
        token: reader["users"][0]["user"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let mut args = vec![
        "run".to_owned(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--cert-dir={}", dir.display()),
        format!("--status-listen=127.0.0.1:{status_port}"),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
        format!("--leader-election-namespace={OPERATOR_NAMESPACE}"),
        format!("--resync-interval={resync}s"),
    ];
    args.extend(extra_args(&dir)?);
    let process = Supervised::spawn_with_env(
        &dir,
        "tusk-operator",
        &root.join("target/release/tusk-operator"),
        &args,
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("RUST_LOG", "warn".as_ref()),
        ],
    )
    .map_err(err)?;
    Ok(Operator {
        plane,
        process,
        metrics,
    })
}

pub async fn run(
    root: &Path,
    clusters: usize,
    steady_seconds: u64,
    ready_timeout: u64,
) -> Result<(), String> {
    let resync = steady_seconds / 2;
    let Operator {
        plane,
        process: operator,
        ..
    } = start_operator(root, resync, |_| Ok(vec![])).await?;
    let client = plane.client().await.map_err(err)?;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).map_err(err)?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(err)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}");

    // All at once: 32 creates in flight at a time.
    println!("Creating {clusters} PostgresCluster objects...");
    let api = Api::<PostgresCluster>::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..clusters {
        if creates.len() >= 32 {
            creates
                .join_next()
                .await
                .expect("a create in flight")
                .map_err(err)??;
        }
        let api = api.clone();
        creates.spawn(async move {
            let cluster: PostgresCluster = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
                "metadata": {"name": format!("pg-{i:04}")},
                "spec": {"postgres": {"version": 17}, "instances": 1, "storage": {"data": {"size": "1Gi"}}},
            }))
            .map_err(err)?;
            api.create(&PostParams::default(), &cluster)
                .await
                .map(|_| ())
                .map_err(err)
        });
    }
    while let Some(done) = creates.join_next().await {
        done.map_err(err)??;
    }
    let created = started.elapsed();
    let mut last_report = Instant::now();
    let ready_after = loop {
        let list = api.list(&ListParams::default()).await.map_err(err)?;
        let ready = count_ready(&list.items, |c| c.status.as_ref()?.conditions.as_ref());
        if ready == clusters {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(ready_timeout) {
            println!("  stopped waiting after {ready_timeout} s with {ready} of {clusters} Ready");
            break None;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            println!(
                "  {ready} of {clusters} Ready after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if !operator.alive() {
            return Err(format!("the operator exited:\n{}", operator.log_tail(30)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let converge_requests = requests_by_verb(&plane.audit_events(), &user);
    let (peak_converging, _) = operator.pid().map(memory).unwrap_or((0, 0));

    // Steady state: settle, then watch two resync periods.
    tokio::time::sleep(Duration::from_secs(resync)).await;
    let mark = plane.audit_events().len();
    tokio::time::sleep(Duration::from_secs(steady_seconds)).await;
    let steady_requests = requests_by_verb(&plane.audit_events()[mark..], &user);
    let steady_writes: usize = steady_requests
        .iter()
        .filter(|(verb, _)| is_write(verb))
        .map(|(_, n)| n)
        .sum();
    let (peak, now) = operator.pid().map(memory).unwrap_or((0, 0));

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| clusters | {clusters} |");
    println!("| all created after | {:.1} s |", created.as_secs_f64());
    match ready_after {
        Some(t) => println!("| all Ready after | {:.1} s |", t.as_secs_f64()),
        None => println!("| all Ready after | not within {ready_timeout} s (see above) |"),
    }
    println!(
        "| operator peak RSS (VmHWM) until Ready | {:.1} MiB |",
        peak_converging as f64 / 1024.0
    );
    println!(
        "| operator peak RSS (VmHWM) overall | {:.1} MiB |",
        peak as f64 / 1024.0
    );
    println!("| operator RSS at the end | {:.1} MiB |", now as f64 / 1024.0);
    for (verb, n) in &converge_requests {
        println!(
            "| requests until Ready: {verb} | {n} ({:.1} per cluster) |",
            *n as f64 / clusters as f64
        );
    }
    // Each cluster is reconciled once per resync; watches are per kind, not per cluster.
    let resyncs = steady_seconds as f64 / resync as f64;
    for (verb, n) in &steady_requests {
        let per = if verb == "watch" {
            String::new()
        } else {
            format!(
                " ({:.2} per cluster per resync)",
                *n as f64 / clusters as f64 / resyncs
            )
        };
        println!("| requests in {steady_seconds} s of steady state ({resync} s resync): {verb} | {n}{per} |");
    }
    let steady_reads: usize = steady_requests
        .iter()
        .filter(|(verb, _)| matches!(verb.as_str(), "get" | "list"))
        .map(|(_, n)| n)
        .sum();
    println!("| reads (get, list) in steady state | {steady_reads} |");
    println!("| writes in steady state | {steady_writes} |");
    println!();
    println!("(Lease renewals for leader election are left out of the counts.)");
    drop(operator);
    plane.stop();
    Ok(())
}
