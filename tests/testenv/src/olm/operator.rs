//! The operator OLM installed, run the way a kubelet would run its Deployment's pod, but as a
//! local process: started as soon as OLM (v0 or v1) has made the webhook Service and its
//! certificate Secret, started again whenever the Service or the Deployment's image changes or
//! the process dies, and in whatever [`Mode`] the test asks for. A renewed certificate is written
//! over the files of the running process, as a kubelet updates a mounted Secret, and the process
//! must take it up by itself. The egress proxy routes the Service's address to the process, so the apiserver's
//! conversion requests reach it.
//!
//! A new process replaces the old one as the Deployment's strategy says, read from the
//! Deployment OLM made: with `RollingUpdate` and `maxUnavailable: 0`, the new one starts first
//! and takes the Service once it is ready (its `/readyz`, or its webhook port when it serves no
//! `/readyz`), and only then is the old one stopped (SIGTERM, then SIGKILL after the pod's
//! `terminationGracePeriodSeconds`, as a kubelet stops a pod); with
//! `Recreate`, the old one stops first. Every interval with no process routed is recorded
//! ([`LocalOperator::gaps`]).

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::{Api, Client};

use crate::{connect::Router, control_plane::free_port, process::Supervised};

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
    /// previous release, so that an upgrade test runs real binaries on both ends. The pod runs
    /// the program of the release whose image (`<repository>:<version>`) the Deployment names,
    /// as a kubelet would pull that image.
    pub released: Vec<(String, PathBuf)>,
    /// Its arguments in a mode, given a directory that holds OLM's `tls.crt` and `tls.key` (and
    /// may take files of its own), the loopback port its webhook must listen on, and the
    /// namespace it is installed in (its pod's namespace).
    pub args: fn(Mode, &Path, u16, &str) -> Vec<String>,
    /// The environment variables of the Deployment's container that the process takes, as a
    /// kubelet passes them (those with a literal value). The others stand for what runs
    /// differently here, such as listen addresses, which `args` sets.
    pub env: Vec<String>,
    /// Environment variables that name an address to listen on: each gets a free port on
    /// loopback, so replicas side by side do not collide (a release that does not read one
    /// ignores it, where an unknown flag would stop it).
    pub listen_env: Vec<String>,
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

/// What the local operator process should be: a mode and, to run the controllers, the
/// kubeconfig of OLM's ServiceAccount. A new kubeconfig alone restarts nothing: the next process
/// takes it.
pub type Desired = Option<(Mode, Option<PathBuf>)>;

/// The operator's pod as a local process, kept as desired until dropped.
pub struct LocalOperator {
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

/// What the test and the kubelet's loop share.
#[derive(Clone, Default)]
struct Shared {
    desired: Arc<Mutex<Desired>>,
    running: Arc<Mutex<Option<Mode>>>,
    /// The loopback port of the webhook of the process the Service routes to.
    port: Arc<Mutex<Option<u16>>>,
    log: Arc<Mutex<Started>>,
    gaps: Gaps,
    events: Events,
}

/// What the kubelet did and when: each process started, routed, signalled and gone.
type Events = Arc<Mutex<Vec<(std::time::Instant, PodEvent)>>>;

/// One step of the stand-in kubelet. Each process is known by its webhook's loopback port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEvent {
    /// A process of `program` started.
    Started {
        /// Its webhook's port.
        port: u16,
        /// The program: the build's or a released one.
        program: PathBuf,
    },
    /// The Service's address now leads to it.
    Routed {
        /// Its webhook's port.
        port: u16,
    },
    /// It was sent SIGTERM.
    Terminating {
        /// Its webhook's port.
        port: u16,
    },
    /// It exited after SIGTERM (or was killed after the grace period).
    Gone {
        /// Its webhook's port.
        port: u16,
    },
    /// It exited by itself.
    Died {
        /// Its webhook's port.
        port: u16,
    },
}

impl std::fmt::Display for PodEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Started { port, program } => {
                write!(f, "started {} with its webhook on port {port}", program.display())
            }
            Self::Routed { port } => write!(f, "the Service routed to port {port}"),
            Self::Terminating { port } => write!(f, "SIGTERM to the process on port {port}"),
            Self::Gone { port } => write!(f, "the process on port {port} is gone"),
            Self::Died { port } => write!(f, "the process on port {port} died"),
        }
    }
}

fn record(events: &Events, event: PodEvent) {
    events
        .lock()
        .expect("not poisoned")
        .push((std::time::Instant::now(), event));
}

/// Stops `process` as a kubelet stops a pod (SIGTERM, SIGKILL after its grace period), and
/// records both ends.
fn stop_recorded(events: &Events, process: &mut Supervised, port: u16) {
    record(events, PodEvent::Terminating { port });
    process.stop();
    record(events, PodEvent::Gone { port });
}

/// When no process served the webhook Service, and for how long.
type Gaps = Arc<Mutex<Vec<(std::time::Instant, Duration)>>>;

impl Drop for LocalOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalOperator {
    /// Starts keeping `operator`, installed in `namespace`, as desired (at first: not running),
    /// with its files in `work`.
    pub fn start(
        client: Client,
        proxy: Router,
        work: PathBuf,
        namespace: String,
        operator: Operator,
    ) -> Self {
        let shared = Shared::default();
        let task = tokio::spawn(keep(client, proxy, work, namespace, operator, shared.clone()));
        Self { shared, task }
    }

    /// Asks for the process to be as `desired`; it follows within a moment, once OLM has made
    /// the Service and its certificate.
    pub fn want(&self, desired: Desired) {
        *self.shared.desired.lock().expect("not poisoned") = desired;
    }

    /// What the process started last is doing, to tell why a wait on the operator's work failed:
    /// how many were started, whether the last one is alive and uses CPU, when it last logged,
    /// the last `lines` lines of its log about the object named `about` (its reconciles and their
    /// failures), and its last 10 lines.
    pub fn log_tail(&self, lines: usize, about: &str) -> String {
        let started = self.shared.log.lock().expect("not poisoned").clone();
        let Some((log, pidfile)) = started.last else {
            return "--- the operator was never started ---".to_owned();
        };
        let pid = std::fs::read_to_string(&pidfile).ok();
        let ticks = || crate::process::proc_stat(pid.as_deref()?.trim().parse().ok()?);
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

    /// Every interval since `since` in which no process served the webhook Service, once one
    /// had: when it began, and how long it lasted (to now, for one still going on).
    pub fn gaps(&self, since: std::time::Instant) -> Vec<(std::time::Instant, Duration)> {
        self.shared
            .gaps
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(at, _)| *at >= since)
            .copied()
            .collect()
    }

    /// What the stand-in kubelet did, and when: each process started (its program, its webhook
    /// port), routed to, sent SIGTERM, and gone.
    pub fn events(&self) -> Vec<(std::time::Instant, PodEvent)> {
        self.shared.events.lock().expect("not poisoned").clone()
    }

    /// The loopback port where the process the Service routes to serves its webhook.
    pub fn webhook_port(&self) -> Option<u16> {
        *self.shared.port.lock().expect("not poisoned")
    }

    /// How many processes were started so far.
    pub fn started(&self) -> usize {
        self.shared.log.lock().expect("not poisoned").count
    }

    /// The mode the process runs in now, if it runs.
    pub fn running(&self) -> Option<Mode> {
        *self.shared.running.lock().expect("not poisoned")
    }
}

/// Whether the process with its webhook on `port` is ready: it listens, and its `/readyz` on
/// port `status` (when it has one) answers 200.
async fn is_ready(port: u16, status: Option<u16>) -> bool {
    if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        return false;
    }
    match status {
        Some(status) => crate::http_get("127.0.0.1", status, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200),
        None => true,
    }
}

/// The process the kubelet runs, and what it was started from.
struct Running {
    mode: Option<Mode>,
    /// The resourceVersion of the certificate Secret its files hold.
    secret_version: String,
    /// The Service's address.
    ip: String,
    /// The Deployment's image.
    image: String,
    process: Supervised,
    /// Where its files are.
    dir: PathBuf,
    /// Its webhook's loopback port.
    port: u16,
}

/// The kubelet's loop: compares what runs with what is desired and with OLM's Service and
/// certificate, and restarts the process when they differ (a new certificate alone is written
/// over the running process's files).
async fn keep(
    client: Client,
    proxy: Router,
    work: PathBuf,
    namespace: String,
    operator: Operator,
    shared: Shared,
) {
    let Shared {
        desired,
        running,
        port: routed,
        log,
        gaps,
        events,
    } = shared;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
    let mut current: Option<Running> = None;
    // Since when no process serves, once one did.
    let mut down_since: Option<std::time::Instant> = None;
    let record_gap = |down_since: &mut Option<std::time::Instant>| {
        if let Some(at) = down_since.take() {
            gaps.lock().expect("not poisoned").push((at, at.elapsed()));
        }
    };
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
        let deployment = deployments.get(&operator.package).await.ok().and_then(|d| d.spec);
        let container = deployment
            .as_ref()
            .and_then(|d| d.template.spec.as_ref()?.containers.first().cloned());
        let image = container
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let container_env: Vec<(String, String)> = container
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| operator.env.contains(&e.name))
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        let mode = want.as_ref().map(|(mode, _)| *mode);
        if let Some(Running {
            mode: m,
            secret_version: v,
            ip: i,
            image: im,
            process,
            dir,
            ..
        }) = &mut current
            && *m == mode
            && *i == ip
            && *im == image
            && process.alive()
        {
            if *v != version {
                // A renewed certificate: the kubelet rewrites the Secret's files in the running
                // pod's volume, and the process must take them up by itself.
                let data = secret.data.clone().unwrap_or_default();
                for file in ["tls.crt", "tls.key"] {
                    let path = dir.join(file);
                    let next = dir.join(format!(".{file}.next"));
                    std::fs::write(&next, &data[file].0).expect("writing a renewed certificate");
                    std::fs::rename(&next, &path).expect("replacing a certificate file");
                }
                *v = version;
            }
            continue;
        }
        // A kubelet gives a pod this long between SIGTERM and SIGKILL.
        let grace = deployment
            .as_ref()
            .and_then(|d| d.template.spec.as_ref()?.termination_grace_period_seconds)
            .map_or(Duration::from_secs(30), |s| {
                Duration::from_secs(s.max(1).unsigned_abs())
            });
        // A surge: the Deployment keeps its old pod until the new one is ready.
        let surge = deployment.is_some_and(|d| {
            let strategy = d.strategy.unwrap_or_default();
            strategy.type_.as_deref() == Some("RollingUpdate")
                && strategy
                    .rolling_update
                    .and_then(|r| r.max_unavailable)
                    .is_some_and(|m| m == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        });
        let program = operator
            .released
            .iter()
            .find(|(v, _)| image.ends_with(&format!(":{v}")))
            .map_or_else(|| operator.program.clone(), |(_, program)| program.clone());
        let mut old = current.take().map(|running| (running.process, running.port));
        if let Some((old, port)) = &old
            && !old.alive()
        {
            record(&events, PodEvent::Died { port: *port });
            down_since.get_or_insert_with(std::time::Instant::now);
        }
        if !surge && let Some((mut stopped, port)) = old.take() {
            down_since.get_or_insert_with(std::time::Instant::now);
            tokio::task::block_in_place(|| stop_recorded(&events, &mut stopped, port));
            *running.lock().expect("not poisoned") = None;
        }
        let Some((mode, kubeconfig)) = want.clone() else {
            if let Some((mut stopped, port)) = old.take() {
                tokio::task::block_in_place(|| stop_recorded(&events, &mut stopped, port));
            }
            *running.lock().expect("not poisoned") = None;
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let dir = tempfile::tempdir_in(&work)
            .expect("a directory for the pod")
            .keep();
        std::fs::write(dir.join("tls.crt"), &data["tls.crt"].0).expect("writing tls.crt");
        std::fs::write(dir.join("tls.key"), &data["tls.key"].0).expect("writing tls.key");
        let port = free_port().expect("a free port");
        let args = (operator.args)(mode, &dir, port, &namespace);
        let listens: Vec<(String, String)> = operator
            .listen_env
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    format!("127.0.0.1:{}", free_port().expect("a free port")),
                )
            })
            .collect();
        let mut env: Vec<(&str, &OsStr)> = container_env
            .iter()
            .chain(&listens)
            .map(|(name, value)| (name.as_str(), OsStr::new(value)))
            .collect();
        if let Some(kubeconfig) = &kubeconfig {
            env.push(("KUBECONFIG", kubeconfig.as_os_str()));
        }
        let process = Supervised::spawn_with_grace(&dir, &operator.package, &program, &args, &env, grace)
            .expect("starting the operator");
        record(
            &events,
            PodEvent::Started {
                port,
                program: program.clone(),
            },
        );
        {
            let mut started = log.lock().expect("not poisoned");
            started.count += 1;
            started.last = Some((process.log().to_owned(), process.pidfile().to_owned()));
        }
        // Routed once ready (its /readyz answers 200; without one, once it listens); if it never
        // is, the test's own waits say what is missing.
        let status = args.iter().find_map(|a| {
            a.strip_prefix("--status-listen=")?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !is_ready(port, status).await {
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "testenv: the local operator is not ready after 20 s\n{}",
                    process.log_tail(20)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        proxy.route(&format!("{ip}:443"), ([127, 0, 0, 1], port).into());
        record(&events, PodEvent::Routed { port });
        *routed.lock().expect("not poisoned") = Some(port);
        record_gap(&mut down_since);
        *running.lock().expect("not poisoned") = Some(mode);
        current = Some(Running {
            mode: Some(mode),
            secret_version: version,
            ip,
            image,
            process,
            dir,
            port,
        });
        // The old pod of a surge stops once the new one serves, in the background: it drains.
        if let Some((mut stopped, port)) = old.take() {
            let events = events.clone();
            tokio::task::spawn_blocking(move || stop_recorded(&events, &mut stopped, port));
        }
    }
}
