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

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    apiserver::KINDS,
    eventually,
    objects::{random_objects, user_view},
};
use tusk_testenv::{
    ConnectProxy, ControlPlane, Options,
    control_plane::free_port,
    olm::{CatalogServer, OLM_NAMESPACE, OPERATORS_NAMESPACE, Olm, catalog_source},
    process::Supervised,
};
use xtask::olm::{Inputs, catalog, fixture, plan::Release};

const CATALOG: &str = "tusk-catalog";
const PACKAGE: &str = "tusk-operator";
const SERVICE: &str = "tusk-operator-service";
const INSTALL: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn csv_name(version: &str) -> String {
    format!("{PACKAGE}.v{version}")
}

fn olm_api(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("operators.coreos.com", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn tusk_api(client: &Client, namespace: &str, kind: &str, version: &str) -> Api<DynamicObject> {
    support::apiserver::api(client, namespace, kind, version)
}

fn value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap()
}

/// The plan's newest release, the head of every channel.
const HEAD: &str = "1.1.0";
/// A release after every release of the plan; [`inputs_with_drop`] makes it up.
const NEXT: &str = "1.2.0";

/// The plan with a hypothetical next release [`NEXT`] that replaces `replaces` and no longer
/// serves `v1alpha1`: what a team would publish once storage was migrated.
fn inputs_with_drop(replaces: &str) -> Inputs {
    let mut inputs = Inputs::load(&repo()).unwrap();
    if replaces == "0.1.0" {
        // A catalog of 0.1.0 and the drop alone: the later releases would be second heads.
        inputs.plan.releases.retain(|r| r.version.to_string() == "0.1.0");
    }
    assert!(
        inputs
            .plan
            .releases
            .iter()
            .all(|r| r.version < NEXT.parse().unwrap()),
        "{NEXT} is a release of the plan now; make up a later one"
    );
    let next: Release = serde_saphyr::from_str(&format!(
        r#"
version: {NEXT}
channels: [candidate, fast, stable, stable-v1]
replaces: {replaces}
maturity: stable
capabilities: Seamless Upgrades
description: config/olm/description.md
crds:
  PostgresCluster: {{ served: [v1beta1, v1], storage: v1, deprecated: [v1beta1] }}
  PostgresUser: {{ served: [v1], storage: v1 }}
  PostgresDatabase: {{ served: [v1], storage: v1 }}
  PostgresBackup: {{ served: [v1], storage: v1 }}
  PostgresBackupSchedule: {{ served: [v1], storage: v1 }}
"#
    ))
    .unwrap();
    inputs.plan.releases.push(next);
    inputs
}

/// What `cargo xtask validate` finds wrong with the bundles and catalog `inputs` generate.
fn validation_errors(inputs: &Inputs) -> Vec<String> {
    let root = tempfile::tempdir().unwrap();
    for file in xtask::olm::generate(inputs) {
        let path = root.path().join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, file.contents).unwrap();
    }
    xtask::olm::validate::validate(root.path())
        .into_iter()
        .filter(|f| f.level == xtask::olm::validate::Level::Error)
        .map(|f| f.to_string())
        .collect()
}

/// One control plane with OLM, the egress proxy and a catalog; the local operator on demand.
struct Env {
    proxy: ConnectProxy,
    plane: ControlPlane,
    olm: Olm,
    client: Client,
    work: tempfile::TempDir,
    catalogs: Vec<CatalogServer>,
    pod: Pod,
}

/// What the local operator process should be: a mode and, to run the controllers, the
/// kubeconfig of OLM's ServiceAccount.
type Desired = Option<(Mode, Option<PathBuf>)>;

/// The local operator, started and restarted the way a kubelet would run the Deployment's pod:
/// as soon as OLM has made the webhook Service and its certificate, again whenever either
/// changes or the process dies, and in whatever mode the test asks for.
struct Pod {
    desired: std::sync::Arc<std::sync::Mutex<Desired>>,
    running: std::sync::Arc<std::sync::Mutex<Option<Mode>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_pod(
    client: Client,
    proxy: tusk_testenv::connect::Router,
    work: PathBuf,
    desired: std::sync::Arc<std::sync::Mutex<Desired>>,
    running: std::sync::Arc<std::sync::Mutex<Option<Mode>>>,
) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), OPERATORS_NAMESPACE);
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, OPERATORS_NAMESPACE);
    let mut current: Option<(Desired, String, String, Supervised)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = desired.lock().unwrap().clone();
        let (Ok(secret), Ok(service)) = (
            secrets.get(&format!("{SERVICE}-cert")).await,
            services.get(SERVICE).await,
        ) else {
            continue;
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        if let Some((d, v, i, process)) = &current
            && d == &want
            && v == &version
            && i == &ip
            && process.alive()
        {
            continue;
        }
        if let Some((_, _, _, mut old)) = current.take() {
            old.stop();
            *running.lock().unwrap() = None;
        }
        let Some((mode, kubeconfig)) = want.clone() else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let dir = tempfile::tempdir_in(&work).unwrap().keep();
        std::fs::write(dir.join("tls.crt"), &data["tls.crt"].0).unwrap();
        std::fs::write(dir.join("tls.key"), &data["tls.key"].0).unwrap();
        let port = free_port().unwrap();
        let args: Vec<String> = match mode {
            Mode::Webhook => vec![
                "webhook".into(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--cert-dir={}", dir.display()),
            ],
            Mode::Run => vec![
                "run".into(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--cert-dir={}", dir.display()),
                format!("--status-listen=127.0.0.1:{}", free_port().unwrap()),
                format!("--leader-election-namespace={OPERATORS_NAMESPACE}"),
                "--resync-interval=30s".into(),
                // No cluster here serves SQL: an empty map keeps the operator from looking up
                // in-cluster Service names.
                format!("--sql-endpoints={}", {
                    let map = dir.join("sql-endpoints");
                    std::fs::write(&map, "").unwrap();
                    map.display().to_string()
                }),
            ],
        };
        let mut env: Vec<(&str, &std::ffi::OsStr)> = Vec::new();
        if let Some(kubeconfig) = &kubeconfig {
            env.push(("KUBECONFIG", kubeconfig.as_os_str()));
        }
        let process = Supervised::spawn_with_env(
            &dir,
            "tusk-operator",
            env!("CARGO_BIN_EXE_tusk-operator").as_ref(),
            &args,
            &env,
        )
        .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        proxy.route(&format!("{ip}:443"), ([127, 0, 0, 1], port).into());
        *running.lock().unwrap() = Some(mode);
        current = Some((want, version, ip, process));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `tusk-operator webhook`: conversion only.
    Webhook,
    /// `tusk-operator run`: webhook, controllers, leader election.
    Run,
}

impl Env {
    async fn start() -> Self {
        let proxy = ConnectProxy::start().unwrap();
        let plane = ControlPlane::start(Options {
            egress_selector_config: Some(proxy.config_file()),
            ..Options::default()
        })
        .await
        .unwrap();
        let olm = Olm::start(&plane).await.unwrap();
        let client = plane.client().await.unwrap();
        let work = tempfile::tempdir().unwrap();
        let desired = std::sync::Arc::new(std::sync::Mutex::new(None));
        let running = std::sync::Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn(keep_pod(
            client.clone(),
            proxy.router(),
            work.path().to_owned(),
            desired.clone(),
            running.clone(),
        ));
        Self {
            proxy,
            plane,
            olm,
            client,
            work,
            catalogs: Vec::new(),
            pod: Pod {
                desired,
                running,
                task,
            },
        }
    }

    /// Serves a catalog of `packages` (each a list of FBC blobs) with opm and points the
    /// CatalogSource at it, then waits until OLM is connected to it.
    async fn serve(&mut self, packages: &[Vec<Value>]) {
        let dir = self.work.path().join(format!("catalog-{}", self.catalogs.len()));
        for blobs in packages {
            let package = blobs[0]["name"].as_str().unwrap();
            let file = dir.join(catalog::catalog_file(package));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, catalog::to_yaml(blobs)).unwrap();
        }
        let server = CatalogServer::start(&self.plane, &format!("opm-{}", self.catalogs.len()), &dir)
            .await
            .unwrap();
        let address = server.address();
        tusk_testenv::olm::apply(&self.plane, &catalog_source(CATALOG, &address)).unwrap();
        self.catalogs.push(server);
        let sources = olm_api(&self.client, OLM_NAMESPACE, "CatalogSource", "catalogsources");
        eventually(
            "the CatalogSource to connect",
            Duration::from_secs(120),
            || async {
                let source = value(&sources.get(CATALOG).await.ok()?);
                let state = &source["status"]["connectionState"];
                (state["lastObservedState"] == "READY" && state["address"] == address.as_str()).then_some(())
            },
        )
        .await;
    }

    async fn subscribe(&self, package: &str, channel: &str, manual: bool, starting: Option<&str>) {
        let mut spec = json!({
            "channel": channel,
            "name": package,
            "source": CATALOG,
            "sourceNamespace": OLM_NAMESPACE,
            "installPlanApproval": if manual { "Manual" } else { "Automatic" },
        });
        if let Some(csv) = starting {
            spec["startingCSV"] = json!(csv);
        }
        let subscription = json!({
            "apiVersion": "operators.coreos.com/v1alpha1",
            "kind": "Subscription",
            "metadata": {"name": package, "namespace": OPERATORS_NAMESPACE},
            "spec": spec,
        });
        olm_api(&self.client, OPERATORS_NAMESPACE, "Subscription", "subscriptions")
            .create(
                &PostParams::default(),
                &serde_json::from_value(subscription).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Waits for the InstallPlan that installs `csv`, checks that it installs only that CSV, and
    /// approves it; returns the plan once OLM has finished it.
    async fn approve(&self, csv: &str) -> Value {
        let plans = olm_api(&self.client, OPERATORS_NAMESPACE, "InstallPlan", "installplans");
        let plan = eventually(&format!("an InstallPlan for {csv}"), INSTALL, || async {
            let list = plans.list(&Default::default()).await.ok()?;
            list.items.into_iter().map(|p| value(&p)).find(|p| {
                p["spec"]["clusterServiceVersionNames"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == csv))
            })
        })
        .await;
        let name = plan["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(
            plan["spec"]["clusterServiceVersionNames"],
            json!([csv]),
            "{plan:#}"
        );
        assert_eq!(plan["spec"]["approval"], "Manual");
        eventually(&format!("{name} to require approval"), INSTALL, || async {
            let plan = value(&plans.get(&name).await.ok()?);
            (plan["status"]["phase"] == "RequiresApproval").then_some(())
        })
        .await;
        plans
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"approved": true}})),
            )
            .await
            .unwrap();
        self.finished_plan(&name).await
    }

    /// Waits until InstallPlan `name` is Complete or Failed.
    async fn finished_plan(&self, name: &str) -> Value {
        let plans = olm_api(&self.client, OPERATORS_NAMESPACE, "InstallPlan", "installplans");
        eventually(&format!("{name} to finish"), INSTALL, || async {
            let plan = value(&plans.get(name).await.ok()?);
            matches!(plan["status"]["phase"].as_str(), Some("Complete" | "Failed")).then_some(plan)
        })
        .await
    }

    async fn csv(&self, name: &str) -> Option<Value> {
        olm_api(
            &self.client,
            OPERATORS_NAMESPACE,
            "ClusterServiceVersion",
            "clusterserviceversions",
        )
        .get(name)
        .await
        .ok()
        .map(|c| value(&c))
    }

    /// Waits until CSV `name` is Succeeded; on timeout, says what OLM reported.
    async fn succeeded(&self, name: &str) -> Value {
        let deadline = std::time::Instant::now() + INSTALL;
        loop {
            let csv = self.csv(name).await;
            if let Some(csv) = &csv
                && csv["status"]["phase"] == "Succeeded"
            {
                return csv.clone();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "{name} never Succeeded; OLM says {}\n{}",
                    csv.map(|c| c["status"].to_string())
                        .unwrap_or_else(|| "no CSV".into()),
                    self.olm.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn gone(&self, name: &str) {
        eventually(&format!("{name} to be gone"), INSTALL, || async {
            self.csv(name).await.is_none().then_some(())
        })
        .await;
    }

    /// One approved upgrade from `from` to `to`, with the local operator in `mode` from the
    /// moment OLM makes the webhook Service: the plan completes, `to` succeeds, `from` is gone
    /// and the CRDs convert through OLM's Service.
    async fn upgrade(&self, from: &str, to: &str, mode: Mode) {
        self.want(Some(mode)).await;
        let plan = self.approve(&csv_name(to)).await;
        assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
        let csv = self.succeeded(&csv_name(to)).await;
        println!(
            "OLM: {} {}: {}",
            csv_name(to),
            csv["status"]["phase"],
            csv["status"]["message"]
        );
        self.gone(&csv_name(from)).await;
        self.conversion_through_olm().await;
        self.operator(mode).await;
    }

    /// Asks for the local operator in `mode` (the controllers run as OLM's ServiceAccount) and
    /// waits until it runs. Before OLM has made the Service, it only records the wish.
    async fn want(&self, mode: Option<Mode>) {
        let kubeconfig = match mode {
            Some(Mode::Run) => Some(
                self.plane
                    .token_kubeconfig(OPERATORS_NAMESPACE, PACKAGE)
                    .await
                    .unwrap(),
            ),
            _ => None,
        };
        *self.pod.desired.lock().unwrap() = mode.map(|m| (m, kubeconfig));
    }

    async fn operator(&self, mode: Mode) {
        self.want(Some(mode)).await;
        eventually(
            &format!("the local operator to run in {mode:?} mode"),
            INSTALL,
            || async { (*self.pod.running.lock().unwrap() == Some(mode)).then_some(()) },
        )
        .await;
    }

    /// Waits until every CRD that serves more than one version converts through the Service OLM
    /// made, with OLM's CA. OLM rewrites the bundle's placeholder asynchronously, after the CSV
    /// may already be Succeeded.
    async fn conversion_through_olm(&self) {
        let crds: Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = Api::all(self.client.clone());
        for (_, plural, _) in KINDS {
            let name = format!("{plural}.tusk.dev");
            eventually(
                &format!("{name} to convert through OLM's Service"),
                INSTALL,
                || async {
                    let crd = serde_json::to_value(crds.get(&name).await.ok()?).ok()?;
                    if crd["spec"]["versions"].as_array()?.len() < 2 {
                        return Some(());
                    }
                    let config = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
                    (config["service"]["namespace"] == OPERATORS_NAMESPACE
                        && config["service"]["name"] == SERVICE
                        && config["caBundle"].as_str().is_some_and(|c| !c.is_empty()))
                    .then_some(())
                },
            )
            .await;
        }
    }

    async fn stored_versions(&self) -> BTreeMap<String, BTreeSet<String>> {
        let crds: Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = Api::all(self.client.clone());
        let mut out = BTreeMap::new();
        for (kind, plural, _) in KINDS {
            let crd = crds.get(&format!("{plural}.tusk.dev")).await.unwrap();
            out.insert(
                (*kind).to_owned(),
                crd.status
                    .unwrap()
                    .stored_versions
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            );
        }
        out
    }
}

/// Objects written at some version, and what was written.
struct Written {
    namespace: String,
    objects: Vec<(&'static str, String, Value)>,
    /// Reads retried because conversion failed while OLM settled the CRDs.
    retried: std::sync::atomic::AtomicUsize,
}

impl Written {
    /// 20 random valid objects of each kind at `v1alpha1`, the same on every run.
    async fn create(env: &Env) -> Self {
        let namespace = env.plane.namespace("upgraded").await.unwrap();
        let mut objects = Vec::new();
        for (kind, _, _) in KINDS {
            for (i, mut object) in random_objects(kind, "v1alpha1", 20).into_iter().enumerate() {
                let name = format!("{}-{i}", kind.to_lowercase());
                object["metadata"]["name"] = json!(name);
                object["metadata"]["namespace"] = json!(namespace);
                object.as_object_mut().unwrap().remove("status");
                let created = tusk_api(&env.client, &namespace, kind, "v1alpha1")
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(user_view(&object)).unwrap(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{name} refused: {e}"));
                objects.push((*kind, name, spec_view(&value(&created))));
            }
        }
        Self {
            namespace,
            objects,
            retried: Default::default(),
        }
    }

    /// Every object reads back, at the storage version, as what was written (converted by
    /// Tusk's own conversion); and at every other served version as Tusk's conversion of the
    /// stored object, status included (the operator writes status at `v1`, and what an older
    /// version cannot hold of it travels in the conversion annotation).
    async fn check(&self, env: &Env, versions: &Versions) -> usize {
        let mut reads = 0;
        for (kind, name, written) in &self.objects {
            let (served, storage) = &versions[*kind];
            // OLM may still be settling the CRDs' conversion config for a moment after an
            // upgrade (it re-applies the bundle's placeholder Service, then its own): a read that
            // fails in the conversion webhook is retried for up to two minutes and counted.
            let read = |version: String| async move {
                let started = std::time::Instant::now();
                loop {
                    match tusk_api(&env.client, &self.namespace, kind, &version)
                        .get(name)
                        .await
                    {
                        Ok(read) => return value(&read),
                        Err(e)
                            if e.to_string().contains("conversion webhook")
                                && started.elapsed() < Duration::from_secs(120) =>
                        {
                            self.retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => panic!("{name} at {version}: {e}"),
                    }
                }
            };
            let stored = read(storage.clone()).await;
            let expected =
                tusk::api::convert_object(written.clone(), &format!("tusk.dev/{storage}"), 0).unwrap();
            assert_eq!(
                spec_view(&stored),
                spec_view(&expected),
                "{name} read at {storage}"
            );
            reads += 1;
            // The operator may write status between the two reads; then the pair is read again.
            for version in served {
                let mut stored = stored.clone();
                let mut attempts = 0;
                loop {
                    let got = read(version.clone()).await;
                    let expected = tusk::api::convert_object(
                        user_view_with_status(&stored),
                        &format!("tusk.dev/{version}"),
                        0,
                    )
                    .unwrap();
                    if spec_view(&got) == spec_view(&expected) {
                        break;
                    }
                    attempts += 1;
                    assert!(
                        attempts < 10,
                        "{name} read at {version}: {:#}\nexpected {:#}",
                        spec_view(&got),
                        spec_view(&expected)
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    stored = read(storage.clone()).await;
                }
                reads += 1;
            }
        }
        reads
    }
}

/// For each kind, the versions served and the storage version.
type Versions = BTreeMap<String, (Vec<String>, String)>;

/// An object as read, without server-set metadata but with its status.
fn user_view_with_status(object: &Value) -> Value {
    let mut view = user_view(object);
    if let Some(status) = object.get("status") {
        view["status"] = status.clone();
    }
    view
}

/// What a user wrote, without the status the operator owns.
fn spec_view(object: &Value) -> Value {
    let mut view = user_view(object);
    view.as_object_mut().unwrap().remove("status");
    view
}

fn served(inputs: &Inputs, version: &str) -> Versions {
    let release = inputs
        .plan
        .release(&semver::Version::parse(version).unwrap())
        .unwrap();
    release
        .crds
        .iter()
        .map(|(k, v)| (k.clone(), (v.served.clone(), v.storage.clone())))
        .collect()
}

/// Each kind's storage versions along `path`: what `status.storedVersions` must hold.
fn predicted_stored(inputs: &Inputs, path: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for version in path {
        let release = inputs
            .plan
            .release(&semver::Version::parse(version).unwrap())
            .unwrap();
        for (kind, versions) in &release.crds {
            out.entry(kind.clone())
                .or_default()
                .insert(versions.storage.clone());
        }
    }
    out
}

/// Waits until the operator has reconciled every object's current generation.
async fn reconciled(env: &Env, written: &Written) {
    for (kind, name, _) in &written.objects {
        let api = tusk_api(&env.client, &written.namespace, kind, "v1");
        eventually(
            &format!("{kind} {name} reconciled"),
            Duration::from_secs(180),
            || async {
                let object = value(&api.get(name).await.ok()?);
                let generation = object["metadata"]["generation"].as_i64()?;
                let ready = object["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")?
                    .clone();
                // Kinds without a controller say so; the others report whatever they found
                // (users and databases here have no SQL endpoint to reach).
                let pending = matches!(*kind, "PostgresBackup" | "PostgresBackupSchedule");
                (object["status"]["observedGeneration"] == generation
                    && (!pending || ready["reason"] == "NotReconciled"))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Retries `call` while it fails in the conversion webhook, for up to two minutes: OLM re-applies
/// the bundle's placeholder conversion config for a moment after it installs or upgrades, before
/// writing its own again.
async fn while_olm_settles<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Ok(result) => return result,
            Err(e)
                if e.to_string().contains("conversion webhook")
                    && started.elapsed() < Duration::from_secs(120) =>
            {
                println!("{what}: retrying while OLM settles the CRDs: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn crd_conversion(crd: &Value) -> &Value {
    &crd["spec"]["conversion"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operatorhub_install_from_the_stable_channel() {
    let mut env = Env::start().await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&[catalog::blobs(&inputs, true)]).await;
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
        let crd = value(&crds.get(&format!("{plural}.tusk.dev")).await.unwrap());
        let conversion = crd_conversion(&crd);
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
    let cluster_roles: Vec<Value> = owned_by_csv(
        Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(env.client.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect(),
    );
    let roles: Vec<Value> = owned_by_csv(
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(env.client.clone(), OPERATORS_NAMESPACE)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect(),
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
    // namespaces, and it lets the account read its serving certificate and update its
    // OperatorCondition.
    let mut made: Vec<(String, BTreeSet<String>)> = Vec::new();
    for role in cluster_roles.iter().chain(&roles) {
        let rules = granted(std::slice::from_ref(role));
        println!(
            "OLM made {} {}: {rules:?}",
            role["kind"], role["metadata"]["name"]
        );
        made.push((role["kind"].as_str().unwrap().to_owned(), rules));
    }
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]| {
        canonical_rule(
            &json!({"apiGroups": groups, "resources": resources, "verbs": verbs, "resourceNames": names}),
        )
    };
    let mut lifted = declared("permissions");
    lifted.insert(rule(&[""], &["namespaces"], &["get", "list", "watch"], &[]));
    let mut expected = vec![
        ("ClusterRole".to_owned(), declared("clusterPermissions")),
        ("ClusterRole".to_owned(), lifted),
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
    made.sort();
    expected.sort();
    assert_eq!(made, expected);
    assert!(
        made.iter().flat_map(|(_, rules)| rules).all(|r| !r.contains('*')),
        "no wildcards"
    );

    // The real operator, as OLM's ServiceAccount, with OLM's certificate.
    env.operator(Mode::Run).await;
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

fn canonical_rule(rule: &Value) -> String {
    let list = |field: &str| -> Vec<String> {
        let mut v: Vec<String> = rule[field]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    };
    format!(
        "{:?} {:?} {:?} {:?}",
        list("apiGroups"),
        list("resources"),
        list("verbs"),
        list("resourceNames")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_upgrades_across_crd_versions_keep_every_object() {
    let mut env = Env::start().await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&[catalog::blobs(&inputs, true)]).await;
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

    // 1.0.0: v1 everywhere; the controllers run.
    env.upgrade("0.2.0", "1.0.0", Mode::Run).await;
    let reads = written.check(&env, &served(&inputs, "1.0.0")).await;
    assert_eq!(
        env.stored_versions().await,
        predicted_stored(&inputs, &["0.1.0", "0.2.0", "1.0.0"])
    );
    reconciled(&env, &written).await;
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
    reconciled(&env, &written).await;
    println!(
        "1.0.0: {reads} reads, every object reconciled; reads retried while OLM settled the CRDs so far: {}",
        written.retried.load(std::sync::atomic::Ordering::Relaxed)
    );

    // 1.1.0, the head: the same versions as 1.0.0.
    env.upgrade("1.0.0", HEAD, Mode::Run).await;
    let reads = written.check(&env, &served(&inputs, HEAD)).await;
    println!("{HEAD}: {reads} reads");

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
    env.serve(&[catalog::blobs(&next, true)]).await;
    env.upgrade(HEAD, NEXT, Mode::Run).await;
    let reads = written.check(&env, &served(&next, NEXT)).await;
    println!("{NEXT} (drops v1alpha1 after migration): {reads} reads");
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(env.client.clone());
    let clusters = crds.get("postgresclusters.tusk.dev").await.unwrap();
    assert!(!clusters.spec.versions.iter().any(|v| v.name == "v1alpha1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_range_upgrades_straight_to_the_head() {
    let mut env = Env::start().await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&[catalog::blobs(&inputs, true)]).await;
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
    let mut env = Env::start().await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&[catalog::blobs(&inputs, true), fixture::blobs(PACKAGE, ">=1.0.0")])
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
    let mut env = Env::start().await;
    let inputs = Inputs::load(&repo()).unwrap();
    env.serve(&[catalog::blobs(&inputs, true)]).await;
    env.subscribe(PACKAGE, "stable", false, None).await;
    env.succeeded(&csv_name(HEAD)).await;
    env.operator(Mode::Run).await;
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
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), OPERATORS_NAMESPACE);
    let deadline = std::time::Instant::now() + INSTALL;
    while let Ok(deployment) = deployments.get(PACKAGE).await {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(env.plane.dir().join("logs/kube-controller-manager.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("garbage") || l.contains("tusk-operator"))
                .collect();
            panic!(
                "the operator Deployment outlived its CSV: {:?}\n{}",
                deployment.metadata.owner_references,
                tail[tail.len().saturating_sub(30)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.want(None).await;

    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(env.client.clone());
    for (_, plural, _) in KINDS {
        let name = format!("{plural}.tusk.dev");
        let deadline = std::time::Instant::now() + INSTALL;
        let crd = loop {
            let crd = crds.get(&name).await.unwrap();
            let strategy = crd
                .spec
                .conversion
                .as_ref()
                .map(|c| c.strategy.clone())
                .unwrap_or_default();
            if strategy != "Webhook" {
                break crd;
            }
            if std::time::Instant::now() > deadline {
                let writers: Vec<String> = crd
                    .metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .map(|m| format!("{:?} {:?} {:?}", m.manager, m.operation, m.time))
                    .collect();
                panic!(
                    "{name} still converts through {:?} after uninstall; written by {writers:#?}\n{}",
                    crd.spec
                        .conversion
                        .and_then(|c| c.webhook)
                        .and_then(|w| w.client_config)
                        .and_then(|c| c.service),
                    env.olm.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        println!(
            "{name} after uninstall: conversion {:?}",
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
    let mut env = Env::start().await;
    // 0.1.0 stores v1alpha1; the next release replaces it and serves v1alpha1 no more.
    let next = inputs_with_drop("0.1.0");
    env.serve(&[catalog::blobs(&next, true)]).await;
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
