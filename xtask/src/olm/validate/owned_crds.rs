//! Checks on the CRDs the CSV owns: each owned CRD version is in the bundle and each CRD in the
//! bundle is owned, once; each has a description and a display name and names no deprecated
//! child API; and every spec and status descriptor's path is a field of that version's schema.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{LoadedBundle, Report, crd::version_schema};

/// Owned CRD versions the CSV declares: `(name, group, version, kind)`.
pub(super) fn owned(csv: &Value) -> Vec<(String, String, String, String)> {
    csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let name = o["name"].as_str().unwrap_or_default().to_owned();
            let group = name
                .split_once('.')
                .map(|(_, g)| g.to_owned())
                .unwrap_or_default();
            (
                name,
                group,
                o["version"].as_str().unwrap_or_default().to_owned(),
                o["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn schema_has_path(schema: &Value, path: &str) -> bool {
    let mut here = schema;
    for part in path.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        match here["properties"].get(part) {
            Some(next) => here = next,
            None => match here["items"]["properties"].get(part) {
                Some(next) => here = next,
                None => return false,
            },
        }
    }
    true
}

pub(super) fn check(bundle: &LoadedBundle, csv_file: &str, csv: &Value, report: &mut Report) {
    // Owned CRDs against the CRDs in the bundle.
    let owned = owned(csv);
    let mut seen = BTreeSet::new();
    for (file, crd) in bundle.crds() {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let version = version["name"].as_str().unwrap_or_default();
            if !seen.insert((group.to_owned(), version.to_owned(), kind.to_owned())) {
                report.error(
                    file,
                    "spec.versions",
                    format!("duplicate CRD {group}/{version}, Kind={kind} in bundle"),
                );
            }
        }
        if !owned.iter().any(|(_, g, _, k)| g == group && k == kind) {
            report.error(file, "-", format!("CRD {group}/{kind} is present in the bundle but not owned by the CSV (spec.customresourcedefinitions.owned)"));
        }
    }
    for (i, (name, group, version, kind)) in owned.iter().enumerate() {
        if !seen.contains(&(group.clone(), version.clone(), kind.clone())) {
            report.error(
                csv_file,
                format!("spec.customresourcedefinitions.owned[{i}]"),
                format!("owned CRD {name} {version} {kind} not found in the bundle's manifests"),
            );
        }
    }
    for (i, o) in csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.customresourcedefinitions.owned[{i}]");
        if o["description"].as_str().is_none_or(str::is_empty) {
            report.warn(
                csv_file,
                format!("{at}.description"),
                format!("owned CRD {} has an empty description", o["name"]),
            );
        }
        if o["displayName"].as_str().is_none_or(str::is_empty) {
            report.warn(
                csv_file,
                format!("{at}.displayName"),
                "empty: the console shows the bare kind",
            );
        }
        for resource in o["resources"].as_array().into_iter().flatten() {
            let version = resource["version"].as_str().unwrap_or_default();
            let kind = resource["kind"].as_str().unwrap_or_default();
            if version.contains("beta") || version.contains("alpha") {
                report.error(
                    csv_file,
                    format!("{at}.resources"),
                    format!("{kind} {version} is a deprecated API version"),
                );
            }
        }
        // Descriptor paths must exist in the CRD version's schema.
        let name = o["name"].as_str().unwrap_or_default();
        let version = o["version"].as_str().unwrap_or_default();
        let Some(schema) = bundle
            .crds()
            .find(|(_, c)| c["metadata"]["name"] == name)
            .and_then(|(_, c)| version_schema(c, version))
        else {
            continue;
        };
        for (part, list) in [("spec", "specDescriptors"), ("status", "statusDescriptors")] {
            for (j, d) in o[list].as_array().into_iter().flatten().enumerate() {
                let path = d["path"].as_str().unwrap_or_default();
                if !schema_has_path(&schema["properties"][part], path) {
                    report.error(
                        csv_file,
                        format!("{at}.{list}[{j}].path"),
                        format!("{path:?} is not a field of {name} {version} {part}"),
                    );
                }
            }
        }
    }
}
