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

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{Api, ResourceExt, api::DeleteParams};

use super::failover;
use crate::{
    api::postgres_cluster::v1::{PostgresCluster, PrimaryUpdate, PrimaryUpdateMethod},
    controller::{Context, Error},
};

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

/// What to do next to bring every pod to the current revision, the primary (`holder`) last. Pure.
pub fn plan(
    instances: &[Instance],
    holder: &str,
    method: PrimaryUpdateMethod,
    supervised: bool,
    reports: &[super::instances::Report],
) -> Next {
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
    // Otherwise one at a time, each once the others are back (when none is healthy there is
    // nothing to wait for: the cluster serves nothing, and the new template may fix it).
    let any_healthy = instances.iter().any(|i| i.healthy);
    if let Some(sick) = instances
        .iter()
        .find(|i| any_healthy && !i.healthy && (i.updated || i.name != holder))
    {
        return Next::Wait(format!(
            "waiting for {} to be ready and streaming before restarting the next instance",
            sick.name
        ));
    }
    if let Some(replica) = outdated
        .iter()
        .filter(|i| i.name != holder)
        .max_by_key(|i| ordinal(&i.name))
    {
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
            if any_healthy && instances.len() > 1 && !primary.is_some_and(|i| i.broken) =>
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
    let Some(sts) = Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&cluster.name_any())
        .await
        .map_err(Error::kube("reading the StatefulSet"))?
    else {
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
            let answers = report.is_some_and(|s| {
                s.pod_uid
                    .as_ref()
                    .is_none_or(|uid| Some(uid) == pod.metadata.uid.as_ref())
                    && s.running
                    && (s.primary == Some(true) || s.wal_receiver.as_deref() == Some("streaming"))
            });
            Instance {
                updated: pod.labels().get(REVISION_LABEL) == Some(&revision),
                healthy: answers
                    && pod.metadata.deletion_timestamp.is_none()
                    && crate::controller::postgres_backup::pod_ready(pod),
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
    ))
}

/// Restarts `pod`: deletes it, and the StatefulSet makes it again from the current template.
/// `Ok(false)` when the operator may not delete pods (an older release's permissions).
pub async fn restart(ctx: &Context, namespace: &str, pod: &str) -> Result<bool, Error> {
    match Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .delete(pod, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
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
            plan(&all_old, "db-0", switch, false, &reports),
            Next::Restart("db-2".into())
        );
        // Never two at once: the one restarting must be back and streaming first.
        let restarting = [
            instance("db-0", false, true),
            instance("db-1", false, true),
            instance("db-2", true, false),
        ];
        assert!(
            matches!(plan(&restarting, "db-0", switch, false, &reports), Next::Wait(m) if m.contains("db-2"))
        );
        // A replica of the old revision down for a moment (restarting, rejoining) is waited for;
        // one broken for a while goes first.
        let mut down = [
            instance("db-0", false, true),
            instance("db-1", false, false),
            instance("db-2", false, true),
        ];
        assert!(matches!(plan(&down, "db-0", switch, false, &reports), Next::Wait(m) if m.contains("db-1")));
        down[1].broken = true;
        assert_eq!(
            plan(&down, "db-0", switch, false, &reports),
            Next::Restart("db-1".into())
        );
        let replicas_done = [
            instance("db-0", false, true),
            instance("db-1", true, true),
            instance("db-2", true, true),
        ];
        assert_eq!(
            plan(&replicas_done, "db-0", switch, false, &reports),
            Next::SwitchOver("db-2".into())
        );
        assert!(
            matches!(plan(&replicas_done, "db-0", switch, true, &reports), Next::WaitForUser(m) if m.contains("spec.switchover.to"))
        );
        assert_eq!(
            plan(
                &replicas_done,
                "db-0",
                PrimaryUpdateMethod::Restart,
                false,
                &reports
            ),
            Next::Restart("db-0".into())
        );
        // After the switchover the old primary is a replica like the others.
        assert_eq!(
            plan(&replicas_done, "db-2", switch, false, &reports),
            Next::Restart("db-0".into())
        );
        let done = [
            instance("db-0", true, true),
            instance("db-1", true, true),
            instance("db-2", true, true),
        ];
        assert_eq!(plan(&done, "db-2", switch, false, &reports), Next::Done);
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
            matches!(plan(&replicas_done, "db-0", switch, false, &reports), Next::Wait(m) if m.contains("primary db-0 to answer")),
            "{:?}",
            plan(&replicas_done, "db-0", switch, false, &reports)
        );
        // No updated replica reported a WAL position: wait for one.
        replicas_done[0].healthy = true;
        assert!(matches!(
            plan(&replicas_done, "db-0", switch, false, &[]),
            Next::Wait(m) if m.contains("report its WAL position")
        ));
        // A primary unready for a long while is restarted: the new template may fix it.
        replicas_done[0].healthy = false;
        replicas_done[0].broken = true;
        assert_eq!(
            plan(&replicas_done, "db-0", switch, false, &reports),
            Next::Restart("db-0".into())
        );
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
            plan(&down, "db-0", switch, false, &[]),
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
                &[]
            ),
            Next::Restart("db-0".into())
        );
        let one = [instance("db-0", false, true)];
        assert_eq!(
            plan(&one, "db-0", PrimaryUpdateMethod::Restart, false, &[]),
            Next::Restart("db-0".into())
        );
        assert!(
            matches!(plan(&one, "db-0", PrimaryUpdateMethod::Restart, true, &[]), Next::WaitForUser(m) if m.contains("delete pod db-0"))
        );
    }
}
