//! Checks on one bundle as a whole, the way operator-framework/api's bundle validator and the
//! index see it: its compressed size, the kinds and API versions of its manifests (OLM installs
//! only some kinds; Kubernetes removed some versions), and exactly one ClusterServiceVersion.
//! Then it runs each concern's checks: [`bundle_annotations`](super::bundle_annotations),
//! [`csv`](super::csv), [`csv_annotations`](super::csv_annotations),
//! [`examples`](super::examples), [`install`](super::install),
//! [`permissions`](super::permissions), [`webhooks`](super::webhooks),
//! [`owned_crds`](super::owned_crds), [`crd`](super::crd) and [`olm_v1`](super::olm_v1).

use std::io::Write;

use serde_json::Value;

use super::{
    LoadedBundle, Report, bundle_annotations, crd, csv, csv_annotations, examples, install, olm_v1,
    owned_crds, permissions, webhooks,
};

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

fn gzip_base64_size(bytes: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    let compressed = encoder.finish().expect("writing to memory").len();
    compressed.div_ceil(3) * 4
}

pub(super) fn check(bundle: &LoadedBundle, report: &mut Report) {
    bundle_annotations::check(bundle, report);
    olm_v1::check_bundle(bundle, report);

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
    csv::check(bundle, csv_file, csv, report);
    csv_annotations::check(csv_file, csv, report);
    examples::check(csv_file, csv, report);
    install::check(csv_file, csv, report);
    webhooks::check(bundle, csv_file, csv, report);
    permissions::check(bundle, csv_file, csv, report);
    owned_crds::check(bundle, csv_file, csv, report);
    for (file, crd) in bundle.crds() {
        crd::check(file, crd, report);
    }
}
