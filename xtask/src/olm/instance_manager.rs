//! The instance manager a release deploys stays the one its image carries.
//!
//! PostgreSQL pods copy the instance manager from the operator image of the release that
//! `INSTANCE_MANAGER` (`src/facts/operator.rs`) names, not from the image of the release that
//! runs. So once that release is cut, its instance manager is frozen in its image: a later change
//! to the instance manager's sources would run nowhere, while the operator would expect it. When
//! `INSTANCE_MANAGER` names a released release, `cargo xtask check` therefore compares the
//! sources with the SHA-256 that its lock ([`lock_file`], in `sha256sum` format) recorded when
//! that release was cut, and refuses any difference: set `INSTANCE_MANAGER` to the open release
//! (and the pods roll onto it), or undo the change. `cargo xtask release` writes the lock when
//! it cuts the release `INSTANCE_MANAGER` names.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use semver::Version;

use super::{
    frozen::{Lock, sha256_hex},
    plan::Plan,
};

/// The release `INSTANCE_MANAGER` (`src/facts/operator.rs`) names.
pub fn version() -> Result<Version, String> {
    tusk::facts::operator::INSTANCE_MANAGER.parse().map_err(|e| {
        format!(
            "src/facts/operator.rs: INSTANCE_MANAGER {:?} is not a version: {e}",
            tusk::facts::operator::INSTANCE_MANAGER
        )
    })
}

/// The lock of the instance manager of `version`: the SHA-256 of each of its sources as the
/// release was cut.
pub fn lock_file(version: &Version) -> String {
    format!("config/instance-manager-{version}.sha256")
}

/// The instance manager's sources: what runs in a PostgreSQL pod (the `instance` command, WAL
/// archiving and base backups), the facts it shares with the operator, and process handling.
pub const SOURCES: [&str; 4] = [
    "src/instance",
    "src/backup",
    "src/facts/instance.rs",
    "src/process.rs",
];

fn walk(root: &Path, path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let full = root.join(path);
    if full.is_dir() {
        let entries =
            std::fs::read_dir(&full).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            walk(root, &path.join(entry.file_name()), out)?;
        }
    } else if full.exists() {
        out.push(path.to_owned());
    }
    Ok(())
}

/// Each source file under `root`, relative to it, and its SHA-256 in hex.
pub fn hashes(root: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut files = Vec::new();
    for source in SOURCES {
        walk(root, Path::new(source), &mut files)?;
    }
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(root.join(&path))
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            Ok((path.display().to_string(), sha256_hex(&bytes)))
        })
        .collect()
}

/// Records the sources under `root` as the instance manager of `version`.
pub fn lock(root: &Path, version: &Version) -> Result<(), String> {
    let file = lock_file(version);
    std::fs::write(root.join(&file), Lock(hashes(root)?).render())
        .map_err(|e| format!("{file}: cannot write: {e}"))
}

/// Checks that the sources under `root` are still the instance manager of `instance_manager`
/// when that release of `plan` is released.
pub fn check(root: &Path, plan: &Plan, instance_manager: &Version) -> Result<(), String> {
    let open = plan
        .releases
        .last()
        .map(|r| r.version.to_string())
        .unwrap_or_default();
    let released = plan.release(instance_manager).is_some_and(|r| r.released);
    if !released {
        return Ok(());
    }
    let fix = format!(
        "INSTANCE_MANAGER (src/facts/operator.rs) names {instance_manager}, whose image carries the instance manager as it was cut: set it to the open release {open}, so that pods roll onto the changed instance manager, or undo the change"
    );
    let file = lock_file(instance_manager);
    let text =
        std::fs::read_to_string(root.join(&file)).map_err(|e| format!("{file}: cannot read ({e}); {fix}"))?;
    let Lock(locked) = Lock::parse_file(&text, &file)?;
    let now = hashes(root)?;
    let mut changed: Vec<String> = Vec::new();
    for (path, hash) in &now {
        match locked.get(path) {
            Some(was) if was == hash => {}
            Some(_) => changed.push(format!("{path} changed")),
            None => changed.push(format!("{path} is new")),
        }
    }
    changed.extend(
        locked
            .keys()
            .filter(|p| !now.contains_key(*p))
            .map(|p| format!("{p} is gone")),
    );
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the instance manager's sources differ from {instance_manager}'s: {}; {fix}",
            changed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = include_str!("../../../config/releases.yaml");

    /// A copy of the instance manager's sources under a temporary root.
    fn sources() -> tempfile::TempDir {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for source in SOURCES {
            walk(repo, Path::new(source), &mut files).unwrap();
        }
        for file in files {
            let to = dir.path().join(&file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo.join(&file), to).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        dir
    }

    /// Once the release it names is cut, the instance manager's sources may not change while
    /// `INSTANCE_MANAGER` still names it: each changed, new or removed file is named. Naming the
    /// open release lifts it.
    #[test]
    fn a_released_instance_manager_refuses_changed_sources() {
        let plan = Plan::parse(PLAN).unwrap();
        let open = plan.releases.last().unwrap().version.clone();
        let next = Version::new(open.major, open.minor + 1, 0);
        let cut = Plan::parse(
            &super::super::release::cut(
                PLAN,
                &open,
                "0123456789abcdef0123456789abcdef01234567",
                &next,
                "2027-01-15",
                None,
            )
            .unwrap(),
        )
        .unwrap();
        let dir = sources();
        let root = dir.path();
        // Open: nothing to compare with.
        check(root, &plan, &open).unwrap();
        // Cut, and locked: as it was.
        lock(root, &open).unwrap();
        check(root, &cut, &open).unwrap();
        std::fs::write(root.join("src/instance/mod.rs"), "// changed\n").unwrap();
        std::fs::write(root.join("src/backup/new.rs"), "// new\n").unwrap();
        std::fs::remove_file(root.join("src/process.rs")).unwrap();
        let error = check(root, &cut, &open).unwrap_err();
        for expected in [
            "src/instance/mod.rs changed",
            "src/backup/new.rs is new",
            "src/process.rs is gone",
            &format!("set it to the open release {next}"),
        ] {
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // The changed instance manager is the open release's.
        check(root, &cut, &next).unwrap();
        // A lock of another release does not vouch for this one.
        std::fs::remove_file(root.join(lock_file(&open))).unwrap();
        lock(root, &next).unwrap();
        let error = check(root, &cut, &open).unwrap_err();
        assert!(
            error.starts_with(&format!("{}: cannot read", lock_file(&open))),
            "{error}"
        );
    }
}
