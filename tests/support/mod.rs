//! Shared test support for Tusk's integration tests: its CRDs and webhook on the control plane,
//! random valid objects of every kind and version, valid samples and the table of refusals, local
//! clusters, and Tusk through real OLM. What needs neither Tusk nor its generator lives in the
//! support crate `tusk-testenv`.
#![allow(dead_code, missing_docs)]

pub mod apiserver;
pub mod arbitrary;
pub mod https;
pub mod local_cluster;
pub mod objects;
pub mod olm;
pub mod refusals;
pub mod samples;

pub use tusk_testenv::http_get;

/// The first Event in `namespace` with `reason` that `matches`, once there is one (30 s at most).
pub async fn event(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    matches: impl Fn(&k8s_openapi::api::events::v1::Event) -> bool,
) -> k8s_openapi::api::events::v1::Event {
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    tusk_testenv::eventually(
        &format!("a {reason} Event"),
        std::time::Duration::from_secs(30),
        async || {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason) && matches(e))
        },
    )
    .await
}
