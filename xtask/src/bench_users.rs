//! `cargo xtask bench-users`: reconciles many `PostgresUser` objects against one real PostgreSQL
//! server and prints a table: the time until all are Ready, and the SQL statements the operator
//! sent per object, while converging and in steady state. The operator is the release binary
//! with only its generated RBAC; it counts every statement it sends in
//! `tusk_sql_statements_total{kind="read"|"write"}`, and every reconcile in
//! `tusk_reconciles_total{kind="PostgresUser"}`. The server is PostgreSQL 15 from Debian on
//! loopback; `pg_stat_database` gives its own count of transactions as a cross-check.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use tusk::{
    api::postgres_user::v1::PostgresUser,
    facts::cluster::{Names, tls},
};
use tusk_testenv::postgres::{LocalServer, Postgres};

const NAMESPACE: &str = "bench";
const CLUSTER: &str = "bench";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The operator's counters that matter here.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    reads: f64,
    writes: f64,
    reconciles: f64,
}

async fn counters(metrics: &crate::bench::MetricsReader) -> Result<Counters, String> {
    let body = metrics.read().await?;
    let value = |prefix: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Counters {
        reads: value("tusk_sql_statements_total{kind=\"read\"} "),
        writes: value("tusk_sql_statements_total{kind=\"write\"} "),
        reconciles: value("tusk_reconciles_total{kind=\"PostgresUser\"} "),
    })
}

/// The operator issues the cluster's certificate (`<cluster>-tls`) and connects only with TLS
/// that verifies it, as it would to the cluster's pods: the local server is given that
/// certificate and its key, and turns TLS on with a reload.
async fn serve_cluster_certificate(client: &kube::Client, server: &LocalServer) -> Result<(), String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let name = Names(CLUSTER).tls_secret();
    let started = Instant::now();
    let data = loop {
        if let Some(data) = secrets.get_opt(&name).await.map_err(err)?.and_then(|s| s.data) {
            break data;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("the operator made no Secret {name} in 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dir = server.data_dir();
    for (key, file) in [
        (tls::SERVER_CERT, "bench-server.crt"),
        (tls::SERVER_KEY, "bench-server.key"),
    ] {
        let value = data
            .get(key)
            .ok_or_else(|| format!("Secret {name} has no data.{key}"))?;
        let path = dir.join(file);
        std::fs::write(&path, &value.0).map_err(err)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(err)?;
        tusk_testenv::postgres::chown_for_postgres(&path).map_err(err)?;
    }
    server
        .psql(
            "ALTER SYSTEM SET ssl_cert_file = 'bench-server.crt';\n\
             ALTER SYSTEM SET ssl_key_file = 'bench-server.key';\n\
             ALTER SYSTEM SET ssl = on;\n\
             SELECT pg_reload_conf();",
        )
        .map_err(err)?;
    // The reload is a signal: new sessions see it shortly after.
    for _ in 0..50 {
        if server.psql("SHOW ssl").map_err(err)? == "on" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the local server did not turn TLS on:\n{}",
        server.log_tail(20)
    ))
}

fn transactions(server: &LocalServer) -> Result<f64, String> {
    let out = server
        .psql("SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database")
        .map_err(err)?;
    out.trim().parse().map_err(err)
}

pub async fn run(root: &std::path::Path, users: usize, resync: u64, periods: u64) -> Result<(), String> {
    let postgres = Postgres::get(15).map_err(err)?;
    let server = LocalServer::start(&postgres).await.map_err(err)?;
    server.psql("CREATE ROLE bench_readers NOLOGIN").map_err(err)?;
    let sql_endpoint = format!("{NAMESPACE}/{CLUSTER} 127.0.0.1:{}\n", server.port());
    let crate::bench::Operator {
        plane,
        process: operator,
        metrics,
        ..
    } = crate::bench::start_operator(root, resync, |dir| {
        let endpoints = dir.join("sql-endpoints");
        std::fs::write(&endpoints, sql_endpoint).map_err(err)?;
        Ok(vec![format!("--sql-endpoints={}", endpoints.display())])
    })
    .await?;
    let client = plane.client().await.map_err(err)?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).map_err(err)?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(err)?;
    // The cluster's superuser Secret holds the local server's password; the operator adopts it.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{CLUSTER}-superuser")},
        "stringData": {"username": "postgres", "password": server.password()},
    }))
    .map_err(err)?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(err)?;
    let cluster: tusk::api::postgres_cluster::v1::PostgresCluster = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
        "metadata": {"name": CLUSTER},
        "spec": {"postgres": {"version": 15}, "instances": 1, "storage": {"data": {"size": "1Gi"}}},
    }))
    .map_err(err)?;
    Api::<tusk::api::postgres_cluster::v1::PostgresCluster>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &cluster)
        .await
        .map_err(err)?;

    serve_cluster_certificate(&client, &server).await?;

    println!(
        "Creating {users} PostgresUser objects against {} on loopback, over TLS...",
        postgres.version()
    );
    let api = Api::<PostgresUser>::namespaced(client.clone(), NAMESPACE);
    let before = counters(&metrics).await?;
    let audit_before = plane.audit_events().len();
    let started = Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..users {
        if creates.len() >= 32 {
            creates
                .join_next()
                .await
                .expect("a create in flight")
                .map_err(err)??;
        }
        let api = api.clone();
        creates.spawn(async move {
            let user: PostgresUser = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresUser",
                "metadata": {"name": format!("user-{i:04}")},
                "spec": {
                    "cluster": {"name": CLUSTER},
                    "connectionLimit": 10,
                    "memberOf": ["bench_readers"],
                    "privileges": [{"database": "postgres", "privileges": ["CONNECT"]}],
                },
            }))
            .map_err(err)?;
            api.create(&PostParams::default(), &user)
                .await
                .map(|_| ())
                .map_err(err)
        });
    }
    while let Some(done) = creates.join_next().await {
        done.map_err(err)??;
    }
    let ready_after = loop {
        let list = api.list(&ListParams::default()).await.map_err(err)?;
        let ready = crate::bench::count_ready(&list.items, |u| u.status.as_ref()?.conditions.as_ref());
        if ready == users {
            break started.elapsed();
        }
        if !operator.alive() {
            return Err(format!("the operator exited:\n{}", operator.log_tail(30)));
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(format!("only {ready} of {users} Ready after 30 min"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let converged = counters(&metrics).await?;
    let audit_converged = plane.audit_events().len();
    let roles = server
        .psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'user-%'")
        .map_err(err)?;

    // Steady state: let the last converging reconciles finish, then watch whole resync periods.
    tokio::time::sleep(Duration::from_secs(resync)).await;
    let mark = counters(&metrics).await?;
    let mark_xacts = transactions(&server)?;
    let audit_mark = plane.audit_events().len();
    tokio::time::sleep(Duration::from_secs(resync * periods)).await;
    let end = counters(&metrics).await?;
    let end_xacts = transactions(&server)?;
    let audit = plane.audit_events();
    let operator_user = format!(
        "system:serviceaccount:{}:{}",
        tusk::facts::operator::NAMESPACE,
        tusk::facts::operator::NAME
    );
    let converging_requests =
        crate::bench::requests_by_resource(&audit[audit_before..audit_converged], &operator_user);
    let steady_requests = crate::bench::requests_by_resource(&audit[audit_mark..], &operator_user);

    let n = users as f64;
    let steady_reconciles = end.reconciles - mark.reconciles;
    let per = |v: f64, d: f64| if d > 0.0 { v / d } else { f64::NAN };
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| PostgresUser objects | {users} (roles in PostgreSQL: {}) |",
        roles.trim()
    );
    println!("| all Ready after | {:.1} s |", ready_after.as_secs_f64());
    println!(
        "| converging: SQL reads / writes per object | {:.2} / {:.2} |",
        (converged.reads - before.reads) / n,
        (converged.writes - before.writes) / n
    );
    println!("| steady state: watched | {periods} resync periods of {resync} s |");
    println!(
        "| steady state: reconciles per object per resync | {:.2} |",
        steady_reconciles / n / periods as f64
    );
    println!(
        "| steady state: SQL reads per reconcile | {:.2} (target 1, read-only) |",
        per(end.reads - mark.reads, steady_reconciles)
    );
    println!(
        "| steady state: SQL writes | {} (target 0) |",
        end.writes - mark.writes
    );
    println!(
        "| steady state: server transactions per reconcile (pg_stat_database) | {:.2} |",
        per(end_xacts - mark_xacts, steady_reconciles)
    );
    let listed = |requests: &std::collections::BTreeMap<String, usize>, objects: f64, digits: usize| {
        let all: Vec<String> = requests
            .iter()
            .map(|(request, count)| format!("{request} {:.digits$}", *count as f64 / objects))
            .collect();
        if all.is_empty() {
            "none".to_owned()
        } else {
            all.join(", ")
        }
    };
    println!(
        "| converging: apiserver requests per object | {} |",
        listed(&converging_requests, n, 2)
    );
    println!(
        "| steady state: apiserver requests, all objects, {periods} periods (target 0 per object) | {} |",
        listed(&steady_requests, 1.0, 0)
    );
    drop(operator);
    plane.stop();
    Ok(())
}
