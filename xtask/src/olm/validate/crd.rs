//! Checks on each CustomResourceDefinition on its own, as the apiserver would refuse it: its
//! name, names, scope, versions (exactly one stored, each with a structural schema, deprecations
//! that say what to use) and a conversion webhook wherever more than one version is served.

use serde_json::Value;

use super::Report;

/// The schema of `version` in `crd`, when it has one.
pub fn version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)
        .map(|v| &v["schema"]["openAPIV3Schema"])
}

pub(super) fn check(file: &str, crd: &Value, report: &mut Report) {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        report.error(
            file,
            "metadata.name",
            format!("{name:?} must be spec.names.plural + \".\" + spec.group = {plural}.{group}"),
        );
    }
    // listKind and singular default from kind and plural, as the apiserver fills them in.
    for field in ["kind", "plural"] {
        if crd["spec"]["names"][field].as_str().is_none_or(str::is_empty) {
            report.error(file, format!("spec.names.{field}"), "required field missing");
        }
    }
    if !["Namespaced", "Cluster"].contains(&crd["spec"]["scope"].as_str().unwrap_or_default()) {
        report.error(file, "spec.scope", "must be Namespaced or Cluster");
    }
    let versions = crd["spec"]["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        report.error(file, "spec.versions", "must have at least one version");
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        report.error(
            file,
            "spec.versions",
            format!("{storage} versions have storage: true; exactly one must"),
        );
    }
    for (i, version) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        if version["served"] != true && version["storage"] == true {
            report.error(file, format!("{at}.served"), "the storage version must be served");
        }
        if version["schema"]["openAPIV3Schema"].as_object().is_none() {
            report.error(
                file,
                format!("{at}.schema.openAPIV3Schema"),
                "required: the apiserver needs a structural schema",
            );
        }
        if version["deprecated"] == true && version["deprecationWarning"].as_str().is_none() {
            report.warn(
                file,
                format!("{at}.deprecationWarning"),
                "a deprecated version should say what to use instead",
            );
        }
    }
    if crd["spec"]["preserveUnknownFields"] == true {
        report.error(
            file,
            "spec.preserveUnknownFields",
            "must be false for the apiserver to call a conversion webhook",
        );
    }
    let conversion = &crd["spec"]["conversion"];
    if versions.len() > 1 {
        if conversion["strategy"] != "Webhook" {
            report.error(
                file,
                "spec.conversion.strategy",
                "must be Webhook: more than one version is served and their schemas differ",
            );
        } else {
            let config = &conversion["webhook"]["clientConfig"];
            if config["service"].is_null() == config["url"].is_null() {
                report.error(
                    file,
                    "spec.conversion.webhook.clientConfig",
                    "required when strategy is set to Webhook: exactly one of url or service",
                );
            }
            if conversion["webhook"]["conversionReviewVersions"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                report.error(
                    file,
                    "spec.conversion.webhook.conversionReviewVersions",
                    "must list at least v1",
                );
            }
        }
    }
}
