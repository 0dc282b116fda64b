//! Checks on `metadata/annotations.yaml`: it exists, names the registry+v1 media type, the
//! manifests and metadata directories, the package and channels; the default channel is one of
//! them; channel names follow operator-framework's convention; and OpenShift knows which of its
//! releases to offer the bundle to.

use super::{LoadedBundle, Report};

const REQUIRED_ANNOTATIONS: &[(&str, Option<&str>)] = &[
    (
        "operators.operatorframework.io.bundle.mediatype.v1",
        Some("registry+v1"),
    ),
    (
        "operators.operatorframework.io.bundle.manifests.v1",
        Some("manifests/"),
    ),
    (
        "operators.operatorframework.io.bundle.metadata.v1",
        Some("metadata/"),
    ),
    ("operators.operatorframework.io.bundle.package.v1", None),
    ("operators.operatorframework.io.bundle.channels.v1", None),
];

pub(super) fn check(bundle: &LoadedBundle, report: &mut Report) {
    let annotations_file = format!("{}/metadata/annotations.yaml", bundle.dir);
    if !bundle.files.iter().any(|(f, _)| *f == annotations_file) {
        report.error(
            &annotations_file,
            "-",
            "missing: a bundle needs metadata/annotations.yaml",
        );
    }
    for (key, value) in REQUIRED_ANNOTATIONS {
        match (bundle.annotations.get(*key), value) {
            (None, _) => report.error(&annotations_file, format!("annotations.{key}"), "missing"),
            (Some(actual), Some(expected)) if actual != expected => report.error(
                &annotations_file,
                format!("annotations.{key}"),
                format!("is {actual:?}; must be {expected:?}"),
            ),
            _ => {}
        }
    }
    let channels: Vec<&str> = bundle
        .annotations
        .get("operators.operatorframework.io.bundle.channels.v1")
        .map(|c| c.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if let Some(default) = bundle
        .annotations
        .get("operators.operatorframework.io.bundle.channel.default.v1")
        && !channels.contains(&default.as_str())
    {
        report.error(
            &annotations_file,
            "annotations.operators.operatorframework.io.bundle.channel.default.v1",
            format!("{default:?} is not one of the bundle's channels {channels:?}"),
        );
    }
    if !bundle.annotations.contains_key("com.redhat.openshift.versions") {
        report.warn(
            &annotations_file,
            "annotations.com.redhat.openshift.versions",
            "missing: OpenShift does not know which releases to offer the bundle to",
        );
    }
    // Channel naming (good practices).
    let odd: Vec<&str> = channels
        .iter()
        .copied()
        .filter(|c| !["candidate", "stable", "fast"].iter().any(|p| c.starts_with(p)))
        .collect();
    if !odd.is_empty() {
        report.warn(&annotations_file, "annotations.operators.operatorframework.io.bundle.channels.v1", format!("channel(s) {odd:?} are not following the recommended naming convention: names start with candidate, fast or stable"));
    }
}
