//! High availability for real: the real operator, local pods with PostgreSQL 15 and 18, and the
//! primary's Lease on the real API server.
//!
//! - the primary is killed (SIGKILL to the instance manager and PostgreSQL, as a lost node): a
//!   replica is promoted, writes through `-rw` succeed again, and the time from the kill to the
//!   first committed write is printed; the old pod comes back as a replica of the new timeline
//!   (`pg_rewind`) with the new primary's data;
//! - the primary is cut off from the API server: it fences itself (no write commits on it) before
//!   a replica is promoted, and a writer on every pod shows that no two accept writes at once.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use serde_json::json;
use support::{
    apiserver::{plane_with_crds, start_operator},
    local_cluster::{LocalCluster, STATUS_PORT, superuser},
};
use tusk::api::postgres_cluster::v1::PostgresCluster;
use tusk_testenv::{eventually, postgres::Postgres};

/// The operator every test of this binary runs under.
static OPERATOR: tokio::sync::Mutex<Option<&'static support::apiserver::Operator>> =
    tokio::sync::Mutex::const_new(None);

/// The operator, started once for this test binary.
async fn operator() -> &'static support::apiserver::Operator {
    let mut current = OPERATOR.lock().await;
    if let Some(operator) = *current {
        return operator;
    }
    let plane = plane_with_crds().await;
    let operator: &'static _ = Box::leak(Box::new(
        start_operator(
            plane,
            "tusk-operator",
            &["--resync-interval=5s".to_owned()],
            "info,kube=warn",
        )
        .await,
    ));
    *current = Some(operator);
    operator
}

/// While alive, makes a failing test print what the operator logged about `namespace`.
struct OperatorLogOnFailure(String);

impl Drop for OperatorLogOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(operator) = OPERATOR.try_lock().ok().and_then(|o| *o) else {
            return;
        };
        let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
        // A cluster waiting reconciles often; its status writes say nothing a failure needs.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&self.0) && !l.contains("status updated"))
            .collect();
        eprintln!(
            "--- the operator's last {} lines about namespace {} ---\n{}",
            lines.len().min(200),
            self.0,
            lines[lines.len().saturating_sub(200)..].join("\n")
        );
    }
}

/// One scenario at a time: each runs three PostgreSQL pods on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running three-instance cluster of PostgreSQL `major`, with a table `t`.
async fn three_instances(prefix: &str, major: u32) -> LocalCluster {
    three_instances_with(prefix, major, json!({})).await
}

/// As [`three_instances`], with `extra` merged into the spec.
async fn three_instances_with(prefix: &str, major: u32, extra: serde_json::Value) -> LocalCluster {
    let postgres = Postgres::get(major).unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
    let plane = plane_with_crds().await;
    let operator = operator().await;
    let ns = plane.namespace(prefix).await.unwrap();
    let mut spec =
        json!({"postgres": {"version": major}, "instances": 3, "storage": {"data": {"size": "1Gi"}}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut c = LocalCluster::create(plane, &ns, "db", spec, postgres).await;
    for ordinal in 0..3 {
        let address = std::net::SocketAddr::new(c.ip(ordinal), STATUS_PORT);
        operator.map_instance(&ns, "db", &format!("db-{ordinal}"), address);
    }
    for ordinal in 0..3 {
        c.start(ordinal).await;
        c.wait_ready(ordinal, Duration::from_secs(180)).await;
    }
    let db = writable(&c, Duration::from_secs(60)).await;
    db.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, at text NOT NULL)")
        .await
        .unwrap();
    c
}

/// A connection through `-rw` to a PostgreSQL that accepts writes (not in recovery).
async fn writable(c: &LocalCluster, within: Duration) -> tokio_postgres::Client {
    eventually("a writable primary through -rw", within, || async {
        let db = c.connect_rw().await.ok()?;
        let row = db.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
        (!row.get::<_, bool>(0)).then_some(db)
    })
    .await
}

/// A connection through `-rw` once a row `after the failover` committed on it.
async fn first_write_after_failover(c: &LocalCluster, within: Duration) -> tokio_postgres::Client {
    eventually("a committed write through -rw", within, || async {
        let db = c.connect_rw().await.ok()?;
        db.execute("INSERT INTO t (at) VALUES ('after the failover')", &[])
            .await
            .ok()?;
        Some(db)
    })
    .await
}

/// Commits `count` rows into `t`, one at a time, named `what` and a number.
async fn insert_rows(db: &tokio_postgres::Client, what: &str, count: usize) {
    for i in 0..count {
        db.execute("INSERT INTO t (at) VALUES ($1)", &[&format!("{what} {i}")])
            .await
            .unwrap();
    }
}

async fn rows(db: &tokio_postgres::Client) -> (i64, String) {
    let row = db
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(id::text || at, ',' ORDER BY id)), '') FROM t",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until pod `ordinal` runs as a replica with exactly the rows `expected` ([`rows`]),
/// running `each` at every look; fails with the pod's log when it does not within a minute.
async fn replica_with(c: &LocalCluster, ordinal: i32, expected: &(i64, String), mut each: impl AsyncFnMut()) {
    let caught_up = tusk_testenv::Wait::up_to(Duration::from_secs(60))
        .until(
            &format!("db-{ordinal} to be a replica with every row"),
            async || {
                each().await;
                let Ok(db) = c.connect(ordinal).await else {
                    return tusk_testenv::Seen::NotYet(format!("db-{ordinal} does not answer"));
                };
                let recovering: bool = match db.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) => row.get(0),
                    Err(e) => return tusk_testenv::Seen::NotYet(e.to_string()),
                };
                let now = rows(&db).await;
                if recovering && &now == expected {
                    tusk_testenv::Seen::Holds(())
                } else {
                    tusk_testenv::Seen::NotYet(format!(
                        "recovering {recovering}, {now:?}; the primary has {expected:?}"
                    ))
                }
            },
        )
        .await;
    if let Err(unmet) = caught_up {
        panic!("{unmet}\n{}", c.pods[&ordinal].main.log_tail(60));
    }
}

async fn primary_lost(major: u32) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances(&format!("lost{major}"), major).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let db = writable(&c, Duration::from_secs(30)).await;
    insert_rows(&db, "before", 200).await;
    // Let the replicas have everything, as asynchronous replication would within moments.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.labelled_primary().await.as_deref(), Some("db-0"));

    let killed = Instant::now();
    c.kill(0);
    let after = first_write_after_failover(&c, Duration::from_secs(60)).await;
    let outage = killed.elapsed();
    eprintln!(
        "PostgreSQL {major}: from the kill to the first committed write on the new primary: {outage:.1?}"
    );
    let promoted = c.labelled_primary().await.expect("one pod labelled primary");
    assert_ne!(promoted, "db-0");
    let (count, _) = rows(&after).await;
    assert_eq!(count, 201, "every row written before the kill, and the new one");
    let timeline: i32 = after
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    let _ = timeline;
    let status = {
        let client = plane_with_crds().await.client().await.unwrap();
        let api = Api::<PostgresCluster>::namespaced(client, &c.namespace);
        // The Lease holder is named at once; its instance status says primary once it promoted.
        eventually(
            "the status to name the new primary, promoted",
            Duration::from_secs(30),
            || async {
                let s = serde_json::to_value(api.get("db").await.ok()?.status).ok()?;
                let promoted_shown = s["instanceStatus"]
                    .as_array()?
                    .iter()
                    .any(|i| i["name"] == promoted.as_str() && i["role"] == "primary");
                (s["currentPrimary"] == promoted.as_str() && promoted_shown).then_some(s)
            },
        )
        .await
    };
    let new_primary = status["instanceStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == promoted.as_str())
        .cloned()
        .unwrap();
    assert_eq!(new_primary["timeline"], 2, "{status:#}");

    // The old primary comes back: a replica of the new timeline, with the same rows.
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    let expected = rows(&after).await;
    replica_with(&c, 0, &expected, async || {}).await;
    assert_eq!(c.labelled_primary().await, Some(promoted), "no second primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_is_replaced_and_rejoins_on_postgres_15() {
    primary_lost(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_is_replaced_and_rejoins_on_postgres_18() {
    primary_lost(18).await;
}

/// The primary cut off from the API server fences itself before a replica is promoted: a writer
/// on every pod records when each commit was acknowledged, and no two pods acknowledge commits in
/// overlapping windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_cut_off_from_the_api_fences_itself_before_another_takes_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances("partition", 18).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for ordinal in 0..3 {
        let (address, password, stop) = (c.target(ordinal).await, c.password.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            // (first, last) acknowledged commit on this pod.
            let mut window: Option<(Instant, Instant)> = None;
            let mut db: Option<tokio_postgres::Client> = None;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if db.is_none() {
                    db = superuser(&address, &password, Duration::from_secs(1)).await.ok();
                }
                if let Some(client) = &db {
                    match client
                        .execute("INSERT INTO t (at) VALUES ($1)", &[&format!("pod {ordinal}")])
                        .await
                    {
                        Ok(_) => {
                            let now = Instant::now();
                            window = Some(window.map_or((now, now), |(first, _)| (first, now)));
                        }
                        Err(e) if e.as_db_error().is_some() => {} // read-only: a replica
                        Err(_) => db = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            window
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    c.cut_api(0);
    let promoted = eventually(
        "another pod labelled primary",
        Duration::from_secs(60),
        || async { c.labelled_primary().await.filter(|p| p != "db-0") },
    )
    .await;
    let _ = writable(&c, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut windows = Vec::new();
    for w in writers {
        windows.push(w.await.unwrap());
    }
    let (first_0, last_0) = windows[0].expect("pod 0 took writes before the cut");
    let ordinal: usize = promoted.rsplit('-').next().unwrap().parse().unwrap();
    let (first_new, _) = windows[ordinal].expect("the new primary took writes");
    eprintln!(
        "pod 0 acknowledged its last write {:.1?} after the cut; {promoted} its first {:.1?} after it",
        last_0.duration_since(cut),
        first_new.duration_since(cut)
    );
    assert!(first_0 < cut);
    assert!(
        last_0 < first_new,
        "two primaries took writes at once: pod 0 until {:?} after the cut, {promoted} from {:?}",
        last_0.duration_since(cut),
        first_new.duration_since(cut)
    );
    for (o, w) in windows.iter().enumerate() {
        if o != 0 && o != ordinal {
            assert!(w.is_none(), "pod {o} never accepts writes");
        }
    }
    // Pod 0 started again while still cut off waits to read the Lease; SIGTERM stops it there,
    // at once, not at the kubelet's SIGKILL.
    drop(c.stop(0));
    c.start(0).await;
    let pod = &c.pods[&0];
    let this_run = |log: String| {
        log.rsplit("instance manager started")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    eventually("pod 0 to wait for the Lease", Duration::from_secs(30), || async {
        this_run(pod.main.log_tail(50))
            .contains("reading the primary's Lease")
            .then_some(())
    })
    .await;
    let stopped = c.stop(0);
    let log = this_run(stopped.main.log_tail(50));
    assert!(
        log.contains("stopped by SIGTERM while reading the primary's Lease"),
        "{log}"
    );
    // Back in touch, it rejoins as a replica; the operator learns of the fence from it: a
    // `Fenced` Event and `fencedAt` in its instance status.
    c.restore_api(0);
    c.start(0).await;
    c.wait_ready(0, Duration::from_secs(120)).await;
    let shown = told(&c, "db-0", "Fenced", "db-0 fenced itself at ", |i| {
        i.fenced_at.clone()
    })
    .await;
    let at: k8s_openapi::jiff::Timestamp = shown.parse().unwrap();
    let since_cut = k8s_openapi::jiff::Timestamp::now().duration_since(at);
    assert!(
        since_cut.as_secs() < cut.elapsed().as_secs() as i64 + 2,
        "the fence ({shown}) came after the cut"
    );
}

/// A switchover asked for with `spec.switchover.to` while a writer commits through `-rw`: every
/// acknowledged commit is on the new primary, the longest pause between two acknowledged commits
/// is printed, and the old primary rejoins as a replica by itself (no restart).
async fn switchover_under_load(major: u32) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances(&format!("switch{major}"), major).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let client = plane_with_crds().await.client().await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &c.namespace);
    assert_eq!(c.labelled_primary().await.as_deref(), Some("db-0"));
    let mut status = serde_json::Value::Null;
    let outcome = under_load(&mut c, async |c: &mut LocalCluster| {
        c.switch_over("db-1").await;
        status = eventually("the switchover to complete", Duration::from_secs(120), || async {
            let s = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
            (s["switchover"]["phase"] == "Completed" && s["currentPrimary"] == "db-1").then_some(s)
        })
        .await;
        let _ = eventually("db-1 labelled primary", Duration::from_secs(30), || async {
            (c.labelled_primary().await.as_deref() == Some("db-1")).then_some(())
        })
        .await;
    })
    .await;
    eprintln!(
        "PostgreSQL {major}: switchover db-0 → db-1 under load: {} commits acknowledged, {} lost, longest pause between two: {:.2?}; {}",
        outcome.acknowledged, outcome.lost, outcome.outage, status["switchover"]["message"]
    );
    // Every acknowledged commit is on the new primary.
    assert_eq!(outcome.lost, 0, "acknowledged commits lost");
    assert!(outcome.acknowledged > 10, "the writer committed through -rw");
    let primary = c.connect(1).await.unwrap();
    assert_eq!(status["lastPromotion"]["reason"], "Switchover", "{status:#}");
    assert_eq!(status["lastPromotion"]["instance"], "db-1", "{status:#}");
    assert_eq!(status["targetPrimary"], "db-1", "{status:#}");
    assert_eq!(status["timeline"], 2, "{status:#}");
    support::event(&client, &c.namespace, "SwitchedOver", |e| {
        e.note.as_deref().is_some_and(|n| n.contains("db-1"))
    })
    .await;

    // The old primary rejoined by itself, as a replica with every row.
    let expected = rows(&primary).await;
    replica_with(&c, 0, &expected, async || {}).await;

    support::event(&client, &c.namespace, "Rejoined", |e| {
        e.note
            .as_deref()
            .is_some_and(|n| n.starts_with("db-0,") && n.ends_with("timeline 2"))
    })
    .await;
    // The promotion keeps that its former primary's return was announced.
    eventually("lastPromotion.rejoinedAt", Duration::from_secs(30), || async {
        let s = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
        s["lastPromotion"]["rejoinedAt"].as_str().map(|_| ())
    })
    .await;

    // An instance that does not exist: refused, naming the field.
    c.switch_over("db-9").await;
    let refused = eventually(
        "the switchover to db-9 refused",
        Duration::from_secs(30),
        || async {
            let s = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
            (s["switchover"]["phase"] == "Failed").then_some(s)
        },
    )
    .await;
    let message = refused["switchover"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.switchover.to: db-9 is not an instance"),
        "{message}"
    );
    assert_eq!(refused["currentPrimary"], "db-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_under_write_load_loses_no_commit_on_postgres_15() {
    switchover_under_load(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_under_write_load_loses_no_commit_on_postgres_18() {
    switchover_under_load(18).await;
}

/// Synchronous replication with `dataDurability: Required`: a writer commits through `-rw` as
/// fast as it can while the primary is killed; every commit it saw acknowledged is on the new
/// primary. Each replica streams through its own slot, and the slots follow the failover. With
/// `failoverDelay: 5s`, once the Lease expired the operator first says the primary is
/// unresponsive, naming the field, and leaves the Lease where it is; then it promotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synchronous_required_loses_no_acknowledged_commit_when_the_primary_dies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let extra = json!({
        "replication": {"synchronous": {"method": "Any", "number": 1, "dataDurability": "Required"}},
        "failoverDelay": "5s",
    });
    let mut c = three_instances_with("sync", 18, extra).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let db = writable(&c, Duration::from_secs(30)).await;
    let names = eventually(
        "synchronous_standby_names set",
        Duration::from_secs(30),
        || async {
            let row = db.query_one("SHOW synchronous_standby_names", &[]).await.ok()?;
            let names: String = row.get(0);
            (!names.is_empty()).then_some(names)
        },
    )
    .await;
    assert_eq!(names, "ANY 1 (\"db-1\", \"db-2\")");
    let slots = |db: tokio_postgres::Client| async move {
        eventually(
            "both replicas streaming through their slots",
            Duration::from_secs(60),
            || async {
                let rows = db
                    .query(
                        "SELECT slot_name::text FROM pg_replication_slots WHERE active ORDER BY 1",
                        &[],
                    )
                    .await
                    .ok()?;
                let active: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                (active.len() == 2).then_some(active)
            },
        )
        .await
    };
    assert_eq!(slots(db).await, ["tusk_db_1", "tusk_db_2"]);

    let killed = Instant::now();
    let client = plane_with_crds().await.client().await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &c.namespace);
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client, &c.namespace);
    let mut waited = None;
    let outcome = under_load(&mut c, async |c: &mut LocalCluster| {
        c.kill(0);
        let condition = eventually(
            "Degraded PrimaryUnresponsive",
            Duration::from_secs(30),
            || async {
                let status = clusters.get("db").await.ok()?.status?;
                status
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "Degraded" && c.reason == "PrimaryUnresponsive")
            },
        )
        .await;
        let holder = leases
            .get("db-primary")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity;
        waited = Some((condition.message, holder));
    })
    .await;
    let (message, holder) = waited.unwrap();
    assert!(message.contains("spec.failoverDelay"), "{message}");
    assert_eq!(
        holder.as_deref(),
        Some("db-0"),
        "the Lease stays while failoverDelay runs: {message}"
    );
    let promoted = c.labelled_primary().await.expect("a new primary");
    assert_ne!(promoted, "db-0");
    eprintln!(
        "synchronous Required: {} commits acknowledged, {} lost; longest pause {:.1?} (the round took {:.1?})",
        outcome.acknowledged,
        outcome.lost,
        outcome.outage,
        killed.elapsed()
    );
    assert_eq!(outcome.lost, 0, "acknowledged commits lost");
    assert!(outcome.acknowledged > 10, "the writer committed through -rw");
    let ordinal: i32 = promoted.rsplit('-').next().unwrap().parse().unwrap();
    let new_primary = c.connect(ordinal).await.unwrap();
    // The new primary keeps the names, without itself, and a slot for each other instance.
    let names: String = new_primary
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !names.contains(&format!("\"{promoted}\"")) && names.starts_with("ANY 1"),
        "{names}"
    );
    let other = if ordinal == 1 { 2 } else { 1 };
    let slots_now: Vec<String> = new_primary
        .query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots_now, ["tusk_db_0".to_owned(), format!("tusk_db_{other}")]);
    // The surviving replica streams from the new primary through its slot.
    eventually(
        "the other replica streaming through its slot",
        Duration::from_secs(60),
        || async {
            let row = new_primary
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&format!("tusk_db_{other}")],
                )
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())
        },
    )
    .await;
}

/// The primary's volume is lost: its pod comes back with an empty data directory while it still
/// holds the Lease. It gives the Lease up and clones the replica promoted in its place; at no
/// moment do two pods accept writes, and its data equals the new primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_that_lost_its_volume_clones_and_never_initdbs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances("lostvolume", 18).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let db = writable(&c, Duration::from_secs(30)).await;
    insert_rows(&db, "row", 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill(0);
    let data = c.claim_dir(0, "data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    // Back at once, within the Lease it still holds.
    c.start(0).await;
    let mut primaries_seen = std::collections::BTreeSet::new();
    let promoted = eventually(
        "another pod labelled primary",
        Duration::from_secs(60),
        || async { c.labelled_primary().await.filter(|p| p != "db-0") },
    )
    .await;
    let after = writable(&c, Duration::from_secs(30)).await;
    after
        .execute("INSERT INTO t (at) VALUES ('after the loss')", &[])
        .await
        .unwrap();
    c.wait_ready(0, Duration::from_secs(120)).await;
    let expected = rows(&after).await;
    assert_eq!(expected.0, 101);
    replica_with(&c, 0, &expected, async || {
        for ordinal in 0..3 {
            if let Ok(pod) = c.connect(ordinal).await
                && let Ok(row) = pod.query_one("SELECT NOT pg_is_in_recovery()", &[]).await
                && row.get::<_, bool>(0)
            {
                primaries_seen.insert(ordinal);
            }
        }
    })
    .await;
    assert_eq!(
        primaries_seen.len(),
        1,
        "one primary at a time: {primaries_seen:?}"
    );
    assert!(!primaries_seen.contains(&0));
    assert_eq!(c.labelled_primary().await, Some(promoted));
    let log = c.pods[&0].main.log_tail(400);
    // The same log file holds the first start: only what came after the restart.
    let log = log.rsplit("instance manager started").next().unwrap();
    assert!(
        !log.contains("initdb: bootstrapping") && log.contains("giving the Lease up"),
        "{log}"
    );
}

/// A replica that received more than the replica promoted (it was down while the other one
/// took over) cannot follow the new timeline: it finds its WAL past the fork, stops, rewinds onto
/// the new primary's timeline and streams again with exactly the new primary's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_ahead_of_the_promoted_one_rewinds_onto_the_new_timeline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances("ahead", 18).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    let db = writable(&c, Duration::from_secs(30)).await;
    insert_rows(&db, "on every pod", 100).await;
    // db-2 stops cleanly and misses what follows; db-1 replays it.
    let replayed = async |c: &LocalCluster, ordinal: i32, count: i64| {
        eventually(
            &format!("db-{ordinal} to have {count} rows"),
            Duration::from_secs(30),
            || async { (rows(&c.connect(ordinal).await.ok()?).await.0 == count).then_some(()) },
        )
        .await
    };
    replayed(&c, 2, 100).await;
    drop(c.stop(2));
    insert_rows(&db, "on db-0 and db-1 only", 100).await;
    replayed(&c, 1, 200).await;
    drop(c.stop(1));
    // The primary dies; db-2 is the only replica that answers, and is promoted.
    c.kill(0);
    c.start(2).await;
    let after = first_write_after_failover(&c, Duration::from_secs(120)).await;
    assert_eq!(c.labelled_primary().await.as_deref(), Some("db-2"));
    let expected = rows(&after).await;
    assert_eq!(expected.0, 101, "db-2 never had the second hundred rows");

    // db-1 comes back on timeline 1, past the fork: it rewinds and follows db-2.
    c.start(1).await;
    c.wait_ready(1, Duration::from_secs(180)).await;
    replica_with(&c, 1, &expected, async || {}).await;
    let log = c.pods[&1].main.log_tail(400);
    let log = log.rsplit("instance manager started").next().unwrap();
    assert!(
        log.contains("cannot follow the primary") && log.contains("pg_rewind: this instance follows"),
        "{log}"
    );
    assert_eq!(
        c.labelled_primary().await.as_deref(),
        Some("db-2"),
        "no second primary"
    );
    // The operator tells of it: a `Rewound` Event and `rewoundAt` in db-1's instance status.
    told(
        &c,
        "db-1",
        "Rewound",
        "db-1 was brought onto the primary's timeline at ",
        |i| i.rewound_at.clone(),
    )
    .await;
}

/// Waits for what the operator tells of `pod`, now a replica: an Event with `reason` whose note
/// starts with `note`, and a time `shown` in its `status.instanceStatus` entry; that time.
async fn told(
    c: &LocalCluster,
    pod: &str,
    reason: &str,
    note: &str,
    shown: impl Fn(&tusk::api::postgres_cluster::v1::InstanceStatus) -> Option<String>,
) -> String {
    let client = plane_with_crds().await.client().await.unwrap();
    let event = support::event(&client, &c.namespace, reason, |e| {
        e.note.as_deref().is_some_and(|n| n.starts_with(note))
    })
    .await;
    eprintln!("{}", event.note.unwrap_or_default());
    let clusters = Api::<PostgresCluster>::namespaced(client, &c.namespace);
    eventually(
        &format!("{reason} of {pod} in its instance status"),
        Duration::from_secs(30),
        || async {
            let status = clusters.get("db").await.ok()?.status?;
            status
                .instance_status?
                .iter()
                .find(|i| i.name == pod && i.role == "replica")
                .and_then(&shown)
        },
    )
    .await
}

/// What one round of [`under_load`] saw.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// The longest pause between two acknowledged commits.
    outage: Duration,
    /// Commits acknowledged.
    acknowledged: usize,
    /// Of those, commits the primary afterwards does not have.
    lost: usize,
}

/// Commits through `-rw` as fast as one connection can while `act` runs, and for half a second
/// before and after; then checks every acknowledged commit against the primary `-rw` leads to.
async fn under_load(c: &mut LocalCluster, act: impl AsyncFnOnce(&mut LocalCluster)) -> Outcome {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (rw, password, flag) = (c.rw_target().await, c.password.clone(), stop.clone());
    let writer = tokio::spawn(async move {
        let mut acknowledged: Vec<(i64, Instant)> = Vec::new();
        let mut db: Option<tokio_postgres::Client> = None;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            if db.is_none() {
                db = superuser(&rw, &password, Duration::from_secs(1)).await.ok();
            }
            match &db {
                Some(client) => match client
                    .query_one("INSERT INTO t (at) VALUES ('load') RETURNING id", &[])
                    .await
                {
                    Ok(row) => acknowledged.push((row.get(0), Instant::now())),
                    Err(_) => db = None,
                },
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    act(c).await;
    let after = writable(c, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acknowledged = writer.await.unwrap();
    let ids: std::collections::BTreeSet<i64> = after
        .query("SELECT id FROM t", &[])
        .await
        .unwrap_or_else(|e| panic!("the primary -rw led to, half a second after the writes resumed: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    Outcome {
        outage: acknowledged
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default(),
        acknowledged: acknowledged.len(),
        lost: acknowledged.iter().filter(|(id, _)| !ids.contains(id)).count(),
    }
}

/// Waits until every instance is ready, the cluster says so, the primary is stable, and it has a
/// slot in use for each replica.
async fn settled(c: &LocalCluster) {
    let client = plane_with_crds().await.client().await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client, &c.namespace);
    for ordinal in 0..3 {
        c.wait_ready(ordinal, Duration::from_secs(120)).await;
    }
    eventually(
        "Ready, PrimaryStable and two slots in use",
        Duration::from_secs(90),
        || async {
            let status = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
            let condition = |t: &str| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            if !(condition("Ready") && condition("PrimaryStable")) {
                return None;
            }
            let primary = c.connect_rw().await.ok()?;
            let row = primary
                .query_one("SELECT count(*) FROM pg_replication_slots WHERE active", &[])
                .await
                .ok()?;
            (row.get::<_, i64>(0) == 2).then_some(())
        },
    )
    .await;
}

/// `kills` failovers (the primary killed, then started again to rejoin) and `switchovers`
/// switchovers in a row under write load, each followed by a settled cluster.
async fn rounds(c: &mut LocalCluster, kills: usize, switchovers: usize) -> (Vec<Outcome>, Vec<Outcome>) {
    let client = plane_with_crds().await.client().await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client, &c.namespace);
    let mut failed_over = Vec::new();
    for _ in 0..kills {
        let primary = c.labelled_primary().await.expect("a primary");
        let ordinal: i32 = primary.rsplit('-').next().unwrap().parse().unwrap();
        let outcome = under_load(c, async |c: &mut LocalCluster| c.kill(ordinal)).await;
        assert_ne!(c.labelled_primary().await.as_deref(), Some(primary.as_str()));
        c.start(ordinal).await;
        settled(c).await;
        // Each promotion records its own former primary's return, not an earlier one's.
        eventually(
            "lastPromotion.rejoinedAt of this failover",
            Duration::from_secs(30),
            || async {
                let s = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
                let last = &s["lastPromotion"];
                (last["from"] == primary.as_str() && last["rejoinedAt"].as_str()? >= last["time"].as_str()?)
                    .then_some(())
            },
        )
        .await;
        failed_over.push(outcome);
    }
    let mut switched = Vec::new();
    for _ in 0..switchovers {
        let primary = c.labelled_primary().await.expect("a primary");
        let ordinal: i32 = primary.rsplit('-').next().unwrap().parse().unwrap();
        let to = format!("db-{}", (ordinal + 1) % 3);
        let outcome = under_load(c, async |c: &mut LocalCluster| {
            c.switch_over(&to).await;
            let _ = eventually("the switchover", Duration::from_secs(120), || async {
                let s = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
                (s["switchover"]["to"] == to.as_str() && s["switchover"]["phase"] == "Completed")
                    .then_some(())
            })
            .await;
        })
        .await;
        settled(c).await;
        switched.push(outcome);
    }
    (failed_over, switched)
}

/// Min, median and max of `values`, in seconds.
fn spread(values: &[Duration]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort();
    match sorted.as_slice() {
        [] => "-".into(),
        s => format!(
            "{:.2} / {:.2} / {:.2}",
            s[0].as_secs_f64(),
            s[s.len() / 2].as_secs_f64(),
            s[s.len() - 1].as_secs_f64()
        ),
    }
}

/// Ten failovers in a row leave the cluster Ready every time, with both replicas streaming through
/// their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_failovers_in_a_row_leave_the_cluster_ready_with_its_replicas_and_slots() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances("tenfold", 18).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    settled(&c).await;
    let (failovers, _) = rounds(&mut c, 10, 0).await;
    let outages: Vec<Duration> = failovers.iter().map(|o| o.outage).collect();
    eprintln!(
        "10 failovers: longest write pause min/median/max {} s; acknowledged commits lost {} of {}",
        spread(&outages),
        failovers.iter().map(|o| o.lost).sum::<usize>(),
        failovers.iter().map(|o| o.acknowledged).sum::<usize>()
    );
}

/// `cargo xtask bench-failover`: failovers with asynchronous and with synchronous `Required`
/// replication, and switchovers, under write load; prints a table. `TUSK_BENCH_ROUNDS` rounds of
/// each (10 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run it with cargo xtask bench-failover"]
async fn bench_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let n: usize = std::env::var("TUSK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut asynchronous = three_instances("benchasync", 18).await;
    settled(&asynchronous).await;
    let (kills, switches) = rounds(&mut asynchronous, n, n).await;
    let sync =
        json!({"replication": {"synchronous": {"method": "Any", "number": 1, "dataDurability": "Required"}}});
    let mut synchronous = three_instances_with("benchsync", 18, sync).await;
    settled(&synchronous).await;
    let (sync_kills, _) = rounds(&mut synchronous, n, 0).await;
    let row = |what: &str, outcomes: &[Outcome]| {
        let outages: Vec<Duration> = outcomes.iter().map(|o| o.outage).collect();
        println!(
            "| {what} | {} | {} | {} of {} |",
            outcomes.len(),
            spread(&outages),
            outcomes.iter().map(|o| o.lost).sum::<usize>(),
            outcomes.iter().map(|o| o.acknowledged).sum::<usize>()
        );
    };
    println!(
        "\nPostgreSQL 18, 3 instances, local pods; write pause = longest gap between two acknowledged commits through -rw"
    );
    println!("| scenario | rounds | write pause min / median / max (s) | acknowledged commits lost |");
    println!("|---|---|---|---|");
    row("primary killed, asynchronous", &kills);
    row("primary killed, synchronous Any 1 Required", &sync_kills);
    row("switchover, asynchronous", &switches);
}

/// A parameter that needs a restart (`max_connections`) under write load: the operator restarts
/// the replicas one at a time, switches over to an updated replica, and restarts the old primary
/// last, as a replica. Lowering it again restarts the primary first, in place, then the
/// replicas. With `primaryUpdate: Supervised` the replicas restart and the operator waits for the
/// user's switchover before it restarts the old primary. No acknowledged commit is lost; the
/// longest write pause is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_restarts_the_primary_last_after_a_switchover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = three_instances("rolling", 18).await;
    let _log = OperatorLogOnFailure(c.namespace.clone());
    settled(&c).await;
    assert!(c.sync_pods().await.is_empty(), "nothing restarted yet");
    assert_eq!(c.labelled_primary().await.as_deref(), Some("db-0"));
    let client = plane_with_crds().await.client().await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &c.namespace);
    let (restarts, outcome) = roll_max_connections(&mut c, &clusters, "150").await;
    settled(&c).await;
    eprintln!(
        "rolling update of max_connections: restarts {restarts:?}; {} commits acknowledged, {} lost, longest write pause {:.2?}",
        outcome.acknowledged, outcome.lost, outcome.outage
    );
    assert_eq!(outcome.lost, 0, "acknowledged commits lost");
    let order: Vec<i32> = restarts.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        order,
        [2, 1, 0],
        "replicas first (highest ordinal first), the old primary last"
    );
    assert!(
        restarts[..2].iter().all(|(_, p)| p.as_deref() == Some("db-0")),
        "the replicas restarted under the old primary: {restarts:?}"
    );
    let (_, primary_then) = &restarts[2];
    assert!(
        primary_then.is_some() && primary_then.as_deref() != Some("db-0"),
        "db-0 restarted after a switchover: {restarts:?}"
    );
    assert_max_connections(&c, "150").await;
    let status = serde_json::to_value(clusters.get("db").await.unwrap().status).unwrap();
    assert_eq!(status["lastPromotion"]["reason"], "Switchover", "{status:#}");
    support::event(&client, &c.namespace, "RollingUpdate", |e| {
        e.note
            .as_deref()
            .is_some_and(|n| n.contains("restarting replica db-2 on the new revision"))
    })
    .await;

    // Lowering it turns the order around: a replica cannot run with less than its primary, so
    // the primary restarts first, in place and without a failover, then the replicas.
    let primary = c.labelled_primary().await.expect("a primary");
    let (restarts, outcome) = roll_max_connections(&mut c, &clusters, "120").await;
    settled(&c).await;
    eprintln!(
        "lowering max_connections: restarts {restarts:?}; {} commits acknowledged, {} lost, longest write pause {:.2?}",
        outcome.acknowledged, outcome.lost, outcome.outage
    );
    assert_eq!(outcome.lost, 0, "acknowledged commits lost");
    assert_eq!(
        format!("db-{}", restarts[0].0),
        primary,
        "the primary first: {restarts:?}"
    );
    let replicas: Vec<i32> = restarts[1..].iter().map(|(o, _)| *o).collect();
    assert!(
        replicas[0] > replicas[1],
        "then the replicas, highest ordinal first: {restarts:?}"
    );
    assert_eq!(
        c.labelled_primary().await,
        Some(primary),
        "restarted in place, not failed over from"
    );
    assert_max_connections(&c, "120").await;

    // Supervised: the replicas restart, then the operator waits for the user before the
    // primary, and a switchover the user asks for finishes the rollout.
    let primary = c.labelled_primary().await.expect("a primary");
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &c.namespace);
    let uids = async || -> std::collections::BTreeMap<String, String> {
        let mut uids = std::collections::BTreeMap::new();
        for o in 0..3 {
            let name = format!("db-{o}");
            let uid = pods.get(&name).await.unwrap().metadata.uid.unwrap();
            uids.insert(name, uid);
        }
        uids
    };
    let before = uids().await;
    clusters
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {
                "updateStrategy": {"primaryUpdate": "Supervised"},
                "postgres": {"parameters": {"max_connections": "130"}},
            }})),
        )
        .await
        .unwrap();
    let waiting = eventually(
        "the rollout to wait for the user",
        Duration::from_secs(180),
        async || {
            c.sync_pods().await;
            let status = serde_json::to_value(clusters.get("db").await.ok()?.status).ok()?;
            let progressing = status["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Progressing")?
                .clone();
            (progressing["reason"] == "WaitingForUser").then_some(progressing)
        },
    )
    .await;
    let message = waiting["message"].as_str().unwrap();
    assert!(message.contains("spec.switchover.to"), "{waiting}");
    // The user looks, and takes a while: the primary is not touched meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;
    c.sync_pods().await;
    let during = uids().await;
    let restarted: Vec<&String> = during.keys().filter(|p| during[*p] != before[*p]).collect();
    let replicas: Vec<&String> = during.keys().filter(|p| **p != primary).collect();
    assert_eq!(
        restarted, replicas,
        "the replicas restarted, the primary {primary} did not"
    );
    assert_eq!(
        c.labelled_primary().await,
        Some(primary.clone()),
        "no switchover by itself"
    );
    let expected: Vec<i32> = (0..3).filter(|o| format!("db-{o}") != primary).collect();
    let to = format!("db-{}", expected[0]);
    c.switch_over_and_restart(&primary, &to).await;
    assert_ne!(uids().await[&primary], during[&primary]);
    settled(&c).await;
    assert_eq!(c.labelled_primary().await, Some(to), "the user's choice leads");
    assert_max_connections(&c, "130").await;
}

/// Sets `max_connections` to `value` under write load and follows the rolling update it makes
/// until three pods restarted: each (ordinal, the pod labelled primary just before), and what
/// the writer saw.
async fn roll_max_connections(
    c: &mut LocalCluster,
    clusters: &Api<PostgresCluster>,
    value: &str,
) -> (Vec<(i32, Option<String>)>, Outcome) {
    let mut restarts: Vec<(i32, Option<String>)> = Vec::new();
    let outcome = under_load(c, async |c: &mut LocalCluster| {
        clusters
            .patch(
                "db",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"spec": {"postgres": {"parameters": {"max_connections": value}}}}),
                ),
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while restarts.len() < 3 {
            if Instant::now() >= deadline {
                let status = clusters.get("db").await.ok().map(|c| c.status);
                let logs: Vec<String> = c.pods.values().map(|p| p.main.log_tail(40)).collect();
                panic!(
                    "the rolling update did not finish: {restarts:?}\n{status:#?}\n{}",
                    logs.join("\n")
                );
            }
            let primary = c.labelled_primary().await;
            for ordinal in c.sync_pods().await {
                eprintln!("db-{ordinal} restarted; db labelled primary just before: {primary:?}");
                restarts.push((ordinal, primary.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    (restarts, outcome)
}

async fn assert_max_connections(c: &LocalCluster, value: &str) {
    for ordinal in 0..3 {
        let db = c.connect(ordinal).await.unwrap();
        let shown: String = db.query_one("SHOW max_connections", &[]).await.unwrap().get(0);
        assert_eq!(shown, value, "db-{ordinal}");
    }
}
