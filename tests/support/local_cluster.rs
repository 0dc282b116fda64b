//! A `PostgresCluster` whose pods run as local processes: the StatefulSet the real operator
//! built, run by `tusk_testenv::pod` with the image's PostgreSQL mapped to local binaries.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{Api, Client, api::ListParams};
use tusk_testenv::{
    Seen, Wait,
    control_plane::ControlPlane,
    eventually,
    pod::{ClusterPods, LocalPod},
    postgres::Postgres,
    proxy::Forwarder,
};

/// The instance manager's status port, as the pod spec sets it.
pub const STATUS_PORT: u16 = 8000;
/// PostgreSQL's port, as the pod spec sets it.
pub const POSTGRES_PORT: u16 = 5432;

/// A block of loopback addresses of its own for each cluster: `127.<a>.<n>.<ordinal + 1>`, where
/// `a` belongs to this test process alone: it holds a lock on `tusk-loopback-127.<a>.lock` in the
/// temporary directory until it exits, so test binaries that run side by side never share an
/// address.
fn ip_block() -> (u8, u8) {
    static OWN: std::sync::LazyLock<(u8, std::fs::File)> = std::sync::LazyLock::new(|| {
        let start = std::process::id() % 150;
        for i in 0..150 {
            let a = 100 + u8::try_from((start + i) % 150).expect("below 150");
            let path = std::env::temp_dir().join(format!("tusk-loopback-127.{a}.lock"));
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            if file.try_lock().is_ok() {
                return (a, file);
            }
        }
        panic!("every loopback block 127.100.0.0 to 127.249.0.0 is held by another test process");
    });
    static NEXT: AtomicU8 = AtomicU8::new(1);
    (OWN.0, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The last octet of the address that stands for `<cluster>-rw`.
const RW_HOST: u8 = 250;

/// The pod IP of `ordinal` in `block`.
fn pod_ip((a, b): (u8, u8), ordinal: i32) -> IpAddr {
    IpAddr::from([127, a, b, 1 + u8::try_from(ordinal).expect("a small ordinal")])
}

/// The local pods of one cluster.
pub struct LocalCluster {
    client: Client,
    /// The cluster's namespace.
    pub namespace: String,
    /// The cluster's name.
    pub name: String,
    /// The PostgreSQL the pods run.
    pub postgres: Postgres,
    /// The superuser's password, from the Secret the operator made.
    pub password: String,
    template: StatefulSet,
    block: (u8, u8),
    state: tempfile::TempDir,
    shared: PathBuf,
    /// `<cluster>-rw`: a forwarder to the pod labelled primary when a client connects.
    rw: Forwarder,
    /// Each pod's way to the API server, which a test can cut.
    apis: BTreeMap<i32, Forwarder>,
    api_server: SocketAddr,
    /// The running pods, by ordinal.
    pub pods: BTreeMap<i32, LocalPod>,
    /// The uid of the pod object each running pod stands for, once [`LocalCluster::sync_pods`]
    /// saw it.
    uids: BTreeMap<i32, String>,
    /// Pods whose object was deleted: they start again once the StatefulSet made a new one.
    awaiting: std::collections::BTreeSet<i32>,
}

impl LocalCluster {
    /// Creates `PostgresCluster` `name` with `spec` in `namespace` of `plane`, then as
    /// [`LocalCluster::new`].
    pub async fn create(
        plane: &ControlPlane,
        namespace: &str,
        name: &str,
        spec: serde_json::Value,
        postgres: Postgres,
    ) -> Self {
        let cluster: tusk::api::postgres_cluster::v1::PostgresCluster =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
                "metadata": {"name": name},
                "spec": spec,
            }))
            .unwrap();
        let client = plane.client().await.unwrap();
        Api::<tusk::api::postgres_cluster::v1::PostgresCluster>::namespaced(client, namespace)
            .create(&kube::api::PostParams::default(), &cluster)
            .await
            .unwrap();
        Self::new(plane, namespace, name, postgres).await
    }

    /// Waits for the operator to build the cluster's StatefulSet and Secret in `namespace` of
    /// `plane`; starts no pod. The pods reach `plane`'s API server.
    pub async fn new(plane: &ControlPlane, namespace: &str, name: &str, postgres: Postgres) -> Self {
        let client = &plane.client().await.unwrap();
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        let template = eventually("the StatefulSet", Duration::from_secs(60), || async {
            sts.get(name).await.ok()
        })
        .await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = eventually("the superuser Secret", Duration::from_secs(60), || async {
            secrets.get(&format!("{name}-superuser")).await.ok()
        })
        .await;
        let password = String::from_utf8(secret.data.unwrap()["password"].0.clone()).unwrap();
        // Short: PostgreSQL's socket path lives below it and may not exceed 107 bytes.
        let state = tempfile::Builder::new().prefix("tp").tempdir_in("/tmp").unwrap();
        let shared = state.path().join("shared-claims");
        let block = ip_block();
        let rw = {
            let (pods, cluster) = (Api::<Pod>::namespaced(client.clone(), namespace), name.to_owned());
            let target: tusk_testenv::proxy::Target = Arc::new(move || {
                let (pods, cluster) = (pods.clone(), cluster.clone());
                Box::pin(async move {
                    let selector = format!("tusk.dev/cluster={cluster},tusk.dev/role=primary");
                    let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
                    let [primary] = list.items.as_slice() else {
                        return None;
                    };
                    let ordinal: u8 = primary
                        .metadata
                        .name
                        .as_deref()?
                        .rsplit('-')
                        .next()?
                        .parse()
                        .ok()?;
                    Some(SocketAddr::new(pod_ip(block, ordinal.into()), POSTGRES_PORT))
                })
            });
            let listen = SocketAddr::new(IpAddr::from([127, block.0, block.1, RW_HOST]), POSTGRES_PORT);
            Forwarder::start(listen, target).await.unwrap()
        };
        let server = plane.server().to_owned();
        let api_server: SocketAddr = server
            .trim_start_matches("https://")
            .parse()
            .unwrap_or_else(|e| panic!("the API server {server}: {e}"));
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            postgres,
            password,
            template,
            block,
            state,
            shared,
            rw,
            apis: BTreeMap::new(),
            api_server,
            pods: BTreeMap::new(),
            uids: BTreeMap::new(),
            awaiting: std::collections::BTreeSet::new(),
        }
    }

    /// Does what a kubelet does when the pod objects change: a running pod whose object was
    /// deleted (or replaced) is stopped like the kubelet stops it (SIGTERM, then SIGKILL after
    /// the grace period), and once the StatefulSet has made the object again it starts from the
    /// StatefulSet's current template, on the same volumes. Call it while waiting for something a
    /// restart brings; returns the ordinals it started again.
    pub async fn sync_pods(&mut self) -> Vec<i32> {
        let api = Api::<Pod>::namespaced(self.client.clone(), &self.namespace);
        let mut started = Vec::new();
        let ordinals: std::collections::BTreeSet<i32> =
            self.pods.keys().chain(self.awaiting.iter()).copied().collect();
        for ordinal in ordinals {
            let Ok(object) = api.get_opt(&format!("{}-{ordinal}", self.name)).await else {
                continue;
            };
            let live = object
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.metadata.uid);
            if self.pods.contains_key(&ordinal) {
                match (self.uids.get(&ordinal), &live) {
                    (None, Some(uid)) => {
                        self.uids.insert(ordinal, uid.clone());
                    }
                    (Some(known), live) if live.as_ref() != Some(known) => {
                        drop(self.stop(ordinal));
                        self.uids.remove(&ordinal);
                        self.awaiting.insert(ordinal);
                    }
                    _ => {}
                }
            }
            if let (true, Some(uid)) = (self.awaiting.contains(&ordinal), live) {
                if let Ok(sts) = Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                    .get(&self.name)
                    .await
                {
                    self.template = sts;
                }
                self.start(ordinal).await;
                self.uids.insert(ordinal, uid);
                self.awaiting.remove(&ordinal);
                started.push(ordinal);
            }
        }
        started
    }

    /// Adds `arg` to the instance manager's arguments of the pods started from now on (the
    /// StatefulSet in the apiserver is not changed).
    pub fn add_instance_arg(&mut self, arg: &str) {
        let spec = self
            .template
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .unwrap();
        spec.containers[0]
            .args
            .get_or_insert_with(Vec::new)
            .push(arg.to_owned());
    }

    /// The address that stands for `<cluster>-rw`.
    pub fn rw_address(&self) -> IpAddr {
        self.rw.address().ip()
    }

    /// The pod IP of `ordinal`.
    pub fn ip(&self, ordinal: i32) -> IpAddr {
        self.pods().ip(ordinal)
    }

    /// Shares the claims the pods name (`persistentVolumeClaim` volumes) with every cluster given
    /// `dir`; each cluster has its own otherwise.
    pub fn share_claims(&mut self, dir: &std::path::Path) {
        self.shared = dir.to_path_buf();
    }

    /// The local directory of PersistentVolumeClaim `claim` the pods name.
    pub fn shared_claim_dir(&self, claim: &str) -> PathBuf {
        tusk_testenv::pod::shared_claim_dir(&self.shared, &self.namespace, claim)
    }

    /// The local directory of `ordinal`'s `claim` (such as `data`).
    pub fn claim_dir(&self, ordinal: i32, claim: &str) -> PathBuf {
        self.state
            .path()
            .join(format!("{}-{ordinal}", self.name))
            .join("claims")
            .join(claim)
    }

    fn pods(&self) -> ClusterPods {
        ClusterPods {
            statefulset: self.template.clone(),
            operator_binary: PathBuf::from(env!("CARGO_BIN_EXE_tusk-operator")),
            postgres_bin: self.postgres.bin_dir().to_path_buf(),
            ip_prefix: [self.block.0, self.block.1, 1],
            state_dir: self.state.path().to_path_buf(),
            shared_dir: self.shared.clone(),
            api_servers: self.apis.iter().map(|(o, f)| (*o, f.address())).collect(),
            rw_address: Some(self.rw.address().ip()),
        }
    }

    /// Starts pod `ordinal` (again, reusing its claims, if it ran before).
    pub async fn start(&mut self, ordinal: i32) {
        if !self.apis.contains_key(&ordinal) {
            let api_server = self.api_server;
            let target: tusk_testenv::proxy::Target =
                Arc::new(move || Box::pin(async move { Some(api_server) }));
            // On 127.0.0.1, a port of its own: the API server's certificate names that address.
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            self.apis
                .insert(ordinal, Forwarder::start(listen, target).await.unwrap());
        }
        // As a kubelet, run only a pod whose object exists (its uid goes to the Downward API).
        let objects = Api::<Pod>::namespaced(self.client.clone(), &self.namespace);
        let name = format!("{}-{ordinal}", self.name);
        let object = eventually(&format!("pod object {name}"), Duration::from_secs(60), || async {
            objects
                .get_opt(&name)
                .await
                .ok()?
                .filter(|p| p.metadata.deletion_timestamp.is_none())
        })
        .await;
        let pod = LocalPod::start(&self.client, &self.pods().run(ordinal).unwrap())
            .await
            .unwrap_or_else(|e| panic!("starting pod {ordinal}: {e}"));
        self.pods.insert(ordinal, pod);
        // The process runs for this object: once it is replaced, [`LocalCluster::sync_pods`]
        // restarts the pod.
        if let Some(uid) = object.metadata.uid {
            self.uids.insert(ordinal, uid);
        }
    }

    /// GET `path` on pod `ordinal`'s status port.
    pub async fn status(&self, ordinal: i32, path: &str) -> Option<(u16, String)> {
        super::http_get(&self.ip(ordinal).to_string(), STATUS_PORT, path).await
    }

    /// Waits until pod `ordinal` says it is ready; fails with its log if it does not.
    pub async fn wait_ready(&self, ordinal: i32, timeout: Duration) {
        let pod = &self.pods[&ordinal];
        let ready = Wait::up_to(timeout)
            .until(&format!("pod {ordinal} to be ready"), async || {
                let answer = self.status(ordinal, "/readyz").await;
                if matches!(answer, Some((200, _))) {
                    Seen::Holds(())
                } else if !pod.main.alive() {
                    Seen::Never(format!("it exited (last answer {answer:?})"))
                } else {
                    Seen::NotYet(format!("last answer {answer:?}"))
                }
            })
            .await;
        if let Err(unmet) = ready {
            panic!("{unmet}\n{}", pod.main.log_tail(150));
        }
    }

    /// Stops pod `ordinal` the way the kubelet does: SIGTERM, SIGKILL after the grace period.
    pub fn stop(&mut self, ordinal: i32) -> LocalPod {
        let mut pod = self.pods.remove(&ordinal).expect("the pod runs");
        pod.main.stop();
        pod
    }

    /// Kills pod `ordinal` the way a lost node does: SIGKILL to the instance manager and to
    /// PostgreSQL's whole process group, with no shutdown of any kind.
    pub fn kill(&mut self, ordinal: i32) {
        let pod = self.pods.remove(&ordinal).expect("the pod runs");
        let pidfile = self.claim_dir(ordinal, "data").join("pgdata/postmaster.pid");
        let postmaster = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pod.main.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(pid) = postmaster {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        drop(pod);
    }

    /// Cuts pod `ordinal` off from the API server (its connections drop, new ones are refused).
    pub fn cut_api(&self, ordinal: i32) {
        self.apis[&ordinal].cut();
    }

    /// Lets pod `ordinal` reach the API server again.
    pub fn restore_api(&self, ordinal: i32) {
        self.apis[&ordinal].restore();
    }

    /// Asks for a switchover to `to` with `spec.switchover.to`, as the README's `kubectl patch`
    /// does.
    pub async fn switch_over(&self, to: &str) {
        Api::<tusk::api::postgres_cluster::v1::PostgresCluster>::namespaced(
            self.client.clone(),
            &self.namespace,
        )
        .patch(
            &self.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"switchover": {"to": to}}})),
        )
        .await
        .unwrap();
    }

    /// The user's switchover to `to` that a rollout waiting at the primary (`Supervised`) needs,
    /// then the restart of the old primary `primary` it lets the rollout make.
    pub async fn switch_over_and_restart(&mut self, primary: &str, to: &str) {
        self.switch_over(to).await;
        let old: i32 = primary
            .rsplit('-')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("{primary} is not a pod of {}", self.name));
        eventually(
            &format!("the old primary {primary} to restart after the switchover"),
            Duration::from_secs(180),
            async || self.sync_pods().await.contains(&old).then_some(()),
        )
        .await;
    }

    /// The pod labelled primary now, if exactly one is.
    pub async fn labelled_primary(&self) -> Option<String> {
        let selector = format!("tusk.dev/cluster={},tusk.dev/role=primary", self.name);
        let list = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        match list.items.as_slice() {
            [one] => one.metadata.name.clone(),
            _ => None,
        }
    }

    /// A superuser connection through `<cluster>-rw`, to whichever pod is labelled primary.
    pub async fn connect_rw(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        superuser(&self.rw_target().await, &self.password, Duration::from_secs(2)).await
    }

    /// A superuser connection to pod `ordinal`'s PostgreSQL.
    pub async fn connect(&self, ordinal: i32) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        superuser(
            &self.target(ordinal).await,
            &self.password,
            Duration::from_secs(5),
        )
        .await
    }

    /// Writes every running pod's `secret` volumes again from the apiserver, as the kubelet does
    /// every minute or so.
    pub async fn sync_volumes(&self) {
        for pod in self.pods.values() {
            pod.sync_volumes(&self.client).await.unwrap();
        }
    }

    /// The CA in the cluster's TLS Secret (`ca.crt` of `<cluster>-tls`), if it has one.
    /// `/metrics` of pod `ordinal` (HTTPS, verified with the cluster's CA and the pod's name) as a
    /// ServiceAccount bound to the metrics-reader role: the status code and body.
    pub async fn metrics(&self, ordinal: i32) -> Result<(u16, String), String> {
        let token = super::https::metrics_reader_token().await;
        self.metrics_as(ordinal, Some(token)).await
    }

    /// `pg_postmaster_start_time()` of pod `ordinal`: unchanged while PostgreSQL did not restart.
    pub async fn postmaster_start(&self, ordinal: i32) -> String {
        self.connect(ordinal)
            .await
            .unwrap()
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `/metrics` of pod `ordinal` with `token` (or none).
    pub async fn metrics_as(&self, ordinal: i32, token: Option<&str>) -> Result<(u16, String), String> {
        self.metrics_over(ordinal, token, &[]).await
    }

    /// `/metrics` of pod `ordinal` with `token` (or none), from a client speaking only
    /// `versions` of TLS (any when empty).
    pub async fn metrics_over(
        &self,
        ordinal: i32,
        token: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(u16, String), String> {
        let ca = self
            .server_ca()
            .await
            .ok_or("the cluster's <cluster>-tls has no ca.crt")?;
        let client = tusk_testenv::https::client(&ca, versions);
        let name = format!("{}-{ordinal}.{}-pods", self.name, self.name);
        let server_name = rustls_pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
        let address = std::net::SocketAddr::new(self.ip(ordinal), tusk::facts::cluster::METRICS_PORT);
        tusk_testenv::https::get_from(&client, address, server_name, "/metrics", token).await
    }

    pub async fn server_ca(&self) -> Option<Vec<u8>> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&format!("{}-tls", self.name))
            .await
            .ok()??;
        Some(secret.data?.remove("ca.crt")?.0)
    }

    /// How a client reaches `<cluster>-rw` here: its loopback address, and with TLS the name its
    /// certificate carries and the CA to verify it with.
    pub async fn rw_target(&self) -> Target {
        Target {
            address: self.rw_address(),
            server_name: format!("{}-rw", self.name),
            ca: self.server_ca().await,
        }
    }

    /// How a client reaches pod `ordinal` here, as [`LocalCluster::rw_target`].
    pub async fn target(&self, ordinal: i32) -> Target {
        Target {
            address: self.ip(ordinal),
            server_name: format!("{}-{ordinal}.{}-pods", self.name, self.name),
            ca: self.server_ca().await,
        }
    }
}

/// Where a client connects, and with TLS what it verifies.
#[derive(Clone, Debug)]
pub struct Target {
    /// The loopback address that stands for the Service or pod.
    pub address: IpAddr,
    /// The name the server certificate must carry.
    pub server_name: String,
    /// The CA to verify it with; `None` connects without TLS.
    pub ca: Option<Vec<u8>>,
}

/// A superuser connection to `target`, with its own connection task.
pub async fn superuser(
    target: &Target,
    password: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_as(target, "postgres", password, "postgres", timeout).await
}

/// A connection to `database` of `target` as `user`, with its own connection task: with TLS,
/// `sslmode=verify-full` against the target's CA, as Tusk's own sessions connect.
pub async fn connect_as(
    target: &Target,
    user: &str,
    password: &str,
    database: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(timeout);
    tusk::sql::tls::connect(
        config,
        &target.address.to_string(),
        POSTGRES_PORT,
        &target.server_name,
        target.ca.as_deref(),
    )
    .await
    .map_err(|e| match e {
        tusk::sql::tls::ConnectError::Postgres(e) => e,
        tusk::sql::tls::ConnectError::Tls(e) => panic!("the cluster's ca.crt is unusable: {e}"),
    })
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("name", &self.name)
            .field("pods", &self.pods)
            .finish()
    }
}
