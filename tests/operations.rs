//! Running the operator: two replicas elect a leader on a Lease and the other takes over within
//! 15 s when the leader is killed; `/healthz`, `/readyz` and `/metrics` answer; logs are JSON on
//! request and never carry a secret; SIGKILL in the middle of reconciles leaves no duplicate, keeps
//! the password and converges; a leader frozen with SIGSTOP stops leading before the other replica
//! takes over and never writes again (proven from the audit log). This binary has its own control
//! plane: it kills operators.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::{
    ByteString,
    api::{apps::v1::StatefulSet, coordination::v1::Lease, core::v1::Secret},
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::apiserver::{OPERATOR_NAMESPACE, Operator, plane_with_crds, start_operator};
use tusk::api::{common::ConditionStatus, postgres_cluster::v1::PostgresCluster};
use tusk_testenv::{ControlPlane, eventually};

/// The tests of this binary run one at a time: an operator manages every namespace, so one test's
/// operators would reconcile the other's clusters.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A known password a user provides in the superuser Secret; it must never reach a log.
const KNOWN_PASSWORD: &str = "Sup3rSecretKnownPasswordForLogTest";

/// Starts a replica named `identity` competing for Lease `lease`, logging JSON at debug level.
async fn start(plane: &ControlPlane, identity: &str, lease: &str) -> Operator {
    let args = [
        format!("--identity={identity}"),
        format!("--leader-election-id={lease}"),
        "--resync-interval=5s".to_owned(),
        "--log-format=json".to_owned(),
    ];
    // Everything Tusk logs, at every level.
    start_operator(plane, identity, &args, "debug").await
}

fn cluster(name: &str, instances: i32) -> PostgresCluster {
    serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": name},
        "spec": {"postgres": {"version": 16}, "instances": instances, "storage": {"data": {"size": "1Gi"}}},
    }))
    .unwrap()
}

async fn ready(api: &Api<PostgresCluster>, name: &str, instances: i32) -> bool {
    let Ok(c) = api.get(name).await else { return false };
    let Some(status) = c.status.clone() else {
        return false;
    };
    status.ready_instances == Some(instances)
        && status.observed_generation == c.metadata.generation
        && status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

async fn holder(plane: &ControlPlane) -> Option<String> {
    lease_holder(plane, "ha").await
}

/// What the operator at `port` answers on `/readyz`, once it answers.
async fn readyz(port: u16) -> (u16, String) {
    eventually("/readyz to answer", Duration::from_secs(30), || async {
        support::http_get("127.0.0.1", port, "/readyz").await
    })
    .await
}

/// A replica takes conversion traffic only while its webhook serves the certificate on disk; on
/// SIGTERM it turns unready at once but keeps answering for `--shutdown-delay`, so that the
/// Service moves conversions to another replica before this one stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_ready_only_with_the_current_certificate_and_drains_on_sigterm() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let args = [
        "--leader-election-id=readiness".to_owned(),
        "--cert-reload-interval=15s".to_owned(),
        "--shutdown-delay=4s".to_owned(),
    ];
    let op = start_operator(plane, "readiness", &args, "info").await;
    eventually("ready", Duration::from_secs(30), || async {
        (readyz(op.status_port).await.0 == 200).then_some(())
    })
    .await;
    // A new certificate lands, as when OLM rotates it: unready until it is served.
    let cert = tusk_testenv::pki::Ca::new("rotated CA").loopback_serving_cert(tusk::facts::operator::NAME);
    std::fs::write(op.cert_dir.join("tls.crt"), cert.cert_pem).unwrap();
    std::fs::write(op.cert_dir.join("tls.key"), cert.key_pem).unwrap();
    let (code, body) = readyz(op.status_port).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("does not serve the current certificate"), "{body}");
    eventually(
        "ready with the new certificate",
        Duration::from_secs(40),
        || async { (readyz(op.status_port).await.0 == 200).then_some(()) },
    )
    .await;
    // SIGTERM: unready at once, the webhook still listening, then gone.
    let pid = op.process.pid().expect("the operator runs");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let since = Instant::now();
    let unready = eventually("unready after SIGTERM", Duration::from_secs(3), || async {
        let (code, body) = support::http_get("127.0.0.1", op.status_port, "/readyz").await?;
        (code == 503).then_some(body)
    })
    .await;
    assert!(unready.contains("shutting down"), "{unready}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", op.webhook_port))
            .await
            .is_ok(),
        "the webhook stopped listening {:?} after SIGTERM, before its shutdown delay",
        since.elapsed()
    );
    eventually(
        "the webhook to stop after the delay",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", op.webhook_port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        since.elapsed() >= Duration::from_secs(3),
        "the webhook stopped {:?} after SIGTERM, before its 4 s delay",
        since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_a_leader_serve_health_and_metrics_and_fail_over() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("ha").await.unwrap();
    // The user brings the superuser Secret, with a password Tusk must keep and never log.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db-superuser"},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": ByteString(b"postgres".to_vec()), "password": ByteString(KNOWN_PASSWORD.as_bytes().to_vec())},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let a = start(plane, "replica-a", "ha").await;
    let leader = eventually("a leader", Duration::from_secs(30), || holder(plane)).await;
    assert_eq!(leader, "replica-a");
    let b = start(plane, "replica-b", "ha").await;
    for op in [&a, &b] {
        eventually("/healthz and /readyz", Duration::from_secs(30), || async {
            let (h, _) = support::http_get("127.0.0.1", op.status_port, "/healthz").await?;
            let (r, _) = support::http_get("127.0.0.1", op.status_port, "/readyz").await?;
            (h == 200 && r == 200).then_some(())
        })
        .await;
    }
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    clusters
        .create(&PostParams::default(), &cluster("db", 1))
        .await
        .unwrap();
    eventually("db Ready", Duration::from_secs(120), || async {
        ready(&clusters, "db", 1).await.then_some(())
    })
    .await;
    let kept = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db-superuser")
        .await
        .unwrap();
    assert_eq!(
        kept.data.unwrap()["password"].0,
        KNOWN_PASSWORD.as_bytes(),
        "the user's password is kept"
    );

    // Only the leader reconciles; its metrics say so.
    let metrics = a.metrics().await.unwrap();
    for line in [
        "tusk_reconciles_total{kind=\"PostgresCluster\"}",
        "tusk_reconcile_duration_seconds_bucket{",
        "tusk_managed_objects{kind=\"PostgresCluster\"} ",
    ] {
        assert!(metrics.contains(line), "leader /metrics lacks {line}:\n{metrics}");
    }
    let standby = b.metrics().await.unwrap();
    assert!(
        !standby.contains("tusk_reconciles_total{"),
        "the standby reconciled:\n{standby}"
    );

    // Kill the leader outright; the standby takes over within 15 s and reconciles.
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &a.process.pid().unwrap().to_string()])
        .status()
        .unwrap();
    eventually("replica-b to lead", Duration::from_secs(15), || async {
        (holder(plane).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    clusters
        .create(&PostParams::default(), &cluster("after", 1))
        .await
        .unwrap();
    eventually(
        "the new leader to reconcile",
        Duration::from_secs(120),
        || async { ready(&clusters, "after", 1).await.then_some(()) },
    )
    .await;
    eprintln!(
        "replica-b led {:.1} s after replica-a was killed",
        killed.elapsed().as_secs_f64()
    );

    // Logs: JSON lines, and no secret anywhere.
    for op in [&a, &b] {
        let text = std::fs::read_to_string(&op.log).unwrap();
        assert!(
            !text.contains(KNOWN_PASSWORD),
            "{} logged the password",
            op.log.display()
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{} is empty", op.log.display());
        for line in lines {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_reconciles_leaves_no_duplicates_keeps_the_password_and_converges() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("restarts").await.unwrap();
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    for name in ["r1", "r2", "r3"] {
        clusters
            .create(&PostParams::default(), &cluster(name, 1))
            .await
            .unwrap();
    }
    let mut passwords = None;
    for round in 0..10 {
        // A lease of its own each round: the killed one's lease would otherwise hold for 10 s.
        let op = start(plane, &format!("restart-{round}"), &format!("restarts-{round}")).await;
        // Change something on every round so the operator is mid-reconcile when it dies.
        for name in ["r1", "r2", "r3"] {
            clusters
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"postgres": {"parameters": {"work_mem": format!("{}MB", round + 1)}}}})),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        let pid = op.process.pid().unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        eventually(
            "the killed operator to be gone",
            Duration::from_secs(10),
            || async {
                (!std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z")))
                .then_some(())
            },
        )
        .await;
        drop(op);
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let now: Vec<Option<Vec<u8>>> = superuser_passwords(&secrets).await;
        match &passwords {
            None if now.iter().all(Option::is_some) => passwords = Some(now),
            None => {}
            Some(before) => assert_eq!(before, &now, "round {round}: a password changed"),
        }
    }
    // A final operator, left running: everything converges.
    let _op = start(plane, "restart-final", "restarts-final").await;
    for name in ["r1", "r2", "r3"] {
        eventually(&format!("{name} Ready"), Duration::from_secs(180), || async {
            let c = clusters.get(name).await.ok()?;
            let conf = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
                .get(&format!("{name}-config"))
                .await
                .ok()?;
            let current = conf.data?["postgresql.conf"].contains("work_mem = '10MB'");
            (current && ready(&clusters, name, 1).await && c.status.is_some()).then_some(())
        })
        .await;
    }
    // Exactly one of each child per cluster.
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(statefulsets.items.len(), 3);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=tusk-operator"))
        .await
        .unwrap();
    // The superuser Secret, the CA and the TLS Secret of each.
    let mut names: Vec<String> = secrets
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    let expected: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .flat_map(|c| [format!("{c}-ca"), format!("{c}-superuser"), format!("{c}-tls")])
        .collect();
    assert_eq!(names, expected);
    if let Some(before) = passwords {
        let now = superuser_passwords(&Api::<Secret>::namespaced(client.clone(), &ns)).await;
        assert_eq!(before, now, "a password changed");
    }
}

/// The three clusters' superuser passwords (None where the Secret does not exist yet).
async fn superuser_passwords(secrets: &Api<Secret>) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let secret = secrets.get_opt(&format!("{name}-superuser")).await.unwrap();
        out.push(secret.and_then(|s| s.data).map(|d| d["password"].0.clone()));
    }
    out
}

/// The holder of Lease `lease` in the operator's namespace.
async fn lease_holder(plane: &ControlPlane, lease: &str) -> Option<String> {
    let client = plane.client().await.ok()?;
    Api::<Lease>::namespaced(client, OPERATOR_NAMESPACE)
        .get_opt(lease)
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// When each replica wrote in `namespace`, from the apiserver's audit log: every create, update,
/// patch or delete, told apart by the `User-Agent` the operator's client sends.
fn writes_by(plane: &ControlPlane, namespace: &str, identity: &str) -> Vec<k8s_openapi::jiff::Timestamp> {
    let agent = format!("({identity})");
    plane
        .audit_events()
        .iter()
        .filter(|e| {
            e["userAgent"].as_str().is_some_and(|a| a.ends_with(&agent))
                && e["objectRef"]["namespace"] == namespace
                && ["create", "update", "patch", "delete", "deletecollection"]
                    .contains(&e["verb"].as_str().unwrap_or_default())
        })
        .filter_map(|e| e["requestReceivedTimestamp"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_stops_before_another_takes_over_and_never_writes_after() {
    let _serial = SERIAL.lock().await;
    let plane = plane_with_crds().await;
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("frozen").await.unwrap();
    let a = start(plane, "frozen-a", "frozen").await;
    eventually("frozen-a to lead", Duration::from_secs(30), || async {
        (lease_holder(plane, "frozen").await.as_deref() == Some("frozen-a")).then_some(())
    })
    .await;
    let b = start(plane, "frozen-b", "frozen").await;
    let clusters = Api::<PostgresCluster>::namespaced(client.clone(), &ns);
    for name in ["c0", "c1", "c2"] {
        clusters
            .create(&PostParams::default(), &cluster(name, 1))
            .await
            .unwrap();
    }
    // Keep the leader writing: every change of a cluster's parameters is a new ConfigMap, a new
    // pod template and a new status.
    let writer = {
        let clusters = clusters.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                for name in ["c0", "c1", "c2"] {
                    let patch =
                        json!({"spec": {"postgres": {"parameters": {"work_mem": format!("{}kB", 64 + n)}}}});
                    let _ = clusters
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    eventually("frozen-a to write", Duration::from_secs(30), || async {
        (!writes_by(plane, &ns, "frozen-a").is_empty()).then_some(())
    })
    .await;

    // Freeze the leader past its renew deadline and the lease; the other replica takes over.
    let pid = a.process.pid().unwrap().to_string();
    let signal = |name: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    eventually("frozen-b to lead", Duration::from_secs(30), || async {
        (lease_holder(plane, "frozen").await.as_deref() == Some("frozen-b")).then_some(())
    })
    .await;
    eventually("frozen-b to write", Duration::from_secs(30), || async {
        (!writes_by(plane, &ns, "frozen-b").is_empty()).then_some(())
    })
    .await;
    let resumed = k8s_openapi::jiff::Timestamp::now();
    signal("-CONT");
    // It wakes up with its leadership over: it exits, non-zero, without leading again.
    eventually("frozen-a to exit", Duration::from_secs(30), || async {
        (!a.process.alive()).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("lost the leader-election lease"),
        "{}",
        a.process.log_tail(20)
    );
    // frozen-b keeps leading and writing after frozen-a woke up.
    eventually(
        "frozen-b to write after frozen-a woke up",
        Duration::from_secs(30),
        || async {
            writes_by(plane, &ns, "frozen-b")
                .iter()
                .any(|t| *t > resumed)
                .then_some(())
        },
    )
    .await;
    writer.abort();

    // The audit log: every write of frozen-a came before the first write of frozen-b.
    let (by_a, by_b) = (
        writes_by(plane, &ns, "frozen-a"),
        writes_by(plane, &ns, "frozen-b"),
    );
    let last_a = by_a.iter().max().unwrap();
    let first_b = by_b.iter().min().unwrap();
    assert!(
        last_a < first_b,
        "the two leaders overlapped: frozen-a wrote until {last_a}, frozen-b from {first_b}"
    );
    eprintln!(
        "frozen-a wrote {} times until {last_a}; frozen-b {} times from {first_b}",
        by_a.len(),
        by_b.len()
    );
    drop(b);
}
