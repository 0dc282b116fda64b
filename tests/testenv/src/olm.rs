//! Real OLM on the local control plane: its CRDs, the `operators` namespace with its global
//! OperatorGroup, and the `olm` and `catalog` operators as local processes; plus `opm serve` for
//! a catalog that a CatalogSource reaches by address, from a directory or from a catalog image.
//! Bundles are either inlined in the catalog, or images whose unpack Jobs [`unpack`] runs.
//!
//! [`install`] installs and upgrades an operator through that OLM as an administrator would,
//! with [`operator`] running the operator's pod as a local process.

pub mod install;
pub mod operator;
pub mod packageserver;
pub mod unpack;

use std::{
    ffi::OsStr,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{ControlPlane, Error, Result, Seen, Unmet, Wait, control_plane::free_port, process::Supervised};

/// The namespace of OLM and of the CatalogSources every namespace can use.
pub const OLM_NAMESPACE: &str = "olm";
/// The namespace of operators installed for all namespaces.
pub const OPERATORS_NAMESPACE: &str = "operators";

pub(crate) fn failed(component: &'static str, message: impl Into<String>) -> Error {
    Error::Component {
        component,
        message: message.into(),
    }
}

pub(crate) fn run(mut command: Command, stdin: Option<&str>, what: &'static str) -> Result<String> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().map_err(|e| failed(what, e.to_string()))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .map_err(|e| failed(what, e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(what, e.to_string()))?;
    if !out.status.success() {
        return Err(failed(what, String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `program` with `CI` removed from its environment: OLM treats `CI` as "running OLM's
/// own e2e tests" and then panics on writes it does not expect.
fn spawn_without_ci(plane: &ControlPlane, name: &str, program: &Path, args: &[String]) -> Result<Supervised> {
    let mut all = vec!["-u".to_owned(), "CI".to_owned(), program.display().to_string()];
    all.extend_from_slice(args);
    Supervised::spawn_with_env(
        plane.dir(),
        name,
        Path::new("/usr/bin/env"),
        &all,
        &[("KUBECONFIG", plane.kubeconfig().as_os_str())],
    )
}

/// OLM's two operators, running until dropped.
#[derive(Debug)]
pub struct Olm {
    olm: Supervised,
    catalog: Supervised,
}

impl Olm {
    /// Installs OLM's CRDs (and the monitoring CRDs bundles may ship objects of), the `olm` and
    /// `operators` namespaces and the `global-operators` OperatorGroup, then starts `olm` and
    /// `catalog` and waits until OLM has seen the OperatorGroup.
    pub async fn start(plane: &ControlPlane) -> Result<Self> {
        let toolchain = plane.toolchain();
        for dir in ["olm-crds", "prometheus-crds"] {
            let mut apply = plane.kubectl();
            // The share directories are symbolic links; kubectl only walks one given as `dir/`.
            apply
                .args(["apply", "--server-side", "-f"])
                .arg(format!("{}/", toolchain.share(dir).display()));
            run(apply, None, "installing CRDs")?;
        }
        let mut wait = plane.kubectl();
        wait.args([
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
        run(wait, None, "waiting for CRDs")?;
        let objects = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {OLM_NAMESPACE}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {OPERATORS_NAMESPACE}\n---\n\
             apiVersion: operators.coreos.com/v1\nkind: OperatorGroup\nmetadata:\n  name: global-operators\n  namespace: {OPERATORS_NAMESPACE}\nspec: {{}}\n"
        );
        let mut apply = plane.kubectl();
        apply.args(["apply", "--server-side", "-f", "-"]);
        run(apply, Some(&objects), "creating OLM's namespaces")?;

        let olm = spawn_without_ci(plane, "olm", &toolchain.bin("olm"), &["--interval=1m".to_owned()])?;
        let catalog = spawn_without_ci(
            plane,
            "catalog",
            &toolchain.bin("catalog"),
            &[
                "--namespace".to_owned(),
                OLM_NAMESPACE.to_owned(),
                "--interval=1m".to_owned(),
                format!("--kubeconfig={}", plane.kubeconfig().display()),
            ],
        )?;
        let this = Self { olm, catalog };
        Wait::up_to(Duration::from_secs(120))
            .every(Duration::from_millis(500))
            .until("OLM to process the OperatorGroup", async || {
                let mut get = plane.kubectl();
                get.args([
                    "get",
                    "operatorgroup",
                    "global-operators",
                    "-n",
                    OPERATORS_NAMESPACE,
                    "-o",
                    "jsonpath={.status.lastUpdated}",
                ]);
                let seen = match run(get, None, "reading the OperatorGroup") {
                    Ok(updated) if !updated.trim().is_empty() => return Seen::Holds(()),
                    Ok(_) => "no status.lastUpdated".to_owned(),
                    Err(e) => e.to_string(),
                };
                for (name, process) in [("olm", &this.olm), ("catalog", &this.catalog)] {
                    if !process.alive() {
                        return Seen::Never(format!("{name} exited:\n{}", process.log_tail(30)));
                    }
                }
                Seen::NotYet(seen)
            })
            .await
            .map_err(|unmet| match unmet {
                Unmet::Never { why, .. } => failed("olm", why),
                timed_out => failed("olm", format!("{timed_out}\n{}", this.olm.log_tail(30))),
            })?;
        Ok(this)
    }

    /// The last lines of both operators' logs.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- olm ---\n{}\n--- catalog ---\n{}",
            self.olm.log_tail(lines),
            self.catalog.log_tail(lines)
        )
    }
}

/// `opm serve` of a file-based catalog on a loopback port, running until dropped.
#[derive(Debug)]
pub struct CatalogServer {
    process: Supervised,
    port: u16,
}

impl CatalogServer {
    /// Serves the catalog in `dir` (named `name` in logs) and waits until it accepts connections.
    pub async fn start(plane: &ControlPlane, name: &str, dir: &Path) -> Result<Self> {
        Self::run(
            plane,
            name,
            &plane.toolchain().bin("opm"),
            &["serve".to_owned(), dir.display().to_string()],
        )
        .await
    }

    /// Runs catalog image `image` (pulled and unpacked) as its `Entrypoint` and `Cmd` say (`opm
    /// serve /configs`): its own `opm`, every absolute path of the image in its root, and `/tmp`
    /// in `scratch`.
    pub async fn start_image(
        plane: &ControlPlane,
        name: &str,
        image: &crate::image::Unpacked,
        scratch: &Path,
    ) -> Result<Self> {
        let command = image.command();
        let (program, args) = command.split_first().ok_or_else(|| {
            failed(
                "catalog image",
                format!("{}: no Entrypoint or Cmd", image.reference),
            )
        })?;
        let local = |arg: &str| -> String {
            let (flag, path) = match arg.split_once('=') {
                Some((flag, path)) => (format!("{flag}="), path),
                None => (String::new(), arg),
            };
            if !path.starts_with('/') {
                return arg.to_owned();
            }
            let mapped = match path.strip_prefix("/tmp") {
                Some(rest) => scratch.join(rest.trim_start_matches('/')),
                None => image.path(path),
            };
            format!("{flag}{}", mapped.display())
        };
        let args: Vec<String> = args.iter().map(|a| local(a)).collect();
        Self::run(plane, name, &image.path(program), &args).await
    }

    async fn run(plane: &ControlPlane, name: &str, program: &Path, args: &[String]) -> Result<Self> {
        let port = free_port()?;
        let mut args = args.to_vec();
        args.extend([
            format!("--port={port}"),
            // Its profiling endpoint would take the same fixed port in every test.
            format!("--pprof-addr=127.0.0.1:{}", free_port()?),
            format!(
                "--termination-log={}",
                plane.dir().join(format!("{name}.termination")).display()
            ),
        ]);
        let process = Supervised::spawn(plane.dir(), name, program, &args)?;
        Wait::up_to(Duration::from_secs(60))
            .every(Duration::from_millis(200))
            .until(
                &format!("{name} to accept connections"),
                async || match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(_) => Seen::Holds(()),
                    Err(_) if !process.alive() => Seen::Never("it exited".to_owned()),
                    Err(e) => Seen::NotYet(e.to_string()),
                },
            )
            .await
            .map_err(|unmet| {
                failed(
                    "opm serve",
                    format!("{name} did not start: {unmet}\n{}", process.log_tail(30)),
                )
            })?;
        Ok(Self { process, port })
    }

    /// The address a CatalogSource's `spec.address` names.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines of opm's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// A CatalogSource named `name` in [`OLM_NAMESPACE`] that OLM reaches at `address`, as YAML.
pub fn catalog_source(name: &str, address: &str) -> String {
    format!(
        "apiVersion: operators.coreos.com/v1alpha1\nkind: CatalogSource\nmetadata:\n  name: {name}\n  namespace: {OLM_NAMESPACE}\nspec:\n  sourceType: grpc\n  address: {address}\n  displayName: {name}\n  publisher: Tusk\n"
    )
}

/// Applies `yaml` with kubectl server-side apply.
pub fn apply(plane: &ControlPlane, yaml: &str) -> Result<String> {
    let mut apply = plane.kubectl();
    apply.args(["apply", "--server-side", "--force-conflicts", "-f", "-"]);
    run(apply, Some(yaml), "kubectl apply")
}

/// Runs kubectl with `args` and gives its output.
pub fn kubectl<I, S>(plane: &ControlPlane, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = plane.kubectl();
    command.args(args);
    run(command, None, "kubectl")
}
