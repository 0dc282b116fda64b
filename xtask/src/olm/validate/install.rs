//! Checks on how OLM installs the operator: install modes (at least one supported), the
//! `deployment` install strategy with at least one Deployment, and each container's image pull
//! spec and resource requests.

use serde_json::Value;

use super::{Report, formats::is_image};

pub(super) fn check(file: &str, csv: &Value, report: &mut Report) {
    let modes = csv["spec"]["installModes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if modes.is_empty() {
        report.error(file, "spec.installModes", "install modes not found");
    } else if !modes.iter().any(|m| m["supported"] == true) {
        report.error(
            file,
            "spec.installModes",
            "none of InstallModeTypes are supported",
        );
    }
    let deployments = csv["spec"]["install"]["spec"]["deployments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if csv["spec"]["install"]["strategy"] != "deployment" {
        report.error(file, "spec.install.strategy", "must be \"deployment\"");
    }
    if deployments.is_empty() {
        report.error(
            file,
            "spec.install.spec.deployments",
            "unable to find a deployment to install in the CSV",
        );
    }
    // Good practices.
    for (d, deployment) in deployments.iter().enumerate() {
        for (c, container) in deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("spec.install.spec.deployments[{d}].spec.template.spec.containers[{c}]");
            if container["resources"]["requests"]
                .as_object()
                .is_none_or(|r| r.is_empty())
            {
                report.warn(
                    file,
                    format!("{at}.resources.requests"),
                    "unable to find the resource requests: set CPU and memory requests",
                );
            }
            match container["image"].as_str() {
                Some(image) if is_image(image) => {}
                other => report.error(
                    file,
                    format!("{at}.image"),
                    format!("{other:?} is not an image pull spec"),
                ),
            }
        }
    }
}
