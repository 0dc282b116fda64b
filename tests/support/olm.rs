//! Tusk through real OLM: the part of the OLM harness that needs Tusk itself or its generator
//! (`xtask`), which the support crate `tusk-testenv` must not depend on. It says how Tusk's pod
//! runs ([`tusk_operator`]), turns the generator's catalog into files for
//! [`OlmCluster::serve`], makes plans and expectations from the release plan, and writes and
//! checks objects across upgrades ([`Written`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use kube::api::PostParams;
use serde_json::{Value, json};
use tusk_testenv::{
    Wait,
    control_plane::free_port,
    eventually,
    olm::{
        install::{OlmCluster, value, while_olm_settles},
        operator::{Mode, Operator},
    },
};
use xtask::olm::{Inputs, catalog, plan::Release};

use super::{
    apiserver::{KINDS, api},
    objects::{random_objects, user_view},
};

/// A control plane Tusk was installed on by OLM (v0 or v1), with the local operator's log.
pub trait Installed {
    /// The control plane.
    fn plane(&self) -> &tusk_testenv::ControlPlane;
    /// An admin client.
    fn client(&self) -> &kube::Client;
    /// What the local operator did about `about`, in its last `lines` lines.
    fn operator_log_tail(&self, lines: usize, about: &str) -> String;
}

impl Installed for OlmCluster {
    fn plane(&self) -> &tusk_testenv::ControlPlane {
        &self.plane
    }
    fn client(&self) -> &kube::Client {
        &self.client
    }
    fn operator_log_tail(&self, lines: usize, about: &str) -> String {
        OlmCluster::operator_log_tail(self, lines, about)
    }
}

impl Installed for tusk_testenv::olmv1::OlmV1Cluster {
    fn plane(&self) -> &tusk_testenv::ControlPlane {
        &self.plane
    }
    fn client(&self) -> &kube::Client {
        &self.client
    }
    fn operator_log_tail(&self, lines: usize, about: &str) -> String {
        tusk_testenv::olmv1::OlmV1Cluster::operator_log_tail(self, lines, about)
    }
}

/// Tusk's OLM package, also the name of its Deployment and ServiceAccount; the Service OLM makes
/// for Tusk's conversion webhook.
pub use tusk::facts::operator::{NAME as PACKAGE, WEBHOOK_SERVICE as SERVICE};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The name of Tusk's CSV at `version`.
pub fn csv_name(version: &str) -> String {
    tusk_testenv::olm::install::csv_name(PACKAGE, version)
}

/// Tusk as OLM installs it, its pod run by this build's `tusk-operator`, except while the newest
/// released release is installed: then by that release's own binary, built from the commit the
/// plan records (`hack/released.sh`).
pub fn tusk_operator() -> Operator {
    let released = tusk_testenv::toolchain::released().expect("the previous release's tusk-operator");
    Operator {
        package: PACKAGE.to_owned(),
        service: SERVICE.to_owned(),
        crds: KINDS
            .iter()
            .map(|(_, plural, _)| format!("{plural}.tusk.dev"))
            .collect(),
        program: env!("CARGO_BIN_EXE_tusk-operator").into(),
        released: vec![released],
        args: tusk_operator_args,
        // The images the operator deploys, as the CSV names them.
        env: [
            tusk::facts::operator::env::INSTANCE_MANAGER_IMAGE,
            tusk::facts::operator::env::POSTGRES_IMAGE,
            tusk::facts::operator::env::POSTGRES_IMAGES,
        ]
        .map(str::to_owned)
        .to_vec(),
        listen_env: vec![tusk::facts::operator::env::METRICS_LISTEN.to_owned()],
    }
}

fn tusk_operator_args(mode: Mode, dir: &Path, port: u16, namespace: &str) -> Vec<String> {
    match mode {
        Mode::Webhook => vec![
            "webhook".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--cert-dir={}", dir.display()),
        ],
        Mode::Run => {
            // One map for every process of the pod, which a test fills as it starts local
            // PostgreSQL pods; empty, it keeps the operator from looking up in-cluster Service
            // names.
            let sql_endpoints =
                sql_endpoints_in(dir.parent().expect("the pod's directory is in the work dir"));
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sql_endpoints)
                .unwrap();
            vec![
                "run".into(),
                format!("--listen=127.0.0.1:{port}"),
                format!("--cert-dir={}", dir.display()),
                format!("--status-listen=127.0.0.1:{}", free_port().unwrap()),
                format!("--leader-election-namespace={namespace}"),
                "--resync-interval=30s".into(),
                format!("--sql-endpoints={}", sql_endpoints.display()),
            ]
        }
    }
}

/// The `--sql-endpoints` file of every operator process whose pod's directory is in `work`.
pub fn sql_endpoints_in(work: &Path) -> PathBuf {
    work.join("sql-endpoints")
}

/// The `--sql-endpoints` file of Tusk's operator in `env`, in every release that runs its
/// controllers: [`super::apiserver::map_endpoint`] adds to it.
pub fn sql_endpoints(env: &OlmCluster) -> PathBuf {
    sql_endpoints_in(env.work_dir())
}

/// The files of a file-based catalog of `packages` (each a list of FBC blobs from the
/// generator), for [`OlmCluster::serve`].
pub fn catalog_files(packages: &[Vec<Value>]) -> Vec<(PathBuf, String)> {
    packages
        .iter()
        .map(|blobs| {
            let package = blobs[0]["name"].as_str().unwrap();
            (catalog::catalog_file(package).into(), catalog::to_yaml(blobs))
        })
        .collect()
}

/// The plan's newest release, the head of every channel.
pub const HEAD: &str = "1.1.0";
/// A release after every release of the plan; [`inputs_with_drop`] makes it up.
pub const NEXT: &str = "1.2.0";

/// The plan with a hypothetical next release [`NEXT`] that replaces `replaces` and no longer
/// serves `v1alpha1`: what a team would publish once storage was migrated.
pub fn inputs_with_drop(replaces: &str) -> Inputs {
    let mut inputs = Inputs::load(&repo()).unwrap();
    if replaces == "0.1.0" {
        // A catalog of 0.1.0 and the drop alone: the later releases would be second heads.
        inputs.plan.releases.retain(|r| r.version.to_string() == "0.1.0");
    }
    assert!(
        inputs
            .plan
            .releases
            .iter()
            .all(|r| r.version < NEXT.parse().unwrap()),
        "{NEXT} is a release of the plan now; make up a later one"
    );
    let next: Release = serde_saphyr::from_str(&format!(
        r#"
version: {NEXT}
date: 2027-01-15
channels: [candidate, fast, stable, stable-v1]
replaces: {replaces}
maturity: stable
capabilities: Seamless Upgrades
description: config/olm/description.md
crds:
  PostgresCluster: {{ served: [v1beta1, v1], storage: v1, deprecated: [v1beta1] }}
  PostgresUser: {{ served: [v1], storage: v1 }}
  PostgresDatabase: {{ served: [v1], storage: v1 }}
  PostgresBackup: {{ served: [v1], storage: v1 }}
  PostgresBackupSchedule: {{ served: [v1], storage: v1 }}
"#
    ))
    .unwrap();
    inputs.plan.releases.push(next);
    inputs
}

/// A release after [`NEXT`]; [`inputs_with_new_instance_manager`] makes it up.
pub const AFTER_NEXT: &str = "1.3.0";

/// [`inputs_with_drop`]`(HEAD)` and a hypothetical [`AFTER_NEXT`] that replaces [`NEXT`] and
/// brings a new instance manager: the release that changed it, its CSV names its own image for
/// the PostgreSQL pods.
pub fn inputs_with_new_instance_manager() -> Inputs {
    let mut inputs = inputs_with_drop(HEAD);
    let mut after = inputs
        .plan
        .releases
        .last()
        .expect("the made-up next release")
        .clone();
    after.version = AFTER_NEXT.parse().unwrap();
    after.replaces = Some(NEXT.parse().unwrap());
    inputs.instance_manager = after.version.clone();
    inputs.plan.releases.push(after);
    inputs
}

/// What `cargo xtask validate` finds wrong with the bundles and catalog `inputs` generate.
pub fn validation_errors(inputs: &Inputs) -> Vec<String> {
    let root = tempfile::tempdir().unwrap();
    for file in xtask::olm::generate(inputs) {
        let path = root.path().join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, file.contents).unwrap();
    }
    xtask::olm::validate::validate(root.path())
        .into_iter()
        .filter(|f| f.level == xtask::olm::validate::Level::Error)
        .map(|f| f.to_string())
        .collect()
}

/// For each kind, the versions served and the storage version.
pub type Versions = BTreeMap<String, (Vec<String>, String)>;

/// What release `version` of `inputs` serves and stores.
pub fn served(inputs: &Inputs, version: &str) -> Versions {
    let release = inputs
        .plan
        .release(&semver::Version::parse(version).unwrap())
        .unwrap();
    release
        .crds
        .iter()
        .map(|(k, v)| (k.clone(), (v.served.clone(), v.storage.clone())))
        .collect()
}

/// Each kind's storage versions along `path`: what `status.storedVersions` must hold.
pub fn predicted_stored(inputs: &Inputs, path: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for version in path {
        let release = inputs
            .plan
            .release(&semver::Version::parse(version).unwrap())
            .unwrap();
        for (kind, versions) in &release.crds {
            out.entry(kind.clone())
                .or_default()
                .insert(versions.storage.clone());
        }
    }
    out
}

/// An object as read, without server-set metadata but with its status.
fn user_view_with_status(object: &Value) -> Value {
    let mut view = user_view(object);
    if let Some(status) = object.get("status") {
        view["status"] = status.clone();
    }
    view
}

/// What a user wrote, without the status the operator owns.
pub fn spec_view(object: &Value) -> Value {
    let mut view = user_view(object);
    view.as_object_mut().unwrap().remove("status");
    view
}

/// An RBAC rule as one comparable line: its groups, resources, verbs and names, each sorted.
pub fn canonical_rule(rule: &Value) -> String {
    let list = |field: &str| -> Vec<String> {
        let mut v: Vec<String> = rule[field]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    };
    format!(
        "{:?} {:?} {:?} {:?}",
        list("apiGroups"),
        list("resources"),
        list("verbs"),
        list("resourceNames")
    )
}

/// Objects written at some version, and what was written.
pub struct Written {
    pub namespace: String,
    pub objects: Vec<(&'static str, String, Value)>,
    /// Reads retried because conversion failed while OLM settled the CRDs.
    pub retried: AtomicUsize,
}

impl Written {
    /// 20 random valid objects of each kind at `v1alpha1`, the same on every run.
    pub async fn create(env: &impl Installed) -> Self {
        let namespace = env.plane().namespace("upgraded").await.unwrap();
        let mut objects = Vec::new();
        for (kind, _, _) in KINDS {
            for (i, mut object) in random_objects(kind, "v1alpha1", 20).into_iter().enumerate() {
                let name = format!("{}-{i}", kind.to_lowercase());
                object["metadata"]["name"] = json!(name);
                object["metadata"]["namespace"] = json!(namespace);
                object.as_object_mut().unwrap().remove("status");
                let created = api(env.client(), &namespace, kind, "v1alpha1")
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(user_view(&object)).unwrap(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{name} refused: {e}"));
                objects.push((*kind, name, spec_view(&value(&created))));
            }
        }
        Self {
            namespace,
            objects,
            retried: Default::default(),
        }
    }

    /// Every object reads back, at the storage version, as what was written (converted by
    /// Tusk's own conversion); and at every other served version as Tusk's conversion of the
    /// stored object, status included (the operator writes status at `v1`, and what an older
    /// version cannot hold of it travels in the conversion annotation).
    pub async fn check(&self, env: &impl Installed, versions: &Versions) -> usize {
        let mut reads = 0;
        for (kind, name, written) in &self.objects {
            let (served, storage) = &versions[*kind];
            // OLM may still be settling the CRDs' conversion config for a moment after an
            // upgrade (it re-applies the bundle's placeholder Service, then its own): a read that
            // fails in the conversion webhook is retried and counted.
            let read = |version: String| async move {
                let objects = api(env.client(), &self.namespace, kind, &version);
                let read = while_olm_settles(&format!("{name} at {version}"), async || {
                    let read = objects.get(name).await;
                    if read.is_err() {
                        self.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    read
                })
                .await;
                value(&read)
            };
            let stored = read(storage.clone()).await;
            let expected =
                tusk::api::convert_object(written.clone(), &format!("tusk.dev/{storage}"), 0).unwrap();
            assert_eq!(
                spec_view(&stored),
                spec_view(&expected),
                "{name} read at {storage}"
            );
            reads += 1;
            // The operator may write status between the two reads; then the pair is read again
            // (about ten times, 300 ms apart).
            for version in served {
                let mut stored = Some(stored.clone());
                eventually(
                    &format!("{name} read at {version} to be the conversion of {name} read at {storage}"),
                    Wait::up_to(Duration::from_secs(3)).every(Duration::from_millis(300)),
                    async || {
                        let stored = match stored.take() {
                            Some(first) => first,
                            None => read(storage.clone()).await,
                        };
                        let got = read(version.clone()).await;
                        let expected = tusk::api::convert_object(
                            user_view_with_status(&stored),
                            &format!("tusk.dev/{version}"),
                            0,
                        )
                        .unwrap();
                        if spec_view(&got) == spec_view(&expected) {
                            Ok(())
                        } else {
                            Err(format!(
                                "{:#}\nexpected {:#}",
                                spec_view(&got),
                                spec_view(&expected)
                            ))
                        }
                    },
                )
                .await;
                reads += 1;
            }
        }
        reads
    }
}

/// Waits until the operator has reconciled the current generation of every object of `kinds`.
pub async fn reconciled(env: &impl Installed, written: &Written, kinds: &[&str]) {
    for (kind, name, _) in written.objects.iter().filter(|(k, _, _)| kinds.contains(k)) {
        let objects = api(env.client(), &written.namespace, kind, "v1");
        let seen = Wait::up_to(Duration::from_secs(180))
            .until(&format!("{kind} {name} reconciled"), async || {
                let object = value(&objects.get(name).await.map_err(|e| e.to_string())?);
                let generation = &object["metadata"]["generation"];
                // Every kind reports whatever it found (users and databases here have no SQL
                // endpoint to reach, backups no ready instance).
                let ready = object["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
                match ready {
                    Some(_) if object["status"]["observedGeneration"] == *generation => Ok(()),
                    _ => Err(format!("generation {generation}, status {}", object["status"])),
                }
            })
            .await;
        if let Err(unmet) = seen {
            panic!("{unmet}\n{}", env.operator_log_tail(40, name));
        }
    }
}

/// What readers saw while they looped through an upgrade.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Gets and lists sent.
    pub requests: usize,
    /// The ones that failed: when (since the readers started), which, and why.
    pub failures: Vec<(Duration, String, String)>,
    /// The longest time from a failed request to the next one that succeeded: how long
    /// conversion was out.
    pub longest_gap: Duration,
    /// The slowest request, failed or not.
    pub slowest: Duration,
    /// When the readers started: what the failures' times count from.
    pub started: Option<std::time::Instant>,
}

/// Readers that get and list the objects of `namespace` at each of `versions` (kind and
/// version), one reader per pair, round after round, until [`Readers::stop`]: what a cluster's
/// clients do while the operator is upgraded under them.
pub struct Readers {
    started: std::time::Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<ReadStats>>,
}

impl Readers {
    /// Starts reading.
    pub fn start(client: &kube::Client, namespace: &str, versions: Vec<(String, String)>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = std::time::Instant::now();
        let tasks = versions
            .into_iter()
            .map(|(kind, version)| {
                let objects = api(client, namespace, &kind, &version);
                let stopped = stop.clone();
                tokio::spawn(async move {
                    let mut stats = ReadStats::default();
                    let mut failing_since: Option<Duration> = None;
                    while !stopped.load(Ordering::Relaxed) {
                        let sent = std::time::Instant::now();
                        let listed = objects.list(&Default::default()).await;
                        stats.slowest = stats.slowest.max(sent.elapsed());
                        let first = listed
                            .as_ref()
                            .ok()
                            .and_then(|l| l.items.first())
                            .and_then(|o| o.metadata.name.clone());
                        let mut outcomes = vec![("list", listed.map(|_| ()))];
                        if let Some(name) = first {
                            let sent = std::time::Instant::now();
                            outcomes.push(("get", objects.get(&name).await.map(|_| ())));
                            stats.slowest = stats.slowest.max(sent.elapsed());
                        }
                        for (verb, outcome) in outcomes {
                            stats.requests += 1;
                            let at = start.elapsed();
                            match outcome {
                                Ok(()) => {
                                    if let Some(since) = failing_since.take() {
                                        stats.longest_gap = stats.longest_gap.max(at - since);
                                    }
                                }
                                Err(e) => {
                                    failing_since.get_or_insert(at);
                                    stats.failures.push((
                                        at,
                                        format!("{verb} {kind} {version}"),
                                        e.to_string(),
                                    ));
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if let Some(since) = failing_since {
                        stats.longest_gap = stats.longest_gap.max(start.elapsed() - since);
                    }
                    stats
                })
            })
            .collect();
        Self {
            started: start,
            stop,
            tasks,
        }
    }

    /// Stops reading and says what was seen, every reader's together.
    pub async fn stop(self) -> ReadStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = ReadStats {
            started: Some(self.started),
            ..ReadStats::default()
        };
        for task in self.tasks {
            let stats = task.await.expect("the readers do not panic");
            all.requests += stats.requests;
            all.failures.extend(stats.failures);
            all.longest_gap = all.longest_gap.max(stats.longest_gap);
            all.slowest = all.slowest.max(stats.slowest);
        }
        all.failures.sort_by_key(|(at, _, _)| *at);
        all
    }
}

/// Every kind at every version both `a` and `b` serve.
pub fn served_by_both(a: &Versions, b: &Versions) -> Vec<(String, String)> {
    a.iter()
        .flat_map(|(kind, (versions, _))| {
            versions
                .iter()
                .filter(|v| b.get(kind).is_some_and(|(other, _)| other.contains(v)))
                .map(|v| (kind.clone(), v.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Builds every bundle image of `inputs` and its catalog image, named for the registry at
/// `host`, and pushes them there (plain HTTP); gives what was pushed, by digest, the catalog last.
/// `inputs`' image names become the registry's.
pub async fn push_images(inputs: &mut Inputs, registry: &tusk_testenv::registry::Registry) -> Vec<String> {
    let host = registry.host();
    let images = &mut inputs.plan.images;
    for (image, name) in [
        (&mut images.operator, "tusk-operator"),
        (&mut images.bundle, "tusk-operator-bundle"),
        (&mut images.catalog, "tusk-operator-catalog"),
    ] {
        *image = format!("{host}/tusk/{name}");
    }
    let work = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for release in &inputs.plan.releases {
        built.push(xtask::images::bundle_image(inputs, release, work.path()).unwrap());
    }
    let opm = tusk_testenv::Toolchain::get().unwrap().bin("opm");
    built.push(xtask::images::catalog_image(inputs, &opm, 1_700_000_000, work.path()).unwrap());
    xtask::images::push(&built, &format!("{host}/tusk"), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", registry.log_tail(20)))
}

/// Waits until `kind` `name` in `namespace` is Ready for its current generation; returns its
/// status.
pub async fn ready(env: &impl Installed, namespace: &str, kind: &str, name: &str) -> Value {
    let objects = api(env.client(), namespace, kind, "v1");
    let seen = Wait::up_to(Duration::from_secs(180))
        .until(&format!("{kind} {name} to be Ready"), async || {
            let object = value(&objects.get(name).await.map_err(|e| e.to_string())?);
            let status = &object["status"];
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
            match ready {
                Some(ready)
                    if ready["status"] == "True"
                        && status["observedGeneration"] == object["metadata"]["generation"] =>
                {
                    Ok(status.clone())
                }
                _ => Err(format!("status {status}")),
            }
        })
        .await;
    seen.unwrap_or_else(|unmet| panic!("{unmet}\n{}", env.operator_log_tail(40, name)))
}

/// What shows that a PostgreSQL server kept running: its postmaster's PID (the first line of
/// `postmaster.pid`) and `pg_postmaster_start_time()`.
pub async fn postmaster(db: &tokio_postgres::Client) -> (String, String) {
    let row = db
        .query_one(
            "SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1), pg_postmaster_start_time()::text",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}
