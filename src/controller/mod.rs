//! The controllers `tusk-operator run` hosts. One module per kind; each reconcile reads, builds
//! (pure), applies (server-side apply, no request when nothing changed) and writes status.

pub mod apply;
pub mod condition;
pub mod leader;
pub mod metrics;
pub mod password;
pub mod pending;
pub mod postgres_cluster;
pub mod postgres_database;
pub mod postgres_user;
pub mod sql_target;

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller::Action, watcher},
};
use tracing::warn;

use self::postgres_cluster::build::BuildConfig;
use crate::api::{
    postgres_backup::v1::PostgresBackup, postgres_backup_schedule::v1::PostgresBackupSchedule,
    postgres_cluster::v1::PostgresCluster, postgres_database::v1::PostgresDatabase,
    postgres_user::v1::PostgresUser,
};

/// Reconciles run at once per kind. Each holds a few objects in flight; without a bound, a
/// thousand new clusters would all reconcile at once and hold a thousand responses in memory.
pub const MAX_CONCURRENT_RECONCILES: u16 = 16;

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
    ) -> Self {
        let connections = crate::sql::connections::Connections::new(state.metrics.sql_statements());
        Self {
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

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the apiserver failed.
    #[error("{step}: {source}")]
    Kube {
        /// What reconcile was doing.
        step: &'static str,
        /// The error.
        source: kube::Error,
    },
    /// A cluster-scoped object where a namespaced one is expected.
    #[error("the object has no namespace")]
    NotNamespaced,
    /// The superuser Secret holds a password that is not UTF-8.
    #[error("Secret {secret}: data.password is not UTF-8; delete the Secret to have a new password made")]
    InvalidSecret {
        /// The Secret.
        secret: String,
    },
    /// SQL failed in a way a retry may fix (the cluster did not answer, or refused a statement).
    #[error(transparent)]
    Sql(#[from] crate::sql::connections::SqlError),
    /// Adding or removing Tusk's finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Wraps a client error with the step it happened in.
    pub fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { step, source }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::NotNamespaced => "not_namespaced",
            Self::InvalidSecret { .. } => "invalid_secret",
            Self::Sql(_) => "sql",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// The delay before retry `n` (1-based): 1 s, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

fn key<K: kube::Resource>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let mut failures = ctx.failures.lock().expect("the failure map is never poisoned");
    let count = failures
        .entry(format!("{}/{}", K::kind(&()), key(object.as_ref())))
        .or_insert(0);
    *count += 1;
    let delay = backoff(*count);
    warn!(name = %object.name_any(), error = %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs `controller` with `reconcile` until `shutdown`: at most [`MAX_CONCURRENT_RECONCILES`]
/// at once, each counted in the metrics, failures retried with [`backoff`].
pub(crate) async fn drive<K, R, Fut>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    reconcile: R,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let store = controller.store();
    let reconcile = Arc::new(reconcile);
    let kind = K::kind(&()).into_owned();
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown)
        .run(
            move |object, ctx: Arc<Context>| {
                let (store, reconcile, kind) = (store.clone(), reconcile.clone(), kind.clone());
                async move {
                    let key = format!("{kind}/{}", key(object.as_ref()));
                    let started = std::time::Instant::now();
                    let result = reconcile(object, ctx.clone()).await;
                    let metrics = &ctx.state.metrics;
                    metrics.reconciled(
                        &kind,
                        started.elapsed(),
                        result.as_ref().err().map(Error::metric_label),
                    );
                    metrics.managing(&kind, store.state().len());
                    if result.is_ok() {
                        ctx.failures
                            .lock()
                            .expect("the failure map is never poisoned")
                            .remove(&key);
                    }
                    result
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Completes once `true` is sent on the channel `stop` belongs to, or its sender is gone: how one
/// shutdown reaches every task.
pub async fn until_stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
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
    let ctx = Arc::new(Context::new(client.clone(), config, endpoints, resync, state));
    // Children only trigger reconciles of their owner; reconcile reads what it needs. So they are
    // watched as metadata only, only when Tusk manages them, and not cached: the operator's
    // memory then grows with the number of clusters, not with the number of their children.
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=tusk-operator");
    fn children<K>(
        client: &Client,
        config: &watcher::Config,
    ) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config.clone())
            .default_backoff()
            .touched_objects()
    }
    let clusters = Controller::new(
        Api::<PostgresCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_stream(children::<StatefulSet>(&client, &managed))
    .owns_stream(children::<ConfigMap>(&client, &managed))
    .owns_stream(children::<Secret>(&client, &managed))
    .owns_stream(children::<Service>(&client, &managed))
    .owns_stream(children::<ServiceAccount>(&client, &managed))
    .owns_stream(children::<PodDisruptionBudget>(&client, &managed));
    let users = Controller::new(
        Api::<PostgresUser>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_stream(children::<Secret>(&client, &managed));
    // A user's own password Secret is not Tusk's: every Secret's metadata is watched, and a change
    // reconciles the PostgresUsers that name it.
    let user_store = users.store();
    let users = users.watches_stream(
        watcher(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects(),
        move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            user_store
                .state()
                .into_iter()
                .filter(|u| {
                    u.namespace() == namespace
                        && u.spec.password_secret.as_ref().is_some_and(|p| p.name == name)
                })
                .map(|u| kube::runtime::reflector::ObjectRef::from_obj(u.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let databases = Controller::new(
        Api::<PostgresDatabase>::all(client.clone()),
        watcher::Config::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pending = [
        tokio::spawn(pending::run::<PostgresBackup>(
            ctx.clone(),
            until_stopped(stopped.clone()),
        )),
        tokio::spawn(pending::run::<PostgresBackupSchedule>(
            ctx.clone(),
            until_stopped(stopped.clone()),
        )),
    ];
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
            until_stopped(stopped)
        ),
        shutdown,
    );
    for task in pending {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn backoff_starts_at_one_second_doubles_and_stops_at_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(super::backoff(1000), Duration::from_secs(300));
    }
}
