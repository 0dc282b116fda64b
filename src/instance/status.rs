//! The instance manager's endpoints, on the pod's status port:
//!
//! - `/healthz` (liveness): the instance manager runs, bootstrapping or supervising PostgreSQL.
//! - `/readyz` (readiness): PostgreSQL accepts connections and, on a replica, streams from the
//!   primary with less than `--max-lag-bytes` of received WAL not yet replayed.
//! - `/instance`: the [`InstanceState`] the operator polls: role, timeline, WAL positions.
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
use crate::{
    admin::{Call, Listener, answer, serve_calls},
    facts::instance::{DEMOTE, Demoted, INSTANCE, InstanceState, REPLICATION, ReplicationRequest, slot_name},
};

/// The file in the data directory `postgresql.conf` includes, with what the operator sets of
/// replication while PostgreSQL runs (a reload applies it).
pub const REPLICATION_CONF: &str = "tusk.replication.conf";

/// The file beside the data directory (on the data volume, so a rewind or a clone keeps it) that
/// says when this instance last fenced itself.
pub const FENCED: &str = "tusk.fenced";

/// The file beside the data directory that says when this instance was last rewound onto the
/// primary's timeline (or cloned afresh when a rewind failed).
pub const REWOUND: &str = "tusk.rewound";

/// Notes beside the data directory, in `file` ([`FENCED`] or [`REWOUND`]), that it happens now,
/// for the reports ([`noted`]).
pub fn note(pgdata: &std::path::Path, file: &str) -> std::io::Result<()> {
    let Some(volume) = pgdata.parent() else {
        return Ok(());
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    std::fs::write(volume.join(file), format!("{now:.0}\n"))
}

/// When what `file` notes last happened, if it ever did.
pub fn noted(pgdata: &std::path::Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(pgdata.parent()?.join(file)).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The contents of [`REPLICATION_CONF`] for `request`: nothing of `synchronous_standby_names`
/// when the operator does not manage it, so the user's parameter stays in force.
pub fn replication_conf(request: &ReplicationRequest) -> String {
    let mut conf = "# Written by the tusk-operator instance manager for the operator.\n".to_owned();
    if let Some(names) = &request.synchronous_standby_names {
        conf.push_str(&format!(
            "synchronous_standby_names = {}\n",
            super::conf::conf_value(names)
        ));
    }
    conf
}

/// Applies `request`: keeps it, writes [`REPLICATION_CONF`] and reloads when it changed, and on a
/// running primary makes the replicas' slots match.
async fn replicate(state: &State, request: ReplicationRequest) -> Result<(), String> {
    *state.replication.lock().expect("never poisoned") = Some(request.clone());
    let path = state.pgdata.join(REPLICATION_CONF);
    let wanted = replication_conf(&request);
    let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(wanted.as_str());
    if changed && state.pgdata.join("PG_VERSION").exists() {
        std::fs::write(&path, &wanted).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if !state.running.load(Ordering::Relaxed) {
        return Ok(());
    }
    let client = state.local.connect().await.map_err(|e| e.to_string())?;
    if changed {
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| e.to_string())?;
    }
    ensure_slots(&client, &request.replicas).await
}

/// On a primary: the role replicas stream as, logging in only by client certificate (it has no
/// password), made when it is missing (a cluster made before Tusk used it has none).
async fn ensure_replication_role(client: &tokio_postgres::Client) -> Result<(), String> {
    let user = crate::facts::cluster::REPLICATION_USER;
    let exists = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&user],
        )
        .await
        .map_err(|e| e.to_string())?
        .get::<_, bool>(0);
    if !exists {
        // The commit must not wait for a synchronous standby: none can connect until this role
        // exists, so with synchronous replication `Required` it would wait forever.
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit TO local; CREATE ROLE {user} WITH LOGIN REPLICATION; COMMIT"
            ))
            .await
            .map_err(|e| format!("creating role {user}: {e}"))?;
        tracing::info!(role = user, "created the replication role");
    }
    Ok(())
}

/// On a primary: a physical slot for each of `replicas`, and none of Tusk's for another pod
/// unless a replica still streams through it. On a replica: none of Tusk's that is not in use.
pub async fn ensure_slots(client: &tokio_postgres::Client, replicas: &[String]) -> Result<(), String> {
    let recovering: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    // A replica serves no replica of Tusk's: slots it kept from when it was the primary would
    // only hold its WAL back.
    let wanted: Vec<String> = if recovering {
        Vec::new()
    } else {
        replicas.iter().map(|p| slot_name(p)).collect()
    };
    let existing: Vec<(String, bool)> = client
        .query(
            "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name LIKE 'tusk\\_%'",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if !recovering {
        ensure_replication_role(client).await?;
    }
    for slot in &wanted {
        if !existing.iter().any(|(name, _)| name == slot) {
            // Reserved now, so the WAL from here on is kept for the replica.
            client
                .execute("SELECT pg_create_physical_replication_slot($1, true)", &[slot])
                .await
                .map_err(|e| format!("creating slot {slot}: {e}"))?;
            tracing::info!(%slot, "created a replica's replication slot");
        }
    }
    for (name, active) in &existing {
        if !active && !wanted.contains(name) {
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[name])
                .await
                .map_err(|e| format!("dropping slot {name}: {e}"))?;
            tracing::info!(slot = %name, "dropped the slot of a removed replica");
        }
    }
    Ok(())
}

/// How long a step-down may take before [`DEMOTE`] answers that it did not finish.
const DEMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Steps the primary down ([`DEMOTE`]). Asking again once it stopped answers the same.
async fn demote(state: &State) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let text = |status, body: String| answer(status, body, "text/plain");
    let json = |demoted: Demoted| {
        answer(
            StatusCode::OK,
            serde_json::to_string(&demoted).expect("serializes"),
            "application/json",
        )
    };
    if let Some(lsn) = state.demoted.borrow().clone() {
        return json(Demoted { checkpoint_lsn: lsn });
    }
    if !state.leased.load(Ordering::Relaxed) {
        return text(
            StatusCode::CONFLICT,
            "this instance runs without the primary's Lease: it cannot step down\n".into(),
        );
    }
    if !state.running.load(Ordering::Relaxed) || instance_state(state, &state.pod).await.primary != Some(true)
    {
        return text(
            StatusCode::CONFLICT,
            "this instance is not a running primary\n".into(),
        );
    }
    let mut done = state.demoted.subscribe();
    state.demote.send_modify(|n| *n += 1);
    match tokio::time::timeout(DEMOTE_TIMEOUT, done.wait_for(Option::is_some)).await {
        Ok(Ok(lsn)) => json(Demoted {
            checkpoint_lsn: lsn.clone().expect("waited for"),
        }),
        _ => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("PostgreSQL did not stop within {DEMOTE_TIMEOUT:?}\n"),
        ),
    }
}

/// What the endpoints need.
pub struct State {
    pod: String,
    local: LocalConnection,
    max_lag_bytes: u64,
    running: AtomicBool,
    backups: Arc<super::backup::Backups>,
    /// Set while a restored instance still has the source's superuser password: not ready.
    pub resetting_superuser: AtomicBool,
    /// Counts the switchover requests ([`DEMOTE`]) the primary was sent.
    pub demote: tokio::sync::watch::Sender<u64>,
    /// Where the shutdown checkpoint of the last step-down starts, once PostgreSQL stopped for it;
    /// `None` again once PostgreSQL runs.
    pub demoted: tokio::sync::watch::Sender<Option<String>>,
    /// Whether this instance runs with the primary's Lease (only then can it step down).
    pub leased: AtomicBool,
    /// The data directory, where `tusk.replication.conf` lives.
    pgdata: std::path::PathBuf,
    /// `pg_controldata`, which shows what a replica last replayed of the primary's settings.
    controldata: std::path::PathBuf,
    /// The limits `pg_controldata` last showed, and the control file's modification time then:
    /// it runs again only once the control file changed.
    replayed: std::sync::Mutex<Option<(std::time::SystemTime, crate::facts::instance::Limits)>>,
    /// What the operator last asked of replication ([`REPLICATION`]).
    pub replication: std::sync::Mutex<Option<ReplicationRequest>>,
    /// The uid of the pod object, reported at [`INSTANCE`].
    pub pod_uid: std::sync::OnceLock<String>,
}

impl State {
    /// The state of an instance that has not started PostgreSQL yet.
    pub fn new(
        pod: String,
        local: LocalConnection,
        max_lag_bytes: u64,
        backups: Arc<super::backup::Backups>,
        pgdata: std::path::PathBuf,
        controldata: std::path::PathBuf,
    ) -> Self {
        Self {
            pod,
            local,
            max_lag_bytes,
            running: AtomicBool::new(false),
            backups,
            resetting_superuser: AtomicBool::new(false),
            demote: tokio::sync::watch::Sender::new(0),
            demoted: tokio::sync::watch::Sender::new(None),
            leased: AtomicBool::new(false),
            pgdata,
            controldata,
            replayed: std::sync::Mutex::new(None),
            replication: std::sync::Mutex::new(None),
            pod_uid: std::sync::OnceLock::new(),
        }
    }

    /// Whether `postgres` runs.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// The pod's own connection to PostgreSQL.
    pub fn local(&self) -> &LocalConnection {
        &self.local
    }

    /// Records whether `postgres` runs.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
        if running {
            self.demoted.send_replace(None);
        }
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

/// What this instance reports at [`INSTANCE`]: its role, timeline and WAL positions.
async fn instance_state(state: &State, pod: &str) -> InstanceState {
    let mut report = InstanceState {
        pod: pod.to_owned(),
        pod_uid: state.pod_uid.get().cloned(),
        running: state.running.load(Ordering::Relaxed),
        fenced_at: noted(&state.pgdata, FENCED),
        rewound_at: noted(&state.pgdata, REWOUND),
        ..InstanceState::default()
    };
    if !report.running {
        return report;
    }
    let client = match state.local.connect().await {
        Ok(client) => client,
        Err(e) => {
            report.error = Some(format!("postgres does not answer: {e}"));
            return report;
        }
    };
    let query = async {
        client
            .query_one(
                "SELECT NOT pg_is_in_recovery(), \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        CASE WHEN pg_is_in_recovery() \
                             THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                                           (SELECT timeline_id FROM pg_control_checkpoint())) \
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
                        pg_last_wal_receive_lsn()::text, \
                        pg_last_wal_replay_lsn()::text, \
                        (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
                        (SELECT to_char(last_msg_receipt_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                         FROM pg_stat_wal_receiver LIMIT 1)",
                &[],
            )
            .await
    };
    match query.await {
        Ok(row) => {
            report.primary = Some(row.get(0));
            report.system_identifier = row.get(1);
            report.timeline = row.get::<_, Option<i32>>(2).and_then(|t| u32::try_from(t).ok());
            report.current_lsn = row.get(3);
            report.received_lsn = row.get(4);
            report.replayed_lsn = row.get(5);
            report.wal_receiver = row.get(6);
            report.last_primary_contact = row.get(7);
        }
        Err(e) => report.error = Some(format!("postgres does not answer: {e}")),
    }
    let limits = async {
        let names: Vec<&str> = crate::facts::instance::STANDBY_LIMITS
            .iter()
            .map(|(n, ..)| *n)
            .collect();
        let rows = client
            .query(
                "SELECT name, setting::bigint FROM pg_settings WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .ok()?;
        Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    };
    report.standby_limits = limits.await.unwrap_or_default();
    if report.primary == Some(false) {
        report.replayed_limits = replayed_limits(state).await;
    }
    report
}

/// The standby limits a replica's control file records (what it last replayed of the primary's
/// settings). PostgreSQL rewrites the control file whenever they change, so `pg_controldata`
/// runs only when the file's modification time differs from the last run's, not at each report.
async fn replayed_limits(state: &State) -> crate::facts::instance::Limits {
    let control_file = state.pgdata.join("global").join("pg_control");
    let modified = tokio::fs::metadata(&control_file)
        .await
        .and_then(|m| m.modified())
        .ok();
    if let Some(at) = modified
        && let Some((seen, limits)) = state.replayed.lock().expect("not poisoned").as_ref()
        && *seen == at
    {
        return limits.clone();
    }
    let output = tokio::process::Command::new(&state.controldata)
        .arg(&state.pgdata)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let Ok(output) = output else {
        return Default::default();
    };
    let limits = crate::facts::instance::control_file_limits(&String::from_utf8_lossy(&output.stdout));
    // A file written again within the clock's granularity of the time read above keeps that
    // time: the values shown may be the older ones. Such a recent file is read again next time.
    let settled = |at: std::time::SystemTime| {
        std::time::SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age > std::time::Duration::from_secs(2))
    };
    if let Some(at) = modified
        && output.status.success()
        && settled(at)
    {
        *state.replayed.lock().expect("not poisoned") = Some((at, limits.clone()));
    }
    limits
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

/// The Prometheus text of WAL archiving and base backups, ending with `# EOF`.
pub fn render_backups(
    archive: &crate::backup::api::ArchiveState,
    runs: &[crate::backup::api::BackupState],
) -> String {
    use crate::backup::api::Phase;
    let mut registry = Registry::with_prefix("tusk_instance");
    let seconds = |rfc3339: &str| {
        rfc3339
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map_or(f64::NAN, |t| t.as_millisecond() as f64 / 1000.0)
    };
    let configured = Gauge::<i64>::default();
    configured.set(i64::from(archive.configured));
    registry.register(
        "archive_configured",
        "Whether this instance archives WAL to an object store",
        configured,
    );
    let archived = Counter::<u64>::default();
    archived.inc_by(archive.archived);
    registry.register(
        "archive_archived",
        "WAL files archived since the instance manager started",
        archived,
    );
    let failed = Counter::<u64>::default();
    failed.inc_by(archive.failed);
    registry.register(
        "archive_failed",
        "Failed WAL archive attempts since the instance manager started",
        failed,
    );
    if let Some((_, at)) = &archive.last_archived {
        let last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last.set(seconds(at));
        registry.register(
            "archive_last_archived_timestamp_seconds",
            "When the last WAL file was archived",
            last,
        );
    }
    if let Some((_, at, _, _)) = &archive.last_failed {
        let last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last.set(seconds(at));
        registry.register(
            "archive_last_failed_timestamp_seconds",
            "When archiving last failed",
            last,
        );
    }
    let newest = runs
        .iter()
        .filter(|r| r.phase != Phase::Running)
        .max_by(|a, b| a.started_at.cmp(&b.started_at));
    if let Some(run) = newest {
        let ok = Gauge::<i64>::default();
        ok.set(i64::from(run.phase == Phase::Completed));
        registry.register(
            "backup_last_succeeded",
            "Whether the last base backup this instance ran completed",
            ok,
        );
        if let Some(record) = &run.record {
            let duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            duration.set(seconds(&record.stopped_at) - seconds(&record.started_at));
            registry.register(
                "backup_last_duration_seconds",
                "How long the last completed base backup took",
                duration,
            );
            let bytes = Gauge::<i64>::default();
            bytes.set(i64::try_from(record.stored_bytes).unwrap_or(i64::MAX));
            registry.register(
                "backup_last_stored_bytes",
                "Bytes the last completed base backup stored",
                bytes,
            );
        }
    }
    let running = Gauge::<i64>::default();
    running.set(i64::from(runs.iter().any(|r| r.phase == Phase::Running)));
    registry.register(
        "backup_running",
        "Whether a base backup runs on this instance",
        running,
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

async fn handle(state: Arc<State>, call: Call) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    let text = |status, body: String| answer(status, body, "text/plain");
    if let Some(answer) = super::backup::handle_status_call(&state.backups, &call).await {
        return answer;
    }
    match call.path.as_str() {
        INSTANCE => answer(
            StatusCode::OK,
            serde_json::to_string(&instance_state(&state, &state.pod).await).expect("a state serializes"),
            "application/json",
        ),
        DEMOTE if call.method == hyper::Method::POST => demote(&state).await,
        REPLICATION if call.method == hyper::Method::POST => {
            match serde_json::from_slice::<ReplicationRequest>(&call.body) {
                Err(e) => text(StatusCode::BAD_REQUEST, format!("the request: {e}\n")),
                Ok(request) => match replicate(&state, request).await {
                    Ok(()) => text(StatusCode::OK, "ok\n".into()),
                    Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                },
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if !state.running.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "postgres is not running yet\n".into(),
        ),
        "/readyz" if state.resetting_superuser.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "restored: recovering, or setting this cluster's superuser password\n".into(),
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
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// What `/metrics` shows: the instance, then its backups.
pub async fn metrics(state: &State) -> String {
    let s = if state.running.load(Ordering::Relaxed) {
        snapshot(&state.local).await.ok()
    } else {
        None
    };
    let mut body = render(s.as_ref());
    let backups = render_backups(&state.backups.archive_state(), &state.backups.runs());
    // One exposition: the backup families go before the final `# EOF`.
    if let Some(head) = body.strip_suffix("# EOF\n") {
        body = format!("{head}{backups}");
    }
    body
}

/// The addresses to listen on: the pod's IPs, or every address when there are none.
fn listen_ips(ips: &[IpAddr]) -> Vec<IpAddr> {
    if ips.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    } else {
        ips.to_vec()
    }
}

/// Serves `/metrics` over HTTPS on `port` of each of `ips` (every address when there are none)
/// with `cert`, for callers `authorizer` lets in, under the TLS security profile in
/// `profile_file` (read again every 5 s; Intermediate until there is one), until `stopped` turns
/// true.
pub async fn serve_metrics(
    ips: &[IpAddr],
    port: u16,
    cert: crate::webhook::server::ServerCert,
    authorizer: Arc<crate::admin::auth::Authorizer>,
    profile_file: std::path::PathBuf,
    state: Arc<State>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    use crate::webhook::server::{Config, Server};
    let mut servers = Vec::new();
    let mut profiled = Vec::new();
    // The profile in force from the first handshake on.
    let initial = std::fs::read_to_string(&profile_file)
        .ok()
        .and_then(|text| crate::tls_profile::Profile::from_json(&text).ok());
    for ip in listen_ips(ips) {
        let listen = SocketAddr::new(ip, port);
        let state = state.clone();
        let render: crate::admin::Render = Arc::new(move || {
            let state = state.clone();
            Box::pin(async move { metrics(&state).await })
        });
        let server = Server::bind_with(
            Config {
                listen,
                ..Config::default()
            },
            cert.clone(),
            crate::admin::metrics_handler(render, authorizer.clone()),
            "metrics",
        )
        .await
        .map_err(|e| Error::Config(format!("/metrics on {listen}: {e}")))?;
        if let Some(profile) = &initial {
            crate::tls_profile::apply_all(&[server.tls()], profile, "the cluster's ConfigMap");
        }
        profiled.push(server.tls());
        servers.push(tokio::spawn(
            server.run(crate::process::until_stopped(stopped.clone())),
        ));
    }
    let follow = crate::tls_profile::follow_file(profile_file, profiled, std::time::Duration::from_secs(5));
    let mut stopped = stopped;
    servers.push(tokio::spawn(async move {
        tokio::select! {
            () = follow => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    }));
    Ok(servers)
}

/// Binds the status port on each of `ips` (every address when there are none) and serves until
/// `stopped` turns true.
pub async fn serve(
    ips: &[IpAddr],
    port: u16,
    state: Arc<State>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut servers = Vec::new();
    for ip in listen_ips(ips) {
        let addr = SocketAddr::new(ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding the status port {addr}")))?;
        let state = state.clone();
        let handler = move |call: Call| handle(state.clone(), call);
        servers.push(tokio::spawn(serve_calls(
            Listener::Tcp(listener),
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
