//! The cluster's status, computed from what was observed: pure, so it is unit-tested with plain
//! values.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::api::{
    common::ConditionStatus,
    postgres_cluster::v1::{PostgresCluster, PostgresClusterStatus},
};
use crate::controller::Problem;

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
    PostgresClusterStatus {
        conditions: Some(vec![
            condition("Ready", ready_status, ready_reason, ready_message),
            condition(
                "Progressing",
                progressing_status,
                progressing_reason,
                progressing_message,
            ),
            condition("Degraded", degraded_status, degraded_reason, degraded_message),
        ]),
        observed_generation: generation,
        instances: Some(replicas),
        ready_instances: Some(ready),
        current_primary: observed.primary.clone(),
        postgres_version: previous_status.postgres_version,
        binding: observed
            .binding
            .clone()
            .map(|name| crate::api::common::Binding { name })
            .or(previous_status.binding),
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
