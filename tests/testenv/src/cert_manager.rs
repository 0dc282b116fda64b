//! cert-manager on the control plane: its CRDs, and its controllers for Certificates and for CA
//! and SelfSigned issuers as a local process (built by `hack/testbin.sh`).

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
}

impl CertManager {
    /// Installs cert-manager's CRDs, starts its controllers, and waits until they have made the
    /// ClusterIssuer [`SELF_SIGNED_ISSUER`] Ready.
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
                    Ok(ready) => Seen::NotYet(format!("Ready is {ready:?}")),
                    Err(e) => Seen::NotYet(e.to_string()),
                }
            })
            .await
            .map_err(|unmet| match unmet {
                Unmet::Never { why, .. } => failed("cert-manager", why),
                timed_out => failed("cert-manager", format!("{timed_out}\n{}", process.log_tail(30))),
            })?;
        Ok(Self { process })
    }

    /// The last lines of the controllers' log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
