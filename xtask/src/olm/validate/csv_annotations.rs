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
    tls_profiles(file, csv, &annotations, report);
    proxy_aware(file, csv, &annotations, report);
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

/// The rules of the CSV's `clusterPermissions` that apply to `resource` of `group`.
fn cluster_rules<'a>(csv: &'a Value, group: &str, resource: &str) -> Vec<&'a Value> {
    csv["spec"]["install"]["spec"]["clusterPermissions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["rules"].as_array().into_iter().flatten())
        .filter(|r| {
            let has = |key: &str, want: &str| {
                r[key]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(want)))
            };
            has("apiGroups", group) && has("resources", resource)
        })
        .collect()
}

/// A CSV that says `tls-profiles: "true"` lets the operator read and watch the cluster's profile
/// (`apiservers.config.openshift.io`), and this build's servers honour the profiles: Modern
/// serves TLS 1.3 only, Intermediate TLS 1.2 and up.
fn tls_profiles(file: &str, csv: &Value, annotations: &serde_json::Map<String, Value>, report: &mut Report) {
    const KEY: &str = "features.operators.openshift.io/tls-profiles";
    if annotations.get(KEY).and_then(Value::as_str) != Some("true") {
        return;
    }
    let (group, _, _) = tusk::tls_profile::API_SERVER_GVK;
    let rules = cluster_rules(csv, group, tusk::tls_profile::API_SERVER_PLURAL);
    for verb in ["get", "list", "watch"] {
        let granted = rules.iter().any(|r| {
            r["verbs"]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(verb)))
        });
        if !granted {
            report.error(
                file,
                "spec.install.spec.clusterPermissions",
                format!(
                    "grants no {verb} on {}.{group}, in a release that says {KEY}: \"true\"; the operator reads the cluster's TLS security profile there",
                    tusk::tls_profile::API_SERVER_PLURAL
                ),
            );
        }
    }
    use tusk::tls_profile::Profile;
    if Profile::modern().version_names() != ["TLSv1_3"]
        || !Profile::intermediate()
            .version_names()
            .contains(&"TLSv1_2".to_owned())
    {
        report.error(
            file,
            format!("metadata.annotations.{KEY}"),
            "is \"true\", but this build's servers do not follow the profiles (Modern must serve TLS 1.3 only, Intermediate TLS 1.2 too)",
        );
    }
}

/// A CSV that says `proxy-aware: "true"` leaves the proxy variables to OLM (the Deployment sets
/// none of them to a value of its own), and this build passes all three on to the PostgreSQL
/// pods, which make the object-store calls.
fn proxy_aware(file: &str, csv: &Value, annotations: &serde_json::Map<String, Value>, report: &mut Report) {
    const KEY: &str = "features.operators.openshift.io/proxy-aware";
    if annotations.get(KEY).and_then(Value::as_str) != Some("true") {
        return;
    }
    let deployments = csv["spec"]["install"]["spec"]["deployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (d, deployment) in deployments.iter().enumerate() {
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (c, container) in containers.iter().enumerate() {
            for (e, var) in container["env"].as_array().into_iter().flatten().enumerate() {
                let name = var["name"].as_str().unwrap_or_default();
                if tusk::facts::operator::env::PROXY.contains(&name)
                    && var["value"].as_str().is_some_and(|v| !v.is_empty())
                {
                    report.error(
                        file,
                        format!("spec.install.spec.deployments[{d}].spec.template.spec.containers[{c}].env[{e}]"),
                        format!("sets {name} itself, in a release that says {KEY}: \"true\"; OLM sets it from the cluster's proxy"),
                    );
                }
            }
        }
    }
    let passed = tusk::controller::postgres_cluster::build::BuildConfig::proxy_from(|_| {
        Some("http://proxy.example:3128".to_owned())
    });
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        if !passed.iter().any(|(n, _)| n == name) {
            report.error(
                file,
                format!("metadata.annotations.{KEY}"),
                format!("is \"true\", but this build does not pass {name} on to the PostgreSQL pods"),
            );
        }
    }
}
