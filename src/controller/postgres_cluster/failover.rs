//! Automatic failover: the operator hands the primary's Lease to the most advanced replica once
//! the primary has stopped renewing it.
//!
//! A task watches every cluster's Lease and remembers when each last changed, by the operator's
//! own clock ([`LeaseTracker`]). A Lease unchanged for [`LEASE_DURATION`] has expired: its
//! holder, which stops PostgreSQL after [`FENCE_AFTER`] without a renewal, no longer takes
//! writes. The task then wakes the cluster's reconcile, which picks the replica whose WAL goes
//! furthest and writes it as the holder, with the resourceVersion it saw: a primary that renewed
//! in between keeps its lease. The replica sees itself named, renews and promotes; the next
//! reconciles move the role labels.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};

use super::instances::Report;
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    facts::{
        cluster::{CLUSTER_LABEL, LEASE_DURATION},
        instance::InstanceState,
    },
};

/// A Lease as the operator last saw it change: what failover reads of it, not the Lease (which
/// with its labels and owner took about 2 KiB per cluster).
#[derive(Clone, Debug)]
pub struct Seen {
    /// The Lease's name.
    pub name: String,
    /// Its resourceVersion: a hand-over writes only over this version.
    version: Option<String>,
    /// Who holds it; `None` when nobody does.
    holder: Option<String>,
    /// Whether it was ever renewed: a Lease no primary renewed yet belongs to a cluster still
    /// bootstrapping.
    pub renewed: bool,
    /// The cluster it is for (its label).
    cluster: Option<String>,
    /// When the operator saw this version first.
    pub at: Instant,
    /// Whether the cluster was woken for this version's expiry.
    woken: bool,
    /// Whether its holder, or whether it was ever renewed, changed with this version: the
    /// cluster is woken to label its pods.
    changed: bool,
}

impl Seen {
    /// What is kept of `lease`, seen first at `at`.
    fn of(lease: &Lease, at: Instant) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            name: lease.name_any(),
            version: lease.resource_version(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.is_some_and(|s| s.renew_time.is_some()),
            cluster: lease.labels().get(CLUSTER_LABEL).cloned(),
            at,
            woken: false,
            changed: false,
        }
    }

    /// Who holds it; empty when nobody does.
    pub fn holder(&self) -> &str {
        self.holder.as_deref().unwrap_or("")
    }

    /// Whether its holder lost it: given up, or not renewed for [`LEASE_DURATION`].
    pub fn expired(&self, now: Instant) -> bool {
        self.holder().is_empty() || now.duration_since(self.at) >= LEASE_DURATION
    }

    /// How long it has not changed.
    pub fn age(&self, now: Instant) -> Duration {
        now.duration_since(self.at)
    }
}

/// Every cluster's Lease, by namespace and name, as the operator saw them change.
#[derive(Default)]
pub struct LeaseTracker {
    seen: Mutex<HashMap<(String, String), Seen>>,
    /// Primaries the operator restarted in place on purpose (a rolling update), by namespace and
    /// pod: when.
    restarted: Mutex<HashMap<(String, String), Instant>>,
}

/// How long a primary that the operator restarts in place on purpose may leave its Lease
/// unrenewed, beyond [`LEASE_DURATION`], before a replica is promoted: its pod is made again and
/// PostgreSQL starts, which takes longer than the Lease lasts.
pub const RESTART_GRACE: Duration = Duration::from_secs(60);

impl LeaseTracker {
    /// Notes that the operator restarts the primary `pod` in place now.
    pub fn restarting(&self, namespace: &str, pod: &str) {
        self.restarted
            .lock()
            .expect("never poisoned")
            .insert((namespace.to_owned(), pod.to_owned()), Instant::now());
    }

    /// What is left of [`RESTART_GRACE`] for `pod`, the Lease holder, at `now`: zero unless the
    /// operator restarted it on purpose within it.
    pub fn grace(&self, namespace: &str, pod: &str, now: Instant) -> Duration {
        let mut restarted = self.restarted.lock().expect("never poisoned");
        restarted.retain(|_, at| now.duration_since(*at) < RESTART_GRACE);
        restarted
            .get(&(namespace.to_owned(), pod.to_owned()))
            .map_or(Duration::ZERO, |at| {
                RESTART_GRACE.saturating_sub(now.duration_since(*at))
            })
    }

    /// Records `lease` as seen now; the clock restarts only when its version changed.
    pub fn saw(&self, lease: &Lease) {
        let key = (lease.namespace().unwrap_or_default(), lease.name_any());
        let mut seen = self.seen.lock().expect("never poisoned");
        let previous = seen.get(&key);
        if previous.is_some_and(|s| s.version == lease.resource_version()) {
            return;
        }
        let mut now = Seen::of(lease, Instant::now());
        now.changed =
            previous.is_some_and(|s| (&s.holder, s.renewed) != (&now.holder, now.renewed) || s.changed);
        seen.insert(key, now);
    }

    /// Lets go of the Lease `name` of `namespace`: it was found deleted.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.seen
            .lock()
            .expect("never poisoned")
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// The Lease `name` of `namespace`, if seen.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Seen> {
        self.seen
            .lock()
            .expect("never poisoned")
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The clusters whose Lease expired, changed holder or was first renewed since the last call.
    fn newly_expired(&self, now: Instant) -> Vec<ObjectRef<PostgresCluster>> {
        let mut seen = self.seen.lock().expect("never poisoned");
        let mut out = Vec::new();
        for ((namespace, _), s) in seen.iter_mut() {
            if s.changed || (!s.woken && s.expired(now)) {
                s.woken = s.woken || s.expired(now);
                s.changed = false;
                if let Some(cluster) = &s.cluster {
                    out.push(ObjectRef::new(cluster).within(namespace));
                }
            }
        }
        out
    }
}

/// Watches the Leases of Tusk's clusters into `tracker`, and sends each cluster whose Lease
/// expires to `wake`, checking 4 times a second.
pub async fn track(
    client: Client,
    tracker: std::sync::Arc<LeaseTracker>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<PostgresCluster>>,
) {
    let config = watcher::Config::default().labels(&crate::facts::cluster::managed_selector());
    let mut leases = std::pin::pin!(
        watcher(Api::<Lease>::all(client), config)
            .default_backoff()
            .touched_objects()
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            next = leases.next() => match next {
                Some(Ok(lease)) => tracker.saw(&lease),
                Some(Err(e)) => tracing::warn!(error = %e, "watching the primaries' Leases"),
                None => return,
            },
            _ = tick.tick() => {
                for cluster in tracker.newly_expired(Instant::now()) {
                    if wake.unbounded_send(cluster).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The instances other than `exclude` that answered as replicas of the cluster's system (the
/// system identifier most instances report).
fn replicas<'a>(
    reports: &'a [Report],
    exclude: &'a str,
) -> impl Iterator<Item = (&'a String, &'a InstanceState)> {
    let system = majority_system(reports);
    reports.iter().filter_map(move |(pod, r)| {
        let s = r.as_ref().ok()?;
        (pod != exclude && s.primary == Some(false) && s.system_identifier == system).then_some((pod, s))
    })
}

/// How many instances other than `exclude` answered as replicas of the cluster's system.
pub fn replicas_answering(reports: &[Report], exclude: &str) -> usize {
    replicas(reports, exclude).count()
}

/// The system identifier most instances report.
fn majority_system(reports: &[Report]) -> Option<String> {
    let mut systems: HashMap<&str, usize> = HashMap::new();
    for (_, r) in reports {
        if let Ok(Some(id)) = r.as_ref().map(|s| s.system_identifier.as_deref()) {
            *systems.entry(id).or_default() += 1;
        }
    }
    systems
        .into_iter()
        .max_by_key(|(id, n)| (*n, *id))
        .map(|(id, _)| id.to_owned())
}

/// The replica to promote: of those that answered as replicas of the cluster (the system
/// identifier most instances report), the one whose WAL goes furthest, then the lowest name.
/// `None` when no replica answered.
pub fn candidate(reports: &[Report], exclude: &str) -> Option<(String, u64)> {
    replicas(reports, exclude)
        .filter_map(|(pod, s)| s.wal_position().map(|at| (pod.clone(), at)))
        .max_by(|(a, at_a), (b, at_b)| at_a.cmp(at_b).then_with(|| b.cmp(a)))
}

/// The cluster's primary Lease as last seen, created when missing. A new cluster's names its
/// first pod and was never renewed (the first primary bootstraps); a cluster that already has a
/// primary (one made before Tusk had Leases) gets one held by that primary and marked renewed, so
/// no instance ever runs `initdb` on an empty volume beside its data.
pub async fn ensure_lease(
    ctx: &crate::controller::Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Seen, crate::controller::Error> {
    use crate::controller::Error;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::{Resource, api::PostParams};
    let names = crate::facts::cluster::Names(cluster.metadata.name.as_deref().unwrap_or_default());
    let name = names.primary_lease();
    if let Some(seen) = ctx.leases.get(namespace, &name) {
        return Ok(seen);
    }
    let api = Api::<Lease>::namespaced(ctx.client.clone(), namespace);
    let lease = match api
        .get_opt(&name)
        .await
        .map_err(Error::kube("reading the primary's Lease"))?
    {
        Some(lease) => lease,
        None => {
            let current = cluster.status.as_ref().and_then(|s| s.current_primary.clone());
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(crate::facts::cluster::labels(names.cluster())),
                    owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(current.clone().unwrap_or_else(|| names.first_primary())),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    renew_time: current.map(|_| MicroTime(k8s_openapi::jiff::Timestamp::now())),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(created) => created,
                Err(kube::Error::Api(e)) if e.code == 409 => api
                    .get(&name)
                    .await
                    .map_err(Error::kube("reading the primary's Lease"))?,
                Err(e) => {
                    return Err(Error::Kube {
                        step: "creating the primary's Lease",
                        source: e,
                    });
                }
            }
        }
    };
    ctx.leases.saw(&lease);
    Ok(ctx.leases.get(namespace, &name).expect("just seen"))
}

/// Hands `seen`'s Lease to `to`, with the resourceVersion seen: `Ok(false)` when the Lease
/// changed meanwhile (the primary renewed after all), and nothing was written. The Lease is read
/// first (a failover is rare; keeping every Lease whole for it cost memory all the time), and
/// written only if it is still the version seen.
pub async fn hand_over(
    ctx: &crate::controller::Context,
    namespace: &str,
    seen: &Seen,
    to: &str,
) -> Result<bool, crate::controller::Error> {
    let lease = Api::<Lease>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&seen.name)
        .await
        .map_err(crate::controller::Error::kube("reading the primary's Lease"))?;
    match lease {
        Some(lease) if lease.metadata.resource_version == seen.version => {
            hand_over_lease(ctx, namespace, lease, to).await
        }
        Some(_) => Ok(false),
        // Deleted by someone: no failover until it is made again, which the next reconcile
        // does once the tracker has let go of it.
        None => {
            ctx.leases.forget(namespace, &seen.name);
            Err(crate::controller::Error::Reported(
                crate::controller::runtime::Problem::new(
                    "LeaseMissing",
                    format!(
                        "the primary's Lease {} was deleted; it is made again, held by the pod the cluster's status \
                     names as primary",
                        seen.name
                    ),
                ),
            ))
        }
    }
}

/// Hands `lease` (as read, with its resourceVersion) to `to` as a new transition: `Ok(false)`
/// when it changed meanwhile, and nothing was written.
pub async fn hand_over_lease(
    ctx: &crate::controller::Context,
    namespace: &str,
    mut lease: Lease,
    to: &str,
) -> Result<bool, crate::controller::Error> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::PostParams;
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some(to.to_owned());
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    let api = Api::<Lease>::namespaced(ctx.client.clone(), namespace);
    match api
        .replace(&lease.name_any(), &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            ctx.leases.saw(&written);
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(crate::controller::Error::Kube {
            step: "handing the primary's Lease to a replica",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pod: &str, primary: bool, system: &str, lsn: &str) -> (String, Result<InstanceState, String>) {
        (
            pod.to_owned(),
            Ok(InstanceState {
                pod: pod.to_owned(),
                running: true,
                primary: Some(primary),
                system_identifier: Some(system.to_owned()),
                received_lsn: (!primary).then(|| lsn.to_owned()),
                current_lsn: primary.then(|| lsn.to_owned()),
                ..InstanceState::default()
            }),
        )
    }

    #[test]
    fn the_replica_whose_wal_goes_furthest_is_promoted() {
        let reports = vec![
            ("db-0".to_owned(), Err("unreachable".to_owned())),
            report("db-1", false, "7", "0/5000000"),
            report("db-2", false, "7", "0/5000100"),
        ];
        assert_eq!(
            candidate(&reports, "db-0"),
            Some(("db-2".to_owned(), 0x0500_0100))
        );
        // Ties go to the lowest name, so retries pick the same one.
        let tie = vec![
            report("db-2", false, "7", "0/5000000"),
            report("db-1", false, "7", "0/5000000"),
        ];
        assert_eq!(candidate(&tie, "db-0").unwrap().0, "db-1");
    }

    #[test]
    fn never_a_primary_the_old_holder_or_another_clusters_instance() {
        let reports = vec![
            report("db-0", true, "7", "0/9000000"),
            report("db-1", false, "7", "0/5000000"),
            report("db-2", false, "8", "0/9000000"),
            report("db-3", false, "7", "0/7000000"),
        ];
        assert_eq!(candidate(&reports, "db-3").unwrap().0, "db-1");
        assert_eq!(candidate(&[], "db-0"), None);
    }

    #[test]
    fn a_lease_expires_after_its_duration_by_the_operators_clock() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-primary", "namespace": "ns", "resourceVersion": "1", "labels": {"tusk.dev/cluster": "db"}},
            "spec": {"holderIdentity": "db-0"},
        }))
        .unwrap();
        let tracker = LeaseTracker::default();
        tracker.saw(&lease);
        let seen = tracker.get("ns", "db-primary").unwrap();
        assert!(!seen.expired(seen.at));
        assert!(seen.expired(seen.at + LEASE_DURATION));
        // The same version seen again keeps its clock; a new one restarts it.
        tracker.saw(&lease);
        assert_eq!(tracker.get("ns", "db-primary").unwrap().at, seen.at);
        let mut renewed = lease.clone();
        renewed.metadata.resource_version = Some("2".into());
        tracker.saw(&renewed);
        assert!(tracker.get("ns", "db-primary").unwrap().at >= seen.at);
        assert!(tracker.newly_expired(seen.at + LEASE_DURATION * 3).len() == 1);
        assert!(
            tracker.newly_expired(seen.at + LEASE_DURATION * 3).is_empty(),
            "woken once"
        );
    }
}
