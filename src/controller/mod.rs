//! The controllers `tusk-operator run` hosts. One module per kind; each reconcile observes what
//! it needs, builds what it wants (pure), applies only what differs (server-side apply) and writes
//! status only when it changed. What they share (errors and problems, backoff, panics, status,
//! finalizers, Events) is [`runtime`].

pub mod apply;
pub mod backup_target;
pub mod condition;
pub mod events;
pub mod known;
pub mod leader;
pub mod postgres_backup;
pub mod postgres_backup_schedule;
pub mod postgres_cluster;
pub mod postgres_database;
pub mod postgres_user;
pub mod runtime;
pub mod sql_target;

pub use self::runtime::{Error, Problem};

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use futures::TryStreamExt;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use self::{postgres_cluster::build::BuildConfig, runtime::drive};
use crate::api::{
    postgres_backup::v1::PostgresBackup, postgres_backup_schedule::v1::PostgresBackupSchedule,
    postgres_cluster::v1::PostgresCluster, postgres_database::v1::PostgresDatabase,
    postgres_user::v1::PostgresUser,
};
use crate::process::until_stopped;

/// A role on a cluster endpoint.
pub type VerifiedKey = (crate::sql::endpoint::Endpoint, String);

/// Shared by every reconcile.
pub struct Context {
    /// The client, with the operator's own credentials.
    pub client: Client,
    /// Images and other settings of the objects Tusk builds.
    pub config: BuildConfig,
    /// How often a converged object is reconciled again without any event.
    pub resync: Duration,
    /// Health and metrics.
    pub state: Arc<crate::admin::State>,
    /// How the operator reaches each cluster's SQL endpoint.
    pub endpoints: crate::sql::endpoint::Endpoints,
    /// Open connections to clusters.
    pub connections: crate::sql::connections::Connections,
    /// Roles whose stored verifier was checked against their password: (endpoint, role) to
    /// (verifier, SHA-256 of the password). A role whose verifier and password are unchanged
    /// is not checked again (a check costs 4096 HMAC rounds).
    pub verified: Mutex<HashMap<VerifiedKey, (String, [u8; 32])>>,
    /// Records Events on the objects Tusk reconciles.
    pub recorder: events::Recorder,
    /// Every cluster's primary Lease, as last seen change.
    pub leases: Arc<postgres_cluster::failover::LeaseTracker>,
    /// What the cluster controller knows without asking: see [`known`].
    pub known: Arc<known::Known>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        config: BuildConfig,
        endpoints: crate::sql::endpoint::Endpoints,
        resync: Duration,
        state: Arc<crate::admin::State>,
        known: Arc<known::Known>,
    ) -> Self {
        let connections = crate::sql::connections::Connections::new(state.metrics.sql_statements());
        let recorder = events::Recorder::new(
            client.clone(),
            crate::facts::operator::NAME.to_owned(),
            std::env::var(crate::facts::operator::env::POD_NAME).ok(),
        );
        Self {
            leases: Arc::default(),
            known,
            recorder,
            client,
            config,
            resync,
            state,
            endpoints,
            connections,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Runs every controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: BuildConfig,
    endpoints: crate::sql::endpoint::Endpoints,
    resync: Duration,
    state: Arc<crate::admin::State>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (known, writers) = known::Known::new();
    let known = Arc::new(known);
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        endpoints,
        resync,
        state,
        known.clone(),
    ));
    // Children trigger reconciles of their owner. They are watched as metadata only, only when
    // Tusk manages them, and only their resourceVersions are kept (see `known`); the
    // StatefulSets and pods are kept stripped to what a reconcile reads. The operator's memory
    // grows with the number of clusters, by a few KiB each.
    let managed = watcher::Config::default().labels(&crate::facts::cluster::managed_selector());
    let everything = watcher::Config::default();
    // A primary Lease that expires wakes its cluster at once, whatever the resync.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    tokio::spawn(postgres_cluster::failover::track(
        client.clone(),
        ctx.leases.clone(),
        wake,
    ));
    // Every event of a cluster reconciles it, its own status writes included. (Filtering those
    // out with a predicate on a stream of our own left the operator reconciling a stale copy of a
    // cluster for minutes after a user's change in the OLM channel-upgrade test; see issue 14's
    // notes.)
    let clusters = controller::<PostgresCluster>(&client)
        .reconcile_on(woken)
        // A new TLS security profile reaches every cluster's ConfigMap, and from there its pods.
        .reconcile_all_on(futures::stream::unfold(
            ctx.state.tls_profile.subscribe(),
            |mut profile| async move {
                profile.changed().await.ok()?;
                Some(((), profile))
            },
        ))
        .owns_stream(
            // Noted before it is stripped: the annotations count for `Known::unchanged`.
            known
                .note(
                    false,
                    watcher(Api::<StatefulSet>::all(client.clone()), managed.clone()).default_backoff(),
                )
                .map_ok(|event| known::keep(event, known::KeptStatefulSet::from))
                .reflect(writers.statefulsets)
                .touched_objects(),
        )
        .owns_stream(metadata::<ConfigMap>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<Secret>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<Service>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<ServiceAccount>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<k8s_openapi::api::rbac::v1::Role>(
            &client,
            &managed,
            Some(&known),
        ))
        .owns_stream(metadata::<k8s_openapi::api::rbac::v1::RoleBinding>(
            &client,
            &managed,
            Some(&known),
        ))
        .owns_stream(metadata::<PodDisruptionBudget>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<NetworkPolicy>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<PostgresUser>(&client, &managed, Some(&known)))
        .owns_stream(metadata::<PostgresDatabase>(&client, &managed, Some(&known)))
        // A pod's role label or readiness that changes is seen at once; reconcile reads the pods
        // from this watch.
        .watches_stream(
            known
                .note(
                    false,
                    watcher(Api::<Pod>::all(client.clone()), managed.clone())
                        .default_backoff()
                        .map_ok(|event| known::keep(event, known::KeptPod::from)),
                )
                .inspect_ok({
                    let known = known.clone();
                    move |event| known.index_pods(event)
                })
                .reflect(writers.pods)
                .touched_objects(),
            |pod| {
                let cluster = pod.labels().get(crate::facts::cluster::CLUSTER_LABEL)?;
                Some(ObjectRef::<PostgresCluster>::new(cluster).within(&pod.namespace()?))
            },
        )
        // A certificate Secret that names its cluster (cert-manager's, or a user's) is served as
        // soon as it changes.
        .watches_stream(
            metadata::<Secret>(
                &client,
                &watcher::Config::default().labels(&crate::facts::cluster::named_for_a_cluster_selector()),
                Some(&known),
            ),
            |secret| {
                let cluster = secret.labels().get(crate::facts::cluster::CLUSTER_LABEL)?;
                Some(ObjectRef::<PostgresCluster>::new(cluster).within(&secret.namespace()?))
            },
        )
        // A backup that completes moves the cluster's last successful backup.
        .watches_stream(
            watcher(Api::<PostgresBackup>::all(client.clone()), everything.clone())
                .default_backoff()
                .touched_objects(),
            |backup| {
                let namespace = backup.namespace().unwrap_or_default();
                Some(ObjectRef::<PostgresCluster>::new(&backup.spec.cluster.name).within(&namespace))
            },
        );
    known.clusters_from(clusters.store());
    let users = controller::<PostgresUser>(&client)
        // Noted too: a reconcile this event triggers must read the binding Secret as the event left
        // it, or it could apply the old password over a rotation (see `known`).
        .owns_stream(metadata::<Secret>(&client, &managed, Some(&known)));
    // A user's own password Secret is not Tusk's: every Secret's metadata is watched, and a change
    // reconciles the PostgresUsers that name it.
    let user_store = users.store();
    let password_users = user_store.clone();
    let users = users.watches_stream(
        metadata::<Secret>(&client, &everything, Some(&known)),
        move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            password_users
                .state()
                .into_iter()
                .filter(|u| {
                    u.namespace() == namespace
                        && u.spec.password_secret.as_ref().is_some_and(|p| p.name == name)
                })
                .map(|u| ObjectRef::from_obj(u.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    // A user or database that waits for its cluster (not up yet, not reachable) tries again as
    // soon as the cluster changes, rather than when its backoff runs out.
    let users = {
        let store = users.store();
        users.watches_stream(
            metadata::<PostgresCluster>(&client, &everything, None),
            move |cluster| in_cluster(&store, &cluster, |u| &u.spec.cluster.name),
        )
    };
    let databases = controller::<PostgresDatabase>(&client);
    let databases = {
        let store = databases.store();
        databases.watches_stream(
            metadata::<PostgresCluster>(&client, &everything, None),
            move |cluster| in_cluster(&store, &cluster, |d| &d.spec.cluster.name),
        )
    };
    // A database whose owner role is missing tries again as soon as a user in its cluster changes.
    let databases = {
        let (store, users) = (databases.store(), user_store.clone());
        databases.watches_stream(
            metadata::<PostgresUser>(&client, &everything, None),
            move |user| {
                let Some(user) = users
                    .get(&ObjectRef::new(&user.name_any()).within(&user.namespace().unwrap_or_default()))
                else {
                    return Vec::new();
                };
                let role = crate::sql::role::role_name(&user);
                store
                    .state()
                    .into_iter()
                    .filter(|d| {
                        d.namespace() == user.namespace()
                            && d.spec.cluster.name == user.spec.cluster.name
                            && d.spec.owner == role
                    })
                    .map(|d| ObjectRef::from_obj(d.as_ref()))
                    .collect()
            },
        )
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let backups = controller::<PostgresBackup>(&client);
    known.backups_from(backups.store());
    let schedules = controller::<PostgresBackupSchedule>(&client).owns(
        Api::<PostgresBackup>::all(client.clone()),
        watcher::Config::default(),
    );
    let schedule_store = schedules.store();
    ctx.state.metrics.overdue_schedules(Box::new(move || {
        postgres_backup_schedule::overdue_rows(&schedule_store.state())
    }));
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(
        drive(
            clusters,
            ctx.clone(),
            postgres_cluster::reconcile,
            until_stopped(stopped.clone())
        ),
        drive(
            users,
            ctx.clone(),
            postgres_user::reconcile,
            until_stopped(stopped.clone())
        ),
        drive(
            databases,
            ctx.clone(),
            postgres_database::reconcile,
            until_stopped(stopped.clone())
        ),
        drive(
            backups,
            ctx.clone(),
            postgres_backup::reconcile,
            until_stopped(stopped.clone())
        ),
        drive(
            schedules,
            ctx.clone(),
            postgres_backup_schedule::reconcile,
            until_stopped(stopped)
        ),
        shutdown,
    );
}

/// The annotation `kubectl apply` keeps its last applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A controller of every `K`, whose store keeps each object without its managedFields and
/// without `kubectl apply`'s copy of the whole object in an annotation: the reconcilers never
/// read either, and they are often the larger part of an object that several clients write
/// (the user, Tusk's status, kubectl).
fn controller<K>(client: &Client) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = kube::runtime::reflector::store();
    let objects = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .modify(|object| {
            let meta = object.meta_mut();
            meta.managed_fields = None;
            if let Some(annotations) = &mut meta.annotations {
                annotations.remove(LAST_APPLIED);
            }
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(objects, store)
}

/// Every change of any `K` that `config` selects, as metadata only; with `known`, each
/// resourceVersion is noted there (and nothing else is kept).
fn metadata<K: runtime::Object>(
    client: &Client,
    config: &watcher::Config,
    known: Option<&Arc<known::Known>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static {
    let events = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config.clone()).default_backoff();
    match known {
        Some(known) => {
            let everything = config.label_selector.is_none() && config.field_selector.is_none();
            futures::future::Either::Left(known.note(everything, events).touched_objects())
        }
        None => futures::future::Either::Right(events.touched_objects()),
    }
}

/// The objects in `store` that belong to `cluster` (in its namespace, naming it).
fn in_cluster<K>(
    store: &Store<K>,
    cluster: &PartialObjectMeta<PostgresCluster>,
    cluster_of: impl Fn(&K) -> &String,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (namespace, name) = (cluster.namespace(), cluster.name_any());
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace == namespace && *cluster_of(o) == name)
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}
