//! What OLM v1 needs to install Tusk: the ServiceAccount a `ClusterExtension` names and the
//! ClusterRole it is bound to, computed from the bundles (the CSV's permissions, which come from
//! `src/rbac.rs`, and every object OLM v1 renders from a bundle), with no wildcard.
//!
//! OLM v1 applies a bundle with the ServiceAccount's own token, so the apiserver enforces exactly
//! this role, and its `PreflightPermissions` check names any rule missing before it applies
//! anything. What the role grants:
//! - on every kind OLM v1 renders from the bundles: `create`, `list` and `watch` (a create cannot
//!   be limited by name, and OLM v1 watches what it installed cluster-wide), and `get`, `update`,
//!   `patch` and `delete`, limited by name where the name is Tusk's own (the CRDs, the objects of
//!   the bundle); the rest (the Deployment, its ServiceAccount and RBAC, the webhook Service and
//!   its cert-manager Issuer and Certificate) are named by OLM v1;
//! - every rule of the operator's own ClusterRoles and Roles, and the `get`, `list` and `watch` of
//!   namespaces OLM v1 adds to them for an all-namespaces install, because RBAC lets nobody
//!   grant what they do not hold, and this role needs neither `escalate` nor `bind`;
//! - `update` of the ClusterExtension's finalizers, by name.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{DEPLOYMENT, Inputs, bundle_manifests};

/// The generated manifest, relative to the repository root.
pub const FILE: &str = "config/olmv1/installer.yaml";
/// The namespace Tusk is installed into (`spec.namespace`), where the ServiceAccount lives.
pub const NAMESPACE: &str = "tusk-system";
/// The ServiceAccount a `ClusterExtension` names (`spec.serviceAccount.name`).
pub const SERVICE_ACCOUNT: &str = "tusk-installer";
/// The ClusterRole and ClusterRoleBinding.
pub const ROLE: &str = "tusk-installer";
/// The `ClusterExtension` the role may set finalizers on.
pub const EXTENSION: &str = DEPLOYMENT;

/// A resource a rule is about: its API group and plural name.
type Resource = (String, String);

/// The resource of an object of `kind` in `api_version`: OLM v1 renders only kinds whose plural
/// is the lower-case kind plus `s`, or `…ies` after a consonant and `y` (none here).
fn resource(api_version: &str, kind: &str) -> Resource {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let lower = kind.to_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ => format!("{lower}s"),
    };
    (group.to_owned(), plural)
}

/// The rules of `role` (a ClusterRole or Role, or one of a CSV's permissions entries).
fn rules_of(role: &Value) -> impl Iterator<Item = &Value> {
    role["rules"].as_array().into_iter().flatten()
}

/// The ClusterRole's rules, in a stable order: first what OLM v1 does with each resource, then
/// the operator's own rules.
pub fn rules(inputs: &Inputs) -> Vec<Value> {
    // resource → names it may be limited to (None: any name)
    let mut managed: BTreeMap<Resource, Option<Vec<String>>> = BTreeMap::new();
    let mut own: Vec<Value> = Vec::new();
    let mut add_own = |rule: &Value| {
        if !own.contains(rule) {
            own.push(rule.clone());
        }
    };
    for release in &inputs.plan.releases {
        for (_, manifest) in bundle_manifests(inputs, release) {
            let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
            let kind = manifest["kind"].as_str().unwrap_or_default();
            if kind == "ClusterServiceVersion" {
                let install = &manifest["spec"]["install"]["spec"];
                let mut any_name = vec![("apps/v1", "Deployment"), ("v1", "ServiceAccount")];
                for (key, role, binding) in [
                    ("clusterPermissions", "ClusterRole", "ClusterRoleBinding"),
                    ("permissions", "Role", "RoleBinding"),
                ] {
                    for permission in install[key].as_array().into_iter().flatten() {
                        rules_of(permission).for_each(&mut add_own);
                        any_name.extend([
                            ("rbac.authorization.k8s.io/v1", role),
                            ("rbac.authorization.k8s.io/v1", binding),
                        ]);
                    }
                }
                if manifest["spec"]["webhookdefinitions"]
                    .as_array()
                    .is_some_and(|w| !w.is_empty())
                {
                    // The webhook Service, and its certificate from cert-manager.
                    any_name.extend([
                        ("v1", "Service"),
                        ("cert-manager.io/v1", "Issuer"),
                        ("cert-manager.io/v1", "Certificate"),
                    ]);
                }
                for (api_version, kind) in any_name {
                    managed.insert(resource(api_version, kind), None);
                }
                // Installed for all namespaces, the operator's Roles become ClusterRoles, and
                // (as OLM v0 does) each gets a rule to read namespaces, which the installer must
                // hold too.
                add_own(
                    &json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}),
                );
                continue;
            }
            if matches!(kind, "ClusterRole" | "Role") {
                rules_of(&manifest).for_each(&mut add_own);
            }
            let name = manifest["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(names) = managed
                .entry(resource(api_version, kind))
                .or_insert_with(|| Some(Vec::new()))
                && !names.contains(&name)
            {
                names.push(name);
                names.sort();
            }
        }
    }
    let mut rules = Vec::new();
    for ((group, plural), names) in managed {
        match names {
            None => rules.push(json!({
                "apiGroups": [group],
                "resources": [plural],
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })),
            Some(names) => {
                rules.push(json!({"apiGroups": [group], "resources": [plural], "verbs": ["create", "list", "watch"]}));
                rules.push(json!({
                    "apiGroups": [group],
                    "resources": [plural],
                    "resourceNames": names,
                    "verbs": ["delete", "get", "patch", "update"],
                }));
            }
        }
    }
    rules.push(json!({
        "apiGroups": ["olm.operatorframework.io"],
        "resources": ["clusterextensions/finalizers"],
        "resourceNames": [EXTENSION],
        "verbs": ["update"],
    }));
    rules.extend(own);
    rules
}

/// The Namespace, the ServiceAccount, the ClusterRole and its ClusterRoleBinding.
pub fn objects(inputs: &Inputs) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE},
            "rules": rules(inputs),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        }),
    ]
}

/// [`objects`] as one YAML file, with a header that says what it is.
pub fn file(inputs: &Inputs) -> String {
    let mut out = String::from(
        "# Generated by `cargo xtask generate` from the bundles: do not edit.\n\
         # What OLM v1 installs Tusk with: a ClusterExtension names this ServiceAccount in\n\
         # spec.serviceAccount, and OLM v1 applies every bundle object with its token.\n",
    );
    for object in objects(inputs) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object).expect("JSON values serialize to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_the_plural_apiserver_names() {
        assert_eq!(
            resource("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            (
                "apiextensions.k8s.io".to_owned(),
                "customresourcedefinitions".to_owned()
            )
        );
        assert_eq!(resource("v1", "Service"), (String::new(), "services".to_owned()));
        assert_eq!(
            resource("policy/v1", "PodDisruptionBudget"),
            ("policy".to_owned(), "poddisruptionbudgets".to_owned())
        );
    }

    #[test]
    fn the_role_has_no_wildcard_and_holds_every_rule_of_the_operator() {
        let inputs =
            Inputs::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
        let rules = rules(&inputs);
        for rule in &rules {
            for key in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule[key].as_array().into_iter().flatten() {
                    assert_ne!(item, "*", "{rule}");
                }
            }
        }
        let crds = rules
            .iter()
            .find(|r| r["resources"][0] == "customresourcedefinitions" && r["resourceNames"].is_array())
            .expect("a rule for Tusk's CRDs by name");
        assert!(
            crds["resourceNames"]
                .as_array()
                .unwrap()
                .contains(&json!("postgresclusters.tusk.dev")),
            "{crds}"
        );
        for rule in tusk::rbac::cluster_role("x").rules.unwrap() {
            let rule = serde_json::to_value(rule).unwrap();
            assert!(rules.contains(&rule), "the operator's {rule} is not held");
        }
    }
}
