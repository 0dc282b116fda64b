//! What the instance manager does when the cluster has a primary Lease (`--kube-api-dir`): the
//! Lease, not the pod's ordinal, says who the primary is.
//!
//! Before PostgreSQL starts ([`prepare`]):
//!
//! | data directory | Lease holder | what happens |
//! |---|---|---|
//! | empty | this pod, and no primary ever renewed it | bootstrap (`initdb` or a restore), renew, start as primary |
//! | empty | this pod, but a primary renewed it before (the volume was lost) | give the Lease up so the operator promotes a replica, then clone from the new primary |
//! | empty | another pod, or nobody | clone from the primary (`-rw`), start as replica |
//! | a primary's | this pod | renew first, then start as primary |
//! | a primary's | another pod | `pg_rewind` from the primary onto its timeline (a fresh clone, the old directory kept aside, when that fails), start as replica |
//! | a replica's, marked diverged | another pod | `pg_rewind` from the primary, as for a former primary's |
//! | a replica's | anyone | start as replica |
//!
//! While PostgreSQL runs ([`keep`]): a primary renews the Lease and fences itself (immediate
//! shutdown) when it cannot renew for [`FENCE_AFTER`] or the Lease names another pod; a
//! replica that the operator names holder renews, then promotes. A replica that cannot stream
//! because its WAL went past the point where the primary's timeline forked off its own (it
//! received more than the replica that was promoted) marks itself diverged ([`DIVERGED`]) and
//! stops; the next turn rewinds it.

use std::{process::Command, time::Duration};

use tokio::{sync::watch, time::Instant};
use tracing::{error, info, warn};

use super::{
    Error, InstanceArgs, LocalConnection, Programs,
    datadir::{DataDir, STANDBY_SIGNAL},
    io,
    lease::{FENCE_AFTER, Holder, Leases, RENEW_EVERY},
    run_program,
};
use crate::facts::cluster::SUPERUSER;

/// The file beside the data directory (on the data volume, so a restart keeps it) that says
/// this replica's WAL went past the point where the primary's timeline forked off: the next
/// start rewinds it onto the primary's timeline before PostgreSQL runs.
pub const DIVERGED: &str = "tusk.diverged";

/// How often a replica that does not stream checks whether it diverged.
const FOLLOW_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Checks in a row that must find a replica diverged before it stops to be rewound: a replica
/// that stops streaming for a moment while the primary changes is left alone.
const DIVERGED_CHECKS: u32 = 3;

/// The marker [`DIVERGED`] of the data directory `pgdata`.
fn diverged_marker(pgdata: &std::path::Path) -> std::path::PathBuf {
    pgdata.parent().unwrap_or(pgdata).join(DIVERGED)
}

/// How PostgreSQL starts, once [`prepare`] made the data directory fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// As the primary: this pod holds the Lease, renewed at `renewed` (when the renewal was sent).
    Primary {
        /// When the last successful renewal was sent.
        renewed: Instant,
    },
    /// As a replica of the Lease holder.
    Replica,
}

/// Reads the Lease until it answers, or SIGTERM arrives.
async fn read(leases: &Leases) -> Result<k8s_openapi::api::coordination::v1::Lease, Error> {
    let mut delay = Duration::from_millis(500);
    loop {
        match leases.read().await {
            Ok(lease) => return Ok(lease),
            Err(e) => warn!(error = %e, retry_in = ?delay, "reading the primary's Lease"),
        }
        super::pause(delay, "reading the primary's Lease").await?;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Renews the Lease this pod holds; when the renewal was sent, or `None` when another pod took
/// it meanwhile.
async fn renew_held(leases: &Leases) -> Result<Option<Instant>, Error> {
    loop {
        let lease = read(leases).await?;
        if leases.holder(&lease) != Holder::Me {
            return Ok(None);
        }
        let attempt = Instant::now();
        match leases.renew(lease).await {
            Ok(_) => return Ok(Some(attempt)),
            Err(e) => warn!(error = %e, "renewing the primary's Lease before starting"),
        }
        super::pause(RENEW_EVERY, "renewing the primary's Lease").await?;
    }
}

/// Makes the data directory fit the role the Lease gives this pod; see the module's table.
/// `bootstrap` creates the first primary's data (`initdb` or a restore); `clone` copies the
/// primary's.
pub async fn prepare<B, C>(
    args: &InstanceArgs,
    programs: &Programs,
    password: &str,
    leases: &Leases,
    found: DataDir,
    bootstrap: B,
    clone: C,
) -> Result<Start, Error>
where
    B: AsyncFnOnce() -> Result<(), Error>,
    C: AsyncFn() -> Result<(), Error>,
{
    let lease = read(leases).await?;
    let holder = leases.holder(&lease);
    info!(?holder, data = ?found, "the primary's Lease");
    match (found, holder) {
        (DataDir::Empty, Holder::Me) if !Leases::initialized(&lease) => {
            bootstrap().await?;
            primary(leases).await
        }
        (DataDir::Empty, Holder::Me) => {
            warn!(
                "this pod holds the primary's Lease but its volume is empty: giving the Lease up, then cloning the new primary"
            );
            if let Err(e) = leases.release(lease).await {
                warn!(error = %e, "giving the Lease up; the operator takes it over once it expires");
            }
            clone().await?;
            Ok(Start::Replica)
        }
        (DataDir::Empty, _) => {
            clone().await?;
            Ok(Start::Replica)
        }
        (DataDir::Primary, Holder::Me) => primary(leases).await,
        (DataDir::Primary, _) => {
            wait_for_primary(args, password).await?;
            rejoin(args, programs, password, &clone).await?;
            Ok(Start::Replica)
        }
        (DataDir::Replica, Holder::Other(_)) if diverged_marker(&args.spec.pgdata).exists() => {
            info!(
                "this replica's WAL went past the primary's timeline fork: rewinding onto the primary's timeline"
            );
            wait_for_primary(args, password).await?;
            rejoin(args, programs, password, &clone).await?;
            std::fs::remove_file(diverged_marker(&args.spec.pgdata))
                .map_err(io("removing the diverged marker"))?;
            Ok(Start::Replica)
        }
        (DataDir::Replica, _) => Ok(Start::Replica),
    }
}

/// Where the primary's timeline history says timeline `ours` ended: the LSN at which the next
/// timeline forked off it, or `None` when `ours` is not in the history at all. `history` is a
/// `.history` file: one line per ancestor, `parent-timeline  switchpoint  reason`.
pub fn fork_point(history: &str, ours: u32) -> Option<Option<u64>> {
    let mut found = None;
    for line in history.lines() {
        let mut fields = line.split_whitespace();
        let (Some(parent), Some(switchpoint)) = (fields.next(), fields.next()) else {
            continue;
        };
        if parent.starts_with('#') {
            continue;
        }
        if parent.parse::<u32>().ok() == Some(ours) {
            found = Some(crate::facts::instance::parse_lsn(switchpoint));
        }
    }
    found
}

/// Whether this replica's WAL went past the point where the primary's timeline forked off its
/// own: `Some(why)` when PostgreSQL is in recovery, does not stream, and the writable primary's
/// history ends this replica's timeline before the position it replayed (or does not hold it at
/// all). `None` when it streams, when anything does not answer, or when it can follow.
///
/// `followed` is the highest timeline this replica was seen streaming on: it replays that one, so
/// it is its timeline even while the last restartpoint (the control file) still names an older
/// one, as it does for a while after a promotion it followed. Without it, a replica that did
/// follow and then stops streaming for a moment (its primary restarts) would look diverged.
async fn diverged(
    args: &InstanceArgs,
    password: &str,
    local: &LocalConnection,
    followed: &mut u32,
) -> Option<String> {
    let client = local.connect().await.ok()?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
                    pg_last_wal_replay_lsn()::text, \
                    (SELECT timeline_id FROM pg_control_checkpoint())",
            &[],
        )
        .await
        .ok()?;
    let recovering = row.get::<_, bool>(0);
    if let Some(streaming_on) = row.get::<_, Option<i32>>(1) {
        *followed = (*followed).max(u32::try_from(streaming_on).unwrap_or(0));
        return None;
    }
    if !recovering {
        return None;
    }
    let replayed = crate::facts::instance::parse_lsn(row.get::<_, Option<&str>>(2)?)?;
    // The timeline of the last restartpoint may lag the one replayed; the one it streamed on
    // does not.
    let ours = u32::try_from(row.get::<_, i32>(3)).ok()?.max(*followed);
    let primary = primary_client(args, password).await?;
    let row = primary
        .query_one(
            "SELECT NOT pg_is_in_recovery(), timeline_id FROM pg_control_checkpoint()",
            &[],
        )
        .await
        .ok()?;
    let theirs = u32::try_from(row.get::<_, i32>(1)).ok()?;
    if !row.get::<_, bool>(0) || theirs <= ours {
        return None;
    }
    let history: String = primary
        .query_one(
            "SELECT pg_read_file($1)",
            &[&format!("pg_wal/{theirs:08X}.history")],
        )
        .await
        .ok()?
        .get(0);
    match fork_point(&history, ours) {
        None => Some(format!(
            "the primary's timeline {theirs} does not descend from this replica's timeline {ours}"
        )),
        Some(Some(fork)) if replayed > fork => Some(format!(
            "this replica replayed timeline {ours} to {}, past {}, where the primary's timeline forked off",
            crate::facts::instance::format_lsn(replayed),
            crate::facts::instance::format_lsn(fork)
        )),
        Some(_) => None,
    }
}

/// As a replica: returns once [`diverged`] held at [`DIVERGED_CHECKS`] checks in a row, having
/// written the marker [`DIVERGED`]; never otherwise.
async fn watch_divergence(args: &InstanceArgs, password: &str, local: &LocalConnection) {
    let mut seen = 0;
    let mut followed = 0;
    loop {
        tokio::time::sleep(FOLLOW_CHECK_EVERY).await;
        match diverged(args, password, local, &mut followed).await {
            Some(why) => {
                seen += 1;
                warn!(check = seen, of = DIVERGED_CHECKS, %why, "this replica cannot follow the primary");
            }
            None => seen = 0,
        }
        if seen < DIVERGED_CHECKS {
            continue;
        }
        match std::fs::write(diverged_marker(&args.spec.pgdata), "") {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "marking the data directory diverged"),
        }
    }
}

/// Renews before starting as the primary: a Lease handed on while this pod was down is never
/// taken back, and the pod then starts as a replica instead.
async fn primary(leases: &Leases) -> Result<Start, Error> {
    match renew_held(leases).await? {
        Some(renewed) => Ok(Start::Primary { renewed }),
        None => Err(Error::Config(
            "the primary's Lease went to another pod before this one started; the container restarts as a replica".into(),
        )),
    }
}

/// Waits until the primary's Service answers with an instance that takes writes: a rewind from
/// anything else would fail for a reason that says nothing about this data directory.
async fn wait_for_primary(args: &InstanceArgs, password: &str) -> Result<(), Error> {
    loop {
        let primary = async {
            let client = primary_client(args, password).await?;
            let row = client
                .query_one("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())?;
            // Its control file must name its timeline, which a promotion writes only at the
            // next checkpoint.
            client.batch_execute("CHECKPOINT").await.ok()
        };
        if primary.await.is_some() {
            return Ok(());
        }
        info!(primary = %args.spec.primary_host, "waiting for the new primary before rewinding onto it");
        super::pause(Duration::from_secs(1), "waiting for the new primary").await?;
    }
}

/// A superuser session on the primary's Service, verifying its certificate when the cluster has
/// TLS; `None` when it cannot be had now.
async fn primary_client(args: &InstanceArgs, password: &str) -> Option<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(SUPERUSER)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let ca = match super::tls_of(args).map(|tls| tls.server_ca()).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            warn!(error = %e, "the cluster's CA cannot be read to reach the primary");
            return None;
        }
    };
    let connected = crate::sql::tls::connect(
        config,
        &args.spec.primary_host,
        args.spec.postgres_port,
        &super::tls::primary_server_name(&args.spec.cluster),
        ca.as_deref(),
    )
    .await;
    match connected {
        Ok(client) => Some(client),
        Err(crate::sql::tls::ConnectError::Tls(e)) => {
            warn!(error = %e, "the cluster's CA cannot be used to reach the primary");
            None
        }
        Err(crate::sql::tls::ConnectError::Postgres(_)) => None,
    }
}

/// Brings a former primary back as a replica of the new one: `pg_rewind` onto its timeline, or,
/// when that fails, a fresh clone with the old directory kept aside (it may hold commits no other
/// instance has: they are the user's, so they are not deleted).
async fn rejoin<C>(args: &InstanceArgs, programs: &Programs, password: &str, clone: &C) -> Result<(), Error>
where
    C: AsyncFn() -> Result<(), Error>,
{
    let attempt = {
        let (args, programs, password) = (args.clone(), programs.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || rewind(&args, &programs, &password))
    };
    let rejoined = match attempt.await.expect("the rewind task never panics") {
        Ok(output) => {
            info!(output = %output.trim(), "pg_rewind: this instance follows the primary's timeline");
            std::fs::write(args.spec.pgdata.join(STANDBY_SIGNAL), "").map_err(io("writing standby.signal"))
        }
        Err(e) => {
            error!(error = %e, "pg_rewind failed: keeping the data directory aside and cloning the primary");
            let stamp = k8s_openapi::jiff::Timestamp::now().as_second();
            let aside = super::with_suffix(&args.spec.pgdata, &format!(".diverged-{stamp}"));
            std::fs::rename(&args.spec.pgdata, &aside)
                .map_err(io(format!("moving {} aside", args.spec.pgdata.display())))?;
            warn!(kept = %aside.display(), "the diverged data directory is kept; delete it once you no longer need it");
            clone().await
        }
    };
    if rejoined.is_ok()
        && let Err(e) = super::status::note(&args.spec.pgdata, super::status::REWOUND)
    {
        warn!(error = %e, "noting the rewind for the operator");
    }
    rejoined
}

/// One `pg_rewind` from the primary's Service.
fn rewind(args: &InstanceArgs, programs: &Programs, password: &str) -> Result<String, Error> {
    let pg_rewind = super::find("pg_rewind")?;
    let mut params = super::tls::connection(
        super::tls_of(args).as_ref(),
        &args.spec.primary_host,
        &super::tls::primary_server_name(&args.spec.cluster),
        args.spec.postgres_port,
        super::tls::Login::Superuser,
    );
    params.push(("dbname", "postgres".to_owned()));
    params.push(("connect_timeout", "5".to_owned()));
    let source = super::tls::conninfo(&params);
    let _ = programs;
    let mut command = Command::new(pg_rewind);
    command
        .env("PGPASSWORD", password)
        .arg(format!("--target-pgdata={}", args.spec.pgdata.display()))
        .arg(format!("--source-server={source}"))
        .arg("--progress");
    run_program("pg_rewind", &mut command)
}

/// How the primary must stop taking writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// It may run.
    No,
    /// It lost its Lease: stop at once (an immediate shutdown).
    Now,
    /// It steps down for a switchover: a fast shutdown, which sends every WAL record to the
    /// streaming replicas first.
    StepDown,
    /// A replica that diverged from the primary's timeline: a fast shutdown, then a rewind.
    Rewind,
}

/// Keeps the role while PostgreSQL runs: see the module's doc. Sends on `fence` when PostgreSQL
/// must stop: for a primary, at once when it lost the Lease, cleanly when a switchover was asked
/// for on `demote`; for a replica, cleanly when it diverged from the primary's timeline.
pub async fn keep(
    args: InstanceArgs,
    password: String,
    leases: Leases,
    start: Start,
    local: LocalConnection,
    fence: watch::Sender<Fence>,
    state: std::sync::Arc<super::status::State>,
) {
    let mut demote = state.demote.subscribe();
    let renewed = match start {
        Start::Primary { renewed } => renewed,
        Start::Replica => match tokio::select! {
            promoted = wait_for_promotion(&leases, &local) => promoted,
            () = watch_divergence(&args, &password, &local) => {
                warn!("stopping postgres to rewind this replica onto the primary's timeline");
                let _ = fence.send(Fence::Rewind);
                return;
            }
        } {
            Some(renewed) => {
                // The replicas' slots, at once: they reconnect to this pod now.
                let request = state.replication.lock().expect("never poisoned").clone();
                if let Some(request) = request {
                    let made = async {
                        let client = local.connect().await.map_err(|e| e.to_string())?;
                        super::status::ensure_slots(&client, &request.replicas).await
                    };
                    if let Err(e) = made.await {
                        warn!(error = %e, "creating the replicas' slots after the promotion; the operator does it at its next reconcile");
                    }
                }
                renewed
            }
            None => return,
        },
    };
    demote.mark_unchanged();
    tokio::select! {
        () = hold(&leases, renewed) => { let _ = fence.send(Fence::Now); }
        Ok(()) = demote.changed() => {
            info!("asked to step down for a switchover: no more renewals, fast shutdown");
            let _ = fence.send(Fence::StepDown);
        }
    }
}

/// As a replica: makes sure the primary has this pod's replication slot, so streaming through it
/// starts without waiting for the operator. Tries for a minute; the operator makes it otherwise.
pub async fn ensure_own_slot(args: InstanceArgs, password: String) {
    let slot = crate::facts::instance::slot_name(&args.pod.pod_name);
    for _ in 0..30 {
        let made = async {
            let client = primary_client(&args, &password).await?;
            let row = client
                .query_one(
                    "SELECT NOT pg_is_in_recovery(), EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                    &[&slot],
                )
                .await
                .ok()?;
            if !row.get::<_, bool>(0) {
                return None;
            }
            if !row.get::<_, bool>(1) {
                client
                    .execute("SELECT pg_create_physical_replication_slot($1, true)", &[&slot])
                    .await
                    .ok()?;
                info!(%slot, "created this replica's slot on the primary");
            }
            Some(())
        };
        if made.await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// After a step-down: waits until the operator hands the Lease to another pod (true: rejoin as
/// its replica), or gives it back to this one by a new transition (false: the switchover was
/// given up, start as the primary again); `Error::Stopped` when SIGTERM arrives first.
pub async fn await_successor(leases: &Leases) -> Result<bool, Error> {
    let transitions = |l: &k8s_openapi::api::coordination::v1::Lease| {
        l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0)
    };
    let before = transitions(&read(leases).await?);
    loop {
        super::pause(
            Duration::from_millis(200),
            "waiting for the switchover's new primary",
        )
        .await?;
        let Ok(lease) = leases.read().await else { continue };
        match leases.holder(&lease) {
            Holder::Me if transitions(&lease) != before => return Ok(false),
            Holder::Me => {}
            _ => return Ok(true),
        }
    }
}

/// As a replica: waits until the operator names this pod the holder, renews, and promotes.
async fn wait_for_promotion(leases: &Leases, local: &LocalConnection) -> Option<Instant> {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tick.tick().await;
        let Ok(lease) = leases.read().await else { continue };
        if leases.holder(&lease) != Holder::Me {
            continue;
        }
        let attempt = Instant::now();
        let mut current = match leases.renew(lease).await {
            Ok(written) => Some(written),
            Err(e) => {
                warn!(error = %e, "renewing the Lease the operator handed to this pod");
                continue;
            }
        };
        info!("the operator named this pod the primary: promoting");
        // PostgreSQL may take seconds to leave recovery (it waits out wal_retrieve_retry_interval
        // when the old primary's stream broke). The Lease is renewed meanwhile, or the new primary
        // would find it lapsed the moment it promoted, and fence itself.
        let promotion = promote(local);
        tokio::pin!(promotion);
        let mut renewed = attempt;
        loop {
            tokio::select! {
                outcome = &mut promotion => match outcome {
                    Ok(()) => {
                        info!("promoted: this pod is the primary");
                        return Some(renewed);
                    }
                    Err(e) => {
                        // Still a replica: without renewals the operator hands the Lease on again.
                        error!(error = %e, "promotion failed");
                        return None;
                    }
                },
                outcome = renew_after_pause(leases, &mut current) => {
                    if let Ok(Some(sent)) = outcome {
                        renewed = sent;
                    }
                }
            }
        }
    }
}

/// After [`RENEW_EVERY`], one renewal of the Lease this pod holds: when it was sent, or `None`
/// when the Lease names another pod. `current` is the Lease as this pod last wrote it, so a
/// renewal is one write and a read only follows a failed one; it holds the written Lease after.
async fn renew_after_pause(
    leases: &Leases,
    current: &mut Option<k8s_openapi::api::coordination::v1::Lease>,
) -> Result<Option<Instant>, String> {
    tokio::time::sleep(RENEW_EVERY).await;
    let sent = Instant::now();
    let lease = match current.take() {
        Some(lease) => lease,
        None => leases.read().await.map_err(|e| e.to_string())?,
    };
    if leases.holder(&lease) != Holder::Me {
        return Ok(None);
    }
    *current = Some(leases.renew(lease).await.map_err(|e| e.to_string())?);
    Ok(Some(sent))
}

/// `pg_promote()`, waiting up to a minute for PostgreSQL to leave recovery.
async fn promote(local: &LocalConnection) -> Result<(), String> {
    let client = local.connect().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await
        .map_err(|e| e.to_string())?;
    if row.get::<_, bool>(0) {
        // The control file names the new timeline only after a checkpoint: pg_rewind reads the
        // source's timeline there, and would find nothing to rewind on the old primary.
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    } else {
        Err("PostgreSQL did not leave recovery within 60 s".into())
    }
}

/// As the primary: renews every [`RENEW_EVERY`]; returns (so the caller fences) when the Lease
/// names another pod, or when no renewal succeeded for [`FENCE_AFTER`] since the last successful
/// one was sent.
async fn hold(leases: &Leases, mut renewed: Instant) {
    let mut current = None;
    loop {
        let deadline = renewed + FENCE_AFTER;
        tokio::select! {
            outcome = renew_after_pause(leases, &mut current) => match outcome {
                Ok(Some(sent)) => renewed = sent,
                Ok(None) => return warn!("the primary's Lease names another pod: fencing"),
                Err(e) => warn!(error = %e, "renewing the primary's Lease"),
            },
            () = tokio::time::sleep_until(deadline) => {
                return warn!(after = ?FENCE_AFTER, "the primary's Lease was not renewed in time: fencing");
            }
        }
        if Instant::now() >= renewed + FENCE_AFTER {
            return warn!(after = ?FENCE_AFTER, "the primary's Lease was not renewed in time: fencing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fork_point;

    #[test]
    fn the_fork_point_of_a_timeline_is_read_from_the_primarys_history() {
        // As PostgreSQL writes 00000003.history: timeline 1 ended at 0/3000148, timeline 2 at
        // 0/50000A0.
        let history =
            "1\t0/3000148\tno recovery target specified\n\n2\t0/50000A0\tno recovery target specified\n";
        assert_eq!(fork_point(history, 1), Some(Some(0x3000148)));
        assert_eq!(fork_point(history, 2), Some(Some(0x50000A0)));
        // A timeline the history does not hold: the primary does not descend from it.
        assert_eq!(fork_point(history, 4), None);
        assert_eq!(fork_point("# a comment\n", 1), None);
    }
}
