//! The operator OLM installed, run the way a kubelet would run its Deployment's pod, but as a
//! local process: started as soon as OLM has made the webhook Service and its certificate Secret,
//! started again whenever either changes or the process dies, and in whatever [`Mode`] the test
//! asks for. The egress proxy routes the Service's address to the process, so the apiserver's
//! conversion requests reach it.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::{Api, Client};

use crate::{Wait, connect::Router, control_plane::free_port, olm::OPERATORS_NAMESPACE, process::Supervised};

/// What an operator package is and how its pod runs here.
#[derive(Clone, Debug)]
pub struct Operator {
    /// The OLM package; also the name of the operator's Deployment and ServiceAccount.
    pub package: String,
    /// The Service OLM makes for the operator's webhooks; its certificate is in Secret
    /// `<service>-cert`.
    pub service: String,
    /// The names of the CRDs the operator owns, such as `postgresclusters.tusk.dev`.
    pub crds: Vec<String>,
    /// The program that stands for the operator's container.
    pub program: PathBuf,
    /// Releases whose own program stands for their container instead, by version: the genuine
    /// previous release, so that an upgrade test runs real binaries on both ends.
    pub released: Vec<(String, PathBuf)>,
    /// Its arguments in a mode, given a directory that holds OLM's `tls.crt` and `tls.key` (and
    /// may take files of its own) and the loopback port its webhook must listen on.
    pub args: fn(Mode, &Path, u16) -> Vec<String>,
}

/// What the local operator process does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Conversion only: the webhook, no controllers.
    Webhook,
    /// Everything: webhook, controllers, leader election.
    Run,
}

/// The processes started so far: how many, and the log and pid files of the last.
#[derive(Clone, Debug, Default)]
struct Started {
    count: usize,
    last: Option<(PathBuf, PathBuf)>,
}

/// What the local operator process should be: a mode, the kubeconfig of OLM's ServiceAccount to
/// run the controllers, and the program (the installed release's).
pub type Desired = Option<(Mode, Option<PathBuf>, PathBuf)>;

/// The operator's pod as a local process, kept as desired until dropped.
pub struct LocalOperator {
    desired: Arc<Mutex<Desired>>,
    running: Arc<Mutex<Option<Mode>>>,
    log: Arc<Mutex<Started>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalOperator {
    /// Starts keeping `operator` as desired (at first: not running), with its files in `work`.
    pub fn start(client: Client, proxy: Router, work: PathBuf, operator: Operator) -> Self {
        let desired = Arc::new(Mutex::new(None));
        let running = Arc::new(Mutex::new(None));
        let log = Arc::new(Mutex::new(Started::default()));
        let task = tokio::spawn(keep(
            client,
            proxy,
            work,
            operator,
            desired.clone(),
            running.clone(),
            log.clone(),
        ));
        Self {
            desired,
            running,
            log,
            task,
        }
    }

    /// Asks for the process to be as `desired`; it follows within a moment, once OLM has made
    /// the Service and its certificate.
    pub fn want(&self, desired: Desired) {
        *self.desired.lock().expect("not poisoned") = desired;
    }

    /// What the process started last is doing, to tell why a wait on the operator's work failed:
    /// how many were started, whether the last one is alive and uses CPU, when it last logged,
    /// the last `lines` lines of its log about the object named `about` (its reconciles and their
    /// failures), and its last 10 lines.
    pub fn log_tail(&self, lines: usize, about: &str) -> String {
        let started = self.log.lock().expect("not poisoned").clone();
        let Some((log, pidfile)) = started.last else {
            return "--- the operator was never started ---".to_owned();
        };
        let pid = std::fs::read_to_string(&pidfile).ok();
        let ticks = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_deref()?.trim())).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
            Some((
                fields[0].to_owned(),
                fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?,
            ))
        };
        let before = ticks();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let after = ticks();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let (reconciles, failures) = (format!("/{about}."), format!("\"{about}\""));
        let about_lines: Vec<&str> = all
            .iter()
            .copied()
            .filter(|l| l.contains(&reconciles) || l.contains(&failures))
            .collect();
        format!(
            "--- the operator: started {} times; the last, pid {}: state and CPU ticks {before:?}, a second later {after:?}; now {:?}; {} lines in {} ---\n\
             --- its last {lines} lines about {about} ---\n{}\n--- its last 10 lines ---\n{}",
            started.count,
            pid.as_deref().unwrap_or("unknown").trim(),
            std::time::SystemTime::now(),
            all.len(),
            log.display(),
            about_lines[about_lines.len().saturating_sub(lines)..].join("\n"),
            all[all.len().saturating_sub(10)..].join("\n"),
        )
    }

    /// The mode the process runs in now, if it runs.
    pub fn running(&self) -> Option<Mode> {
        *self.running.lock().expect("not poisoned")
    }
}

/// The kubelet's loop: compares what runs with what is desired and with OLM's Service and
/// certificate, and restarts the process when they differ.
async fn keep(
    client: Client,
    proxy: Router,
    work: PathBuf,
    operator: Operator,
    desired: Arc<Mutex<Desired>>,
    running: Arc<Mutex<Option<Mode>>>,
    log: Arc<Mutex<Started>>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATORS_NAMESPACE);
    let services: Api<Service> = Api::namespaced(client, OPERATORS_NAMESPACE);
    let mut current: Option<(Desired, String, String, Supervised)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = desired.lock().expect("not poisoned").clone();
        let (Ok(secret), Ok(service)) = (
            secrets.get(&format!("{}-cert", operator.service)).await,
            services.get(&operator.service).await,
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
            *running.lock().expect("not poisoned") = None;
        }
        let Some((mode, kubeconfig, program)) = want.clone() else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let dir = tempfile::tempdir_in(&work)
            .expect("a directory for the pod")
            .keep();
        std::fs::write(dir.join("tls.crt"), &data["tls.crt"].0).expect("writing tls.crt");
        std::fs::write(dir.join("tls.key"), &data["tls.key"].0).expect("writing tls.key");
        let port = free_port().expect("a free port");
        let mut env: Vec<(&str, &OsStr)> = Vec::new();
        if let Some(kubeconfig) = &kubeconfig {
            env.push(("KUBECONFIG", kubeconfig.as_os_str()));
        }
        let process = Supervised::spawn_with_env(
            &dir,
            &operator.package,
            &program,
            &(operator.args)(mode, &dir, port),
            &env,
        )
        .expect("starting the operator");
        {
            let mut started = log.lock().expect("not poisoned");
            started.count += 1;
            started.last = Some((process.log().to_owned(), process.pidfile().to_owned()));
        }
        // Routed once it listens; if it never does, the test's own waits say what is missing.
        let listening = Wait::up_to(Duration::from_secs(20))
            .every(Duration::from_millis(100))
            .until("the local operator to listen", async move || {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await
            })
            .await;
        if let Err(unmet) = listening {
            eprintln!("testenv: {unmet}\n{}", process.log_tail(20));
        }
        proxy.route(&format!("{ip}:443"), ([127, 0, 0, 1], port).into());
        *running.lock().expect("not poisoned") = Some(mode);
        current = Some((want, version, ip, process));
    }
}
