//! The controllers `tusk-operator run` hosts. One module per kind; each reconcile reads, builds
//! (pure), applies (server-side apply, no request when nothing changed) and writes status.

pub mod apply;
pub mod leader;
pub mod metrics;
pub mod password;
pub mod pending;
pub mod postgres_cluster;

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
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        config: BuildConfig,
        resync: Duration,
        state: Arc<crate::admin::State>,
    ) -> Self {
        Self {
            client,
            config,
            resync,
            state,
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
        }
    }
}

/// The delay before retry `n` (1-based): 1 s, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

fn key(cluster: &PostgresCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

fn error_policy(cluster: Arc<PostgresCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("the failure map is never poisoned");
    let count = failures.entry(key(&cluster)).or_insert(0);
    *count += 1;
    let delay = backoff(*count);
    warn!(name = %cluster.name_any(), error = %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
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
    resync: Duration,
    state: Arc<crate::admin::State>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context::new(client.clone(), config, resync, state));
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
    let controller = Controller::new(
        Api::<PostgresCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_stream(children::<StatefulSet>(&client, &managed))
    .owns_stream(children::<ConfigMap>(&client, &managed))
    .owns_stream(children::<Secret>(&client, &managed))
    .owns_stream(children::<Service>(&client, &managed))
    .owns_stream(children::<ServiceAccount>(&client, &managed))
    .owns_stream(children::<PodDisruptionBudget>(&client, &managed));
    let clusters = controller.store();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pending = [
        tokio::spawn(pending::run::<PostgresUser>(
            ctx.clone(),
            until_stopped(stopped.clone()),
        )),
        tokio::spawn(pending::run::<PostgresDatabase>(
            ctx.clone(),
            until_stopped(stopped.clone()),
        )),
        tokio::spawn(pending::run::<PostgresBackup>(
            ctx.clone(),
            until_stopped(stopped.clone()),
        )),
        tokio::spawn(pending::run::<PostgresBackupSchedule>(
            ctx.clone(),
            until_stopped(stopped),
        )),
    ];
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown)
        .run(
            move |cluster, ctx: Arc<Context>| {
                let clusters = clusters.clone();
                async move {
                    let key = key(&cluster);
                    let started = std::time::Instant::now();
                    let result = postgres_cluster::reconcile(cluster, ctx.clone()).await;
                    let metrics = &ctx.state.metrics;
                    metrics.reconciled(
                        "PostgresCluster",
                        started.elapsed(),
                        result.as_ref().err().map(Error::metric_label),
                    );
                    metrics.managing("PostgresCluster", clusters.state().len());
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
