//! How a Tusk process runs, whichever command it is: durations on its command line, and how one
//! shutdown reaches every task.

use std::time::Duration;

/// Parses `250ms`, `2s` or `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use a number with ms, s, m, h or d, such as 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        "d" => Ok(Duration::from_secs(number * 86_400)),
        _ => Err(format!(
            "{text:?} has no unit Tusk knows; use ms, s, m, h or d, such as 2s"
        )),
    }
}

/// Completes once `true` is sent on the channel `stop` belongs to, or its sender is gone: how one
/// shutdown reaches every task.
pub async fn until_stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Children the instance manager waits for itself (such as `pg_basebackup` for a backup): the
/// reaper leaves them to their owner.
static OWN_CHILDREN: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Marks `pid` as a child its owner waits for, until [`release_child`]: the instance
/// manager's reaper (it is PID 1 and reaps orphans) leaves it alone.
pub fn claim_child(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        OWN_CHILDREN.lock().expect("never poisoned").insert(pid);
    }
}

/// Gives a child back to the reaper.
pub fn release_child(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        OWN_CHILDREN.lock().expect("never poisoned").remove(&pid);
    }
}

/// Whether `pid` is a child its owner waits for.
pub fn is_claimed(pid: i32) -> bool {
    OWN_CHILDREN.lock().expect("never poisoned").contains(&pid)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_take_ms_s_m_h_or_d() {
        assert_eq!(super::parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(super::parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(super::parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(super::parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(super::parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(
            super::parse_duration("2w")
                .unwrap_err()
                .contains("use ms, s, m, h or d")
        );
        assert!(
            super::parse_duration("s")
                .unwrap_err()
                .contains("is not a duration")
        );
    }
}
