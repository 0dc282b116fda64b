//! `cargo xtask bench-controller`: at each scale, on a fresh local control plane, creates that
//! many `PostgresCluster` objects at once and prints, a column per scale: the time until all are
//! Ready beside the CPU time of the operator, the apiserver, etcd and kwok; the operator's
//! requests until then by verb; its peak RSS and the slope over the scales; its requests per
//! cluster per resync in steady state; and how long putting back a ConfigMap edited by hand in
//! 100 clusters takes, with the requests it costs. The operator is the release binary, running
//! with only its generated RBAC; its requests are counted from the apiserver's audit log.

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
    let (peak, now, _) = memory_parts(pid);
    (peak, now)
}

/// Peak and current resident memory of `pid`, and how much of it now is anonymous (the heap and
/// stacks; the rest is the binary's pages), in KiB, from /proc.
pub(crate) fn memory_parts(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"), field("RssAnon:"))
}

/// The requests `user` made, by verb; Lease renewals for leader election are left out, and
/// Events are counted apart (`create (Events)`).
pub fn requests_by_verb(events: &[Value], user: &str) -> BTreeMap<String, usize> {
    requests_by(events, user, |verb, resource| match resource {
        "events" => format!("{verb} (Events)"),
        _ => verb.to_owned(),
    })
}

/// The requests `user` made, by verb and resource, Lease renewals left out.
pub fn requests_by_resource(events: &[Value], user: &str) -> BTreeMap<String, usize> {
    requests_by(events, user, |verb, resource| format!("{verb} {resource}"))
}

fn requests_by(events: &[Value], user: &str, key: impl Fn(&str, &str) -> String) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        // A watch is logged when it starts and when it ends; count each request once.
        if event["stage"] == "ResponseStarted" || event["user"]["username"] != user {
            continue;
        }
        let resource = event["objectRef"]["resource"].as_str().unwrap_or("?");
        if resource == "leases" {
            continue;
        }
        let subresource = event["objectRef"]["subresource"]
            .as_str()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let key = key(
            event["verb"].as_str().unwrap_or("?"),
            &format!("{resource}{subresource}"),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
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

/// The operator binary a bench runs: the release build, or the one `BENCH_BIN` names, such as the
/// image's static build (see the README).
pub fn operator_binary(root: &Path) -> std::path::PathBuf {
    root.join(std::env::var("BENCH_BIN").unwrap_or("target/release/tusk-operator".into()))
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
    // TUSK_BENCH_WRAP names a program the operator runs under, such as a heap profiler
    // (`heaptrack -o FILE`); its figures are then the wrapper's as much as the operator's.
    let binary = operator_binary(root);
    let (program, args) = match std::env::var("TUSK_BENCH_WRAP") {
        Ok(wrap) if !wrap.trim().is_empty() => {
            let mut words = wrap.split_whitespace().map(str::to_owned);
            let program = std::path::PathBuf::from(words.next().unwrap_or_default());
            let mut wrapped: Vec<String> = words.collect();
            wrapped.push(binary.display().to_string());
            wrapped.extend(args);
            (program, wrapped)
        }
        _ => (binary, args),
    };
    let process = Supervised::spawn_with_env(
        &dir,
        "tusk-operator",
        &program,
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

/// What one scale measured.
struct Scale {
    clusters: usize,
    created: Duration,
    ready_after: Option<Duration>,
    /// CPU seconds from the first create until all were Ready, by process.
    cpu: BTreeMap<String, f64>,
    /// The operator's requests until all were Ready, by verb, and by verb and resource.
    converge: BTreeMap<String, usize>,
    converge_by_resource: BTreeMap<String, usize>,
    /// Peak RSS (VmHWM) until Ready, overall, and the RSS at the end, in KiB.
    peak_converging: u64,
    peak: u64,
    end: u64,
    /// Of `end`, anonymous memory (the rest is the binary's code and data, read from its file).
    end_anonymous: u64,
    /// The operator's requests in steady state, by verb and resource, and how many resyncs that
    /// was.
    steady: BTreeMap<String, usize>,
    resyncs: f64,
    drift: Drift,
}

/// Children edited by hand and put back.
struct Drift {
    clusters: usize,
    repaired_after: Option<Duration>,
    requests: BTreeMap<String, usize>,
}

/// CPU ticks (user and system) of `pids` now, by name.
fn cpu_ticks(pids: &[(String, u32)]) -> BTreeMap<String, u64> {
    pids.iter()
        .filter_map(|(name, pid)| Some((name.clone(), tusk_testenv::process::proc_stat(*pid)?.1)))
        .collect()
}

/// Clock ticks per second, the unit of /proc's CPU times.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `cargo xtask bench-controller`: each scale on a fresh control plane and operator, then one
/// table with a column per scale.
pub async fn run(
    root: &Path,
    scales: &[usize],
    instances: u32,
    steady_seconds: u64,
    ready_timeout: u64,
    drift: usize,
) -> Result<(), String> {
    let mut measured = Vec::new();
    for &clusters in scales {
        println!("== {clusters} clusters of {instances} instances ==");
        measured.push(measure(root, clusters, instances, steady_seconds, ready_timeout, drift).await?);
        // The table so far after each scale: the largest take the longest.
        print_table(&measured, instances, steady_seconds);
    }
    Ok(())
}

fn per_cluster(n: usize, clusters: usize) -> String {
    format!("{n} ({:.2})", n as f64 / clusters as f64)
}

fn print_table(scales: &[Scale], instances: u32, steady_seconds: u64) {
    let row = |name: &str, cell: &dyn Fn(&Scale) -> String| {
        let cells: Vec<String> = scales.iter().map(cell).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    println!();
    let header: Vec<String> = scales.iter().map(|s| s.clusters.to_string()).collect();
    println!(
        "| clusters ({instances} instances each) | {} |",
        header.join(" | ")
    );
    println!("|---|{}", "---|".repeat(scales.len()));
    row("all created after", &|s| {
        format!("{:.1} s", s.created.as_secs_f64())
    });
    row("all Ready after", &|s| match s.ready_after {
        Some(t) => format!("{:.1} s", t.as_secs_f64()),
        None => "not Ready in time".to_owned(),
    });
    let mut processes: Vec<&String> = scales.iter().flat_map(|s| s.cpu.keys()).collect();
    processes.sort();
    processes.dedup();
    for process in processes {
        row(&format!("CPU until Ready: {process}"), &|s| {
            s.cpu.get(process).map_or("-".into(), |c| format!("{c:.1} s"))
        });
    }
    let mut verbs: Vec<&String> = scales.iter().flat_map(|s| s.converge.keys()).collect();
    verbs.sort();
    verbs.dedup();
    for verb in &verbs {
        row(&format!("requests until Ready: {verb} (per cluster)"), &|s| {
            per_cluster(s.converge.get(*verb).copied().unwrap_or(0), s.clusters)
        });
    }
    row(
        "requests until Ready but watches (per cluster; target ≤ 20)",
        &|s| {
            per_cluster(
                s.converge
                    .iter()
                    .filter(|(v, _)| *v != "watch")
                    .map(|(_, n)| n)
                    .sum(),
                s.clusters,
            )
        },
    );
    row("operator peak RSS until Ready", &|s| {
        format!("{:.1} MiB", s.peak_converging as f64 / 1024.0)
    });
    row("operator peak RSS overall", &|s| {
        format!("{:.1} MiB", s.peak as f64 / 1024.0)
    });
    row("operator RSS at the end", &|s| {
        format!("{:.1} MiB", s.end as f64 / 1024.0)
    });
    row("of it anonymous (heap, stacks) / the binary's pages", &|s| {
        format!(
            "{:.1} / {:.1} MiB",
            s.end_anonymous as f64 / 1024.0,
            s.end.saturating_sub(s.end_anonymous) as f64 / 1024.0
        )
    });
    let mut verbs: Vec<&String> = scales.iter().flat_map(|s| s.steady.keys()).collect();
    verbs.sort();
    verbs.dedup();
    row(
        &format!("steady state: resyncs watched in {steady_seconds} s"),
        &|s| format!("{:.0}", s.resyncs),
    );
    row("steady state: requests per cluster per resync (target 0)", &|s| {
        let n: usize = s.steady.values().sum();
        format!("{:.3}", n as f64 / s.clusters as f64 / s.resyncs)
    });
    for verb in verbs {
        row(&format!("steady state: {verb}"), &|s| {
            s.steady.get(verb).copied().unwrap_or(0).to_string()
        });
    }
    row("drift: clusters whose ConfigMap was edited", &|s| {
        s.drift.clusters.to_string()
    });
    row("drift: all put back after", &|s| match s.drift.repaired_after {
        Some(t) => format!("{:.2} s", t.as_secs_f64()),
        None => "not within 60 s".to_owned(),
    });
    row("drift: requests to put them back (per edited cluster)", &|s| {
        let by_verb: Vec<String> = s
            .drift
            .requests
            .iter()
            .map(|(verb, n)| format!("{verb} {:.2}", *n as f64 / s.drift.clusters.max(1) as f64))
            .collect();
        by_verb.join(", ")
    });
    if let Some(last) = scales.last() {
        println!();
        println!(
            "Requests until Ready at {} clusters, by verb and resource, per cluster:",
            last.clusters
        );
        println!();
        println!("| request | per cluster |");
        println!("|---|---|");
        for (request, n) in &last.converge_by_resource {
            println!("| {request} | {:.2} |", *n as f64 / last.clusters as f64);
        }
    }
    println!();
    if let Some(slope) = rss_slope(scales) {
        println!("Peak RSS grows by {slope:.1} KiB per cluster (least squares over the scales).");
    }
    println!(
        "Lease renewals for leader election are left out of the counts; watches are per kind, not per cluster."
    );
}

/// The least-squares slope of the peak RSS against the number of clusters, in KiB per cluster.
fn rss_slope(scales: &[Scale]) -> Option<f64> {
    if scales.len() < 2 {
        return None;
    }
    let n = scales.len() as f64;
    let mean_x = scales.iter().map(|s| s.clusters as f64).sum::<f64>() / n;
    let mean_y = scales.iter().map(|s| s.peak as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in scales {
        let dx = s.clusters as f64 - mean_x;
        num += dx * (s.peak as f64 - mean_y);
        den += dx * dx;
    }
    (den > 0.0).then(|| num / den)
}

async fn measure(
    root: &Path,
    clusters: usize,
    instances: u32,
    steady_seconds: u64,
    ready_timeout: u64,
    drift: usize,
) -> Result<Scale, String> {
    let resync = steady_seconds / 2;
    let Operator {
        plane,
        process: operator,
        ..
    } = start_operator(root, resync, |dir| {
        // The pods are kwok's, with no instance manager and addresses that lead nowhere: an
        // empty address map gives the operator no address to dial (no DNS lookup either), so it
        // talks to nothing but the apiserver, and sees every instance as not answering.
        let endpoints = dir.join("sql-endpoints");
        std::fs::write(&endpoints, "").map_err(err)?;
        Ok(vec![format!("--sql-endpoints={}", endpoints.display())])
    })
    .await?;
    let client = plane.client().await.map_err(err)?;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).map_err(err)?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(err)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}");
    let mut pids = plane.pids();
    if let Some(pid) = operator.pid() {
        pids.push(("tusk-operator".to_owned(), pid));
    }
    pids.retain(|(name, _)| ["tusk-operator", "kube-apiserver", "etcd", "kwok"].contains(&name.as_str()));
    let ticks_before = cpu_ticks(&pids);
    let mark = plane.audit_events().len();

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
                "spec": {"postgres": {"version": 17}, "instances": instances, "storage": {"data": {"size": "1Gi"}}},
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
    let ticks_after = cpu_ticks(&pids);
    let hz = clock_ticks();
    let cpu = ticks_after
        .iter()
        .filter_map(|(name, after)| Some((name.clone(), (after - ticks_before.get(name)?) as f64 / hz)))
        .collect();
    let converging = &plane.audit_events()[mark..];
    let converge = requests_by_verb(converging, &user);
    let converge_by_resource = requests_by_resource(converging, &user);
    let (peak_converging, _) = operator.pid().map(memory).unwrap_or((0, 0));

    // Steady state: settle, then watch two resync periods.
    tokio::time::sleep(Duration::from_secs(resync)).await;
    let mark = plane.audit_events().len();
    tokio::time::sleep(Duration::from_secs(steady_seconds)).await;
    let steady = requests_by_resource(&plane.audit_events()[mark..], &user);

    // Drift: a ConfigMap edited by hand in each of the first `drift` clusters.
    let drift = drift.min(clusters);
    let configs = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NAMESPACE);
    let names: Vec<String> = (0..drift).map(|i| format!("pg-{i:04}-config")).collect();
    let mut wanted = Vec::new();
    for name in &names {
        wanted.push(configs.get(name).await.map_err(err)?.data);
    }
    let mark = plane.audit_events().len();
    let edited = Instant::now();
    for name in &names {
        configs
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"data": {"postgresql.conf": "work_mem = '1GB'"}})),
            )
            .await
            .map_err(err)?;
    }
    let repaired_after = loop {
        let list = configs.list(&ListParams::default()).await.map_err(err)?;
        let back = names.iter().zip(&wanted).all(|(name, want)| {
            list.items
                .iter()
                .any(|c| c.metadata.name.as_ref() == Some(name) && &c.data == want)
        });
        if back {
            break Some(edited.elapsed());
        }
        if edited.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Requests still in flight reach the log a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drift = Drift {
        clusters: drift,
        repaired_after,
        requests: requests_by_verb(&plane.audit_events()[mark..], &user),
    };
    let (peak, end, end_anonymous) = operator.pid().map(memory_parts).unwrap_or((0, 0, 0));
    drop(operator);
    plane.stop();
    Ok(Scale {
        clusters,
        created,
        ready_after,
        cpu,
        converge,
        converge_by_resource,
        peak_converging,
        peak,
        end,
        end_anonymous,
        steady,
        resyncs: steady_seconds as f64 / resync as f64,
        drift,
    })
}
