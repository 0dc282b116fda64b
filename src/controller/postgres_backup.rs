//! The `PostgresBackup` controller: one backup run, like a Job.
//!
//! `Pending` → the operator picks the instance (a ready replica unless `spec.instance` is
//! `Primary`), reads the target's credentials, and asks the instance manager to start (`POST
//! /backups` on its status port) → `Running` → the operator polls the run until the instance
//! manager says it is complete and verified → `Completed`, or `Failed` with the reason. A
//! finished backup is never touched again.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::ListParams, runtime::controller::Action};
use tracing::{info, instrument};

use super::postgres_cluster::instances::{At, call};
use super::{
    Context, Error, Problem,
    backup_target::{claim_exists, inline_store_config, unmounted_claim},
    condition::{condition, now_rfc3339},
    runtime::{Happened, record, write_status},
};
use crate::{
    api::{
        common::{BackupMethod, ConditionStatus},
        postgres_backup::v1::{BackupInstance, BackupPhase, PostgresBackup, PostgresBackupStatus},
        postgres_cluster::v1::PostgresCluster,
    },
    backup::api::{BACKUPS, BackupRequest, BackupState, Phase},
    facts::cluster::{CLUSTER_LABEL, ROLE_LABEL, Role},
};

/// How often a running backup is polled.
const POLL: Duration = Duration::from_secs(3);
/// How long to wait before trying again to start one.
const RETRY: Duration = Duration::from_secs(10);
/// How long one request to an instance manager may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One pod of the cluster, as the choice of instance sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's name.
    pub name: String,
    /// Its role label.
    pub primary: bool,
    /// Whether its `Ready` condition is true.
    pub ready: bool,
}

/// The instance that takes the backup: with `PreferReplica`, a ready replica (the lowest name,
/// so retries pick the same one), else the ready primary; with `Primary`, the ready primary.
pub fn choose_instance(candidates: &[Candidate], preference: BackupInstance) -> Option<String> {
    let mut ready: Vec<&Candidate> = candidates.iter().filter(|c| c.ready).collect();
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    let primary = ready.iter().find(|c| c.primary);
    let replica = ready.iter().find(|c| !c.primary);
    match preference {
        BackupInstance::PreferReplica => replica.or(primary),
        BackupInstance::Primary => primary,
    }
    .map(|c| c.name.clone())
}

/// A ready instance of `cluster`, a replica if one is: one to reach the cluster's claim through.
pub async fn ready_instance(ctx: &Context, namespace: &str, cluster: &str) -> Result<Option<String>, Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}")))
        .await
        .map_err(Error::kube("listing the pods"))?;
    let candidates: Vec<Candidate> = pods.items.iter().map(candidate).collect();
    Ok(choose_instance(&candidates, BackupInstance::PreferReplica))
}

/// Whether `pod`'s `Ready` condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn candidate(pod: &Pod) -> Candidate {
    Candidate {
        name: pod.name_any(),
        primary: pod.labels().get(ROLE_LABEL).map(String::as_str) == Some(Role::Primary.label()),
        ready: pod_ready(pod),
    }
}

/// The status of a backup: `previous` with the new phase, its condition, and what the run says.
fn status_with(
    backup: &PostgresBackup,
    phase: BackupPhase,
    reason: &str,
    message: String,
    change: impl FnOnce(&mut PostgresBackupStatus),
) -> PostgresBackupStatus {
    let mut status = backup.status.clone().unwrap_or_default();
    let previous = status.conditions.clone().unwrap_or_default();
    let ready = if phase == BackupPhase::Completed {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    status.conditions = Some(vec![condition(
        &previous,
        backup.metadata.generation,
        &now_rfc3339(),
        "Ready",
        ready,
        reason,
        message,
    )]);
    status.observed_generation = backup.metadata.generation;
    status.phase = Some(phase);
    change(&mut status);
    status
}

/// What a finished run makes of the status.
pub fn finished(backup: &PostgresBackup, state: &BackupState) -> PostgresBackupStatus {
    match (&state.record, &state.error) {
        (Some(record), _) if state.phase == Phase::Completed => status_with(
            backup,
            BackupPhase::Completed,
            "Completed",
            format!(
                "{} bytes stored and verified, restorable from {} on timeline {}",
                record.stored_bytes, record.end_lsn, record.timeline
            ),
            |s| {
                s.started_at = Some(record.started_at.clone());
                s.completed_at = Some(record.stopped_at.clone());
                s.size_bytes = i64::try_from(record.stored_bytes).ok();
                s.begin_wal = Some(record.begin_wal.clone());
                s.end_wal = Some(record.end_wal.clone());
                s.begin_lsn = Some(record.begin_lsn.clone());
                s.end_lsn = Some(record.end_lsn.clone());
                s.timeline = Some(i64::from(record.timeline));
                s.instance_name = Some(record.instance.clone());
                s.postgres_version = Some(record.postgres_version.clone());
                s.error = None;
            },
        ),
        (_, error) => {
            let (reason, message) = error
                .clone()
                .unwrap_or_else(|| ("BackupFailed".into(), "the instance reported no reason".into()));
            failed_status(backup, &reason, message)
        }
    }
}

fn failed_status(backup: &PostgresBackup, reason: &str, message: String) -> PostgresBackupStatus {
    status_with(backup, BackupPhase::Failed, reason, message.clone(), |s| {
        s.completed_at = Some(now_rfc3339());
        s.error = Some(message);
    })
}

/// One reconcile of one backup.
#[instrument(skip_all, fields(namespace = %backup.namespace().unwrap_or_default(), name = %backup.name_any()))]
pub async fn reconcile(backup: Arc<PostgresBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = backup.namespace().ok_or(Error::NotNamespaced)?;
    let name = backup.name_any();
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    if matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed))
        || backup.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let cluster_name = &backup.spec.cluster.name;
    let cluster = Api::<PostgresCluster>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(cluster_name)
        .await
        .map_err(Error::kube("reading the PostgresCluster"))?;
    let Some(cluster) = cluster else {
        let message = format!(
            "spec.cluster.name: PostgresCluster {cluster_name} does not exist in namespace {namespace}; waiting for it"
        );
        return pending(&ctx, &backup, "ClusterNotFound", message).await;
    };
    if backup.spec.method == Some(BackupMethod::Dump) {
        let problem = Problem::new(
            "MethodUnsupported",
            "spec.method: dump is not supported by this release; use basebackup (the default)",
        );
        return fail(&ctx, &backup, &problem).await;
    }
    let (target, field) = match (&backup.spec.target, cluster.spec.backup.as_ref()) {
        (Some(t), _) => (t.clone(), "spec.target".to_owned()),
        (None, Some(b)) => (
            b.target.clone(),
            format!("spec.backup.target of PostgresCluster {cluster_name}"),
        ),
        (None, None) => {
            let problem = Problem::new(
                "NoBackupTarget",
                format!(
                    "spec.target: the backup names no target and PostgresCluster {cluster_name} has no \
                     spec.backup.target; set one of them and create a new PostgresBackup"
                ),
            );
            return fail(&ctx, &backup, &problem).await;
        }
    };
    match phase {
        None | Some(BackupPhase::Pending) => {
            start(&ctx, &backup, &namespace, &cluster, &target, &field).await
        }
        Some(BackupPhase::Running) => follow(&ctx, &backup, &namespace, cluster_name, &name).await,
        Some(BackupPhase::Completed | BackupPhase::Failed) => unreachable!("returned above"),
    }
}

async fn pending(
    ctx: &Context,
    backup: &PostgresBackup,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let status = status_with(backup, BackupPhase::Pending, reason, message, |_| {});
    write_status(ctx, backup, backup.status.as_ref(), &status).await?;
    Ok(Action::requeue(RETRY))
}

async fn fail(ctx: &Context, backup: &PostgresBackup, problem: &Problem) -> Result<Action, Error> {
    let status = failed_status(backup, &problem.reason, problem.message.clone());
    write_status(ctx, backup, backup.status.as_ref(), &status).await?;
    record(ctx, backup, Happened::Failed(problem.clone())).await;
    Ok(Action::await_change())
}

async fn start(
    ctx: &Context,
    backup: &PostgresBackup,
    namespace: &str,
    cluster: &PostgresCluster,
    target: &crate::api::common::BackupTarget,
    field: &str,
) -> Result<Action, Error> {
    let cluster_name = cluster.name_any();
    if let Some(problem) = unmounted_claim(target, cluster, field) {
        return fail(ctx, backup, &problem).await;
    }
    if let Some(claim) = target.volume.as_ref().map(|v| &v.claim_name) {
        let exists = claim_exists(ctx, namespace, claim).await?;
        if !exists {
            let message = format!(
                "{field}.volume.claimName: PersistentVolumeClaim {claim} does not exist in namespace {namespace}; \
                 waiting for it"
            );
            return pending(ctx, backup, "BackupClaimMissing", message).await;
        }
    }
    let store = match inline_store_config(ctx, namespace, target, &cluster_name, field).await? {
        Ok(s) => s,
        // A Secret that is not there yet may come: wait for it.
        Err(problem) => return pending(ctx, backup, &problem.reason, problem.message).await,
    };
    let preference = backup.spec.instance.unwrap_or(BackupInstance::PreferReplica);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster_name}")))
        .await
        .map_err(Error::kube("listing the pods"))?;
    let candidates: Vec<Candidate> = pods.items.iter().map(candidate).collect();
    let Some(instance) = choose_instance(&candidates, preference) else {
        let message = format!(
            "no {} of PostgresCluster {cluster_name} is ready; waiting for one",
            if preference == BackupInstance::Primary {
                "primary"
            } else {
                "instance"
            }
        );
        return pending(ctx, backup, "NoInstanceReady", message).await;
    };
    let request = BackupRequest {
        name: backup.name_any(),
        store,
        compression: cluster
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.compression)
            .unwrap_or_default(),
    };
    let body = serde_json::to_vec(&request).expect("a request serializes");
    let at = At {
        namespace,
        cluster: &cluster_name,
        pod: &instance,
    };
    let answer = call(ctx, at, hyper::Method::POST, BACKUPS, Some(body), REQUEST_TIMEOUT).await;
    match answer {
        Ok((status, body)) if status.is_success() => {
            let state: Option<BackupState> = serde_json::from_slice(&body).ok();
            info!(%instance, "backup started");
            let status = status_with(
                backup,
                BackupPhase::Running,
                "Running",
                format!("{instance} is streaming the backup to {}", request.store.url),
                |s| {
                    s.started_at = state.map(|st| st.started_at).or_else(|| Some(now_rfc3339()));
                    s.instance_name = Some(instance.clone());
                    s.location = Some(format!("{}/base/{}", request.store.url, request.name));
                },
            );
            write_status(ctx, backup, backup.status.as_ref(), &status).await?;
            record(
                ctx,
                backup,
                Happened::Created(format!("backup started on {instance}")),
            )
            .await;
            Ok(Action::requeue(POLL))
        }
        Ok((status, body)) => {
            let message = format!(
                "{instance} refused the backup ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            );
            pending(ctx, backup, "InstanceBusy", message).await
        }
        Err(e) => pending(ctx, backup, "InstanceUnreachable", e).await,
    }
}

async fn follow(
    ctx: &Context,
    backup: &PostgresBackup,
    namespace: &str,
    cluster: &str,
    name: &str,
) -> Result<Action, Error> {
    let instance = backup
        .status
        .as_ref()
        .and_then(|s| s.instance_name.clone())
        .unwrap_or_default();
    let at = At {
        namespace,
        cluster,
        pod: &instance,
    };
    let path = format!("{BACKUPS}/{name}");
    let answer = call(ctx, at, hyper::Method::GET, &path, None, REQUEST_TIMEOUT).await;
    let state = match answer {
        Ok((status, body)) if status.is_success() => match serde_json::from_slice::<BackupState>(&body) {
            Ok(state) => state,
            Err(e) => {
                return running_note(ctx, backup, "InstanceUnreachable", format!("{instance}: {e}")).await;
            }
        },
        Ok((hyper::StatusCode::NOT_FOUND, _)) => {
            // The instance manager restarted: what it uploaded has no record, so it is no backup.
            let problem = Problem::new(
                "InstanceRestarted",
                format!(
                    "{instance} restarted during the backup; nothing was completed. Create a new PostgresBackup"
                ),
            );
            return fail(ctx, backup, &problem).await;
        }
        Ok((status, body)) => {
            let message = format!(
                "{instance} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
            return running_note(ctx, backup, "InstanceUnreachable", message).await;
        }
        Err(e) => return running_note(ctx, backup, "InstanceUnreachable", e).await,
    };
    match state.phase {
        Phase::Running => {
            running_note(
                ctx,
                backup,
                "Running",
                format!("{instance} is streaming the backup"),
            )
            .await
        }
        Phase::Completed | Phase::Failed => {
            let status = finished(backup, &state);
            write_status(ctx, backup, backup.status.as_ref(), &status).await?;
            if state.phase == Phase::Completed {
                info!(%instance, "backup completed");
                record(
                    ctx,
                    backup,
                    Happened::Changed(format!("backup completed on {instance}")),
                )
                .await;
            } else if let Some((reason, message)) = state.error {
                record(ctx, backup, Happened::Failed(Problem::new(reason, message))).await;
            }
            Ok(Action::await_change())
        }
    }
}

async fn running_note(
    ctx: &Context,
    backup: &PostgresBackup,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let status = status_with(backup, BackupPhase::Running, reason, message, |_| {});
    write_status(ctx, backup, backup.status.as_ref(), &status).await?;
    Ok(Action::requeue(POLL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, primary: bool, ready: bool) -> Candidate {
        Candidate {
            name: name.into(),
            primary,
            ready,
        }
    }

    #[test]
    fn a_ready_replica_is_preferred_then_the_primary() {
        let all = [
            pod("db-0", true, true),
            pod("db-2", false, true),
            pod("db-1", false, true),
        ];
        assert_eq!(
            choose_instance(&all, BackupInstance::PreferReplica).as_deref(),
            Some("db-1")
        );
        assert_eq!(
            choose_instance(&all, BackupInstance::Primary).as_deref(),
            Some("db-0")
        );
        let no_replica = [pod("db-0", true, true), pod("db-1", false, false)];
        assert_eq!(
            choose_instance(&no_replica, BackupInstance::PreferReplica).as_deref(),
            Some("db-0")
        );
        let nothing_ready = [pod("db-0", true, false)];
        assert_eq!(
            choose_instance(&nothing_ready, BackupInstance::PreferReplica),
            None
        );
        assert_eq!(
            choose_instance(&[pod("db-1", false, true)], BackupInstance::Primary),
            None
        );
    }
}
