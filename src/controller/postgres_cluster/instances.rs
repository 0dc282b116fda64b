//! What the instances report: the operator polls each instance manager's [`INSTANCE`] endpoint
//! (through the one endpoint function, so tests map it to loopback) for its role, timeline and
//! WAL positions.

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

/// Asks every pod of `pods` for its state, at once; an error says why one could not be asked.
pub async fn poll(ctx: &Context, namespace: &str, cluster: &str, pods: &[String]) -> Vec<Report> {
    let ask = async |pod: &String| {
        let endpoint = ctx
            .endpoints
            .instance(namespace, cluster, pod)
            .map_err(|e| e.to_string())?;
        let (status, body) = crate::admin::call_tcp(
            &endpoint.to_string(),
            hyper::Method::GET,
            INSTANCE,
            None,
            POLL_TIMEOUT,
        )
        .await?;
        if !status.is_success() {
            return Err(format!("{pod} answered {status}"));
        }
        serde_json::from_slice::<InstanceState>(&body).map_err(|e| format!("{pod} answered {e}"))
    };
    let answers = futures::future::join_all(pods.iter().map(ask)).await;
    pods.iter().cloned().zip(answers).collect()
}
