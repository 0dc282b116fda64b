//! What the instances report: the operator polls each instance manager's [`INSTANCE`] endpoint
//! for its role, timeline and WAL positions. Every request to an instance manager goes through
//! [`call`], and so through the one endpoint function (tests map it to loopback).

use std::time::Duration;

use crate::{
    controller::Context,
    facts::instance::{INSTANCE, InstanceState},
};

/// What one pod's instance manager reported, or why it could not be asked.
pub type Report = (String, Result<InstanceState, String>);

/// What pod `pod` reported in `reports`, if it was asked.
pub fn report<'a>(reports: &'a [Report], pod: &str) -> Option<&'a Result<InstanceState, String>> {
    reports.iter().find(|(p, _)| p == pod).map(|(_, r)| r)
}

/// How long one instance may take to answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// The instance manager of pod `pod` of PostgresCluster `namespace`/`cluster`.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    /// The cluster's namespace.
    pub namespace: &'a str,
    /// The cluster's name.
    pub cluster: &'a str,
    /// The pod's name.
    pub pod: &'a str,
}

/// One request to the instance manager `at`, within `timeout`: its status and body, or why it
/// could not be asked.
pub async fn call(
    ctx: &Context,
    at: At<'_>,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(hyper::StatusCode, hyper::body::Bytes), String> {
    let endpoint = ctx
        .endpoints
        .instance(at.namespace, at.cluster, at.pod)
        .map_err(|e| e.to_string())?;
    crate::admin::call_tcp(&endpoint.to_string(), method, path, body, timeout).await
}

/// Asks every pod of `pods` for its state, at once; an error says why one could not be asked.
pub async fn poll(ctx: &Context, namespace: &str, cluster: &str, pods: &[String]) -> Vec<Report> {
    let ask = async |pod: &String| {
        let at = At {
            namespace,
            cluster,
            pod,
        };
        let (status, body) = call(ctx, at, hyper::Method::GET, INSTANCE, None, POLL_TIMEOUT).await?;
        if !status.is_success() {
            return Err(format!("{pod} answered {status}"));
        }
        serde_json::from_slice::<InstanceState>(&body).map_err(|e| format!("{pod} answered {e}"))
    };
    let answers = futures::future::join_all(pods.iter().map(ask)).await;
    pods.iter().cloned().zip(answers).collect()
}
