//! What OLM v1 (operator-framework/operator-controller) cannot honour in a bundle or catalog
//! that OLM v0 installs. These are warnings: the same catalog serves both, and OLM v0 users lose
//! nothing. Each message names OLM v1 and says what it does instead, in the words of its own
//! checks (`internal/operator-controller/resolve/validation.go` and
//! `rukpak/render/registryv1/validators` in operator-controller):
//! - a bundle that declares a dependency (`olm.package.required`, `olm.gvk.required`,
//!   `olm.constraint`) is refused, because OLM v1 resolves none;
//! - only the `AllNamespaces` install mode is installed;
//! - a CSV with `apiservicedefinitions` is refused;
//! - a bundle with webhooks must support no install mode beyond `AllNamespaces`.

use serde_json::Value;

use super::{LoadedBundle, Report};

/// Bundle properties OLM v1 refuses, because it resolves no dependencies.
const DEPENDENCY_PROPERTIES: &[&str] = &["olm.package.required", "olm.gvk.required", "olm.constraint"];

/// Checks every `olm.bundle` blob of the catalog file `file`.
pub(super) fn check_catalog(file: &str, blobs: &[Value], report: &mut Report) {
    for bundle in blobs.iter().filter(|b| b["schema"] == "olm.bundle") {
        let name = bundle["name"].as_str().unwrap_or_default();
        for (i, property) in bundle["properties"].as_array().into_iter().flatten().enumerate() {
            let kind = property["type"].as_str().unwrap_or_default();
            if DEPENDENCY_PROPERTIES.contains(&kind) {
                report.warn(
                    file,
                    format!("{name}.properties[{i}]"),
                    format!(
                        "OLM v1 refuses this bundle: bundle {name:?} has a dependency declared via property {kind:?} \
                         ({}), and OLM v1 resolves no dependencies; OLM v1 users must install what it requires themselves, \
                         and the bundle must not declare it for OLM v1 to install it",
                        property["value"]
                    ),
                );
            }
        }
    }
}

/// Checks one bundle's CSV.
pub(super) fn check_bundle(bundle: &LoadedBundle, report: &mut Report) {
    let Some((file, csv)) = bundle.csv() else {
        return;
    };
    let modes: Vec<(&str, bool)> = csv["spec"]["installModes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["type"].as_str().unwrap_or_default(), m["supported"] == true))
        .collect();
    if !modes.contains(&("AllNamespaces", true)) {
        report.warn(
            file,
            "spec.installModes",
            "OLM v1 installs only in the AllNamespaces install mode, which this CSV does not support",
        );
    }
    if csv["spec"]["apiservicedefinitions"]["owned"]
        .as_array()
        .is_some_and(|owned| !owned.is_empty())
    {
        report.warn(
            file,
            "spec.apiservicedefinitions.owned",
            "OLM v1 refuses a CSV that defines APIServices",
        );
    }
    let webhooks = csv["spec"]["webhookdefinitions"]
        .as_array()
        .is_some_and(|w| !w.is_empty());
    if webhooks
        && modes
            .iter()
            .any(|(mode, supported)| *supported && *mode != "AllNamespaces")
    {
        report.warn(
            file,
            "spec.installModes",
            "OLM v1 refuses this bundle: bundle contains webhook definitions but supported install modes beyond AllNamespaces",
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_dependency_is_a_warning_that_names_olm_v1_and_the_property() {
        let mut report = Report::default();
        let blobs = crate::olm::fixture::blobs("tusk-operator", ">=1.0.0");
        check_catalog("catalog/fixture/catalog.yaml", &blobs, &mut report);
        let findings = report.findings;
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].level, super::super::Level::Warning);
        assert!(
            findings[0]
                .message
                .starts_with("OLM v1 refuses this bundle: bundle ")
                && findings[0]
                    .message
                    .contains("has a dependency declared via property \"olm.package.required\""),
            "{}",
            findings[0]
        );
        let mut report = Report::default();
        check_catalog(
            "c.yaml",
            &[
                json!({"schema": "olm.bundle", "name": "a.v1", "properties": [{"type": "olm.package", "value": {}}]}),
            ],
            &mut report,
        );
        assert!(report.findings.is_empty());
    }
}
