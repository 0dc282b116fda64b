//! Checks on `alm-examples`: a JSON array of objects, each of an API the CSV owns, and an example
//! for every owned API version (operator-framework's good-practices validator).

use serde_json::Value;

use super::{Report, owned_crds::owned};

pub(super) fn check(file: &str, csv: &Value, report: &mut Report) {
    let annotations = csv["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let owned = owned(csv);
    match annotations.get("alm-examples").and_then(Value::as_str) {
        None => report.warn(
            file,
            "metadata.annotations.alm-examples",
            "example annotations not found",
        ),
        Some(text) => match serde_json::from_str::<Vec<Value>>(text) {
            Err(e) => report.error(
                file,
                "metadata.annotations.alm-examples",
                format!("invalid example: not a JSON array of objects: {e}"),
            ),
            Ok(examples) => {
                for (i, example) in examples.iter().enumerate() {
                    let (group, version, kind) = super::gvk(example);
                    if !owned
                        .iter()
                        .any(|(_, g, v, k)| g == group && v == version && k == kind)
                    {
                        report.error(file, format!("metadata.annotations.alm-examples[{i}]"), format!("example {group}/{version} {kind} must have a provided API: it is not an owned CRD version"));
                    }
                }
                for (name, group, version, kind) in &owned {
                    let has = examples.iter().any(|e| {
                        e["apiVersion"] == format!("{group}/{version}") && e["kind"] == kind.as_str()
                    });
                    if !has {
                        report.warn(
                            file,
                            "metadata.annotations.alm-examples",
                            format!("provided API {name} {version} should have an example"),
                        );
                    }
                }
            }
        },
    }
}
