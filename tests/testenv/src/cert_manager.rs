//! cert-manager on the control plane: its CRDs, its controllers for Certificates and for CA and
//! SelfSigned issuers, and its cainjector (which puts a Certificate's CA into the CRDs and webhook
//! configurations that ask for it), as local processes (built by `hack/testbin.sh`).

use std::time::Duration;

use crate::{
    ControlPlane, Result, Seen, Unmet, Wait,
    olm::{failed, run},
    process::Supervised,
};

/// The namespace of ClusterIssuers' Secrets.
pub const CLUSTER_RESOURCE_NAMESPACE: &str = "cert-manager";
/// A `selfSigned` ClusterIssuer [`CertManager::start`] makes, and waits Ready for.
pub const SELF_SIGNED_ISSUER: &str = "self-signed";

/// cert-manager's controllers, running until dropped.
#[derive(Debug)]
pub struct CertManager {
    process: Supervised,
    cainjector: Supervised,
}

impl CertManager {
    /// Installs cert-manager's CRDs, starts its controllers and its cainjector, and waits until
    /// the controllers have made the ClusterIssuer [`SELF_SIGNED_ISSUER`] Ready.
    pub async fn start(plane: &ControlPlane) -> Result<Self> {
        let toolchain = plane.toolchain();
        let mut apply = plane.kubectl();
        // The share directory is a symbolic link; kubectl only walks one given as `dir/`.
        apply
            .args(["apply", "--server-side", "-f"])
            .arg(format!("{}/", toolchain.share("cert-manager-crds").display()));
        run(apply, None, "installing cert-manager's CRDs")?;
        let mut wait = plane.kubectl();
        wait.args([
            "wait",
            "--for=condition=Established",
            "crd/certificates.cert-manager.io",
            "crd/certificaterequests.cert-manager.io",
            "crd/issuers.cert-manager.io",
            "crd/clusterissuers.cert-manager.io",
            "--timeout=60s",
        ]);
        run(wait, None, "waiting for cert-manager's CRDs")?;
        let objects = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {CLUSTER_RESOURCE_NAMESPACE}\n---\n\
             apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: {SELF_SIGNED_ISSUER}\n\
             spec:\n  selfSigned: {{}}\n"
        );
        let mut apply = plane.kubectl();
        apply.args(["apply", "--server-side", "-f", "-"]);
        run(apply, Some(&objects), "creating a self-signed ClusterIssuer")?;
        let process = Supervised::spawn(
            plane.dir(),
            "cert-manager",
            &toolchain.bin("cert-manager-controller"),
            &[
                format!("--kubeconfig={}", plane.kubeconfig().display()),
                format!("--cluster-resource-namespace={CLUSTER_RESOURCE_NAMESPACE}"),
            ],
        )?;
        let cainjector = Supervised::spawn(
            plane.dir(),
            "cert-manager-cainjector",
            &toolchain.bin("cert-manager-cainjector"),
            &[format!("--kubeconfig={}", plane.kubeconfig().display())],
        )?;
        Wait::up_to(Duration::from_secs(60))
            .every(Duration::from_millis(500))
            .until("cert-manager to make its ClusterIssuer Ready", async || {
                let mut get = plane.kubectl();
                get.args([
                    "get",
                    "clusterissuer",
                    SELF_SIGNED_ISSUER,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                match run(get, None, "reading the ClusterIssuer") {
                    Ok(ready) if ready.trim() == "True" => Seen::Holds(()),
                    _ if !process.alive() => {
                        Seen::Never(format!("cert-manager exited:\n{}", process.log_tail(30)))
                    }
                    _ if !cainjector.alive() => {
                        Seen::Never(format!("cainjector exited:\n{}", cainjector.log_tail(30)))
                    }
                    Ok(ready) => Seen::NotYet(format!("Ready is {ready:?}")),
                    Err(e) => Seen::NotYet(e.to_string()),
                }
            })
            .await
            .map_err(|unmet| match unmet {
                Unmet::Never { why, .. } => failed("cert-manager", why),
                timed_out => failed("cert-manager", format!("{timed_out}\n{}", process.log_tail(30))),
            })?;
        Ok(Self { process, cainjector })
    }

    /// The last lines of the controllers' log, and of cainjector's.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "{}\n--- cainjector ---\n{}",
            self.process.log_tail(lines),
            self.cainjector.log_tail(lines)
        )
    }
}

/// Asks cert-manager to renew Certificate `namespace/name` now, as `cmctl renew` does: by setting
/// the Certificate's `Issuing` condition.
pub async fn renew(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let certificates: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource {
            group: "cert-manager.io".to_owned(),
            version: "v1".to_owned(),
            api_version: "cert-manager.io/v1".to_owned(),
            kind: "Certificate".to_owned(),
            plural: "certificates".to_owned(),
        },
    );
    let mut status = certificates.get_status(name).await?.data["status"].clone();
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .expect("a time rounds to the second");
    let issuing = serde_json::json!({
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered",
        "lastTransitionTime": now.to_string(),
    });
    match status["conditions"].as_array_mut() {
        Some(conditions) => conditions.push(issuing),
        None => status["conditions"] = serde_json::json!([issuing]),
    }
    certificates
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": status})),
        )
        .await?;
    Ok(())
}
