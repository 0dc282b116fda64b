//! Installing an operator through real OLM, step by step as an administrator would: a control
//! plane whose apiserver reaches Services through the egress proxy, OLM, a catalog served by
//! `opm serve`, a Subscription, InstallPlans approved by hand, CSVs that succeed, and the
//! operator's pod run locally by [`LocalOperator`].
//!
//! Everything here takes the operator and its catalog as data ([`Operator`], catalog files), so
//! this crate needs neither the operator nor the generator that makes its catalog.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    ConnectProxy, ControlPlane, Options, Seen, Wait, eventually,
    olm::{
        CatalogServer, OLM_NAMESPACE, OPERATORS_NAMESPACE, Olm, catalog_source,
        operator::{LocalOperator, Mode, Operator},
    },
};

/// The name of the CatalogSource that serves the catalogs of [`OlmCluster::serve`].
pub const CATALOG: &str = "tusk-catalog";

/// How long OLM may take for one step of an install or upgrade.
pub const INSTALL: Duration = Duration::from_secs(300);

/// How long OLM may take to settle a CRD's conversion after an install or upgrade.
pub const SETTLE: Duration = Duration::from_secs(120);

/// The name of the CSV of `package` at `version`, as OLM bundles name it.
pub fn csv_name(package: &str, version: &str) -> String {
    format!("{package}.v{version}")
}

/// The API of one of OLM's `operators.coreos.com/v1alpha1` kinds in `namespace`.
pub fn olm_api(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("operators.coreos.com", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// An object as JSON.
pub fn value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).expect("a Kubernetes object is JSON")
}

/// Retries `call` while it fails in the conversion webhook, for up to [`SETTLE`], and panics on
/// any other failure: OLM re-applies the bundle's placeholder conversion config for a moment
/// after it installs or upgrades, before writing its own again.
pub async fn while_olm_settles<T>(what: &str, mut call: impl AsyncFnMut() -> Result<T, kube::Error>) -> T {
    eventually(
        what,
        Wait::up_to(SETTLE).every(Duration::from_millis(500)),
        async || match call().await {
            Ok(result) => Seen::Holds(result),
            Err(e) if e.to_string().contains("conversion webhook") => {
                println!("{what}: retrying while OLM settles the CRDs: {e}");
                Seen::NotYet(e.to_string())
            }
            Err(e) => Seen::Never(e.to_string()),
        },
    )
    .await
}

/// One control plane with OLM, the egress proxy and catalogs; the operator's pod on demand.
pub struct OlmCluster {
    /// The egress proxy the apiserver reaches Services through.
    pub proxy: ConnectProxy,
    /// The control plane.
    pub plane: ControlPlane,
    /// OLM's operators.
    pub olm: Olm,
    /// An admin client.
    pub client: Client,
    /// The operator being installed.
    pub operator: Operator,
    work: tempfile::TempDir,
    catalogs: Vec<CatalogServer>,
    pod: LocalOperator,
    packageserver: Option<super::packageserver::PackageServer>,
    unpack: Option<super::unpack::UnpackPods>,
}

impl OlmCluster {
    /// Starts a control plane with the egress proxy, and OLM on it; the operator's pod follows
    /// [`OlmCluster::want`].
    pub async fn start(operator: Operator) -> Self {
        let proxy = ConnectProxy::start().expect("the egress proxy");
        let plane = ControlPlane::start(Options {
            egress_selector_config: Some(proxy.config_file()),
            // Bundle unpack Jobs run in OLM's namespace; `run_unpack_pods` runs their pods.
            local_job_namespaces: vec![OLM_NAMESPACE.to_owned()],
            ..Options::default()
        })
        .await
        .expect("the control plane");
        let olm = Olm::start(&plane).await.expect("OLM");
        let client = plane.client().await.expect("a client");
        let work = tempfile::tempdir().expect("a work dir");
        let pod = LocalOperator::start(
            client.clone(),
            proxy.router(),
            work.path().to_owned(),
            OPERATORS_NAMESPACE.to_owned(),
            operator.clone(),
        );
        Self {
            proxy,
            plane,
            olm,
            client,
            operator,
            work,
            catalogs: Vec::new(),
            pod,
            packageserver: None,
            unpack: None,
        }
    }

    /// Runs OLM's bundle unpack pods from now on (once), as local processes (see
    /// [`super::unpack`]).
    pub async fn run_unpack_pods(&mut self) -> &super::unpack::UnpackPods {
        if self.unpack.is_none() {
            let started =
                super::unpack::UnpackPods::start(&self.plane, OLM_NAMESPACE, self.work.path().join("unpack"))
                    .await
                    .expect("the unpack pod runner");
            self.unpack = Some(started);
        }
        self.unpack.as_ref().expect("started")
    }

    /// Serves catalog image `reference` from the registry on loopback: pulls and unpacks it, runs
    /// it as its `Entrypoint` and `Cmd` say ([`CatalogServer::start_image`]), points the
    /// CatalogSource at it and waits until OLM is connected. Returns the image as unpacked.
    pub async fn serve_image(&mut self, reference: &str) -> crate::image::Unpacked {
        let dir = self.work.path().join(format!("catalog-{}", self.catalogs.len()));
        let image = crate::image::pull(reference, &dir)
            .await
            .unwrap_or_else(|e| panic!("pulling the catalog image: {e}"));
        let scratch = dir.join("tmp");
        std::fs::create_dir_all(&scratch).expect("the image's /tmp");
        let server = CatalogServer::start_image(
            &self.plane,
            &format!("opm-{}", self.catalogs.len()),
            &image,
            &scratch,
        )
        .await
        .expect("the catalog image's opm serve");
        self.connect(server).await;
        image
    }

    /// The name of the operator's CSV at `version`.
    pub fn csv_name(&self, version: &str) -> String {
        csv_name(&self.operator.package, version)
    }

    /// Starts OLM's packageserver (once), so that `PackageManifest`s are served as the
    /// OpenShift console reads them (see [`super::packageserver`]).
    pub async fn serve_package_manifests(&mut self) -> &super::packageserver::PackageServer {
        if self.packageserver.is_none() {
            let started = super::packageserver::PackageServer::start(&self.plane, &self.proxy.router())
                .await
                .expect("OLM's packageserver");
            self.packageserver = Some(started);
        }
        self.packageserver.as_ref().expect("started")
    }

    /// The operator's `PackageManifest`, as the OpenShift console reads it: starts packageserver
    /// (once) and waits until it serves the package from the catalog.
    pub async fn package_manifest(&mut self) -> DynamicObject {
        self.serve_package_manifests().await;
        let manifests: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            OPERATORS_NAMESPACE,
            &super::packageserver::package_manifests(),
        );
        let package = self.operator.package.clone();
        eventually(&format!("PackageManifest {package}"), INSTALL, async || {
            manifests.get(&package).await.ok()
        })
        .await
    }

    /// The directory the operator's pods keep their files in, each in a directory of its own.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Serves a file-based catalog of `files` (paths relative to the catalog's root, and their
    /// contents) with opm, points the CatalogSource at it, and waits until OLM is connected.
    pub async fn serve(&mut self, files: &[(PathBuf, String)]) {
        let dir = self.work.path().join(format!("catalog-{}", self.catalogs.len()));
        for (path, contents) in files {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("a file in the catalog")).expect("a catalog dir");
            std::fs::write(&file, contents).expect("writing the catalog");
        }
        let server = CatalogServer::start(&self.plane, &format!("opm-{}", self.catalogs.len()), &dir)
            .await
            .expect("opm serve");
        self.connect(server).await;
    }

    /// Points the CatalogSource at `server` and waits until OLM is connected.
    async fn connect(&mut self, server: CatalogServer) {
        let address = server.address();
        crate::olm::apply(&self.plane, &catalog_source(CATALOG, &address)).expect("the CatalogSource");
        self.catalogs.push(server);
        let sources = olm_api(&self.client, OLM_NAMESPACE, "CatalogSource", "catalogsources");
        eventually(
            "the CatalogSource to connect",
            Duration::from_secs(120),
            async || {
                let source = value(&sources.get(CATALOG).await.ok()?);
                let state = &source["status"]["connectionState"];
                (state["lastObservedState"] == "READY" && state["address"] == address.as_str()).then_some(())
            },
        )
        .await;
    }

    /// Subscribes to `package` in `channel` of the catalog, from `starting` if given; with
    /// `manual`, every InstallPlan waits for [`OlmCluster::approve`].
    pub async fn subscribe(&self, package: &str, channel: &str, manual: bool, starting: Option<&str>) {
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
                &serde_json::from_value(subscription).expect("a Subscription"),
            )
            .await
            .expect("creating the Subscription");
    }

    /// Waits for the InstallPlan that installs `csv`, checks that it installs only that CSV, and
    /// approves it; returns the plan once OLM has finished it.
    pub async fn approve(&self, csv: &str) -> Value {
        let plans = olm_api(&self.client, OPERATORS_NAMESPACE, "InstallPlan", "installplans");
        let plan = eventually(&format!("an InstallPlan for {csv}"), INSTALL, async || {
            let list = plans.list(&Default::default()).await.ok()?;
            list.items.into_iter().map(|p| value(&p)).find(|p| {
                p["spec"]["clusterServiceVersionNames"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == csv))
            })
        })
        .await;
        let name = plan["metadata"]["name"]
            .as_str()
            .expect("a named plan")
            .to_owned();
        assert_eq!(
            plan["spec"]["clusterServiceVersionNames"],
            json!([csv]),
            "{plan:#}"
        );
        assert_eq!(plan["spec"]["approval"], "Manual");
        eventually(&format!("{name} to require approval"), INSTALL, async || {
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
            .expect("approving the InstallPlan");
        self.finished_plan(&name).await
    }

    /// Waits until InstallPlan `name` is Complete or Failed.
    pub async fn finished_plan(&self, name: &str) -> Value {
        let plans = olm_api(&self.client, OPERATORS_NAMESPACE, "InstallPlan", "installplans");
        eventually(&format!("{name} to finish"), INSTALL, async || {
            let plan = value(&plans.get(name).await.ok()?);
            matches!(plan["status"]["phase"].as_str(), Some("Complete" | "Failed")).then_some(plan)
        })
        .await
    }

    /// CSV `name`, if it exists.
    pub async fn csv(&self, name: &str) -> Option<Value> {
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
    pub async fn succeeded(&self, name: &str) -> Value {
        let succeeded = Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(&format!("{name} to succeed"), async || {
                match self.csv(name).await {
                    Some(csv) if csv["status"]["phase"] == "Succeeded" => Ok(csv),
                    Some(csv) => Err(format!("OLM says {}", csv["status"])),
                    None => Err("no CSV".to_owned()),
                }
            })
            .await;
        succeeded.unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(40)))
    }

    /// Waits until CSV `name` is gone.
    pub async fn gone(&self, name: &str) {
        eventually(&format!("{name} to be gone"), INSTALL, async || {
            self.csv(name).await.is_none().then_some(())
        })
        .await;
    }

    /// One approved upgrade from `from` to `to` (versions), with the local operator in `mode`
    /// from the moment OLM makes the webhook Service: the plan completes, `to` succeeds, `from`
    /// is gone and the CRDs convert through OLM's Service.
    pub async fn upgrade(&self, from: &str, to: &str, mode: Mode) {
        self.want(Some(mode)).await;
        let plan = self.approve(&self.csv_name(to)).await;
        assert_eq!(plan["status"]["phase"], "Complete", "{:#}", plan["status"]);
        let csv = self.succeeded(&self.csv_name(to)).await;
        println!(
            "OLM: {} {}: {}",
            self.csv_name(to),
            csv["status"]["phase"],
            csv["status"]["message"]
        );
        self.gone(&self.csv_name(from)).await;
        self.conversion_through_olm().await;
        self.run_operator(mode).await;
    }

    /// Asks for the local operator in `mode` (the controllers run as OLM's ServiceAccount), or
    /// for none. Before OLM has made the Service, this only records the wish.
    pub async fn want(&self, mode: Option<Mode>) {
        let kubeconfig = match mode {
            Some(Mode::Run) => Some(
                self.plane
                    .token_kubeconfig(OPERATORS_NAMESPACE, &self.operator.package)
                    .await
                    .expect("a kubeconfig of OLM's ServiceAccount"),
            ),
            _ => None,
        };
        self.pod.want(mode.map(|m| (m, kubeconfig)));
    }

    /// What the local operator is doing and its last `lines` lines of log about `about`, to
    /// tell why a wait on its work failed (see [`LocalOperator::log_tail`]).
    pub fn operator_log_tail(&self, lines: usize, about: &str) -> String {
        self.pod.log_tail(lines, about)
    }

    /// Every interval since `since` in which no operator process served the webhook Service
    /// (see [`LocalOperator::gaps`]).
    pub fn serving_gaps(&self, since: std::time::Instant) -> Vec<(std::time::Instant, Duration)> {
        self.pod.gaps(since)
    }

    /// What the stand-in kubelet did with the operator's processes (see
    /// [`LocalOperator::events`]).
    pub fn operator_events(&self) -> Vec<(std::time::Instant, super::operator::PodEvent)> {
        self.pod.events()
    }

    /// Asks for the local operator in `mode` and waits until it runs so.
    pub async fn run_operator(&self, mode: Mode) {
        self.want(Some(mode)).await;
        eventually(
            &format!("the local operator to run in {mode:?} mode"),
            INSTALL,
            async || (self.pod.running() == Some(mode)).then_some(()),
        )
        .await;
    }

    fn crds(&self) -> Api<CustomResourceDefinition> {
        Api::all(self.client.clone())
    }

    /// Waits until every CRD of the operator that serves more than one version converts through
    /// the Service OLM made, with OLM's CA. OLM rewrites the bundle's placeholder asynchronously,
    /// after the CSV may already be Succeeded.
    pub async fn conversion_through_olm(&self) {
        let crds = self.crds();
        for name in &self.operator.crds {
            eventually(
                &format!("{name} to convert through OLM's Service"),
                INSTALL,
                async || {
                    let crd = serde_json::to_value(crds.get(name).await.ok()?).ok()?;
                    if crd["spec"]["versions"].as_array()?.len() < 2 {
                        return Some(());
                    }
                    let config = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
                    (config["service"]["namespace"] == OPERATORS_NAMESPACE
                        && config["service"]["name"] == self.operator.service.as_str()
                        && config["caBundle"].as_str().is_some_and(|c| !c.is_empty()))
                    .then_some(())
                },
            )
            .await;
        }
    }

    /// Waits until the operator's Deployment is gone (with its CSV, by garbage collection); on
    /// timeout, says who owned it and what the garbage collector logged about it.
    pub async fn deployment_gone(&self) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), OPERATORS_NAMESPACE);
        let package = &self.operator.package;
        let gone = Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(
                &format!("the Deployment {package} to go with its CSV"),
                async || match deployments.get(package).await {
                    Ok(deployment) => Err(format!("owned by {:?}", deployment.metadata.owner_references)),
                    Err(_) => Ok(()),
                },
            )
            .await;
        if let Err(unmet) = gone {
            let log = std::fs::read_to_string(self.plane.dir().join("logs/kube-controller-manager.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("garbage") || l.contains(package.as_str()))
                .collect();
            panic!(
                "the operator Deployment outlived its CSV: {unmet}\n{}",
                tail[tail.len().saturating_sub(30)..].join("\n")
            );
        }
    }

    /// Waits until none of the operator's CRDs converts through a webhook any more (OLM unhooks
    /// them when the operator is uninstalled) and gives them; on timeout, says which webhook is
    /// still set and who wrote the CRD.
    pub async fn conversion_unhooked(&self) -> Vec<CustomResourceDefinition> {
        let crds = self.crds();
        let mut unhooked = Vec::new();
        for name in &self.operator.crds {
            let crd = Wait::up_to(INSTALL)
                .every(Duration::from_millis(500))
                .until(
                    &format!("{name} to stop converting through a webhook"),
                    async || {
                        let crd = crds.get(name).await.expect("the operator's CRD");
                        let strategy = crd
                            .spec
                            .conversion
                            .as_ref()
                            .map(|c| c.strategy.clone())
                            .unwrap_or_default();
                        if strategy != "Webhook" {
                            return Ok(crd);
                        }
                        let writers: Vec<String> = crd
                            .metadata
                            .managed_fields
                            .iter()
                            .flatten()
                            .map(|m| format!("{:?} {:?} {:?}", m.manager, m.operation, m.time))
                            .collect();
                        Err(format!(
                            "{name} still converts through {:?} after uninstall; written by {writers:#?}",
                            crd.spec
                                .conversion
                                .and_then(|c| c.webhook)
                                .and_then(|w| w.client_config)
                                .and_then(|c| c.service),
                        ))
                    },
                )
                .await
                .unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(20)));
            unhooked.push(crd);
        }
        unhooked
    }

    /// Each of the operator's CRDs, by kind: its `status.storedVersions`.
    pub async fn stored_versions(&self) -> BTreeMap<String, BTreeSet<String>> {
        let crds = self.crds();
        let mut out = BTreeMap::new();
        for name in &self.operator.crds {
            let crd = crds.get(name).await.expect("the operator's CRD");
            out.insert(
                crd.spec.names.kind,
                crd.status
                    .expect("a CRD status")
                    .stored_versions
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            );
        }
        out
    }
}
