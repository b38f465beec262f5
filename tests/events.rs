//! The operator's Event recorder against the test API server: a repeat is counted on the first Event (an
//! `EventSeries`), a different message is a new Event, and a repeat whose Event is gone publishes it anew.

mod support;

use appdb_operator::controllers::events::{EventType, Recorder};
use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event};
use kube::Api;
use support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_become_a_series_and_a_deleted_event_is_published_anew() {
    let c = Cluster::start().await;
    support::apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    let client = kube::Client::try_from(c.server.admin_config()).expect("client");
    let recorder = Recorder::new(client.clone(), "appdb-operator", Some("appdb-operator-0".into()));
    let network = ObjectReference {
        api_version: Some("appdb.dev/v1alpha1".into()),
        kind: Some("PrivateNetwork".into()),
        namespace: Some("acme".into()),
        name: Some("prod".into()),
        uid: Some("4b1c6a5e-0000-4000-8000-000000000001".into()),
        ..Default::default()
    };
    let publish = |note: &str| recorder.publish(&network, EventType::Warning, "InUse", note.to_owned(), "Release");
    let events: Api<Event> = Api::namespaced(client.clone(), "acme");

    publish("a database still lives here").await.expect("published");
    publish("a database still lives here").await.expect("published");
    publish("a database still lives here").await.expect("published");
    let list = events.list(&Default::default()).await.expect("list").items;
    assert_eq!(list.len(), 1, "{list:?}");
    let first = &list[0];
    assert_eq!(first.series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(first.reason.as_deref(), Some("InUse"));
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(first.reporting_controller.as_deref(), Some("appdb-operator"));
    assert_eq!(first.reporting_instance.as_deref(), Some("appdb-operator-0"));
    assert_eq!(first.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("prod"));

    publish("another message").await.expect("published");
    assert_eq!(events.list(&Default::default()).await.expect("list").items.len(), 2);

    let name = first.metadata.name.clone().expect("name");
    events.delete(&name, &Default::default()).await.expect("deleted");
    publish("a database still lives here").await.expect("published anew");
    let list = events.list(&Default::default()).await.expect("list").items;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|e| e.metadata.name.as_deref() != Some(&name)));
    assert!(list.iter().all(|e| e.series.is_none()));
}
