//! A fixture package for dependency-resolution tests: `tusk-fixture`, one bundle whose only
//! manifest is its CSV and which requires Tusk through `olm.package.required`. Subscribing to it
//! alone must make OLM install Tusk from the same catalog too.

use base64::Engine;
use serde_json::{Value, json};

use super::catalog::go_json;

/// The fixture's package name.
pub const PACKAGE: &str = "tusk-fixture";
/// Its only version.
pub const VERSION: &str = "1.0.0";

fn csv(requires: &str, range: &str) -> Value {
    let labels = json!({"app.kubernetes.io/name": PACKAGE});
    json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {"name": format!("{PACKAGE}.v{VERSION}")},
        "spec": {
            "displayName": "Tusk fixture",
            "description": format!("Needs {requires} {range}; exists only to test that OLM resolves that dependency."),
            "version": VERSION,
            "minKubeVersion": "1.33.0",
            "provider": {"name": "Tusk"},
            "maintainers": [{"name": "Tusk maintainers", "email": "maintainers@tusk.dev"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": false},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": true},
            ],
            "install": {"strategy": "deployment", "spec": {"deployments": [{
                "name": PACKAGE,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                            "containers": [{
                                "name": "fixture",
                                "image": format!("ghcr.io/tusk-operator/{PACKAGE}:{VERSION}"),
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                            }],
                        },
                    },
                },
            }]}},
        },
    })
}

/// The fixture's catalog objects, bundle inlined: it requires package `requires` in `range`.
pub fn blobs(requires: &str, range: &str) -> Vec<Value> {
    let name = format!("{PACKAGE}.v{VERSION}");
    let data = base64::engine::general_purpose::STANDARD.encode(go_json(&csv(requires, range)));
    vec![
        json!({"schema": "olm.package", "name": PACKAGE, "defaultChannel": "stable"}),
        json!({"schema": "olm.channel", "name": "stable", "package": PACKAGE, "entries": [{"name": name}]}),
        json!({
            "schema": "olm.bundle",
            "name": name,
            "package": PACKAGE,
            "image": "",
            "properties": [
                {"type": "olm.package", "value": {"packageName": PACKAGE, "version": VERSION}},
                {"type": "olm.package.required", "value": {"packageName": requires, "versionRange": range}},
                {"type": "olm.bundle.object", "value": {"data": data}},
            ],
        }),
    ]
}
