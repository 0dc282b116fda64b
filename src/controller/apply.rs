//! Writing children: server-side apply with one field manager, no request at all when the
//! live object already holds every field Tusk wants, and no read before creating a child its
//! watch has never seen.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::known::{self, Known};
use crate::facts::cluster::FIELD_MANAGER;

/// A namespaced object Tusk applies as a child of one of its objects.
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// What [`ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The live object already matched; nothing was sent.
    Unchanged,
    /// The object did not exist and was created.
    Created,
    /// The object differed and was changed.
    Applied,
}

/// True when every field of `desired` is in `live` with the same value. Lists must have the same
/// length and match element by element; `live` may have more fields anywhere (server defaults,
/// other managers' fields, status). A resource quantity (the value of `storage`, `cpu`,
/// `memory`, `ephemeral-storage` or `sizeLimit`) matches by value: the apiserver stores
/// `1.5Ti` as `1536Gi`, and a string comparison would apply the same object at every reconcile.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, "")
}

/// The keys whose values are resource quantities.
const QUANTITY_KEYS: [&str; 5] = ["storage", "cpu", "memory", "ephemeral-storage", "sizeLimit"];

fn contains_at(live: &Value, desired: &Value, key: &str) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains_at(lv, dv, k))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains_at(lv, dv, ""))
        }
        (Value::String(l), Value::String(d)) if l != d && QUANTITY_KEYS.contains(&key) => {
            matches!((quantity(l), quantity(d)), (Some(a), Some(b)) if a == b)
        }
        _ => live == desired,
    }
}

/// A Kubernetes resource quantity (`1.5Ti`, `500Mi`, `100m`, `1e3`) in billionths of its unit,
/// exactly; `None` when it is not one or is too large.
fn quantity(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.len() > 9 || (whole.trim_start_matches(['+', '-']).is_empty() && fraction.is_empty()) {
        return None;
    }
    let negative = whole.starts_with('-');
    let digits = whole.trim_start_matches(['+', '-']);
    let whole: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let fraction: i128 = format!("{fraction:0<9}").parse().ok()?;
    let nanos = whole.checked_mul(1_000_000_000)?.checked_add(fraction)?;
    let (multiplier, divisor): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000_i128.pow(2), 1),
        "G" => (1000_i128.pow(3), 1),
        "T" => (1000_i128.pow(4), 1),
        "P" => (1000_i128.pow(5), 1),
        "E" => (1000_i128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exponent => {
            let power: u32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            (10_i128.checked_pow(power)?, 1)
        }
    };
    let value = nanos.checked_mul(multiplier)?;
    (value % divisor == 0).then(|| {
        if negative {
            -value / divisor
        } else {
            value / divisor
        }
    })
}

/// Makes the live object hold `desired`: reads it, and applies only if something differs. When
/// `known` says the object has not changed since it last held what `desired` holds, nothing is
/// sent at all.
pub async fn ensure<K: Child>(client: &Client, known: &Known, desired: &K) -> Result<Outcome, kube::Error> {
    let meta = desired.meta();
    let name = meta.name.as_deref().expect("desired objects are named");
    let namespace = meta.namespace.as_deref().expect("desired objects are namespaced");
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let wanted = serde_json::to_value(desired).expect("Kubernetes objects serialize");
    let (key, hash) = (known::key::<K>(namespace, name), known::hash(&wanted));
    if known.unchanged(&key, hash) {
        return Ok(Outcome::Unchanged);
    }
    // A child taken as absent without a read (`Known::read_own`), and so built as new, is made
    // by a create, not an apply, and without a read either: the create fails on anything there,
    // whoever made it and whatever fields they own, and the next try reads it.
    if known.create_only(&key) {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = match api.create(&params, desired).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                known.present(&key);
                return Err(kube::Error::Api(status));
            }
            other => other?,
        };
        known.applied(&key, created.meta(), hash);
        known.wrote(&key, created);
        return Ok(Outcome::Created);
    }
    // A child no watch has seen is created without reading it first: the apply creates it.
    let unseen = known.unseen::<K>(namespace, name);
    let mut wanted = wanted;
    // Whether the live object, with the fields that cannot change kept, already holds what is
    // wanted; if so, that is noted and nothing need be sent.
    let holds = |live: &Option<K>, wanted: &mut Value| match live {
        Some(found) if adopt(found, wanted) => {
            known.applied(&key, found.meta(), hash);
            true
        }
        _ => false,
    };
    let mut live = if unseen { None } else { api.get_opt(name).await? };
    if holds(&live, &mut wanted) {
        return Ok(Outcome::Unchanged);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = match api.patch(name, &params, &Patch::Apply(&wanted)).await {
        // One that stood there unseen, made by someone else with another value of a field that
        // cannot change, keeps that value: read it once, and apply again.
        Err(kube::Error::Api(status)) if unseen && immutable::<K>(&status) => {
            live = api.get_opt(name).await?;
            if holds(&live, &mut wanted) {
                return Ok(Outcome::Unchanged);
            }
            api.patch(name, &params, &Patch::Apply(&wanted)).await?
        }
        other => other?,
    };
    known.applied(&key, applied.meta(), hash);
    // An unseen child may have stood there without Tusk's labels, made by someone else, who
    // then shows among its managers: the apply took it over.
    let foreign = || {
        applied
            .meta()
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
    };
    let outcome = if live.is_some() || (unseen && foreign()) {
        Outcome::Applied
    } else {
        Outcome::Created
    };
    known.wrote(&key, applied);
    Ok(outcome)
}

/// The fields the apiserver refuses to change once an object of kind `K` is made, by kind. A
/// Secret's `type` is one: a Secret the user made first (`kubectl create secret generic` makes an
/// `Opaque` one) keeps its own, with the keys Tusk wants in it.
fn immutable_fields<K: Child>() -> &'static [&'static str] {
    match K::kind(&()).as_ref() {
        "Secret" => &["type"],
        _ => &[],
    }
}

/// Whether the apiserver refused a write because it would change one of
/// [`immutable_fields`].
fn immutable<K: Child>(status: &kube::core::Status) -> bool {
    let fields = immutable_fields::<K>();
    status.is_invalid()
        && status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .any(|cause| fields.contains(&cause.field.as_str()))
}

/// Takes the values of [`immutable_fields`] from `live` into `wanted`, and says whether `live`
/// then holds all of `wanted`, so that nothing need be sent.
fn adopt<K: Child>(live: &K, wanted: &mut Value) -> bool {
    let live = serde_json::to_value(live).expect("Kubernetes objects serialize");
    keep_immutable(immutable_fields::<K>(), &live, wanted);
    contains(&live, wanted)
}

/// Sets each of `fields` that `live` has in `wanted` to the value in `live`.
fn keep_immutable(fields: &[&str], live: &Value, wanted: &mut Value) {
    for field in fields {
        if let (Some(kept), Some(wanted)) = (live.get(field), wanted.as_object_mut()) {
            wanted.insert((*field).to_owned(), kept.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::contains;

    /// A Secret someone else made keeps its type, and nothing else is taken from it.
    #[test]
    fn immutable_fields_are_taken_from_the_live_object() {
        let live = json!({"type": "Opaque", "data": {"note": "bm90ZQ=="}});
        let mut wanted = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA=="}});
        super::keep_immutable(&["type"], &live, &mut wanted);
        assert_eq!(wanted, json!({"type": "Opaque", "data": {"tls.crt": "Y2VydA=="}}));
        let mut wanted = json!({"type": "kubernetes.io/tls"});
        super::keep_immutable(&["type"], &json!({}), &mut wanted);
        assert_eq!(
            wanted,
            json!({"type": "kubernetes.io/tls"}),
            "nothing live, nothing kept"
        );
        let mut wanted = json!({"type": "kubernetes.io/tls"});
        super::keep_immutable(&[], &live, &mut wanted);
        assert_eq!(
            wanted,
            json!({"type": "kubernetes.io/tls"}),
            "only the fields named"
        );
    }

    #[test]
    fn live_objects_may_have_more_but_never_other_values() {
        let live = json!({"spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(contains(&live, &json!({"spec": {"ports": [{"port": 5432}]}})));
        assert!(!contains(&live, &json!({"spec": {"ports": [{"port": 5433}]}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"ports": [{"port": 5432}, {"port": 8000}]}})
        ));
        assert!(!contains(&live, &json!({"spec": {"selector": {"a": "b"}}})));
        assert!(contains(&live, &json!({})));
    }

    /// The apiserver's canonical form of a quantity matches what Tusk asked for; another amount,
    /// or the same text under a key that is not a quantity, does not.
    #[test]
    fn quantities_match_by_value() {
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        for (asked, stored) in [
            ("1.5Ti", "1536Gi"),
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1e3", "1k"),
            ("2G", "2000M"),
        ] {
            assert!(contains(&claim(stored), &claim(asked)), "{asked} is {stored}");
        }
        for (asked, stored) in [
            ("1.5Ti", "1535Gi"),
            ("1Gi", "1G"),
            ("500Mi", "500m"),
            ("1Gi", "x"),
        ] {
            assert!(
                !contains(&claim(stored), &claim(asked)),
                "{asked} is not {stored}"
            );
        }
        assert!(!contains(
            &json!({"labels": {"size": "1536Gi"}}),
            &json!({"labels": {"size": "1.5Ti"}})
        ));
        assert_eq!(super::quantity("-1.5k"), Some(-1_500_000_000_000));
        assert_eq!(super::quantity("1.5.5"), None);
        assert_eq!(super::quantity(""), None);
    }
}
