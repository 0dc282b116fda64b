//! The kinds whose controllers are not in this build yet (`PostgresBackup`,
//! `PostgresBackupSchedule`). They are watched, counted in the metrics, and
//! told so in their status: `Ready` is `Unknown` with reason `NotReconciled`, at the object's
//! generation. Nothing else is touched.

use std::sync::Arc;

use kube::{
    Api,
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::{Value, json};

use super::{Context, Error, runtime::Object};

/// The status a pending kind gets; `previous` is its current status, if any.
pub fn desired_status(kind: &str, generation: Option<i64>, previous: &Value, now: &str) -> Value {
    let message =
        format!("this build of Tusk does not reconcile {kind} objects yet; the object is kept as it is");
    let since = previous["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "Unknown")
        })
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_owned();
    json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready",
            "status": "Unknown",
            "observedGeneration": generation,
            "lastTransitionTime": since,
            "reason": "NotReconciled",
            "message": message,
        }],
    })
}

async fn acknowledge<K: Object>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = K::kind(&()).into_owned();
    let previous = serde_json::to_value(object.as_ref()).expect("objects serialize")["status"].clone();
    let now = super::condition::now_rfc3339();
    let status = desired_status(&kind, object.meta().generation, &previous, &now);
    let current = json!({
        "observedGeneration": previous["observedGeneration"],
        "conditions": previous["conditions"],
    });
    super::runtime::write_status(&ctx, object.as_ref(), Some(&current), &status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Runs the acknowledging controller for `K` until `shutdown` completes.
pub async fn run<K>(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static)
where
    K: Object,
{
    let controller = Controller::new(Api::<K>::all(ctx.client.clone()), watcher::Config::default());
    super::runtime::drive(controller, ctx, acknowledge::<K>, shutdown).await;
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn the_status_says_what_is_missing_and_keeps_its_transition_time() {
        let first = super::desired_status("PostgresUser", Some(3), &Value::Null, "t1");
        assert_eq!(first["conditions"][0]["reason"], "NotReconciled");
        assert_eq!(first["observedGeneration"], 3);
        let again = super::desired_status("PostgresUser", Some(4), &first, "t2");
        assert_eq!(again["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(again["observedGeneration"], json!(4));
    }
}
