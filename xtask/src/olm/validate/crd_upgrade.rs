//! The CRD upgrade-safety rules of OLM v1, checked along every upgrade edge of the catalog, so
//! that `cargo xtask validate` refuses what OLM v1's preflight would refuse at install time.
//!
//! OLM v1 (operator-framework/operator-controller,
//! `internal/operator-controller/rukpak/preflights/crdupgradesafety/crdupgradesafety.go`) runs
//! sigs.k8s.io/crdify on the CRD on the cluster and the CRD of the new bundle, with this
//! configuration (`defaultConfig`): description changes are ignored, enum values may be added,
//! served-version comparisons are skipped for CRDs that convert by webhook (Tusk's do), and an
//! unhandled change fails closed. Its rules, and where crdify keeps each:
//!
//! | rule | crdify | refused |
//! |---|---|---|
//! | scope | `validators/crd/scope.go` | `Namespaced` ↔ `Cluster` |
//! | existing field removal | `validators/crd/existingfieldremoval.go` | a field of a version both serve is gone |
//! | stored version removal | `validators/crd/storedversionremoval.go` | checked by [`super::upgrade`] along every path |
//! | type | `property/type.go` | a field's type changed |
//! | required | `property/required.go` | a field newly required |
//! | enum | `property/enum.go` | a value removed, or an enum where any value was allowed |
//! | maximum, maxLength, maxItems, maxProperties | `property/max.go` | a bound added or lowered |
//! | minimum, minLength, minItems, minProperties | `property/min.go` | a bound added or raised |
//! | default | `property/default.go` | a default added, removed or changed |
//!
//! crdify has no rule for `x-kubernetes-validations` (CEL): any change to a field's rules is an
//! "unhandled change", which the preflight refuses under its default `Strict` enforcement (seen
//! against operator-controller 1.5.1: `v1: ^.spec.target: unhandled: unhandled changes found`).
//! [`unhandled`] finds those; the catalog check warns about them, because an administrator
//! approves such an upgrade by setting the ClusterExtension's
//! `spec.install.preflight.crdUpgradeSafety.enforcement` to `None`.
//!
//! Not checked here yet: `pattern`, `format`, `nullable`, `oneOf`/`anyOf`/`allOf`/`not` and
//! `uniqueItems`, which crdify also compares.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every property schema of `schema` by path (`^`, `^.spec.instances`, `^.spec.list[*]`,
/// `^.spec.map{*}`), without the nested `properties`, `items` and `additionalProperties`.
fn flatten(schema: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    let mut own = schema.clone();
    if let Some(map) = own.as_object_mut() {
        map.remove("properties");
        map.remove("items");
        map.remove("additionalProperties");
    }
    out.insert(path.clone(), own);
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        flatten(child, format!("{path}.{name}"), out);
    }
    if schema["items"].is_object() {
        flatten(&schema["items"], format!("{path}[*]"), out);
    }
    if schema["additionalProperties"].is_object() {
        flatten(&schema["additionalProperties"], format!("{path}{{*}}"), out);
    }
}

fn versions(crd: &Value) -> BTreeMap<String, &Value> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?.to_owned(), &v["schema"]["openAPIV3Schema"])))
        .collect()
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// What one field's change breaks, by the rules above.
fn field_refusals(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if old["type"] != new["type"] {
        out.push(format!("type: changed from {} to {}", old["type"], new["type"]));
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.to_string())
            .collect()
    };
    let (old_required, new_required) = (names(&old["required"]), names(&new["required"]));
    let added: Vec<&str> = new_required
        .iter()
        .filter(|r| !old_required.contains(r))
        .map(String::as_str)
        .collect();
    if !added.is_empty() {
        out.push(format!("required: new required fields {}", added.join(", ")));
    }
    let (old_enum, new_enum) = (names(&old["enum"]), names(&new["enum"]));
    if old_enum.is_empty() && !new_enum.is_empty() {
        out.push(format!(
            "enum: constraint {} added where any value was allowed",
            new_enum.join(", ")
        ));
    } else if !new_enum.is_empty() {
        let removed: Vec<&str> = old_enum
            .iter()
            .filter(|e| !new_enum.contains(e))
            .map(String::as_str)
            .collect();
        if !removed.is_empty() {
            out.push(format!(
                "enum: values {} removed from those allowed",
                removed.join(", ")
            ));
        }
    }
    for bound in ["maximum", "maxLength", "maxItems", "maxProperties"] {
        match (number(&old[bound]), number(&new[bound])) {
            (None, Some(to)) => out.push(format!("{bound}: constraint {to} added where there was none")),
            (Some(from), Some(to)) if to < from => {
                out.push(format!("{bound}: lowered from {from} to {to}"));
            }
            _ => {}
        }
    }
    for bound in ["minimum", "minLength", "minItems", "minProperties"] {
        match (number(&old[bound]), number(&new[bound])) {
            (None, Some(to)) => out.push(format!("{bound}: constraint {to} added where there was none")),
            (Some(from), Some(to)) if to > from => {
                out.push(format!("{bound}: raised from {from} to {to}"));
            }
            _ => {}
        }
    }
    match (&old["default"], &new["default"]) {
        (Value::Null, Value::Null) => {}
        (Value::Null, to) => out.push(format!("default: {to} added where there was none")),
        (from, Value::Null) => out.push(format!("default: {from} removed")),
        (from, to) if from != to => out.push(format!("default: changed from {from} to {to}")),
        _ => {}
    }
    out
}

/// What OLM v1 would refuse in upgrading CRD `old` to `new`: `(field, message)` pairs, the
/// field as `spec.versions[<version>].schema.<path>` or `spec.scope`. Pure.
pub fn refusals(old: &Value, new: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if old["spec"]["scope"] != new["spec"]["scope"] {
        out.push((
            "spec.scope".to_owned(),
            format!(
                "scope: changed from {} to {}",
                old["spec"]["scope"], new["spec"]["scope"]
            ),
        ));
    }
    let new_versions = versions(new);
    for (version, old_schema) in versions(old) {
        let Some(new_schema) = new_versions.get(&version) else {
            continue; // A version no longer served: the stored-version check decides.
        };
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        flatten(old_schema, "^".to_owned(), &mut before);
        flatten(new_schema, "^".to_owned(), &mut after);
        for (path, old_field) in &before {
            let at = format!("spec.versions[{version}].schema.{path}");
            match after.get(path) {
                None => out.push((at, "existing field removal: the field is gone".to_owned())),
                Some(new_field) => {
                    for refusal in field_refusals(old_field, new_field) {
                        out.push((at.clone(), refusal));
                    }
                }
            }
        }
    }
    out
}

/// The changes of CRD `old` to `new` that OLM v1's preflight cannot judge and so refuses unless
/// its enforcement is `None`: `(field, reason)` pairs, the reason in crdify's words
/// (`<version>: <path>: unhandled: …`). Pure.
pub fn unhandled(old: &Value, new: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let new_versions = versions(new);
    for (version, old_schema) in versions(old) {
        let Some(new_schema) = new_versions.get(&version) else {
            continue;
        };
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        flatten(old_schema, "^".to_owned(), &mut before);
        flatten(new_schema, "^".to_owned(), &mut after);
        for (path, old_field) in &before {
            let Some(new_field) = after.get(path) else {
                continue;
            };
            let rules = |field: &Value| field["x-kubernetes-validations"].clone();
            if rules(old_field) != rules(new_field) {
                out.push((
                    format!("spec.versions[{version}].schema.{path}.x-kubernetes-validations"),
                    format!(
                        "{version}: {path}: unhandled: unhandled changes found (x-kubernetes-validations)"
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{refusals, unhandled};

    #[test]
    fn a_changed_cel_rule_is_unhandled_and_an_unchanged_one_is_not() {
        let schema = |rule: &str| {
            json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "x-kubernetes-validations": [{"rule": rule}]}},
            }}}]}})
        };
        assert_eq!(
            unhandled(&schema("a"), &schema("b")),
            vec![(
                "spec.versions[v1].schema.^.spec.x-kubernetes-validations".to_owned(),
                "v1: ^.spec: unhandled: unhandled changes found (x-kubernetes-validations)".to_owned()
            )]
        );
        assert!(unhandled(&schema("a"), &schema("a")).is_empty());
    }

    fn crd(spec: Value) -> Value {
        json!({
            "spec": {
                "scope": "Namespaced",
                "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": spec},
                }}}],
            },
        })
    }

    fn base() -> Value {
        json!({
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "string", "maxLength": 63, "minLength": 1},
                "instances": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1},
                "mode": {"type": "string", "enum": ["Fast", "Safe"]},
                "tags": {"type": "array", "maxItems": 8, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "description": "a note"},
            },
        })
    }

    /// One hand-broken copy per rule, each refused with the field and the rule named; the
    /// safe changes (a new optional field, a new enum value, a looser bound, a new description)
    /// pass.
    #[test]
    fn each_rule_refuses_its_breaking_change() {
        let old = crd(base());
        assert_eq!(refusals(&old, &old), vec![]);
        let mut safe = base();
        safe["properties"]["extra"] = json!({"type": "string"});
        safe["properties"]["mode"]["enum"] = json!(["Fast", "Safe", "Careful"]);
        safe["properties"]["instances"]["maximum"] = json!(20);
        safe["properties"]["size"]["minLength"] = json!(0);
        safe["properties"]["note"]["description"] = json!("another note");
        assert_eq!(refusals(&old, &crd(safe)), vec![]);

        type Break = fn(&mut Value);
        let cases: Vec<(&str, Break, &str)> = vec![
            (
                "^.spec.note",
                |s| {
                    s["properties"].as_object_mut().unwrap().remove("note");
                },
                "existing field removal",
            ),
            (
                "^.spec.instances",
                |s| s["properties"]["instances"]["type"] = json!("string"),
                "type: changed from \"integer\" to \"string\"",
            ),
            (
                "^.spec",
                |s| s["required"] = json!(["size", "mode"]),
                "required: new required fields \"mode\"",
            ),
            (
                "^.spec.mode",
                |s| s["properties"]["mode"]["enum"] = json!(["Fast"]),
                "enum: values \"Safe\" removed",
            ),
            (
                "^.spec.note",
                |s| s["properties"]["note"]["enum"] = json!(["a"]),
                "enum: constraint",
            ),
            (
                "^.spec.instances",
                |s| s["properties"]["instances"]["maximum"] = json!(5),
                "maximum: lowered from 9 to 5",
            ),
            (
                "^.spec.size",
                |s| s["properties"]["size"]["maxLength"] = json!(32),
                "maxLength: lowered from 63 to 32",
            ),
            (
                "^.spec.tags",
                |s| s["properties"]["tags"]["maxItems"] = json!(2),
                "maxItems: lowered from 8 to 2",
            ),
            (
                "^.spec.labels",
                |s| s["properties"]["labels"]["maxProperties"] = json!(4),
                "maxProperties: constraint 4 added",
            ),
            (
                "^.spec.instances",
                |s| s["properties"]["instances"]["minimum"] = json!(2),
                "minimum: raised from 1 to 2",
            ),
            (
                "^.spec.size",
                |s| s["properties"]["size"]["minLength"] = json!(3),
                "minLength: raised from 1 to 3",
            ),
            (
                "^.spec.tags",
                |s| s["properties"]["tags"]["minItems"] = json!(1),
                "minItems: constraint 1 added",
            ),
            (
                "^.spec.labels",
                |s| s["properties"]["labels"]["minProperties"] = json!(1),
                "minProperties: constraint 1 added",
            ),
            (
                "^.spec.instances",
                |s| s["properties"]["instances"]["default"] = json!(3),
                "default: changed from 1 to 3",
            ),
            (
                "^.spec.mode",
                |s| s["properties"]["mode"]["default"] = json!("Fast"),
                "default: \"Fast\" added",
            ),
            (
                "^.spec.instances",
                |s| {
                    s["properties"]["instances"]
                        .as_object_mut()
                        .unwrap()
                        .remove("default");
                },
                "default: 1 removed",
            ),
            (
                "^.spec.tags[*]",
                |s| s["properties"]["tags"]["items"]["type"] = json!("integer"),
                "type: changed",
            ),
            (
                "^.spec.labels{*}",
                |s| s["properties"]["labels"]["additionalProperties"]["maxLength"] = json!(10),
                "maxLength: constraint 10 added",
            ),
        ];
        for (path, breaks, message) in cases {
            let mut broken = base();
            breaks(&mut broken);
            let found = refusals(&old, &crd(broken));
            let field = format!("spec.versions[v1].schema.{path}");
            assert!(
                found.iter().any(|(f, m)| f == &field && m.contains(message)),
                "{path} {message}: {found:?}"
            );
            assert_eq!(found.len(), 1, "{path}: only that change: {found:?}");
        }

        let mut scoped = old.clone();
        scoped["spec"]["scope"] = json!("Cluster");
        assert_eq!(
            refusals(&old, &scoped),
            vec![(
                "spec.scope".to_owned(),
                "scope: changed from \"Namespaced\" to \"Cluster\"".to_owned()
            )]
        );
    }
}
