//! Checks on `webhookdefinitions`: required fields, and for the conversion webhook what OLM
//! requires: AllNamespaces install mode only, owned CRDs only, a Deployment of the CSV with the
//! target port, an absolute path; and every CRD that serves more than one version converted.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{LoadedBundle, Report, owned_crds::owned};

pub(super) fn check(bundle: &LoadedBundle, file: &str, csv: &Value, report: &mut Report) {
    let owned = owned(csv);
    let modes = csv["spec"]["installModes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let supported = |mode: &str| modes.iter().any(|m| m["type"] == mode && m["supported"] == true);
    let deployments = csv["spec"]["install"]["spec"]["deployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut converted = BTreeSet::new();
    for (i, webhook) in csv["spec"]["webhookdefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.webhookdefinitions[{i}]");
        for field in ["generateName", "sideEffects", "admissionReviewVersions", "type"] {
            if webhook.get(field).is_none() {
                report.error(file, format!("{at}.{field}"), "required field missing");
            }
        }
        if webhook["type"] != "ConversionWebhook" {
            continue;
        }
        let crds: Vec<&str> = webhook["conversionCRDs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if crds.is_empty() {
            report.error(
                file,
                format!("{at}.conversionCRDs"),
                "a conversion webhook must have at least one CRD",
            );
        }
        if !supported("AllNamespaces")
            || ["OwnNamespace", "SingleNamespace", "MultiNamespace"]
                .iter()
                .any(|m| supported(m))
        {
            report.error(
                file,
                "spec.installModes",
                "only AllNamespaces InstallModeType is supported when conversionCRDs is present",
            );
        }
        for crd in &crds {
            if !owned.iter().any(|(n, ..)| n == crd) {
                report.error(
                    file,
                    format!("{at}.conversionCRDs"),
                    format!("csv does not own CRD {crd}"),
                );
            }
            converted.insert((*crd).to_owned());
        }
        let deployment = webhook["deploymentName"].as_str().unwrap_or_default();
        match deployments.iter().find(|d| d["name"] == deployment) {
            None => report.error(
                file,
                format!("{at}.deploymentName"),
                format!("{deployment:?} is not a deployment of the CSV"),
            ),
            Some(d) => {
                let target = &webhook["targetPort"];
                let has_port = d["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .any(|p| &p["containerPort"] == target || &p["name"] == target);
                if !has_port {
                    report.error(
                        file,
                        format!("{at}.targetPort"),
                        format!("{target} is not a port of deployment {deployment}'s containers"),
                    );
                }
            }
        }
        if webhook["webhookPath"]
            .as_str()
            .is_none_or(|p| !p.starts_with('/'))
        {
            report.error(
                file,
                format!("{at}.webhookPath"),
                "must be the absolute path the webhook serves (OLM defaults it to \"/\")",
            );
        }
    }
    for (crd_file, crd) in bundle.crds() {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let versions = crd["spec"]["versions"].as_array().map_or(0, Vec::len);
        if versions > 1 && !converted.contains(name) {
            report.error(crd_file, "spec.conversion", format!("{name} serves {versions} versions but no ConversionWebhook in the CSV lists it in conversionCRDs"));
        }
    }
}
