//! Switchover on request (`spec.switchover.to`): the primary steps down cleanly, the named
//! replica takes over, and no committed transaction is lost.
//!
//! 1. The target must be a replica of this cluster that streams from the primary; until it is,
//!    the switchover is `Pending`.
//! 2. The primary's instance manager is asked to step down ([`DEMOTE`]): it stops renewing the
//!    Lease and stops PostgreSQL with a fast shutdown, which sends every WAL record, the shutdown
//!    checkpoint last, to the streaming replicas. It answers where that checkpoint starts.
//! 3. Once the target has received WAL past it (it has every commit), the operator hands it the
//!    Lease; the target promotes as in a failover, and the old primary rejoins as its replica.
//!    When the target does not catch up in time, the Lease goes back to the old primary by a new
//!    transition, which starts again as the primary: nothing is lost either way.
//!
//! Each value of `spec.switchover.to` is carried out once: `status.switchover` records it, so a
//! later failover is never undone by a request already served.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};

use super::{failover, instances};
use crate::{
    api::postgres_cluster::v1::{PostgresCluster, SwitchoverStatus},
    controller::{Context, Error},
    facts::instance::{DEMOTE, Demoted, InstanceState, format_lsn, parse_lsn},
};

/// `status.switchover.phase` values.
pub const PENDING: &str = "Pending";
/// The switchover runs.
pub const RUNNING: &str = "Running";
/// The target is the primary.
pub const COMPLETED: &str = "Completed";
/// The switchover was given up; the message says why.
pub const FAILED: &str = "Failed";

/// How long the old primary may take to stop cleanly.
const STEP_DOWN_TIMEOUT: Duration = Duration::from_secs(100);
/// How long the target may take to receive the old primary's last WAL record.
const CATCH_UP: Duration = Duration::from_secs(10);
/// How long the target may take to promote once it holds the Lease.
const PROMOTION: Duration = Duration::from_secs(60);

/// What one reconcile did about the switchover.
pub struct Step {
    /// `status.switchover`.
    pub status: SwitchoverStatus,
    /// The pod the Lease was handed to in this reconcile.
    pub handed_to: Option<String>,
    /// How long writes were refused: from the step-down request to the target's promotion.
    pub downtime: Option<Duration>,
}

fn status(to: &str, phase: &str, message: String) -> SwitchoverStatus {
    SwitchoverStatus {
        to: to.to_owned(),
        phase: phase.to_owned(),
        message: Some(message),
    }
}

/// Carries the switchover `cluster.spec.switchover` asks for one step further. `None` when none
/// is asked for.
pub async fn step(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    seen: &failover::Seen,
    reports: &[super::instances::Report],
) -> Result<Option<Step>, Error> {
    let Some(request) = cluster.spec.switchover.as_ref() else {
        return Ok(None);
    };
    let to = request.to.as_str();
    let name = cluster.name_any();
    let done = |status: SwitchoverStatus| {
        Ok(Some(Step {
            status,
            handed_to: None,
            downtime: None,
        }))
    };
    if let Some(previous) = cluster.status.as_ref().and_then(|s| s.switchover.as_ref())
        && previous.to == to
        && (previous.phase == COMPLETED || previous.phase == FAILED)
    {
        return done(previous.clone());
    }
    let state = |pod: &str| instances::report(reports, pod);
    let holder = seen.holder();
    let Some(target) = state(to) else {
        let names: Vec<&str> = reports.iter().map(|(p, _)| p.as_str()).collect();
        return done(status(
            to,
            FAILED,
            format!(
                "spec.switchover.to: {to} is not an instance of PostgresCluster {name}; its instances are {}",
                names.join(", ")
            ),
        ));
    };
    if holder == to {
        return done(match target {
            Ok(s) if s.primary == Some(true) => status(to, COMPLETED, format!("{to} is the primary")),
            _ => status(
                to,
                RUNNING,
                format!("{to} holds the primary's Lease and is being promoted"),
            ),
        });
    }
    Ok(Some(
        match perform(ctx, cluster, namespace, seen, reports, to).await? {
            Switch::Pending(why) => Step {
                status: status(to, PENDING, why),
                handed_to: None,
                downtime: None,
            },
            Switch::Failed(why) => Step {
                status: status(to, FAILED, why),
                handed_to: None,
                downtime: None,
            },
            Switch::Done { message, downtime } => Step {
                status: status(to, if downtime.is_some() { COMPLETED } else { RUNNING }, message),
                handed_to: Some(to.to_owned()),
                downtime,
            },
        },
    ))
}

/// How [`perform`] went.
pub enum Switch {
    /// The target cannot take over yet; why.
    Pending(String),
    /// Given up; why. The old primary leads.
    Failed(String),
    /// The Lease went to the target; `downtime` once it accepts writes.
    Done {
        /// What happened.
        message: String,
        /// From the step-down request to the target's promotion.
        downtime: Option<Duration>,
    },
}

/// Moves the primary role from the Lease holder to `to`, a replica: see the module's doc.
pub async fn perform(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    seen: &failover::Seen,
    reports: &[super::instances::Report],
    to: &str,
) -> Result<Switch, Error> {
    let name = cluster.name_any();
    let holder = seen.holder();
    let state = |pod: &str| instances::report(reports, pod);
    let pending = |why: String| Ok(Switch::Pending(why));
    let Some(target) = state(to) else {
        return pending(format!("{to} does not answer"));
    };
    let primary = state(holder)
        .and_then(|r| r.as_ref().ok())
        .filter(|s| s.primary == Some(true));
    let Some(primary) = primary else {
        return pending(format!(
            "the primary {holder} does not answer as one; a switchover needs it to step down cleanly"
        ));
    };
    match target {
        Err(e) => return pending(format!("{to} does not answer: {e}")),
        Ok(s) if s.primary != Some(false) => return pending(format!("{to} is not a running replica")),
        Ok(s) if s.system_identifier != primary.system_identifier => {
            return pending(format!(
                "{to} holds another system's data than the primary {holder}"
            ));
        }
        Ok(s) if s.wal_receiver.as_deref() != Some("streaming") => {
            return pending(format!(
                "{to} does not stream from the primary (WAL receiver: {})",
                s.wal_receiver.as_deref().unwrap_or("none")
            ));
        }
        Ok(_) => {}
    }

    tracing::info!(from = %holder, %to, "switchover: asking the primary to step down");
    let started = Instant::now();
    let failed = |why: String| Ok(Switch::Failed(why));
    let at = super::instances::At {
        namespace,
        cluster: &name,
        pod: holder,
    };
    let answer = super::instances::call(ctx, at, hyper::Method::POST, DEMOTE, None, STEP_DOWN_TIMEOUT).await;
    let checkpoint = match answer {
        Ok((code, body)) if code.is_success() => serde_json::from_slice::<Demoted>(&body)
            .ok()
            .and_then(|d| parse_lsn(&d.checkpoint_lsn)),
        Ok((code, body)) => {
            return failed(format!(
                "the primary {holder} did not step down ({code}): {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Err(e) => return failed(format!("the primary {holder} did not step down: {e}")),
    };
    let Some(checkpoint) = checkpoint else {
        return failed(format!(
            "the primary {holder} stepped down but did not say where its WAL ends"
        ));
    };
    let caught_up = wait_for(ctx, namespace, &name, to, CATCH_UP, |s| {
        s.received_lsn
            .as_deref()
            .and_then(parse_lsn)
            .is_some_and(|at| at > checkpoint)
    })
    .await;
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), namespace);
    let lease = leases
        .get(&seen.name)
        .await
        .map_err(Error::kube("reading the primary's Lease"))?;
    if !caught_up {
        // The old primary has every commit: it leads again.
        failover::hand_over_lease(ctx, namespace, lease, holder).await?;
        return failed(format!(
            "{to} did not receive the old primary's last WAL record ({}) within {CATCH_UP:?}; {holder} stays the primary",
            format_lsn(checkpoint)
        ));
    }
    if !failover::hand_over_lease(ctx, namespace, lease, to).await? {
        return failed(format!("the primary's Lease changed while {holder} stepped down"));
    }
    let promoted = wait_for(ctx, namespace, &name, to, PROMOTION, |s| s.primary == Some(true)).await;
    let downtime = started.elapsed();
    Ok(Switch::Done {
        message: if promoted {
            format!(
                "{holder} stepped down at {}, {to} received all of its WAL and was promoted; writes paused {:.1} s",
                format_lsn(checkpoint),
                downtime.as_secs_f64()
            )
        } else {
            format!("{to} holds the primary's Lease and is being promoted")
        },
        downtime: promoted.then_some(downtime),
    })
}

/// Polls `pod` every 100 ms until its state satisfies `done`, for at most `within`.
async fn wait_for(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    pod: &str,
    within: Duration,
    done: impl Fn(&InstanceState) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    let pods = [pod.to_owned()];
    while Instant::now() < deadline {
        let report = instances::poll(ctx, namespace, cluster, &pods).await;
        if let Some((_, Ok(state))) = report.first()
            && done(state)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
