//! The data plane for real: the real operator builds a cluster's StatefulSet on the real control
//! plane, and its pods run as local processes (`tusk_testenv::pod`): the init container copies
//! `tusk-operator`, the main container runs `tusk-operator instance` with the image's PostgreSQL
//! mapped to PostgreSQL 15 from Debian or PostgreSQL 18 from registry binaries. The primary runs
//! `initdb`, two replicas `pg_basebackup` from it and stream; restarts reuse the data directory;
//! a fast shutdown that hangs becomes an immediate one;
//! when the primary stops, the operator promotes a replica through the primary's Lease and `-rw`
//! follows it, and the old primary rejoins as a replica; a foreign or damaged data directory is
//! refused and kept.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use serde_json::json;
use support::{
    apiserver::{plane_with_crds, start_operator},
    local_cluster::LocalCluster,
};
use tusk::api::postgres_cluster::v1::PostgresCluster;
use tusk_testenv::{Wait, eventually, postgres::Postgres};

/// Starts the operator once for this test binary.
async fn operator(plane: &tusk_testenv::ControlPlane) -> &'static support::apiserver::Operator {
    static OPERATOR: tokio::sync::OnceCell<support::apiserver::Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            let args = ["--resync-interval=5s".to_owned()];
            start_operator(plane, "tusk-operator", &args, "info,kube=warn").await
        })
        .await
}

/// A namespace with a cluster of `instances` running PostgreSQL `major`; no pod runs yet.
/// `synchronous_standby_names` as the user sets it in `spec.postgres.parameters`.
const USER_STANDBY_NAMES: &str = "ANY 1 (\"db-1\", \"db-2\")";

async fn cluster(prefix: &str, major: u32, instances: i32) -> LocalCluster {
    let postgres = Postgres::get(major).unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
    let plane = plane_with_crds().await;
    operator(plane).await;
    let ns = plane.namespace(prefix).await.unwrap();
    let spec = json!({
        // The user's own synchronous replication, not `spec.replication.synchronous`: Tusk leaves
        // it in force (`synchronous_commit: local`, so no commit waits for a standby here).
        "postgres": {"version": major, "parameters": {
            "wal_keep_size": "64MB",
            "synchronous_standby_names": USER_STANDBY_NAMES,
            "synchronous_commit": "local",
        }},
        "instances": instances,
        "storage": {"data": {"size": "1Gi"}},
    });
    let c = LocalCluster::create(plane, &ns, "db", spec, postgres).await;
    // The operator reaches each instance manager on its pod's loopback address.
    let operator = operator(plane).await;
    for ordinal in 0..instances {
        let address = std::net::SocketAddr::new(c.ip(ordinal), support::local_cluster::STATUS_PORT);
        operator.map_instance(&ns, "db", &format!("db-{ordinal}"), address);
    }
    c
}

/// The role and timeline `status.instanceStatus` shows for `pod`.
fn reported(status: &serde_json::Value, pod: &str) -> (String, Option<i64>) {
    let instance = status["instanceStatus"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == pod);
    instance.map_or((String::new(), None), |i| {
        (
            i["role"].as_str().unwrap_or_default().to_owned(),
            i["timeline"].as_i64(),
        )
    })
}

/// The cluster's status, once `primary` alone is labelled primary, is `status.currentPrimary`,
/// and each of `roles` (pod, role, timeline) shows in `status.instanceStatus`.
async fn primary_by_labels_and_status(
    c: &LocalCluster,
    primary: &str,
    roles: &[(&str, &str, Option<i64>)],
) -> serde_json::Value {
    let client = plane_with_crds().await.client().await.unwrap();
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &c.namespace);
    let clusters = Api::<PostgresCluster>::namespaced(client, &c.namespace);
    eventually(
        &format!("{primary} labelled primary and in status"),
        Duration::from_secs(60),
        || async {
            let labelled = pods
                .list(&kube::api::ListParams::default().labels("tusk.dev/role=primary"))
                .await
                .ok()?;
            let names: Vec<String> = labelled
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let status = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
            let shown = roles
                .iter()
                .all(|(pod, role, timeline)| reported(&status, pod) == ((*role).to_owned(), *timeline));
            (names == [primary] && status["currentPrimary"] == primary && shown).then_some(status)
        },
    )
    .await
}

async fn count(db: &tokio_postgres::Client, marker: &str) -> i64 {
    db.query_one("SELECT count(*) FROM rows WHERE marker = $1", &[&marker])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Inserts a row on `primary` and waits for every replica to show it; returns the slowest delay.
async fn replicate(c: &LocalCluster, primary: i32, replicas: &[i32], marker: &str) -> Duration {
    let db = c.connect(primary).await.unwrap();
    db.execute("INSERT INTO rows (marker) VALUES ($1)", &[&marker])
        .await
        .unwrap();
    let written = Instant::now();
    let mut slowest = Duration::ZERO;
    for &r in replicas {
        let replica = c.connect(r).await.unwrap();
        // Within 5 s of the write, for every replica.
        let left = Duration::from_secs(5).saturating_sub(written.elapsed());
        eventually(
            &format!("row {marker} on replica {r} within 5 s"),
            Wait::up_to(left).every(Duration::from_millis(20)),
            async || (count(&replica, marker).await > 0).then_some(()),
        )
        .await;
        slowest = slowest.max(written.elapsed());
    }
    slowest
}

async fn primary_and_two_replicas(major: u32) {
    let mut c = cluster(&format!("stream{major}"), major, 3).await;
    let ready = Duration::from_secs(120);
    c.start(0).await;
    c.wait_ready(0, ready).await;
    let primary = c.connect(0).await.unwrap();
    let version: String = primary
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with(&major.to_string()), "{version}");
    // The superuser password is the Secret's, checked with SCRAM.
    let verifier: String = primary
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let wrong =
        support::local_cluster::superuser(&c.target(0).await, "not-the-password", Duration::from_secs(5))
            .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    primary
        .batch_execute("CREATE TABLE rows (id serial PRIMARY KEY, marker text NOT NULL)")
        .await
        .unwrap();
    primary
        .execute("INSERT INTO rows (marker) VALUES ('before replicas')", &[])
        .await
        .unwrap();

    for r in [1, 2] {
        c.start(r).await;
    }
    for r in [1, 2] {
        c.wait_ready(r, ready).await;
        let replica = c.connect(r).await.unwrap();
        assert_eq!(
            count(&replica, "before replicas").await,
            1,
            "replica {r} copied the primary"
        );
        let writable = replica.batch_execute("CREATE TABLE nope (i int)").await;
        let refused = writable.unwrap_err();
        let message = refused
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("read-only transaction"), "{refused:?}");
    }
    let streams: i64 = primary
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(streams, 2, "both replicas stream from the primary");
    // Once the operator has sent its replication request (the primary wrote the file it keeps
    // the operator's settings in, and reloaded), the user's synchronous_standby_names is still in
    // force: the replicas are quorum standbys.
    let managed = c.claim_dir(0, "data").join("pgdata/tusk.replication.conf");
    eventually(
        "the operator's replication request",
        Duration::from_secs(60),
        || async { managed.exists().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = c.connect(0).await.unwrap();
    let names: String = fresh
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        names,
        USER_STANDBY_NAMES,
        "{}",
        std::fs::read_to_string(&managed).unwrap()
    );
    let quorum: i64 = fresh
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        quorum, 2,
        "both replicas are quorum standbys of the user's setting"
    );
    let slowest = replicate(&c, 0, &[1, 2], "streamed").await;
    println!("PostgreSQL {major}: a row written on the primary was on both replicas after {slowest:?}");

    // Endpoints: liveness, and metrics with the role, lag, connections, sizes and transactions.
    assert_eq!(c.status(1, "/healthz").await.unwrap().0, 200);
    // /metrics is HTTPS with the cluster's certificate, and needs a token that may get it (the
    // pod asks the API server as the caller): none is 401, a bad one 401, the reader's 200.
    assert_eq!(c.metrics_as(1, None).await.unwrap().0, 401);
    assert_eq!(c.metrics_as(1, Some("not-a-token")).await.unwrap().0, 401);
    assert_eq!(
        c.status(1, "/metrics").await.unwrap().0,
        404,
        "no /metrics on the plain port"
    );
    let pods_only: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }))
    .unwrap();
    let plane = support::apiserver::plane_with_crds().await;
    let stranger =
        support::https::token_for(plane, "monitoring", &format!("pods-only-{major}"), &pods_only).await;
    let (status, body) = c.metrics_as(1, Some(&stranger)).await.unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, metrics) = c.metrics(1).await.unwrap();
    assert_eq!(status, 200, "{metrics}");
    for line in [
        "tusk_instance_up 1",
        "tusk_instance_role{role=\"replica\"} 1",
        "tusk_instance_streaming 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("tusk_instance_replication_lag_bytes "),
        "{metrics}"
    );
    let (_, metrics) = c.metrics(0).await.unwrap();
    for line in [
        "tusk_instance_role{role=\"primary\"} 1",
        "tusk_instance_connections{state=",
        "tusk_instance_database_size_bytes{database=\"postgres\"}",
        "tusk_instance_transactions_total{database=\"postgres\",outcome=\"commit\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    // A replica restarts on its data directory and catches up.
    let stopped = c.stop(1);
    let log = stopped.main.log_tail(200);
    assert!(
        log.contains("fast shutdown") && log.contains("postgres stopped"),
        "{log}"
    );
    primary
        .execute("INSERT INTO rows (marker) VALUES ('while 1 was down')", &[])
        .await
        .unwrap();
    c.start(1).await;
    c.wait_ready(1, ready).await;
    let log = c.pods[&1].main.log_tail(200);
    let log = log.rsplit("instance manager started").next().unwrap();
    assert!(
        log.contains("reusing the data directory") && !log.contains("pg_basebackup"),
        "{log}"
    );
    let replica = c.connect(1).await.unwrap();
    eventually(
        "the restarted replica to catch up",
        Duration::from_secs(10),
        || async { (count(&replica, "while 1 was down").await == 1).then_some(()) },
    )
    .await;
    replicate(&c, 0, &[1, 2], "after restart").await;

    primary_by_labels_and_status(
        &c,
        "db-0",
        &[
            ("db-0", "primary", Some(1)),
            ("db-1", "replica", Some(1)),
            ("db-2", "replica", Some(1)),
        ],
    )
    .await;

    // The primary goes away. Once its Lease expires, the operator hands it to the replica whose
    // WAL goes furthest (db-1 and db-2 have all of it: the lowest name), which promotes; `-rw`
    // follows it, not pod 0.
    c.stop(0);
    let promoted = eventually("a write through -rw", Duration::from_secs(60), || async {
        let db = c.connect_rw().await.ok()?;
        db.execute("INSERT INTO rows (marker) VALUES ('on the new primary')", &[])
            .await
            .ok()?;
        Some(db)
    })
    .await;
    assert_eq!(count(&promoted, "after restart").await, 1);
    primary_by_labels_and_status(
        &c,
        "db-1",
        &[
            ("db-1", "primary", Some(2)),
            ("db-0", "unknown", None),
            ("db-2", "replica", Some(2)),
        ],
    )
    .await;
    let (_, metrics) = c.metrics(1).await.unwrap();
    assert!(
        metrics.contains("tusk_instance_role{role=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(
        !c.claim_dir(1, "data").join("pgdata/standby.signal").exists(),
        "a promoted instance restarts as a primary"
    );
    // The old primary comes back as a replica of the new timeline, with every row.
    c.start(0).await;
    c.wait_ready(0, ready).await;
    let rejoined = c.connect(0).await.unwrap();
    eventually(
        "pod 0 to have the new primary's row",
        Duration::from_secs(30),
        || async { (count(&rejoined, "on the new primary").await == 1).then_some(()) },
    )
    .await;
    let recovering: bool = rejoined
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recovering, "the old primary rejoined as a replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_15_primary_and_two_replicas_stream() {
    primary_and_two_replicas(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_18_primary_and_two_replicas_stream() {
    primary_and_two_replicas(18).await;
}

/// Waits for the pod's instance manager to exit, and returns its log.
async fn exits(c: &LocalCluster, ordinal: i32) -> String {
    let pod = &c.pods[&ordinal];
    eventually(
        "the instance manager to refuse the data directory",
        Duration::from_secs(30),
        || async { (!pod.main.alive()).then_some(()) },
    )
    .await;
    pod.main.log_tail(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_or_damaged_data_directory_is_refused_and_kept() {
    let mut c = cluster("foreign", 15, 1).await;
    // Something that is not a data directory.
    let pgdata = c.claim_dir(0, "data").join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("notes.txt"), "mine").unwrap();
    tusk_testenv::postgres::chown_for_postgres(&c.claim_dir(0, "data")).unwrap();
    c.start(0).await;
    let log = exits(&c, 0).await;
    assert!(
        log.contains("is not a PostgreSQL data directory (it has no PG_VERSION)"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(pgdata.join("notes.txt")).unwrap(), "mine");
    assert_eq!(
        std::fs::read_dir(&pgdata).unwrap().count(),
        1,
        "nothing was added or removed"
    );
    c.stop(0);

    // A real data directory, then another cluster's, then a damaged one.
    std::fs::remove_dir_all(&pgdata).unwrap();
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(60)).await;
    c.stop(0);
    let marker = pgdata.join("tusk.cluster");
    std::fs::write(&marker, "other\n").unwrap();
    c.start(0).await;
    let log = exits(&c, 0).await;
    assert!(
        log.contains("belongs to PostgresCluster \"other\", not \"db\""),
        "{log}"
    );
    c.stop(0);
    std::fs::write(&marker, "db\n").unwrap();

    let control = pgdata.join("global/pg_control");
    let mut bytes = std::fs::read(&control).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&control, &bytes).unwrap();
    c.start(0).await;
    let log = exits(&c, 0).await;
    assert!(log.contains("is damaged: pg_controldata"), "{log}");
    assert_eq!(
        std::fs::read(&control).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    c.stop(0);
    bytes[40] ^= 0xff;
    std::fs::write(&control, &bytes).unwrap();
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_shutdown_that_hangs_becomes_an_immediate_one() {
    let mut c = cluster("stop", 15, 1).await;
    // The pod's 45 s would outlast the supervisor's 10 s before SIGKILL.
    c.add_instance_arg("--fast-stop-timeout=2s");
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(60)).await;
    let db = c.connect(0).await.unwrap();
    db.batch_execute("CREATE TABLE kept (i int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    // A fast shutdown waits for the checkpointer's shutdown checkpoint: freeze it.
    let checkpointer: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(db);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(checkpointer),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let stopped = c.stop(0);
    let log = stopped.main.log_tail(100);
    assert!(log.contains("stopping postgres: fast shutdown"), "{log}");
    assert!(
        log.contains("the fast shutdown took too long: immediate shutdown"),
        "{log}"
    );
    assert!(log.contains("postgres stopped"), "{log}");
    // The data survives an immediate shutdown: the restart recovers it.
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(60)).await;
    let kept: i64 = c
        .connect(0)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}
