//! The `PostgresCluster` controller: observe → build → apply → status.
//!
//! - *observe* reads the one value Tusk keeps (the superuser password), the StatefulSet and the
//!   pods;
//! - *build* ([`build`]) makes every child from the spec, pure;
//! - *apply* sends a server-side apply only for a child that differs, and labels pod roles;
//! - *status* ([`status::desired_status`], pure) is written only when it changed.

pub mod backups;
pub mod build;
pub mod failover;
pub mod instances;
pub mod replication;
pub mod rollout;
pub mod status;
pub mod switchover;
pub mod tls;

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, instrument, warn};

use self::{
    build::Children,
    status::{Observed, desired_status},
};
use super::{
    Context, Error, Problem,
    apply::{Child, Outcome, ensure},
    condition::reason_when,
    runtime::{Happened, record, record_problem, write_status},
};
use crate::{
    api::{common::ConditionStatus, postgres_cluster::v1::PostgresCluster},
    facts::cluster::{CLUSTER_LABEL, Names, PASSWORD_KEY, ROLE_LABEL, Role},
};

/// One reconcile of one cluster.
#[instrument(skip_all, fields(namespace = %cluster.namespace().unwrap_or_default(), name = %cluster.name_any()))]
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or(Error::NotNamespaced)?;
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children; the StatefulSet's PVC
        // retention policy keeps or deletes the volumes.
        return Ok(Action::await_change());
    }
    let mut observed = Observed::default();
    let mut converging = false;
    // The StatefulSet this reconcile made, while its watch does not show it yet.
    let mut made = None;
    // What the apiserver refused of the children, told in the status, then retried with backoff.
    let mut refused = None;
    if cluster.spec.paused == Some(true) {
        observed.primary = cluster.status.as_ref().and_then(|s| s.current_primary.clone());
    } else {
        // Observe, build, apply.
        let password = superuser_password(&ctx, &namespace, &name).await?;
        let recovery = backups::resolve_recovery(&ctx, &cluster, &namespace).await?;
        let missing_claim = backups::without_missing_claim(&ctx, &cluster, &namespace).await?;
        let tls = match tls::material(&ctx, &cluster, &namespace).await? {
            Ok(material) => Ok(material),
            Err(tls::Refused::Problem(problem)) => Err(problem),
            Err(tls::Refused::Pki(e)) => {
                return Err(Error::Reported(Problem::new(
                    "CertificateNotIssued",
                    e.to_string(),
                )));
            }
        };
        match (password, recovery, tls) {
            (Ok(password), Ok(recovery), Ok(tls)) => {
                let built = missing_claim
                    .as_ref()
                    .map_or(cluster.as_ref(), |(_, without)| without);
                let children = build::children(
                    built,
                    &password,
                    &ctx.config,
                    recovery.as_ref(),
                    tls.as_ref(),
                    &ctx.state.tls_profile.get(),
                );
                // A child the apiserver refuses is a problem for the status; the rest of the
                // cluster is still observed, and the reconcile fails after the status is written.
                match apply_children(&cluster, &ctx, &children).await {
                    Ok(()) => {
                        if matches!(ctx.known.statefulset(&namespace, &name), Some(None)) {
                            made = Some(children.statefulset.clone());
                        }
                    }
                    Err(e) => refused = Some(e.refused().ok_or(e)?),
                }
                let roles = label_roles(&ctx, &namespace, &cluster).await?;
                observed.primary = roles.primary;
                observed.instances = roles.reported;
                observed.target_primary = roles.target;
                observed.promotion = roles.promotion;
                observed.switchover = roles.switchover;
                observed.rollout = roles.rollout;
                // Named once applied; the one named before stays meanwhile.
                if refused.is_none() {
                    observed.binding = Some(Names(&name).superuser_secret());
                }
                observed.refused = refused.is_some();
                // A failover's problem comes first: a refusal is told by the reconcile's error
                // too.
                observed.problem = roles
                    .problem
                    .or_else(|| refused.clone())
                    .or_else(|| missing_claim.map(|(problem, _)| problem))
                    .or_else(|| backups::target_problem(&cluster));
                converging = roles.converging;
            }
            // Only the user can fix these, so there is no fast retry. The Secret may be the
            // user's own (not labelled as Tusk's, so not watched): look again at resync.
            (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => {
                observed.problem = Some(problem)
            }
        }
        if cluster.spec.backup.is_some() {
            if let Some(problem) = backups::retain(&ctx, &cluster, &namespace).await? {
                observed.problem.get_or_insert(problem);
            }
            observed.backups =
                Some(backups::observe(&ctx, &cluster, &namespace, observed.primary.as_deref()).await?);
        }
    }
    // One just made stands, with no status yet: the status says it scales up, not that it is
    // being created, and the reconcile its watch event brings finds nothing new to write.
    observed.statefulset = statefulset(&ctx, &namespace, &name)
        .await?
        .map(Arc::unwrap_or_clone)
        .or(made);

    // Status, written only when it changed.
    let status = desired_status(&cluster, &observed, &super::condition::now_rfc3339());
    if write_status(&ctx, cluster.as_ref(), cluster.status.as_ref(), &status).await? {
        info!(ready = ?status.ready_instances, "status updated");
    }
    archiving_events(&ctx, &cluster, &status).await;
    if let Some(problem) = &observed.problem {
        let conditions = cluster.status.as_ref().and_then(|s| s.conditions.as_deref());
        let told = reason_when(conditions, "Degraded", ConditionStatus::True);
        record_problem(&ctx, cluster.as_ref(), told, problem).await;
    }
    if let Some(problem) = refused {
        return Err(Error::Reported(problem));
    }
    // While a failover goes on, look every second; otherwise an expiring Lease wakes the
    // cluster (see failover::track).
    Ok(Action::requeue(if converging {
        std::time::Duration::from_secs(1).min(ctx.resync)
    } else {
        ctx.resync
    }))
}

/// A Warning Event when WAL archiving starts failing (or fails for another reason), and a Normal
/// one when it works again.
async fn archiving_events(
    ctx: &Context,
    cluster: &PostgresCluster,
    status: &crate::api::postgres_cluster::v1::PostgresClusterStatus,
) {
    const TYPE: &str = "ContinuousArchiving";
    let before = cluster.status.as_ref().and_then(|s| s.conditions.as_deref());
    let now = status.conditions.as_deref();
    let failing_before = reason_when(before, TYPE, ConditionStatus::False);
    let message = |reason: &str| {
        now.into_iter()
            .flatten()
            .find(|c| c.type_ == TYPE && c.reason == reason)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    if let Some(reason) = reason_when(now, TYPE, ConditionStatus::False) {
        let problem = Problem::new(reason.to_owned(), message(reason));
        record_problem(ctx, cluster, failing_before, &problem).await;
    } else if failing_before.is_some()
        && let Some(reason) = reason_when(now, TYPE, ConditionStatus::True)
    {
        let happened = Happened::Resumed(format!("WAL archiving works again: {}", message(reason)));
        record(ctx, cluster, happened).await;
    }
}

/// The superuser's password: the one in the Secret when it has one, a new one otherwise. A
/// password the instance manager would refuse is a problem for the status, never a pod that
/// crash-loops.
async fn superuser_password(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Result<String, Problem>, Error> {
    let secret = Names(cluster).superuser_secret();
    let existing = ctx
        .known
        .read_own(
            &Api::<Secret>::namespaced(ctx.client.clone(), namespace),
            namespace,
            &secret,
        )
        .await
        .map_err(Error::kube("reading the superuser Secret"))?
        .and_then(|s| s.data.as_ref()?.get(PASSWORD_KEY).cloned());
    let Some(existing) = existing else {
        return Ok(Ok(crate::password::generate()));
    };
    let Ok(password) = String::from_utf8(existing.0) else {
        return Ok(Err(Problem::new(
            "InvalidSecret",
            format!(
                "Secret {secret}: data.{PASSWORD_KEY} is not UTF-8; set a UTF-8 password, or delete the \
                 Secret to have a new one made"
            ),
        )));
    };
    if let Err(broken) = crate::password::check(&password) {
        return Ok(Err(Problem::new(
            "InvalidSecret",
            format!(
                "Secret {secret}: data.{PASSWORD_KEY} {broken}; set such a password, or delete the Secret \
                 to have a new one made"
            ),
        )));
    }
    Ok(Ok(password))
}

/// The StatefulSet of cluster `name`, from its watch (metadata and status: see
/// [`super::known`]); read from the apiserver until that watch has listed.
pub async fn statefulset(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<StatefulSet>>, Error> {
    if let Some(known) = ctx.known.statefulset(namespace, name) {
        return Ok(known);
    }
    Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map(|s| s.map(Arc::new))
        .map_err(Error::kube("reading the StatefulSet"))
}

/// Applies every child that differs from what the cluster wants, and tells the user what changed:
/// one Event per kind of change (created, changed with the spec, put back after drift) naming
/// every child it touched, so that bringing a cluster up costs one Event, not one per child.
async fn apply_children(cluster: &PostgresCluster, ctx: &Context, children: &Children) -> Result<(), Error> {
    let mut changes = Changes::default();
    let applied = apply_each(cluster, ctx, children, &mut changes).await;
    // What was done before a failure is told too.
    changes.tell(ctx, cluster).await;
    applied
}

async fn apply_each(
    cluster: &PostgresCluster,
    ctx: &Context,
    children: &Children,
    changes: &mut Changes,
) -> Result<(), Error> {
    apply(ctx, &children.superuser, "the superuser Secret", changes).await?;
    if let Some((ca, tls)) = &children.tls {
        apply(ctx, ca, "the CA Secret", changes).await?;
        apply(ctx, tls, "the TLS Secret", changes).await?;
    }
    apply(ctx, &children.config, "the ConfigMap", changes).await?;
    apply(ctx, &children.service_account, "the ServiceAccount", changes).await?;
    // Permissions of an older release (its bundle's RBAC) may lack these: the cluster runs on
    // without a primary Lease, and says so.
    for outcome in [
        apply(ctx, &children.access.0, "the Role", changes).await,
        apply(ctx, &children.access.1, "the RoleBinding", changes).await,
    ] {
        match outcome {
            Err(e) if e.forbidden() => warn!(error = %e, "no permission for the pods' Lease access"),
            other => other?,
        }
    }
    for service in &children.services {
        apply(ctx, service, "a Service", changes).await?;
    }
    apply(ctx, &children.pdb, "the PodDisruptionBudget", changes).await?;
    match &children.network_policy {
        Some(policy) => apply(ctx, policy, "the NetworkPolicy", changes).await?,
        None => remove_network_policy(cluster, ctx).await?,
    }
    if let Some((user, database)) = &children.bootstrap {
        apply(ctx, user, "the bootstrap PostgresUser", changes).await?;
        apply(ctx, database, "the bootstrap PostgresDatabase", changes).await?;
    }
    apply(ctx, &children.statefulset, "the StatefulSet", changes).await
}

/// The children one reconcile created or changed, as `Kind name`.
#[derive(Default, Debug, PartialEq, Eq)]
struct Changes {
    created: Vec<String>,
    applied: Vec<String>,
}

impl Changes {
    /// Records [`events`](Self::events) on the cluster.
    async fn tell(&self, ctx: &Context, cluster: &PostgresCluster) {
        for happened in self.events(cluster) {
            record(ctx, cluster, happened).await;
        }
    }

    /// The Events that tell them: a change while the spec is the one last reconciled means
    /// someone else changed the child (drift, repaired); otherwise the spec changed.
    fn events(&self, cluster: &PostgresCluster) -> Vec<Happened> {
        let spec_unchanged =
            cluster.status.as_ref().and_then(|s| s.observed_generation) == cluster.metadata.generation;
        let mut events = Vec::new();
        if !self.created.is_empty() {
            events.push(Happened::Created(format!("created {}", self.created.join(", "))));
        }
        if !self.applied.is_empty() {
            let names = self.applied.join(", ");
            events.push(if spec_unchanged {
                let were = if self.applied.len() == 1 { "was" } else { "were" };
                Happened::DriftRepaired(format!(
                    "{names} {were} changed outside Tusk; put back as the spec says"
                ))
            } else {
                Happened::Changed(format!("updated {names} to the new spec"))
            });
        }
        events
    }
}

/// Applies one child outside [`apply_children`], telling its change as an Event of its own.
async fn apply_alone<K: Child>(
    cluster: &PostgresCluster,
    ctx: &Context,
    child: &K,
    what: &'static str,
) -> Result<(), Error> {
    let mut changes = Changes::default();
    let applied = apply(ctx, child, what, &mut changes).await;
    changes.tell(ctx, cluster).await;
    applied
}

/// Applies one child and notes what it took in `changes`.
async fn apply<K: Child>(
    ctx: &Context,
    child: &K,
    what: &'static str,
    changes: &mut Changes,
) -> Result<(), Error> {
    let outcome = ensure(&ctx.client, &ctx.known, child)
        .await
        .map_err(|source| Error::Kube { step: what, source })?;
    let child_name = format!(
        "{} {}",
        K::kind(&()),
        child.meta().name.as_deref().unwrap_or_default()
    );
    match outcome {
        Outcome::Unchanged => {}
        Outcome::Created => changes.created.push(child_name),
        Outcome::Applied => changes.applied.push(child_name),
    }
    Ok(())
}

/// Deletes the NetworkPolicy this cluster had Tusk make, once the spec no longer asks for it; a
/// NetworkPolicy of the same name that the cluster does not own is left alone.
async fn remove_network_policy(cluster: &PostgresCluster, ctx: &Context) -> Result<(), Error> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let step = "the NetworkPolicy";
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    // The NetworkPolicies Tusk made are labelled as its own, and watched.
    if ctx.known.absent::<NetworkPolicy>(&namespace, &name) == Some(true) {
        return Ok(());
    }
    let api = kube::Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &namespace);
    let Some(policy) = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::Kube { step, source })?
    else {
        return Ok(());
    };
    let ours = policy
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == cluster.metadata.uid.as_ref());
    if ours {
        api.delete(&name, &Default::default())
            .await
            .map_err(|source| Error::Kube { step, source })?;
    }
    Ok(())
}

/// What [`label_roles`] found.
struct Roles {
    /// The pod labelled primary now, if any.
    primary: Option<String>,
    /// What each instance reported.
    reported: Vec<status::Reported>,
    /// Something the user should know.
    problem: Option<Problem>,
    /// A failover is under way: look again soon.
    converging: bool,
    /// The pod the Lease names: the primary, or the one becoming it.
    target: Option<String>,
    /// A replica named primary in this reconcile.
    promotion: Option<crate::api::postgres_cluster::v1::Promotion>,
    /// `status.switchover`; `None` when none is asked for.
    switchover: Option<crate::api::postgres_cluster::v1::SwitchoverStatus>,
    /// What a rolling update does or waits for: the `Progressing` reason and message.
    rollout: Option<(&'static str, String)>,
}

/// The `InstanceManagerOutdated` note when the instances that run an older instance manager than
/// `current` are not the ones the status showed (so it is told once per change, as an operator
/// upgrade that brings a new instance manager begins, or a cluster of an older one is adopted).
/// Pure.
fn outdated_note<'a>(
    cluster: &PostgresCluster,
    instances: impl IntoIterator<Item = (&'a str, Option<&'a (String, bool)>)>,
    current: &str,
) -> Option<String> {
    let outdated: Vec<String> = instances
        .into_iter()
        .filter_map(|(pod, manager)| match manager {
            Some((image, false)) => Some(format!("{pod} ({image})")),
            _ => None,
        })
        .collect();
    let shown: Vec<String> = cluster
        .status
        .as_ref()
        .and_then(|s| s.instance_status.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.instance_manager_outdated == Some(true))
        .map(|i| format!("{} ({})", i.name, i.instance_manager.as_deref().unwrap_or("")))
        .collect();
    (!outdated.is_empty() && outdated != shown).then(|| {
        format!(
            "{} run an older instance manager than {current}; each takes it when the rolling update restarts it, \
             replicas first and the primary last, as spec.updateStrategy allows",
            outdated.join(", ")
        )
    })
}

/// The image `pod`'s instance manager was copied from: its install init container's.
fn instance_manager_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == crate::facts::operator::INSTALL_CONTAINER)?
        .image
        .as_deref()
}

/// Asks every instance for its state, fails over when the primary's Lease expired, and labels
/// each pod with its role: the Lease holder is the primary once it reports that it accepts
/// writes (so `-rw` selects it), every other pod a replica. While the holder is a replica being
/// promoted, no pod is labelled primary. See [`failover`].
async fn label_roles(ctx: &Context, namespace: &str, cluster: &PostgresCluster) -> Result<Roles, Error> {
    let name = cluster.name_any();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    // From the pod watch; listed only until that watch has listed.
    let items = match ctx.known.pods(namespace, &name) {
        Some(items) => items,
        None => {
            pods.list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}")))
                .await
                .map_err(Error::kube("listing the pods"))?
                .items
        }
    };
    let list = kube::core::ObjectList {
        types: Default::default(),
        metadata: Default::default(),
        items,
    };
    let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
    let reports = instances::poll(ctx, namespace, &name, &names).await;
    // Each pod's instance manager, and whether it is the one the operator deploys.
    let managers: Vec<Option<(String, bool)>> = list
        .items
        .iter()
        .map(|pod| {
            instance_manager_of(pod)
                .map(|image| (image.to_owned(), image == ctx.config.instance_manager_image))
        })
        .collect();
    let reported = |reports: &[instances::Report]| -> Vec<status::Reported> {
        list.items
            .iter()
            .zip(reports.iter())
            .zip(&managers)
            .map(|((pod, (_, report)), manager)| status::Reported {
                pod: pod.name_any(),
                ready: crate::controller::postgres_backup::pod_ready(pod),
                state: report.clone(),
                instance_manager: manager.clone(),
            })
            .collect()
    };
    let instances = names
        .iter()
        .map(String::as_str)
        .zip(managers.iter().map(Option::as_ref));
    if let Some(note) = outdated_note(cluster, instances, &ctx.config.instance_manager_image) {
        record(ctx, cluster, Happened::InstanceManagerOutdated(note)).await;
    }
    let labelled = list
        .items
        .iter()
        .find(|p| p.labels().get(ROLE_LABEL).map(String::as_str) == Some(Role::Primary.label()))
        .map(ResourceExt::name_any);
    let seen = match failover::ensure_lease(ctx, cluster, namespace).await {
        Ok(seen) => seen,
        Err(e) if e.forbidden() => {
            let problem = Problem::new(
                "LeaseForbidden",
                format!(
                    "the operator may not read or create the primary's Lease ({e}); its permissions are \
                     an older release's: nothing fails over until they are updated"
                ),
            );
            return Ok(Roles {
                primary: cluster.status.as_ref().and_then(|s| s.current_primary.clone()),
                reported: reported(&reports),
                problem: Some(problem),
                converging: false,
                target: None,
                promotion: None,
                switchover: None,
                rollout: None,
            });
        }
        Err(e) => return Err(e),
    };
    let mut holder = seen.holder().to_owned();
    let mut problem = None;
    let mut converging = false;
    let mut promotion = None;
    let mut reports = reports;
    let now = std::time::Instant::now();
    // A Lease no primary renewed yet belongs to a cluster still bootstrapping (initdb, or a
    // restore that may take hours): nothing to fail over from.
    let bootstrapping = !seen.renewed;
    // A primary the rolling update restarts in place has its pod made again and PostgreSQL
    // started before a replica is promoted in its place.
    let grace = ctx.leases.grace(namespace, &holder, now);
    let delay = failover_delay(cluster) + grace;
    let mut switchover = None;
    let mut rollout_note = None;
    let mut switched_to: Option<(String, String)> = None;
    if !seen.expired(now) && !bootstrapping {
        // A switchover the user asked for.
        if let Some(step) = switchover::step(ctx, cluster, namespace, &seen, &reports).await? {
            if let Some(to) = step.handed_to.clone() {
                switched_to = Some((to, step.status.message.clone().unwrap_or_default()));
            }
            if step.status.phase == switchover::PENDING || step.status.phase == switchover::RUNNING {
                converging = true;
            }
            switchover = Some(step.status);
        }
    } else if seen.expired(now)
        && !bootstrapping
        && seen.age(now) < crate::facts::cluster::LEASE_DURATION + delay
    {
        // The primary may come back within spec.failoverDelay.
        converging = true;
        problem = Some(Problem::new(
            "PrimaryUnresponsive",
            format!(
                "the primary {holder} has not renewed its Lease for {:.1} s; a replica is promoted after {:?} more (spec.failoverDelay{})",
                seen.age(now).as_secs_f64(),
                (crate::facts::cluster::LEASE_DURATION + delay).saturating_sub(seen.age(now)),
                if !grace.is_zero() {
                    ", and the time the rolling update gives a primary it restarts in place"
                } else {
                    ""
                }
            ),
        ));
    } else if seen.expired(now) && !bootstrapping && !names.is_empty() {
        let lapsed = format!(
            "the primary {} has not renewed its Lease for {:.1} s",
            if holder.is_empty() { "(none)" } else { &holder },
            seen.age(now).as_secs_f64()
        );
        let needed = replication::reports_needed(cluster);
        let answered = failover::replicas_answering(&reports, &holder);
        if answered < needed {
            problem = Some(Problem::new(
                "NoFailoverCandidate",
                format!(
                    "{lapsed}, but only {answered} replica(s) answered: with spec.replication.synchronous \
                     dataDurability Required, {needed} must, or the one promoted could lack acknowledged commits"
                ),
            ));
        } else {
            match failover::candidate(&reports, &holder) {
                // Nothing to promote: the cluster waits for a replica (or the primary) to answer,
                // at its resync, without polling every second.
                None => {
                    problem = Some(Problem::new(
                        "NoFailoverCandidate",
                        format!("{lapsed}, and no replica answered to take over"),
                    ));
                }
                Some((to, at)) => {
                    let message = format!(
                        "{lapsed}: promoting {to}, the replica whose WAL goes furthest ({})",
                        crate::facts::instance::format_lsn(at)
                    );
                    converging = true;
                    if failover::hand_over(ctx, namespace, &seen, &to).await? {
                        warn!(from = %holder, %to, "failing over");
                        promotion = Some(promoted(ctx, cluster, &holder, &to, false, message).await);
                        holder = to;
                    }
                }
            }
        }
    }
    // The next step of a rolling update, when nothing else moves the primary in this reconcile
    // (also while bootstrapping or with no failover candidate: a new template may be the fix).
    if !converging && switched_to.is_none() && promotion.is_none() && !holder.is_empty() {
        let (note, busy, to) = roll(ctx, cluster, namespace, &list.items, &holder, &seen, &reports).await?;
        rollout_note = note;
        converging |= busy;
        switched_to = to;
    }
    if let Some((to, message)) = switched_to {
        info!(from = %holder, %to, "switched over");
        promotion = Some(promoted(ctx, cluster, &holder, &to, true, message).await);
        holder = to;
        // The roles changed: label them from what the instances say now.
        reports = instances::poll(ctx, namespace, &name, &names).await;
    }
    let state_of = |pod: &str| {
        instances::report(&reports, pod)
            .and_then(|r| r.as_ref().ok())
            .and_then(|s| s.primary)
    };
    let primary = match state_of(&holder) {
        Some(true) => Some(holder.clone()),
        // Named, still a replica: it promotes within a second or two.
        Some(false) => {
            converging = true;
            None
        }
        // Unreachable from here, but it holds a live Lease: it stays where it is. (When the
        // Lease expires, the tracker wakes the cluster.)
        None if labelled.as_deref() == Some(holder.as_str()) && !seen.expired(now) => Some(holder.clone()),
        None => None,
    };
    let strays: Vec<&String> = names
        .iter()
        .filter(|p| **p != holder && state_of(p) == Some(true))
        .collect();
    if !strays.is_empty() {
        problem.get_or_insert(Problem::new(
            "UnexpectedPrimary",
            format!(
                "{} accept writes without holding the primary's Lease (held by {holder}); they are never labelled primary",
                strays.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for pod in &list.items {
        let pod_name = pod.name_any();
        let role = if Some(&pod_name) == primary.as_ref() {
            Role::Primary
        } else {
            Role::Replica
        };
        if pod.labels().get(ROLE_LABEL).map(String::as_str) != Some(role.label()) {
            info!(pod = %pod_name, role = role.label(), "labelling the pod's role");
            pods.patch(
                &pod_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {ROLE_LABEL: role.label()}}})),
            )
            .await
            .map_err(Error::kube("labelling a pod's role"))?;
        }
    }
    if let Some(primary) = &primary {
        replication::apply(ctx, cluster, namespace, primary, &reports).await;
    }
    let last = promotion
        .as_ref()
        .or_else(|| cluster.status.as_ref()?.last_promotion.as_ref());
    if let Some(rejoined) = instance_events(ctx, cluster, &reports, last).await {
        promotion = Some(rejoined);
    }
    // Keep a switchover asked for while the primary was lost as it was.
    let switchover = cluster
        .spec
        .switchover
        .as_ref()
        .and(switchover.or_else(|| cluster.status.as_ref().and_then(|s| s.switchover.clone())));
    Ok(Roles {
        // The pod that holds the primary's Lease: the primary, or the one becoming it.
        primary: primary.or_else(|| (!holder.is_empty()).then(|| holder.clone())),
        reported: reported(&reports),
        problem,
        converging,
        target: (!holder.is_empty()).then_some(holder),
        promotion,
        switchover,
        rollout: rollout_note,
    })
}

/// One step of a rolling update (see [`rollout`]): the `Progressing` note, whether to look again
/// soon, and the replica a switchover made the primary.
#[allow(clippy::type_complexity)]
async fn roll(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    pods: &[Pod],
    holder: &str,
    seen: &failover::Seen,
    reports: &[instances::Report],
) -> Result<(Option<(&'static str, String)>, bool, Option<(String, String)>), Error> {
    let note = |reason: &'static str, message: String| Some((reason, message));
    Ok(
        match rollout::next(ctx, cluster, namespace, pods, holder, reports).await? {
            rollout::Next::Done => (None, false, None),
            rollout::Next::Wait(why) => (note("RollingUpdate", why), true, None),
            rollout::Next::WaitForUser(what) => (note("WaitingForUser", what), false, None),
            rollout::Next::Restart(pod) => {
                let what = if pod == holder {
                    format!("restarting the primary {pod} in place on the new revision")
                } else {
                    format!("restarting replica {pod} on the new revision (replicas first, the primary last)")
                };
                info!(%pod, "rolling update: restarting");
                if pod == holder {
                    ctx.leases.restarting(namespace, &pod);
                }
                let uid = pods
                    .iter()
                    .find(|p| p.name_any() == pod)
                    .and_then(|p| p.metadata.uid.clone());
                if rollout::restart(ctx, namespace, &pod, uid).await? {
                    record(ctx, cluster, Happened::RollingUpdate(what.clone())).await;
                    (note("RollingUpdate", what), true, None)
                } else {
                    warn!(%pod, "no permission to delete pods: the rolling update waits");
                    let why = format!(
                        "{pod} runs an old revision, but the operator may not delete pods (its permissions \
                     are an older release's); delete it to update it"
                    );
                    (note("RollingUpdate", why), false, None)
                }
            }
            rollout::Next::SwitchOver(to) => {
                match switchover::perform(ctx, cluster, namespace, seen, reports, &to).await? {
                    switchover::Switch::Done { message, .. } => {
                        let what = format!(
                            "switched over to the updated {to} so the primary {holder} can be restarted"
                        );
                        (note("RollingUpdate", what), true, Some((to, message)))
                    }
                    switchover::Switch::Pending(why) | switchover::Switch::Failed(why) => (
                        note("RollingUpdate", format!("switching over to {to}: {why}")),
                        true,
                        None,
                    ),
                }
            }
        },
    )
}

/// Records the promotion of `to` (from `from`, the holder before; empty when none): its Event,
/// and what `status.lastPromotion` shows.
async fn promoted(
    ctx: &Context,
    cluster: &PostgresCluster,
    from: &str,
    to: &str,
    asked: bool,
    message: String,
) -> crate::api::postgres_cluster::v1::Promotion {
    record(
        ctx,
        cluster,
        Happened::Promoted {
            asked,
            note: message.clone(),
        },
    )
    .await;
    crate::api::postgres_cluster::v1::Promotion {
        instance: to.to_owned(),
        from: (!from.is_empty()).then(|| from.to_owned()),
        reason: if asked { "Switchover" } else { "Failover" }.to_owned(),
        time: super::condition::now_rfc3339(),
        message: Some(message),
        rejoined_at: None,
    }
}

/// A `Fenced` or `Rewound` Event for each fence or rewind an instance reports that its status
/// does not show yet; a `Rejoined` Event once the primary before the `last` promotion runs as a
/// replica on the new primary's timeline, back by `pg_rewind` (or a fresh clone), or demoted in
/// place by a switchover. The promotion itself keeps that it was announced (`rejoinedAt`), so the
/// Event is recorded when the former primary is first seen back, whatever the status showed in
/// between (a switchover's demotion can finish before the status write that records the
/// promotion), and not again once the status holds `rejoinedAt` (a reconcile that fails before
/// its status write records it again). Returns the promotion with `rejoinedAt` set when this call
/// recorded it.
async fn instance_events(
    ctx: &Context,
    cluster: &PostgresCluster,
    reports: &[instances::Report],
    last: Option<&crate::api::postgres_cluster::v1::Promotion>,
) -> Option<crate::api::postgres_cluster::v1::Promotion> {
    let status = cluster.status.as_ref();
    let before = status.and_then(|s| s.instance_status.as_ref());
    for (pod, report) in reports {
        let (Ok(state), shown) = (report, status::before(before.map(Vec::as_slice), pod)) else {
            continue;
        };
        if let Some(at) = state.fenced_at.as_deref()
            && shown.and_then(|i| i.fenced_at.as_deref()) != Some(at)
        {
            let note = format!(
                "{pod} fenced itself at {at}: as the primary it could not keep the primary's Lease, so it \
                 stopped PostgreSQL at once, before a replica could be promoted; no write committed on it after"
            );
            record(ctx, cluster, Happened::Fenced(note)).await;
        }
        if let Some(at) = state.rewound_at.as_deref()
            && shown.and_then(|i| i.rewound_at.as_deref()) != Some(at)
        {
            let note = format!(
                "{pod} was brought onto the primary's timeline at {at}: its WAL went past the point where \
                 that timeline forked off, so it was rewound (or cloned afresh, its old data directory kept aside)"
            );
            record(ctx, cluster, Happened::Rewound(note)).await;
        }
    }
    let last = last.filter(|p| p.rejoined_at.is_none())?;
    let timeline = rejoined(last, reports)?;
    let former = last.from.as_deref()?;
    let note = format!("{former}, the primary before, runs as a replica on timeline {timeline}");
    record(ctx, cluster, Happened::Rejoined(note)).await;
    Some(crate::api::postgres_cluster::v1::Promotion {
        rejoined_at: Some(super::condition::now_rfc3339()),
        ..last.clone()
    })
}

/// The timeline on which the primary before `promotion` runs as a replica of the one promoted,
/// when the reports show it does: the promoted instance accepts writes, and the former one is in
/// recovery receiving that same timeline.
fn rejoined(
    promotion: &crate::api::postgres_cluster::v1::Promotion,
    reports: &[instances::Report],
) -> Option<u32> {
    let state = |pod: &str| instances::report(reports, pod)?.as_ref().ok();
    let primary = state(&promotion.instance).filter(|s| s.primary == Some(true))?;
    let former = state(promotion.from.as_deref()?).filter(|s| s.primary == Some(false))?;
    former.timeline.filter(|t| Some(*t) == primary.timeline)
}

/// `spec.failoverDelay`, zero when unset (the CRD's pattern admits only what parses).
fn failover_delay(cluster: &PostgresCluster) -> std::time::Duration {
    cluster
        .spec
        .failover_delay
        .as_deref()
        .and_then(|d| crate::process::parse_duration(d).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    //! The children of a set of clusters, against `build/testdata/children.json`: what the
    //! operator builds is what it built before, to the byte. A changed pod template restarts every
    //! database on an operator upgrade, so a difference here must be on purpose. To accept one,
    //! run the test with `TUSK_BLESS=1` and review the diff of the file.
    use serde_json::{Value, json};

    use super::build;

    fn specs() -> Vec<(Value, Option<i64>)> {
        let uid = Some(999);
        vec![
            (json!({}), uid),
            (
                json!({"instances": 3, "postgres": {"version": 16, "parameters": {"work_mem": "8MB", "x": "it's \\ odd"}}}),
                uid,
            ),
            (
                json!({"postgres": {"version": 17, "image": "registry.example/pg:17.2"}}),
                None,
            ),
            (
                json!({"storage": {"data": {"size": "5Gi", "storageClassName": "fast"}, "wal": {"size": "1Gi"}, "reclaimPolicy": "Delete"}}),
                uid,
            ),
            (
                json!({"storage": {"data": {"size": "5Gi"}, "reclaimPolicy": "Retain"}}),
                uid,
            ),
            (
                json!({"bootstrap": {"initdb": {"database": "app", "owner": "alice", "encoding": "LATIN1", "locale": "C", "dataChecksums": false}}}),
                uid,
            ),
            (
                json!({"bootstrap": {"initdb": {"database": "app", "dataChecksums": true}}}),
                uid,
            ),
            (
                json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}}),
                uid,
            ),
            (
                json!({"backup": {"target": {"s3": {
                    "bucket": "backups", "path": "prod", "endpoint": "https://s3.example",
                    "credentialsSecret": "s3", "caBundle": {"name": "s3-ca", "key": "ca.crt"},
                    "serverSideEncryption": {"type": "AES256"},
                }}, "archiveTimeout": "60s", "retention": "30d"}}),
                uid,
            ),
        ]
    }

    fn built() -> Value {
        let cases = specs().into_iter().map(|(extra, uid)| {
            let cluster = build::tests::cluster(build::tests::spec(extra.clone()));
            // The configuration 1.0.0's CSV gave the operator: its instance manager, and the
            // PostgreSQL image template (`TUSK_POSTGRES_IMAGE`). The children of the same inputs
            // and configuration never change; a new configuration (a new instance manager, a
            // new PostgreSQL image catalog) is a rolling update, as the release notes say.
            let config = build::BuildConfig {
                postgres_uid: uid,
                instance_manager_image: "ghcr.io/tusk-operator/tusk-operator:1.0.0".into(),
                postgres_images: Default::default(),
                postgres_image: Some("docker.io/library/postgres:{major}".into()),
                ..Default::default()
            };
            let c = build::children(
                &cluster,
                "pw",
                &config,
                None,
                None,
                &crate::tls_profile::Profile::intermediate(),
            );
            json!({
                "spec": extra,
                "postgresUid": uid,
                "children": [
                    c.superuser, c.config, c.service_account, c.access.0, c.access.1, c.statefulset,
                    c.services[0], c.services[1], c.services[2], c.pdb,
                    c.bootstrap.as_ref().map(|b| &b.0), c.bootstrap.as_ref().map(|b| &b.1),
                ],
            })
        });
        Value::Array(cases.collect())
    }

    #[test]
    fn the_children_are_the_ones_built_before() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/controller/postgres_cluster/build/testdata/children.json");
        let now = built();
        if std::env::var_os("TUSK_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        }
        let before: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (now, before) in now.as_array().unwrap().iter().zip(before.as_array().unwrap()) {
            assert_eq!(now, before, "the children of spec {} changed", now["spec"]);
        }
        assert_eq!(now.as_array().unwrap().len(), before.as_array().unwrap().len());
    }

    /// Instances of an older instance manager are told once per change of which they are: not
    /// while the status already shows the same ones, again when the set changes, never when
    /// every instance runs the current one.
    #[test]
    fn outdated_instance_managers_are_told_once_per_change() {
        use super::status::Reported;
        let (old, new) = ("reg/tusk-operator:1.0.0", "reg/tusk-operator:1.1.0");
        let pod = |name: &str, image: &str| Reported {
            pod: name.to_owned(),
            ready: true,
            state: Err("not asked".to_owned()),
            instance_manager: Some((image.to_owned(), image == new)),
        };
        let cluster = |reported: &[Reported]| {
            let mut c = build::tests::cluster(build::tests::spec(json!({"instances": 2})));
            c.status = Some(crate::api::postgres_cluster::v1::PostgresClusterStatus {
                instance_status: super::status::instance_status(reported, None),
                ..Default::default()
            });
            c
        };
        let note_of = |c: &crate::api::postgres_cluster::v1::PostgresCluster, reported: &[Reported]| {
            let instances = reported
                .iter()
                .map(|r| (r.pod.as_str(), r.instance_manager.as_ref()));
            super::outdated_note(c, instances, new)
        };
        let both_old = [pod("db-0", old), pod("db-1", old)];
        let note = note_of(&cluster(&[]), &both_old).unwrap();
        assert!(note.starts_with("db-0 (reg/tusk-operator:1.0.0), db-1 (reg/tusk-operator:1.0.0) run an older instance manager than reg/tusk-operator:1.1.0"), "{note}");
        assert_eq!(note_of(&cluster(&both_old), &both_old), None);
        let one_old = [pod("db-0", old), pod("db-1", new)];
        let note = note_of(&cluster(&both_old), &one_old).unwrap();
        assert!(note.starts_with("db-0 (reg/tusk-operator:1.0.0) run"), "{note}");
        let none_old = [pod("db-0", new), pod("db-1", new)];
        assert_eq!(note_of(&cluster(&one_old), &none_old), None);
        let status = super::status::instance_status(&one_old, None).unwrap();
        assert_eq!(status[0].instance_manager_outdated, Some(true));
        assert_eq!(status[1].instance_manager_outdated, Some(false));
        assert_eq!(status[1].instance_manager.as_deref(), Some(new));
    }

    /// The former primary rejoined once it is in recovery on the timeline the promoted one writes;
    /// not while it still writes, does not answer, or receives an older timeline.
    #[test]
    fn a_former_primary_rejoined_once_it_receives_the_new_timeline() {
        use crate::facts::instance::InstanceState;
        let promotion = crate::api::postgres_cluster::v1::Promotion {
            instance: "db-1".into(),
            from: Some("db-0".into()),
            reason: "Switchover".into(),
            time: "2026-12-01T00:00:00Z".into(),
            ..Default::default()
        };
        let at = |primary: Option<bool>, timeline: u32| InstanceState {
            primary,
            timeline: Some(timeline),
            ..Default::default()
        };
        let reports = |former: Result<InstanceState, String>, promoted: InstanceState| {
            vec![("db-0".to_owned(), former), ("db-1".to_owned(), Ok(promoted))]
        };
        let rejoined = |r: &[super::instances::Report]| super::rejoined(&promotion, r);
        assert_eq!(
            rejoined(&reports(Ok(at(Some(false), 3)), at(Some(true), 3))),
            Some(3)
        );
        // Demoted, but still on the timeline before the promotion.
        assert_eq!(
            rejoined(&reports(Ok(at(Some(false), 2)), at(Some(true), 3))),
            None
        );
        // Still the primary, or not answering.
        assert_eq!(rejoined(&reports(Ok(at(Some(true), 2)), at(Some(true), 3))), None);
        assert_eq!(rejoined(&reports(Ok(at(None, 3)), at(Some(true), 3))), None);
        assert_eq!(rejoined(&reports(Err("refused".into()), at(Some(true), 3))), None);
        // The promoted one is not (yet) the primary.
        assert_eq!(
            rejoined(&reports(Ok(at(Some(false), 3)), at(Some(false), 3))),
            None
        );
    }

    /// One Event per kind of change, naming every child; a change is drift only while the spec
    /// is the one last reconciled.
    #[test]
    fn changes_are_told_in_one_event_per_kind() {
        use super::{Changes, Happened};
        let mut cluster = build::tests::cluster(build::tests::spec(json!({})));
        cluster.metadata.generation = Some(2);
        let changes = Changes {
            created: vec!["ConfigMap db-config".into(), "Service db-rw".into()],
            applied: vec!["Secret db-superuser".into()],
        };
        assert_eq!(
            changes.events(&cluster),
            vec![
                Happened::Created("created ConfigMap db-config, Service db-rw".into()),
                Happened::Changed("updated Secret db-superuser to the new spec".into()),
            ]
        );
        cluster.status = Some(crate::api::postgres_cluster::v1::PostgresClusterStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        assert_eq!(
            changes.events(&cluster)[1],
            Happened::DriftRepaired(
                "Secret db-superuser was changed outside Tusk; put back as the spec says".into()
            )
        );
        assert_eq!(Changes::default().events(&cluster), vec![]);
    }
}
