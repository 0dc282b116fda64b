//! Checks on the catalog: what `opm validate` refuses, and upgrade safety: one head per channel,
//! no cycles, every bundle reachable, every replaced CSV present, no stored version dropped, and
//! no newer CRD refusing an example an older release accepted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    LoadedBundle, Report,
    crd::version_schema,
    formats::{is_dns_name, is_image},
};
use crate::olm::{range::Range, schema::refusals};

/// What one release serves and stores, per CRD name.
#[derive(Clone, Debug, Default)]
struct Release {
    version: Option<semver::Version>,
    served: BTreeMap<String, BTreeSet<String>>,
    storage: BTreeMap<String, String>,
    examples: Vec<Value>,
    bundle: Option<LoadedBundle>,
}

fn release_of(bundle: &LoadedBundle) -> Release {
    let mut release = Release {
        bundle: Some(bundle.clone()),
        ..Release::default()
    };
    for (_, crd) in bundle.crds() {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let v = version["name"].as_str().unwrap_or_default().to_owned();
            if version["served"] == true {
                release.served.entry(name.clone()).or_default().insert(v.clone());
            }
            if version["storage"] == true {
                release.storage.insert(name.clone(), v);
            }
        }
    }
    if let Some((_, csv)) = bundle.csv() {
        release.version = csv["spec"]["version"]
            .as_str()
            .and_then(|v| semver::Version::parse(v).ok());
        release.examples = csv["metadata"]["annotations"]["alm-examples"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
    }
    release
}

pub(super) fn check(file: &str, blobs: &[Value], bundles: &[LoadedBundle], report: &mut Report) {
    let of = |schema: &str| -> Vec<(usize, &Value)> {
        blobs
            .iter()
            .enumerate()
            .filter(|(_, b)| b["schema"] == schema)
            .collect()
    };
    for (i, blob) in blobs.iter().enumerate() {
        if blob["schema"].as_str().is_none_or(str::is_empty) {
            report.error(
                file,
                format!("[{i}].schema"),
                "missing: every catalog object names its schema",
            );
        }
    }
    let packages = of("olm.package");
    if packages.len() != 1 {
        report.error(
            file,
            "olm.package",
            format!(
                "{} olm.package objects; this catalog holds exactly one package",
                packages.len()
            ),
        );
    }
    let Some((pi, package)) = packages.first().copied() else {
        return;
    };
    let package_name = package["name"].as_str().unwrap_or_default();
    if !is_dns_name(package_name) || package_name.contains('.') {
        report.error(
            file,
            format!("[{pi}].name"),
            format!("invalid package name {package_name:?}: a DNS-1123 label"),
        );
    }
    if package["icon"]["mediatype"].as_str().is_none_or(str::is_empty)
        || package["icon"]["base64data"].as_str().is_none_or(str::is_empty)
    {
        report.warn(
            file,
            format!("[{pi}].icon"),
            "missing: OperatorHub shows a placeholder",
        );
    }

    // Bundles.
    let mut releases: BTreeMap<String, Release> = BTreeMap::new();
    let by_csv: BTreeMap<String, &LoadedBundle> = bundles
        .iter()
        .filter_map(|b| {
            b.csv()
                .and_then(|(_, c)| c["metadata"]["name"].as_str())
                .map(|n| (n.to_owned(), b))
        })
        .collect();
    for (i, blob) in of("olm.bundle") {
        let at = format!("[{i}]");
        let name = blob["name"].as_str().unwrap_or_default().to_owned();
        if blob["package"] != package_name {
            report.error(
                file,
                format!("{at}.package"),
                format!(
                    "{:?} is not the catalog's package {package_name:?}",
                    blob["package"]
                ),
            );
        }
        let properties = blob["properties"].as_array().cloned().unwrap_or_default();
        let typed = |t: &str| {
            properties
                .iter()
                .filter(|p| p["type"] == t)
                .map(|p| &p["value"])
                .collect::<Vec<_>>()
        };
        let packages = typed("olm.package");
        if packages.len() != 1 {
            report.error(
                file,
                format!("{at}.properties"),
                format!(
                    "bundle {name} must have exactly 1 olm.package property, found {}",
                    packages.len()
                ),
            );
        }
        let version = packages
            .first()
            .and_then(|p| p["version"].as_str())
            .unwrap_or_default();
        if let Some(p) = packages.first()
            && p["packageName"] != package_name
        {
            report.error(
                file,
                format!("{at}.properties"),
                format!(
                    "olm.package property names {:?}, not {package_name:?}",
                    p["packageName"]
                ),
            );
        }
        let image = blob["image"].as_str().unwrap_or_default();
        let objects = typed("olm.bundle.object");
        if image.is_empty() && objects.is_empty() {
            report.error(
                file,
                format!("{at}.image"),
                "bundle image must be set (or every manifest inlined as olm.bundle.object)",
            );
        } else if !image.is_empty() && !is_image(image) {
            report.error(
                file,
                format!("{at}.image"),
                format!("invalid image pull spec {image:?}"),
            );
        }
        let Some(bundle) = by_csv.get(&name) else {
            report.error(
                file,
                format!("{at}.name"),
                format!("{name} has no bundle directory under bundle/ with that CSV"),
            );
            continue;
        };
        let release = release_of(bundle);
        if release.version.as_ref().map(ToString::to_string).as_deref() != Some(version) {
            report.error(
                file,
                format!("{at}.properties"),
                format!(
                    "olm.package version {version:?} differs from {}'s CSV spec.version",
                    bundle.dir
                ),
            );
        }
        let gvks: BTreeSet<(String, String, String)> = typed("olm.gvk")
            .iter()
            .map(|g| {
                (
                    g["group"].as_str().unwrap_or_default().to_owned(),
                    g["kind"].as_str().unwrap_or_default().to_owned(),
                    g["version"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut expected = BTreeSet::new();
        for (_, crd) in bundle.crds() {
            for v in crd["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["served"] == true)
            {
                expected.insert((
                    crd["spec"]["group"].as_str().unwrap_or_default().to_owned(),
                    crd["spec"]["names"]["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v["name"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        for missing in expected.difference(&gvks) {
            report.error(
                file,
                format!("{at}.properties"),
                format!(
                    "no olm.gvk for {}/{} {}, which {} serves",
                    missing.0, missing.2, missing.1, bundle.dir
                ),
            );
        }
        for extra in gvks.difference(&expected) {
            report.error(
                file,
                format!("{at}.properties"),
                format!(
                    "olm.gvk {}/{} {} is not served by {}",
                    extra.0, extra.2, extra.1, bundle.dir
                ),
            );
        }
        releases.insert(name, release);
    }
    for bundle in bundles {
        if let Some((_, csv)) = bundle.csv()
            && let Some(name) = csv["metadata"]["name"].as_str()
            && !releases.contains_key(name)
        {
            report.error(
                file,
                "olm.bundle",
                format!("{} ({name}) is not in the catalog", bundle.dir),
            );
        }
    }

    // Channels and their graphs.
    let channels = of("olm.channel");
    let names: Vec<&str> = channels.iter().filter_map(|(_, c)| c["name"].as_str()).collect();
    let default = package["defaultChannel"].as_str().unwrap_or_default();
    if default.is_empty() {
        report.error(
            file,
            format!("[{pi}].defaultChannel"),
            "default channel must be set",
        );
    } else if !names.contains(&default) {
        report.error(
            file,
            format!("[{pi}].defaultChannel"),
            format!("default channel {default:?} not found in channels {names:?}"),
        );
    }
    let mut in_channel = BTreeSet::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    let mut seen_channels = BTreeSet::new();
    for (i, channel) in &channels {
        let at = format!("[{i}]");
        let name = channel["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            report.error(file, format!("{at}.name"), "channel with no name");
        }
        if !seen_channels.insert(name) {
            report.error(file, format!("{at}.name"), format!("duplicate channel {name:?}"));
        }
        if channel["package"] != package_name {
            report.error(
                file,
                format!("{at}.package"),
                format!("unknown package {:?} for channel {name:?}", channel["package"]),
            );
        }
        let entries = channel["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            report.error(
                file,
                format!("{at}.entries"),
                format!("channel {name:?} must contain at least one bundle"),
            );
        }
        let members: BTreeSet<String> = entries
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        if members.len() != entries.len() {
            report.error(
                file,
                format!("{at}.entries"),
                format!("channel {name:?} has a duplicate entry"),
            );
        }
        let mut incoming: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
        let mut replaces: BTreeMap<String, String> = BTreeMap::new();
        for (j, entry) in entries.iter().enumerate() {
            let entry_name = entry["name"].as_str().unwrap_or_default().to_owned();
            in_channel.insert(entry_name.clone());
            if !releases.contains_key(&entry_name) {
                report.error(
                    file,
                    format!("{at}.entries[{j}].name"),
                    format!("no olm.bundle named {entry_name}"),
                );
            }
            if let Some(replaced) = entry["replaces"].as_str() {
                if !releases.contains_key(replaced) {
                    report.error(
                        file,
                        format!("{at}.entries[{j}].replaces"),
                        format!("{replaced} is replaced but is not a bundle in the catalog"),
                    );
                }
                replaces.insert(entry_name.clone(), replaced.to_owned());
                if let Some(n) = incoming.get_mut(replaced) {
                    *n += 1;
                }
                edges.insert((replaced.to_owned(), entry_name.clone()));
            }
            for (k, skipped) in entry["skips"].as_array().into_iter().flatten().enumerate() {
                let skipped = skipped.as_str().unwrap_or_default();
                if skipped.is_empty() {
                    report.error(file, format!("{at}.entries[{j}].skips[{k}]"), "skip is empty");
                    continue;
                }
                if let Some(n) = incoming.get_mut(skipped) {
                    *n += 1;
                }
                edges.insert((skipped.to_owned(), entry_name.clone()));
            }
            if let Some(text) = entry["skipRange"].as_str() {
                match Range::parse(text) {
                    Err(e) => report.error(
                        file,
                        format!("{at}.entries[{j}].skipRange"),
                        format!("invalid skipRange: {e}"),
                    ),
                    Ok(range) => {
                        for member in &members {
                            if let Some(v) = releases.get(member).and_then(|r| r.version.as_ref())
                                && range.contains(v)
                                && member != &entry_name
                            {
                                edges.insert((member.clone(), entry_name.clone()));
                            }
                        }
                    }
                }
            }
        }
        let heads: Vec<&String> = incoming
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(m, _)| m)
            .collect();
        match heads.len() {
            0 => report.error(
                file,
                format!("{at}.entries"),
                format!("channel {name:?}: no channel head found in graph (a cycle?)"),
            ),
            1 => {
                // Follow replaces from the head: a cycle, or members off the chain (stranded).
                let mut chain = BTreeSet::new();
                let mut current = heads[0].clone();
                loop {
                    if !chain.insert(current.clone()) {
                        report.error(
                            file,
                            format!("{at}.entries"),
                            format!("channel {name:?}: detected cycle in replaces chain at {current}"),
                        );
                        break;
                    }
                    match replaces.get(&current) {
                        Some(next) if members.contains(next) => current = next.clone(),
                        _ => break,
                    }
                }
                let skipped: BTreeSet<String> = entries
                    .iter()
                    .filter(|e| chain.contains(e["name"].as_str().unwrap_or_default()))
                    .flat_map(|e| e["skips"].as_array().cloned().unwrap_or_default())
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect();
                let stranded: Vec<&String> = members
                    .iter()
                    .filter(|m| !chain.contains(*m) && !skipped.contains(*m))
                    .collect();
                if !stranded.is_empty() {
                    report.error(file, format!("{at}.entries"), format!("channel {name:?} contains stranded bundles, unreachable by replaces from its head: {stranded:?}"));
                }
            }
            _ => report.error(
                file,
                format!("{at}.entries"),
                format!("channel {name:?}: multiple channel heads found in graph: {heads:?}"),
            ),
        }
    }
    for name in releases.keys() {
        if !in_channel.contains(name) {
            report.error(
                file,
                "olm.channel",
                format!("bundle {name} is not in any channel: no subscription can reach it"),
            );
        }
    }

    // Stored versions: what may be in etcd after a release ran, along every path into it.
    let mut possible: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = releases
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                r.storage
                    .iter()
                    .map(|(crd, v)| (crd.clone(), BTreeSet::from([v.clone()])))
                    .collect(),
            )
        })
        .collect();
    for _ in 0..=releases.len() {
        let mut changed = false;
        for (from, to) in &edges {
            let Some(incoming) = possible.get(from).cloned() else {
                continue;
            };
            let Some(target) = possible.get_mut(to) else {
                continue;
            };
            for (crd, versions) in incoming {
                let entry = target.entry(crd).or_default();
                let before = entry.len();
                entry.extend(versions);
                changed |= entry.len() != before;
            }
        }
        if !changed {
            break;
        }
    }
    for (from, to) in &edges {
        let (Some(stored), Some(next)) = (possible.get(from), releases.get(to)) else {
            continue;
        };
        let next_dir = next.bundle.as_ref().map(|b| b.dir.clone()).unwrap_or_default();
        for (crd, versions) in stored {
            for version in versions {
                let served = next.served.get(crd).is_some_and(|s| s.contains(version));
                if !served {
                    let crd_file = next
                        .bundle
                        .as_ref()
                        .and_then(|b| {
                            b.crds()
                                .find(|(_, c)| c["metadata"]["name"] == crd.as_str())
                                .map(|(f, _)| f.to_owned())
                        })
                        .unwrap_or_else(|| next_dir.clone());
                    report.error(&crd_file, "spec.versions", format!("{to} drops {crd} {version}, which objects may still be stored in after upgrading from {from}; keep serving it until storage is migrated (tusk-operator migrate-storage) on every path into {to}. OLM v0 refuses it (risk of data loss), and so does OLM v1: validating upgrade for CRD {crd:?}: storedVersionRemoval: stored versions removed : [{version}]"));
                }
            }
        }
        // Examples the older release accepted.
        let older = &releases[from];
        let Some(next_bundle) = &next.bundle else { continue };
        // What OLM v1's CRD upgrade-safety preflight refuses.
        if let Some(older_bundle) = &older.bundle {
            for (crd_file, crd) in next_bundle.crds() {
                let Some((_, before)) = older_bundle
                    .crds()
                    .find(|(_, c)| c["metadata"]["name"] == crd["metadata"]["name"])
                else {
                    continue;
                };
                let name = crd["metadata"]["name"].as_str().unwrap_or_default();
                for (field, reason) in super::crd_upgrade::unhandled(before, crd) {
                    report.warn(
                        crd_file,
                        field,
                        format!(
                            "OLM v1's CRD upgrade-safety preflight refuses the upgrade from {from} to {to} unless an administrator approves it \
                             (spec.install.preflight.crdUpgradeSafety.enforcement: None): validating upgrade for CRD {name:?}: {reason}"
                        ),
                    );
                }
                for (field, refusal) in super::crd_upgrade::refusals(before, crd) {
                    report.error(
                        crd_file,
                        field,
                        format!("OLM v1 refuses the upgrade from {from} to {to}: {refusal}"),
                    );
                }
            }
        }
        for (i, example) in older.examples.iter().enumerate() {
            let (group, version, kind) = super::gvk(example);
            let Some((crd_file, crd)) = next_bundle
                .crds()
                .find(|(_, c)| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
            else {
                report.error(
                    &next_bundle.dir,
                    "-",
                    format!("{to} has no CRD for {group} {kind}, which {from}'s alm-examples[{i}] uses"),
                );
                continue;
            };
            match version_schema(crd, version) {
                None => report.warn(crd_file, "spec.versions", format!("{to} stops serving {group}/{version} {kind}, which {from}'s alm-examples[{i}] uses; clients of that version break")),
                Some(schema) => {
                    for refusal in refusals(schema, example) {
                        report.error(crd_file, format!("spec.versions[{version}].schema"), format!("{to} refuses {from}'s alm-examples[{i}] ({group}/{version} {kind}), which {from} accepted: {refusal}"));
                    }
                }
            }
        }
    }

    // Deprecations.
    let deprecations = of("olm.deprecations");
    if deprecations.len() > 1 {
        report.error(
            file,
            "olm.deprecations",
            format!("expected a maximum of one deprecation per package: {package_name:?}"),
        );
    }
    for (i, blob) in deprecations {
        if blob["package"] != package_name {
            report.error(
                file,
                format!("[{i}].package"),
                format!(
                    "cannot apply deprecations to an unknown package {:?}",
                    blob["package"]
                ),
            );
        }
        for (j, entry) in blob["entries"].as_array().into_iter().flatten().enumerate() {
            let at = format!("[{i}].entries[{j}]");
            let name = entry["reference"]["name"].as_str().unwrap_or_default();
            match entry["reference"]["schema"].as_str().unwrap_or_default() {
                "olm.bundle" if !releases.contains_key(name) => report.error(
                    file,
                    format!("{at}.reference.name"),
                    format!("cannot deprecate bundle {name:?}: bundle not found"),
                ),
                "olm.channel" if !names.contains(&name) => report.error(
                    file,
                    format!("{at}.reference.name"),
                    format!("cannot deprecate channel {name:?}: channel not found"),
                ),
                "olm.package" if !name.is_empty() => report.error(
                    file,
                    format!("{at}.reference.name"),
                    "must be empty for a deprecated package",
                ),
                "olm.bundle" | "olm.channel" | "olm.package" => {}
                other => report.error(
                    file,
                    format!("{at}.reference.schema"),
                    format!("{other:?} is not olm.bundle, olm.channel or olm.package"),
                ),
            }
            if entry["message"].as_str().is_none_or(str::is_empty) {
                report.error(file, format!("{at}.message"), "message must be set");
            }
        }
    }
}
