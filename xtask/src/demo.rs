//! `cargo xtask demo`: Tusk on its embedded default. It starts the local control plane, runs
//! `tusk-operator run` (controllers and conversion webhook) on 127.0.0.1 with a certificate from
//! a fresh CA, installs the CRDs pointing at it, applies the samples under `config/samples`, waits
//! for the sample cluster to be Ready, shows it at every version with its children and status,
//! and runs until Ctrl-C.

use std::{path::Path, process::Stdio, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
};
use tusk::crd::{ConversionWebhook, WebhookEndpoint};
use tusk_testenv::{ControlPlane, Options, control_plane::free_port, pki::Ca};

const FIELD_MANAGER: &str = "tusk-demo";

pub async fn run(root: &Path) -> Result<(), String> {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--bin", "tusk-operator"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build --bin tusk-operator failed".into());
    }
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
    let log = std::fs::File::create(dir.join("logs/tusk-operator.log")).map_err(|e| e.to_string())?;
    let mut operator = tokio::process::Command::new(root.join("target/debug/tusk-operator"))
        .arg("run")
        .env("KUBECONFIG", plane.kubeconfig())
        .env("TUSK_LOG_FORMAT", "json")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cert-dir")
        .arg(&cert_dir)
        .arg(format!(
            "--status-listen=127.0.0.1:{}",
            free_port().map_err(|e| e.to_string())?
        ))
        .arg("--leader-election-namespace=default")
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
        endpoint: WebhookEndpoint::Url(format!("https://127.0.0.1:{port}{}", tusk::crd::CONVERT_PATH)),
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
        api.patch(&name, &apply, &Patch::Apply(&object))
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }

    // The operator reconciles the sample cluster; kwok runs its pods.
    println!("Waiting for PostgresCluster demo to be Ready...");
    let waited = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "postgresclusters.v1.tusk.dev/demo",
        "--timeout=180s",
    ])?;
    print!("{waited}");
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
    let _ = operator.kill().await;
    plane.stop();
    Ok(())
}
