//! Released bundles, frozen. Once a release is cut, its `bundle/<version>/` is what was committed
//! then, byte for byte, whatever the Rust types have become since: the generator never
//! regenerates it. It reads the committed files, proves each unchanged against the SHA-256 that
//! [`LOCK_FILE`] recorded when the release was cut, and builds the catalog from them.
//!
//! The lock is in `sha256sum` format (`sha256sum -c config/released-bundles.sha256` checks it
//! too). `cargo xtask generate` adds a release's lines once, when the plan first marks it
//! `released: true`; after that they never change.

use std::{collections::BTreeMap, path::Path};

use semver::Version;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{BUNDLE_DIR, plan::Plan};

/// The SHA-256 of every file of every released bundle, relative to the repository root.
pub const LOCK_FILE: &str = "config/released-bundles.sha256";

/// A released bundle as it was committed when it was cut.
#[derive(Clone, Debug)]
pub struct FrozenBundle {
    /// Every file, relative to `bundle/<version>/`, with its contents, sorted by path.
    pub files: Vec<(String, String)>,
    /// Each file under `manifests/`, by its file name, parsed.
    pub manifests: Vec<(String, Value)>,
}

/// The lock: each released bundle file, relative to the root, and its SHA-256 in hex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock(pub BTreeMap<String, String>);

impl Lock {
    /// Parses `sha256sum` lines: `<64 hex digits>  <path>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_file(text, LOCK_FILE)
    }

    /// [`Lock::parse`] of the text of `file`, which errors name.
    pub fn parse_file(text: &str, file: &str) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let parsed = line
                .split_once("  ")
                .filter(|(hash, path)| is_sha256(hash) && !path.is_empty());
            let Some((hash, path)) = parsed else {
                return Err(format!(
                    "{file}: line {}: {line:?} is not `<SHA-256 in 64 lowercase hex digits>  <path>`",
                    i + 1
                ));
            };
            entries.insert(path.to_owned(), hash.to_owned());
        }
        Ok(Self(entries))
    }

    /// The lock as `sha256sum` writes it, sorted by path.
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(path, hash)| format!("{hash}  {path}\n"))
            .collect()
    }

    /// Records `files` (relative to `bundle/<version>/`) of `version`'s bundle.
    pub fn record(&mut self, version: &Version, files: &[(String, String)]) {
        for (path, contents) in files {
            self.0
                .insert(bundle_path(version, path), sha256_hex(contents.as_bytes()));
        }
    }

    /// Whether the lock holds any file of `version`'s bundle, i.e. the release was cut.
    pub fn has(&self, version: &Version) -> bool {
        let prefix = bundle_path(version, "");
        self.0.keys().any(|p| p.starts_with(&prefix))
    }
}

fn bundle_path(version: &Version, path: &str) -> String {
    format!("{BUNDLE_DIR}/{version}/{path}")
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads [`LOCK_FILE`] under `root` (none yet is an empty lock).
pub fn load_lock(root: &Path) -> Result<Lock, String> {
    match std::fs::read_to_string(root.join(LOCK_FILE)) {
        Ok(text) => Lock::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
        Err(e) => Err(format!("{LOCK_FILE}: cannot read: {e}")),
    }
}

/// Reads the committed bundle of every release that `lock` says was cut, and proves each file
/// unchanged since. A changed, missing or added file is an error naming it; so is a locked
/// bundle whose release the plan no longer marks released. A release the plan marks released
/// but the lock does not hold yet is left out: the generator cuts it.
pub fn load(root: &Path, plan: &Plan, lock: &Lock) -> Result<BTreeMap<Version, FrozenBundle>, String> {
    let mut errors = Vec::new();
    for path in lock.0.keys() {
        let released = plan
            .releases
            .iter()
            .any(|r| r.released && path.starts_with(&bundle_path(&r.version, "")));
        if !released {
            errors.push(format!(
                "{LOCK_FILE}: {path} is locked, but the plan has no released release it belongs to; a released release stays in the plan, released"
            ));
        }
    }
    let mut bundles = BTreeMap::new();
    for release in plan
        .releases
        .iter()
        .filter(|r| r.released && lock.has(&r.version))
    {
        let dir = bundle_path(&release.version, "");
        let mut paths = Vec::new();
        super::walk(&root.join(&dir), &mut paths);
        paths.sort();
        let mut bundle = FrozenBundle {
            files: Vec::new(),
            manifests: Vec::new(),
        };
        for path in paths {
            let relative = path
                .strip_prefix(root)
                .expect("walked under root")
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = std::fs::read(&path).map_err(|e| format!("{relative}: cannot read: {e}"))?;
            let Some(recorded) = lock.0.get(&relative) else {
                errors.push(format!(
                    "{relative}: in a released and frozen bundle, but not part of it when {} was cut ({LOCK_FILE}); remove it",
                    release.version
                ));
                continue;
            };
            let actual = sha256_hex(&bytes);
            if &actual != recorded {
                errors.push(format!(
                    "{relative}: released and frozen, but changed since {} was cut (SHA-256 {actual}, {LOCK_FILE} records {recorded}); restore it with `git checkout -- {relative}` and give the next release what changed",
                    release.version
                ));
                continue;
            }
            let name = relative[dir.len()..].to_owned();
            let Ok(text) = String::from_utf8(bytes) else {
                errors.push(format!("{relative}: not UTF-8"));
                continue;
            };
            if let Some(manifest) = name.strip_prefix("manifests/") {
                match serde_saphyr::from_str::<Value>(&text) {
                    Ok(value) => bundle.manifests.push((manifest.to_owned(), value)),
                    Err(e) => errors.push(format!("{relative}: not YAML: {e}")),
                }
            }
            bundle.files.push((name, text));
        }
        for path in lock.0.keys().filter(|p| p.starts_with(&dir)) {
            if !bundle
                .files
                .iter()
                .any(|(name, _)| bundle_path(&release.version, name) == *path)
            {
                if root.join(path).is_file() {
                    continue; // changed: reported above
                }
                errors.push(format!("{path}: released and frozen, but missing"));
            }
        }
        bundles.insert(release.version.clone(), bundle);
    }
    if errors.is_empty() {
        Ok(bundles)
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_reads_what_it_writes_and_refuses_other_lines() {
        let mut lock = Lock::default();
        let version = Version::new(1, 0, 0);
        lock.record(&version, &[("manifests/a.yaml".to_owned(), "abc".to_owned())]);
        let text = lock.render();
        // The digest `sha256sum` prints for "abc".
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  bundle/1.0.0/manifests/a.yaml\n"
        );
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert!(lock.has(&version));
        assert!(!lock.has(&Version::new(1, 0, 1)));
        let error = Lock::parse("abc  bundle/1.0.0/x\n").unwrap_err();
        assert!(
            error.contains("line 1: \"abc  bundle/1.0.0/x\" is not"),
            "{error}"
        );
    }
}
