//! Checks on the ClusterServiceVersion's identity and its OperatorHub listing: name, version
//! (against the bundle directory), `replaces`, display name, apiVersion, `minKubeVersion`,
//! provider, maintainers, links, icon and related images (operator-framework's CSV and
//! OperatorHub v2 validators).

use serde_json::Value;

use super::{
    LoadedBundle, Report,
    formats::{is_dns_name, is_email, is_image},
};

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

pub(super) fn check(bundle: &LoadedBundle, file: &str, csv: &Value, report: &mut Report) {
    let name = str_at(csv, &["metadata", "name"]).unwrap_or_default();
    if !is_dns_name(name) {
        report.error(
            file,
            "metadata.name",
            format!("{name:?} is invalid: a DNS-1123 subdomain of at most 63 characters"),
        );
    }
    let package = bundle
        .annotations
        .get("operators.operatorframework.io.bundle.package.v1")
        .cloned()
        .unwrap_or_default();
    let version = str_at(csv, &["spec", "version"]).unwrap_or_default();
    match semver::Version::parse(version) {
        Err(_) => report.error(
            file,
            "spec.version",
            format!("{version:?} must be set to a semantic version"),
        ),
        Ok(v) => {
            if v.to_string() != bundle.version {
                report.error(
                    file,
                    "spec.version",
                    format!("{version} differs from the bundle directory {}", bundle.dir),
                );
            }
            if name != format!("{package}.v{version}") {
                report.warn(file, "metadata.name", format!("{name} is not following the recommended naming convention <package>.v<semver>: {package}.v{version}"));
            }
        }
    }
    if let Some(replaces) = str_at(csv, &["spec", "replaces"])
        && !is_dns_name(replaces)
    {
        report.error(
            file,
            "spec.replaces",
            format!("{replaces:?} is invalid: a DNS-1123 subdomain of at most 63 characters"),
        );
    }
    if str_at(csv, &["spec", "displayName"]).is_none_or(str::is_empty) {
        report.error(file, "spec.displayName", "required field missing");
    }
    if csv["apiVersion"] != "operators.coreos.com/v1alpha1" {
        report.error(file, "apiVersion", "must be operators.coreos.com/v1alpha1");
    }

    // minKubeVersion.
    match str_at(csv, &["spec", "minKubeVersion"]) {
        None | Some("") => report.warn(
            file,
            "spec.minKubeVersion",
            "is not informed: the operator would be offered to any Kubernetes version",
        ),
        Some(v) if semver::Version::parse(v).is_err() => report.error(
            file,
            "spec.minKubeVersion",
            format!("{v:?} has an invalid value: a semantic version such as 1.33.0"),
        ),
        _ => {}
    }

    // OperatorHub v2.
    if str_at(csv, &["spec", "provider", "name"]).is_none_or(|n| n.trim().is_empty()) {
        report.error(file, "spec.provider.name", "not specified");
    }
    for (i, m) in csv["spec"]["maintainers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (n, e) = (
            m["name"].as_str().unwrap_or_default(),
            m["email"].as_str().unwrap_or_default(),
        );
        if n.is_empty() || e.is_empty() {
            report.error(
                file,
                format!("spec.maintainers[{i}]"),
                "should contain both name and email",
            );
        } else if !is_email(e) {
            report.error(
                file,
                format!("spec.maintainers[{i}].email"),
                format!("{e} is invalid"),
            );
        }
    }
    for (i, link) in csv["spec"]["links"].as_array().into_iter().flatten().enumerate() {
        let (n, u) = (
            link["name"].as_str().unwrap_or_default(),
            link["url"].as_str().unwrap_or_default(),
        );
        if n.is_empty() || u.is_empty() {
            report.error(
                file,
                format!("spec.links[{i}]"),
                "should contain both name and url",
            );
        } else if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(' ') {
            report.error(
                file,
                format!("spec.links[{i}].url"),
                format!("{u} is invalid: an absolute http(s) URL"),
            );
        }
    }
    match csv["spec"]["icon"].as_array() {
        None => report.warn(file, "spec.icon", "not specified"),
        Some(icons) if icons.len() != 1 => report.error(file, "spec.icon", "should only have one element"),
        Some(icons) => {
            let (data, media) = (
                icons[0]["base64data"].as_str().unwrap_or_default(),
                icons[0]["mediatype"].as_str().unwrap_or_default(),
            );
            if data.is_empty() || media.is_empty() {
                report.error(file, "spec.icon[0]", "should contain both data and mediatype");
            } else if !["image/gif", "image/jpeg", "image/png", "image/svg+xml"].contains(&media) {
                report.error(
                    file,
                    "spec.icon[0].mediatype",
                    format!("{media} is not one of image/gif, image/jpeg, image/png, image/svg+xml"),
                );
            }
        }
    }
    for (i, image) in csv["spec"]["relatedImages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match image["image"].as_str() {
            None | Some("") => report.error(file, format!("spec.relatedImages[{i}].image"), "empty"),
            Some(spec) if !is_image(spec) => report.error(
                file,
                format!("spec.relatedImages[{i}].image"),
                format!("{spec:?} is not an image pull spec"),
            ),
            _ => {}
        }
    }
}
