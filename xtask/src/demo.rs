//! `cargo xtask demo`: Tusk on its embedded default. It starts the local control plane, runs
//! `tusk-operator run` (controllers and conversion webhook) on 127.0.0.1 with a certificate from
//! a fresh CA, installs the CRDs pointing at it, applies the samples under `config/samples`, runs
//! the sample cluster's pods as local processes with real PostgreSQL (the operator reaches the
//! primary and the instance managers through `--sql-endpoints`), waits for the cluster, its
//! users and databases to be Ready and the sample backup to complete (into the claim
//! `demo-backups` it creates, one local directory the pods share), shows them at every version, prints a connection string from a binding Secret, and runs
//! until Ctrl-C.

use std::{path::Path, process::Stdio, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
};
use tusk::crd::{ConversionWebhook, WebhookEndpoint};
use tusk_testenv::{
    ControlPlane, Options,
    control_plane::free_port,
    pki::Ca,
    pod::{ClusterPods, LocalPod},
    postgres::Postgres,
};

/// The PostgreSQL major the demo runs: the newest with local binaries (`hack/postgres.sh`). The
/// sample cluster asks for 17; the demo sets 18 on it, and maps the image to PostgreSQL 18.
const DEMO_MAJOR: u32 = 18;

/// The sample cluster's pods as local processes, each on a loopback address of its own
/// (`127.77.0.1` is the primary).
async fn run_pods(
    client: &kube::Client,
    binary: &Path,
    dir: &Path,
    postgres: &Postgres,
    instances: i32,
    api_server: std::net::SocketAddr,
) -> Result<Vec<LocalPod>, String> {
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), "default");
    let statefulset = loop {
        if let Some(s) = sts.get_opt("demo").await.map_err(|e| e.to_string())? {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cluster = ClusterPods {
        statefulset,
        operator_binary: binary.to_path_buf(),
        postgres_bin: postgres.bin_dir().to_path_buf(),
        ip_prefix: [77, 0, 1],
        state_dir: dir.join("pods"),
        shared_dir: dir.join("claims"),
        // Each pod reads and renews the primary's Lease on the local API server.
        api_servers: (0..instances).map(|o| (o, api_server)).collect(),
        rw_address: None,
    };
    let ip = |ordinal: i32| cluster.ip(ordinal);
    let mut pods = Vec::new();
    for ordinal in 0..instances {
        let run = cluster.run(ordinal).map_err(|e| e.to_string())?;
        pods.push(LocalPod::start(client, &run).await.map_err(|e| e.to_string())?);
        // Each replica copies the primary: wait for the pod to be ready before the next.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if ready(ip(ordinal)).await {
                break;
            }
            let last = pods.last().expect("just pushed");
            if !last.main.alive() || std::time::Instant::now() > deadline {
                return Err(format!(
                    "pod demo-{ordinal} did not become ready:\n{}",
                    last.main.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("  demo-{ordinal} is ready on {}:5432", ip(ordinal));
    }
    Ok(pods)
}

/// The instance managers of `pods` (each pod's first process, which runs PostgreSQL under it)
/// at rest for `idle`, after 30 s for the cluster to settle: their RSS and CPU time, and
/// PostgreSQL's beside them. Prints a table.
async fn idle_instance_managers(pods: &[LocalPod], idle: Duration) -> Result<(), String> {
    use tusk_testenv::process::proc_stat;
    /// VmRSS, VmHWM and RssAnon (the heap and stacks, not the binary's pages) of `pid`, in KiB.
    fn memory(pid: u32) -> (u64, u64, u64) {
        let (peak, now, anonymous) = crate::bench::memory_parts(pid);
        (now, peak, anonymous)
    }
    /// The processes under `pid` (PostgreSQL and its workers), from /proc.
    fn descendants(pid: u32) -> Vec<u32> {
        let parent = |p: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
        };
        let all: Vec<u32> = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut found = vec![pid];
        let mut i = 0;
        while i < found.len() {
            let p = found[i];
            found.extend(all.iter().filter(|&&c| parent(c) == Some(p)));
            i += 1;
        }
        found.remove(0);
        found
    }
    println!(
        "\nMeasuring the instance managers at rest for {} s...",
        idle.as_secs()
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let hz = crate::bench::clock_ticks();
    let pids: Vec<u32> = pods
        .iter()
        .map(|p| p.main.pid().ok_or("a pod's process has no pid"))
        .collect::<Result<_, _>>()?;
    let ticks = |pid: u32| proc_stat(pid).map_or(0, |(_, t)| t);
    let postgres_ticks = |pid: u32| descendants(pid).into_iter().map(ticks).sum::<u64>();
    let before: Vec<(u64, u64)> = pids.iter().map(|&p| (ticks(p), postgres_ticks(p))).collect();
    tokio::time::sleep(idle).await;
    println!(
        "\n| pod | instance manager RSS | of it anonymous (heap, stacks) | its peak RSS | its CPU at rest | \
         PostgreSQL's RSS (all processes) | PostgreSQL's CPU at rest |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (ordinal, (&pid, (manager_before, postgres_before))) in pids.iter().zip(before).enumerate() {
        let (rss, peak, anonymous) = memory(pid);
        let postgres_rss: u64 = descendants(pid).into_iter().map(|p| memory(p).0).sum();
        let share =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / hz / idle.as_secs_f64() * 100.0;
        println!(
            "| demo-{ordinal} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} % of a core | {:.1} MiB | {:.2} % of a core |",
            rss as f64 / 1024.0,
            anonymous as f64 / 1024.0,
            peak as f64 / 1024.0,
            share(ticks(pid), manager_before),
            postgres_rss as f64 / 1024.0,
            share(postgres_ticks(pid), postgres_before),
        );
    }
    println!(
        "\nRelease build; PostgreSQL's RSS counts the shared buffers each process touched, so it \
         overstates what they use together."
    );
    Ok(())
}

/// Whether the instance manager at `ip` answers `/readyz` with 200.
async fn ready(ip: std::net::IpAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect((ip, 8000)).await else {
        return false;
    };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

const FIELD_MANAGER: &str = "tusk-demo";

/// Runs the demo until Ctrl-C; with `idle_cost`, a release build instead, and once everything
/// is Ready, measures the instance managers at rest for that long, prints it, and stops.
pub async fn run(root: &Path, idle_cost: Option<Duration>) -> Result<(), String> {
    let profile = if idle_cost.is_some() { "release" } else { "debug" };
    let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--quiet", "--bin", "tusk-operator"]);
    if idle_cost.is_some() {
        build.arg("--release");
    }
    let status = build
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --bin tusk-operator ({profile}) failed"));
    }
    let binary = root.join("target").join(profile).join("tusk-operator");
    let postgres = Postgres::get(DEMO_MAJOR).map_err(|e| e.to_string())?;
    let dir = root.join("target/tusk-demo");
    let _ = std::fs::remove_dir_all(&dir);
    println!("Starting the local control plane (the first run builds it; see hack/testbin.sh)...");
    let plane = ControlPlane::start(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await
    .map_err(|e| e.to_string())?;

    // The operator's serving certificate, as OLM or a CA injector would provide it.
    let ca = Ca::new("tusk-demo-ca");
    let cert = ca.loopback_serving_cert("tusk-operator");
    let cert_dir = dir.join("webhook-certs");
    std::fs::create_dir_all(&cert_dir).map_err(|e| e.to_string())?;
    std::fs::write(cert_dir.join("tls.crt"), &cert.cert_pem).map_err(|e| e.to_string())?;
    std::fs::write(cert_dir.join("tls.key"), &cert.key_pem).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    // The sample cluster's primary runs locally on 127.77.0.1, and pod n on 127.77.0.<n + 1>
    // (see run_pods): SQL goes to the primary, backup requests to a pod's instance manager.
    let sql_endpoints = dir.join("sql-endpoints");
    let mut endpoints = String::from("default/demo 127.77.0.1:5432\n");
    for ordinal in 0..3 {
        endpoints.push_str(&format!(
            "default/demo/demo-{ordinal} 127.77.0.{}:8000\n",
            ordinal + 1
        ));
    }
    std::fs::write(&sql_endpoints, endpoints).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("logs/tusk-operator.log")).map_err(|e| e.to_string())?;
    let mut operator = tokio::process::Command::new(&binary)
        .arg("run")
        .env("KUBECONFIG", plane.kubeconfig())
        .env(tusk::facts::operator::env::LOG_FORMAT, "json")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cert-dir")
        .arg(&cert_dir)
        .arg(format!(
            "--status-listen=127.0.0.1:{}",
            free_port().map_err(|e| e.to_string())?
        ))
        .arg(format!(
            "--metrics-listen=127.0.0.1:{}",
            free_port().map_err(|e| e.to_string())?
        ))
        .arg("--leader-election-namespace=default")
        .arg(format!("--sql-endpoints={}", sql_endpoints.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting tusk-operator: {e}"))?;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Ok(Some(exit)) = operator.try_wait() {
            return Err(format!(
                "tusk-operator exited with {exit}; see {}/logs",
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let client = plane.client().await.map_err(|e| e.to_string())?;
    let webhook = ConversionWebhook {
        endpoint: WebhookEndpoint::Url(format!(
            "https://127.0.0.1:{port}{}",
            tusk::facts::operator::CONVERT_PATH
        )),
        ca_bundle: Some(ca.cert_pem().into_bytes()),
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let crds = Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(client.clone());
    for crd in tusk::crd::crds(&webhook) {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("installing {name}: {e}"))?;
    }
    let kubectl = |args: &[&str]| {
        let out = plane.kubectl().args(args).output().map_err(|e| e.to_string())?;
        Ok::<_, String>(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    for crd in tusk::crd::crds(&webhook) {
        let name = crd.metadata.name.unwrap_or_default();
        kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{name}"),
            "--timeout=60s",
        ])?;
    }

    // The claim the sample cluster's backups go to (`spec.backup.target.volume`): its pods mount
    // it, here one directory they share.
    let claims =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), "default");
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "demo-backups"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}},
        }))
        .map_err(|e| e.to_string())?;
    claims
        .patch("demo-backups", &apply, &Patch::Apply(&claim))
        .await
        .map_err(|e| format!("the demo-backups claim: {e}"))?;

    let samples = root.join("config/samples");
    let mut files: Vec<_> = std::fs::read_dir(&samples)
        .map_err(|e| format!("{}: {e}", samples.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let object: DynamicObject =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let types = object
            .types
            .clone()
            .ok_or(format!("{}: no apiVersion/kind", file.display()))?;
        let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
        let plural = format!("{}s", gvk.kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &resource);
        let name = object.metadata.name.clone().unwrap_or_default();
        let mut object = object;
        if gvk.kind == "PostgresCluster" {
            object.data["spec"]["postgres"]["version"] = serde_json::json!(DEMO_MAJOR);
        }
        api.patch(&name, &apply, &Patch::Apply(&object))
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }

    // The operator builds the sample cluster; kwok plays the kubelet for the apiserver, and the
    // pods' containers run here as local processes with PostgreSQL 18.
    println!(
        "Running the sample cluster's pods locally ({})...",
        postgres.version()
    );
    let api_server = plane
        .server()
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| format!("the API server {}: {e}", plane.server()))?;
    let pods = run_pods(&client, &binary, &dir, &postgres, 3, api_server).await?;
    println!("Waiting for the cluster, its users and its databases to be Ready...");
    let mut waited = String::new();
    for object in [
        "postgresclusters.v1.tusk.dev/demo",
        "postgresusers.v1.tusk.dev/demo-owner",
        "postgresdatabases.v1.tusk.dev/demo-database",
        "postgresusers.v1.tusk.dev/reporting",
        "postgresdatabases.v1.tusk.dev/shop",
    ] {
        waited.push_str(&kubectl(&[
            "wait",
            "--for=condition=Ready",
            object,
            "--timeout=180s",
        ])?);
    }
    waited.push_str(&kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Completed",
        "postgresbackups.v1.tusk.dev/demo-first",
        "--timeout=180s",
    ])?);
    print!("{waited}");
    if let Some(idle) = idle_cost {
        let measured = idle_instance_managers(&pods, idle).await;
        drop(pods);
        let _ = operator.kill().await;
        plane.stop();
        return measured;
    }
    println!("\nTusk is running on the local control plane. Its objects (kubectl get tusk):\n");
    print!("{}", kubectl(&["get", "tusk"])?);
    println!("\nThe same PostgresCluster read through each version (converted by Tusk's webhook):\n");
    for version in ["v1", "v1beta1", "v1alpha1"] {
        println!("$ kubectl get postgresclusters.{version}.tusk.dev demo");
        print!(
            "{}",
            kubectl(&["get", &format!("postgresclusters.{version}.tusk.dev"), "demo"])?
        );
    }
    println!("\nThe cluster's children and pods (kwok plays the kubelet):\n");
    print!(
        "{}",
        kubectl(&[
            "get",
            "statefulsets,services,configmaps,secrets,pdb,pods,pvc",
            "-l",
            "tusk.dev/cluster=demo"
        ])?
    );
    println!("\nIts status:\n");
    print!(
        "{}",
        kubectl(&[
            "get",
            "postgresclusters.v1.tusk.dev",
            "demo",
            "-o",
            "jsonpath={.status}"
        ])?
    );
    println!();
    let uri = kubectl(&["get", "secret", "reporting-binding", "-o", "jsonpath={.data.uri}"])?;
    let uri = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, uri.trim())
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("\nThe PostgresUser reporting's binding Secret gives this connection string:\n\n  {uri}\n");
    println!(
        "Here, where demo-rw is 127.77.0.1, connect with:\n\n  {} \"{}\"\n",
        postgres.bin("psql").display(),
        uri.replace("demo-rw.default.svc", "127.77.0.1")
    );
    let testbin = plane.toolchain().bin("kubectl");
    println!(
        "\nTry it from another shell:\n\n  export KUBECONFIG={}\n  export PATH={}:$PATH\n  \
         kubectl get postgresclusters.v1alpha1.tusk.dev demo -o yaml\n\n\
         Logs are in {}/logs.\n\
         Press Ctrl-C to stop everything.",
        plane.kubeconfig().display(),
        testbin
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        exit = operator.wait() => println!("tusk-operator exited: {exit:?}"),
    }
    println!("Stopping...");
    drop(pods);
    let _ = operator.kill().await;
    plane.stop();
    Ok(())
}
