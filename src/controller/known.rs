//! What the controllers know without asking the apiserver, so that a converged cluster's (and
//! user's, and database's) resync sends no request at all:
//!
//! - the resourceVersion of every child its watches see (metadata only, nothing else kept);
//! - for each child, the resourceVersion it last applied (or found holding what it wants) and a
//!   hash of what it wanted then: while both still match, the child needs no read and no write;
//! - the Secrets they read (the superuser password, the cluster's certificates, binding and
//!   user password Secrets), kept while their watched resourceVersion is the one read;
//! - the StatefulSets and pods of its clusters, from watches, stripped to what a reconcile reads.
//!
//! Everything that changes reaches here through a watch event before the reconcile that event
//! triggers, so a child changed by anyone else is read once and put back. Whatever is not known
//! (a watch that has not listed yet, after a restart; a Secret that is not labelled for its
//! cluster) is read from the apiserver, as before: a gap costs a request, never a wrong answer.

use std::{
    any::Any,
    borrow::Cow,
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hasher},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use futures::{FutureExt, Stream, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetStatus},
    core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus, Secret},
};
use k8s_openapi::{
    ByteString,
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
};
use kube::{
    Api, Resource, ResourceExt,
    api::ObjectMeta,
    runtime::{
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use crate::{
    api::{postgres_backup::v1::PostgresBackup, postgres_cluster::v1::PostgresCluster},
    facts::{cluster::CLUSTER_LABEL, operator::INSTALL_CONTAINER},
};

/// The key of an object: `Kind/namespace/name`.
fn key_of(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The key of the `K` named `name` in `namespace`.
pub fn key<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    key_of(&K::kind(&()), namespace, name)
}

/// What the maps of [`State`] hold a key as: 128 bits of its SHA-256, not the text. Keys
/// (`Kind/namespace/name`) are read only for equality, and a fleet's objects each had two or
/// three copies of theirs, about 60 bytes each on the heap; two keys that share these 128 bits
/// are as likely as a random guess of a 128-bit secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Id(u128);

impl Id {
    fn of(key: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self(u128::from_le_bytes(first))
    }
}

/// A controller's store, once it is set and its watch has listed.
fn synced<K>(store: Option<&Store<K>>) -> Option<&Store<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store?;
    store.wait_until_ready().now_or_never()?.ok()?;
    Some(store)
}

/// A hash of what Tusk wants an object to hold. It lives only in this process's memory. The
/// JSON text streams into the hasher; it is never held whole.
pub fn hash<T: serde::Serialize + ?Sized>(wanted: &T) -> u64 {
    /// Feeds what is written into a hasher.
    struct Feed(DefaultHasher);
    impl std::io::Write for Feed {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut feed = Feed(DefaultHasher::new());
    serde_json::to_writer(&mut feed, wanted).expect("what Tusk hashes serializes");
    feed.0.finish()
}

/// A resourceVersion as [`Known`] holds it. The apiserver's are decimal numbers (etcd's
/// revisions), held as one without an allocation; any other text is held as it is. Only
/// equality is ever asked of them. `Unknown` is no version: never equal to one seen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    Unknown,
    Number(u64),
    Text(Box<str>),
}

impl Version {
    fn of(version: Option<&str>) -> Self {
        match version {
            None | Some("") => Self::Unknown,
            // Only the canonical decimal form: "007" and "+7" must stay unequal to "7".
            Some(text) => {
                let canonical =
                    text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
                match text.parse::<u64>() {
                    Ok(number) if canonical => Self::Number(number),
                    _ => Self::Text(text.into()),
                }
            }
        }
    }

    /// Whether `self` and `other` are the same known version.
    fn same(&self, other: &Self) -> bool {
        *self != Self::Unknown && self == other
    }
}

/// The resourceVersion a watch last saw for an object, and which watches see it.
struct Seen {
    /// `Unknown` when one watch saw it deleted and another still sees it.
    version: Version,
    /// The generation and the hash of the labels and annotations, for [`Known::unchanged`] of
    /// kinds whose status changes their resourceVersion.
    generation: Option<i64>,
    meta: u64,
    /// One bit per watch (its index in `State::watches`) that sees it now.
    watches: u64,
}

/// What Tusk applied (or found holding what it wanted): the object's resourceVersion,
/// generation, and hash of labels and annotations then, and the [`hash`] of what it wanted.
struct Applied {
    version: Version,
    generation: Option<i64>,
    meta: u64,
    wanted: u64,
}

/// Kinds whose controllers write their status often (a StatefulSet's replicas, a
/// PodDisruptionBudget's healthy pods), each write a new resourceVersion, and whose generation
/// counts every change of their spec: for these, the same generation, labels and annotations
/// mean the same object as far as Tusk applies it.
const STATUS_KINDS: [&str; 2] = ["StatefulSet", "PodDisruptionBudget"];

/// The hash of an object's labels and annotations.
fn meta_hash(meta: &kube::api::ObjectMeta) -> u64 {
    hash(&(&meta.labels, &meta.annotations))
}

/// One watch feeding [`Known`]: its kind, whether it selects every object of it, whether it has
/// listed once, and whether it is listing again now.
struct Watch {
    kind: String,
    everything: bool,
    listed: bool,
    relisting: bool,
}

/// At most this many watches feed one [`Known`]: one bit each in [`Seen::watches`].
const MAX_WATCHES: usize = 64;

#[derive(Default)]
struct State {
    live: HashMap<Id, Seen>,
    watches: Vec<Watch>,
    /// What was applied, or found holding what was wanted.
    applied: HashMap<Id, Applied>,
    /// Objects read, with the resourceVersion read.
    read: HashMap<Id, KeptSecret>,
    /// The values of the Secrets in `read`, each kept once however many Secrets hold it (a
    /// cluster's CA certificate is in three of its Secrets).
    values: HashSet<Arc<[u8]>>,
    /// Objects [`Known::read_own`] took as absent without a read: the next write of one is a
    /// create, which fails if someone made it meanwhile (see [`Known::create_only`]).
    inferred: HashSet<Id>,
    /// Objects such a create found there: read, not taken as absent, until a watch sees them.
    present: HashSet<Id>,
}

impl State {
    fn forget(&mut self, id: Id) {
        self.live.remove(&id);
        self.applied.remove(&id);
        self.unread(id);
        self.inferred.remove(&id);
    }

    /// Keeps `kept` under `id`, in place of what was kept there; a Secret without a
    /// resourceVersion is let go.
    fn keep_read(&mut self, id: Id, kept: KeptSecret) {
        if kept.version == Version::Unknown {
            self.release(Some(kept));
            return;
        }
        let old = self.read.insert(id, kept);
        self.release(old);
    }

    /// Lets go of the Secret kept under `id`.
    fn unread(&mut self, id: Id) {
        let old = self.read.remove(&id);
        self.release(old);
    }

    /// Lets go of the values of `kept` that no other kept Secret holds.
    fn release(&mut self, kept: Option<KeptSecret>) {
        for (_, value) in kept.into_iter().flat_map(|k| k.data.into_vec()) {
            // Held by `values` and by `value` alone: no Secret holds it any more.
            if Arc::strong_count(&value) == 2 {
                self.values.remove(&value);
            }
        }
    }

    /// Whether a watch that selects every `kind` has listed, and is not listing again.
    fn all_listed(&self, kind: &str) -> bool {
        self.watches
            .iter()
            .any(|w| w.kind == kind && w.everything && w.listed && !w.relisting)
    }
}

/// The names of the pods the pod watch holds, by namespace and cluster label, so that finding a
/// cluster's pods costs what the cluster has, not what the fleet has.
#[derive(Default)]
struct PodIndex {
    /// What the store holds.
    names: ClusterPods,
    /// While the watch lists again: what the new list gave so far. It replaces `names` when the
    /// list is done, as the reflector's store does.
    relisting: Option<ClusterPods>,
}

/// Pod names by namespace, then cluster label.
type ClusterPods = HashMap<Box<str>, HashMap<Box<str>, std::collections::BTreeSet<Box<str>>>>;

fn index_insert(index: &mut ClusterPods, namespace: &str, cluster: &str, name: &str) {
    index
        .entry(namespace.into())
        .or_default()
        .entry(cluster.into())
        .or_default()
        .insert(name.into());
}

fn index_remove(index: &mut ClusterPods, namespace: &str, cluster: &str, name: &str) {
    let Some(clusters) = index.get_mut(namespace) else {
        return;
    };
    if let Some(names) = clusters.get_mut(cluster) {
        names.remove(name);
        if names.is_empty() {
            clusters.remove(cluster);
        }
    }
    if clusters.is_empty() {
        index.remove(namespace);
    }
}

/// The namespace, cluster label and name of a pod, when it has all three.
fn pod_place(pod: &KeptPod) -> Option<(&str, &str, &str)> {
    Some((
        pod.metadata.namespace.as_deref()?,
        pod.metadata.labels.as_ref()?.get(CLUSTER_LABEL)?.as_str(),
        pod.metadata.name.as_deref()?,
    ))
}

/// See the module documentation.
pub struct Known {
    state: Mutex<State>,
    statefulsets: Store<KeptStatefulSet>,
    pods: Store<KeptPod>,
    pod_index: Mutex<PodIndex>,
    clusters: OnceLock<Store<PostgresCluster>>,
    backups: OnceLock<Store<PostgresBackup>>,
}

/// What fills the stores of a [`Known`]: the StatefulSet and pod watches, through
/// [`WatchStreamExt::reflect`](kube::runtime::WatchStreamExt::reflect).
pub struct Writers {
    /// Fills [`Known::statefulset`].
    pub statefulsets: Writer<KeptStatefulSet>,
    /// Fills [`Known::pods`].
    pub pods: Writer<KeptPod>,
}

impl Known {
    /// Knows nothing yet.
    pub fn new() -> (Self, Writers) {
        let (statefulsets, statefulset_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        let known = Self {
            state: Mutex::default(),
            statefulsets,
            pods,
            pod_index: Mutex::default(),
            clusters: OnceLock::new(),
            backups: OnceLock::new(),
        };
        (
            known,
            Writers {
                statefulsets: statefulset_writer,
                pods: pod_writer,
            },
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the known state is never poisoned")
    }

    /// Passes `events` on, noting the resourceVersion of every object in them. `everything`
    /// says the watch selects every object of its kind (no label or field selector): then an
    /// object it does not see is not there (see [`read_own`](Self::read_own)).
    pub fn note<K, S>(
        self: &Arc<Self>,
        everything: bool,
        events: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + Send + 'static,
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let watch = {
            let mut state = self.state();
            assert!(
                state.watches.len() < MAX_WATCHES,
                "at most {MAX_WATCHES} watches feed what is known"
            );
            state.watches.push(Watch {
                kind: K::kind(&()).into_owned(),
                everything,
                listed: false,
                relisting: false,
            });
            state.watches.len() - 1
        };
        let known = self.clone();
        events.inspect_ok(move |event| known.record(watch, event))
    }

    fn record<K: Resource<DynamicType = ()>>(&self, watch: usize, event: &watcher::Event<K>) {
        let mut state = self.state();
        let key = |object: &K| {
            let meta = object.meta();
            key_of(
                &K::kind(&()),
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            )
        };
        let bit = 1u64 << watch;
        match event {
            watcher::Event::Init => {
                // Seen by this watch again only if its new listing has it.
                state.watches[watch].relisting = true;
                for seen in state.live.values_mut() {
                    seen.watches &= !bit;
                }
            }
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let id = Id::of(&key(object));
                let meta = object.meta();
                let watches = state.live.get(&id).map_or(0, |s| s.watches) | bit;
                state.present.remove(&id);
                state.live.insert(
                    id,
                    Seen {
                        version: Version::of(meta.resource_version.as_deref()),
                        generation: meta.generation,
                        meta: meta_hash(meta),
                        watches,
                    },
                );
            }
            watcher::Event::Delete(object) => {
                let id = Id::of(&key(object));
                match state.live.get_mut(&id) {
                    // Another watch still sees it (this one's selector may no longer match it):
                    // it is there, as it is now is not known.
                    Some(seen) if seen.watches & !bit != 0 => {
                        seen.watches &= !bit;
                        seen.version = Version::Unknown;
                        seen.generation = None;
                    }
                    _ => state.forget(id),
                }
            }
            watcher::Event::InitDone => {
                // What no watch sees any more, after this one's new listing, is gone.
                let w = &mut state.watches[watch];
                w.listed = true;
                w.relisting = false;
                let gone: Vec<Id> = state
                    .live
                    .iter()
                    .filter(|(_, s)| s.watches == 0)
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    state.forget(id);
                }
            }
        }
    }

    /// Whether some watch of `kind` has listed every object it selects.
    fn listed(state: &State, kind: &str) -> bool {
        state.watches.iter().any(|w| w.kind == kind && w.listed)
    }

    /// Whether the `K` named `name` is known not to exist (among the objects Tusk manages):
    /// `None` when no watch of `K` has listed yet.
    pub fn absent<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> Option<bool> {
        let state = self.state();
        Self::listed(&state, &K::kind(&()))
            .then(|| !state.live.contains_key(&Id::of(&key::<K>(namespace, name))))
    }

    /// Whether the `K` named `name` is known never to have been there: a watch of `K` has listed,
    /// sees no such object, and Tusk has not applied one since (a watch may not show that yet).
    /// An object of that name without Tusk's labels may still stand, unseen.
    pub fn unseen<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        let state = self.state();
        let id = Id::of(&key::<K>(namespace, name));
        Self::listed(&state, &K::kind(&()))
            && !state.live.contains_key(&id)
            && !state.applied.contains_key(&id)
    }

    /// Whether the object under `key` still is as it was when it held what hashes to `wanted`:
    /// the watch sees the resourceVersion it had then or, for the [`STATUS_KINDS`], the same
    /// generation, labels and annotations (a new status alone changes nothing Tusk applies).
    pub fn unchanged(&self, key: &str, wanted: u64) -> bool {
        let state = self.state();
        let id = Id::of(key);
        let (Some(applied), Some(seen)) = (state.applied.get(&id), state.live.get(&id)) else {
            return false;
        };
        let status_kind = key
            .split_once('/')
            .is_some_and(|(kind, _)| STATUS_KINDS.contains(&kind));
        applied.wanted == wanted
            && (applied.version.same(&seen.version)
                || (status_kind
                    && applied.generation.is_some()
                    && applied.generation == seen.generation
                    && applied.meta == seen.meta))
    }

    /// Notes that the object with `meta` (as the apiserver returned it) held what hashes to
    /// `wanted`.
    pub fn applied(&self, key: &str, meta: &kube::api::ObjectMeta, wanted: u64) {
        let id = Id::of(key);
        let mut state = self.state();
        match &meta.resource_version {
            Some(version) => state.applied.insert(
                id,
                Applied {
                    version: Version::of(Some(version)),
                    generation: meta.generation,
                    meta: meta_hash(meta),
                    wanted,
                },
            ),
            None => state.applied.remove(&id),
        };
    }

    /// The Secret named `name` in `namespace`: as read (or written) before while its
    /// resourceVersion is the one a watch sees now, read from the apiserver otherwise. Only
    /// Secrets a watch sees (labelled for a cluster, or already noted) are kept: nothing would
    /// tell when another changed. What is returned is what is kept (see [`KeptSecret`]), read
    /// from the apiserver or not.
    pub async fn read(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        let id = Id::of(&key::<Secret>(namespace, name));
        {
            let state = self.state();
            if let (Some(kept), Some(seen)) = (state.read.get(&id), state.live.get(&id))
                && kept.version.same(&seen.version)
            {
                return Ok(Some(Arc::new(kept.secret(namespace, name))));
            }
        }
        let Some(secret) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let labelled = secret.labels().contains_key(CLUSTER_LABEL);
        let mut state = self.state();
        let kept = KeptSecret::new(secret, &mut state.values);
        let secret = Arc::new(kept.secret(namespace, name));
        if labelled || state.live.contains_key(&id) {
            state.keep_read(id, kept);
        } else {
            state.release(Some(kept));
        }
        Ok(Some(secret))
    }

    /// Like [`read`](Self::read), for an object Tusk makes when it is not there (a cluster's
    /// superuser, CA and certificate Secrets): when a watch that selects every object of its
    /// kind has listed and does not see it, and Tusk has not written or read it, it is taken as
    /// absent without a request. That watch may not show yet an object made a moment ago, so
    /// the write that makes this one is a create, which fails on it: see
    /// [`create_only`](Self::create_only).
    pub async fn read_own(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        if self.taken_absent::<Secret>(namespace, name) {
            return Ok(None);
        }
        self.read(api, namespace, name).await
    }

    /// Whether [`read_own`](Self::read_own) takes the `K` named `name` as absent without a
    /// request; if so, the write that makes it is [`create_only`](Self::create_only).
    fn taken_absent<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        let id = Id::of(&key::<K>(namespace, name));
        let mut state = self.state();
        let absent = state.all_listed(&K::kind(&()))
            && !state.live.contains_key(&id)
            && !state.applied.contains_key(&id)
            && !state.read.contains_key(&id)
            && !state.present.contains(&id);
        if absent {
            state.inferred.insert(id);
        }
        absent
    }

    /// Whether the object under `key` was taken as absent without a read (see
    /// [`read_own`](Self::read_own)), so that it is made with a create, which fails on one
    /// someone else made meanwhile, never with an apply, which would take it over. Asking
    /// clears it.
    pub fn create_only(&self, key: &str) -> bool {
        self.state().inferred.remove(&Id::of(key))
    }

    /// Notes that the object under `key`, taken as absent, is there after all: it is read from
    /// the apiserver until a watch sees it.
    pub fn present(&self, key: &str) {
        let id = Id::of(key);
        let mut state = self.state();
        state.inferred.remove(&id);
        state.present.insert(id);
    }

    /// Keeps `object`, which Tusk just wrote, for [`read`](Self::read): a Secret it applied need
    /// not be read back while the watch sees the resourceVersion the apply returned. Only
    /// Secrets are kept (the only kind read that way), as a [`KeptSecret`].
    pub fn wrote<K>(&self, key: &str, object: K)
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let Ok(secret) = (Box::new(object) as Box<dyn Any>).downcast::<Secret>() else {
            return;
        };
        let mut state = self.state();
        let kept = KeptSecret::new(*secret, &mut state.values);
        state.keep_read(Id::of(key), kept);
    }

    /// Reads clusters from `store`: the cluster controller's own.
    pub fn clusters_from(&self, store: Store<PostgresCluster>) {
        let _ = self.clusters.set(store);
    }

    /// The `PostgresCluster` named `name` as the cluster controller's watch last saw it; `None`
    /// until that watch has listed.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Option<Arc<PostgresCluster>>> {
        Some(synced(self.clusters.get())?.get(&ObjectRef::new(name).within(namespace)))
    }

    /// Reads backups from `store`: the backup controller's own.
    pub fn backups_from(&self, store: Store<PostgresBackup>) {
        let _ = self.backups.set(store);
    }

    /// The `PostgresBackup`s in `namespace` as the backup controller's watch last saw them;
    /// `None` until that watch has listed.
    pub fn backups(&self, namespace: &str) -> Option<Vec<Arc<PostgresBackup>>> {
        Some(synced(self.backups.get())?.state_filter(|b| b.metadata.namespace.as_deref() == Some(namespace)))
    }

    /// The StatefulSet named `name` as its watch last saw it (metadata and status only); `None`
    /// until that watch has listed.
    pub fn statefulset(&self, namespace: &str, name: &str) -> Option<Option<Arc<StatefulSet>>> {
        let listed = Self::listed(&self.state(), &StatefulSet::kind(&()));
        listed.then(|| {
            self.statefulsets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| Arc::new(s.statefulset()))
        })
    }

    /// Keeps the index of pods by cluster up to date with a pod watch's `event`. It must see
    /// every event of the watch that fills the pod store, each before the store does: a pod's
    /// cluster before the event is read from the store.
    pub fn index_pods(&self, event: &watcher::Event<KeptPod>) {
        let mut index = self.pod_index.lock().expect("the pod index is never poisoned");
        let before = |pod: &KeptPod| {
            self.pods.get(
                &ObjectRef::new(pod.metadata.name.as_deref()?).within(pod.metadata.namespace.as_deref()?),
            )
        };
        match event {
            watcher::Event::Init => index.relisting = Some(ClusterPods::default()),
            watcher::Event::InitApply(pod) => {
                if let (Some(relisting), Some((namespace, cluster, name))) =
                    (index.relisting.as_mut(), pod_place(pod))
                {
                    index_insert(relisting, namespace, cluster, name);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = index.relisting.take() {
                    index.names = listed;
                }
            }
            watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
                if let Some(old) = before(pod)
                    && let Some((namespace, cluster, name)) = pod_place(&old)
                {
                    index_remove(&mut index.names, namespace, cluster, name);
                }
                if let (watcher::Event::Apply(_), Some((namespace, cluster, name))) = (event, pod_place(pod))
                {
                    index_insert(&mut index.names, namespace, cluster, name);
                }
            }
        }
    }

    /// The pods of `cluster`, by name, as their watch last saw them (see [`KeptPod`]); `None`
    /// until that watch has listed.
    pub fn pods(&self, namespace: &str, cluster: &str) -> Option<Vec<Pod>> {
        if !Self::listed(&self.state(), &Pod::kind(&())) {
            return None;
        }
        // From the index: the cluster's own pods, not a pass over every pod of the fleet.
        let names: Vec<Box<str>> = self
            .pod_index
            .lock()
            .expect("the pod index is never poisoned")
            .names
            .get(namespace)
            .and_then(|clusters| clusters.get(cluster))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        // Sorted by name, as the index holds them. The store may be a moment behind the index.
        let pods = names
            .iter()
            .filter_map(|name| self.pods.get(&ObjectRef::new(name).within(namespace)))
            .filter(|p| p.labels().get(CLUSTER_LABEL).map(String::as_str) == Some(cluster))
            .map(|p| p.pod())
            .collect();
        Some(pods)
    }
}

/// A Secret as [`Known`] keeps it: what a reconcile reads of it (its uid, resourceVersion,
/// owners, deletion, type and data; its name and namespace are its key's), its data as one
/// slice whose values [`State::values`] holds once for every Secret. Its labels, annotations (a
/// `kubectl apply` annotation holds the whole Secret again) and managed fields go. A struct of
/// its own: a `Secret` holds its data in a B-tree and its metadata with every optional field in
/// place, which took about twice the bytes of the data itself.
struct KeptSecret {
    uid: Option<Box<str>>,
    /// `Unknown` when the apiserver gave none (never kept then).
    version: Version,
    owners: Option<Box<[OwnerReference]>>,
    deleting: Option<Time>,
    type_: Option<Box<str>>,
    /// Whether the Secret has data at all (an empty `data` is not none).
    has_data: bool,
    /// Sorted by key, as the data of a `Secret` is. Each value is the one [`State::values`]
    /// holds.
    data: Box<[Entry]>,
}

/// One key of a kept Secret's data, and its bytes.
type Entry = (Box<str>, Arc<[u8]>);

impl KeptSecret {
    /// What is kept of `secret`, its values taken from (or added to) `values`. Its name and
    /// namespace are its key's.
    fn new(secret: Secret, values: &mut HashSet<Arc<[u8]>>) -> Self {
        let meta = secret.metadata;
        let has_data = secret.data.is_some();
        let data = secret
            .data
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let value = match values.get(v.0.as_slice()) {
                    Some(value) => value.clone(),
                    None => {
                        let value: Arc<[u8]> = v.0.into();
                        values.insert(value.clone());
                        value
                    }
                };
                (k.into_boxed_str(), value)
            })
            .collect();
        Self {
            uid: meta.uid.map(String::into_boxed_str),
            version: Version::of(meta.resource_version.as_deref()),
            owners: meta.owner_references.map(Vec::into_boxed_slice),
            deleting: meta.deletion_timestamp,
            type_: secret.type_.map(String::into_boxed_str),
            has_data,
            data,
        }
    }

    /// The Secret named `name` in `namespace`, as kept.
    fn secret(&self, namespace: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                uid: self.uid.as_deref().map(str::to_owned),
                resource_version: match &self.version {
                    Version::Unknown => None,
                    Version::Number(n) => Some(n.to_string()),
                    Version::Text(text) => Some(text.to_string()),
                },
                owner_references: self.owners.as_ref().map(|o| o.to_vec()),
                deletion_timestamp: self.deleting.clone(),
                ..ObjectMeta::default()
            },
            type_: self.type_.as_deref().map(str::to_owned),
            data: self.has_data.then(|| {
                self.data
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect()
            }),
            ..Secret::default()
        }
    }
}

/// `event` with each object in it made into what is kept of it.
pub fn keep<K, T>(event: watcher::Event<K>, into: impl Fn(K) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(into(object)),
        watcher::Event::Apply(object) => watcher::Event::Apply(into(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(into(object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Metadata as [`Known`] keeps it: without managed fields and annotations, which no reconcile
/// reads of a kept object.
fn kept_meta(mut metadata: ObjectMeta) -> ObjectMeta {
    metadata.managed_fields = None;
    metadata.annotations = None;
    // A list grows four places at once as it is read: one owner took the room of four.
    if let Some(owners) = &mut metadata.owner_references {
        owners.shrink_to_fit();
    }
    metadata
}

/// Makes `$kept` a namespaced [`Resource`] of the same kind as `$of`, for the reflector's store
/// and the controller's triggers.
macro_rules! kept_resource {
    ($kept:ty, $of:ty) => {
        impl Resource for $kept {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$of>::kind(&())
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$of>::group(&())
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$of>::version(&())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$of>::plural(&())
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A StatefulSet as [`Known`] keeps it: its metadata (see [`kept_meta`]) and its status; a
/// reconcile reads nothing else of it. A struct of its own rather than a `StatefulSet` with no
/// spec: Kubernetes' types hold every optional field in place, so an empty `StatefulSetSpec`
/// (with its pod template) still takes kilobytes.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct KeptStatefulSet {
    metadata: ObjectMeta,
    status: Option<StatefulSetStatus>,
}

kept_resource!(KeptStatefulSet, StatefulSet);

impl From<StatefulSet> for KeptStatefulSet {
    fn from(statefulset: StatefulSet) -> Self {
        Self {
            metadata: kept_meta(statefulset.metadata),
            status: statefulset.status,
        }
    }
}

impl KeptStatefulSet {
    /// The StatefulSet as kept: no spec.
    fn statefulset(&self) -> StatefulSet {
        StatefulSet {
            metadata: self.metadata.clone(),
            spec: None,
            status: self.status.clone(),
        }
    }
}

/// A pod as [`Known`] keeps it: its metadata (see [`kept_meta`]), the image of its install init
/// container (the instance manager's image is the install container's) and its `Ready`
/// condition; a reconcile reads nothing else of it. A struct of its own for the reason
/// [`KeptStatefulSet`] is: a `Pod` stripped to these took about 6 KiB, this a few hundred bytes.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct KeptPod {
    metadata: ObjectMeta,
    install_image: Option<String>,
    ready: Option<PodCondition>,
}

kept_resource!(KeptPod, Pod);

impl From<Pod> for KeptPod {
    fn from(pod: Pod) -> Self {
        let install_image = pod
            .spec
            .and_then(|s| s.init_containers)
            .into_iter()
            .flatten()
            .find(|c| c.name == INSTALL_CONTAINER)
            .and_then(|c| c.image);
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| PodCondition {
                type_: c.type_,
                status: c.status,
                last_transition_time: c.last_transition_time,
                ..PodCondition::default()
            });
        Self {
            metadata: kept_meta(pod.metadata),
            install_image,
            ready,
        }
    }
}

impl KeptPod {
    /// The pod as kept: its metadata, its install container's name and image, and its `Ready`
    /// condition.
    fn pod(&self) -> Pod {
        Pod {
            metadata: self.metadata.clone(),
            spec: Some(PodSpec {
                init_containers: self.install_image.as_ref().map(|image| {
                    vec![Container {
                        name: INSTALL_CONTAINER.to_owned(),
                        image: Some(image.clone()),
                        ..Container::default()
                    }]
                }),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: self.ready.clone().map(|c| vec![c]),
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// A watch of ConfigMaps registered with `known`, fed by hand.
    fn watch(known: &Arc<Known>) -> usize {
        drop(known.note::<ConfigMap, _>(false, futures::stream::empty()));
        known.state().watches.len() - 1
    }

    fn key(name: &str) -> String {
        super::key::<ConfigMap>("shop", name)
    }

    #[test]
    fn a_child_needs_no_request_only_while_it_is_as_it_was_applied() {
        let known = Arc::new(Known::new().0);
        let w = watch(&known);
        let wanted = hash(&json!({"data": {"a": "1"}}));
        known.record(w, &watcher::Event::Apply(config_map("db", "7")));
        assert!(!known.unchanged(&key("db"), wanted), "never applied");
        known.applied(&key("db"), &config_map("db", "7").metadata, wanted);
        assert!(known.unchanged(&key("db"), wanted));
        assert!(
            !known.unchanged(&key("db"), hash(&json!({"data": {"a": "2"}}))),
            "the spec wants something else now"
        );
        // Someone else changed it: the watch sees a new resourceVersion.
        known.record(w, &watcher::Event::Apply(config_map("db", "9")));
        assert!(!known.unchanged(&key("db"), wanted));
        // An apply whose response the watch has not caught up with yet is not trusted either.
        known.applied(&key("db"), &config_map("db", "10").metadata, wanted);
        assert!(!known.unchanged(&key("db"), wanted));
        known.record(w, &watcher::Event::Apply(config_map("db", "10")));
        assert!(known.unchanged(&key("db"), wanted));
        known.record(w, &watcher::Event::Delete(config_map("db", "10")));
        assert!(!known.unchanged(&key("db"), wanted), "deleted");
    }

    #[test]
    fn what_a_new_listing_lacks_is_gone_and_nothing_is_absent_before_a_listing() {
        let known = Arc::new(Known::new().0);
        let w = watch(&known);
        assert_eq!(known.absent::<ConfigMap>("shop", "a"), None, "not listed yet");
        known.record(w, &watcher::Event::<ConfigMap>::Init);
        known.record(w, &watcher::Event::InitApply(config_map("a", "1")));
        known.record(w, &watcher::Event::InitApply(config_map("b", "2")));
        known.record(w, &watcher::Event::<ConfigMap>::InitDone);
        known.applied(&key("a"), &config_map("a", "1").metadata, 5);
        assert_eq!(known.absent::<ConfigMap>("shop", "a"), Some(false));
        assert!(known.unchanged(&key("a"), 5));
        // The watch broke, and `a` was deleted meanwhile: the new listing lacks it.
        known.record(w, &watcher::Event::<ConfigMap>::Init);
        known.record(w, &watcher::Event::InitApply(config_map("b", "2")));
        assert!(known.unchanged(&key("a"), 5), "kept until the listing is done");
        known.record(w, &watcher::Event::<ConfigMap>::InitDone);
        assert_eq!(known.absent::<ConfigMap>("shop", "a"), Some(true));
        assert!(!known.unchanged(&key("a"), 5));
        assert_eq!(known.absent::<ConfigMap>("shop", "b"), Some(false));
        assert_eq!(known.absent::<Pod>("shop", "b"), None, "another kind");
    }

    /// A StatefulSet or PodDisruptionBudget whose status alone changed (a new resourceVersion,
    /// the same generation, labels and annotations) needs no request; any other change does,
    /// and a ConfigMap's new resourceVersion always does.
    #[test]
    fn a_new_status_alone_changes_nothing_applied() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        let known = Arc::new(Known::new().0);
        drop(known.note::<StatefulSet, _>(false, futures::stream::empty()));
        let w = known.state().watches.len() - 1;
        let set = |version: &str, generation: i64, label: &str| StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("shop".into()),
                resource_version: Some(version.into()),
                generation: Some(generation),
                labels: Some([("app".to_owned(), label.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..StatefulSet::default()
        };
        let key = super::key::<StatefulSet>("shop", "db");
        known.applied(&key, &set("5", 2, "a").metadata, 7);
        known.record(w, &watcher::Event::Apply(set("5", 2, "a")));
        assert!(known.unchanged(&key, 7));
        known.record(w, &watcher::Event::Apply(set("6", 2, "a")));
        assert!(known.unchanged(&key, 7), "its status changed");
        known.record(w, &watcher::Event::Apply(set("7", 3, "a")));
        assert!(!known.unchanged(&key, 7), "its spec changed");
        known.record(w, &watcher::Event::Apply(set("8", 2, "b")));
        assert!(!known.unchanged(&key, 7), "its labels changed");
        // A ConfigMap has no status: a new resourceVersion is a change.
        let c = watch(&known);
        let mut config = config_map("db", "3");
        config.metadata.generation = Some(1);
        known.applied(&super::key::<ConfigMap>("shop", "db"), &config.metadata, 7);
        config.metadata.resource_version = Some("4".into());
        known.record(c, &watcher::Event::Apply(config));
        assert!(!known.unchanged(&super::key::<ConfigMap>("shop", "db"), 7));
    }

    /// A child is created without a read only when a listed watch never saw it and Tusk has not
    /// applied it since (the watch may lag its own apply).
    #[test]
    fn only_a_child_never_seen_nor_applied_is_unseen() {
        let known = Arc::new(Known::new().0);
        let w = watch(&known);
        assert!(!known.unseen::<ConfigMap>("shop", "new"), "not listed yet");
        known.record(w, &watcher::Event::<ConfigMap>::Init);
        known.record(w, &watcher::Event::InitApply(config_map("old", "1")));
        known.record(w, &watcher::Event::<ConfigMap>::InitDone);
        assert!(known.unseen::<ConfigMap>("shop", "new"));
        assert!(!known.unseen::<ConfigMap>("shop", "old"));
        known.applied(&key("new"), &config_map("new", "2").metadata, 5);
        assert!(
            !known.unseen::<ConfigMap>("shop", "new"),
            "applied, not watched yet"
        );
        known.record(w, &watcher::Event::Delete(config_map("old", "1")));
        assert!(
            known.unseen::<ConfigMap>("shop", "old"),
            "deleted: made again without a read"
        );
    }

    /// A cluster's pods are found through the index the pod watch keeps: a pod relabelled to
    /// another cluster moves, a deleted one goes, and a new list replaces the index when it is
    /// done, as it replaces the store.
    #[test]
    fn a_clusters_pods_come_from_the_index_the_pod_watch_keeps() {
        let (known, mut writers) = Known::new();
        let known = Arc::new(known);
        drop(known.note::<KeptPod, _>(false, futures::stream::empty()));
        let w = known.state().watches.len() - 1;
        let pod = |name: &str, cluster: &str| {
            KeptPod::from(Pod {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some("shop".to_owned()),
                    labels: Some([(CLUSTER_LABEL.to_owned(), cluster.to_owned())].into()),
                    ..ObjectMeta::default()
                },
                ..Pod::default()
            })
        };
        let mut send = |event: watcher::Event<KeptPod>| {
            known.record(w, &event);
            known.index_pods(&event);
            writers.pods.apply_watcher_event(&event);
        };
        let names = |namespace: &str, cluster: &str| -> Vec<String> {
            known
                .pods(namespace, cluster)
                .expect("listed")
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect()
        };
        assert!(known.pods("shop", "db").is_none(), "not listed yet");
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(pod("db-1", "db")));
        send(watcher::Event::InitApply(pod("db-0", "db")));
        send(watcher::Event::InitApply(pod("other-0", "other")));
        send(watcher::Event::InitDone);
        assert_eq!(names("shop", "db"), ["db-0", "db-1"]);
        assert_eq!(names("shop", "other"), ["other-0"]);
        assert!(names("elsewhere", "db").is_empty());

        send(watcher::Event::Apply(pod("db-1", "other")));
        assert_eq!(names("shop", "db"), ["db-0"]);
        assert_eq!(names("shop", "other"), ["db-1", "other-0"]);
        send(watcher::Event::Delete(pod("db-0", "db")));
        assert!(names("shop", "db").is_empty());
        send(watcher::Event::Apply(pod("db-2", "db")));
        assert_eq!(names("shop", "db"), ["db-2"]);

        send(watcher::Event::Init);
        send(watcher::Event::InitApply(pod("db-5", "db")));
        assert_eq!(
            names("shop", "db"),
            ["db-2"],
            "the old list stands until the new one is done"
        );
        send(watcher::Event::InitDone);
        assert_eq!(names("shop", "db"), ["db-5"]);
        assert!(names("shop", "other").is_empty());
    }

    /// A watch of every ConfigMap registered with `known`, listed with `objects`.
    fn listed_everything(known: &Arc<Known>, objects: &[ConfigMap]) -> usize {
        drop(known.note::<ConfigMap, _>(true, futures::stream::empty()));
        let w = known.state().watches.len() - 1;
        known.record(w, &watcher::Event::<ConfigMap>::Init);
        for object in objects {
            known.record(w, &watcher::Event::InitApply(object.clone()));
        }
        known.record(w, &watcher::Event::<ConfigMap>::InitDone);
        w
    }

    /// An object is taken as absent without a read only from a watch of every object of its
    /// kind that has listed and is not listing again, and never when Tusk wrote it or an apply
    /// found it there; the apply that makes it is create-only, once.
    #[test]
    fn only_a_listed_watch_of_everything_tells_an_object_is_absent() {
        let known = Arc::new(Known::new().0);
        let labelled = watch(&known);
        known.record(labelled, &watcher::Event::<ConfigMap>::Init);
        known.record(labelled, &watcher::Event::<ConfigMap>::InitDone);
        assert!(
            !known.taken_absent::<ConfigMap>("shop", "a"),
            "a watch with a selector does not see every object"
        );
        let all = listed_everything(&known, &[config_map("there", "1")]);
        assert!(!known.taken_absent::<ConfigMap>("shop", "there"));
        assert!(known.taken_absent::<ConfigMap>("shop", "a"));
        assert!(known.create_only(&key("a")));
        assert!(!known.create_only(&key("a")), "asking clears it");
        // The apply found it there after all: read until a watch sees it.
        known.present(&key("a"));
        assert!(!known.taken_absent::<ConfigMap>("shop", "a"));
        known.record(all, &watcher::Event::Apply(config_map("a", "3")));
        known.record(all, &watcher::Event::Delete(config_map("a", "3")));
        assert!(known.taken_absent::<ConfigMap>("shop", "a"), "seen, then deleted");
        // Tusk wrote it; the watch has not shown it yet.
        known.applied(&key("b"), &config_map("b", "4").metadata, 1);
        assert!(!known.taken_absent::<ConfigMap>("shop", "b"));
        // While the watch lists again, nothing is taken as absent.
        known.record(all, &watcher::Event::<ConfigMap>::Init);
        assert!(!known.taken_absent::<ConfigMap>("shop", "c"));
        known.record(all, &watcher::Event::<ConfigMap>::InitDone);
        assert!(known.taken_absent::<ConfigMap>("shop", "c"));
    }

    /// One watch that stops seeing an object (its label was taken off) while another still
    /// sees it does not make it absent: it stays there, and as it is now is not known until
    /// the other watch tells.
    #[test]
    fn an_object_one_watch_lets_go_of_is_still_there() {
        let known = Arc::new(Known::new().0);
        let labelled = watch(&known);
        let all = listed_everything(&known, &[config_map("db", "5")]);
        known.record(labelled, &watcher::Event::Apply(config_map("db", "5")));
        known.applied(&key("db"), &config_map("db", "5").metadata, 7);
        assert!(known.unchanged(&key("db"), 7));
        known.record(labelled, &watcher::Event::Delete(config_map("db", "6")));
        assert!(!known.unchanged(&key("db"), 7), "not known as it is now");
        assert!(!known.taken_absent::<ConfigMap>("shop", "db"), "still there");
        assert!(!known.unseen::<ConfigMap>("shop", "db"));
        known.record(all, &watcher::Event::Apply(config_map("db", "6")));
        assert!(!known.taken_absent::<ConfigMap>("shop", "db"));
        // The labelled watch listing again without it keeps it: the other still sees it.
        known.record(labelled, &watcher::Event::<ConfigMap>::Init);
        known.record(labelled, &watcher::Event::<ConfigMap>::InitDone);
        assert!(!known.taken_absent::<ConfigMap>("shop", "db"));
        // Deleted: every watch lets go of it.
        known.record(all, &watcher::Event::Delete(config_map("db", "6")));
        assert!(known.taken_absent::<ConfigMap>("shop", "db"));
    }

    #[test]
    fn versions_are_equal_only_as_the_same_text() {
        let v = |s: &str| Version::of(Some(s));
        assert!(v("42").same(&v("42")));
        assert!(!v("42").same(&v("43")));
        assert!(!v("042").same(&v("42")), "another text, even if the same number");
        assert!(!v("+42").same(&v("42")));
        assert!(v("0").same(&v("0")));
        assert!(v("a1").same(&v("a1")));
        assert!(!v("18446744073709551616").same(&v("0")), "beyond u64 is text");
        assert!(v("18446744073709551616").same(&v("18446744073709551616")));
        assert!(
            !Version::of(None).same(&Version::of(None)),
            "no version is never the same"
        );
        assert!(!v("").same(&v("")));
    }

    #[test]
    fn a_pod_keeps_only_what_reconcile_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "db-0", "namespace": "shop", "uid": "u1",
                "labels": {"tusk.dev/cluster": "db", "tusk.dev/role": "primary"},
                "annotations": {"big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {
                "initContainers": [
                    {"name": "restore", "image": "tusk:0"},
                    {"name": "install-tusk", "image": "tusk:1", "args": ["a"]},
                ],
                "containers": [{"name": "postgres", "image": "pg:18", "env": [{"name": "A", "value": "1"}]}],
            },
            "status": {
                "podIP": "10.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T10:00:00Z", "reason": "r"},
                ],
                "containerStatuses": [{"name": "postgres", "image": "pg:18", "imageID": "", "ready": true, "restartCount": 0}],
            },
        }))
        .unwrap();
        let pod = KeptPod::from(pod).pod();
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "db-0", "namespace": "shop", "uid": "u1",
                    "labels": {"tusk.dev/cluster": "db", "tusk.dev/role": "primary"},
                },
                "spec": {"containers": [], "initContainers": [{"name": "install-tusk", "image": "tusk:1"}]},
                "status": {"conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T10:00:00Z"},
                ]},
            })
        );
        assert!(crate::controller::postgres_backup::pod_ready(&pod));
    }

    /// A Secret is kept with its name and namespace from its key, and returned as it was
    /// stored; a value several Secrets hold (a cluster's CA certificate) is held once, and let
    /// go with the last Secret that holds it.
    #[test]
    fn secret_values_are_kept_once_and_let_go_with_the_last_holder() {
        let secret = |name: &str, version: &str, data: &[(&str, &str)]| -> Secret {
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {
                    "name": name, "namespace": "shop", "uid": "u", "resourceVersion": version,
                    "labels": {"tusk.dev/cluster": "db"},
                    "ownerReferences": [{"apiVersion": "tusk.dev/v1", "kind": "PostgresCluster", "name": "db", "uid": "c", "controller": true}],
                },
                "type": "kubernetes.io/tls",
                "data": data.iter().map(|(k, v)| (k.to_string(), json!(BASE64.encode(v)))).collect::<serde_json::Map<_, _>>(),
            }))
            .unwrap()
        };
        use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
        let (a, b) = (Id::of("Secret/shop/a"), Id::of("Secret/shop/b"));
        let mut state = State::default();
        let stored = secret(
            "a",
            "1",
            &[("ca.crt", "CA"), ("client-ca.crt", "CA"), ("tls.key", "K")],
        );
        let kept = KeptSecret::new(stored.clone(), &mut state.values);
        state.keep_read(a, kept);
        let kept = KeptSecret::new(secret("b", "2", &[("ca.crt", "CA")]), &mut state.values);
        state.keep_read(b, kept);
        assert_eq!(state.values.len(), 2, "CA once, K once");
        assert!(Arc::ptr_eq(&state.read[&a].data[0].1, &state.read[&b].data[0].1));
        let mut back = state.read[&a].secret("shop", "a");
        assert_eq!(back.metadata.owner_references, stored.metadata.owner_references);
        assert_eq!(back.data, stored.data);
        back.metadata.owner_references = None;
        back.data = None;
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "a", "namespace": "shop", "uid": "u", "resourceVersion": "1"}})
        );
        // A new version of `a` lets go of K; `b` still holds CA.
        let kept = KeptSecret::new(secret("a", "3", &[("ca.crt", "CA2")]), &mut state.values);
        state.keep_read(a, kept);
        let held = |state: &State| {
            let mut held: Vec<String> = state
                .values
                .iter()
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .collect();
            held.sort();
            held
        };
        assert_eq!(held(&state), ["CA", "CA2"]);
        state.forget(b);
        assert_eq!(held(&state), ["CA2"]);
        state.forget(a);
        assert!(state.values.is_empty());
        // Empty data is not no data.
        let kept = KeptSecret::new(secret("c", "4", &[]), &mut state.values);
        assert_eq!(kept.secret("shop", "c").data, Some(Default::default()));
    }
}
