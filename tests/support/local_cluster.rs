//! A `PostgresCluster` whose pods run as local processes: the StatefulSet the real operator
//! built, run by `tusk_testenv::pod` with the image's PostgreSQL mapped to local binaries.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU8, Ordering},
    time::Duration,
};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Secret};
use kube::{Api, Client};
use tusk_testenv::{
    Seen, Wait, eventually,
    pod::{ClusterPods, LocalPod},
    postgres::Postgres,
};

/// The instance manager's status port, as the pod spec sets it.
pub const STATUS_PORT: u16 = 8000;
/// PostgreSQL's port, as the pod spec sets it.
pub const POSTGRES_PORT: u16 = 5432;

/// A block of loopback addresses of its own for each cluster: `127.<pid>.<n>.<ordinal + 1>`.
fn ip_block() -> (u8, u8) {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let a = 100 + u8::try_from(std::process::id() % 150).expect("below 150");
    (a, NEXT.fetch_add(1, Ordering::Relaxed))
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
    /// The running pods, by ordinal.
    pub pods: BTreeMap<i32, LocalPod>,
}

impl LocalCluster {
    /// Waits for the operator to build the cluster's StatefulSet and Secret; starts no pod.
    pub async fn new(client: &Client, namespace: &str, name: &str, postgres: Postgres) -> Self {
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
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            postgres,
            password,
            template,
            block: ip_block(),
            state,
            pods: BTreeMap::new(),
        }
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

    /// The pod IP of `ordinal`.
    pub fn ip(&self, ordinal: i32) -> IpAddr {
        self.pods().ip(ordinal)
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
        }
    }

    /// Starts pod `ordinal` (again, reusing its claims, if it ran before).
    pub async fn start(&mut self, ordinal: i32) {
        let pod = LocalPod::start(&self.client, &self.pods().run(ordinal).unwrap())
            .await
            .unwrap_or_else(|e| panic!("starting pod {ordinal}: {e}"));
        self.pods.insert(ordinal, pod);
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
            panic!("{unmet}\n{}", pod.main.log_tail(40));
        }
    }

    /// Stops pod `ordinal` the way the kubelet does: SIGTERM, SIGKILL after the grace period.
    pub fn stop(&mut self, ordinal: i32) -> LocalPod {
        let mut pod = self.pods.remove(&ordinal).expect("the pod runs");
        pod.main.stop();
        pod
    }

    /// A superuser connection to pod `ordinal`'s PostgreSQL.
    pub async fn connect(&self, ordinal: i32) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(self.ip(ordinal).to_string())
            .port(POSTGRES_PORT)
            .user("postgres")
            .password(&self.password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("name", &self.name)
            .field("pods", &self.pods)
            .finish()
    }
}
