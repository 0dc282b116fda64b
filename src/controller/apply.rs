//! Writing children: server-side apply with one field manager, and no request at all when the
//! live object already holds every field Tusk wants.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::facts::cluster::FIELD_MANAGER;

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
/// other managers' fields, status).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        _ => live == desired,
    }
}

/// Makes the live object hold `desired`: reads it, and applies only if something differs.
pub async fn ensure<K>(client: &Client, desired: &K) -> Result<Outcome, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let meta = desired.meta();
    let name = meta.name.as_deref().expect("desired objects are named");
    let namespace = meta.namespace.as_deref().expect("desired objects are namespaced");
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let wanted = serde_json::to_value(desired).expect("Kubernetes objects serialize");
    let live = api.get_opt(name).await?;
    if let Some(live) = &live {
        let live = serde_json::to_value(live).expect("Kubernetes objects serialize");
        if contains(&live, &wanted) {
            return Ok(Outcome::Unchanged);
        }
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(if live.is_some() {
        Outcome::Applied
    } else {
        Outcome::Created
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::contains;

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
}
