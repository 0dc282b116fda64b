//! What a pull request to the community catalogs adds (k8s-operatorhub/community-operators for
//! OperatorHub.io, redhat-openshift-ecosystem/community-operators-prod for OpenShift's
//! community catalog): `operators/<package>/<version>/{manifests,metadata}/` for every release,
//! the bundle exactly as `bundle/<version>/` holds it, and `operators/<package>/ci.yaml`, which
//! tells their pipeline how to build the upgrade graph.

use super::{Inputs, bundle_files};

/// The update graph mode of `ci.yaml`: Tusk's graph is its bundles' `replaces`, `skips` and
/// `olm.skipRange` (the catalog's channel entries say the same), not semantic-version order.
pub const UPDATE_GRAPH: &str = "replaces-mode";

/// The files of the contribution, by path relative to the catalog repository's root.
pub fn files(inputs: &Inputs) -> Vec<(String, String)> {
    let package = &inputs.plan.package;
    let mut files = vec![(
        format!("operators/{package}/ci.yaml"),
        format!(
            "---\n# Tusk's bundles name their predecessors (replaces, skips, olm.skipRange): the graph follows them.\nupdateGraph: {UPDATE_GRAPH}\n"
        ),
    )];
    for release in &inputs.plan.releases {
        for (path, contents) in bundle_files(inputs, release) {
            if path.starts_with("manifests/") || path.starts_with("metadata/") {
                files.push((
                    format!("operators/{package}/{}/{path}", release.version),
                    contents,
                ));
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_release_is_its_bundle_directory_and_ci_yaml_names_the_graph_mode() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let inputs = Inputs::load(root).unwrap();
        let files = files(&inputs);
        let ci = files
            .iter()
            .find(|(p, _)| p == "operators/tusk-operator/ci.yaml")
            .expect("ci.yaml");
        let parsed: serde_json::Value = serde_saphyr::from_str(&ci.1).unwrap();
        assert_eq!(parsed["updateGraph"], "replaces-mode");
        for release in &inputs.plan.releases {
            let dir = root.join("bundle").join(release.version.to_string());
            let prefix = format!("operators/tusk-operator/{}/", release.version);
            let mut expected = Vec::new();
            for part in ["manifests", "metadata"] {
                for entry in std::fs::read_dir(dir.join(part)).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                    expected.push((
                        format!("{prefix}{part}/{name}"),
                        std::fs::read_to_string(&path).unwrap(),
                    ));
                }
            }
            expected.sort();
            let got: Vec<(String, String)> = files
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix))
                .cloned()
                .collect();
            assert_eq!(got, expected, "{}", release.version);
        }
        assert_eq!(
            files.len(),
            1 + files.iter().filter(|(p, _)| p.matches('/').count() == 4).count(),
            "ci.yaml and the bundles' files, nothing else"
        );
    }
}
