//! Checks on the ClusterServiceVersion's `metadata.annotations` (all but `alm-examples`, which
//! [`examples`](super::examples) checks): the case of OLM's own keys, `olm.skipRange`, the
//! capability level and categories OperatorHub knows, the annotations its operator page shows,
//! and every `features.operators.openshift.io/*` and `valid-subscription` answer OpenShift needs.

use serde_json::Value;

use super::Report;
use crate::olm::{CAPABILITY_LEVELS, CATEGORIES, range::Range};

pub(super) fn check(file: &str, csv: &Value, report: &mut Report) {
    let annotations = csv["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for key in annotations.keys() {
        for proper in [
            "olm.operatorGroup",
            "olm.operatorNamespace",
            "olm.targetNamespaces",
            "olm.providedAPIs",
            "olm.skipRange",
        ] {
            if key.eq_ignore_ascii_case(proper) && key != proper {
                report.error(
                    file,
                    format!("metadata.annotations.{key}"),
                    format!("uses wrong case and should be {proper}"),
                );
            }
        }
    }
    if annotations.contains_key("olm.properties") {
        report.warn(
            file,
            "metadata.annotations.olm.properties",
            "define these properties in metadata/properties.yaml instead",
        );
    }
    if let Some(range) = annotations.get("olm.skipRange").and_then(Value::as_str)
        && let Err(e) = Range::parse(range)
    {
        report.error(file, "metadata.annotations.olm.skipRange", e);
    }
    // Capabilities and categories.
    match annotations.get("capabilities").and_then(Value::as_str) {
        Some(level) if !CAPABILITY_LEVELS.contains(&level) => report.error(
            file,
            "metadata.annotations.capabilities",
            format!(
                "{level:?} is not a valid capabilities level; allowed: {}",
                CAPABILITY_LEVELS.join(", ")
            ),
        ),
        None => report.warn(
            file,
            "metadata.annotations.capabilities",
            "missing: OperatorHub shows no capability level",
        ),
        _ => {}
    }
    match annotations.get("categories").and_then(Value::as_str) {
        Some(categories) => {
            for category in categories.split(',') {
                if !CATEGORIES.contains(&category.trim()) {
                    report.error(
                        file,
                        "metadata.annotations.categories",
                        format!(
                            "{category:?} is not in the set of standard categories: {}",
                            CATEGORIES.join(", ")
                        ),
                    );
                }
            }
        }
        None => report.warn(
            file,
            "metadata.annotations.categories",
            "missing: OperatorHub lists the operator under no category",
        ),
    }
    for key in ["containerImage", "description", "repository", "support"] {
        if !annotations.contains_key(key) {
            report.warn(
                file,
                format!("metadata.annotations.{key}"),
                "missing: OperatorHub shows it on the operator's page",
            );
        }
    }
    for feature in [
        "disconnected",
        "fips-compliant",
        "proxy-aware",
        "tls-profiles",
        "token-auth-aws",
        "token-auth-azure",
        "token-auth-gcp",
    ] {
        let key = format!("features.operators.openshift.io/{feature}");
        match annotations.get(&key).and_then(Value::as_str) {
            Some("true" | "false") => {}
            Some(other) => report.error(
                file,
                format!("metadata.annotations.{key}"),
                format!("is {other:?}; must be \"true\" or \"false\""),
            ),
            None => report.error(
                file,
                format!("metadata.annotations.{key}"),
                "missing: OpenShift requires every features.operators.openshift.io annotation to be answered",
            ),
        }
    }
    disconnected(file, csv, &annotations, report);
    match annotations
        .get("operators.openshift.io/valid-subscription")
        .and_then(Value::as_str)
    {
        Some(text) => {
            if serde_json::from_str::<Vec<String>>(text).map_or(true, |v| v.is_empty()) {
                report.error(
                    file,
                    "metadata.annotations.operators.openshift.io/valid-subscription",
                    "must be a JSON array of at least one string",
                );
            }
        }
        None => report.error(
            file,
            "metadata.annotations.operators.openshift.io/valid-subscription",
            "missing",
        ),
    }
}

/// A CSV that says `disconnected: "true"` references every image by digest, and lists every
/// image its pods run in `relatedImages`, so that a mirror of those has all it needs.
fn disconnected(file: &str, csv: &Value, annotations: &serde_json::Map<String, Value>, report: &mut Report) {
    const KEY: &str = "features.operators.openshift.io/disconnected";
    if annotations.get(KEY).and_then(Value::as_str) != Some("true") {
        return;
    }
    let references = crate::olm::csv::image_references(csv);
    for reference in &references {
        if !reference.pinned() {
            report.error(
                file,
                &reference.field,
                format!(
                    "references {} by tag only, in a release that says {KEY}: \"true\"; reference it by digest (`<repository>@sha256:<digest>`) or answer \"false\"",
                    reference.image
                ),
            );
        }
    }
    let related: Vec<&str> = csv["spec"]["relatedImages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["image"].as_str())
        .collect();
    for reference in references.iter().filter(|r| r.runs) {
        if !related.contains(&reference.image.as_str()) {
            report.error(
                file,
                &reference.field,
                format!(
                    "runs {}, which spec.relatedImages does not list, in a release that says {KEY}: \"true\"; a mirror copies only what relatedImages lists",
                    reference.image
                ),
            );
        }
    }
}
