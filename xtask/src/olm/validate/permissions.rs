//! Checks on the operator's RBAC: permissions and cluster permissions that create CRDs (OLM's job)
//! or use wildcards, and ServiceAccount manifests that clash with the one OLM creates for the
//! CSV's Deployment.

use serde_json::Value;

use super::{LoadedBundle, Report};

pub(super) fn check(bundle: &LoadedBundle, file: &str, csv: &Value, report: &mut Report) {
    for kind in ["permissions", "clusterPermissions"] {
        for (p, permission) in csv["spec"]["install"]["spec"][kind]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (r, rule) in permission["rules"].as_array().into_iter().flatten().enumerate() {
                let has = |field: &str, words: &[&str]| {
                    rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|w| words.iter().any(|x| w == x))
                };
                if has("apiGroups", &["apiextensions.k8s.io"])
                    && has("resources", &["customresourcedefinitions", "*"])
                    && has("verbs", &["create", "patch", "*"])
                {
                    report.warn(
                        file,
                        format!("spec.install.spec.{kind}[{p}].rules[{r}]"),
                        "CSV contains permissions to create CRDs: OLM manages CRDs, not the operator",
                    );
                }
                if has("verbs", &["*"]) || has("resources", &["*"]) || has("apiGroups", &["*"]) {
                    report.warn(
                        file,
                        format!("spec.install.spec.{kind}[{p}].rules[{r}]"),
                        "a wildcard grants more than the operator needs",
                    );
                }
            }
        }
    }
    // A ServiceAccount manifest clashing with the one OLM creates.
    for (manifest_file, manifest) in &bundle.manifests {
        if manifest["kind"] == "ServiceAccount" {
            let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
            let clashes = csv["spec"]["install"]["spec"]["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["spec"]["template"]["spec"]["serviceAccountName"] == name);
            if clashes {
                report.error(manifest_file, "metadata.name", format!("service account {name} is already created by OLM for the CSV's deployment; remove this manifest"));
            }
        }
    }
}
