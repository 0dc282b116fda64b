//! Backups and restores for real: the real operator on the real control plane, pods running as
//! local processes with PostgreSQL 15 and 18, and a real S3 store (SeaweedFS on loopback).
//!
//! - point-in-time recovery while a workload writes: a restore to a time between two known commits
//!   has exactly the rows committed before it, a restore to the end has every row;
//! - a backup taken from a replica restores;
//! - a completed backup passes `pg_verifybackup` and restores by hand with PostgreSQL's own
//!   programs, with no Tusk;
//! - the store going away: a running backup fails and is never listed as complete; archiving
//!   keeps the WAL, retries and catches up; recovery across the outage still works;
//! - a wrong target shows as a condition that names the field and the cause;
//! - a restore that would archive into its own source is refused.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use kube::{Api, Client, api::PostParams};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use support::{
    apiserver::{Operator, plane_with_crds, start_operator_with_env},
    local_cluster::{LocalCluster, POSTGRES_PORT, STATUS_PORT},
};
use tusk::{
    api::{
        postgres_backup::v1::{BackupPhase, PostgresBackup},
        postgres_cluster::v1::PostgresCluster,
    },
    backup::store::{Store, StoreConfig},
};
use tusk_testenv::{
    ConnectProxy,
    azure::{AzureServer, PROXIED_HOST},
    eventually,
    postgres::Postgres,
    s3::S3Server,
};

const BUCKET: &str = "tusk-backups";

/// What the cluster-wide proxy leaves alone: everything on loopback (the API server, the pods,
/// the shared S3 store), as a cluster's proxy leaves its own network alone.
const NO_PROXY: &str = "127.0.0.0/8,localhost";

/// The cluster-wide proxy the operator runs with, and so every PostgreSQL pod: the operator
/// passes `HTTPS_PROXY` and `NO_PROXY` on. It tunnels only to stores a test routes by
/// [`PROXIED_HOST`], a name no resolver knows, so a store named by it is reached through the
/// proxy or not at all. It runs on a thread of its own, for every test of this binary.
fn https_proxy() -> &'static ConnectProxy {
    static PROXY: std::sync::OnceLock<ConnectProxy> = std::sync::OnceLock::new();
    PROXY.get_or_init(|| {
        let (started, proxy) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                started.send(ConnectProxy::start_tcp().await).unwrap();
                std::future::pending::<()>().await;
            });
        });
        proxy.recv().unwrap().unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The operator, once for this test binary, with the proxy's variables.
async fn operator() -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            let plane = plane_with_crds().await;
            let args = ["--resync-interval=3s".to_owned()];
            let proxy = https_proxy().url();
            let env = [("HTTPS_PROXY", proxy.as_str()), ("NO_PROXY", NO_PROXY)];
            start_operator_with_env(plane, "tusk-operator", &args, "info,kube=warn", &env).await
        })
        .await
}

/// The S3 store the tests share (the outage test starts its own).
async fn shared_store() -> &'static S3Server {
    static STORE: tokio::sync::OnceCell<S3Server> = tokio::sync::OnceCell::const_new();
    STORE
        .get_or_init(|| async {
            let s3 = S3Server::start_tls().await.unwrap_or_else(|e| panic!("{e}"));
            s3.create_bucket(BUCKET).unwrap();
            s3
        })
        .await
}

/// One scenario at a time: each runs several PostgreSQL pods on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Env {
    client: Client,
    namespace: String,
    operator: &'static Operator,
    /// The claims the pods name, shared by every cluster of the test.
    claims: tempfile::TempDir,
    /// The store's log, whose end a failing test prints.
    store_log: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", tusk_testenv::s3::log_digest(&self.store_log, 40));
        }
    }
}

impl Env {
    async fn new(prefix: &str, s3: &S3Server) -> Self {
        let plane = plane_with_crds().await;
        let operator = operator().await;
        let client = plane.client().await.unwrap();
        let namespace = plane.namespace(prefix).await.unwrap();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "s3-credentials"},
            "stringData": {"ACCESS_KEY_ID": s3.access_key_id, "SECRET_ACCESS_KEY": s3.secret_access_key},
        }))
        .unwrap();
        let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &namespace);
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        // The store's own CA, which the system does not trust: every target names it.
        if let Some(ca) = &s3.ca_pem {
            let secret = serde_json::from_value(json!({
                "metadata": {"name": "s3-ca"},
                "stringData": {"ca.crt": ca},
            }))
            .unwrap();
            secrets.create(&PostParams::default(), &secret).await.unwrap();
        }
        Self {
            client,
            namespace,
            operator,
            claims: tempfile::Builder::new().prefix("tc").tempdir_in("/tmp").unwrap(),
            store_log: s3.log_file(),
        }
    }

    fn target(s3: &S3Server, path: &str) -> Value {
        let mut target = json!({"s3": {"bucket": BUCKET, "path": path, "endpoint": s3.endpoint(), "credentialsSecret": "s3-credentials"}});
        if s3.ca_pem.is_some() {
            target["s3"]["caBundle"] = json!({"name": "s3-ca", "key": "ca.crt"});
        }
        target
    }

    /// Creates a cluster and starts its pods; the operator reaches them through the mapping.
    async fn cluster(&self, name: &str, major: u32, instances: i32, spec: Value) -> LocalCluster {
        self.create_cluster(name, major, instances, spec).await;
        self.start_cluster(name, major, instances).await
    }

    /// Creates a cluster; starts no pod.
    async fn create_cluster(&self, name: &str, major: u32, instances: i32, spec: Value) {
        let mut full = json!({
            "postgres": {"version": major},
            "instances": instances,
            "storage": {"data": {"size": "1Gi"}},
        });
        json_patch(&mut full, spec);
        let cluster: PostgresCluster = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": name},
            "spec": full,
        }))
        .unwrap();
        Api::<PostgresCluster>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &cluster)
            .await
            .unwrap();
    }

    /// Starts the pods of cluster `name` from its StatefulSet as it is now; the operator reaches
    /// them through the mapping.
    async fn start_cluster(&self, name: &str, major: u32, instances: i32) -> LocalCluster {
        let postgres = Postgres::get(major).unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
        let mut c = LocalCluster::new(plane_with_crds().await, &self.namespace, name, postgres).await;
        c.share_claims(self.claims.path());
        for ordinal in 0..instances {
            c.start(ordinal).await;
            let ip = c.ip(ordinal);
            self.operator.map_instance(
                &self.namespace,
                name,
                &format!("{name}-{ordinal}"),
                SocketAddr::new(ip, STATUS_PORT),
            );
            if ordinal == 0 {
                self.operator
                    .map_cluster(&self.namespace, name, SocketAddr::new(ip, POSTGRES_PORT));
            }
            c.wait_ready(ordinal, Duration::from_secs(180)).await;
        }
        c
    }

    async fn backup(&self, name: &str, cluster: &str, extra: Value) -> PostgresBackup {
        let mut spec = json!({"cluster": {"name": cluster}});
        json_patch(&mut spec, extra);
        let backup: PostgresBackup = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresBackup",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        let api = Api::<PostgresBackup>::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &backup).await.unwrap();
        self.finished(name).await
    }

    async fn finished(&self, name: &str) -> PostgresBackup {
        let api = Api::<PostgresBackup>::namespaced(self.client.clone(), &self.namespace);
        eventually(
            &format!("PostgresBackup {name} to finish"),
            Duration::from_secs(300),
            async || {
                let b = api.get(name).await.ok()?;
                matches!(
                    b.status.as_ref()?.phase?,
                    BackupPhase::Completed | BackupPhase::Failed
                )
                .then_some(b)
            },
        )
        .await
    }

    async fn cluster_status(&self, name: &str) -> Value {
        let api = Api::<PostgresCluster>::namespaced(self.client.clone(), &self.namespace);
        serde_json::to_value(api.get(name).await.unwrap().status).unwrap()
    }
}

fn json_patch(base: &mut Value, patch: Value) {
    if let (Value::Object(b), Value::Object(p)) = (base, patch) {
        for (k, v) in p {
            match b.get_mut(&k) {
                Some(existing @ Value::Object(_)) if v.is_object() => json_patch(existing, v),
                _ => {
                    b.insert(k, v);
                }
            }
        }
    }
}

/// A client of the store, as any S3 client would be.
fn store(s3: &S3Server, root: &str) -> Store {
    let mut config = StoreConfig::s3_inline(
        BUCKET,
        &s3.endpoint(),
        &s3.access_key_id,
        &s3.secret_access_key,
        root,
    );
    if let (Some(ca), Some(s3_config)) = (&s3.ca_pem, config.s3.as_mut()) {
        s3_config.ca_bundle = Some(tusk::backup::store::Secret::Inline(ca.clone()));
    }
    config.open().unwrap()
}

async fn objects(store: &Store, below: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = store.path(below);
    let mut names: Vec<String> = store
        .inner
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

/// Of the objects `before` below `root`, those a retention that lets `older` go and keeps
/// `newest` deletes: the older backups' objects, and WAL segments before the newest's first.
fn expired_objects(before: &[String], root: &str, older: &[String], newest: &PostgresBackup) -> Vec<String> {
    let cutoff = newest.status.as_ref().unwrap().begin_wal.clone().unwrap()[8..].to_owned();
    before
        .iter()
        .filter(|o| {
            older
                .iter()
                .any(|name| o.starts_with(&format!("{root}/base/{name}/")))
                || o.rsplit('/').next().is_some_and(|n| {
                    n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()) && n[8..24] < *cutoff
                })
        })
        .cloned()
        .collect()
}

/// Row count and a checksum of the whole table.
async fn checksum(db: &tokio_postgres::Client) -> (i64, String) {
    let row = db
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(id::text || ':' || payload, ',' ORDER BY id)), '') FROM t",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A workload that inserts one row per transaction until stopped; `paused` holds it between
/// transactions.
struct Writer {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acknowledged: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(db: tokio_postgres::Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicI64::new(0));
        let task = {
            let (stop, paused, acknowledged) = (stop.clone(), paused.clone(), acknowledged.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if paused.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    db.execute("INSERT INTO t (payload) VALUES (md5(random()::text))", &[])
                        .await
                        .unwrap();
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        Self {
            stop,
            paused,
            acknowledged,
            task,
        }
    }

    /// Holds the writer, and returns once no transaction of it is in flight.
    async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        // A transaction already sent finishes within this.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.acknowledged.load(Ordering::SeqCst)
    }
}

/// Table `t` with 1000 rows.
async fn table_of_1000_rows(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL);
         INSERT INTO t (payload) SELECT md5(g::text) FROM generate_series(1, 1000) g",
    )
    .await
    .unwrap();
}

/// Switches WAL on `db` and waits until the cluster's status says the segment it closed is
/// archived.
async fn archive_everything(env: &Env, cluster: &str, db: &tokio_postgres::Client) {
    let segment: String = db
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    db.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    eventually(
        &format!("{segment} archived"),
        Duration::from_secs(120),
        async || {
            let status = env.cluster_status(cluster).await;
            let last = status["backup"]["lastArchivedWal"].as_str().unwrap_or("");
            if last >= segment.as_str() {
                Ok(())
            } else {
                Err(format!(
                    "last archived {last:?}; ContinuousArchiving: {}",
                    condition(&status, "ContinuousArchiving").unwrap_or_default()
                ))
            }
        },
    )
    .await;
}

async fn restored(
    env: &Env,
    name: &str,
    major: u32,
    bootstrap: Value,
) -> (LocalCluster, tokio_postgres::Client) {
    restored_with(env, name, major, json!({"bootstrap": bootstrap})).await
}

/// A one-instance cluster of `spec` (with a `bootstrap` that restores), once it promoted.
async fn restored_with(
    env: &Env,
    name: &str,
    major: u32,
    spec: Value,
) -> (LocalCluster, tokio_postgres::Client) {
    let c = env.cluster(name, major, 1, spec).await;
    let db = c.connect(0).await.unwrap_or_else(|e| {
        panic!(
            "connecting to {name} with its own superuser password: {e}\n{}",
            c.pods[&0].main.log_tail(60)
        )
    });
    let recovering: bool = db
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!recovering, "{name} promoted after recovery");
    (c, db)
}

async fn point_in_time_recovery(major: u32) {
    let _one = ONE_AT_A_TIME.lock().await;
    let s3 = shared_store().await;
    let env = Env::new(&format!("pitr{major}"), s3).await;
    let path = format!("pitr{major}");
    // Encrypted at rest by the store: SSE-S3 on one major, SSE-KMS with a key id on the other.
    let (encryption, kms_key) = match major {
        15 => (json!({"type": "AES256"}), None),
        _ => (
            json!({"type": "aws:kms", "kmsKeyId": "tusk-pitr"}),
            Some("tusk-pitr"),
        ),
    };
    let mut target = Env::target(s3, &path);
    target["s3"]["serverSideEncryption"] = encryption;
    let source = env
        .cluster(
            "db",
            major,
            2,
            json!({"backup": {"target": target, "archiveTimeout": "10s"}}),
        )
        .await;
    let primary = source.connect(0).await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO t (payload) SELECT md5(i::text) FROM generate_series(1, 5000) i",
        )
        .await
        .unwrap();
    let quiet = checksum(&primary).await;

    // A backup with nothing writing, from the replica (the default).
    let b = env.backup("quiet", "db", json!({})).await;
    let status = b.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Completed), "{status:?}");
    assert_eq!(
        status.instance_name.as_deref(),
        Some("db-1"),
        "taken on the replica"
    );
    for field in [
        &status.begin_lsn,
        &status.end_lsn,
        &status.begin_wal,
        &status.end_wal,
        &status.location,
    ] {
        assert!(field.is_some(), "{status:?}");
    }
    assert!(status.size_bytes.unwrap() > 0);
    assert!(
        status
            .postgres_version
            .as_deref()
            .unwrap()
            .contains(&major.to_string())
    );
    let objects_of_quiet = objects(&store(s3, &format!("{path}/db")), "base/quiet").await;
    assert_eq!(
        objects_of_quiet,
        ["backup.json", "backup_manifest", "base.tar.zst"]
            .map(|o| format!("{path}/db/base/quiet/{o}"))
            .to_vec()
    );
    // The store says it encrypted what the backup and WAL archiving wrote, as asked.
    let wal = objects(&store(s3, &format!("{path}/db")), "wal").await;
    assert!(!wal.is_empty(), "the backup's WAL is archived");
    for object in objects_of_quiet.iter().chain(&wal) {
        let at_rest = s3.server_side_encryption(BUCKET, object).unwrap();
        let (algorithm, chunks) = match kms_key {
            None => ("AES256", "SSE_S3"),
            Some(_) => ("aws:kms", "SSE_KMS"),
        };
        assert_eq!(
            at_rest.algorithm.as_deref(),
            Some(algorithm),
            "{object}: {at_rest:?}"
        );
        assert_eq!(at_rest.kms_key_id.as_deref(), kms_key, "{object}: {at_rest:?}");
        assert!(
            !at_rest.chunks.is_empty() && at_rest.chunks.iter().all(|c| c == chunks),
            "{object}: every chunk stored encrypted: {at_rest:?}"
        );
    }

    // A backup while a workload writes.
    let writer = Writer::start(source.connect(0).await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = env.backup("busy", "db", json!({"instance": "Primary"})).await;
    assert_eq!(
        b.status.as_ref().unwrap().phase,
        Some(BackupPhase::Completed),
        "{b:?}"
    );
    assert_eq!(b.status.as_ref().unwrap().instance_name.as_deref(), Some("db-0"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.pause().await;
    let before = checksum(&primary).await;
    let target: String = primary
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.resume();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acknowledged = writer.stop().await;
    let end = checksum(&primary).await;
    assert!(
        end.0 > before.0 && before.0 > quiet.0,
        "rows were written around the target: {quiet:?} {before:?} {end:?}"
    );
    assert_eq!(end.0, quiet.0 + acknowledged, "every acknowledged row is there");
    archive_everything(&env, "db", &primary).await;
    let status = env.cluster_status("db").await;
    let archiving = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ContinuousArchiving")
        .cloned()
        .unwrap();
    assert_eq!(archiving["status"], "True", "{status:#}");
    assert_eq!(status["backup"]["lastSuccessfulBackup"], "busy", "{status:#}");
    assert!(
        status["backup"]["firstRecoverabilityPoint"].is_string(),
        "{status:#}"
    );

    // To the time between two commits: exactly the rows committed before it.
    let (pitr, db) = restored(
        &env,
        "pitr",
        major,
        json!({"recovery": {"backup": {"name": "busy"}, "target": {"time": target}}}),
    )
    .await;
    assert_eq!(checksum(&db).await, before, "restored to {target}");
    drop(pitr);

    // To the end of the archive, from the replica's backup: every row.
    let (latest, db) = restored(
        &env,
        "latest",
        major,
        json!({"fromBackup": {"backupName": "quiet"}}),
    )
    .await;
    assert_eq!(checksum(&db).await, end, "restored to the end of the archive");
    drop(latest);

    // By hand: the store's files, PostgreSQL's programs, no Tusk.
    let postgres = Postgres::get(major).unwrap();
    by_hand(
        s3,
        &format!("{path}/db/base/quiet"),
        &postgres,
        &source.password,
        quiet,
    )
    .await;
}

/// The README's manual restore: download, unpack, verify, start.
async fn by_hand(s3: &S3Server, backup: &str, postgres: &Postgres, password: &str, expected: (i64, String)) {
    let dir = tempfile::Builder::new()
        .prefix("manual")
        .tempdir_in("/tmp")
        .unwrap();
    let store = store(s3, "");
    let download = async |object: &str| {
        let path = store.path(&format!("{backup}/{object}"));
        store
            .inner
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    };
    let tar = dir.path().join("base.tar.zst");
    std::fs::write(&tar, download("base.tar.zst").await).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let unpacked = std::process::Command::new("tar")
        .args([
            "--zstd",
            "-xf",
            &tar.display().to_string(),
            "-C",
            &data.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(unpacked.success());
    // The manifest inside the tar is the one stored beside it.
    let manifest = download("backup_manifest").await;
    assert_eq!(
        std::fs::read(data.join("backup_manifest")).unwrap(),
        manifest.to_vec()
    );
    tusk_testenv::postgres::chown_for_postgres(dir.path()).unwrap();
    let verify = postgres
        .unprivileged_command("pg_verifybackup", &[data.display().to_string()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_file(data.join("standby.signal"));
    let port = tusk_testenv::control_plane::free_port().unwrap();
    let args = [
        "-D".to_owned(),
        data.display().to_string(),
        "-c".to_owned(),
        "listen_addresses=127.0.0.1".to_owned(),
        "-c".to_owned(),
        format!("port={port}"),
        "-c".to_owned(),
        format!("unix_socket_directories={}", dir.path().display()),
        "-c".to_owned(),
        "archive_mode=off".to_owned(),
        // The pod's certificates are not in the backup; its pg_hba.conf admits TLS only over the
        // network, so the README connects over the Unix socket.
        "-c".to_owned(),
        "ssl=off".to_owned(),
    ];
    let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
    let mut server = postgres
        .unprivileged_command("postgres", &args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let log = dir.path().join("postgres.log");
    let what = format!("the hand-restored server (log {})", log.display());
    let db = eventually(&what, Duration::from_secs(60), async || {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(dir.path())
            .port(port)
            .user("postgres")
            .password(password)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        Some(client)
    })
    .await;
    assert_eq!(checksum(&db).await, expected, "the hand-restored table");
    drop(db);
    // A fast shutdown: it does not wait for clients.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn point_in_time_recovery_on_postgres_15() {
    point_in_time_recovery(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn point_in_time_recovery_on_postgres_18() {
    point_in_time_recovery(18).await;
}

fn condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

async fn archive_condition(env: &Env, cluster: &str, reason: &str) -> Value {
    eventually(
        &format!("ContinuousArchiving {reason} on {cluster}"),
        Duration::from_secs(120),
        async || {
            let c = condition(&env.cluster_status(cluster).await, "ContinuousArchiving")?;
            (c["reason"] == reason).then_some(c)
        },
    )
    .await
}

/// The store stops in the middle of a backup and while WAL is written, then comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_fails_the_backup_and_archiving_catches_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s3 = S3Server::start_tls().await.unwrap_or_else(|e| panic!("{e}"));
    s3.create_bucket(BUCKET).unwrap();
    let env = Env::new("outage", &s3).await;
    let spec = json!({"backup": {"target": Env::target(&s3, "outage"), "archiveTimeout": "10s"}});
    let c = env.cluster("db", 18, 1, spec).await;
    let db = c.connect(0).await.unwrap();
    db.batch_execute(
        "CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL); \
         INSERT INTO t (payload) SELECT md5(i::text) || repeat(md5(random()::text), 40) FROM generate_series(1, 150000) i",
    )
    .await
    .unwrap();
    let before = env.backup("before", "db", json!({})).await;
    assert_eq!(
        before.status.as_ref().unwrap().phase,
        Some(BackupPhase::Completed)
    );
    archive_everything(&env, "db", &db).await;

    // The store stops once the backup has stored its first bytes.
    let api = Api::<PostgresBackup>::namespaced(env.client.clone(), &env.namespace);
    let backup: PostgresBackup = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresBackup",
        "metadata": {"name": "cut"}, "spec": {"cluster": {"name": "db"}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &backup).await.unwrap();
    eventually(
        "the backup to store its first bytes",
        Duration::from_secs(120),
        async || {
            let (code, body) = c.status(0, "/backups/cut").await?;
            let state: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && state["storedBytes"].as_u64()? > 0).then_some(())
        },
    )
    .await;
    s3.stop();
    let cut = env.finished("cut").await;
    let status = cut.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Failed), "{status:?}");
    let reason = &condition(&serde_json::to_value(&status).unwrap(), "Ready").unwrap()["reason"];
    assert!(reason.as_str().unwrap().starts_with("Store"), "{status:?}");
    assert!(
        status
            .error
            .as_deref()
            .unwrap()
            .contains(s3.endpoint().split_once("://").unwrap().1)
            || status.error.as_deref().unwrap().contains("s3://"),
        "{status:?}"
    );

    // WAL written while the store is away stays in pg_wal, marked ready.
    db.batch_execute("INSERT INTO t (payload) SELECT md5(i::text) FROM generate_series(1, 1000) i")
        .await
        .unwrap();
    let waiting: String = db
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    db.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let failing = archive_condition(&env, "db", "StoreUnreachable").await;
    assert_eq!(failing["status"], "False");
    assert!(
        failing["message"]
            .as_str()
            .unwrap()
            .contains("spec.backup.target"),
        "{failing}"
    );
    let ready = c
        .claim_dir(0, "data")
        .join("pgdata/pg_wal/archive_status")
        .join(format!("{waiting}.ready"));
    assert!(ready.exists(), "{} is kept until it is archived", ready.display());
    let written = checksum(&db).await;

    // Back: archiving catches up, the partial backup was never completed, recovery crosses the
    // outage.
    s3.start_again().await.unwrap();
    archive_everything(&env, "db", &db).await;
    assert!(!ready.exists(), "{waiting} was archived");
    let status = env.cluster_status("db").await;
    assert_eq!(
        condition(&status, "ContinuousArchiving").unwrap()["status"],
        "True",
        "{status:#}"
    );
    // The cluster told of both with Events.
    let on_cluster = async |reason: &str| {
        support::event(&env.client, &env.namespace, reason, |e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PostgresCluster")
        })
        .await
    };
    let failed = on_cluster("StoreUnreachable").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(
        failed
            .note
            .as_deref()
            .unwrap_or("")
            .contains("spec.backup.target"),
        "{failed:?}"
    );
    let resumed = on_cluster("Resumed").await;
    assert_eq!(resumed.type_.as_deref(), Some("Normal"));
    let cut_objects = objects(&store(&s3, "outage/db"), "base/cut").await;
    assert!(
        !cut_objects.iter().any(|o| o.ends_with("backup.json")),
        "the cut backup has no record: {cut_objects:?}"
    );
    let (_restored, restored_db) = restored(
        &env,
        "across",
        18,
        json!({"fromBackup": {"backupName": "before"}}),
    )
    .await;
    assert_eq!(
        checksum(&restored_db).await,
        written,
        "every row written during the outage"
    );
    drop(s3);
}

/// Wrong credentials, a missing bucket, an endpoint nothing listens on and a store whose
/// certificate is not trusted (no `caBundle`): each a condition that names the field and the
/// cause; nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_targets_are_conditions_that_name_the_cause() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s3 = shared_store().await;
    let env = Env::new("badtarget", s3).await;
    let wrong: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "wrong"},
        "stringData": {"ACCESS_KEY_ID": s3.access_key_id, "SECRET_ACCESS_KEY": "not-the-secret"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &wrong)
        .await
        .unwrap();
    let nowhere = format!(
        "http://127.0.0.1:{}",
        tusk_testenv::control_plane::free_port().unwrap()
    );
    let with = |change: Value| {
        let mut target = Env::target(s3, "bad");
        json_patch(&mut target, change);
        target
    };
    let mut untrusted = Env::target(s3, "bad");
    untrusted["s3"].as_object_mut().unwrap().remove("caBundle");
    let cases = [
        (
            "creds",
            with(json!({"s3": {"credentialsSecret": "wrong"}})),
            "StoreCredentialsRefused",
        ),
        (
            "bucket",
            with(json!({"s3": {"bucket": "no-such-bucket"}})),
            "StoreBucketMissing",
        ),
        (
            "endpoint",
            with(json!({"s3": {"endpoint": nowhere}})),
            "StoreUnreachable",
        ),
        // The store's certificate comes from a CA the system does not trust.
        ("untrusted", untrusted, "StoreCertificateUntrusted"),
    ];
    let mut clusters = Vec::new();
    for (name, target, reason) in cases {
        let c = env
            .cluster(name, 18, 1, json!({"backup": {"target": target}}))
            .await;
        let found = archive_condition(&env, name, reason).await;
        assert_eq!(found["status"], "False", "{found}");
        assert!(
            found["message"].as_str().unwrap().contains("spec.backup.target"),
            "{found}"
        );
        let backup = env.backup(&format!("{name}-backup"), name, json!({})).await;
        let status = serde_json::to_value(backup.status.unwrap()).unwrap();
        assert_eq!(status["phase"], "Failed", "{status:#}");
        assert_eq!(
            condition(&status, "Ready").unwrap()["reason"],
            reason,
            "{status:#}"
        );
        assert!(c.pods[&0].main.alive(), "the instance keeps running");
        clusters.push(c);
    }
}

/// A restore that would archive into the place it restores from is refused before any pod
/// exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_never_archives_into_its_source() {
    let s3 = shared_store().await;
    let env = Env::new("isolation", s3).await;
    let target = Env::target(s3, "shared");
    let cluster: PostgresCluster = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": "db"},
        "spec": {
            "postgres": {"version": 18},
            "storage": {"data": {"size": "1Gi"}},
            "bootstrap": {"recovery": {"source": {"target": target, "clusterName": "db"}}},
            "backup": {"target": target},
        },
    }))
    .unwrap();
    let api = Api::<PostgresCluster>::namespaced(env.client.clone(), &env.namespace);
    api.create(&PostParams::default(), &cluster).await.unwrap();
    let degraded = eventually("the refusal", Duration::from_secs(60), async || {
        let c = condition(&env.cluster_status("db").await, "Degraded")?;
        (c["reason"] == "ArchiveIsRecoverySource").then_some(c)
    })
    .await;
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.backup.target") && message.contains("s3://tusk-backups/shared/db"),
        "{message}"
    );
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(env.client.clone(), &env.namespace);
    assert!(sts.get_opt("db").await.unwrap().is_none(), "no pod may start");
}

/// A schedule takes backups on its cron times; retention then deletes exactly the objects of
/// the backups it lets go and the WAL no remaining backup needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_runs_and_retention_deletes_exactly_what_is_expired() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s3 = shared_store().await;
    let env = Env::new("schedule", s3).await;
    let spec = json!({"backup": {"target": Env::target(s3, "schedule"), "archiveTimeout": "10s"}});
    let c = env.cluster("db", 18, 1, spec).await;
    let db = c.connect(0).await.unwrap();
    db.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL)")
        .await
        .unwrap();
    // The older backup retention lets go: taken by hand, labelled as the schedule's own, so the
    // test waits for one cron run, not two.
    let earlier: PostgresBackup = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresBackup",
        "metadata": {"name": "a-by-hand", "labels": {"tusk.dev/schedule": "minutely"}},
        "spec": {"cluster": {"name": "db"}},
    }))
    .unwrap();
    Api::<PostgresBackup>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &earlier)
        .await
        .unwrap();
    assert_eq!(
        env.finished("a-by-hand").await.status.unwrap().phase,
        Some(BackupPhase::Completed)
    );
    let schedules = support::apiserver::api(&env.client, &env.namespace, "PostgresBackupSchedule", "v1");
    let schedule = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresBackupSchedule",
        "metadata": {"name": "minutely"},
        "spec": {"cluster": {"name": "db"}, "schedule": "* * * * *", "timeZone": "Europe/Paris"},
    }))
    .unwrap();
    schedules.create(&PostParams::default(), &schedule).await.unwrap();
    let backups = Api::<PostgresBackup>::namespaced(env.client.clone(), &env.namespace);
    let completed = async |n: usize| {
        eventually(
            &format!("{n} scheduled backups completed"),
            Duration::from_secs(200),
            async || {
                // Something to archive between the runs.
                let _ = db.execute("INSERT INTO t (payload) VALUES ('x')", &[]).await;
                let list = backups.list(&Default::default()).await.ok()?;
                let mut done: Vec<PostgresBackup> = list
                    .items
                    .into_iter()
                    .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
                    .collect();
                done.sort_by_key(|b| b.metadata.name.clone());
                (done.len() >= n).then_some(done)
            },
        )
        .await
    };
    completed(2).await;
    let suspend = json!({"spec": {"suspend": true}});
    schedules
        .patch(
            "minutely",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&suspend),
        )
        .await
        .unwrap();
    // A run may have started just before: let it finish.
    let done = eventually("every run to finish", Duration::from_secs(120), async || {
        let list = backups.list(&Default::default()).await.ok()?;
        let finished = list.items.iter().all(|b| {
            matches!(
                b.status.as_ref().and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        });
        let mut done: Vec<PostgresBackup> = list
            .items
            .into_iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
            .collect();
        done.sort_by_key(|b| b.metadata.name.clone());
        finished.then_some(done)
    })
    .await;
    assert_eq!(done[0].metadata.name.as_deref(), Some("a-by-hand"));
    assert!(done.len() >= 2, "a cron run: {done:?}");
    for b in &done[1..] {
        assert!(
            b.metadata.name.as_deref().unwrap().starts_with("minutely-"),
            "{b:?}"
        );
        assert_eq!(
            b.metadata.owner_references.as_ref().unwrap()[0].kind,
            "PostgresBackupSchedule"
        );
    }
    let status = schedules.get("minutely").await.unwrap().data["status"].clone();
    assert!(
        status["lastScheduleTime"].is_string() && status["nextScheduleTime"].is_string(),
        "{status:#}"
    );
    assert!(status["lastSuccessfulTime"].is_string(), "{status:#}");
    // The operator's metrics say it is not overdue.
    let metrics = env
        .operator
        .metrics()
        .await
        .expect("the operator answers /metrics");
    let series = format!(
        "tusk_backup_schedule_overdue{{namespace=\"{}\",schedule=\"minutely\"}} 0",
        env.namespace
    );
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    archive_everything(&env, "db", &db).await;

    // Keep the last one: the others' objects and the WAL before the newest goes, nothing else.
    let root = "schedule/db";
    let store = store(s3, root);
    let before = objects(&store, "").await;
    let newest = done.last().unwrap().clone();
    let newest_name = newest.metadata.name.clone().unwrap();
    let older: Vec<String> = done[..done.len() - 1]
        .iter()
        .map(|b| b.metadata.name.clone().unwrap())
        .collect();
    let expected_gone = expired_objects(&before, root, &older, &newest);
    assert!(expected_gone.len() > 3, "some WAL goes too: {expected_gone:?}");
    let patch = json!({"spec": {"retention": {"keepLast": 1}}});
    schedules
        .patch(
            "minutely",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually(
        "the older backups to be deleted",
        Duration::from_secs(60),
        async || {
            for name in &older {
                if backups.get_opt(name).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let after = objects(&store, "").await;
    let kept: Vec<String> = before.iter().filter(|o| after.contains(o)).cloned().collect();
    let gone: Vec<String> = before.iter().filter(|o| !after.contains(o)).cloned().collect();
    assert_eq!(gone, expected_gone, "exactly the expired objects");
    assert!(
        kept.iter()
            .any(|o| o.ends_with(&format!("{newest_name}/backup.json"))),
        "{kept:?}"
    );
    assert!(backups.get_opt(&newest_name).await.unwrap().is_some());
    let second = newest;
    // What remains restores.
    let (_r, restored_db) = restored(
        &env,
        "again",
        18,
        json!({"fromBackup": {"backupName": second.metadata.name.clone().unwrap()}}),
    )
    .await;
    assert_eq!(checksum(&restored_db).await, checksum(&db).await);
}

/// A PersistentVolumeClaim as a target: every pod of the cluster mounts it (ReadWriteMany), the
/// primary archives into it, a replica backs up into it, retention goes through an instance (the
/// operator cannot mount it), and a new cluster restores from it while archiving beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_receives_backups_and_wal_and_restores() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s3 = shared_store().await;
    let env = Env::new("claim", s3).await;
    let target = json!({"volume": {"claimName": "backups"}});
    let spec = json!({"backup": {"target": target, "archiveTimeout": "10s"}});
    // Before the claim exists: the pods do without it (they would not start), and the cluster
    // says why.
    env.create_cluster("db", 18, 2, spec).await;
    let statefulsets =
        Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(env.client.clone(), &env.namespace);
    let mounts_claim = async || {
        let sts = statefulsets.get_opt("db").await.ok()??;
        let volumes = sts.spec?.template.spec?.volumes.unwrap_or_default();
        Some(volumes.iter().any(|v| v.persistent_volume_claim.is_some()))
    };
    let degraded = eventually(
        "Degraded: BackupClaimMissing",
        Duration::from_secs(60),
        async || {
            let status = env.cluster_status("db").await;
            let degraded = condition(&status, "Degraded")?;
            (degraded["reason"] == "BackupClaimMissing").then_some(degraded)
        },
    )
    .await;
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.backup.target.volume.claimName: "),
        "{degraded}"
    );
    assert_eq!(
        mounts_claim().await,
        Some(false),
        "no pod mounts a claim that is not there"
    );
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    eventually(
        "the pods to mount the claim",
        Duration::from_secs(60),
        async || mounts_claim().await.filter(|m| *m),
    )
    .await;
    let c = env.start_cluster("db", 18, 2).await;
    let db = c.connect(0).await.unwrap();
    table_of_1000_rows(&db).await;
    let first = env.backup("first", "db", json!({})).await;
    let status = first.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Completed), "{status:?}");
    assert_eq!(status.instance_name.as_deref(), Some("db-1"), "from the replica");
    assert_eq!(status.location.as_deref(), Some("pvc://backups/db/base/first"));
    let dir = c.shared_claim_dir("backups");
    for object in ["backup.json", "backup_manifest", "base.tar.zst"] {
        assert!(
            dir.join("db/base/first").join(object).is_file(),
            "{object} in the claim"
        );
    }

    // Another claim is not mounted: refused, naming the field.
    let other = env
        .backup(
            "elsewhere",
            "db",
            json!({"target": {"volume": {"claimName": "other"}}}),
        )
        .await;
    let status = serde_json::to_value(other.status).unwrap();
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(ready["reason"], "BackupClaimNotMounted", "{status:#}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.target.volume.claimName: "),
        "{status:#}"
    );

    db.batch_execute("INSERT INTO t (payload) SELECT md5(g::text) FROM generate_series(1, 500) g")
        .await
        .unwrap();
    // The next backup uncompressed: a plain tar, from which the cluster below restores.
    support::apiserver::api(&env.client, &env.namespace, "PostgresCluster", "v1")
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"backup": {"compression": "none"}}})),
        )
        .await
        .unwrap();
    let second = env.backup("second", "db", json!({})).await;
    assert_eq!(
        second.status.as_ref().unwrap().phase,
        Some(BackupPhase::Completed)
    );
    let second_dir = dir.join("db/base/second");
    assert!(second_dir.join("base.tar").is_file(), "an uncompressed tar");
    assert!(!second_dir.join("base.tar.zst").exists());
    let record: Value =
        serde_json::from_slice(&std::fs::read(second_dir.join("backup.json")).unwrap()).unwrap();
    assert_eq!(record["compression"], "none", "{record}");
    let stored = std::fs::metadata(second_dir.join("base.tar")).unwrap().len();
    assert_eq!(record["storedBytes"], stored, "{record}");
    assert_eq!(record["tarBytes"], stored, "{record}");
    db.batch_execute("INSERT INTO t (payload) VALUES ('after the second')")
        .await
        .unwrap();
    archive_everything(&env, "db", &db).await;

    // Retention of a schedule that owns both (by its label): exactly the first and the WAL
    // before the second go.
    let backups = Api::<PostgresBackup>::namespaced(env.client.clone(), &env.namespace);
    for name in ["first", "second"] {
        let label = json!({"metadata": {"labels": {"tusk.dev/schedule": "keep-one"}}});
        backups
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&label),
            )
            .await
            .unwrap();
    }
    let root = "db";
    let store = StoreConfig {
        s3: None,
        azure: None,
        gcs: None,
        directory: Some(dir.clone()),
        root: root.into(),
        url: format!("file://{}", dir.display()),
    }
    .open()
    .unwrap();
    let before = objects(&store, "").await;
    let expected_gone = expired_objects(&before, root, &["first".to_owned()], &second);
    assert!(expected_gone.len() > 3, "some WAL goes too: {expected_gone:?}");
    let schedules = support::apiserver::api(&env.client, &env.namespace, "PostgresBackupSchedule", "v1");
    let schedule = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresBackupSchedule",
        "metadata": {"name": "keep-one"},
        "spec": {"cluster": {"name": "db"}, "schedule": "0 3 * * *", "suspend": true, "retention": {"keepLast": 1}},
    }))
    .unwrap();
    schedules.create(&PostParams::default(), &schedule).await.unwrap();
    eventually("first to be let go", Duration::from_secs(60), async || {
        backups.get_opt("first").await.ok()?.is_none().then_some(())
    })
    .await;
    let after = objects(&store, "").await;
    let gone: Vec<String> = before.iter().filter(|o| !after.contains(o)).cloned().collect();
    assert_eq!(gone, expected_gone, "exactly the expired objects");
    assert!(
        after.iter().any(|o| o.ends_with("second/backup.json")),
        "{after:?}"
    );

    // A new cluster restores from the claim and archives into it, beside its source.
    let expected = checksum(&db).await;
    let (r, restored_db) = restored_with(
        &env,
        "again",
        18,
        json!({
            "bootstrap": {"recovery": {"source": {"target": target, "clusterName": "db"}}},
            "backup": {"target": target, "archiveTimeout": "10s"},
        }),
    )
    .await;
    assert_eq!(checksum(&restored_db).await, expected);
    restored_db
        .batch_execute("INSERT INTO t (payload) VALUES ('restored')")
        .await
        .unwrap();
    archive_everything(&env, "again", &restored_db).await;
    assert!(
        r.shared_claim_dir("backups").join("again/wal").is_dir(),
        "the restored cluster archives below its own prefix"
    );
}

/// A client of an Azure container, as any Azure client would be, straight to the store.
fn azure_store(azure: &AzureServer, container: &str, key: &str, ca: Option<&str>, root: &str) -> StoreConfig {
    use tusk::backup::store::{AzureConfig, Secret};
    StoreConfig {
        s3: None,
        azure: Some(AzureConfig {
            account: azure.account.clone(),
            container: container.into(),
            endpoint: Some(azure.endpoint()),
            access_key: Some(Secret::Inline(key.into())),
            sas_token: None,
            ca_bundle: ca.map(|c| Secret::Inline(c.into())),
        }),
        gcs: None,
        directory: None,
        root: root.into(),
        url: format!("azure://{}/{container}/{root}", azure.account),
    }
}

/// Azure Blob through the code every pod runs: objects go in and come back with their metadata,
/// a SAS token works as the account key does, and a wrong key, a missing container and an
/// untrusted certificate each say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_azure_container_stores_objects_and_names_what_is_wrong() {
    use tusk::backup::store::Cause;
    let azure = AzureServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    azure.create_container("pgbackups").unwrap();
    let ca = azure.ca_pem.clone();
    let store = azure_store(&azure, "pgbackups", &azure.key, Some(&ca), "db")
        .open()
        .unwrap();
    store
        .check()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", azure.log_tail(20)));
    let path = store.path("wal/000000010000000000000001.gz");
    let attributes =
        object_store::Attributes::from_iter([(object_store::Attribute::Metadata("sha256".into()), "abc")]);
    store
        .inner
        .put_opts(
            &path,
            object_store::PutPayload::from_static(b"segment"),
            object_store::PutOptions {
                attributes,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = store.inner.get(&path).await.unwrap();
    assert_eq!(
        got.attributes
            .get(&object_store::Attribute::Metadata("sha256".into()))
            .map(|v| v.as_ref()),
        Some("abc")
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"segment");
    assert_eq!(
        objects(&store, "wal").await,
        ["db/wal/000000010000000000000001.gz"]
    );

    let wrong_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    let refused = azure_store(&azure, "pgbackups", &wrong_key, Some(&ca), "db")
        .open()
        .unwrap();
    let error = refused.check().await.unwrap_err();
    assert_eq!(error.cause, Cause::Credentials, "{error}");
    let missing = azure_store(&azure, "nope", &azure.key, Some(&ca), "db")
        .open()
        .unwrap();
    let error = missing.check().await.unwrap_err();
    assert_eq!(error.cause, Cause::NoBucket, "{error}");
    assert!(
        error.message.starts_with("azure://tuskbackups/nope/db: "),
        "{error}"
    );
    // A SAS token instead of the account key: the same objects.
    let mut sas = azure_store(&azure, "pgbackups", &azure.key, Some(&ca), "db");
    if let Some(config) = sas.azure.as_mut() {
        config.access_key = None;
        config.sas_token = Some(tusk::backup::store::Secret::Inline(azure.sas_token().unwrap()));
    }
    let sas = sas.open().unwrap();
    assert_eq!(objects(&sas, "wal").await, ["db/wal/000000010000000000000001.gz"]);
    let untrusted = azure_store(&azure, "pgbackups", &azure.key, None, "db")
        .open()
        .unwrap();
    let error = untrusted.check().await.unwrap_err();
    assert_eq!(error.cause, Cause::Untrusted, "{error}");
}

/// A cluster whose target is an Azure container that only the cluster-wide proxy reaches: WAL
/// and a base backup go through the proxy, and a new cluster restores from the container. The
/// other tests' stores, on loopback, are in NO_PROXY and never pass the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_azure_container_behind_the_proxy_receives_backups_and_wal_and_restores() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s3 = shared_store().await;
    let env = Env::new("azure", s3).await;
    let azure = AzureServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    azure.create_container("pgbackups").unwrap();
    let proxied = format!("{PROXIED_HOST}:{}", azure.address().port());
    https_proxy().route(&proxied, azure.address());
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), &env.namespace);
    for (name, data) in [
        ("azure-credentials", json!({"AZURE_STORAGE_KEY": azure.key})),
        ("azure-ca", json!({"ca.crt": azure.ca_pem})),
    ] {
        let secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let target = json!({"azure": {
        "storageAccount": azure.account, "container": "pgbackups", "path": "prod",
        "endpoint": azure.endpoint_at(PROXIED_HOST),
        "credentialsSecret": "azure-credentials", "caBundle": {"name": "azure-ca", "key": "ca.crt"},
    }});
    let c = env
        .cluster(
            "db",
            18,
            2,
            json!({"backup": {"target": target, "archiveTimeout": "10s"}}),
        )
        .await;
    let db = c.connect(0).await.unwrap();
    table_of_1000_rows(&db).await;
    let backup = env.backup("first", "db", json!({})).await;
    let status = backup.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupPhase::Completed), "{status:?}");
    assert_eq!(
        status.location.as_deref(),
        Some("azure://tuskbackups/pgbackups/prod/db/base/first")
    );
    db.batch_execute("INSERT INTO t (payload) VALUES ('after the backup')")
        .await
        .unwrap();
    let expected = checksum(&db).await;
    archive_everything(&env, "db", &db).await;

    // In the container, read straight from the store.
    let store = azure_store(&azure, "pgbackups", &azure.key, Some(&azure.ca_pem), "prod/db")
        .open()
        .unwrap();
    let base = objects(&store, "base/first").await;
    for object in ["backup.json", "backup_manifest", "base.tar.zst"] {
        assert!(
            base.contains(&format!("prod/db/base/first/{object}")),
            "{object} in {base:?}"
        );
    }
    assert!(!objects(&store, "wal").await.is_empty(), "WAL in the container");
    // Every call went through the proxy, to the Azure store alone.
    let connects = https_proxy().connects();
    assert!(connects.contains(&(proxied.clone(), true)), "{connects:?}");
    assert!(
        connects
            .iter()
            .all(|(target, _)| target.starts_with(PROXIED_HOST)),
        "only the proxied store passes the proxy: {connects:?}"
    );

    // A new cluster restores from the container, through the proxy too.
    let (_restored, restored_db) = restored(
        &env,
        "copy",
        18,
        json!({"recovery": {"source": {"target": target, "clusterName": "db"}}}),
    )
    .await;
    assert_eq!(
        checksum(&restored_db).await,
        expected,
        "the restore has every archived row"
    );
}
