//! What every controller shares, written once: the error type and the [`Problem`] each error
//! becomes in status, the one backoff, the driver that runs a kind's reconcile (counting it,
//! catching a panic in it), the status writer, the finalizer helper and Events.
//!
//! A kind adds only its own observe → build → apply → status.

use std::{borrow::Cow, fmt::Debug, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::warn;

use super::{Context, events::Happening};
use crate::sql::connections::SqlError;

/// What a controller reconciles: a namespaced object of a known kind that serializes.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Reconciles run at once per kind. Each holds a few objects in flight (a cluster's reconcile
/// about 200 KB: its desired children, where a Kubernetes `Volume` alone holds every kind of
/// volume source in place, the request and the response); without a bound, a thousand new
/// clusters would all reconcile at once and hold a thousand of those. A reconcile spends most of
/// its time waiting on the apiserver, one request after another, so eight keep it as busy as
/// sixteen did (`cargo xtask bench-controller`: the time to Ready is the apiserver's CPU time).
pub const MAX_CONCURRENT_RECONCILES: u16 = 8;

/// Why a reconcile failed. Every failure is retried with [`backoff`].
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
    /// SQL failed in a way a retry may fix (the cluster did not answer, or refused a statement).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Adding or removing Tusk's finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The object is not as it should be for a reason its status already names; reconcile tries
    /// again with backoff (a watch event may bring it back sooner).
    #[error("{}: {}", .0.reason, .0.message)]
    Reported(Problem),
    /// The reconcile panicked. The panic was caught; the object is tried again.
    #[error("reconcile panicked: {0}")]
    Panic(String),
}

impl Error {
    /// Wraps a client error with the step it happened in.
    pub fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { step, source }
    }

    /// Whether the API server refused the request for lack of permission (403): the operator
    /// runs with the permissions of an older release.
    pub fn forbidden(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(e), .. } if e.code == 403)
    }

    /// What the status says when the apiserver refused a write for a reason a retry alone does
    /// not fix: an invalid or immutable field, a quota, an admission policy or webhook, a missing
    /// permission (any 4xx but the operator's own credentials refused, a missing object, a
    /// conflict or throttling). `None` for any other failure, which is retried without a word in
    /// the status.
    pub fn refused(&self) -> Option<Problem> {
        match self {
            Self::Kube {
                step,
                source: kube::Error::Api(status),
            } if (400..500).contains(&status.code) && ![401, 404, 409, 429].contains(&status.code) => {
                Some(Problem::new(
                    "ChildRefused",
                    format!(
                        "the apiserver refused {step} ({} {}): {}",
                        status.code, status.reason, status.message
                    ),
                ))
            }
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::NotNamespaced => "not_namespaced",
            Self::Sql(_) => "sql",
            Self::Finalizer(_) => "finalizer",
            Self::Reported(_) => "reported",
            Self::Panic(_) => "panic",
        }
    }

    /// What a user reads in the object's status about this failure.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Reported(problem) => problem.clone(),
            Self::Sql(e) => Problem::new(sql_reason(e), e.to_string()),
            Self::Kube { .. } => Problem::new("KubernetesError", self.to_string()),
            Self::NotNamespaced => Problem::new("NotNamespaced", self.to_string()),
            Self::Finalizer(_) => Problem::new("FinalizerFailed", self.to_string()),
            Self::Panic(_) => Problem::new("ReconcilePanicked", self.to_string()),
        }
    }
}

/// The reason of a user's or database's problem while its cluster does not answer (not up yet,
/// no address, no password or CA yet).
pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";

/// The reason a SQL failure gets in status: the cluster could not be reached, or PostgreSQL
/// refused a statement.
pub fn sql_reason(error: &SqlError) -> &'static str {
    match error {
        SqlError::Endpoint(_) | SqlError::Connect { .. } | SqlError::Password(_) | SqlError::Tls(_) => {
            CLUSTER_UNREACHABLE
        }
        SqlError::Statement { .. } => "SqlFailed",
    }
}

/// Why an object is not as its spec says: a CamelCase reason and a message that names the field
/// or object at fault and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason, such as `InvalidSecret`.
    pub reason: Cow<'static, str>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// A problem with `reason` and `message`.
    pub fn new(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The longest wait before a SQL controller tries an unreachable cluster again.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(10);

/// The delay before retry `n` (1-based): 1 s, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("the failure map is never poisoned");
    let count = failures.entry(key(object.as_ref())).or_insert(0);
    *count += 1;
    // A user or database waiting for its cluster to answer looks again at least every 10 s: the
    // cluster's turning Ready may come before its server accepts connections, and nothing else
    // would bring it back before a long backoff ran out.
    let delay = if error.problem().reason == CLUSTER_UNREACHABLE {
        backoff(*count).min(UNREACHABLE_RETRY)
    } else {
        backoff(*count)
    };
    warn!(kind = %K::kind(&()), namespace = ?object.meta().namespace, name = ?object.meta().name, error = %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `controller` with `reconcile` until `shutdown`: at most [`MAX_CONCURRENT_RECONCILES`]
/// at once, each counted in the metrics, a panic caught and counted as an error
/// (`error="panic"`), and every failure retried with [`backoff`].
pub async fn drive<K, R, Fut>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    reconcile: R,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let store = controller.store();
    let reconcile = Arc::new(reconcile);
    let kind = K::kind(&()).into_owned();
    // Managing none until the first reconcile says otherwise: the gauge exists from the start.
    ctx.state.metrics.managing(&kind, 0);
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown)
        .run(
            move |object, ctx: Arc<Context>| {
                let (store, reconcile, kind) = (store.clone(), reconcile.clone(), kind.clone());
                async move {
                    let key = key(object.as_ref());
                    let started = std::time::Instant::now();
                    // A panic must not end the controller (and with it every other object's
                    // reconciles): it becomes an error of this object, retried with backoff.
                    let attempt = async {
                        fault::inject(object.meta());
                        reconcile(object.clone(), ctx.clone()).await
                    };
                    let result = AssertUnwindSafe(attempt)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|payload| Err(Error::Panic(panic_message(payload.as_ref()))));
                    let metrics = &ctx.state.metrics;
                    metrics.reconciled(
                        &kind,
                        started.elapsed(),
                        result.as_ref().err().map(Error::metric_label),
                    );
                    metrics.managing(&kind, store.len());
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

/// Writes `desired` as the status of `object` when it differs from `current`; nothing is sent
/// when they are equal, so a converged object costs no write. The patch takes `current` to
/// `desired` exactly (see [`merge_patch`]): a field `desired` leaves out is removed, not kept.
pub async fn write_status<K, S>(
    ctx: &Context,
    object: &K,
    current: Option<&S>,
    desired: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: PartialEq + Serialize,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let namespace = object.meta().namespace.as_deref().ok_or(Error::NotNamespaced)?;
    let desired = serde_json::to_value(desired)
        .map_err(|e| Error::kube("serializing the status")(kube::Error::SerdeError(e)))?;
    let patch = match current.map(serde_json::to_value) {
        Some(Ok(current)) => merge_patch(&current, &desired),
        _ => desired,
    };
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": patch })),
        )
        .await
        .map_err(Error::kube("writing the status"))?;
    Ok(true)
}

/// The JSON merge patch (RFC 7396) that turns `current` into `desired`: the keys whose values
/// differ, recursively for objects, and `null` for each key `desired` no longer has. A merge patch
/// of `desired` alone would keep those keys: a status field set once (`rejoinedAt` of an earlier
/// promotion, the `from` of one) would outlive the value it belonged to.
pub fn merge_patch(current: &serde_json::Value, desired: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            let mut patch = serde_json::Map::new();
            for (key, want) in desired {
                match current.get(key) {
                    Some(have) if have == want => {}
                    Some(have) => {
                        patch.insert(key.clone(), merge_patch(have, want));
                    }
                    None => {
                        patch.insert(key.clone(), want.clone());
                    }
                }
            }
            for key in current.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        // Arrays and scalars are replaced whole; a `null` in `desired` cannot be written as a
        // value by a merge patch anyway.
        _ => desired.clone(),
    }
}

/// Reconciles `object` under `name`, a finalizer: `apply` while it lives, `cleanup` once when it
/// is deleted (the finalizer goes when `cleanup` succeeds). Both get the object's namespace.
pub async fn with_finalizer<K, A, AF, C, CF>(
    name: &str,
    object: Arc<K>,
    ctx: Arc<Context>,
    apply: A,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Object,
    A: FnOnce(Arc<K>, Arc<Context>, String) -> AF,
    AF: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>, Arc<Context>, String) -> CF,
    CF: Future<Output = Result<Action, Error>>,
{
    let namespace = object.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, name, object, |event| async move {
        match event {
            finalizer::Event::Apply(object) => apply(object, ctx, namespace).await,
            finalizer::Event::Cleanup(object) => cleanup(object, ctx, namespace).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// What a user should see happen to an object, as a Kubernetes Event on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// A child or a database object was created: `Created`.
    Created(String),
    /// A child was changed because the spec changed: `Changed`.
    Changed(String),
    /// A child (or a role, or a database) was found changed by someone else and put back:
    /// `DriftRepaired`.
    DriftRepaired(String),
    /// Reconcile found a problem: a `Warning` with the problem's reason.
    Failed(Problem),
    /// Something that failed works again: `Resumed`.
    Resumed(String),
    /// A former primary runs again as a replica: `Rejoined`.
    Rejoined(String),
    /// A primary that could not keep its Lease stopped PostgreSQL at once (a Warning, `Fenced`).
    Fenced(String),
    /// An instance whose WAL went past the primary's timeline fork was brought onto it:
    /// `Rewound`.
    Rewound(String),
    /// A pod is restarted to run the current template (a rolling update): `RollingUpdate`.
    RollingUpdate(String),
    /// Instances run an older instance manager than the operator deploys:
    /// `InstanceManagerOutdated`.
    InstanceManagerOutdated(String),
    /// A replica was named the primary, asked for (`SwitchedOver`) or not (a Warning,
    /// `FailedOver`).
    Promoted {
        /// Whether a user asked for it.
        asked: bool,
        /// What happened.
        note: String,
    },
}

impl Happened {
    fn event(&self) -> Happening {
        let (type_, reason, note): (EventType, &str, &str) = match self {
            Self::Created(note) => (EventType::Normal, "Created", note),
            Self::Changed(note) => (EventType::Normal, "Changed", note),
            Self::DriftRepaired(note) => (EventType::Normal, "DriftRepaired", note),
            Self::Failed(problem) => (EventType::Warning, problem.reason.as_ref(), &problem.message),
            Self::Resumed(note) => (EventType::Normal, "Resumed", note),
            Self::Rejoined(note) => (EventType::Normal, "Rejoined", note),
            Self::Fenced(note) => (EventType::Warning, "Fenced", note),
            Self::Rewound(note) => (EventType::Normal, "Rewound", note),
            Self::RollingUpdate(note) => (EventType::Normal, "RollingUpdate", note),
            Self::InstanceManagerOutdated(note) => (EventType::Normal, "InstanceManagerOutdated", note),
            Self::Promoted { asked: true, note } => (EventType::Normal, "SwitchedOver", note),
            Self::Promoted { asked: false, note } => (EventType::Warning, "FailedOver", note),
        };
        // The apiserver refuses a note over 1 kB.
        let note: String = note.chars().take(1000).collect();
        Happening {
            type_,
            reason: reason.to_owned(),
            note,
            action: "Reconcile".to_owned(),
        }
    }
}

/// Records the `Warning` Event of `problem` on `object` unless `told`, the reason of the problem
/// its status showed before this reconcile, is the same: a problem is told when it appears or
/// changes, not at every retry.
pub async fn record_problem<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    told: Option<&str>,
    problem: &Problem,
) {
    if told != Some(problem.reason.as_ref()) {
        record(ctx, object, Happened::Failed(problem.clone())).await;
    }
}

/// Records `happened` as an Event on `object`. An Event is a courtesy to the user: failing to
/// write one is logged, never a reconcile error.
pub async fn record<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K, happened: Happened) {
    let reference = object.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&happened.event(), &reference).await {
        warn!(error = %e, "could not record an Event");
    }
}

/// A test-only fault hook, compiled only into debug builds: an object annotated
/// `tusk.dev/fault-injection: panic` makes its reconcile panic, so the tests can prove a panic
/// is caught, counted and retried while every other object is still served.
mod fault {
    /// The annotation.
    #[cfg(debug_assertions)]
    pub const ANNOTATION: &str = "tusk.dev/fault-injection";

    #[cfg(debug_assertions)]
    pub fn inject(meta: &kube::api::ObjectMeta) {
        if meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .map(String::as_str)
            == Some("panic")
        {
            panic!("fault injection: {ANNOTATION} asks this reconcile to panic");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn inject(_: &kube::api::ObjectMeta) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The patch takes the stored status to the desired one: changed keys, recursively; a key
    /// no longer wanted becomes `null` (removed); arrays are replaced whole; nothing for equal.
    #[test]
    fn a_status_patch_removes_what_the_desired_status_leaves_out() {
        let current = json!({
            "phase": "Ready",
            "lastPromotion": {"instance": "db-1", "from": "db-0", "time": "t1", "rejoinedAt": "t2"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "timeline": 2,
        });
        let desired = json!({
            "phase": "Ready",
            "lastPromotion": {"instance": "db-2", "from": "db-1", "time": "t3"},
            "conditions": [{"type": "Ready", "status": "False"}],
        });
        let patch = merge_patch(&current, &desired);
        assert_eq!(
            patch,
            json!({
                "lastPromotion": {"instance": "db-2", "from": "db-1", "time": "t3", "rejoinedAt": null},
                "conditions": [{"type": "Ready", "status": "False"}],
                "timeline": null,
            })
        );
        // Applied as a merge patch (RFC 7396), it gives exactly the desired status.
        let mut applied = current.clone();
        json_merge(&mut applied, &patch);
        assert_eq!(applied, desired);
        assert_eq!(merge_patch(&desired, &desired), json!({}));
    }

    /// RFC 7396's MergePatch, as the apiserver applies it.
    fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(target), Some(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        json_merge(
                            target.entry(key.clone()).or_insert(serde_json::Value::Null),
                            value,
                        );
                    }
                }
            }
            (_, Some(_)) => {
                *target = json!({});
                json_merge(target, patch);
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn backoff_starts_at_one_second_doubles_and_stops_at_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(1000), Duration::from_secs(300));
    }

    #[test]
    fn each_error_has_one_problem() {
        let refused = Error::Sql(SqlError::Statement {
            statement: "CREATE ROLE x".into(),
            message: "no".into(),
            code: None,
        });
        assert_eq!(refused.problem().reason, "SqlFailed");
        let unreachable = Error::Sql(SqlError::Password(
            "Secret db-superuser does not exist yet".into(),
        ));
        assert_eq!(unreachable.problem().reason, "ClusterUnreachable");
        let reported = Error::Reported(Problem::new(
            "OwnerMissing",
            "spec.owner: role app does not exist",
        ));
        assert_eq!(
            reported.problem(),
            Problem::new("OwnerMissing", "spec.owner: role app does not exist")
        );
        assert_eq!(Error::Panic("boom".into()).metric_label(), "panic");
    }

    /// A refusal a retry alone does not fix is told in the status; a conflict, a missing object,
    /// throttling, a server error or any other failure is not.
    #[test]
    fn only_a_refusal_is_told() {
        let refusal = |code: u16, reason: &str| Error::Kube {
            step: "a Service",
            source: kube::Error::Api(
                kube::core::Status::failure("Service \"db-pods\" is forbidden: no", reason)
                    .with_code(code)
                    .boxed(),
            ),
        };
        let told = refusal(403, "Forbidden").refused().expect("a 403 is told");
        assert_eq!(told.reason, "ChildRefused");
        assert_eq!(
            told.message,
            "the apiserver refused a Service (403 Forbidden): Service \"db-pods\" is forbidden: no"
        );
        assert!(refusal(422, "Invalid").refused().is_some());
        for (code, reason) in [
            (404, "NotFound"),
            (409, "Conflict"),
            (429, "TooManyRequests"),
            (500, "InternalError"),
        ] {
            assert_eq!(refusal(code, reason).refused(), None, "{code}");
        }
        assert_eq!(Error::Panic("boom".into()).refused(), None);
    }

    #[test]
    fn a_panic_keeps_its_message() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "boom 7");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "static");
    }

    #[test]
    fn events_carry_the_problem() {
        let event = Happened::Failed(Problem::new("InvalidSecret", "x".repeat(2000))).event();
        assert_eq!(event.reason, "InvalidSecret");
        assert!(matches!(event.type_, EventType::Warning));
        assert_eq!(event.note.len(), 1000);
    }

    #[cfg(debug_assertions)]
    #[test]
    fn the_fault_hook_panics_only_when_asked() {
        let mut meta = kube::api::ObjectMeta::default();
        fault::inject(&meta);
        meta.annotations = Some([(fault::ANNOTATION.to_owned(), "panic".to_owned())].into());
        assert!(std::panic::catch_unwind(|| fault::inject(&meta)).is_err());
    }
}
