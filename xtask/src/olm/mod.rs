//! Tusk's OLM packaging, generated from the Rust types and the release plan: per release the
//! CRDs, the ClusterServiceVersion and the bundle around them; the file-based catalog with its
//! channels; the upgrade graph; and checks that mirror operator-framework's validators.
//!
//! Nothing under `bundle/` or `catalog/` is written by hand.

pub mod bundle;
pub mod catalog;
pub mod crds;
pub mod csv;
pub mod descriptors;
pub mod fixture;
pub mod frozen;
pub mod graph;
pub mod installer;
pub mod instance_manager;
pub mod operatorhub;
pub mod plan;
pub mod range;
pub mod release;
pub mod schema;
pub mod validate;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use semver::Version;
use serde_json::Value;

use frozen::{FrozenBundle, LOCK_FILE, Lock};
use plan::{Plan, Release};

/// The operator's Deployment and ServiceAccount name; where it serves `/healthz`, `/readyz` and
/// `/metrics`, and the conversion webhook.
pub use tusk::facts::operator::{METRICS_PORT, NAME as DEPLOYMENT, STATUS_PORT, WEBHOOK_PORT};
/// The project's home.
pub const PROJECT_URL: &str = "https://github.com/tusk-operator/tusk";
/// The capability levels OperatorHub knows.
pub const CAPABILITY_LEVELS: &[&str] = &[
    "Basic Install",
    "Seamless Upgrades",
    "Full Lifecycle",
    "Deep Insights",
    "Auto Pilot",
];
/// The categories OperatorHub knows.
pub const CATEGORIES: &[&str] = &[
    "AI/Machine Learning",
    "Application Runtime",
    "Big Data",
    "Cloud Provider",
    "Developer Tools",
    "Database",
    "Integration & Delivery",
    "Logging & Tracing",
    "Monitoring",
    "Modernization & Migration",
    "Networking",
    "OpenShift Optional",
    "Security",
    "Storage",
    "Streaming & Messaging",
    "Observability",
];
/// Where the bundles go, one directory per release.
pub const BUNDLE_DIR: &str = "bundle";
/// Where the catalog goes.
pub const CATALOG_DIR: &str = "catalog";
/// Where the sample objects are; they become `alm-examples`.
pub const SAMPLES_DIR: &str = "config/samples";

/// Everything the generator reads.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The release plan.
    pub plan: Plan,
    /// The SVG icon.
    pub icon: Vec<u8>,
    /// Each description file a release names, by its path.
    pub descriptions: BTreeMap<String, String>,
    /// The sample objects, at the newest version of each kind.
    pub samples: Vec<Value>,
    /// The CRDs of today's Rust types, every version; an open release's CRDs are cut from
    /// these. Tests replace them to see what a change to the types would generate.
    pub crds: Vec<CustomResourceDefinition>,
    /// What the lock records of the released bundles.
    pub lock: Lock,
    /// The committed bundle of every release the lock says was cut, proven unchanged.
    pub frozen: BTreeMap<Version, FrozenBundle>,
    /// The release whose image carries the instance manager (`INSTANCE_MANAGER` in
    /// `src/facts/operator.rs`). Tests change it to see what a new instance manager generates.
    pub instance_manager: Version,
    /// The PostgreSQL image catalog (`config/postgres-images.yaml`) an open release's CSV ships.
    pub postgres_images: tusk::facts::postgres_images::Catalog,
}

impl Inputs {
    /// Reads the plan and everything it names under `root`.
    pub fn load(root: &Path) -> Result<Self, String> {
        let plan = Plan::load(root)?;
        let manifest = std::fs::read_to_string(root.join(plan::OPERATOR_MANIFEST))
            .map_err(|e| format!("{}: cannot read: {e}", plan::OPERATOR_MANIFEST))?;
        plan.check_builds_newest(&plan::package_version(&manifest)?)?;
        let read =
            |path: &str| std::fs::read(root.join(path)).map_err(|e| format!("{path}: cannot read: {e}"));
        let icon = read(&plan.icon)?;
        let mut descriptions = BTreeMap::new();
        for release in &plan.releases {
            let text = String::from_utf8(read(&release.description)?)
                .map_err(|e| format!("{}: not UTF-8: {e}", release.description))?;
            descriptions.insert(release.description.clone(), text);
        }
        let mut samples = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(SAMPLES_DIR))
            .map_err(|e| format!("{SAMPLES_DIR}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let sample: Value =
                serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            samples.push(sample);
        }
        let lock = frozen::load_lock(root)?;
        let frozen = frozen::load(root, &plan, &lock)?;
        Ok(Self {
            plan,
            icon,
            descriptions,
            samples,
            crds: tusk::api::crds(),
            lock,
            frozen,
            instance_manager: instance_manager::version()?,
            postgres_images: {
                use tusk::facts::postgres_images::{Catalog, FILE};
                let text = String::from_utf8(read(FILE)?).map_err(|e| format!("{FILE}: not UTF-8: {e}"))?;
                Catalog::parse(&text).map_err(|e| format!("{FILE}: {e}"))?
            },
        })
    }
}

/// Every file of `release`'s bundle, relative to `bundle/<version>/`: as committed when it was
/// cut, or generated while it is open.
pub fn bundle_files(inputs: &Inputs, release: &Release) -> Vec<(String, String)> {
    match inputs.frozen.get(&release.version) {
        Some(frozen) => frozen.files.clone(),
        None => bundle::files(inputs, release),
    }
}

/// `release`'s manifests by file name, sorted: as committed when it was cut, or generated while
/// it is open. The catalog is built from these.
pub fn bundle_manifests(inputs: &Inputs, release: &Release) -> Vec<(String, Value)> {
    match inputs.frozen.get(&release.version) {
        Some(frozen) => frozen.manifests.clone(),
        None => bundle::manifests(inputs, release),
    }
}

/// One generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Its path relative to the repository root.
    pub path: String,
    /// Its contents.
    pub contents: String,
    /// Part of a released bundle that was cut: it may never change.
    pub frozen: bool,
}

/// Every file of `bundle/` and `catalog/`, the lock of the released bundles, and OLM v1's
/// installer RBAC ([`installer::FILE`]). A released
/// bundle is the committed one, never regenerated; one the plan has just marked released is cut:
/// generated a last time, and its files' SHA-256 join the lock.
pub fn generate(inputs: &Inputs) -> Vec<File> {
    let mut files = Vec::new();
    let mut lock = inputs.lock.clone();
    for release in &inputs.plan.releases {
        let cut = inputs.frozen.contains_key(&release.version);
        let bundle = bundle_files(inputs, release);
        if release.released && !cut {
            lock.record(&release.version, &bundle);
        }
        for (path, contents) in bundle {
            files.push(File {
                path: format!("{BUNDLE_DIR}/{}/{path}", release.version),
                contents,
                frozen: cut,
            });
        }
    }
    files.push(File {
        path: LOCK_FILE.to_owned(),
        contents: lock.render(),
        frozen: false,
    });
    for (path, contents) in catalog::files(inputs) {
        files.push(File {
            path: format!("{CATALOG_DIR}/{path}"),
            contents,
            frozen: false,
        });
    }
    files.push(File {
        path: format!("{CATALOG_DIR}/graph.svg"),
        contents: graph::svg(&inputs.plan),
        frozen: false,
    });
    files.push(File {
        path: installer::FILE.to_owned(),
        contents: installer::file(inputs),
        frozen: false,
    });
    files
}

/// What [`sync`] found.
#[derive(Debug, Default)]
pub struct Sync {
    /// Files written (or, when checking, that would be).
    pub changed: Vec<String>,
    /// Files under `bundle/` or `catalog/` that the generator does not make, removed (or, when
    /// checking, that would be).
    pub stale: Vec<String>,
}

fn first_difference(old: &str, new: &str) -> String {
    let line = old
        .lines()
        .zip(new.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| old.lines().count().min(new.lines().count()));
    format!(
        "line {}: committed {:?}, released {:?}",
        line + 1,
        old.lines().nth(line).unwrap_or("<end of file>"),
        new.lines().nth(line).unwrap_or("<end of file>")
    )
}

/// Every file below `dir`, depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

/// Brings `root`'s `bundle/`, `catalog/` and lock of released bundles to `files`, or with
/// `check` only reports what differs; files under `bundle/` or `catalog/` that are not in `files`
/// are stale. A frozen file that differs, is missing or is not part of its bundle is an error
/// either way: a released bundle is never rewritten.
pub fn sync(root: &Path, files: &[File], check: bool) -> Result<Sync, String> {
    let mut result = Sync::default();
    let mut frozen_errors = Vec::new();
    let frozen_dirs: Vec<String> = files
        .iter()
        .filter(|f| f.frozen)
        .filter_map(|f| {
            f.path
                .rsplit_once('/')
                .map(|_| f.path.split('/').take(2).collect::<Vec<_>>().join("/"))
        })
        .collect();
    for file in files {
        let path = root.join(&file.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        if file.frozen {
            frozen_errors.push(match &current {
                Some(old) => format!(
                    "{}: released and frozen, but it differs from the bundle as released ({}); a released bundle may not change, so give the next release what changed",
                    file.path,
                    first_difference(old, &file.contents)
                ),
                None => format!("{}: released and frozen, but missing", file.path),
            });
            continue;
        }
        result.changed.push(file.path.clone());
        if !check {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, &file.contents)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    let mut existing = Vec::new();
    walk(&root.join(BUNDLE_DIR), &mut existing);
    walk(&root.join(CATALOG_DIR), &mut existing);
    for path in existing {
        let relative = path
            .strip_prefix(root)
            .expect("walked under root")
            .to_string_lossy()
            .replace('\\', "/");
        if files.iter().any(|f| f.path == relative) {
            continue;
        }
        if frozen_dirs.iter().any(|d| relative.starts_with(&format!("{d}/"))) {
            frozen_errors.push(format!(
                "{relative}: in a released and frozen bundle, but not part of it as released"
            ));
            continue;
        }
        result.stale.push(relative);
        if !check {
            std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    if frozen_errors.is_empty() {
        Ok(result)
    } else {
        Err(frozen_errors.join("\n"))
    }
}
