//! Events, written as `events.k8s.io/v1` Events: one per happening, and the same happening again
//! on the same object (same type, reason and note; same kind, namespace, name and uid, whatever
//! its resourceVersion) within [`SERIES_WINDOW`] counted on the Event written first (its
//! `series`).
//!
//! What is remembered of each Event for that is a hash of what makes it the same, its name and its
//! count: about a hundred bytes, where keeping the Event (as kube's `Recorder` does) took about
//! 3 KiB per cluster brought up, held for its window.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::events::EventType,
};

/// How long a happening is counted on the Event first written for it.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What happened, for an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Happening {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// A CamelCase reason.
    pub reason: String,
    /// What happened, in a sentence or two (at most 1 kB: the apiserver refuses more).
    pub note: String,
    /// What Tusk was doing.
    pub action: String,
}

/// An Event written, as remembered to count repeats on it.
struct Written {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Writes Events as the operator (see the module documentation).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    written: Mutex<HashMap<u64, Written>>,
}

impl Recorder {
    /// A recorder that signs its Events as `controller` (its `reportingController`), running as
    /// `instance` (its `reportingInstance`; the controller's name when there is none).
    pub fn new(client: Client, controller: String, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| controller.clone()),
            controller,
            written: Mutex::default(),
        }
    }

    /// Writes `happening` about `regarding`: a new Event, or one more in the series of the Event
    /// written for the same happening within [`SERIES_WINDOW`].
    pub async fn publish(
        &self,
        happening: &Happening,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = same(happening, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events = Api::<Event>::namespaced(self.client.clone(), namespace);
        let repeat = {
            let mut written = self.written.lock().expect("never poisoned");
            written.retain(|_, w| w.last + SERIES_WINDOW > now);
            written.get_mut(&key).map(|w| {
                w.count += 1;
                w.last = now;
                (w.name.clone(), w.count)
            })
        };
        if let Some((name, count)) = repeat {
            let series = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (deleted, or expired): the happening gets a new Event.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(happening, regarding, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.written.lock().expect("never poisoned").insert(
            key,
            Written {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// The Event first written for `happening` about `regarding` at `now`.
    fn event(&self, happening: &Happening, regarding: &ObjectReference, now: Timestamp) -> Event {
        Event {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            action: Some(happening.action.clone()),
            reason: Some(happening.reason.clone()),
            note: Some(happening.note.clone()),
            type_: Some(
                match happening.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// What makes two happenings the same: their type, action, reason and note, about the same object
/// (its kind, namespace, name and uid).
fn same(happening: &Happening, regarding: &ObjectReference) -> u64 {
    let mut hasher = DefaultHasher::new();
    matches!(happening.type_, EventType::Warning).hash(&mut hasher);
    happening.action.hash(&mut hasher);
    happening.reason.hash(&mut hasher);
    happening.note.hash(&mut hasher);
    regarding.kind.hash(&mut hasher);
    regarding.namespace.hash(&mut hasher);
    regarding.name.hash(&mut hasher);
    regarding.uid.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn happening(reason: &str, note: &str) -> Happening {
        Happening {
            type_: EventType::Normal,
            reason: reason.into(),
            note: note.into(),
            action: "Reconcile".into(),
        }
    }

    fn object(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("PostgresCluster".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn only_the_same_happening_on_the_same_object_is_the_same() {
        let a = same(&happening("Created", "made x"), &object("db", "1"));
        assert_eq!(a, same(&happening("Created", "made x"), &object("db", "1")));
        for (other, on, why) in [
            (happening("Created", "made y"), object("db", "1"), "another note"),
            (
                happening("Changed", "made x"),
                object("db", "1"),
                "another reason",
            ),
            (
                happening("Created", "made x"),
                object("db2", "1"),
                "another object",
            ),
            (happening("Created", "made x"), object("db", "2"), "made again"),
        ] {
            assert_ne!(a, same(&other, &on), "{why}");
        }
        let mut warning = happening("Created", "made x");
        warning.type_ = EventType::Warning;
        assert_ne!(a, same(&warning, &object("db", "1")), "another type");
    }
}
