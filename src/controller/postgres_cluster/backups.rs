//! What a cluster's backups add to its reconcile: where a restored cluster restores from (and the
//! refusal to archive into that same place), and what its archive holds for the status.

use kube::{Api, ResourceExt};

use super::{Context, Error, Problem};
use crate::{
    api::{
        postgres_backup::v1::{BackupPhase, PostgresBackup},
        postgres_cluster::v1::{PostgresCluster, RecoveryTarget},
    },
    backup::{
        api::{ARCHIVE, ArchiveState},
        restore::{Target, check_target},
    },
    controller::backup_target::{ResolvedRecovery, Secrets, root, store_config, volumes},
    instance::backup::same_place,
};

/// The recovery target of the API as the instance manager takes it.
pub fn target_point(target: Option<&RecoveryTarget>) -> Result<Target, Problem> {
    let Some(t) = target else {
        return Ok(Target::Latest);
    };
    let point = match (&t.time, &t.lsn, &t.xid, &t.name) {
        (Some(time), None, None, None) => Target::Time(time.clone()),
        (None, Some(lsn), None, None) => Target::Lsn(lsn.clone()),
        (None, None, Some(xid), None) => Target::Xid(xid.clone()),
        (None, None, None, Some(name)) => Target::Name(name.clone()),
        (None, None, None, None) => Target::Latest,
        _ => {
            return Err(Problem::new(
                "InvalidRecoveryTarget",
                "spec.bootstrap.recovery.target: set at most one of time, lsn, xid or name",
            ));
        }
    };
    check_target(&point).map_err(|e| {
        Problem::new(
            "InvalidRecoveryTarget",
            format!("spec.bootstrap.recovery.target.{e}"),
        )
    })?;
    Ok(point)
}

/// Where `cluster` restores from, when its bootstrap restores; a problem when that cannot be
/// known yet, or when the cluster would archive into the place it restores from.
pub async fn resolve_recovery(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Result<Option<ResolvedRecovery>, Problem>, Error> {
    let Some(bootstrap) = &cluster.spec.bootstrap else {
        return Ok(Ok(None));
    };
    let (backup_name, field, recovery) = match (&bootstrap.from_backup, &bootstrap.recovery) {
        (Some(from), _) => (
            Some(from.backup_name.clone()),
            "spec.bootstrap.fromBackup.backupName",
            None,
        ),
        (None, Some(recovery)) => (
            recovery.backup.as_ref().map(|b| b.name.clone()),
            "spec.bootstrap.recovery.backup.name",
            Some(recovery),
        ),
        (None, None) => return Ok(Ok(None)),
    };
    let target_point = match target_point(recovery.and_then(|r| r.target.as_ref())) {
        Ok(t) => t,
        Err(p) => return Ok(Err(p)),
    };
    let resolved = if let Some(name) = backup_name {
        let backup = Api::<PostgresBackup>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(Error::kube("reading the PostgresBackup to restore"))?;
        let Some(backup) = backup else {
            return Ok(Err(Problem::new(
                "RecoverySourceMissing",
                format!("{field}: PostgresBackup {name} does not exist in namespace {namespace}"),
            )));
        };
        if backup.status.as_ref().and_then(|s| s.phase) != Some(BackupPhase::Completed) {
            return Ok(Err(Problem::new(
                "RecoverySourceNotReady",
                format!("{field}: PostgresBackup {name} is not Completed; waiting for it"),
            )));
        }
        let source_cluster = backup.spec.cluster.name.clone();
        let target = match &backup.spec.target {
            Some(t) => t.clone(),
            None => {
                let source = Api::<PostgresCluster>::namespaced(ctx.client.clone(), namespace)
                    .get_opt(&source_cluster)
                    .await
                    .map_err(Error::kube("reading the backup's PostgresCluster"))?;
                match source.and_then(|c| c.spec.backup) {
                    Some(b) => b.target,
                    None => {
                        return Ok(Err(Problem::new(
                            "RecoverySourceMissing",
                            format!(
                                "{field}: PostgresBackup {name} names no target and its PostgresCluster \
                                 {source_cluster} has no spec.backup.target to find it in"
                            ),
                        )));
                    }
                }
            }
        };
        ResolvedRecovery {
            target,
            cluster: source_cluster,
            backup: Some(backup.name_any()),
            target_point,
        }
    } else {
        let source = recovery
            .and_then(|r| r.source.as_ref())
            .expect("the CRD requires backup or source");
        ResolvedRecovery {
            target: source.target.clone(),
            cluster: source.cluster_name.clone(),
            backup: None,
            target_point,
        }
    };
    if let Some(backup) = &cluster.spec.backup {
        let mounted = |target, name: &str| {
            store_config(
                target,
                name,
                Secrets::Mounted {
                    ca_volume: volumes::BACKUP_CA,
                },
                "",
            )
        };
        if let (Ok(own), Ok(source)) = (
            mounted(&backup.target, &cluster.name_any()),
            mounted(&resolved.target, &resolved.cluster),
        ) && same_place(&own, &source)
        {
            return Ok(Err(Problem::new(
                "ArchiveIsRecoverySource",
                format!(
                    "spec.backup.target: this cluster would archive into {}, where it restores from; \
                     its WAL would corrupt the source's archive. Give spec.backup.target another path \
                     or bucket (objects go below <path>/{})",
                    own.url,
                    root(&backup.target, "<cluster>")
                ),
            )));
        }
    }
    Ok(Ok(Some(resolved)))
}

/// When the claim of the cluster's own `volume` target does not exist: a problem, and the cluster
/// as its children are built, without that target. Pods that mount a missing claim never start,
/// so until it exists the pods run without it and nothing archives; once it appears the pods roll
/// to mount it.
pub async fn without_missing_claim(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Option<(Problem, PostgresCluster)>, Error> {
    let Some(claim) = cluster
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.target.volume.as_ref())
        .map(|v| v.claim_name.clone())
    else {
        return Ok(None);
    };
    if crate::controller::backup_target::claim_exists(ctx, namespace, &claim).await? {
        return Ok(None);
    }
    let problem = Problem::new(
        "BackupClaimMissing",
        format!(
            "spec.backup.target.volume.claimName: PersistentVolumeClaim {claim} does not exist in namespace \
             {namespace}; the pods run without it and nothing is archived until it does (then they roll to mount it)"
        ),
    );
    let mut without = cluster.clone();
    without.spec.backup = None;
    Ok(Some((problem, without)))
}

/// A problem with the cluster's own backup target, if it has one.
pub fn target_problem(cluster: &PostgresCluster) -> Option<Problem> {
    let backup = cluster.spec.backup.as_ref()?;
    store_config(
        &backup.target,
        &cluster.name_any(),
        Secrets::Mounted {
            ca_volume: volumes::BACKUP_CA,
        },
        "spec.backup.target",
    )
    .err()
}

/// What the cluster's archive holds, as observed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveObservation {
    /// What the primary's instance manager says, or why it could not be asked.
    pub archive: Result<ArchiveState, String>,
    /// Completed backups of the cluster: name and stop time.
    pub completed: Vec<(String, String)>,
}

/// Asks the primary how archiving goes, and lists the completed backups.
pub async fn observe(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    primary: Option<&str>,
) -> Result<ArchiveObservation, Error> {
    let name = cluster.name_any();
    let archive = match primary {
        None => Err("the primary's pod does not exist yet".to_owned()),
        Some(pod) => {
            let at = super::instances::At {
                namespace,
                cluster: &name,
                pod,
            };
            let timeout = std::time::Duration::from_secs(10);
            match super::instances::call(ctx, at, hyper::Method::GET, ARCHIVE, None, timeout).await {
                Ok((status, body)) if status.is_success() => {
                    serde_json::from_slice(&body).map_err(|e| format!("{pod}: {e}"))
                }
                Ok((status, _)) => Err(format!("{pod} answered {status}")),
                Err(e) => Err(e),
            }
        }
    };
    let backups = backups_in(ctx, namespace).await?;
    let mut completed: Vec<(String, String)> = backups
        .into_iter()
        .filter(|b| b.spec.cluster.name == name)
        .filter_map(|b| {
            let status = b.status.as_ref()?;
            (status.phase == Some(BackupPhase::Completed))
                .then(|| Some((b.name_any(), status.completed_at.clone()?)))?
        })
        .collect();
    completed.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(ArchiveObservation { archive, completed })
}

/// The `PostgresBackup`s in `namespace`: as the backup controller's watch last saw them, or
/// listed until that watch has listed.
async fn backups_in(ctx: &Context, namespace: &str) -> Result<Vec<std::sync::Arc<PostgresBackup>>, Error> {
    if let Some(known) = ctx.known.backups(namespace) {
        return Ok(known);
    }
    Ok(Api::<PostgresBackup>::namespaced(ctx.client.clone(), namespace)
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::kube("listing the PostgresBackups"))?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect())
}

/// Applies `spec.backup.retention` to every completed backup of the cluster: those older than it
/// go, with their objects and the WAL no remaining backup needs; the newest always stays.
pub async fn retain(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Option<Problem>, Error> {
    let Some(backup) = &cluster.spec.backup else {
        return Ok(None);
    };
    let Some(max_age) = backup
        .retention
        .as_deref()
        .and_then(crate::backup::retention::parse_age)
    else {
        return Ok(None);
    };
    let name = cluster.name_any();
    let now = k8s_openapi::jiff::Timestamp::now();
    let backups = backups_in(ctx, namespace).await?;
    // Only backups in the cluster's own target, and only once one is old enough: most
    // reconciles send no request to the store.
    let eligible: std::collections::BTreeSet<String> = backups
        .iter()
        .filter(|b| b.spec.cluster.name == name && b.spec.target.is_none())
        .filter(|b| {
            b.status.as_ref().is_some_and(|s| {
                s.phase == Some(BackupPhase::Completed)
                    && s.completed_at
                        .as_deref()
                        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                        .is_some_and(|at| now.duration_since(at) > max_age)
            })
        })
        .map(|b| b.name_any())
        .collect();
    if eligible.is_empty() {
        return Ok(None);
    }
    let rule = crate::backup::retention::Rule {
        keep_last: None,
        max_age: Some(max_age),
    };
    let outcome = crate::controller::postgres_backup_schedule::retain(
        ctx,
        namespace,
        cluster,
        &backup.target,
        &eligible,
        rule,
        "spec.backup.retention",
    )
    .await?;
    Ok(outcome.err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_target_becomes_one_point() {
        assert_eq!(target_point(None).unwrap(), Target::Latest);
        let t = |v: serde_json::Value| serde_json::from_value::<RecoveryTarget>(v).unwrap();
        assert_eq!(
            target_point(Some(&t(serde_json::json!({"lsn": "0/3000028"})))).unwrap(),
            Target::Lsn("0/3000028".into())
        );
        let two = target_point(Some(&t(serde_json::json!({"lsn": "0/1", "xid": "7"})))).unwrap_err();
        assert!(two.message.contains("at most one"), "{}", two.message);
        let bad = target_point(Some(&t(serde_json::json!({"time": "noon"})))).unwrap_err();
        assert!(
            bad.message.contains("spec.bootstrap.recovery.target.time"),
            "{}",
            bad.message
        );
    }
}
