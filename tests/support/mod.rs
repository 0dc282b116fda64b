//! Shared test support: generators of random valid Tusk objects at every version.
#![allow(dead_code, missing_docs)]

pub mod apiserver;
pub mod arbitrary;
pub mod objects;
pub mod samples;

use std::time::{Duration, Instant};

/// Polls `check` every 250 ms until it gives `Some`, and fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
