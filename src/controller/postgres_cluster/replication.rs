//! Replication the operator keeps on every instance ([`REPLICATION`]): each replica's slot on the
//! primary, and `synchronous_standby_names` from `spec.replication.synchronous`.
//!
//! With `dataDurability: Required` the names list every replica, so a commit waits for `number`
//! of them even when fewer are there; a failover then promotes only when enough replicas answered
//! that one of them must have every acknowledged commit ([`reports_needed`]). With `Preferred`
//! only the replicas that stream count, and none streaming means asynchronous commits.

use std::time::Duration;

use crate::{
    api::postgres_cluster::v1::{DataDurability, PostgresCluster, Synchronous, SynchronousMethod},
    controller::Context,
    facts::instance::{REPLICATION, ReplicationRequest},
};

/// How long one instance may take to apply a request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The names of the cluster's instances, `<cluster>-0` to `<cluster>-<instances - 1>`.
pub fn instance_names(cluster: &str, instances: i32) -> Vec<String> {
    (0..instances.max(1)).map(|i| format!("{cluster}-{i}")).collect()
}

/// `synchronous_standby_names` for the replicas of `primary` among `instances` (in ordinal
/// order), `streaming` being those that stream now; `None` without `spec.replication.synchronous`
/// (the user's parameters decide).
pub fn standby_names(
    synchronous: Option<&Synchronous>,
    instances: &[String],
    primary: &str,
    streaming: &[String],
) -> Option<String> {
    let sync = synchronous?;
    let required = sync.data_durability.unwrap_or(DataDurability::Required) == DataDurability::Required;
    let replicas: Vec<&String> = instances
        .iter()
        .filter(|p| p.as_str() != primary)
        .filter(|p| required || streaming.contains(p))
        .collect();
    let number = usize::try_from(sync.number).unwrap_or(1).min(replicas.len());
    if number == 0 {
        return Some(String::new());
    }
    let method = match sync.method {
        SynchronousMethod::Any => "ANY",
        SynchronousMethod::First => "FIRST",
    };
    let names: Vec<String> = replicas.iter().map(|p| format!("\"{p}\"")).collect();
    Some(format!("{method} {number} ({})", names.join(", ")))
}

/// How many replicas must answer before one may be promoted: with `Required` synchronous
/// replication to `number` of `replicas`, every acknowledged commit is on `number` of them, so
/// any `replicas - number + 1` include one that has it. Otherwise one.
pub fn reports_needed(cluster: &PostgresCluster) -> usize {
    let replicas = usize::try_from(cluster.spec.instances.unwrap_or(1) - 1).unwrap_or(0);
    match cluster
        .spec
        .replication
        .as_ref()
        .and_then(|r| r.synchronous.as_ref())
    {
        Some(sync)
            if sync.data_durability.unwrap_or(DataDurability::Required) == DataDurability::Required =>
        {
            let number = usize::try_from(sync.number).unwrap_or(1).min(replicas);
            (replicas + 1).saturating_sub(number).max(1)
        }
        _ => 1,
    }
}

/// Sends every instance that answered what replication the operator wants of it, the primary
/// being `primary`. A failure is logged: the next reconcile sends it again.
pub async fn apply(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    primary: &str,
    reports: &[super::instances::Report],
) {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let instances = instance_names(name, cluster.spec.instances.unwrap_or(1));
    let streaming: Vec<String> = reports
        .iter()
        .filter(|(_, r)| {
            r.as_ref()
                .is_ok_and(|s| s.wal_receiver.as_deref() == Some("streaming"))
        })
        .map(|(p, _)| p.clone())
        .collect();
    let synchronous_standby_names = standby_names(
        cluster
            .spec
            .replication
            .as_ref()
            .and_then(|r| r.synchronous.as_ref()),
        &instances,
        primary,
        &streaming,
    );
    let send = async |pod: &String| {
        let request = ReplicationRequest {
            synchronous_standby_names: synchronous_standby_names.clone(),
            replicas: instances.iter().filter(|p| *p != pod).cloned().collect(),
        };
        let body = serde_json::to_vec(&request).expect("a request serializes");
        let at = super::instances::At {
            namespace,
            cluster: name,
            pod,
        };
        match super::instances::call(ctx, at, hyper::Method::POST, REPLICATION, Some(body), TIMEOUT).await? {
            (status, _) if status.is_success() => Ok(()),
            (status, body) => Err(format!("{status}: {}", String::from_utf8_lossy(&body).trim())),
        }
    };
    let answering: Vec<&String> = reports
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|s| s.running))
        .map(|(p, _)| p)
        .collect();
    let outcomes = futures::future::join_all(answering.iter().map(|p| send(p))).await;
    for (pod, outcome) in answering.iter().zip(outcomes) {
        if let Err(e) = outcome {
            tracing::warn!(%pod, error = %e, "setting replication on an instance");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(method: SynchronousMethod, number: i32, durability: Option<DataDurability>) -> Synchronous {
        Synchronous {
            method,
            number,
            data_durability: durability,
        }
    }

    #[test]
    fn required_names_every_replica_preferred_only_those_that_stream() {
        let all = instance_names("db", 3);
        let streaming = vec!["db-2".to_owned()];
        // Not asked for: left to the user's parameters.
        assert_eq!(standby_names(None, &all, "db-0", &streaming), None);
        let any = sync(SynchronousMethod::Any, 1, None);
        assert_eq!(
            standby_names(Some(&any), &all, "db-0", &streaming).as_deref(),
            Some("ANY 1 (\"db-1\", \"db-2\")")
        );
        assert_eq!(
            standby_names(Some(&any), &all, "db-1", &[]).as_deref(),
            Some("ANY 1 (\"db-0\", \"db-2\")")
        );
        let first = sync(SynchronousMethod::First, 2, Some(DataDurability::Preferred));
        assert_eq!(
            standby_names(Some(&first), &all, "db-0", &streaming).as_deref(),
            Some("FIRST 1 (\"db-2\")")
        );
        // Preferred with no replica streaming: asynchronous for now, set explicitly.
        assert_eq!(
            standby_names(Some(&first), &all, "db-0", &[]).as_deref(),
            Some("")
        );
    }

    #[test]
    fn a_required_quorum_needs_enough_replicas_to_answer() {
        let cluster = |instances: i32, synchronous: Option<Synchronous>| -> PostgresCluster {
            let mut c = crate::controller::postgres_cluster::build::tests::cluster(
                crate::controller::postgres_cluster::build::tests::spec(
                    serde_json::json!({"instances": instances}),
                ),
            );
            c.spec.replication = Some(crate::api::postgres_cluster::v1::Replication { synchronous });
            c
        };
        assert_eq!(reports_needed(&cluster(3, None)), 1);
        // Any 1 of 2 replicas: both must answer.
        assert_eq!(
            reports_needed(&cluster(3, Some(sync(SynchronousMethod::Any, 1, None)))),
            2
        );
        // Any 2 of 4: 3 must answer.
        assert_eq!(
            reports_needed(&cluster(5, Some(sync(SynchronousMethod::Any, 2, None)))),
            3
        );
        assert_eq!(
            reports_needed(&cluster(
                3,
                Some(sync(SynchronousMethod::Any, 1, Some(DataDurability::Preferred)))
            )),
            1
        );
    }
}
