//! The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::{Namespace, Node, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
    storage::v1::StorageClass,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::{
    Error, Result, Seen, Wait, io,
    pki::{self, Ca},
    process::{Janitor, Supervised},
    toolchain::Toolchain,
};

/// The default StorageClass; kwok provisions and binds its volumes.
pub const STORAGE_CLASS: &str = "kwok-volume";

/// The fake Node kwok manages; plain pods are scheduled onto it.
pub const NODE_NAME: &str = "kwok-node-0";

/// How long a component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How the control plane is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where its files go. By default a fresh directory under the system's temp dir, removed when
    /// the control plane stops.
    pub dir: Option<PathBuf>,
    /// An `--egress-selector-config-file` for kube-apiserver.
    pub egress_selector_config: Option<PathBuf>,
    /// Namespaces whose Job pods the test runs itself, as local processes that report how they
    /// ended (OLM's bundle unpack pods): kwok leaves them running instead of completing them.
    pub local_job_namespaces: Vec<String>,
}

/// One TCP connection of a component, from `/proc/net/tcp{,6}`.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The component, such as `kube-apiserver`.
    pub component: String,
    /// The remote address and port, in the kernel's hex notation.
    pub remote: String,
    /// The kernel's state code (`01` established, `02` SYN sent, `03` SYN received).
    pub state: String,
    /// Whether the remote address is in 127.0.0.0/8 or is ::1.
    pub loopback: bool,
}

/// A running control plane. Dropping it stops every component and removes its directory.
pub struct ControlPlane {
    dir: PathBuf,
    toolchain: Toolchain,
    kubeconfig: PathBuf,
    ca_pem: String,
    server: String,
    etcd_port: u16,
    components: Vec<Supervised>,
    janitor: Janitor,
}

/// The name in the client certificate kube-apiserver proxies to aggregated APIs with.
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener.local_addr().map_err(io("finding a free port"))?.port())
}

/// The control plane shared by every test of this test binary, started on first use.
///
/// It runs until the test binary exits. Each test should make its own [`kube::Client`] with
/// [`ControlPlane::client`] (a client belongs to the tokio runtime that made it) and its own
/// namespace with [`ControlPlane::namespace`].
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Start on a thread of its own, so that this works from inside any async test.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(ControlPlane::start(Options::default()))
        })
        .join()
        .expect("the control plane start thread panicked")
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"))
    })
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
}

fn arg(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

impl ControlPlane {
    /// Starts every component in order and waits until each is ready.
    ///
    /// Ports come from [`free_port`], which cannot reserve them: another process may bind one
    /// before the component does. A start that fails that way is tried again, up to 3 times, in
    /// a fresh directory (only when [`Options::dir`] is not given).
    pub async fn start(options: Options) -> Result<Self> {
        crate::tls_provider();
        let mut attempt = 1;
        loop {
            match Self::start_once(&options).await {
                Err(Error::Component { component, message })
                    if attempt < 3 && options.dir.is_none() && message.contains("address already in use") =>
                {
                    eprintln!("testenv: {component} lost its port to another process; starting again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: &Options) -> Result<Self> {
        let toolchain = Toolchain::get()?;
        let started = Instant::now();
        let dir = match &options.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("tusk-control-plane-")
                .tempdir()
                .map_err(io("creating a temp dir"))?
                .keep(),
        };
        let janitor = Janitor::spawn(&dir)?;
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).map_err(io("creating the pki dir"))?;

        // Certificates: one CA signs the apiserver's serving certificate and the admin's client
        // certificate; service-account tokens are signed with a key of their own.
        let ca = Ca::new("tusk-testenv-ca");
        let serving = ca.serving_cert(
            "kube-apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        );
        let admin = ca.client_cert("tusk-admin", &["system:masters"]);
        let (sa_key, sa_pub) = pki::key_pair_pem();
        // The aggregation layer: the apiserver proxies to aggregated APIs (OLM's packageserver)
        // with a client certificate of a CA of its own, which they trust for request headers.
        let front_proxy_ca = Ca::new("tusk-testenv-front-proxy-ca");
        let front_proxy = front_proxy_ca.client_cert(FRONT_PROXY_CLIENT, &[]);
        let files = [
            ("front-proxy-ca.crt", front_proxy_ca.cert_pem()),
            ("front-proxy-client.crt", front_proxy.cert_pem),
            ("front-proxy-client.key", front_proxy.key_pem),
            ("ca.crt", ca.cert_pem()),
            ("apiserver.crt", serving.cert_pem),
            ("apiserver.key", serving.key_pem),
            ("admin.crt", admin.cert_pem),
            ("admin.key", admin.key_pem),
            ("sa.key", sa_key),
            ("sa.pub", sa_pub),
        ];
        for (name, contents) in &files {
            write(&pki.join(name), contents)?;
        }
        let p = |name: &str| pki.join(name).display().to_string();

        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        write(
            &kubeconfig,
            serde_json::to_vec_pretty(&json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "tusk", "cluster": {"server": server, "certificate-authority": p("ca.crt")}}],
                "users": [{"name": "tusk-admin", "user": {"client-certificate": p("admin.crt"), "client-key": p("admin.key")}}],
                "contexts": [{"name": "tusk", "context": {"cluster": "tusk", "user": "tusk-admin", "namespace": "default"}}],
                "current-context": "tusk",
            }))
            .expect("a kubeconfig serializes"),
        )?;

        let mut plane = Self {
            dir: dir.clone(),
            toolchain,
            kubeconfig: kubeconfig.clone(),
            ca_pem: ca.cert_pem(),
            server: server.clone(),
            etcd_port: 0,
            components: Vec::new(),
            janitor,
        };

        // etcd
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        plane.etcd_port = etcd_client;
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        plane.spawn(
            "etcd",
            vec![
                arg("name", "tusk"),
                arg("data-dir", dir.join("etcd").display()),
                arg("listen-client-urls", &etcd_url),
                arg("advertise-client-urls", &etcd_url),
                arg("listen-peer-urls", &peer_url),
                arg("initial-advertise-peer-urls", &peer_url),
                arg("initial-cluster", format!("tusk={peer_url}")),
                arg("unsafe-no-fsync", true),
                arg("log-level", "warn"),
            ],
        )?;
        plane
            .wait("etcd", || async { etcd_healthy(etcd_client).await })
            .await?;

        // kube-apiserver
        let mut args = vec![
            arg("etcd-servers", &etcd_url),
            arg("bind-address", "127.0.0.1"),
            arg("advertise-address", "127.0.0.1"),
            arg("secure-port", apiserver_port),
            arg("cert-dir", dir.join("apiserver-certs").display()),
            arg("tls-cert-file", p("apiserver.crt")),
            arg("tls-private-key-file", p("apiserver.key")),
            arg("client-ca-file", p("ca.crt")),
            arg("requestheader-client-ca-file", p("front-proxy-ca.crt")),
            arg("requestheader-allowed-names", FRONT_PROXY_CLIENT),
            arg("requestheader-username-headers", "X-Remote-User"),
            arg("requestheader-group-headers", "X-Remote-Group"),
            arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
            arg("proxy-client-cert-file", p("front-proxy-client.crt")),
            arg("proxy-client-key-file", p("front-proxy-client.key")),
            arg("service-account-key-file", p("sa.pub")),
            arg("service-account-signing-key-file", p("sa.key")),
            arg(
                "service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ),
            arg("authorization-mode", "Node,RBAC"),
            // Addresses are allocated from this range; nothing ever dials them.
            arg("service-cluster-ip-range", "10.96.0.0/16"),
            arg("endpoint-reconciler-type", "none"),
            arg("allow-privileged", true),
            arg("profiling", false),
            arg("v", 1),
        ];
        // An audit log of every request's metadata, so tests can count what a client wrote.
        let audit_policy = dir.join("audit-policy.json");
        write(
            &audit_policy,
            json!({
                "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata"}],
            })
            .to_string(),
        )?;
        args.extend([
            arg("audit-policy-file", audit_policy.display()),
            arg("audit-log-path", dir.join("audit.log").display()),
            arg("audit-log-format", "json"),
            arg("audit-log-mode", "blocking"),
        ]);
        if let Some(egress) = &options.egress_selector_config {
            args.push(arg("egress-selector-config-file", egress.display()));
        }
        plane.spawn("kube-apiserver", args)?;
        let kc = kubeconfig.display().to_string();
        plane
            .wait("kube-apiserver", || async {
                let client = plane.client().await.ok()?;
                let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
                (client.request_text(request).await.ok()? == "ok").then_some(())
            })
            .await?;

        // kube-controller-manager and kube-scheduler
        // Both talk to the apiserver as the admin, serve their own endpoints on loopback, and run
        // alone (no leader election).
        let controller_args = |name: &str, port: u16| {
            vec![
                arg("kubeconfig", &kc),
                arg("authentication-kubeconfig", &kc),
                arg("authorization-kubeconfig", &kc),
                arg("leader-elect", false),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", port),
                arg("cert-dir", dir.join(format!("{name}-certs")).display()),
                // The default 20 requests/s makes large tests wait on the test environment.
                arg("kube-api-qps", 200),
                arg("kube-api-burst", 400),
                arg("v", 1),
            ]
        };
        let mut args = controller_args("controller-manager", free_port()?);
        args.extend([
            // kwok's heartbeats lag when the machine is saturated (a benchmark on 2 cores); the
            // fake Node must not be declared dead and its pods marked unready for that.
            arg("node-monitor-grace-period", "5m"),
            arg("service-account-private-key-file", p("sa.key")),
            arg("root-ca-file", p("ca.crt")),
            arg("use-service-account-credentials", false),
        ]);
        plane.spawn("kube-controller-manager", args)?;
        plane
            .wait("kube-controller-manager", || async {
                // The service-account controller made the default namespace's account.
                let client = plane.client().await.ok()?;
                Api::<ServiceAccount>::namespaced(client, "default")
                    .get_opt("default")
                    .await
                    .ok()?
                    .map(|_| ())
            })
            .await?;
        let scheduler_port = free_port()?;
        plane.spawn("kube-scheduler", controller_args("scheduler", scheduler_port))?;
        plane
            .wait("kube-scheduler", || async {
                tokio::net::TcpStream::connect(("127.0.0.1", scheduler_port))
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await?;

        // kwok, and the one fake Node it manages.
        let mut args = vec![
            arg("kubeconfig", &kc),
            arg("manage-all-nodes", false),
            arg("manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake"),
            arg("server-address", format!("127.0.0.1:{}", free_port()?)),
            arg("node-ip", "10.244.0.1"),
            arg("node-lease-duration-seconds", 40),
            arg("cidr", "10.244.0.0/24"),
        ];
        let stages = plane.toolchain.share("kwok-stages");
        let mut stage_files: Vec<PathBuf> = fs::read_dir(&stages)
            .map_err(io(format!("reading {}", stages.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        stage_files.sort();
        if !options.local_job_namespaces.is_empty() {
            for file in &mut stage_files {
                if file.file_name().is_some_and(|n| n == "pod-complete.yaml") {
                    let text =
                        fs::read_to_string(&*file).map_err(io(format!("reading {}", file.display())))?;
                    let patched = leave_jobs_of(&text, &options.local_job_namespaces).ok_or_else(|| {
                        Error::Component {
                            component: "kwok",
                            message: format!(
                                "{}: no `matchExpressions:` to add the namespaces to",
                                file.display()
                            ),
                        }
                    })?;
                    let local = plane.dir.join("kwok-pod-complete.yaml");
                    fs::write(&local, patched).map_err(io(format!("writing {}", local.display())))?;
                    *file = local;
                }
            }
        }
        args.extend(stage_files.iter().map(|f| arg("config", f.display())));
        plane.spawn("kwok", args)?;
        let client = plane.client().await?;
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &fake_node())
            .await?;
        plane
            .wait("kwok", || async {
                let node = Api::<Node>::all(client.clone()).get(NODE_NAME).await.ok()?;
                let ready = node
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            })
            .await?;

        // The default StorageClass, provisioned by kwok's volume stages: PVCs bind, so pods that
        // mount them are scheduled and StatefulSets become Ready.
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kwok.x-k8s.io/volume",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": true,
        }))
        .expect("a storage class");
        Api::<StorageClass>::all(client.clone())
            .create(&PostParams::default(), &class)
            .await?;

        eprintln!(
            "testenv: control plane ready in {:.1}s at {server} (kubeconfig {})",
            started.elapsed().as_secs_f64(),
            kubeconfig.display()
        );
        Ok(plane)
    }

    fn spawn(&mut self, name: &'static str, args: Vec<String>) -> Result<()> {
        let program = self.toolchain.bin(name);
        // kube-apiserver spends about a seventh of its CPU in Go's garbage collector at the
        // default GOGC=100; a test's apiserver holds little, so it trades memory for that CPU
        // (measured: 7% less apiserver CPU on the OLM tests at GOGC=400).
        let gogc = std::ffi::OsString::from("400");
        let env: &[(&str, &std::ffi::OsStr)] = if name == "kube-apiserver" {
            &[("GOGC", &gogc)]
        } else {
            &[]
        };
        let supervised = Supervised::spawn_with_env(&self.dir, name, &program, &args, env)?;
        self.components.push(supervised);
        Ok(())
    }

    /// Polls `ready` until it gives `Some`, failing early with the component's log if it died.
    async fn wait<F, Fut>(&self, component: &'static str, ready: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<()>>,
    {
        let proc = self
            .components
            .iter()
            .find(|c| c.name() == component)
            .expect("waiting for a started component");
        Wait::up_to(READY_TIMEOUT)
            .every(Duration::from_millis(200))
            .until(&format!("{component} to be ready"), async || {
                match ready().await {
                    Some(()) => Seen::Holds(()),
                    None if !proc.alive() => Seen::Never("it exited during start".to_owned()),
                    None => Seen::NotYet("not ready".to_owned()),
                }
            })
            .await
            .map_err(|unmet| Error::Component {
                component,
                message: format!("{unmet}\n{}", proc.log_tail(30)),
            })
    }

    /// A new client for the admin user, bound to the current tokio runtime.
    pub async fn client(&self) -> Result<Client> {
        crate::tls_provider();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&self.kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }

    /// A new namespace named `<prefix>-<random>`, ready for pods (its default service account
    /// exists).
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client().await?;
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{prefix}-")}
        }))
        .expect("a namespace");
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let name = created.metadata.name.expect("the apiserver names it");
        let accounts = Api::<ServiceAccount>::namespaced(client, &name);
        Wait::up_to(Duration::from_secs(30))
            .every(Duration::from_millis(100))
            .until(
                &format!("the default ServiceAccount of namespace {name}"),
                async || match accounts.get_opt("default").await {
                    Ok(Some(_)) => Seen::Holds(()),
                    Ok(None) => Seen::NotYet("not created yet".to_owned()),
                    Err(e) => Seen::Never(e.to_string()),
                },
            )
            .await
            .map_err(|unmet| Error::Component {
                component: "kube-controller-manager",
                message: unmet.to_string(),
            })?;
        Ok(name)
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.toolchain.bin("kubectl"));
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA that signed the apiserver's certificates, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The control plane's directory (logs are under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The toolchain it runs from.
    pub fn toolchain(&self) -> &Toolchain {
        &self.toolchain
    }

    /// Every key under `prefix` in etcd with its raw value, as kube-apiserver stored it (custom
    /// resources are JSON). Read through etcd's JSON gateway on loopback.
    pub async fn etcd_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        let body = json!({"key": STANDARD.encode(prefix), "range_end": STANDARD.encode(&end)}).to_string();
        let failed = |e: std::io::Error| Error::Component {
            component: "etcd",
            message: format!("range {prefix}: {e}"),
        };
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.etcd_port))
            .await
            .map_err(failed)?;
        let request = format!(
            "POST /v3/kv/range HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(failed)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(failed)?;
        let text = String::from_utf8_lossy(&response);
        let (_, json_body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(json_body).map_err(|e| Error::Component {
            component: "etcd",
            message: format!("range {prefix}: {e}: {json_body}"),
        })?;
        let decode = |v: &serde_json::Value| {
            STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        Ok(parsed["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&decode(&kv["key"])).into_owned(),
                            decode(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every TCP connection a component has open or is opening to an address outside loopback,
    /// as `component -> address:port`. It should always be empty.
    pub fn non_loopback_connections(&self) -> Vec<String> {
        self.tcp_connections()
            .into_iter()
            .filter(|c| !c.loopback)
            .map(|c| format!("{} -> {} (hex, state {})", c.component, c.remote, c.state))
            .collect()
    }

    /// Every TCP connection the components have open or are opening, read from `/proc`.
    pub fn tcp_connections(&self) -> Vec<Connection> {
        let mut found = Vec::new();
        let sockets: Vec<(String, u64)> = self
            .pids()
            .into_iter()
            .flat_map(|(name, pid)| {
                fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
                    .filter_map(|target| {
                        let t = target.to_string_lossy();
                        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                    })
                    .map(move |inode| (name.clone(), inode))
                    .collect::<Vec<_>>()
            })
            .collect();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(remote), Some(state), Some(inode)) = (fields.get(2), fields.get(3), fields.get(9))
                else {
                    continue;
                };
                // 01 ESTABLISHED, 02 SYN_SENT, 03 SYN_RECV
                if !matches!(*state, "01" | "02" | "03") {
                    continue;
                }
                let Ok(inode) = inode.parse::<u64>() else { continue };
                let Some((name, _)) = sockets.iter().find(|(_, i)| *i == inode) else {
                    continue;
                };
                let (addr, _) = remote.split_once(':').unwrap_or((remote, ""));
                let loopback = match addr.len() {
                    8 => addr.ends_with("7F"),
                    32 => {
                        addr == "00000000000000000000000001000000"
                            || (addr.starts_with("0000000000000000FFFF0000") && addr.ends_with("7F"))
                    }
                    _ => false,
                };
                found.push(Connection {
                    component: name.clone(),
                    remote: (*remote).to_owned(),
                    state: (*state).to_owned(),
                    loopback,
                });
            }
        }
        found
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` (created if missing) with
    /// a token, bound to `role` (applied as a ClusterRole of the same name as the account). Use it
    /// to run a program with exactly the permissions it declares, never as admin.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        role: &ClusterRole,
    ) -> Result<PathBuf> {
        let client = self.client().await?;
        let apply = PatchParams::apply("tusk-testenv").force();
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
        Api::<Namespace>::all(client.clone())
            .patch(namespace, &apply, &Patch::Apply(&ns))
            .await?;
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("an account");
        accounts.patch(name, &apply, &Patch::Apply(&account)).await?;
        let mut role = role.clone();
        role.metadata.name = Some(name.to_owned());
        Api::<ClusterRole>::all(client.clone())
            .patch(name, &apply, &Patch::Apply(&role))
            .await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }))
        .expect("a binding");
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(name, &apply, &Patch::Apply(&binding))
            .await?;
        self.token_kubeconfig(namespace, name).await
    }

    /// A kubeconfig that authenticates as the existing ServiceAccount `namespace/name`, with a
    /// token valid for a day: a program run with it has exactly that account's permissions.
    pub async fn token_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.token_kubeconfigs().await?.make(namespace, name).await
    }

    /// What makes [`ControlPlane::token_kubeconfig`]s, apart from the control plane (for a task
    /// that outlives a borrow of it).
    pub async fn token_kubeconfigs(&self) -> Result<TokenKubeconfigs> {
        Ok(TokenKubeconfigs {
            client: self.client().await?,
            server: self.server.clone(),
            dir: self.dir.clone(),
        })
    }

    /// Every request the apiserver has completed so far, from its audit log (JSON objects with
    /// `user.username`, `verb`, `objectRef` and `responseStatus`).
    ///
    /// kube-apiserver rotates the log every 100 MB into `audit-<time>.log`; the rotated files are
    /// read first, oldest first, then the current one.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
            })
            .collect();
        files.sort();
        files.push(self.dir.join("audit.log"));
        files
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// The process ids of the running components, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.components
            .iter()
            .filter_map(|c| Some((c.name().to_owned(), c.pid()?)))
            .collect()
    }

    /// Stops every component, newest first, and removes the directory.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        while let Some(mut component) = self.components.pop() {
            component.stop();
        }
        self.janitor.finish();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn etcd_healthy(port: u16) -> Option<()> {
    let (_, body) = crate::http_get("127.0.0.1", port, "/health").await?;
    body.contains(r#""health":"true""#).then_some(())
}

fn fake_node() -> Node {
    serde_json::from_value(json!({
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            // Room for benchmarks with thousands of pods; nothing runs for real.
            "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "10000"},
            "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "10000"},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
        },
    }))
    .expect("a node")
}

/// kwok's `pod-complete` stage `text`, selecting no pod in `namespaces`.
fn leave_jobs_of(text: &str, namespaces: &[String]) -> Option<String> {
    let anchor = "    matchExpressions:\n";
    let at = text.find(anchor)? + anchor.len();
    let mut expression =
        "    - key: '.metadata.namespace'\n      operator: 'NotIn'\n      values:\n".to_owned();
    for namespace in namespaces {
        expression.push_str(&format!("      - '{namespace}'\n"));
    }
    Some(format!("{}{expression}{}", &text[..at], &text[at..]))
}

/// Makes kubeconfigs that authenticate as ServiceAccounts; see [`ControlPlane::token_kubeconfig`].
#[derive(Clone)]
pub struct TokenKubeconfigs {
    client: Client,
    server: String,
    dir: PathBuf,
}

impl TokenKubeconfigs {
    /// A kubeconfig that authenticates as the existing ServiceAccount `namespace/name`, with a
    /// token valid for a day.
    pub async fn make(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"expirationSeconds": 86400}})).expect("a token request");
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "tusk", "cluster": {"server": self.server, "certificate-authority": self.dir.join("pki/ca.crt")}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "tusk", "context": {"cluster": "tusk", "user": name, "namespace": namespace}}],
            "current-context": "tusk",
        });
        write(
            &path,
            serde_json::to_vec_pretty(&kubeconfig).expect("a kubeconfig serializes"),
        )?;
        Ok(path)
    }
}
