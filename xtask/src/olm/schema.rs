//! Whether a CRD version accepts an object: the structural checks kube-apiserver makes (types,
//! required fields, unknown fields, enums, bounds, lengths, patterns), then its CEL rules through
//! kube's evaluator. Used to prove that no newer release refuses an example an older one
//! accepted.

use kube::core::cel::Validator;
use regex::Regex;
use serde_json::Value;

/// Every reason `schema` refuses `object`, as `path: reason`.
pub fn refusals(schema: &Value, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut root = object.clone();
    if let Some(map) = root.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
    }
    let mut trimmed = schema.clone();
    if let Some(props) = trimmed.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("metadata");
        props.remove("apiVersion");
        props.remove("kind");
    }
    walk(&trimmed, &root, "", &mut out);
    if out.is_empty()
        && let Err(errors) = Validator::new().validate(schema, object, None)
    {
        out.extend(
            errors
                .into_vec()
                .into_iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    out
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let here = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            out.push(format!("{here}: null is not allowed"));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    if let Some(expected) = schema["type"].as_str() {
        let actual = type_of(value);
        let ok = actual == expected
            || (expected == "number" && actual == "integer")
            || (int_or_string && (actual == "integer" || actual == "string"));
        if !ok {
            out.push(format!("{here}: is {actual}, the schema wants {expected}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!(
            "{here}: {value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !map.contains_key(name)
                {
                    out.push(format!("{here}: required field {name} is missing"));
                }
            }
            if let Some(max) = schema["maxProperties"].as_u64()
                && map.len() as u64 > max
            {
                out.push(format!("{here}: {} properties, at most {max} allowed", map.len()));
            }
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Some(schema) = properties.and_then(|p| p.get(key)) {
                    walk(schema, child, &child_path, out);
                } else if schema["additionalProperties"].is_object() {
                    walk(&schema["additionalProperties"], child, &child_path, out);
                } else if schema["x-kubernetes-preserve-unknown-fields"] != Value::Bool(true)
                    && schema["additionalProperties"] != Value::Bool(true)
                {
                    out.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                out.push(format!("{here}: {} items, at least {min} required", items.len()));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.push(format!("{here}: {} items, at most {max} allowed", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                walk(&schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                out.push(format!("{here}: shorter than {min}"));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                out.push(format!("{here}: longer than {max}"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match Regex::new(pattern) {
                    Ok(re) if !re.is_match(text) => {
                        out.push(format!("{here}: {text:?} does not match {pattern:?}"));
                    }
                    Ok(_) => {}
                    Err(e) => out.push(format!("{here}: pattern {pattern:?} does not compile: {e}")),
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64()
                && n < min
            {
                out.push(format!("{here}: {n} is less than the minimum {min}"));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && n > max
            {
                out.push(format!("{here}: {n} is more than the maximum {max}"));
            }
        }
        _ => {}
    }
}
