//! Checks on one bundle: what operator-framework/api's bundle, CSV, CRD, OperatorHub v2,
//! standard categories and capabilities, good practices and deprecated-API validators check,
//! plus what OLM itself refuses at install time.

use std::{collections::BTreeSet, io::Write};

use serde_json::Value;

use super::{LoadedBundle, Report};
use crate::olm::{CAPABILITY_LEVELS, CATEGORIES, range::Range};

/// The largest bundle an index accepts: files gzipped one by one, base64-encoded and summed.
pub const MAX_BUNDLE_SIZE: usize = 1 << 20;

/// Kinds OLM installs from a bundle; it fails the InstallPlan on anything else.
const SUPPORTED_KINDS: &[&str] = &[
    "ClusterServiceVersion",
    "CustomResourceDefinition",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ServiceAccount",
    "Service",
    "ConfigMap",
    "PrometheusRule",
    "ServiceMonitor",
    "PodDisruptionBudget",
    "PriorityClass",
    "VerticalPodAutoscaler",
    "ConsoleYAMLSample",
    "ConsoleQuickStart",
    "ConsoleCLIDownload",
    "ConsoleLink",
    "ConsolePlugin",
    "NetworkPolicy",
];

/// API versions Kubernetes removed, with the release that removed them.
const REMOVED_APIS: &[(&str, &str, &str)] = &[
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition", "1.22"),
    ("rbac.authorization.k8s.io/v1beta1", "*", "1.22"),
    ("admissionregistration.k8s.io/v1beta1", "*", "1.22"),
    ("apiregistration.k8s.io/v1beta1", "APIService", "1.22"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass", "1.22"),
    ("coordination.k8s.io/v1beta1", "Lease", "1.22"),
    ("networking.k8s.io/v1beta1", "*", "1.22"),
    ("extensions/v1beta1", "*", "1.22"),
    ("storage.k8s.io/v1beta1", "*", "1.22"),
    ("certificates.k8s.io/v1beta1", "*", "1.22"),
    ("batch/v1beta1", "CronJob", "1.25"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice", "1.25"),
    ("events.k8s.io/v1beta1", "Event", "1.25"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler", "1.25"),
    ("policy/v1beta1", "*", "1.25"),
    ("node.k8s.io/v1beta1", "RuntimeClass", "1.25"),
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler", "1.26"),
];

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

/// DNS-1123 subdomain, at most 63 characters (a CSV name is also a label value).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Whether `image` is a pull spec: `[registry/]path[:tag][@sha256:digest]`, lower-case path.
pub fn is_image(image: &str) -> bool {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest
        && !(digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        return false;
    }
    let last = name.rsplit('/').next().unwrap_or_default();
    let (path, tag) = match last.split_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
        None => (name, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    {
        return false;
    }
    let mut parts = path.split('/').peekable();
    let first = parts.peek().copied().unwrap_or_default();
    let has_registry =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        parts.next();
    }
    let mut any = false;
    for part in parts {
        any = true;
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return false;
        }
    }
    any
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// Owned CRD versions the CSV declares: `(name, group, version, kind)`.
fn owned(csv: &Value) -> Vec<(String, String, String, String)> {
    csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let name = o["name"].as_str().unwrap_or_default().to_owned();
            let group = name
                .split_once('.')
                .map(|(_, g)| g.to_owned())
                .unwrap_or_default();
            (
                name,
                group,
                o["version"].as_str().unwrap_or_default().to_owned(),
                o["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The schema of `version` in `crd`, when it has one.
pub fn version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)
        .map(|v| &v["schema"]["openAPIV3Schema"])
}

fn schema_has_path(schema: &Value, path: &str) -> bool {
    let mut here = schema;
    for part in path.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        match here["properties"].get(part) {
            Some(next) => here = next,
            None => match here["items"]["properties"].get(part) {
                Some(next) => here = next,
                None => return false,
            },
        }
    }
    true
}

fn gzip_base64_size(bytes: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    let compressed = encoder.finish().expect("writing to memory").len();
    compressed.div_ceil(3) * 4
}

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

    // Size.
    let size: usize = bundle.files.iter().map(|(_, b)| gzip_base64_size(b)).sum();
    if size > MAX_BUNDLE_SIZE {
        report.error(&bundle.dir, "-", format!("maximum bundle compressed size with gzip size exceeded: size=~{size} B, max={MAX_BUNDLE_SIZE} B"));
    } else if size * 100 > MAX_BUNDLE_SIZE * 85 {
        report.warn(
            &bundle.dir,
            "-",
            format!(
                "nearing maximum bundle compressed size with gzip: size=~{size} B, max={MAX_BUNDLE_SIZE} B"
            ),
        );
    }

    // Kinds and removed APIs.
    for (file, manifest) in &bundle.manifests {
        let kind = manifest["kind"].as_str().unwrap_or_default();
        let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
        if kind.is_empty() {
            report.error(file, "kind", "missing");
        } else if !SUPPORTED_KINDS.contains(&kind) {
            report.error(
                file,
                "kind",
                format!(
                    "{kind} is not a kind OLM installs from a bundle; allowed: {}",
                    SUPPORTED_KINDS.join(", ")
                ),
            );
        }
        if api_version.is_empty() {
            report.error(file, "apiVersion", "missing");
        }
        for (removed, removed_kind, release) in REMOVED_APIS {
            if api_version == *removed && (*removed_kind == "*" || *removed_kind == kind) {
                report.error(
                    file,
                    "apiVersion",
                    format!(
                        "{api_version} {kind} was removed in Kubernetes {release}; use the current version"
                    ),
                );
            }
        }
    }

    let csvs: Vec<&(String, Value)> = bundle
        .manifests
        .iter()
        .filter(|(_, m)| m["kind"] == "ClusterServiceVersion")
        .collect();
    if csvs.len() != 1 {
        report.error(
            &format!("{}/manifests", bundle.dir),
            "-",
            format!("{} ClusterServiceVersions; a bundle has exactly one", csvs.len()),
        );
    }
    let Some((csv_file, csv)) = bundle.csv() else {
        return;
    };
    check_csv(bundle, csv_file, csv, report);
    for (file, crd) in bundle.crds() {
        check_crd(file, crd, report);
    }

    // Owned CRDs against the CRDs in the bundle.
    let owned = owned(csv);
    let mut seen = BTreeSet::new();
    for (file, crd) in bundle.crds() {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let version = version["name"].as_str().unwrap_or_default();
            if !seen.insert((group.to_owned(), version.to_owned(), kind.to_owned())) {
                report.error(
                    file,
                    "spec.versions",
                    format!("duplicate CRD {group}/{version}, Kind={kind} in bundle"),
                );
            }
        }
        if !owned.iter().any(|(_, g, _, k)| g == group && k == kind) {
            report.error(file, "-", format!("CRD {group}/{kind} is present in the bundle but not owned by the CSV (spec.customresourcedefinitions.owned)"));
        }
    }
    for (i, (name, group, version, kind)) in owned.iter().enumerate() {
        if !seen.contains(&(group.clone(), version.clone(), kind.clone())) {
            report.error(
                csv_file,
                format!("spec.customresourcedefinitions.owned[{i}]"),
                format!("owned CRD {name} {version} {kind} not found in the bundle's manifests"),
            );
        }
    }
    // A ServiceAccount manifest clashing with the one OLM creates.
    for (file, manifest) in &bundle.manifests {
        if manifest["kind"] == "ServiceAccount" {
            let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
            let clashes = csv["spec"]["install"]["spec"]["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["spec"]["template"]["spec"]["serviceAccountName"] == name);
            if clashes {
                report.error(file, "metadata.name", format!("service account {name} is already created by OLM for the CSV's deployment; remove this manifest"));
            }
        }
    }
}

fn check_csv(bundle: &LoadedBundle, file: &str, csv: &Value, report: &mut Report) {
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

    // Examples.
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

    // Install modes and webhooks.
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
    let supported = |mode: &str| modes.iter().any(|m| m["type"] == mode && m["supported"] == true);
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
    for (i, o) in csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.customresourcedefinitions.owned[{i}]");
        if o["description"].as_str().is_none_or(str::is_empty) {
            report.warn(
                file,
                format!("{at}.description"),
                format!("owned CRD {} has an empty description", o["name"]),
            );
        }
        if o["displayName"].as_str().is_none_or(str::is_empty) {
            report.warn(
                file,
                format!("{at}.displayName"),
                "empty: the console shows the bare kind",
            );
        }
        for resource in o["resources"].as_array().into_iter().flatten() {
            let version = resource["version"].as_str().unwrap_or_default();
            let kind = resource["kind"].as_str().unwrap_or_default();
            if version.contains("beta") || version.contains("alpha") {
                report.error(
                    file,
                    format!("{at}.resources"),
                    format!("{kind} {version} is a deprecated API version"),
                );
            }
        }
        // Descriptor paths must exist in the CRD version's schema.
        let name = o["name"].as_str().unwrap_or_default();
        let version = o["version"].as_str().unwrap_or_default();
        let Some(schema) = bundle
            .crds()
            .find(|(_, c)| c["metadata"]["name"] == name)
            .and_then(|(_, c)| version_schema(c, version))
        else {
            continue;
        };
        for (part, list) in [("spec", "specDescriptors"), ("status", "statusDescriptors")] {
            for (j, d) in o[list].as_array().into_iter().flatten().enumerate() {
                let path = d["path"].as_str().unwrap_or_default();
                if !schema_has_path(&schema["properties"][part], path) {
                    report.error(
                        file,
                        format!("{at}.{list}[{j}].path"),
                        format!("{path:?} is not a field of {name} {version} {part}"),
                    );
                }
            }
        }
    }
}

fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.contains(char::is_whitespace)
        && !domain.contains('@')
}

fn check_crd(file: &str, crd: &Value, report: &mut Report) {
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
