//! Shared test support for Tusk's integration tests: its CRDs and webhook on the control plane,
//! random valid objects of every kind and version, valid samples and the table of refusals, local
//! clusters, and Tusk through real OLM. What needs neither Tusk nor its generator lives in the
//! support crate `tusk-testenv`.
#![allow(dead_code, missing_docs)]

pub mod apiserver;
pub mod arbitrary;
pub mod local_cluster;
pub mod objects;
pub mod olm;
pub mod refusals;
pub mod samples;

/// GET `path` on `host`:`port` over plain HTTP/1.0; the status code and body.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

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
