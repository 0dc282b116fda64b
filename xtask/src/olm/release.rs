//! `cargo xtask release <version>`: cutting a release is one command. It freezes the open
//! release `<version>` (`released: true`, and `cutFrom`, the commit it is cut from), opens the
//! next one in the plan (a copy of it that replaces it, its skip range moved up), makes the crate
//! build the next one, and regenerates: the generator writes the cut release's bundle a last
//! time and locks it (see [`super::frozen`]).
//!
//! The plan is edited as text, so that its comments and layout stay as people wrote them; the
//! result is parsed and checked as the generator would before anything is written.

use std::path::Path;

use semver::Version;

use super::plan::{OPERATOR_MANIFEST, PLAN_FILE, Plan};

/// The lines of the release block of `version` in `text`: from its `  - version:` line to the
/// line before the next release (or the end).
fn block(lines: &[&str], version: &Version) -> Option<(usize, usize)> {
    let opens = |l: &str| l.starts_with("  - version:");
    let start = lines
        .iter()
        .position(|l| opens(l) && l.trim_start_matches("  - version:").trim() == version.to_string())?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| opens(l))
        .map_or(lines.len(), |i| start + 1 + i);
    Some((start, end))
}

/// The plan `text` with `version` cut from `commit` and `next` opened after it. Pure.
pub fn cut(
    text: &str,
    version: &Version,
    commit: &str,
    next: &Version,
    day: &str,
    operator_digest: Option<&str>,
) -> Result<String, String> {
    let plan = Plan::parse(text)?;
    let newest = &plan.releases.last().ok_or("releases: empty")?.version;
    let release = plan
        .release(version)
        .ok_or_else(|| format!("{PLAN_FILE}: no release {version} to cut; the open release is {newest}"))?;
    if release.released {
        return Err(format!(
            "{PLAN_FILE}: {version} is already released (cut from {:?})",
            release.cut_from
        ));
    }
    if version != newest {
        return Err(format!(
            "{PLAN_FILE}: {version} is not the newest release ({newest}); only the open release is cut"
        ));
    }
    if !(commit.len() == 40
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(format!(
            "the commit {commit:?} is not 40 lowercase hexadecimal digits"
        ));
    }
    if next <= version {
        return Err(format!("the next release {next} must be later than {version}"));
    }
    if let Some(digest) = operator_digest
        && !tusk::facts::postgres_images::is_digest(digest)
    {
        return Err(format!(
            "--operator-digest {digest:?} is not a digest: `sha256:` and 64 lowercase hexadecimal digits, as `cargo xtask images` prints it"
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    let (start, end) =
        block(&lines, version).ok_or_else(|| format!("{PLAN_FILE}: no `  - version: {version}` line"))?;
    // The block without its trailing blank lines, which separate releases.
    let mut body_end = end;
    while body_end > start && lines[body_end - 1].trim().is_empty() {
        body_end -= 1;
    }
    let mut opened = vec![format!("  - version: {next}")];
    let mut in_dropped = false;
    for line in &lines[start + 1..body_end] {
        let key = line.trim_start().split(':').next().unwrap_or_default();
        let indent = line.len() - line.trim_start().len();
        if indent == 4 {
            // Deprecations and skips name older bundles: they belong to the release that made them.
            in_dropped = matches!(key, "deprecations" | "skips" | "operatorDigest");
            if in_dropped {
                continue;
            }
        } else if in_dropped && indent > 4 {
            continue;
        }
        opened.push(match key {
            "replaces" => format!("    replaces: {version}"),
            "date" => format!("    date: {day}"),
            "skipRange" => line.replace(&format!("<{version}"), &format!("<{next}")),
            _ => (*line).to_owned(),
        });
    }
    if !opened.iter().any(|l| l.starts_with("    replaces:")) {
        opened.insert(1, format!("    replaces: {version}"));
    }
    let mut out: Vec<String> = lines[..=start].iter().map(|l| (*l).to_owned()).collect();
    out.push("    released: true".to_owned());
    out.push(format!("    cutFrom: {commit}"));
    if let Some(digest) = operator_digest {
        out.push(format!("    operatorDigest: {digest}"));
    }
    out.extend(lines[start + 1..body_end].iter().map(|l| {
        if l.starts_with("    date:") {
            format!("    date: {day}")
        } else {
            (*l).to_owned()
        }
    }));
    out.push(String::new());
    out.extend(opened);
    out.extend(lines[body_end..].iter().map(|l| (*l).to_owned()));
    let mut text = out.join("\n");
    text.push('\n');
    let checked = Plan::parse(&text).map_err(|e| format!("the plan after the cut does not parse: {e}"))?;
    let cut = checked.release(version).expect("kept");
    let opened = checked
        .release(next)
        .ok_or("the next release is missing after the cut")?;
    if !cut.released
        || cut.cut_from.as_deref() != Some(commit)
        || cut.date != day
        || cut.operator_digest.as_deref() != operator_digest
        || opened.replaces.as_ref() != Some(version)
    {
        return Err("the plan after the cut is not what was meant; edit it by hand".to_owned());
    }
    Ok(text)
}

/// `manifest` (a `Cargo.toml`) with its `[package]` version `from` made `to`. Pure.
pub fn bump_manifest(manifest: &str, from: &Version, to: &Version) -> Result<String, String> {
    let mut in_package = false;
    let mut done = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_package = line.trim() == "[package]";
        }
        if in_package && !done && line.trim() == format!("version = \"{from}\"") {
            out.push(format!("version = \"{to}\""));
            done = true;
        } else {
            out.push(line.to_owned());
        }
    }
    if !done {
        return Err(format!(
            "{OPERATOR_MANIFEST}: no `version = \"{from}\"` in [package]"
        ));
    }
    Ok(out.join("\n") + "\n")
}

/// `lock` (a `Cargo.lock`) with package `name`'s version `from` made `to`. Pure.
pub fn bump_lock(lock: &str, name: &str, from: &Version, to: &Version) -> Result<String, String> {
    let entry = format!("name = \"{name}\"\nversion = \"{from}\"");
    if !lock.contains(&entry) {
        return Err(format!("Cargo.lock: no package {name} {from}"));
    }
    Ok(lock.replacen(&entry, &format!("name = \"{name}\"\nversion = \"{to}\""), 1))
}

/// Cuts `version` from `commit` under `root` and opens `next`: the plan, `Cargo.toml` and
/// `Cargo.lock`. The caller regenerates.
pub fn release(
    root: &Path,
    version: &Version,
    commit: &str,
    next: &Version,
    day: &str,
    operator_digest: Option<&str>,
) -> Result<(), String> {
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: cannot read: {e}"))
    };
    let write = |path: &str, text: &str| {
        std::fs::write(root.join(path), text).map_err(|e| format!("{path}: cannot write: {e}"))
    };
    let plan = cut(&read(PLAN_FILE)?, version, commit, next, day, operator_digest)?;
    let manifest = bump_manifest(&read(OPERATOR_MANIFEST)?, version, next)?;
    let lock = bump_lock(&read("Cargo.lock")?, "tusk-operator", version, next)?;
    write(PLAN_FILE, &plan)?;
    write(OPERATOR_MANIFEST, &manifest)?;
    write("Cargo.lock", &lock)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = include_str!("../../../config/releases.yaml");
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn cutting_the_open_release_freezes_it_and_opens_the_next() {
        let plan = Plan::parse(PLAN).unwrap();
        let open = plan.releases.last().unwrap().clone();
        let next = Version::new(open.version.major, open.version.minor + 1, 0);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let text = cut(PLAN, &open.version, commit, &next, "2027-01-15", Some(DIGEST)).unwrap();
        let after = Plan::parse(&text).unwrap();
        assert_eq!(after.releases.len(), plan.releases.len() + 1);
        let cut = after.release(&open.version).unwrap();
        assert!(cut.released);
        assert_eq!(cut.cut_from.as_deref(), Some(commit));
        assert_eq!(
            (cut.date.as_str(), opened_date(&after)),
            ("2027-01-15", "2027-01-15")
        );
        let opened = after.releases.last().unwrap();
        assert_eq!(opened.version, next);
        assert!(!opened.released);
        assert_eq!(opened.replaces.as_ref(), Some(&open.version));
        assert_eq!(opened.channels, open.channels);
        assert_eq!(opened.crds, open.crds);
        assert!(opened.deprecations.is_empty());
        if let Some(range) = &open.skip_range {
            assert_eq!(
                opened.skip_range.as_deref(),
                Some(
                    range
                        .replace(&format!("<{}", open.version), &format!("<{next}"))
                        .as_str()
                )
            );
        }
        // Everything before the cut release is as it was, comments included.
        let before = PLAN
            .split(&format!("  - version: {}", open.version))
            .next()
            .unwrap();
        assert!(text.starts_with(before));
    }

    fn opened_date(plan: &Plan) -> &str {
        &plan.releases.last().unwrap().date
    }

    #[test]
    fn a_cut_that_cannot_be_made_says_why() {
        let plan = Plan::parse(PLAN).unwrap();
        let open = plan.releases.last().unwrap().version.clone();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let released = &plan.releases.iter().find(|r| r.released).unwrap().version;
        let cases = [
            (released.clone(), commit, v("9.0.0"), "is already released"),
            (v("0.9.9"), commit, v("9.0.0"), "no release 0.9.9 to cut"),
            (
                open.clone(),
                "HEAD",
                v("9.0.0"),
                "is not 40 lowercase hexadecimal digits",
            ),
            (open.clone(), commit, open.clone(), "must be later than"),
        ];
        for (version, commit, next, message) in cases {
            let error = cut(PLAN, &version, commit, &next, "2027-01-15", None).unwrap_err();
            assert!(error.contains(message), "{version}: {error}");
        }
    }

    #[test]
    fn the_crate_and_its_lock_entry_move_to_the_next_version() {
        let manifest = "[package]\nname = \"tusk-operator\"\nversion = \"1.1.0\"\n\n[dependencies]\nx = { version = \"1.1.0\" }\n";
        let bumped = bump_manifest(manifest, &v("1.1.0"), &v("1.2.0")).unwrap();
        assert!(bumped.contains("[package]\nname = \"tusk-operator\"\nversion = \"1.2.0\"\n"));
        assert!(bumped.contains("x = { version = \"1.1.0\" }"));
        assert!(bump_manifest(manifest, &v("1.0.0"), &v("1.2.0")).is_err());
        let lock = "[[package]]\nname = \"tusk-operator\"\nversion = \"1.1.0\"\n";
        assert_eq!(
            bump_lock(lock, "tusk-operator", &v("1.1.0"), &v("1.2.0")).unwrap(),
            "[[package]]\nname = \"tusk-operator\"\nversion = \"1.2.0\"\n"
        );
    }
}
