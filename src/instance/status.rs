//! The instance manager's endpoints, on the pod's status port:
//!
//! - `/healthz` (liveness): the instance manager runs, bootstrapping or supervising PostgreSQL.
//! - `/readyz` (readiness): PostgreSQL accepts connections and, on a replica, streams from the
//!   primary with less than `--max-lag-bytes` of received WAL not yet replayed.
//! - `/metrics`: role, replication lag, connections by state, database sizes and transactions,
//!   read from PostgreSQL at each scrape.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use hyper::StatusCode;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{net::TcpListener, task::JoinHandle};

use super::{Error, LocalConnection, io};
use crate::admin::{OPENMETRICS, answer, serve_http};

/// What the endpoints need.
pub struct State {
    local: LocalConnection,
    max_lag_bytes: u64,
    running: AtomicBool,
}

impl State {
    /// The state of an instance that has not started PostgreSQL yet.
    pub fn new(local: LocalConnection, max_lag_bytes: u64) -> Self {
        Self {
            local,
            max_lag_bytes,
            running: AtomicBool::new(false),
        }
    }

    /// Records whether `postgres` runs.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }
}

/// What PostgreSQL says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// False on a replica.
    pub primary: bool,
    /// Received WAL not yet replayed, on a replica.
    pub lag_bytes: Option<f64>,
    /// The WAL receiver's status on a replica (`streaming` when it streams).
    pub receiver: Option<String>,
    /// Client connections by state.
    pub connections: Vec<(String, i64)>,
    /// Per database: name, size in bytes, commits, rollbacks.
    pub databases: Vec<(String, f64, f64, f64)>,
}

/// Why the instance is not ready, if it is not.
pub fn unready_reason(snapshot: &Snapshot, max_lag_bytes: u64) -> Option<String> {
    if snapshot.primary {
        return None;
    }
    match (&snapshot.receiver, snapshot.lag_bytes) {
        (Some(status), Some(lag)) if status == "streaming" => {
            #[allow(clippy::cast_precision_loss)]
            let max = max_lag_bytes as f64;
            (lag > max).then(|| format!("replaying: {lag} bytes behind, the most allowed is {max_lag_bytes}"))
        }
        (status, _) => Some(format!(
            "not streaming from the primary (WAL receiver: {})",
            status.as_deref().unwrap_or("none")
        )),
    }
}

async fn snapshot(local: &LocalConnection) -> Result<Snapshot, tokio_postgres::Error> {
    let client = local.connect().await?;
    let row = client
        .query_one(
            "SELECT NOT pg_is_in_recovery(), \
                    CASE WHEN pg_is_in_recovery() \
                         THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 END, \
                    (SELECT status FROM pg_stat_wal_receiver LIMIT 1)",
            &[],
        )
        .await?;
    let connections = client
        .query(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let databases = client
        .query(
            "SELECT d.datname::text, pg_database_size(d.oid)::float8, \
                    coalesce(s.xact_commit, 0)::float8, coalesce(s.xact_rollback, 0)::float8 \
             FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid \
             WHERE d.datallowconn ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(Snapshot {
        primary: row.get(0),
        lag_bytes: row.get(1),
        receiver: row.get(2),
        connections,
        databases,
    })
}

/// The Prometheus text of `snapshot` (`None`: PostgreSQL did not answer).
pub fn render(snapshot: Option<&Snapshot>) -> String {
    type Labels = Vec<(String, String)>;
    let label = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let mut registry = Registry::with_prefix("tusk_instance");
    let up = Gauge::<i64>::default();
    up.set(i64::from(snapshot.is_some()));
    registry.register("up", "Whether PostgreSQL answers the instance manager", up);
    if let Some(s) = snapshot {
        let role = Family::<Labels, Gauge>::default();
        role.get_or_create(&label("role", if s.primary { "primary" } else { "replica" }))
            .set(1);
        registry.register("role", "The instance's role: primary or replica", role);
        if !s.primary {
            let lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            lag.set(s.lag_bytes.unwrap_or(f64::NAN));
            registry.register(
                "replication_lag_bytes",
                "WAL received from the primary and not yet replayed",
                lag,
            );
            let streaming = Gauge::<i64>::default();
            streaming.set(i64::from(s.receiver.as_deref() == Some("streaming")));
            registry.register(
                "streaming",
                "Whether the replica streams from the primary",
                streaming,
            );
        }
        let connections = Family::<Labels, Gauge>::default();
        for (state, count) in &s.connections {
            connections.get_or_create(&label("state", state)).set(*count);
        }
        registry.register("connections", "Client connections by state", connections);
        let sizes = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let transactions = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        for (database, size, commits, rollbacks) in &s.databases {
            sizes.get_or_create(&label("database", database)).set(*size);
            for (outcome, value) in [("commit", commits), ("rollback", rollbacks)] {
                let mut labels = label("database", database);
                labels.push(("outcome".to_owned(), outcome.to_owned()));
                transactions.get_or_create(&labels).inc_by(*value);
            }
        }
        registry.register("database_size_bytes", "Size of each database", sizes);
        registry.register(
            "transactions",
            "Transactions committed and rolled back, per database, since statistics were reset",
            transactions,
        );
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

async fn handle(
    state: Arc<State>,
    path: String,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let text = |status, body: String| answer(status, body, "text/plain");
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if !state.running.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "postgres is not running yet\n".into(),
        ),
        "/readyz" => match snapshot(&state.local).await {
            Ok(s) => match unready_reason(&s, state.max_lag_bytes) {
                None => text(
                    StatusCode::OK,
                    format!("ok: {}\n", if s.primary { "primary" } else { "replica" }),
                ),
                Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("postgres does not answer: {e}\n"),
            ),
        },
        "/metrics" => {
            let s = if state.running.load(Ordering::Relaxed) {
                snapshot(&state.local).await.ok()
            } else {
                None
            };
            answer(StatusCode::OK, render(s.as_ref()), OPENMETRICS)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Binds the status port on each of `ips` (every address when there are none) and serves until
/// `stopped` turns true.
pub async fn serve(
    ips: &[IpAddr],
    port: u16,
    state: Arc<State>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let ips = if ips.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    } else {
        ips.to_vec()
    };
    let mut servers = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding the status port {addr}")))?;
        let state = state.clone();
        let handler = move |path: String| handle(state.clone(), path);
        servers.push(tokio::spawn(serve_http(
            listener,
            handler,
            crate::process::until_stopped(stopped.clone()),
        )));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(receiver: Option<&str>, lag: Option<f64>) -> Snapshot {
        Snapshot {
            primary: false,
            lag_bytes: lag,
            receiver: receiver.map(str::to_owned),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_replica_is_ready_only_while_streaming_within_the_lag() {
        assert_eq!(
            unready_reason(
                &Snapshot {
                    primary: true,
                    ..Snapshot::default()
                },
                0
            ),
            None
        );
        assert_eq!(
            unready_reason(&replica(Some("streaming"), Some(100.0)), 100),
            None
        );
        let behind = unready_reason(&replica(Some("streaming"), Some(101.0)), 100).unwrap();
        assert!(behind.contains("101 bytes behind"), "{behind}");
        let idle = unready_reason(&replica(None, None), 100).unwrap();
        assert!(idle.contains("WAL receiver: none"), "{idle}");
        assert!(unready_reason(&replica(Some("waiting"), Some(0.0)), 100).is_some());
    }

    #[test]
    fn metrics_name_the_role_lag_connections_sizes_and_transactions() {
        assert!(render(None).contains("tusk_instance_up 0"));
        let text = render(Some(&Snapshot {
            primary: false,
            lag_bytes: Some(42.0),
            receiver: Some("streaming".into()),
            connections: vec![("active".into(), 3)],
            databases: vec![("app".into(), 8192.0, 10.0, 2.0)],
        }));
        for line in [
            "tusk_instance_up 1",
            "tusk_instance_role{role=\"replica\"} 1",
            "tusk_instance_replication_lag_bytes 42.0",
            "tusk_instance_streaming 1",
            "tusk_instance_connections{state=\"active\"} 3",
            "tusk_instance_database_size_bytes{database=\"app\"} 8192.0",
            "tusk_instance_transactions_total{database=\"app\",outcome=\"commit\"} 10.0",
            "tusk_instance_transactions_total{database=\"app\",outcome=\"rollback\"} 2.0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
