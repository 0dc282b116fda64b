//! The release plan, `config/releases.yaml`: every release, its channels, its upgrade edges, the
//! CRD versions it serves and stores, and what it deprecates.

use std::{collections::BTreeMap, path::Path};

use semver::Version;
use serde::Deserialize;

use super::range::Range;

/// Where the plan lives, relative to the repository root.
pub const PLAN_FILE: &str = "config/releases.yaml";

/// The operator crate's manifest, relative to the repository root: its version is the release
/// this tree builds.
pub const OPERATOR_MANIFEST: &str = "Cargo.toml";

/// The `version` of the `[package]` in the Cargo manifest `text`.
pub fn package_version(text: &str) -> Result<Version, String> {
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "version"
        {
            let value = value.trim().trim_matches('"');
            return Version::parse(value)
                .map_err(|e| format!("{OPERATOR_MANIFEST}: package.version {value:?}: {e}"));
        }
    }
    Err(format!("{OPERATOR_MANIFEST}: no version in [package]"))
}

/// The first release that must record [`Release::cut_from`]; the releases before it were cut
/// before the plan recorded commits.
pub const CUT_FROM_REQUIRED_SINCE: Version = Version::new(1, 0, 0);

/// The whole plan.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// The OLM package name.
    pub package: String,
    /// The name OperatorHub shows.
    pub display_name: String,
    /// The channel a Subscription without one follows.
    pub default_channel: String,
    /// Every channel, in display order.
    pub channels: Vec<String>,
    /// Image repositories.
    pub images: Images,
    /// The OpenShift releases the bundles are offered to.
    pub openshift_versions: String,
    /// The SVG icon, relative to the repository root.
    pub icon: String,
    /// The oldest Kubernetes the operator runs on.
    pub min_kube_version: String,
    /// Every release, oldest first.
    pub releases: Vec<Release>,
}

/// Image repositories (without tags).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Images {
    /// The operator; release `X` runs `<operator>:X`.
    pub operator: String,
    /// The bundle images; release `X` is `<bundle>:vX`.
    pub bundle: String,
    /// The catalog image.
    pub catalog: String,
}

/// One release.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Release {
    /// Its semantic version.
    pub version: Version,
    /// Frozen: its bundle is the one committed when it was cut, byte for byte, whatever the
    /// Rust types have become since.
    #[serde(default)]
    pub released: bool,
    /// The commit the release was cut from (40 lowercase hex digits, `git rev-parse`); required
    /// once released, from [`CUT_FROM_REQUIRED_SINCE`] on.
    #[serde(default)]
    pub cut_from: Option<String>,
    /// The digest of the operator image built from [`Self::cut_from`] (`sha256:` and 64 hex
    /// digits, as `cargo xtask images` prints it and the registry stores it), recorded when the
    /// image is pushed. From then on the CSV runs the operator and the instance manager of this
    /// release by digest. Never typed: copied from the build that pushed it.
    #[serde(default)]
    pub operator_digest: Option<String>,
    /// The day it was cut, or, while it is open, the day it is planned for (`YYYY-MM-DD`, UTC):
    /// its CSV's `createdAt`, and the time of every file in its bundle image, so that the image,
    /// and the digest the catalog references it by, are the same on every machine.
    pub date: String,
    /// The channels it is in.
    pub channels: Vec<String>,
    /// The release it replaces.
    #[serde(default)]
    pub replaces: Option<Version>,
    /// Releases it skips.
    #[serde(default)]
    pub skips: Vec<Version>,
    /// The range of releases it upgrades from directly (`olm.skipRange`).
    #[serde(default)]
    pub skip_range: Option<String>,
    /// The channels whose entry for this release carries `skipRange`; absent means all of its
    /// channels. A channel without it upgrades one release at a time.
    #[serde(default)]
    pub skip_range_channels: Option<Vec<String>>,
    /// `alpha`, `beta` or `stable`.
    pub maturity: String,
    /// The Markdown file with its long description, relative to the repository root.
    pub description: String,
    /// The operator capability level it reaches.
    pub capabilities: String,
    /// For each kind, what this release serves and stores.
    pub crds: BTreeMap<String, CrdVersions>,
    /// What this release deprecates in the catalog.
    #[serde(default)]
    pub deprecations: Vec<Deprecation>,
}

/// The versions of one kind a release serves.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CrdVersions {
    /// Served versions, oldest first.
    pub served: Vec<String>,
    /// The storage version.
    pub storage: String,
    /// Served versions marked deprecated.
    #[serde(default)]
    pub deprecated: Vec<String>,
}

/// A catalog deprecation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// The deprecated release.
    pub bundle: Version,
    /// What OLM tells the user.
    pub message: String,
}

impl Release {
    /// [`Self::date`], read.
    pub fn day(&self) -> Result<k8s_openapi::jiff::civil::Date, String> {
        self.date
            .parse()
            .map_err(|e| format!("{:?} is not a day `YYYY-MM-DD`: {e}", self.date))
    }

    /// The start of [`Self::date`] (UTC), in seconds since the epoch.
    pub fn epoch(&self) -> Result<i64, String> {
        let start = self
            .day()?
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .map_err(|e| format!("{}: {e}", self.date))?;
        Ok(start.timestamp().as_second())
    }

    /// The `skipRange` of this release's entry in `channel`, if that entry has one.
    pub fn skip_range_in(&self, channel: &str) -> Option<&str> {
        let everywhere = self.skip_range_channels.is_none();
        let here = self
            .skip_range_channels
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c == channel));
        self.skip_range.as_deref().filter(|_| everywhere || here)
    }
}

impl Plan {
    /// Reads and checks the plan at `root`/[`PLAN_FILE`].
    pub fn load(root: &Path) -> Result<Self, String> {
        let path = root.join(PLAN_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{PLAN_FILE}: {e}"))
    }

    /// Parses and checks a plan.
    pub fn parse(text: &str) -> Result<Self, String> {
        let plan: Plan = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        plan.check()?;
        Ok(plan)
    }

    /// The release with `version`.
    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// Checks that this tree builds the plan's newest release: the operator crate's version
    /// (which its default image, `DEFAULT_OPERATOR_IMAGE`, names) is that release's version, so
    /// the image the newest CSV runs is the image of this build.
    pub fn check_builds_newest(&self, operator_version: &Version) -> Result<(), String> {
        let newest = &self
            .releases
            .last()
            .ok_or("releases: empty; the plan needs a release")?
            .version;
        if newest == operator_version {
            return Ok(());
        }
        Err(format!(
            "{OPERATOR_MANIFEST}: package version {operator_version} is not the newest release in {PLAN_FILE}, {newest}: this tree builds the newest release, whose CSV runs {}:{newest}, so bump one to match the other",
            self.images.operator
        ))
    }

    /// Checks what the types cannot: every reference resolves, every value is one OLM allows.
    fn check(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if !self.channels.contains(&self.default_channel) {
            errors.push(format!(
                "defaultChannel: {:?} is not in channels {:?}",
                self.default_channel, self.channels
            ));
        }
        match super::instance_manager::version() {
            Ok(v) if self.release(&v).is_some() => {}
            _ => errors.push(format!(
                "src/facts/operator.rs: INSTANCE_MANAGER {:?} is not a release of the plan: it names the release whose image carries the instance manager, one of {:?}",
                tusk::facts::operator::INSTANCE_MANAGER,
                self.releases.iter().map(|r| r.version.to_string()).collect::<Vec<_>>()
            )),
        }
        let all = tusk::api::crds();
        let kinds: Vec<&str> = all.iter().map(|c| c.spec.names.kind.as_str()).collect();
        for (i, release) in self.releases.iter().enumerate() {
            let at = format!("releases[{i}] ({})", release.version);
            if i > 0 && self.releases[i - 1].version >= release.version {
                errors.push(format!("{at}.version: releases must be listed oldest first"));
            }
            for channel in &release.channels {
                if !self.channels.contains(channel) {
                    errors.push(format!(
                        "{at}.channels: {channel:?} is not one of the plan's channels {:?}",
                        self.channels
                    ));
                }
            }
            for edge in release.replaces.iter().chain(&release.skips) {
                if self.release(edge).is_none() {
                    errors.push(format!(
                        "{at}: {edge} is replaced or skipped but is not a release in the plan"
                    ));
                }
            }
            if let Some(range) = &release.skip_range
                && let Err(e) = Range::parse(range)
            {
                errors.push(format!("{at}.skipRange: {e}"));
            }
            for channel in release.skip_range_channels.iter().flatten() {
                if !release.channels.contains(channel) {
                    errors.push(format!(
                        "{at}.skipRangeChannels: {channel:?} is not one of the release's channels {:?}",
                        release.channels
                    ));
                }
            }
            if release.skip_range_channels.is_some() && release.skip_range.is_none() {
                errors.push(format!(
                    "{at}.skipRangeChannels: set, but the release has no skipRange"
                ));
            }
            match &release.cut_from {
                Some(commit) if !is_commit(commit) => errors.push(format!(
                    "{at}.cutFrom: {commit:?} is not a commit: 40 lowercase hexadecimal digits, as `git rev-parse <commit>` prints them"
                )),
                Some(_) if !release.released => errors.push(format!(
                    "{at}.cutFrom: set, but the release is not released: a release records its commit when it is cut"
                )),
                None if release.released && release.version >= CUT_FROM_REQUIRED_SINCE => errors.push(format!(
                    "{at}.cutFrom: missing: a released release from {CUT_FROM_REQUIRED_SINCE} on records the commit it was cut from (40 lowercase hexadecimal digits)"
                )),
                _ => {}
            }
            if let Err(e) = release.day() {
                errors.push(format!("{at}.date: {e}"));
            }
            if let Some(digest) = &release.operator_digest
                && !tusk::facts::postgres_images::is_digest(digest)
            {
                errors.push(format!(
                    "{at}.operatorDigest: {digest:?} is not a digest: `sha256:` and 64 lowercase hexadecimal digits, as `cargo xtask images` prints it"
                ));
            }
            if !["alpha", "beta", "stable"].contains(&release.maturity.as_str()) {
                errors.push(format!(
                    "{at}.maturity: {:?} is not one of alpha, beta, stable",
                    release.maturity
                ));
            }
            if !super::CAPABILITY_LEVELS.contains(&release.capabilities.as_str()) {
                errors.push(format!(
                    "{at}.capabilities: {:?} is not one of {}",
                    release.capabilities,
                    super::CAPABILITY_LEVELS.join(", ")
                ));
            }
            for kind in &kinds {
                if !release.crds.contains_key(*kind) {
                    errors.push(format!(
                        "{at}.crds: {kind} is missing; every release owns every kind"
                    ));
                }
            }
            for (kind, versions) in &release.crds {
                let Some(known) = all.iter().find(|c| &c.spec.names.kind == kind) else {
                    errors.push(format!(
                        "{at}.crds.{kind}: not a Tusk kind; allowed: {}",
                        kinds.join(", ")
                    ));
                    continue;
                };
                let names: Vec<String> = known.spec.versions.iter().map(|v| v.name.clone()).collect();
                for version in versions.served.iter().chain(&versions.deprecated) {
                    if !names.contains(version) {
                        errors.push(format!(
                            "{at}.crds.{kind}: {version} is not a version of {kind}; allowed: {}",
                            names.join(", ")
                        ));
                    }
                }
                if !versions.served.contains(&versions.storage) {
                    errors.push(format!(
                        "{at}.crds.{kind}.storage: {} is not served",
                        versions.storage
                    ));
                }
                for version in &versions.deprecated {
                    if !versions.served.contains(version) {
                        errors.push(format!("{at}.crds.{kind}.deprecated: {version} is not served"));
                    }
                }
            }
            for (j, deprecation) in release.deprecations.iter().enumerate() {
                if deprecation.bundle >= release.version || self.release(&deprecation.bundle).is_none() {
                    errors.push(format!(
                        "{at}.deprecations[{j}].bundle: {} must be an earlier release in the plan",
                        deprecation.bundle
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// A full commit hash as `git rev-parse` prints it: 40 lowercase hexadecimal digits.
fn is_commit(text: &str) -> bool {
    text.len() == 40
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_builds_the_newest_release() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is in the repository");
        let plan = Plan::load(root).unwrap();
        let manifest = std::fs::read_to_string(root.join(OPERATOR_MANIFEST)).unwrap();
        let built = package_version(&manifest).unwrap();
        assert_eq!(&built, &plan.releases.last().unwrap().version);
        plan.check_builds_newest(&built).unwrap();

        let older = Version::new(1, 0, 0);
        let error = plan.check_builds_newest(&older).unwrap_err();
        assert!(
            error.starts_with(
                "Cargo.toml: package version 1.0.0 is not the newest release in config/releases.yaml"
            ),
            "{error}"
        );
        assert_eq!(
            package_version(
                "[workspace]\nversion = \"9.9.9\"\n[package]\nname = \"x\"\nversion = \"1.2.3\"\n"
            ),
            Ok(Version::new(1, 2, 3))
        );
        assert!(
            package_version("[package]\nversion = \"1.2\"\n")
                .unwrap_err()
                .contains("package.version \"1.2\"")
        );
    }
}
