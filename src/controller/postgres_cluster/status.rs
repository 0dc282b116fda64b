//! The cluster's status, computed from what was observed: pure, so it is unit-tested with plain
//! values.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::api::{
    common::ConditionStatus,
    postgres_cluster::v1::{
        BackupStatus, InstanceStatus, PostgresCluster, PostgresClusterStatus, Promotion, SwitchoverStatus,
    },
};
use crate::controller::Problem;
use crate::facts::instance::{InstanceState, format_lsn};

/// What reconcile observed, beyond the cluster itself.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The StatefulSet as it is now (None before it exists).
    pub statefulset: Option<StatefulSet>,
    /// The pod that holds the primary role, if it exists.
    pub primary: Option<String>,
    /// Why reconcile could not finish, if it could not.
    pub problem: Option<Problem>,
    /// The binding Secret, once it exists.
    pub binding: Option<String>,
    /// Archiving and backups, when the cluster has `spec.backup`.
    pub backups: Option<super::backups::ArchiveObservation>,
    /// What each pod's instance manager reported.
    pub instances: Vec<Reported>,
    /// The pod the primary's Lease names; `None` when the cluster runs without one.
    pub target_primary: Option<String>,
    /// A replica promoted in this reconcile.
    pub promotion: Option<Promotion>,
    /// How the switchover asked for goes; `None` when none is asked for.
    pub switchover: Option<SwitchoverStatus>,
    /// What a rolling update does or waits for: the `Progressing` reason and message.
    pub rollout: Option<(&'static str, String)>,
    /// Whether the apiserver refused a child of this spec, so that the spec is not all applied:
    /// `observedGeneration` stays where it was, and `Progressing` says it is blocked.
    pub refused: bool,
}

/// What one pod's instance manager reported, or why it could not be asked.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The pod's name.
    pub pod: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// The report.
    pub state: Result<InstanceState, String>,
    /// The image its instance manager was copied from, and whether it is the one the operator
    /// deploys; `None` when the pod does not say.
    pub instance_manager: Option<(String, bool)>,
}

/// `status.instanceStatus`: each instance's role and WAL positions, each replica's lag behind
/// the primary's write position, and when each last fenced itself (kept from `previous` while
/// an instance does not answer). `None` when no pod exists.
pub fn instance_status(
    reported: &[Reported],
    previous: Option<&[InstanceStatus]>,
) -> Option<Vec<InstanceStatus>> {
    let primary_lsn = reported
        .iter()
        .filter_map(|r| r.state.as_ref().ok())
        .find(|s| s.primary == Some(true))
        .and_then(InstanceState::wal_position);
    let list: Vec<InstanceStatus> = reported
        .iter()
        .map(|r| {
            // A fence or rewind stays shown while the instance does not answer.
            let (answered, shown) = (r.state.as_ref().ok(), before(previous, &r.pod));
            let mut status = InstanceStatus {
                name: r.pod.clone(),
                role: "unknown".to_owned(),
                ready: r.ready,
                fenced_at: answered
                    .and_then(|s| s.fenced_at.clone())
                    .or_else(|| shown.and_then(|i| i.fenced_at.clone())),
                rewound_at: answered
                    .and_then(|s| s.rewound_at.clone())
                    .or_else(|| shown.and_then(|i| i.rewound_at.clone())),
                instance_manager: r.instance_manager.as_ref().map(|(image, _)| image.clone()),
                instance_manager_outdated: r.instance_manager.as_ref().map(|(_, current)| !current),
                ..InstanceStatus::default()
            };
            match &r.state {
                Err(why) => status.message = Some(why.clone()),
                Ok(state) => match state.primary {
                    None => {
                        status.message = Some(
                            state
                                .error
                                .clone()
                                .unwrap_or_else(|| "postgres is not running".to_owned()),
                        );
                    }
                    Some(primary) => {
                        status.role = if primary { "primary" } else { "replica" }.to_owned();
                        status.timeline = state.timeline.map(i64::from);
                        status.lsn = state.wal_position().map(format_lsn);
                        status.replayed_lsn = state.replayed_lsn.clone();
                        if !primary && let (Some(at), Some(own)) = (primary_lsn, state.wal_position()) {
                            status.lag_bytes =
                                Some(i64::try_from(at.saturating_sub(own)).unwrap_or(i64::MAX));
                        }
                    }
                },
            }
            status
        })
        .collect();
    (!list.is_empty()).then_some(list)
}

/// What `previous` (a cluster's `status.instanceStatus`) says of `pod`.
pub fn before<'a>(previous: Option<&'a [InstanceStatus]>, pod: &str) -> Option<&'a InstanceStatus> {
    previous?.iter().find(|i| i.name == pod)
}

/// The `ContinuousArchiving` condition and `status.backup` of a cluster that archives.
fn archiving(
    observed: &super::backups::ArchiveObservation,
) -> ((ConditionStatus, String, String), BackupStatus) {
    let mut status = BackupStatus {
        first_recoverability_point: observed.completed.first().map(|(_, at)| at.clone()),
        last_successful_backup: observed.completed.last().map(|(name, _)| name.clone()),
        last_successful_backup_time: observed.completed.last().map(|(_, at)| at.clone()),
        ..BackupStatus::default()
    };
    let condition = match &observed.archive {
        Err(why) => (
            ConditionStatus::Unknown,
            "PrimaryUnreachable".to_owned(),
            format!("cannot ask the primary how archiving goes: {why}"),
        ),
        Ok(state) => {
            if let Some((wal, at)) = &state.last_archived {
                status.last_archived_wal = Some(wal.clone());
                status.last_archived_wal_time = Some(at.clone());
            }
            if let Some((wal, at, _, _)) = &state.last_failed
                && !wal.is_empty()
            {
                status.last_failed_wal = Some(wal.clone());
                status.last_failed_wal_time = Some(at.clone());
            }
            let failing = match (&state.last_failed, &state.last_archived) {
                (Some((_, failed_at, reason, message)), archived) => {
                    let newer = archived
                        .as_ref()
                        .is_none_or(|(_, archived_at)| failed_at > archived_at);
                    newer.then(|| (reason.clone(), message.clone()))
                }
                (None, _) => None,
            };
            match (failing, &state.last_archived) {
                (Some((reason, message)), _) => (
                    ConditionStatus::False,
                    reason,
                    format!("spec.backup.target: {message}; PostgreSQL keeps every WAL file until it is archived"),
                ),
                (None, Some((wal, at))) => (
                    ConditionStatus::True,
                    "Archiving".to_owned(),
                    format!("last archived {wal} at {at}"),
                ),
                (None, None) => (
                    ConditionStatus::Unknown,
                    "NoWalArchivedYet".to_owned(),
                    "the store answers; the first WAL file is archived when a segment fills or archive_timeout passes after a write".to_owned(),
                ),
            }
        }
    };
    (condition, status)
}

/// The status `cluster` should have; `now` is an RFC 3339 time for conditions that change.
pub fn desired_status(cluster: &PostgresCluster, observed: &Observed, now: &str) -> PostgresClusterStatus {
    let generation = cluster.metadata.generation;
    let desired = cluster.spec.instances.unwrap_or(1);
    let sts_status = observed.statefulset.as_ref().and_then(|s| s.status.clone());
    let sts_current = observed.statefulset.as_ref().is_some_and(|s| {
        s.metadata.generation.is_some()
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    });
    let ready = sts_status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let replicas = sts_status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let updated = sts_status.as_ref().and_then(|s| s.updated_replicas).unwrap_or(0);
    let paused = cluster.spec.paused == Some(true);

    let all_ready = sts_current && ready == desired && replicas == desired && updated == desired;
    let (ready_status, ready_reason, ready_message) = if all_ready {
        (
            ConditionStatus::True,
            "AllInstancesReady",
            format!("{ready} of {desired} instances ready"),
        )
    } else if observed.statefulset.is_none() {
        (
            ConditionStatus::False,
            "Creating",
            "the workload is being created".to_owned(),
        )
    } else {
        (
            ConditionStatus::False,
            "InstancesNotReady",
            format!("{ready} of {desired} instances ready"),
        )
    };
    let (progressing_status, progressing_reason, progressing_message) = if paused {
        (
            ConditionStatus::False,
            "Paused",
            "spec.paused is true: Tusk leaves the children as they are".to_owned(),
        )
    } else if observed.refused {
        (
            ConditionStatus::False,
            "ChildRefused",
            "the spec is not all applied: the apiserver refused a child (see Degraded)".to_owned(),
        )
    } else if let Some((reason, message)) = &observed.rollout {
        (ConditionStatus::True, *reason, message.clone())
    } else if all_ready {
        (
            ConditionStatus::False,
            "Stable",
            "the cluster matches its spec".to_owned(),
        )
    } else if replicas != desired {
        (
            ConditionStatus::True,
            "Scaling",
            format!("scaling from {replicas} to {desired} instances"),
        )
    } else if updated != desired {
        (
            ConditionStatus::True,
            "RollingUpdate",
            format!("{updated} of {desired} instances updated"),
        )
    } else {
        (
            ConditionStatus::True,
            "Starting",
            format!("{ready} of {desired} instances ready"),
        )
    };
    let (degraded_status, degraded_reason, degraded_message) = match &observed.problem {
        Some(p) => (ConditionStatus::True, p.reason.as_ref(), p.message.clone()),
        None => (
            ConditionStatus::False,
            "AsExpected",
            "no problem found".to_owned(),
        ),
    };
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = |type_: &str, status: ConditionStatus, reason: &str, message: String| {
        crate::controller::condition::condition(&previous, generation, now, type_, status, reason, message)
    };
    let previous_status = cluster.status.clone().unwrap_or_default();
    let mut conditions = vec![
        condition("Ready", ready_status, ready_reason, ready_message),
        condition(
            "Progressing",
            progressing_status,
            progressing_reason,
            progressing_message,
        ),
        condition("Degraded", degraded_status, degraded_reason, degraded_message),
    ];
    if let Some(target) = &observed.target_primary {
        let (status, reason, message) = primary_stable(observed, target);
        conditions.push(condition("PrimaryStable", status, reason, message));
    }
    let backup = observed.backups.as_ref().map(|b| {
        let ((status, reason, message), backup) = archiving(b);
        conditions.push(condition("ContinuousArchiving", status, &reason, message));
        backup
    });
    PostgresClusterStatus {
        conditions: Some(conditions),
        observed_generation: if observed.refused {
            previous_status.observed_generation
        } else {
            generation
        },
        instances: Some(replicas),
        ready_instances: Some(ready),
        current_primary: observed.primary.clone(),
        postgres_version: previous_status.postgres_version,
        binding: observed
            .binding
            .clone()
            .map(|name| crate::api::common::Binding { name })
            .or(previous_status.binding),
        backup,
        instance_status: instance_status(&observed.instances, previous_status.instance_status.as_deref())
            .or(previous_status.instance_status),
        target_primary: observed.target_primary.clone(),
        timeline: observed
            .instances
            .iter()
            .filter_map(|r| r.state.as_ref().ok())
            .find(|s| s.primary == Some(true) && Some(&s.pod) == observed.primary.as_ref())
            .and_then(|s| s.timeline.map(i64::from))
            .or(previous_status.timeline),
        last_promotion: observed.promotion.clone().or(previous_status.last_promotion),
        switchover: observed.switchover.clone(),
    }
}

/// The `PrimaryStable` condition: true while the pod the Lease names accepts writes and is the
/// one labelled primary; false, with why, during a failover or switchover.
fn primary_stable(observed: &Observed, target: &str) -> (ConditionStatus, &'static str, String) {
    let accepts_writes = observed
        .instances
        .iter()
        .any(|r| r.pod == target && r.state.as_ref().is_ok_and(|s| s.primary == Some(true)));
    let switching = observed
        .switchover
        .as_ref()
        .filter(|s| s.phase == super::switchover::RUNNING || s.phase == super::switchover::PENDING);
    if let Some(s) = switching {
        return (
            ConditionStatus::False,
            "SwitchingOver",
            format!(
                "switching over to {}: {}",
                s.to,
                s.message.as_deref().unwrap_or_default()
            ),
        );
    }
    if let Some(p) = observed.problem.as_ref().filter(|p| {
        ["PrimaryUnresponsive", "NoFailoverCandidate", "UnexpectedPrimary"].contains(&p.reason.as_ref())
    }) {
        return (ConditionStatus::False, "FailingOver", p.message.clone());
    }
    if accepts_writes && observed.primary.as_deref() == Some(target) {
        (
            ConditionStatus::True,
            "PrimaryHoldsLease",
            format!("{target} holds the primary's Lease and accepts writes"),
        )
    } else {
        (
            ConditionStatus::False,
            "Promoting",
            format!("{target} holds the primary's Lease and is becoming the primary"),
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use serde_json::json;

    use super::*;

    fn cluster(instances: i32, status: Option<serde_json::Value>) -> PostgresCluster {
        let mut c: PostgresCluster = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "apps", "uid": "u", "generation": 4},
            "spec": {"postgres": {"version": 17}, "instances": instances, "storage": {"data": {"size": "1Gi"}}},
        }))
        .unwrap();
        c.status = status.map(|s| serde_json::from_value(s).unwrap());
        c
    }

    fn sts(replicas: i32, ready: i32, updated: i32) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "generation": 2},
            "status": {"observedGeneration": 2, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated},
        }))
        .unwrap()
    }

    #[test]
    fn each_instance_shows_its_role_positions_and_lag_behind_the_primary() {
        let reported = vec![
            Reported {
                instance_manager: None,
                pod: "db-0".into(),
                ready: false,
                state: Err("db-0: connection refused".into()),
            },
            Reported {
                instance_manager: None,
                pod: "db-1".into(),
                ready: true,
                state: Ok(InstanceState {
                    pod: "db-1".into(),
                    running: true,
                    primary: Some(true),
                    timeline: Some(2),
                    current_lsn: Some("0/5000100".into()),
                    ..InstanceState::default()
                }),
            },
            Reported {
                instance_manager: None,
                pod: "db-2".into(),
                ready: true,
                state: Ok(InstanceState {
                    pod: "db-2".into(),
                    running: true,
                    primary: Some(false),
                    timeline: Some(2),
                    received_lsn: Some("0/5000000".into()),
                    replayed_lsn: Some("0/4FFFF00".into()),
                    ..InstanceState::default()
                }),
            },
        ];
        let list = instance_status(&reported, None).unwrap();
        assert_eq!(
            (list[0].role.as_str(), list[0].message.as_deref()),
            ("unknown", Some("db-0: connection refused"))
        );
        assert_eq!(
            (
                list[1].role.as_str(),
                list[1].timeline,
                list[1].lsn.as_deref(),
                list[1].lag_bytes
            ),
            ("primary", Some(2), Some("0/5000100"), None)
        );
        assert_eq!(
            (list[2].role.as_str(), list[2].lsn.as_deref(), list[2].lag_bytes),
            ("replica", Some("0/5000000"), Some(0x100))
        );
        assert_eq!(list[2].replayed_lsn.as_deref(), Some("0/4FFFF00"));
        assert_eq!(instance_status(&[], None), None);
    }

    #[test]
    fn a_fence_is_shown_and_kept_while_the_instance_does_not_answer() {
        let fenced = |state: Result<InstanceState, String>| Reported {
            instance_manager: None,
            pod: "db-0".into(),
            ready: false,
            state,
        };
        let reported = [fenced(Ok(InstanceState {
            pod: "db-0".into(),
            running: true,
            primary: Some(false),
            fenced_at: Some("2026-12-01T10:00:00Z".into()),
            ..InstanceState::default()
        }))];
        let first = instance_status(&reported, None).unwrap();
        assert_eq!(first[0].fenced_at.as_deref(), Some("2026-12-01T10:00:00Z"));
        let away = [fenced(Err("db-0: connection refused".into()))];
        let kept = instance_status(&away, Some(&first)).unwrap();
        assert_eq!(kept[0].fenced_at.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(instance_status(&away, None).unwrap()[0].fenced_at, None);
    }

    fn get<'a>(s: &'a PostgresClusterStatus, t: &str) -> &'a crate::api::common::Condition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn ready_when_every_instance_is_ready_and_updated() {
        let observed = Observed {
            statefulset: Some(sts(3, 3, 3)),
            primary: Some("db-0".into()),
            problem: None,
            binding: Some("db-superuser".into()),
            backups: None,
            instances: Vec::new(),
            ..Observed::default()
        };
        let s = desired_status(&cluster(3, None), &observed, "2026-11-22T00:00:00Z");
        assert_eq!(get(&s, "Ready").status, ConditionStatus::True);
        assert_eq!(get(&s, "Progressing").reason, "Stable");
        assert_eq!(get(&s, "Degraded").status, ConditionStatus::False);
        assert_eq!(
            (s.instances, s.ready_instances, s.observed_generation),
            (Some(3), Some(3), Some(4))
        );
        assert_eq!(s.current_primary.as_deref(), Some("db-0"));
        assert_eq!(s.binding.map(|b| b.name).as_deref(), Some("db-superuser"));
    }

    /// A spec the apiserver refused part of is not observed: its generation is not claimed,
    /// and `Progressing` says why it does not go on, beside the refusal in `Degraded`.
    #[test]
    fn a_refused_spec_is_not_claimed_as_observed() {
        let mut before = cluster(3, None);
        before.status = Some(PostgresClusterStatus {
            observed_generation: Some(3),
            ..PostgresClusterStatus::default()
        });
        let observed = Observed {
            statefulset: Some(sts(3, 3, 3)),
            problem: Some(Problem::new(
                "ChildRefused",
                "the apiserver refused the StatefulSet",
            )),
            refused: true,
            ..Observed::default()
        };
        let s = desired_status(&before, &observed, "2026-11-22T00:00:00Z");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(get(&s, "Progressing").reason, "ChildRefused");
        assert_eq!(get(&s, "Degraded").reason, "ChildRefused");
        let applied = Observed {
            refused: false,
            problem: None,
            ..observed
        };
        let s = desired_status(&before, &applied, "2026-11-22T00:00:00Z");
        assert_eq!(
            (s.observed_generation, get(&s, "Progressing").reason.as_str()),
            (Some(4), "Stable")
        );
    }

    #[test]
    fn the_primary_is_stable_only_while_the_lease_holder_takes_writes() {
        let primary = |pod: &str, primary: bool| Reported {
            instance_manager: None,
            pod: pod.into(),
            ready: true,
            state: Ok(InstanceState {
                pod: pod.into(),
                running: true,
                primary: Some(primary),
                timeline: Some(3),
                ..InstanceState::default()
            }),
        };
        let mut observed = Observed {
            statefulset: Some(sts(2, 2, 2)),
            primary: Some("db-1".into()),
            instances: vec![primary("db-0", false), primary("db-1", true)],
            target_primary: Some("db-1".into()),
            ..Observed::default()
        };
        let s = desired_status(&cluster(2, None), &observed, "2026-12-01T00:00:00Z");
        assert_eq!(get(&s, "PrimaryStable").status, ConditionStatus::True);
        assert_eq!((s.timeline, s.target_primary.as_deref()), (Some(3), Some("db-1")));
        // Named, not promoted yet.
        observed.instances = vec![primary("db-0", false), primary("db-1", false)];
        let s = desired_status(&cluster(2, None), &observed, "2026-12-01T00:00:00Z");
        assert_eq!(get(&s, "PrimaryStable").reason, "Promoting");
        observed.switchover = Some(SwitchoverStatus {
            to: "db-1".into(),
            phase: "Running".into(),
            message: Some("promoting".into()),
        });
        let s = desired_status(&cluster(2, None), &observed, "2026-12-01T00:00:00Z");
        assert_eq!(get(&s, "PrimaryStable").reason, "SwitchingOver");
        // Without a Lease there is no such condition.
        observed.target_primary = None;
        let s = desired_status(&cluster(2, None), &observed, "2026-12-01T00:00:00Z");
        assert!(s.conditions.unwrap().iter().all(|c| c.type_ != "PrimaryStable"));
    }

    #[test]
    fn scaling_and_rolling_are_progressing() {
        let s = desired_status(
            &cluster(3, None),
            &Observed {
                statefulset: Some(sts(1, 1, 1)),
                ..Default::default()
            },
            "t",
        );
        assert_eq!(get(&s, "Ready").reason, "InstancesNotReady");
        assert_eq!(get(&s, "Progressing").reason, "Scaling");
        let s = desired_status(
            &cluster(3, None),
            &Observed {
                statefulset: Some(sts(3, 3, 1)),
                ..Default::default()
            },
            "t",
        );
        assert_eq!(get(&s, "Progressing").reason, "RollingUpdate");
        assert_eq!(get(&s, "Progressing").message, "1 of 3 instances updated");
    }

    #[test]
    fn a_transition_time_moves_only_when_the_status_changes() {
        let before = desired_status(
            &cluster(1, None),
            &Observed {
                statefulset: Some(sts(1, 1, 1)),
                ..Default::default()
            },
            "t1",
        );
        let again = cluster(1, Some(serde_json::to_value(&before).unwrap()));
        let after = desired_status(
            &again,
            &Observed {
                statefulset: Some(sts(1, 1, 1)),
                ..Default::default()
            },
            "t2",
        );
        assert_eq!(get(&after, "Ready").last_transition_time, "t1");
        let down = desired_status(
            &again,
            &Observed {
                statefulset: Some(sts(1, 0, 1)),
                ..Default::default()
            },
            "t3",
        );
        assert_eq!(get(&down, "Ready").last_transition_time, "t3");
    }

    #[test]
    fn a_problem_is_degraded_with_its_reason() {
        let observed = Observed {
            problem: Some(Problem {
                reason: "InvalidSpec".into(),
                message: "no".into(),
            }),
            ..Default::default()
        };
        let s = desired_status(&cluster(1, None), &observed, "t");
        assert_eq!(get(&s, "Degraded").status, ConditionStatus::True);
        assert_eq!(get(&s, "Degraded").reason, "InvalidSpec");
        assert_eq!(get(&s, "Ready").reason, "Creating");
    }
}
