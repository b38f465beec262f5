//! Publishing Events (events.k8s.io/v1) for people to read.
//!
//! kube's `Recorder` keeps every Event it published for six minutes, whole, keyed by a reference that includes the
//! object's resourceVersion, and scans that cache on every publish. At 1,000 customers that cache was a quarter of
//! the operator's heap, and it aggregated almost nothing (a new resourceVersion is a new key). This recorder keeps,
//! per recent Event, only a hash of what makes two Events the same and the name to patch, and it aggregates repeats
//! of the same Event about the same object into an `EventSeries`, as Kubernetes intends.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

pub use kube::runtime::events::EventType;

/// How long a published Event stays a candidate for aggregation (as kube's and client-go's recorders).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What the recorder remembers of a recent Event.
#[derive(Clone, Debug, PartialEq)]
struct Recent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Recent Events by the hash of what makes two Events the same. Pure: the decisions, without a client.
#[derive(Default, Debug)]
struct RecentEvents {
    by_key: HashMap<u64, Recent>,
    pruned: Option<Timestamp>,
}

/// What to do for an Event being published.
#[derive(Debug, PartialEq)]
enum Publication {
    /// Nothing like it was published recently: create an Event.
    New,
    /// The same Event about the same object was published recently: count it again on that Event.
    Repeat { name: String, count: i32 },
}

impl RecentEvents {
    fn decide(&mut self, key: u64, now: Timestamp) -> Publication {
        self.prune(now);
        match self.by_key.get(&key) {
            Some(recent) if recent.last + SERIES_WINDOW > now => Publication::Repeat {
                name: recent.name.clone(),
                count: recent.count + 1,
            },
            _ => Publication::New,
        }
    }

    fn remember(&mut self, key: u64, name: String, count: i32, now: Timestamp) {
        self.by_key.insert(key, Recent { name, count, last: now });
    }

    fn forget(&mut self, key: u64) {
        self.by_key.remove(&key);
    }

    /// Drops what has aged out of the window, at most once a minute (a scan per publish would cost O(n²)).
    fn prune(&mut self, now: Timestamp) {
        if self.pruned.is_some_and(|at| at + SignedDuration::from_mins(1) > now) {
            return;
        }
        self.by_key.retain(|_, r| r.last + SERIES_WINDOW > now);
        self.pruned = Some(now);
    }
}

/// What makes two Events the same: the object (not its version), the kind of Event and what it says.
fn event_key(reference: &ObjectReference, type_: EventType, reason: &str, note: &str, action: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &reference.api_version,
        &reference.kind,
        &reference.namespace,
        &reference.name,
        &reference.uid,
    )
        .hash(&mut hasher);
    (type_ == EventType::Warning, reason, note, action).hash(&mut hasher);
    hasher.finish()
}

/// Publishes Events as one reporting controller (and instance: the pod's name).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Arc<Mutex<RecentEvents>>,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            recent: Arc::default(),
        }
    }

    /// The Event as created the first time it is published.
    fn new_event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
        now: Timestamp,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Default::default()
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEvents> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes an Event about `reference`, or counts it again when it was just published.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = event_key(reference, type_, reason, &note, action);
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let decision = self.recent().decide(key, now);
        if let Publication::Repeat { name, count } = decision {
            let series = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&series)).await {
                Ok(_) => {
                    self.recent().remember(key, name, count, now);
                    return Ok(());
                }
                // The Event is gone (its TTL, or someone deleted it): publish it anew.
                Err(kube::Error::Api(status)) if status.code == 404 => self.recent().forget(key),
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(reference, type_, reason, note, action, now);
        let created = api.create(&PostParams::default(), &event).await?;
        self.recent()
            .remember(key, created.metadata.name.unwrap_or_default(), 1, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("appdb.dev/v1alpha1".into()),
            kind: Some("PrivateNetwork".into()),
            namespace: Some("acme".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    fn key(name: &str, rv: &str, reason: &str, note: &str) -> u64 {
        event_key(&reference(name, rv), EventType::Warning, reason, note, "Allocate")
    }

    #[test]
    fn the_same_event_about_the_same_object_is_one_key_whatever_the_object_version() {
        assert_eq!(key("prod", "1", "InUse", "x"), key("prod", "2", "InUse", "x"));
        assert_ne!(key("prod", "1", "InUse", "x"), key("test", "1", "InUse", "x"));
        assert_ne!(key("prod", "1", "InUse", "x"), key("prod", "1", "Overlap", "x"));
        assert_ne!(key("prod", "1", "InUse", "x"), key("prod", "1", "InUse", "y"));
        assert_ne!(
            key("prod", "1", "InUse", "x"),
            event_key(&reference("prod", "1"), EventType::Normal, "InUse", "x", "Allocate")
        );
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_first_event_and_a_late_one_is_new() {
        let mut recent = RecentEvents::default();
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1000);
        assert_eq!(recent.decide(7, t0), Publication::New);
        recent.remember(7, "prod.1".into(), 1, t0);

        let t1 = t0 + SignedDuration::from_secs(30);
        assert_eq!(
            recent.decide(7, t1),
            Publication::Repeat {
                name: "prod.1".into(),
                count: 2
            }
        );
        recent.remember(7, "prod.1".into(), 2, t1);

        // The window runs from the last observation.
        let t2 = t1 + SignedDuration::from_mins(5);
        assert_eq!(
            recent.decide(7, t2),
            Publication::Repeat {
                name: "prod.1".into(),
                count: 3
            }
        );
        let late = t2 + SERIES_WINDOW + SignedDuration::from_secs(1);
        assert_eq!(recent.decide(7, late), Publication::New);
    }

    #[test]
    fn aged_out_events_are_forgotten() {
        let mut recent = RecentEvents::default();
        let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(1000);
        for key in 0..100 {
            recent.remember(key, format!("e{key}"), 1, t0);
        }
        recent.decide(1000, t0 + SERIES_WINDOW + SignedDuration::from_mins(1));
        assert!(recent.by_key.is_empty());
    }
}
