//! The `PostgresBackupSchedule` controller, like a CronJob: at each time its cron expression
//! names (in its time zone), it creates a `PostgresBackup` owned by the schedule, unless
//! `suspend` is set or a run of the schedule has not finished (concurrency `Forbid`: that time
//! is skipped). Runs missed while the operator was down collapse into one. `retention` deletes
//! the schedule's completed backups it lets go (never the cluster's newest), their objects and
//! the WAL no remaining backup needs; of failed runs the newest [`FAILED_HISTORY`] are kept.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use croner::{Cron, parser::CronParser, parser::Seconds};
use jiff::{Timestamp, Zoned, tz::TimeZone};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{
    Context, Error, Problem,
    backup_target::{inline_store_config, unmounted_claim},
    condition::{condition, now_rfc3339},
    runtime::{Happened, record, write_status},
};
use crate::{
    api::{
        common::ConditionStatus,
        postgres_backup::v1::{BackupPhase, PostgresBackup},
        postgres_backup_schedule::v1::{PostgresBackupSchedule, PostgresBackupScheduleStatus},
        postgres_cluster::v1::PostgresCluster,
    },
    backup::{
        api::{RETENTION, RetentionRequest, StoreRefusal},
        retention,
    },
};

/// The label on each `PostgresBackup` a schedule creates: [`schedule_label`] of its name.
pub const SCHEDULE_LABEL: &str = "tusk.dev/schedule";
/// The longest label value Kubernetes accepts.
const LABEL_VALUE_MAX: usize = 63;
/// The longest object name Kubernetes accepts.
const NAME_MAX: usize = 253;

/// The [`SCHEDULE_LABEL`] value of schedule `name`: the name itself when it fits a label value
/// (63 characters), else its first 54 characters and 8 hex digits of its SHA-256, so two long
/// names that share a prefix still differ.
pub fn schedule_label(name: &str) -> String {
    use sha2::{Digest, Sha256};
    if name.len() <= LABEL_VALUE_MAX {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix = name[..LABEL_VALUE_MAX - 1 - suffix.len()].trim_end_matches(['-', '.']);
    format!("{prefix}-{suffix}")
}

/// The name of the backup schedule `name` creates for its run at `at`: `<name>-<YYYYmmddHHMMSS>`,
/// the schedule's name cut so the whole stays a valid object name (253 characters).
pub fn run_name(name: &str, at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%d%H%M%S").to_string();
    let keep = name.len().min(NAME_MAX - 1 - stamp.len());
    let prefix = name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{stamp}")
}
/// How long an instance may take to apply a retention rule to a claim.
const RETENTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How soon a run whose backup the apiserver refused is tried again.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
/// Failed runs kept, newest first.
pub const FAILED_HISTORY: usize = 3;

/// The cron expression and time zone of a schedule, or what is wrong with them.
pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<(Cron, TimeZone), Problem> {
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| Problem::new("InvalidSchedule", format!("spec.schedule {schedule:?}: {e}")))?;
    let zone = match time_zone {
        None => TimeZone::UTC,
        Some(name) => TimeZone::get(name).map_err(|e| {
            Problem::new(
                "InvalidTimeZone",
                format!("spec.timeZone {name:?} is not an IANA time zone such as Europe/Paris: {e}"),
            )
        })?,
    };
    Ok((cron, zone))
}

/// The run due at `now` after the last one at `last`: the latest time the expression names in
/// `(last, now]`, if any.
pub fn due(cron: &Cron, zone: &TimeZone, last: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let mut at = last.to_zoned(zone.clone());
    let mut found = None;
    // Bounded: after a long outage only the latest missed time runs.
    for _ in 0..100_000 {
        let next: Zoned = cron.find_next_occurrence(&at, false).ok()?;
        if next.timestamp() > now {
            break;
        }
        found = Some(next.timestamp());
        at = next;
    }
    found
}

/// The time after `last` the expression names next.
pub fn next(cron: &Cron, zone: &TimeZone, last: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&last.to_zoned(zone.clone()), false)
        .ok()
        .map(|z| z.timestamp())
}

/// Whether `schedule` is overdue at `now`: not suspended, and its expression named two times
/// since its last completed backup (or its creation) without one completing, so at least one
/// whole interval passed without a backup. A run that takes longer than one interval is not
/// overdue yet.
pub fn overdue(schedule: &PostgresBackupSchedule, now: Timestamp) -> bool {
    if schedule.spec.suspend == Some(true) {
        return false;
    }
    let Ok((cron, zone)) = parse(&schedule.spec.schedule, schedule.spec.time_zone.as_deref()) else {
        return false;
    };
    let created = schedule.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let succeeded = schedule
        .status
        .as_ref()
        .and_then(|s| s.last_successful_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let Some(since) = succeeded.into_iter().chain(created).max() else {
        return false;
    };
    let Some(first) = next(&cron, &zone, since) else {
        return false;
    };
    next(&cron, &zone, first).is_some_and(|second| second <= now)
}

/// For the `tusk_backup_schedule_overdue` gauge: each schedule's namespace, name and whether it is
/// [`overdue`].
pub fn overdue_rows(schedules: &[Arc<PostgresBackupSchedule>]) -> Vec<(Vec<(String, String)>, i64)> {
    let now = Timestamp::now();
    schedules
        .iter()
        .map(|s| {
            let labels = vec![
                ("namespace".to_owned(), s.namespace().unwrap_or_default()),
                ("schedule".to_owned(), s.name_any()),
            ];
            (labels, i64::from(overdue(s, now)))
        })
        .collect()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One reconcile of one schedule.
#[instrument(skip_all, fields(namespace = %schedule.namespace().unwrap_or_default(), name = %schedule.name_any()))]
pub async fn reconcile(schedule: Arc<PostgresBackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = schedule.namespace().ok_or(Error::NotNamespaced)?;
    let name = schedule.name_any();
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut status = schedule.status.clone().unwrap_or_default();
    let (cron, zone) = match parse(&schedule.spec.schedule, schedule.spec.time_zone.as_deref()) {
        Ok(parsed) => parsed,
        Err(problem) => {
            let status = with_ready(
                &schedule,
                status,
                ConditionStatus::False,
                &problem.reason,
                problem.message.clone(),
            );
            write_status(&ctx, schedule.as_ref(), schedule.status.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
    };
    let backups = Api::<PostgresBackup>::namespaced(ctx.client.clone(), &namespace);
    let mine = backups
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={}", schedule_label(&name))))
        .await
        .map_err(Error::kube("listing the schedule's backups"))?
        .items
        .into_iter()
        // A backup labelled with the schedule's name is the schedule's (a user may label one to
        // put it under the schedule's retention). A long name's label is cut and hashed, so
        // another schedule could share it: then only the backups this one created count.
        .filter(|b| {
            name.len() <= LABEL_VALUE_MAX
                || b.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == schedule.metadata.uid.as_ref())
        })
        .collect::<Vec<_>>();
    let now = Timestamp::now();
    let created = schedule.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let last = status
        .last_schedule_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(created);
    let mut note = (
        ConditionStatus::True,
        "Scheduled".to_owned(),
        "waiting for the next run".to_owned(),
    );
    let mut retry = false;
    if let Some(at) = due(&cron, &zone, last, now) {
        let running = mine.iter().find(|b| {
            !matches!(
                b.status.as_ref().and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            )
        });
        if schedule.spec.suspend == Some(true) {
            status.last_schedule_time = Some(rfc3339(at));
            note = (
                ConditionStatus::True,
                "Suspended".into(),
                format!("spec.suspend is true: the run of {} was not started", rfc3339(at)),
            );
        } else if let Some(running) = running {
            let message = format!(
                "the run of {} was skipped: {} has not finished (concurrency Forbid)",
                rfc3339(at),
                running.name_any()
            );
            record(
                &ctx,
                schedule.as_ref(),
                Happened::Failed(Problem::new("RunSkipped", message.clone())),
            )
            .await;
            status.last_schedule_time = Some(rfc3339(at));
            note = (ConditionStatus::True, "RunSkipped".into(), message);
        } else {
            let backup_name = run_name(&name, at);
            let owner = schedule
                .controller_owner_ref(&())
                .expect("a stored schedule has a uid");
            let backup: PostgresBackup = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresBackup",
                "metadata": {
                    "name": backup_name,
                    "labels": {SCHEDULE_LABEL: schedule_label(&name)},
                    "ownerReferences": [owner],
                },
                "spec": {
                    "cluster": schedule.spec.cluster,
                    "method": schedule.spec.method,
                    "target": schedule.spec.target,
                },
            }))
            .expect("a PostgresBackup from a valid schedule");
            let refused = match backups.create(&PostParams::default(), &backup).await {
                Ok(_) => None,
                Err(kube::Error::Api(e)) if e.code == 409 => None,
                // Refused (permissions, admission): the run stays due and is tried again, and the
                // user sees why. Anything else is an error the controller retries.
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => Some(e.message),
                Err(e) => {
                    return Err(Error::Kube {
                        step: "creating a scheduled PostgresBackup",
                        source: e,
                    });
                }
            };
            if let Some(cause) = refused {
                let problem = Problem::new(
                    "RunNotCreated",
                    format!(
                        "the run of {} could not create PostgresBackup {backup_name}: {cause}; it is tried again",
                        rfc3339(at)
                    ),
                );
                warn!(backup = %backup_name, %cause, "a scheduled backup was refused");
                record(&ctx, schedule.as_ref(), Happened::Failed(problem.clone())).await;
                note = (
                    ConditionStatus::False,
                    problem.reason.to_string(),
                    problem.message,
                );
                retry = true;
            } else {
                status.last_schedule_time = Some(rfc3339(at));
                info!(backup = %backup_name, "scheduled backup created");
                record(
                    &ctx,
                    schedule.as_ref(),
                    Happened::Created(format!("created PostgresBackup {backup_name}")),
                )
                .await;
                status.last_backup_name = Some(backup_name);
            }
        }
    }
    status.last_successful_time = mine
        .iter()
        .filter_map(|b| {
            let s = b.status.as_ref()?;
            (s.phase == Some(BackupPhase::Completed)).then(|| s.completed_at.clone())?
        })
        .max();
    let upcoming = next(
        &cron,
        &zone,
        status
            .last_schedule_time
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(last)
            .max(now),
    );
    status.next_schedule_time = upcoming.map(rfc3339);
    if let (false, Err(problem)) = (retry, prune(&ctx, &schedule, &namespace, &mine).await?) {
        note = (
            ConditionStatus::False,
            problem.reason.to_string(),
            problem.message,
        );
    }
    let status = with_ready(&schedule, status, note.0, &note.1, note.2);
    write_status(&ctx, schedule.as_ref(), schedule.status.as_ref(), &status).await?;
    let wait = upcoming
        .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default())
        .unwrap_or(ctx.resync)
        .min(ctx.resync)
        .min(if retry { RETRY_REFUSED } else { Duration::MAX })
        .max(Duration::from_secs(1));
    Ok(Action::requeue(wait))
}

fn with_ready(
    schedule: &PostgresBackupSchedule,
    mut status: PostgresBackupScheduleStatus,
    ready: ConditionStatus,
    reason: &str,
    message: String,
) -> PostgresBackupScheduleStatus {
    let previous = status.conditions.clone().unwrap_or_default();
    status.conditions = Some(vec![condition(
        &previous,
        schedule.metadata.generation,
        &now_rfc3339(),
        "Ready",
        ready,
        reason,
        message,
    )]);
    status.observed_generation = schedule.metadata.generation;
    status
}

/// Applies the schedule's retention and failed-run history.
async fn prune(
    ctx: &Context,
    schedule: &PostgresBackupSchedule,
    namespace: &str,
    mine: &[PostgresBackup],
) -> Result<Result<(), Problem>, Error> {
    let backups = Api::<PostgresBackup>::namespaced(ctx.client.clone(), namespace);
    let mut failed: Vec<&PostgresBackup> = mine
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Failed))
        .collect();
    failed.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp.clone()));
    for old in failed.iter().skip(FAILED_HISTORY) {
        delete(&backups, &old.name_any()).await?;
    }
    let Some(rule) = &schedule.spec.retention else {
        return Ok(Ok(()));
    };
    let rule = retention::Rule {
        keep_last: rule.keep_last.and_then(|k| usize::try_from(k).ok()),
        max_age: rule.max_age.as_deref().and_then(retention::parse_age),
    };
    let eligible: BTreeSet<String> = mine
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .map(ResourceExt::name_any)
        .collect();
    if eligible.is_empty() {
        return Ok(Ok(()));
    }
    let Some(cluster) = Api::<PostgresCluster>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&schedule.spec.cluster.name)
        .await
        .map_err(Error::kube("reading the PostgresCluster"))?
    else {
        return Ok(Ok(()));
    };
    let target = match &schedule.spec.target {
        Some(t) => Some(t.clone()),
        None => cluster.spec.backup.as_ref().map(|b| b.target.clone()),
    };
    let Some(target) = target else { return Ok(Ok(())) };
    Ok(retain(
        ctx,
        namespace,
        &cluster,
        &target,
        &eligible,
        rule,
        "spec.retention",
    )
    .await?
    .map(|deleted| {
        for name in deleted {
            info!(backup = %name, "retention let the backup go");
        }
    }))
}

/// Deletes from the store (and as objects) the backups of `eligible` that `rule` lets go; the
/// names deleted. The operator opens an object store itself; a claim only the pods mount is
/// reached through one of them.
pub async fn retain(
    ctx: &Context,
    namespace: &str,
    cluster: &PostgresCluster,
    target: &crate::api::common::BackupTarget,
    eligible: &BTreeSet<String>,
    rule: retention::Rule,
    field: &str,
) -> Result<Result<Vec<String>, Problem>, Error> {
    let cluster_name = cluster.name_any();
    if let Some(problem) = unmounted_claim(target, cluster, field) {
        return Ok(Err(problem));
    }
    let config = match inline_store_config(ctx, namespace, target, &cluster_name, field).await? {
        Ok(c) => c,
        Err(p) => return Ok(Err(p)),
    };
    let outcome = if config.directory.is_some() {
        through_instance(ctx, namespace, &cluster_name, config, eligible, rule).await?
    } else {
        let run = async {
            let store = config.open()?;
            retention::run(&store, eligible, rule, Timestamp::now()).await
        };
        run.await.map_err(|e| (e.cause.reason().to_owned(), e.message))
    };
    let expired = match outcome {
        Ok(e) => e,
        Err((reason, message)) => {
            warn!(%message, "retention could not reach the store; trying again later");
            return Ok(Err(Problem::new(reason, format!("{field}: {message}"))));
        }
    };
    let backups = Api::<PostgresBackup>::namespaced(ctx.client.clone(), namespace);
    for name in &expired {
        delete(&backups, name).await?;
    }
    Ok(Ok(expired.into_iter().collect()))
}

/// Asks a ready instance of `cluster` to apply `rule` to `config` (its claim).
async fn through_instance(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    config: crate::backup::store::StoreConfig,
    eligible: &BTreeSet<String>,
    rule: retention::Rule,
) -> Result<Result<BTreeSet<String>, (String, String)>, Error> {
    let unreachable = |message: String| Ok(Err(("InstanceUnreachable".to_owned(), message)));
    let Some(pod) = super::postgres_backup::ready_instance(ctx, namespace, cluster).await? else {
        return unreachable(format!(
            "no instance of PostgresCluster {cluster} is ready to reach {}",
            config.url
        ));
    };
    let request = RetentionRequest {
        store: config,
        eligible: eligible.clone(),
        keep_last: rule.keep_last,
        max_age_seconds: rule.max_age.map(|a| a.as_secs()),
    };
    let body = serde_json::to_vec(&request).expect("a request serializes");
    let at = super::postgres_cluster::instances::At {
        namespace,
        cluster,
        pod: &pod,
    };
    let answer = super::postgres_cluster::instances::call(
        ctx,
        at,
        hyper::Method::POST,
        RETENTION,
        Some(body),
        RETENTION_TIMEOUT,
    )
    .await;
    Ok(match answer {
        Ok((status, body)) if status.is_success() => serde_json::from_slice(&body)
            .map_err(|e| ("InstanceUnreachable".to_owned(), format!("{pod} answered {e}"))),
        Ok((_, body)) => Err(match serde_json::from_slice::<StoreRefusal>(&body) {
            Ok(refusal) => (refusal.reason, refusal.message),
            Err(_) => (
                "InstanceUnreachable".to_owned(),
                format!("{pod}: {}", String::from_utf8_lossy(&body).trim()),
            ),
        }),
        Err(e) => Err(("InstanceUnreachable".to_owned(), format!("{pod}: {e}"))),
    })
}

async fn delete(backups: &Api<PostgresBackup>, name: &str) -> Result<(), Error> {
    match backups.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube {
            step: "deleting a PostgresBackup",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_run_names_stay_valid_for_names_of_any_length() {
        let at: Timestamp = "2026-12-01T10:15:00Z".parse().unwrap();
        assert_eq!(schedule_label("nightly"), "nightly");
        assert_eq!(run_name("nightly", at), "nightly-20261201101500");
        let long = "a".repeat(70);
        let label = schedule_label(&long);
        assert_eq!(label.len(), 63);
        assert_ne!(label, schedule_label(&format!("{}b", "a".repeat(69))));
        // A cut that would end on a dash drops the dash.
        let dashed = format!("{}-{}", "x".repeat(53), "y".repeat(20));
        assert!(
            !schedule_label(&dashed).contains("--"),
            "{}",
            schedule_label(&dashed)
        );
        let longest = "n".repeat(253);
        let run = run_name(&longest, at);
        assert_eq!(run.len(), 253);
        assert!(run.ends_with("-20261201101500"));
    }

    #[test]
    fn a_bad_schedule_or_zone_names_its_field() {
        assert!(parse("0 3 * * *", Some("Europe/Paris")).is_ok());
        assert!(parse("@daily", None).is_ok());
        let p = parse("61 * * * *", None).unwrap_err();
        assert!(p.message.starts_with("spec.schedule"), "{}", p.message);
        let p = parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(p.message.starts_with("spec.timeZone"), "{}", p.message);
    }

    #[test]
    fn the_latest_missed_time_runs_once_in_the_zone() {
        let (cron, paris) = parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        // 03:00 in Paris is 02:00 UTC in winter.
        assert_eq!(
            due(
                &cron,
                &paris,
                t("2026-12-01T00:00:00Z"),
                t("2026-12-01T02:00:00Z")
            ),
            Some(t("2026-12-01T02:00:00Z"))
        );
        assert_eq!(
            due(
                &cron,
                &paris,
                t("2026-12-01T00:00:00Z"),
                t("2026-12-01T01:59:59Z")
            ),
            None
        );
        // Three days missed: one run, the latest.
        assert_eq!(
            due(
                &cron,
                &paris,
                t("2026-12-01T02:00:00Z"),
                t("2026-12-04T12:00:00Z")
            ),
            Some(t("2026-12-04T02:00:00Z"))
        );
        assert_eq!(
            next(&cron, &paris, t("2026-12-04T02:00:00Z")),
            Some(t("2026-12-05T02:00:00Z"))
        );
    }

    #[test]
    fn a_schedule_is_overdue_once_a_whole_interval_passed_without_a_backup() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let schedule = |suspend: bool, succeeded: Option<&str>| {
            let mut s: PostgresBackupSchedule = serde_json::from_value(json!({
                "apiVersion": "tusk.dev/v1", "kind": "PostgresBackupSchedule",
                "metadata": {"name": "nightly", "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"},
                "spec": {"cluster": {"name": "db"}, "schedule": "0 3 * * *", "suspend": suspend},
            }))
            .unwrap();
            if let Some(at) = succeeded {
                s.status = Some(PostgresBackupScheduleStatus {
                    last_successful_time: Some(at.to_owned()),
                    ..PostgresBackupScheduleStatus::default()
                });
            }
            s
        };
        // Never succeeded: the first run may fail, the second must not be missed too.
        assert!(!overdue(&schedule(false, None), t("2026-12-01T12:00:00Z")));
        assert!(!overdue(&schedule(false, None), t("2026-12-02T02:59:59Z")));
        assert!(overdue(&schedule(false, None), t("2026-12-02T03:00:00Z")));
        // A success counts from when it completed.
        let ok = Some("2026-12-01T03:20:00Z");
        assert!(!overdue(&schedule(false, ok), t("2026-12-02T12:00:00Z")));
        assert!(overdue(&schedule(false, ok), t("2026-12-03T03:00:00Z")));
        // Suspended is never overdue.
        assert!(!overdue(&schedule(true, None), t("2027-01-01T00:00:00Z")));
        let mut old = schedule(false, None);
        old.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(
            "2020-01-01T00:00:00Z",
        )));
        let rows = overdue_rows(&[Arc::new(old), Arc::new(schedule(true, None))]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0[1], ("schedule".to_owned(), "nightly".to_owned()));
        assert_eq!(
            (rows[0].1, rows[1].1),
            (1, 0),
            "created in 2020, overdue by now; suspended"
        );
    }
}
