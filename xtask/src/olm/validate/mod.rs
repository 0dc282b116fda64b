//! `cargo xtask validate`: checks over the committed `bundle/` and `catalog/` that mirror what
//! operator-framework's validators check (bundle, CSV, CRD, OperatorHub v2, good practices,
//! standard categories and capabilities, deprecated APIs, bundle size), plus upgrade safety
//! across releases. Every finding names the file and the field.
//!
//! One module per concern. For each bundle, [`bundle`] checks the bundle as a whole and runs the
//! others: `bundle_annotations` (`metadata/annotations.yaml`), `csv` (the CSV's identity and
//! OperatorHub listing), `csv_annotations`, `examples` (`alm-examples`), `install` (install
//! modes, strategy, Deployments), `permissions` (RBAC), `webhooks`, `owned_crds` (owned CRDs and
//! their descriptors), `crd` (each CRD on its own) and `olm_v1` (what OLM v1 cannot honour, as
//! warnings). `upgrade` checks the catalog and upgrade safety across releases, and `olm_v1` the
//! catalog's dependencies; `formats` holds the name, image and e-mail rules they share.

mod bundle;
mod bundle_annotations;
mod crd;
pub mod crd_upgrade;
mod csv;
mod csv_annotations;
mod examples;
mod formats;
mod install;
mod olm_v1;
mod owned_crds;
mod permissions;
mod upgrade;
mod webhooks;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{BUNDLE_DIR, CATALOG_DIR};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Publishing would be wrong: OLM or an index would refuse it, or users would lose data.
    Error,
    /// Against operator-framework's recommendations.
    Warning,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Error or warning.
    pub level: Level,
    /// The file, relative to the root.
    pub file: String,
    /// The field in it (a dotted path), or `-` for the file as a whole.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{level}: {}: {}: {}", self.file, self.field, self.message)
    }
}

/// Collects findings.
#[derive(Debug, Default)]
pub(crate) struct Report {
    findings: Vec<Finding>,
}

impl Report {
    pub(crate) fn error(&mut self, file: &str, field: impl Into<String>, message: impl Into<String>) {
        self.push(Level::Error, file, field.into(), message.into());
    }

    pub(crate) fn warn(&mut self, file: &str, field: impl Into<String>, message: impl Into<String>) {
        self.push(Level::Warning, file, field.into(), message.into());
    }

    fn push(&mut self, level: Level, file: &str, field: String, message: String) {
        self.findings.push(Finding {
            level,
            file: file.to_owned(),
            field,
            message,
        });
    }
}

/// A bundle as read from disk.
#[derive(Clone, Debug)]
pub(crate) struct LoadedBundle {
    /// `bundle/<version>`.
    pub dir: String,
    /// The directory name.
    pub version: String,
    /// Every manifest: its path relative to the root, and its parsed YAML.
    pub manifests: Vec<(String, Value)>,
    /// `metadata/annotations.yaml`'s `annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Every file's path and bytes, for the size check.
    pub files: Vec<(String, Vec<u8>)>,
}

impl LoadedBundle {
    /// The CSV and its path.
    pub fn csv(&self) -> Option<(&str, &Value)> {
        self.manifests
            .iter()
            .find(|(_, m)| m["kind"] == "ClusterServiceVersion")
            .map(|(p, m)| (p.as_str(), m))
    }

    /// The CRDs and their paths.
    pub fn crds(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.manifests
            .iter()
            .filter(|(_, m)| m["kind"] == "CustomResourceDefinition")
            .map(|(p, m)| (p.as_str(), m))
    }
}

/// The group, version and kind of an object, empty where missing.
pub(crate) fn gvk(object: &Value) -> (&str, &str, &str) {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
        .unwrap_or_default();
    (group, version, object["kind"].as_str().unwrap_or_default())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                files_under(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn load_bundles(root: &Path, report: &mut Report) -> Vec<LoadedBundle> {
    let mut bundles = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(BUNDLE_DIR))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs {
        let name = relative(root, &dir);
        let mut paths = Vec::new();
        files_under(&dir, &mut paths);
        let mut bundle = LoadedBundle {
            dir: name.clone(),
            version: dir.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            files: Vec::new(),
        };
        for path in paths {
            let file = relative(root, &path);
            let bytes = std::fs::read(&path).unwrap_or_default();
            let is_yaml = file.ends_with(".yaml") || file.ends_with(".yml") || file.ends_with(".json");
            if file.starts_with(&format!("{name}/manifests/")) && is_yaml {
                match serde_saphyr::from_slice::<Value>(&bytes) {
                    Ok(value) => bundle.manifests.push((file.clone(), value)),
                    Err(e) => report.error(&file, "-", format!("not YAML: {e}")),
                }
            } else if file == format!("{name}/metadata/annotations.yaml") {
                match serde_saphyr::from_slice::<Value>(&bytes) {
                    Ok(value) => match value["annotations"].as_object() {
                        Some(map) => {
                            for (k, v) in map {
                                match v.as_str() {
                                    Some(v) => {
                                        bundle.annotations.insert(k.clone(), v.to_owned());
                                    }
                                    None => {
                                        report.error(&file, format!("annotations.{k}"), "must be a string")
                                    }
                                }
                            }
                        }
                        None => report.error(
                            &file,
                            "annotations",
                            "missing: the bundle's annotations go under the key `annotations`",
                        ),
                    },
                    Err(e) => report.error(&file, "-", format!("not YAML: {e}")),
                }
            }
            bundle.files.push((file, bytes));
        }
        bundles.push(bundle);
    }
    bundles
}

/// Every finding for the bundles and catalog under `root`, errors first.
pub fn validate(root: &Path) -> Vec<Finding> {
    let mut report = Report::default();
    let bundles = load_bundles(root, &mut report);
    if bundles.is_empty() {
        report.error(
            BUNDLE_DIR,
            "-",
            "no bundles: expected bundle/<version>/ directories",
        );
    }
    for bundle in &bundles {
        bundle::check(bundle, &mut report);
    }
    let catalogs: Vec<PathBuf> = {
        let mut all = Vec::new();
        files_under(&root.join(CATALOG_DIR), &mut all);
        all.into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
            .collect()
    };
    if catalogs.is_empty() {
        report.error(
            CATALOG_DIR,
            "-",
            "no catalog: expected catalog/<package>/catalog.yaml",
        );
    }
    for path in catalogs {
        let file = relative(root, &path);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match serde_saphyr::from_multiple::<Value>(&text) {
            Ok(blobs) => {
                upgrade::check(&file, &blobs, &bundles, &mut report);
                olm_v1::check_catalog(&file, &blobs, &mut report);
            }
            Err(e) => report.error(&file, "-", format!("not YAML: {e}")),
        }
    }
    let mut findings = report.findings;
    findings.sort();
    findings.dedup();
    findings
}
