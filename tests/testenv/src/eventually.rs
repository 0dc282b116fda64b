//! Waiting for a condition, the one way every test and harness of Tusk waits: [`eventually`]
//! looks at the condition right away and then every [`Wait::interval`] until it holds, and fails
//! after [`Wait::timeout`] with what was awaited and what the last look saw.
//!
//! A look is an async closure that returns an [`Observation`]: `Option<T>` (`None`: not yet),
//! `Result<T, E>` (`Err`: not yet, and what was seen instead), or [`Seen`], which can also say
//! that waiting longer is pointless (a process died), so the wait ends at once.
//!
//! [`eventually`] panics, for tests. [`Wait::until`] gives the same outcome as a `Result`, for
//! harness code that reports errors and for callers that add context (a log tail) to a failure.

use std::{fmt::Display, time::Duration};

use tokio::time::Instant;

/// How long to wait for a condition and how often to look at it.
///
/// A [`Duration`] converts into a `Wait` of that timeout with [`Wait::DEFAULT_INTERVAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// When to stop looking and fail.
    pub timeout: Duration,
    /// The pause between two looks.
    pub interval: Duration,
}

/// What one look at a condition saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    /// The condition holds; the wait ends with this value.
    Holds(T),
    /// Not yet; this is what was seen instead.
    NotYet(String),
    /// It never will (say, the process that should make it hold has died): the wait ends now.
    Never(String),
}

/// What a look may return: anything that says whether the condition holds.
pub trait Observation {
    /// What the wait gives once the condition holds.
    type Value;
    /// This observation as a [`Seen`].
    fn seen(self) -> Seen<Self::Value>;
}

impl<T> Observation for Seen<T> {
    type Value = T;
    fn seen(self) -> Seen<T> {
        self
    }
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn seen(self) -> Seen<T> {
        match self {
            Some(value) => Seen::Holds(value),
            None => Seen::NotYet("not yet".to_owned()),
        }
    }
}

impl<T, E: Display> Observation for Result<T, E> {
    type Value = T;
    fn seen(self) -> Seen<T> {
        match self {
            Ok(value) => Seen::Holds(value),
            Err(seen) => Seen::NotYet(seen.to_string()),
        }
    }
}

/// Why a condition was not reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    /// The timeout passed while the condition did not hold.
    #[error("timed out after {after:?} waiting for {what}; last seen: {last}")]
    TimedOut {
        /// What was awaited.
        what: String,
        /// The timeout.
        after: Duration,
        /// What the last look saw.
        last: String,
    },
    /// A look said the condition never will hold.
    #[error("gave up waiting for {what}: {why}")]
    Never {
        /// What was awaited.
        what: String,
        /// What the look saw.
        why: String,
    },
}

impl Wait {
    /// The pause between two looks when none is given.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

    /// Waits up to `timeout`, looking every [`Wait::DEFAULT_INTERVAL`].
    pub const fn up_to(timeout: Duration) -> Self {
        Self {
            timeout,
            interval: Self::DEFAULT_INTERVAL,
        }
    }

    /// The same wait, looking every `interval`.
    pub const fn every(self, interval: Duration) -> Self {
        Self { interval, ..self }
    }

    /// Looks with `look` until the condition holds and gives its value; or says why it did not
    /// (`what` names the condition in that message).
    pub async fn until<O, F>(self, what: &str, mut look: F) -> Result<O::Value, Unmet>
    where
        F: AsyncFnMut() -> O,
        O: Observation,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let last = match look().await.seen() {
                Seen::Holds(value) => return Ok(value),
                Seen::Never(why) => {
                    return Err(Unmet::Never {
                        what: what.to_owned(),
                        why,
                    });
                }
                Seen::NotYet(last) => last,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Unmet::TimedOut {
                    what: what.to_owned(),
                    after: self.timeout,
                    last,
                });
            }
            tokio::time::sleep(self.interval.min(deadline - now)).await;
        }
    }
}

impl From<Duration> for Wait {
    fn from(timeout: Duration) -> Self {
        Self::up_to(timeout)
    }
}

/// Looks with `look` until the condition holds and gives its value; panics with `what`, the
/// timeout and the last observation if it does not hold within `wait`.
///
/// `wait` is a [`Wait`] or just a timeout:
///
/// ```no_run
/// # async fn example(ready: impl Fn() -> bool) {
/// use std::time::Duration;
/// use tusk_testenv::{Wait, eventually};
/// eventually("the server to be ready", Duration::from_secs(30), async || ready().then_some(())).await;
/// let n = eventually(
///     "three replicas",
///     Wait::up_to(Duration::from_secs(60)).every(Duration::from_secs(1)),
///     async || match 3 { 3 => Ok(3), n => Err(format!("{n} replicas")) },
/// )
/// .await;
/// # }
/// ```
pub async fn eventually<O, F>(what: &str, wait: impl Into<Wait>, look: F) -> O::Value
where
    F: AsyncFnMut() -> O,
    O: Observation,
{
    match wait.into().until(what, look).await {
        Ok(value) => value,
        Err(unmet) => panic!("{unmet}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SHORT: Wait = Wait {
        timeout: Duration::from_millis(300),
        interval: Duration::from_millis(10),
    };

    #[tokio::test]
    async fn gives_the_value_once_the_condition_holds() {
        let mut looks = 0;
        let value = eventually("the third look", SHORT, async || {
            looks += 1;
            (looks == 3).then_some(looks * 10)
        })
        .await;
        assert_eq!((value, looks), (30, 3));
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_and_the_last_observation() {
        let mut looks = 0;
        let started = std::time::Instant::now();
        let unmet = SHORT
            .until("the answer", async || -> Result<(), String> {
                looks += 1;
                Err(format!("look {looks} saw 41"))
            })
            .await
            .unwrap_err();
        assert!(started.elapsed() >= SHORT.timeout, "{:?}", started.elapsed());
        assert!(looks > 2, "looked again and again: {looks}");
        assert_eq!(
            unmet,
            Unmet::TimedOut {
                what: "the answer".into(),
                after: SHORT.timeout,
                last: format!("look {looks} saw 41"),
            }
        );
        assert_eq!(
            unmet.to_string(),
            format!("timed out after 300ms waiting for the answer; last seen: look {looks} saw 41")
        );
    }

    #[tokio::test]
    async fn never_ends_the_wait_at_once() {
        let started = std::time::Instant::now();
        let unmet = Wait::up_to(Duration::from_secs(30))
            .until("a dead server", async || Seen::<()>::Never("it exited".into()))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(unmet.to_string(), "gave up waiting for a dead server: it exited");
    }

    #[tokio::test]
    async fn looks_every_interval() {
        let mut looks = 0;
        let _ = Wait::up_to(Duration::from_millis(450))
            .every(Duration::from_millis(100))
            .until("nothing", async || {
                looks += 1;
                None::<()>
            })
            .await;
        // At 0, 100, 200, 300, 400 and 450 ms; a scheduler may delay a look, never add one.
        assert!((3..=6).contains(&looks), "{looks} looks");
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 300ms waiting for the impossible; last seen: not yet")]
    async fn eventually_panics_with_that_message() {
        eventually("the impossible", SHORT, async || None::<()>).await;
    }

    #[test]
    fn a_duration_is_a_wait_with_the_default_interval() {
        assert_eq!(
            Wait::from(Duration::from_secs(9)),
            Wait {
                timeout: Duration::from_secs(9),
                interval: Wait::DEFAULT_INTERVAL
            }
        );
    }
}
