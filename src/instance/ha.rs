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
//! | a replica's | anyone | start as replica |
//!
//! While PostgreSQL runs ([`keep`]): a primary renews the Lease and fences itself (immediate
//! shutdown) when it cannot renew for [`FENCE_AFTER`] or the Lease names another pod; a
//! replica that the operator names holder renews, then promotes.

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
        (DataDir::Replica, _) => Ok(Start::Replica),
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
    let config = {
        let mut c = tokio_postgres::Config::new();
        c.host(&args.spec.primary_host)
            .port(args.spec.postgres_port)
            .user(SUPERUSER)
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        c
    };
    loop {
        let primary = async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
            tokio::spawn(connection);
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
    match attempt.await.expect("the rewind task never panics") {
        Ok(output) => {
            info!(output = %output.trim(), "pg_rewind: this former primary follows the new one");
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
    }
}

/// One `pg_rewind` from the primary's Service.
fn rewind(args: &InstanceArgs, programs: &Programs, password: &str) -> Result<String, Error> {
    let pg_rewind = super::find("pg_rewind")?;
    let source = format!(
        "host={} port={} user={SUPERUSER} dbname=postgres connect_timeout=5",
        args.spec.primary_host, args.spec.postgres_port
    );
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
}

/// Keeps the role while PostgreSQL runs: see the module's doc. Sends on `fence` when the primary
/// must stop taking writes: at once when it lost the Lease, cleanly when a switchover was asked
/// for on `demote`.
pub async fn keep(
    leases: Leases,
    start: Start,
    local: LocalConnection,
    fence: watch::Sender<Fence>,
    state: std::sync::Arc<super::status::State>,
) {
    let mut demote = state.demote.subscribe();
    let renewed = match start {
        Start::Primary { renewed } => renewed,
        Start::Replica => match wait_for_promotion(&leases, &local).await {
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
    let mut config = tokio_postgres::Config::new();
    config
        .host(&args.spec.primary_host)
        .port(args.spec.postgres_port)
        .user(SUPERUSER)
        .password(&password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    for _ in 0..30 {
        let made = async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.ok()?;
            tokio::spawn(connection);
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
        if let Err(e) = leases.renew(lease).await {
            warn!(error = %e, "renewing the Lease the operator handed to this pod");
            continue;
        }
        info!("the operator named this pod the primary: promoting");
        match promote(local).await {
            Ok(()) => {
                info!("promoted: this pod is the primary");
                return Some(attempt);
            }
            Err(e) => {
                // Still a replica: without renewals the operator hands the Lease on again.
                error!(error = %e, "promotion failed");
                return None;
            }
        }
    }
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
    // The Lease as this pod last wrote it: a renewal is one write, and a read only follows a
    // conflict.
    let mut current: Option<k8s_openapi::api::coordination::v1::Lease> = None;
    loop {
        let deadline = renewed + FENCE_AFTER;
        let attempt = async {
            tokio::time::sleep(RENEW_EVERY).await;
            let sent = Instant::now();
            let lease = match current.take() {
                Some(lease) => lease,
                None => leases.read().await.map_err(|e| e.to_string())?,
            };
            if leases.holder(&lease) != Holder::Me {
                return Ok(None);
            }
            let written = leases.renew(lease).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Some((sent, written)))
        };
        tokio::select! {
            outcome = attempt => match outcome {
                Ok(Some((sent, written))) => {
                    renewed = sent;
                    current = Some(written);
                }
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
