//! Conditions in the shape of `metav1.Condition`, whose transition time moves only when their
//! status does.

use crate::api::common::{Condition, ConditionStatus};

/// The condition `type_` with `status`, `reason` and `message`, keeping the transition time of
/// the same condition in `previous` when its status did not change; `now` otherwise.
pub fn condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        observed_generation: generation,
        last_transition_time,
        reason: reason.to_owned(),
        message,
    }
}

/// The reason of the condition `type_` in `conditions` when it has `status`.
pub fn reason_when<'a>(
    conditions: Option<&'a [Condition]>,
    type_: &str,
    status: ConditionStatus,
) -> Option<&'a str> {
    conditions?
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.reason.as_str())
}

/// The current time as RFC 3339 with seconds, as conditions carry it.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
