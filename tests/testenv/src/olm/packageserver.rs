//! OLM's packageserver, the aggregated API the OpenShift console's OperatorHub reads
//! `PackageManifest`s from: the real `package-server` (built by `hack/testbin.sh` from OLM's
//! module) as a local process, behind a Service in the `olm` namespace and the `APIService`
//! `v1.packages.operators.coreos.com`, as OLM's own packageserver CSV deploys it. kube-apiserver
//! reaches it through the Service's ClusterIP, which the egress proxy forwards to loopback; the
//! apiserver authenticates itself with its front-proxy client certificate, and packageserver
//! delegates authentication and authorization back to it.
//!
//! As a pod would, it runs with its ServiceAccount's token and CA at
//! `/var/run/secrets/kubernetes.io/serviceaccount` (bind-mounted in a mount namespace of its own,
//! so nothing else sees it) and `KUBERNETES_SERVICE_HOST`: OLM 0.46.0's packageserver builds its
//! delegated-authorization client from the in-cluster config whatever `--authorization-kubeconfig`
//! says (`Config` in `pkg/package-server/server/server.go` sets the kubeconfig on the
//! authentication options twice and never on the authorization options). That needs root, as
//! the PostgreSQL pods' harness does. A pod object (run by kwok) carries the Service's
//! endpoints, which the aggregator checks before it calls the Service.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};

use super::{OLM_NAMESPACE, apply, failed};
use crate::{
    ControlPlane, Result, Seen, Wait, connect::Router, control_plane::free_port, pki::Ca, process::Supervised,
};

/// The Service in front of packageserver.
pub const SERVICE: &str = "packageserver-service";

/// Its ServiceAccount.
const ACCOUNT: &str = "packageserver";

/// The `PackageManifest` API, namespaced: every namespace sees the packages of the global
/// catalogs (those in the `olm` namespace).
pub fn package_manifests() -> ApiResource {
    ApiResource {
        group: "packages.operators.coreos.com".to_owned(),
        version: "v1".to_owned(),
        api_version: "packages.operators.coreos.com/v1".to_owned(),
        kind: "PackageManifest".to_owned(),
        plural: "packagemanifests".to_owned(),
    }
}

/// A running packageserver.
pub struct PackageServer {
    process: Supervised,
}

impl std::fmt::Debug for PackageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageServer").finish_non_exhaustive()
    }
}

impl PackageServer {
    /// Starts packageserver for `plane`, makes its Service and APIService, routes the Service
    /// to it through `proxy`, and waits until the APIService is Available.
    pub async fn start(plane: &ControlPlane, proxy: &Router) -> Result<Self> {
        let toolchain = plane.toolchain();
        let dir = plane.dir().join("packageserver");
        std::fs::create_dir_all(&dir).map_err(|e| failed("packageserver", e.to_string()))?;
        let ca = Ca::new("tusk-testenv-packageserver-ca");
        let host = format!("{SERVICE}.{OLM_NAMESPACE}.svc");
        let serving = ca.serving_cert(SERVICE, &[&host, &format!("{host}.cluster.local"), "127.0.0.1"]);
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &serving.cert_pem).map_err(|e| failed("packageserver", e.to_string()))?;
        std::fs::write(&key, &serving.key_pem).map_err(|e| failed("packageserver", e.to_string()))?;
        let port = free_port()?;
        let kubeconfig = plane.kubeconfig().display().to_string();
        // Its ServiceAccount, allowed to ask the apiserver to authenticate and authorize for it.
        let account = crate::olmv1::service_account_files(plane, OLM_NAMESPACE, ACCOUNT, &dir).await?;
        apply(
            plane,
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {ACCOUNT}-auth-delegator\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: system:auth-delegator\nsubjects:\n- kind: ServiceAccount\n  name: {ACCOUNT}\n  namespace: {OLM_NAMESPACE}\n"
            ),
        )?;
        let client = plane.client().await?;
        let (host, api_port) = plane
            .server()
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .ok_or_else(|| failed("packageserver", "the apiserver's address has no port"))?;
        let args = [
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--global-namespace={OLM_NAMESPACE}"),
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            "--interval=30s".to_owned(),
        ];
        let args = crate::olmv1::as_pod(&account, &toolchain.bin("package-server"), &args);
        let process = Supervised::spawn_with_env(
            plane.dir(),
            "package-server",
            std::path::Path::new("/usr/bin/unshare"),
            &args,
            &[
                ("KUBECONFIG", plane.kubeconfig().as_os_str()),
                ("KUBERNETES_SERVICE_HOST", std::ffi::OsStr::new(&host)),
                ("KUBERNETES_SERVICE_PORT", std::ffi::OsStr::new(&api_port)),
            ],
        )?;
        let this = Self { process };
        use base64::Engine;
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        apply(
            plane,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {OLM_NAMESPACE}\nspec:\n  ports:\n  - port: 443\n    targetPort: 5443\n  selector:\n    app: packageserver\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata:\n  name: packageserver\n  namespace: {OLM_NAMESPACE}\n  labels:\n    app: packageserver\nspec:\n  serviceAccountName: {ACCOUNT}\n  containers:\n  - name: packageserver\n    image: quay.io/operator-framework/olm\n    ports:\n    - containerPort: 5443\n---\n\
                 apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.packages.operators.coreos.com\nspec:\n  group: packages.operators.coreos.com\n  version: v1\n  groupPriorityMinimum: 2000\n  versionPriority: 15\n  caBundle: {ca_bundle}\n  service:\n    name: {SERVICE}\n    namespace: {OLM_NAMESPACE}\n    port: 443\n"
            ),
        )?;
        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(client.clone(), OLM_NAMESPACE);
        let ip = services
            .get(SERVICE)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or_else(|| failed("packageserver", "its Service has no ClusterIP"))?;
        proxy.route(&format!("{ip}:443"), ([127, 0, 0, 1], port).into());
        let api_services: kube::Api<DynamicObject> = kube::Api::all_with(
            client,
            &ApiResource {
                group: "apiregistration.k8s.io".to_owned(),
                version: "v1".to_owned(),
                api_version: "apiregistration.k8s.io/v1".to_owned(),
                kind: "APIService".to_owned(),
                plural: "apiservices".to_owned(),
            },
        );
        Wait::up_to(Duration::from_secs(120))
            .every(Duration::from_millis(500))
            .until("the packageserver APIService to be Available", async || {
                if !this.process.alive() {
                    return Seen::Never(format!("package-server exited:\n{}", this.process.log_tail(30)));
                }
                let service = match api_services.get("v1.packages.operators.coreos.com").await {
                    Ok(service) => service,
                    Err(e) => return Seen::NotYet(e.to_string()),
                };
                let conditions = service.data["status"]["conditions"].clone();
                let available = conditions
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Available" && c["status"] == "True");
                if available {
                    Seen::Holds(())
                } else {
                    Seen::NotYet(conditions.to_string())
                }
            })
            .await
            .map_err(|unmet| failed("packageserver", format!("{unmet}\n{}", this.process.log_tail(30))))?;
        Ok(this)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
