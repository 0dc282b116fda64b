//! Rolling updates, primary last. The StatefulSet's update strategy is `OnDelete`: a change to
//! the pod template (an image, a parameter that needs a restart, resources) restarts nothing by
//! itself. The operator restarts the pods, one at a time, each once every instance is back and
//! streaming:
//!
//! 1. the replicas that run an old revision, highest ordinal first;
//! 2. then the primary: with `updateStrategy.primaryUpdateMethod: Switchover` (the default with
//!    two or more instances) the most advanced updated replica takes over by a switchover, and
//!    the old primary, now a replica, is restarted as in 1 (while the primary does not answer,
//!    or no updated replica has reported its WAL position, the rollout waits: it never falls back
//!    to restarting a primary in place that replicas could take over from, unless the primary has
//!    been unready for [`BROKEN_AFTER`] or nothing answers at all); with `Restart` the primary's
//!    pod is restarted in place. With `primaryUpdate: Supervised` the operator waits for the user there:
//!    a switchover through `spec.switchover.to` (or deleting the primary's pod) finishes it.
//!
//! A new revision that lowers one of the [`STANDBY_LIMITS`] below what the primary runs with
//! turns the order around: a replica restarted with less than its primary aborts recovery, so the
//! primary restarts first, in place (a replica is promoted only if it is not back within
//! [`failover::RESTART_GRACE`]), and each replica after it once it replayed the primary's new
//! values ([`below`]).

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::DeleteParams};

use super::failover;
use crate::{
    api::postgres_cluster::v1::{PostgresCluster, PrimaryUpdate, PrimaryUpdateMethod},
    controller::{Context, Error},
    facts::instance::{Limits, STANDBY_LIMITS},
};

/// The values of the [`STANDBY_LIMITS`] `cluster`'s parameters set, PostgreSQL's defaults for
/// those they do not; a value that does not parse as a number is left out. Pure.
pub fn wanted_limits(cluster: &PostgresCluster) -> Limits {
    let parameters = cluster.spec.postgres.parameters.as_ref();
    STANDBY_LIMITS
        .iter()
        .filter_map(|(name, default, _)| {
            let wanted = match parameters.and_then(|p| p.get(*name)) {
                Some(value) => value.trim().trim_matches('\'').parse().ok()?,
                None => *default,
            };
            Some(((*name).to_owned(), wanted))
        })
        .collect()
}

/// The limits `wanted` sets lower than `values`, as `name value -> wanted`. Pure.
pub fn below(wanted: &Limits, values: &Limits) -> Vec<String> {
    values
        .iter()
        .filter_map(|(name, value)| {
            let to = *wanted.get(name)?;
            (to < *value).then(|| format!("{name} {value} -> {to}"))
        })
        .collect()
}

/// The label the StatefulSet controller puts on each pod: the revision of the template it was
/// made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// What the rollout does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Every pod runs the current revision.
    Done,
    /// Wait: why.
    Wait(String),
    /// Restart this pod (delete it; the StatefulSet makes it again from the current template).
    Restart(String),
    /// Switch over to this updated replica, so the old primary can be restarted as a replica.
    SwitchOver(String),
    /// Wait for the user, who asked to update the primary themselves: what to do.
    WaitForUser(String),
}

/// One pod as the rollout sees it.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The pod's name.
    pub name: String,
    /// Whether it runs the StatefulSet's current revision.
    pub updated: bool,
    /// Whether it is Ready, not being deleted, and its instance manager reports PostgreSQL
    /// running (a replica also streaming).
    pub healthy: bool,
    /// Whether its instance manager reports PostgreSQL running, streaming or not (replicas do
    /// not stream for a moment while their primary restarts).
    pub answers: bool,
    /// Whether it has not been Ready for [`BROKEN_AFTER`]: not a restart or a rejoin under way,
    /// but a pod that the current template may be needed to fix.
    pub broken: bool,
}

/// How long a pod must have been unready to count as broken.
pub const BROKEN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// How long `pod` has not been Ready (zero when it is).
fn unready_for(pod: &Pod) -> std::time::Duration {
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status != "True"))
        .and_then(|c| c.last_transition_time.as_ref());
    since.map_or(std::time::Duration::ZERO, |t| {
        std::time::Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(t.0))
            .unwrap_or_default()
    })
}

fn ordinal(pod: &str) -> i64 {
    pod.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(-1)
}

/// What to do next to bring every pod to the current revision, the primary (`holder`) last, or
/// first when the new revision's `wanted` limits are lower than the primary runs with. Pure.
pub fn plan(
    instances: &[Instance],
    holder: &str,
    method: PrimaryUpdateMethod,
    supervised: bool,
    reports: &[super::instances::Report],
    wanted: &Limits,
) -> Next {
    let reported = |pod: &str| super::instances::report(reports, pod).and_then(|r| r.as_ref().ok());
    let lowered = reported(holder)
        .filter(|s| s.primary == Some(true))
        .map(|primary| below(wanted, &primary.standby_limits))
        .unwrap_or_default();
    let outdated: Vec<&Instance> = instances.iter().filter(|i| !i.updated).collect();
    if outdated.is_empty() {
        return Next::Done;
    }
    // A replica of an old revision that has been broken for a while serves nothing: restart it
    // at once (a new template may be what fixes it).
    if let Some(broken) = outdated
        .iter()
        .filter(|i| i.broken && i.name != holder)
        .max_by_key(|i| ordinal(&i.name))
    {
        return Next::Restart(broken.name.clone());
    }
    // Otherwise one at a time, each once the others are back. When nothing answers there is
    // nothing to wait for: the cluster serves nothing, and the new template may fix it. (Nothing
    // healthy is not enough: while the primary restarts, no replica streams.)
    let any_answers = instances.iter().any(|i| i.healthy || i.answers);
    if let Some(sick) = instances
        .iter()
        .find(|i| any_answers && !i.healthy && (i.updated || i.name != holder))
    {
        return Next::Wait(format!(
            "waiting for {} to be ready and streaming before restarting the next instance",
            sick.name
        ));
    }
    let primary_outdated = outdated.iter().any(|i| i.name == holder);
    if primary_outdated && !lowered.is_empty() {
        let why = format!(
            "the new revision lowers {} below what the primary {holder} runs with, and a replica cannot \
             run with less than its primary: the primary restarts first",
            lowered.join(", ")
        );
        return if supervised {
            Next::WaitForUser(format!("{why}; delete pod {holder} to restart it"))
        } else {
            Next::Restart(holder.to_owned())
        };
    }
    if let Some(replica) = outdated
        .iter()
        .filter(|i| i.name != holder)
        .max_by_key(|i| ordinal(&i.name))
    {
        let unreplayed = reported(&replica.name)
            .map(|s| below(wanted, &s.replayed_limits))
            .unwrap_or_default();
        if !unreplayed.is_empty() {
            return Next::Wait(format!(
                "waiting for {} to replay the primary's {}: a replica started with less than it last \
                 replayed aborts recovery",
                replica.name,
                unreplayed.join(", ")
            ));
        }
        return Next::Restart(replica.name.clone());
    }
    let primary = instances.iter().find(|i| i.name == holder);
    let primary_healthy = primary.is_some_and(|i| i.healthy);
    // Only the primary is left.
    let updated_replicas: Vec<super::instances::Report> = reports
        .iter()
        .filter(|(pod, _)| instances.iter().any(|i| &i.name == pod && i.updated))
        .cloned()
        .collect();
    let target = failover::candidate(&updated_replicas, holder)
        .map(|(to, _)| to)
        .filter(|_| primary_healthy);
    match (method, target) {
        (PrimaryUpdateMethod::Switchover, Some(to)) if supervised => Next::WaitForUser(format!(
            "every replica runs the new revision; the primary {holder} is updated when you switch over, \
             for example to {to}: set spec.switchover.to"
        )),
        (PrimaryUpdateMethod::Switchover, Some(to)) => Next::SwitchOver(to),
        // A primary that did not answer this once (a report lost under load, a restart of its
        // instance manager), or no updated replica ready to take over yet: look again. Restarting
        // it in place would cut every client off with replicas standing by. (A primary that is
        // gone for good is failed over from; one unready for `BROKEN_AFTER`, or a cluster where
        // nothing answers, is restarted below: the new template may be what fixes it.)
        (PrimaryUpdateMethod::Switchover, None)
            if any_answers && instances.len() > 1 && !primary.is_some_and(|i| i.broken) =>
        {
            Next::Wait(if primary_healthy {
                format!(
                    "waiting for an updated replica to report its WAL position before switching over from {holder}"
                )
            } else {
                format!(
                    "waiting for the primary {holder} to answer before switching over to an updated replica"
                )
            })
        }
        (_, _) if supervised => Next::WaitForUser(format!(
            "every replica runs the new revision; delete pod {holder} to restart the primary on it"
        )),
        (_, _) => Next::Restart(holder.to_owned()),
    }
}

/// The primary update method in effect: `Switchover` with two or more instances unless the spec
/// says otherwise, `Restart` with one.
pub fn method(cluster: &PostgresCluster) -> PrimaryUpdateMethod {
    let asked = cluster
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.primary_update_method);
    match asked {
        Some(m) => m,
        None if cluster.spec.instances.unwrap_or(1) >= 2 => PrimaryUpdateMethod::Switchover,
        None => PrimaryUpdateMethod::Restart,
    }
}

/// Whether the user updates the primary (`primaryUpdate: Supervised`).
pub fn supervised(cluster: &PostgresCluster) -> bool {
    cluster
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.primary_update)
        == Some(PrimaryUpdate::Supervised)
}

/// What [`plan`] says for the cluster now, from its StatefulSet, its pods and their reports.
pub async fn next(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    pods: &[Pod],
    holder: &str,
    reports: &[super::instances::Report],
) -> Result<Next, Error> {
    let Some(sts) = super::statefulset(ctx, namespace, &cluster.name_any()).await? else {
        return Ok(Next::Done);
    };
    let status = sts.status.as_ref();
    let Some(revision) = status.and_then(|s| s.update_revision.clone()) else {
        return Ok(Next::Done);
    };
    if status.and_then(|s| s.observed_generation) != sts.metadata.generation {
        return Ok(Next::Wait(
            "the StatefulSet controller has not seen the new template yet".into(),
        ));
    }
    let expected =
        super::replication::instance_names(&cluster.name_any(), cluster.spec.instances.unwrap_or(1));
    if let Some(missing) = expected
        .iter()
        .find(|e| !pods.iter().any(|p| &p.name_any() == *e))
    {
        return Ok(Next::Wait(format!("waiting for pod {missing} to be made again")));
    }
    let instances: Vec<Instance> = pods
        .iter()
        .map(|pod| {
            let name = pod.name_any();
            let report = super::instances::report(reports, &name).and_then(|r| r.as_ref().ok());
            // What this pod's containers say: a report from the containers of a pod object
            // deleted under the same name does not count.
            let running = report.filter(|s| {
                s.pod_uid
                    .as_ref()
                    .is_none_or(|uid| Some(uid) == pod.metadata.uid.as_ref())
                    && s.running
            });
            let serves = running
                .is_some_and(|s| s.primary == Some(true) || s.wal_receiver.as_deref() == Some("streaming"));
            Instance {
                updated: pod.labels().get(REVISION_LABEL) == Some(&revision),
                healthy: serves
                    && pod.metadata.deletion_timestamp.is_none()
                    && crate::controller::postgres_backup::pod_ready(pod),
                answers: running.is_some(),
                broken: unready_for(pod) >= BROKEN_AFTER,
                name,
            }
        })
        .collect();
    Ok(plan(
        &instances,
        holder,
        method(cluster),
        supervised(cluster),
        reports,
        &wanted_limits(cluster),
    ))
}

/// Restarts `pod`: deletes it, and the StatefulSet makes it again from the current template.
/// With `uid`, only the pod the decision was made on is deleted: one made again under the same
/// name since (which a watch may not have shown yet) is left alone, as already restarted.
/// `Ok(false)` when the operator may not delete pods (an older release's permissions).
pub async fn restart(ctx: &Context, namespace: &str, pod: &str, uid: Option<String>) -> Result<bool, Error> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .delete(pod, &params)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(false),
        Err(e) => Err(Error::Kube {
            step: "deleting a pod to update it",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::instance::InstanceState;

    fn instance(name: &str, updated: bool, healthy: bool) -> Instance {
        Instance {
            name: name.into(),
            updated,
            healthy,
            answers: healthy,
            broken: false,
        }
    }

    fn replica(pod: &str, lsn: &str) -> (String, Result<InstanceState, String>) {
        (
            pod.into(),
            Ok(InstanceState {
                pod: pod.into(),
                running: true,
                primary: Some(false),
                system_identifier: Some("7".into()),
                received_lsn: Some(lsn.into()),
                wal_receiver: Some("streaming".into()),
                ..InstanceState::default()
            }),
        )
    }

    #[test]
    fn replicas_first_highest_ordinal_first_then_a_switchover_then_the_old_primary() {
        let reports = vec![replica("db-1", "0/5000000"), replica("db-2", "0/5000100")];
        let switch = PrimaryUpdateMethod::Switchover;
        let all_old = [
            instance("db-0", false, true),
            instance("db-1", false, true),
            instance("db-2", false, true),
        ];
        assert_eq!(
            plan(&all_old, "db-0", switch, false, &reports, &Limits::new()),
            Next::Restart("db-2".into())
        );
        // Never two at once: the one restarting must be back and streaming first.
        let restarting = [
            instance("db-0", false, true),
            instance("db-1", false, true),
            instance("db-2", true, false),
        ];
        assert!(
            matches!(plan(&restarting, "db-0", switch, false, &reports, &Limits::new()), Next::Wait(m) if m.contains("db-2"))
        );
        // A replica of the old revision down for a moment (restarting, rejoining) is waited for;
        // one broken for a while goes first.
        let mut down = [
            instance("db-0", false, true),
            instance("db-1", false, false),
            instance("db-2", false, true),
        ];
        assert!(
            matches!(plan(&down, "db-0", switch, false, &reports, &Limits::new()), Next::Wait(m) if m.contains("db-1"))
        );
        down[1].broken = true;
        assert_eq!(
            plan(&down, "db-0", switch, false, &reports, &Limits::new()),
            Next::Restart("db-1".into())
        );
        let replicas_done = [
            instance("db-0", false, true),
            instance("db-1", true, true),
            instance("db-2", true, true),
        ];
        assert_eq!(
            plan(&replicas_done, "db-0", switch, false, &reports, &Limits::new()),
            Next::SwitchOver("db-2".into())
        );
        assert!(
            matches!(plan(&replicas_done, "db-0", switch, true, &reports, &Limits::new()), Next::WaitForUser(m) if m.contains("spec.switchover.to"))
        );
        assert_eq!(
            plan(
                &replicas_done,
                "db-0",
                PrimaryUpdateMethod::Restart,
                false,
                &reports,
                &Limits::new()
            ),
            Next::Restart("db-0".into())
        );
        // After the switchover the old primary is a replica like the others.
        assert_eq!(
            plan(&replicas_done, "db-2", switch, false, &reports, &Limits::new()),
            Next::Restart("db-0".into())
        );
        let done = [
            instance("db-0", true, true),
            instance("db-1", true, true),
            instance("db-2", true, true),
        ];
        assert_eq!(
            plan(&done, "db-2", switch, false, &reports, &Limits::new()),
            Next::Done
        );
    }

    #[test]
    fn a_primary_that_misses_one_report_is_waited_for_never_restarted_in_place() {
        let reports = vec![replica("db-1", "0/5000000"), replica("db-2", "0/5000100")];
        let switch = PrimaryUpdateMethod::Switchover;
        let mut replicas_done = [
            instance("db-0", false, false),
            instance("db-1", true, true),
            instance("db-2", true, true),
        ];
        assert!(
            matches!(plan(&replicas_done, "db-0", switch, false, &reports, &Limits::new()), Next::Wait(m) if m.contains("primary db-0 to answer")),
            "{:?}",
            plan(&replicas_done, "db-0", switch, false, &reports, &Limits::new())
        );
        // No updated replica reported a WAL position: wait for one.
        replicas_done[0].healthy = true;
        assert!(matches!(
            plan(&replicas_done, "db-0", switch, false, &[], &Limits::new()),
            Next::Wait(m) if m.contains("report its WAL position")
        ));
        // A primary unready for a long while is restarted: the new template may fix it.
        replicas_done[0].healthy = false;
        replicas_done[0].broken = true;
        assert_eq!(
            plan(&replicas_done, "db-0", switch, false, &reports, &Limits::new()),
            Next::Restart("db-0".into())
        );
    }

    fn limits(values: &[(&str, i64)]) -> Limits {
        values.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    #[test]
    fn the_wanted_limits_are_the_parameters_or_postgresqls_defaults() {
        let mut cluster = PostgresCluster::new(
            "db",
            serde_json::from_value(serde_json::json!({
                "postgres": {"version": 18, "parameters": {"max_connections": "150", "max_wal_senders": "'20'", "work_mem": "8MB"}},
                "instances": 3,
                "storage": {"data": {"size": "1Gi"}},
            }))
            .unwrap(),
        );
        let wanted = wanted_limits(&cluster);
        assert_eq!(
            wanted,
            limits(&[
                ("max_connections", 150),
                ("max_locks_per_transaction", 64),
                ("max_prepared_transactions", 0),
                ("max_wal_senders", 20),
                ("max_worker_processes", 8),
            ])
        );
        let running = limits(&[
            ("max_connections", 200),
            ("max_wal_senders", 20),
            ("max_worker_processes", 16),
        ]);
        assert_eq!(
            below(&wanted, &running),
            ["max_connections 200 -> 150", "max_worker_processes 16 -> 8"]
        );
        cluster.spec.postgres.parameters = Some(
            [
                ("max_connections", "300"),
                ("max_wal_senders", "20"),
                ("max_worker_processes", "16"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        );
        assert!(
            below(&wanted_limits(&cluster), &running).is_empty(),
            "raised or kept"
        );
        // An instance manager that reports no limits (an older release) lowers nothing.
        assert!(below(&wanted, &Limits::new()).is_empty());
    }

    #[test]
    fn a_lowered_standby_limit_restarts_the_primary_first_then_each_replica_once_it_replayed_it() {
        let wanted = limits(&[("max_connections", 150)]);
        let primary = |running: i64| {
            (
                "db-0".to_owned(),
                Ok(InstanceState {
                    pod: "db-0".into(),
                    running: true,
                    primary: Some(true),
                    standby_limits: limits(&[("max_connections", running)]),
                    ..InstanceState::default()
                }),
            )
        };
        let replayed = |pod: &str, lsn: &str, value: i64| {
            let (name, mut report) = replica(pod, lsn);
            if let Ok(state) = report.as_mut() {
                state.replayed_limits = limits(&[("max_connections", value)]);
            }
            (name, report)
        };
        let switch = PrimaryUpdateMethod::Switchover;
        let all_old = [
            instance("db-0", false, true),
            instance("db-1", false, true),
            instance("db-2", false, true),
        ];
        let before = vec![
            primary(200),
            replayed("db-1", "0/5000000", 200),
            replayed("db-2", "0/5000100", 200),
        ];
        assert_eq!(
            plan(&all_old, "db-0", switch, false, &before, &wanted),
            Next::Restart("db-0".into())
        );
        assert!(matches!(
            plan(&all_old, "db-0", switch, true, &before, &wanted),
            Next::WaitForUser(m) if m.contains("max_connections 200 -> 150") && m.contains("delete pod db-0")
        ));
        // The primary runs with 150; db-2 has not replayed it yet: it waits.
        let primary_done = [
            instance("db-0", true, true),
            instance("db-1", false, true),
            instance("db-2", false, true),
        ];
        let restarted = vec![
            primary(150),
            replayed("db-1", "0/5000000", 150),
            replayed("db-2", "0/5000100", 200),
        ];
        assert!(matches!(
            plan(&primary_done, "db-0", switch, false, &restarted, &wanted),
            Next::Wait(m) if m.contains("db-2 to replay the primary's max_connections 200 -> 150")
        ));
        let replayed_all = vec![
            primary(150),
            replayed("db-1", "0/5000000", 150),
            replayed("db-2", "0/5000100", 150),
        ];
        assert_eq!(
            plan(&primary_done, "db-0", switch, false, &replayed_all, &wanted),
            Next::Restart("db-2".into())
        );
    }

    #[test]
    fn replicas_that_stop_streaming_while_the_primary_restarts_are_waited_for() {
        // The primary db-1 was just restarted (lowering a limit): db-0 and db-2 run but do not
        // stream, and nothing is healthy. The next restart waits; db-2 restarted now would start
        // with less than it replayed.
        let mut restarting = [
            instance("db-0", false, false),
            instance("db-1", true, false),
            instance("db-2", false, false),
        ];
        restarting[0].answers = true;
        restarting[2].answers = true;
        assert!(matches!(
            plan(&restarting, "db-1", PrimaryUpdateMethod::Switchover, false, &[], &Limits::new()),
            Next::Wait(m) if m.contains("db-0 to be ready")
        ));
    }

    #[test]
    fn a_cluster_where_nothing_answers_is_restarted_whole() {
        let switch = PrimaryUpdateMethod::Switchover;
        let down = [
            instance("db-0", false, false),
            instance("db-1", true, false),
            instance("db-2", true, false),
        ];
        assert_eq!(
            plan(&down, "db-0", switch, false, &[], &Limits::new()),
            Next::Restart("db-0".into())
        );
    }

    #[test]
    fn a_single_instance_restarts_in_place() {
        // Also when it does not answer: the new template may be what fixes it.
        assert_eq!(
            plan(
                &[instance("db-0", false, false)],
                "db-0",
                PrimaryUpdateMethod::Switchover,
                false,
                &[],
                &Limits::new()
            ),
            Next::Restart("db-0".into())
        );
        let one = [instance("db-0", false, true)];
        assert_eq!(
            plan(
                &one,
                "db-0",
                PrimaryUpdateMethod::Restart,
                false,
                &[],
                &Limits::new()
            ),
            Next::Restart("db-0".into())
        );
        assert!(
            matches!(plan(&one, "db-0", PrimaryUpdateMethod::Restart, true, &[], &Limits::new()), Next::WaitForUser(m) if m.contains("delete pod db-0"))
        );
    }
}
