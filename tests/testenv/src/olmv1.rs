//! OLM v1 on the local control plane: operator-framework/operator-controller's `catalogd` and
//! `operator-controller` (built by `hack/testbin.sh` from their Go module) as local processes,
//! with their CRDs, and cert-manager (its controllers and its cainjector) as the certificate
//! provider for bundles with webhooks, as upstream's default install has it.
//!
//! Out of a cluster, each runs as its pod would:
//! - with its ServiceAccount's token at `/var/run/secrets/kubernetes.io/serviceaccount` (both read
//!   that fixed path at start to name themselves), bind-mounted in a mount namespace of its own;
//! - catalogd serves catalogs over HTTPS on loopback with a certificate for `localhost`, which
//!   operator-controller trusts through `--catalogd-cas-dir`;
//! - both pull images through containers/image, which reads `$HOME/.config/containers/`: the
//!   loopback registries are listed there as plain HTTP (`insecure = true`);
//! - their caches live in the work directory (their defaults under `/var/cache` are emptied at
//!   start).
//!
//! [`OlmV1Cluster`] installs an operator through it as an administrator would: a
//! `ClusterCatalog` of a catalog image and a `ClusterExtension`, with the operator's pod run
//! locally by [`LocalOperator`].

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    ConnectProxy, ControlPlane, Options, Result, Seen, Wait,
    cert_manager::CertManager,
    control_plane::free_port,
    olm::{
        apply, failed,
        operator::{LocalOperator, Mode, Operator},
        run,
    },
    pki::Ca,
    process::Supervised,
};

/// The namespace OLM v1 keeps its own state in (Helm release Secrets, among others).
pub const SYSTEM_NAMESPACE: &str = "olmv1-system";

/// How long OLM v1 may take for one step of an install or upgrade.
pub const INSTALL: Duration = Duration::from_secs(300);

/// `olm.operatorframework.io/v1` `ClusterCatalog`.
pub fn cluster_catalogs() -> ApiResource {
    olm_v1_resource("ClusterCatalog", "clustercatalogs")
}

/// `olm.operatorframework.io/v1` `ClusterExtension`.
pub fn cluster_extensions() -> ApiResource {
    olm_v1_resource("ClusterExtension", "clusterextensions")
}

fn olm_v1_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "olm.operatorframework.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "olm.operatorframework.io/v1".to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// The condition `type` of an object's status, if it has one.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Where a pod finds its ServiceAccount's token and CA.
const IN_CLUSTER: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A directory that holds what a pod of ServiceAccount `namespace/name` (created here) finds at
/// [`IN_CLUSTER`]: a token valid for a day, the apiserver's CA and the namespace.
pub(crate) async fn service_account_files(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> Result<PathBuf> {
    apply(
        plane,
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        ),
    )?;
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 86400}})).expect("a token request");
    let token =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(plane.client().await?, namespace)
            .create_token_request(name, &kube::api::PostParams::default(), &request)
            .await?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
    let account = dir.join(format!("serviceaccount-{name}"));
    std::fs::create_dir_all(&account).map_err(|e| failed("service account", e.to_string()))?;
    for (file, contents) in [
        ("token", token),
        ("ca.crt", plane.ca_pem().to_owned()),
        ("namespace", namespace.to_owned()),
    ] {
        std::fs::write(account.join(file), contents).map_err(|e| failed("service account", e.to_string()))?;
    }
    std::fs::create_dir_all(IN_CLUSTER).map_err(|e| {
        failed(
            "service account",
            format!("{IN_CLUSTER}: {e} (the in-cluster config's fixed path; the tests run as root)"),
        )
    })?;
    Ok(account)
}

/// The arguments of `/usr/bin/unshare` that run `program` with `args` and with `account` (from
/// [`service_account_files`]) at [`IN_CLUSTER`], seen by that process alone, and without `CI` in
/// its environment.
pub(crate) fn as_pod(account: &Path, program: &Path, args: &[String]) -> Vec<String> {
    let mut all = vec![
        "--mount".to_owned(),
        "--propagation=private".to_owned(),
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("mount --bind \"$0\" {IN_CLUSTER} && exec /usr/bin/env -u CI \"$@\""),
        account.display().to_string(),
        program.display().to_string(),
    ];
    all.extend_from_slice(args);
    all
}

/// OLM v1's two processes and its certificate provider, running until dropped.
pub struct OlmV1 {
    catalogd: Supervised,
    controller: Supervised,
    /// cert-manager, OLM v1's provider of webhook certificates.
    pub cert_manager: CertManager,
}

impl std::fmt::Debug for OlmV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OlmV1").finish_non_exhaustive()
    }
}

impl OlmV1 {
    /// Installs OLM v1's CRDs and [`SYSTEM_NAMESPACE`], starts cert-manager, catalogd and
    /// operator-controller with their files in `dir`, pulling from the plain-HTTP `registries`
    /// (`host:port`), and waits until both answer their health probes.
    pub async fn start(plane: &ControlPlane, dir: &Path, registries: &[&str]) -> Result<Self> {
        let toolchain = plane.toolchain();
        let cert_manager = CertManager::start(plane).await?;
        // Its own CRDs, and the monitoring CRDs bundles may ship objects of.
        for share in ["olmv1-crds", "prometheus-crds"] {
            let mut crds = plane.kubectl();
            // The share directories are symbolic links; kubectl only walks one given as `dir/`.
            crds.args(["apply", "--server-side", "-f"])
                .arg(format!("{}/", toolchain.share(share).display()));
            run(crds, None, "installing OLM v1's CRDs")?;
        }
        let mut wait = plane.kubectl();
        wait.args([
            "wait",
            "--for=condition=Established",
            "crd/clustercatalogs.olm.operatorframework.io",
            "crd/clusterextensions.olm.operatorframework.io",
            "--timeout=60s",
        ]);
        run(wait, None, "waiting for OLM v1's CRDs")?;
        apply(
            plane,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SYSTEM_NAMESPACE}\n"),
        )?;

        let io = |e: std::io::Error| failed("OLM v1", e.to_string());
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let ca = Ca::new("tusk-testenv-catalogd-ca");
        let serving = ca.loopback_serving_cert("catalogd");
        let (cert, key, cas) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("cas"));
        std::fs::write(&cert, &serving.cert_pem).map_err(io)?;
        std::fs::write(&key, &serving.key_pem).map_err(io)?;
        std::fs::create_dir_all(&cas).map_err(io)?;
        std::fs::write(cas.join("ca.crt"), ca.cert_pem()).map_err(io)?;
        // containers/image (v5.36 here) reads its per-user files under $HOME before the system's:
        // the loopback registries, plain HTTP; and a policy that checks no signature, as with
        // no policy on a node, said here so that the programs need not fall back to it.
        let home = dir.join("home");
        let containers = home.join(".config/containers");
        std::fs::create_dir_all(&containers).map_err(io)?;
        let conf: String = registries
            .iter()
            .map(|host| format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n\n"))
            .collect();
        std::fs::write(containers.join("registries.conf"), conf).map_err(io)?;
        std::fs::write(
            containers.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .map_err(io)?;
        let env = [
            ("KUBECONFIG", plane.kubeconfig().as_os_str()),
            ("HOME", home.as_os_str()),
            ("TMPDIR", tmp.as_os_str()),
        ];

        let (catalogd_health, controller_health) = (free_port()?, free_port()?);
        let catalogs = free_port()?;
        let account = service_account_files(plane, SYSTEM_NAMESPACE, "catalogd", dir).await?;
        let catalogd = Supervised::spawn_with_env(
            plane.dir(),
            "catalogd",
            Path::new("/usr/bin/unshare"),
            &as_pod(
                &account,
                &toolchain.bin("catalogd"),
                &[
                    format!("--system-namespace={SYSTEM_NAMESPACE}"),
                    format!("--cache-dir={}", dir.join("catalogd-cache").display()),
                    format!("--tls-cert={}", cert.display()),
                    format!("--tls-key={}", key.display()),
                    format!("--catalogs-server-addr=127.0.0.1:{catalogs}"),
                    format!("--external-address=localhost:{catalogs}"),
                    format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
                    format!("--health-probe-bind-address=127.0.0.1:{catalogd_health}"),
                    format!("--webhook-server-port={}", free_port()?),
                ],
            ),
            &env,
        )?;
        let account = service_account_files(plane, SYSTEM_NAMESPACE, "operator-controller", dir).await?;
        let controller = Supervised::spawn_with_env(
            plane.dir(),
            "operator-controller",
            Path::new("/usr/bin/unshare"),
            &as_pod(
                &account,
                &toolchain.bin("operator-controller"),
                &[
                    format!("--system-namespace={SYSTEM_NAMESPACE}"),
                    format!("--cache-path={}", dir.join("operator-controller-cache").display()),
                    format!("--catalogd-cas-dir={}", cas.display()),
                    format!("--tls-cert={}", cert.display()),
                    format!("--tls-key={}", key.display()),
                    format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
                    format!("--health-probe-bind-address=127.0.0.1:{controller_health}"),
                    // Alpha in this release: certificates from cert-manager for bundles with
                    // webhooks, and the check that the installer's ServiceAccount may do all that
                    // a bundle needs before anything is applied.
                    "--feature-gates=WebhookProviderCertManager=true,PreflightPermissions=true".to_owned(),
                ],
            ),
            &env,
        )?;
        let this = Self {
            catalogd,
            controller,
            cert_manager,
        };
        for (process, port) in [
            (&this.catalogd, catalogd_health),
            (&this.controller, controller_health),
        ] {
            Wait::up_to(Duration::from_secs(60))
                .every(Duration::from_millis(300))
                .until(&format!("{} to be healthy", process.name()), async || {
                    if !process.alive() {
                        return Seen::Never(format!("{} exited:\n{}", process.name(), process.log_tail(30)));
                    }
                    match crate::http_get("127.0.0.1", port, "/readyz").await {
                        Some((200, _)) => Seen::Holds(()),
                        other => Seen::NotYet(format!("/readyz: {other:?}")),
                    }
                })
                .await
                .map_err(|unmet| failed("OLM v1", format!("{unmet}\n{}", process.log_tail(30))))?;
        }
        Ok(this)
    }

    /// The last lines of catalogd's and operator-controller's logs.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- catalogd ---\n{}\n--- operator-controller ---\n{}",
            self.catalogd.log_tail(lines),
            self.controller.log_tail(lines)
        )
    }
}

/// One control plane with OLM v1 and the egress proxy; the operator's pod on demand.
pub struct OlmV1Cluster {
    /// The egress proxy the apiserver reaches Services through.
    pub proxy: ConnectProxy,
    /// The control plane.
    pub plane: ControlPlane,
    /// OLM v1.
    pub olm: OlmV1,
    /// An admin client.
    pub client: Client,
    /// The operator being installed.
    pub operator: Operator,
    /// The namespace the operator is installed into (`spec.namespace` of its ClusterExtension).
    pub namespace: String,
    work: tempfile::TempDir,
    pod: LocalOperator,
}

impl OlmV1Cluster {
    /// Starts a control plane with the egress proxy and OLM v1 pulling from `registries`, and
    /// makes `namespace`; the operator's pod follows [`OlmV1Cluster::want`].
    pub async fn start(operator: Operator, registries: &[&str], namespace: &str) -> Self {
        let proxy = ConnectProxy::start().expect("the egress proxy");
        let plane = ControlPlane::start(Options {
            egress_selector_config: Some(proxy.config_file()),
            ..Options::default()
        })
        .await
        .expect("the control plane");
        let work = tempfile::tempdir().expect("a work dir");
        let olm = OlmV1::start(&plane, &work.path().join("olmv1"), registries)
            .await
            .expect("OLM v1");
        apply(
            &plane,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"),
        )
        .expect("the install namespace");
        let client = plane.client().await.expect("a client");
        let pod = LocalOperator::start(
            client.clone(),
            proxy.router(),
            work.path().to_owned(),
            namespace.to_owned(),
            operator.clone(),
        );
        Self {
            proxy,
            plane,
            olm,
            client,
            operator,
            namespace: namespace.to_owned(),
            work,
            pod,
        }
    }

    /// A directory for the test's own files, removed with the cluster.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Applies ClusterCatalog `name` of `image` and waits until catalogd serves it; gives it.
    pub async fn catalog(&self, name: &str, image: &str) -> Value {
        let catalogs: Api<DynamicObject> = Api::all_with(self.client.clone(), &cluster_catalogs());
        let catalog: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "olm.operatorframework.io/v1",
            "kind": "ClusterCatalog",
            "metadata": {"name": name},
            "spec": {"source": {"type": "Image", "image": {"ref": image}}},
        }))
        .expect("a ClusterCatalog");
        catalogs
            .patch(
                name,
                &PatchParams::apply("tusk-test").force(),
                &Patch::Apply(&catalog),
            )
            .await
            .expect("applying the ClusterCatalog");
        Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(&format!("ClusterCatalog {name} to be Serving"), async || {
                let catalog =
                    serde_json::to_value(catalogs.get(name).await.map_err(|e| e.to_string())?).expect("JSON");
                match condition(&catalog, "Serving") {
                    Some(c) if c["status"] == "True" => Ok(catalog),
                    _ => Err(format!("{:#}", catalog["status"])),
                }
            })
            .await
            .unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(30)))
    }

    /// The ClusterExtensions.
    pub fn extensions(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &cluster_extensions())
    }

    /// Applies ClusterExtension `name` installing the operator's package into the install
    /// namespace as ServiceAccount `installer` of that namespace, with `catalog` as its
    /// `spec.source.catalog` (the package name is added) and `install` (unless null) as its
    /// `spec.install`.
    pub async fn extend(&self, name: &str, installer: &str, catalog: Value, install: Value) {
        let mut catalog = catalog;
        catalog["packageName"] = json!(self.operator.package);
        let extension: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "olm.operatorframework.io/v1",
            "kind": "ClusterExtension",
            "metadata": {"name": name},
            "spec": {
                "namespace": self.namespace,
                "serviceAccount": {"name": installer},
                "source": {"sourceType": "Catalog", "catalog": catalog},
            },
        }))
        .expect("a ClusterExtension");
        let mut extension = extension;
        if !install.is_null() {
            extension.data["spec"]["install"] = install;
        }
        self.extensions()
            .patch(
                name,
                &PatchParams::apply("tusk-test").force(),
                &Patch::Apply(&extension),
            )
            .await
            .unwrap_or_else(|e| panic!("applying ClusterExtension {name}: {e}"));
    }

    /// Waits until ClusterExtension `name` has installed `version` (`Installed` True, and
    /// `Progressing` True `Succeeded`); gives it.
    pub async fn installed(&self, name: &str, version: &str) -> Value {
        let extensions = self.extensions();
        Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(
                &format!("ClusterExtension {name} to install {version}"),
                async || {
                    let extension =
                        serde_json::to_value(extensions.get(name).await.map_err(|e| e.to_string())?)
                            .expect("JSON");
                    let installed = condition(&extension, "Installed").is_some_and(|c| c["status"] == "True");
                    let settled = condition(&extension, "Progressing")
                        .is_some_and(|c| c["status"] == "True" && c["reason"] == "Succeeded");
                    if installed && settled && extension["status"]["install"]["bundle"]["version"] == version
                    {
                        Ok(extension)
                    } else {
                        Err(format!("{:#}", extension["status"]))
                    }
                },
            )
            .await
            .unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(30)))
    }

    /// Waits until ClusterExtension `name`'s `Progressing` condition has reason `reason` and a
    /// message that contains `part`; gives the condition.
    pub async fn progressing(&self, name: &str, reason: &str, part: &str) -> Value {
        let extensions = self.extensions();
        Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(
                &format!("ClusterExtension {name} to be {reason} with {part:?}"),
                async || {
                    let extension =
                        serde_json::to_value(extensions.get(name).await.map_err(|e| e.to_string())?)
                            .expect("JSON");
                    match condition(&extension, "Progressing") {
                        Some(c)
                            if c["reason"] == reason
                                && c["message"].as_str().is_some_and(|m| m.contains(part)) =>
                        {
                            Ok(c.clone())
                        }
                        _ => Err(format!("{:#}", extension["status"])),
                    }
                },
            )
            .await
            .unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(30)))
    }

    /// Deletes ClusterExtension `name` and waits until it is gone.
    pub async fn delete_extension(&self, name: &str) {
        let extensions = self.extensions();
        extensions
            .delete(name, &DeleteParams::foreground())
            .await
            .unwrap_or_else(|e| panic!("deleting ClusterExtension {name}: {e}"));
        Wait::up_to(INSTALL)
            .every(Duration::from_millis(500))
            .until(
                &format!("ClusterExtension {name} to be gone"),
                async || match extensions.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) => Err(format!("{:?} {:#}", e.metadata.finalizers, e.data["status"])),
                    Err(e) => Err(e.to_string()),
                },
            )
            .await
            .unwrap_or_else(|unmet| panic!("{unmet}\n{}", self.olm.log_tail(30)));
    }

    /// Asks for the local operator in `mode` (the controllers run as the operator's own
    /// ServiceAccount, which OLM v1 made from the bundle), or for none.
    pub async fn want(&self, mode: Option<Mode>) {
        let kubeconfig = match mode {
            Some(Mode::Run) => Some(
                self.plane
                    .token_kubeconfig(&self.namespace, &self.operator.package)
                    .await
                    .expect("a kubeconfig of the operator's ServiceAccount"),
            ),
            _ => None,
        };
        self.pod.want(mode.map(|m| (m, kubeconfig)));
    }

    /// Asks for the local operator in `mode` and waits until it runs so.
    pub async fn run_operator(&self, mode: Mode) {
        self.want(Some(mode)).await;
        crate::eventually(
            &format!("the local operator to run in {mode:?} mode"),
            INSTALL,
            async || (self.pod.running() == Some(mode)).then_some(()),
        )
        .await;
    }

    /// What the local operator is doing, and its last `lines` lines of log about `about`.
    pub fn operator_log_tail(&self, lines: usize, about: &str) -> String {
        self.pod.log_tail(lines, about)
    }

    /// The loopback port where the operator process behind the webhook Service serves.
    pub fn operator_webhook_port(&self) -> Option<u16> {
        self.pod.webhook_port()
    }

    /// How many operator processes were started so far.
    pub fn operator_started(&self) -> usize {
        self.pod.started()
    }

    /// Every interval since `since` in which no operator process served the webhook Service.
    pub fn serving_gaps(&self, since: std::time::Instant) -> Vec<(std::time::Instant, Duration)> {
        self.pod.gaps(since)
    }
}
