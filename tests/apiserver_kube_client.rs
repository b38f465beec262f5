//! The test API server through kube-rs, the client the operator uses: typed CRUD, the runtime watcher, conflicts.

mod support;

use std::time::Duration;

use appdb_operator::api::{PrivateNetwork, PrivateNetworkSpec};
use futures::StreamExt;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use support::Cluster;

type Events = futures::stream::BoxStream<'static, Result<watcher::Event<PrivateNetwork>, watcher::Error>>;

async fn next(stream: &mut Events) -> watcher::Event<PrivateNetwork> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10 s")
        .expect("stream open")
        .expect("no watch error")
}

async fn client(c: &Cluster) -> Client {
    Client::try_from(c.server.admin_config()).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watcher_sees_create_update_and_delete() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let api: Api<PrivateNetwork> = Api::namespaced(client(&c).await, "default");
    let mut stream: Events = watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut stream).await, watcher::Event::Init));
    assert!(matches!(next(&mut stream).await, watcher::Event::InitDone));

    let net = PrivateNetwork::new(
        "net-a",
        PrivateNetworkSpec {
            cidr: Some("10.1.2.0/26".into()),
            description: None,
        },
    );
    api.create(&PostParams::default(), &net).await.expect("create");
    match next(&mut stream).await {
        watcher::Event::Apply(n) => assert_eq!(n.spec.cidr.as_deref(), Some("10.1.2.0/26")),
        other => panic!("expected Apply, got {other:?}"),
    }
    let status = serde_json::json!({"status": {"cidr": "10.1.2.0/26", "observedGeneration": 1}});
    api.patch_status(
        "net-a",
        &PatchParams::apply("appdb-operator").force(),
        &Patch::Apply(&serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork", "status": status["status"]
        })),
    )
    .await
    .expect("status apply");
    match next(&mut stream).await {
        watcher::Event::Apply(n) => assert_eq!(n.status.and_then(|s| s.cidr).as_deref(), Some("10.1.2.0/26")),
        other => panic!("expected Apply, got {other:?}"),
    }
    api.delete("net-a", &DeleteParams::default()).await.expect("delete");
    assert!(matches!(next(&mut stream).await, watcher::Event::Delete(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_carry_kubernetes_reasons() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let api: Api<PrivateNetwork> = Api::namespaced(client(&c).await, "default");
    let net = PrivateNetwork::new("dup", PrivateNetworkSpec::default());
    api.create(&PostParams::default(), &net).await.expect("create");
    match api.create(&PostParams::default(), &net).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match api.get("missing").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let bad = PrivateNetwork::new(
        "bad",
        PrivateNetworkSpec {
            cidr: Some("10.1.2.0/24".into()),
            description: None,
        },
    );
    match api.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("cidr must be a /26"), "{}", s.message);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let mut stale = api.get("dup").await.expect("get");
    api.patch(
        "dup",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"description": "newer"}})),
    )
    .await
    .expect("patch");
    stale.spec.description = Some("older".into());
    match api.replace("dup", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// Metadata-only requests (how the operator watches Secrets) get metadata only, as from a real API server: never a
/// Secret's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_requests_never_carry_secret_values() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    let c = Cluster::start().await;
    let client = client(&c).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "held"}, "stringData": {"password": "s3cret-value-9"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.expect("create");

    let raw = |accept: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::get("/api/v1/namespaces/default/secrets")
                .header("Accept", accept)
                .body(Vec::new())
                .unwrap();
            client.request_text(request).await.expect("list")
        }
    };
    let full = raw("application/json").await;
    assert!(
        full.contains("czNjcmV0LXZhbHVlLTk="),
        "a plain list carries the value: {full}"
    );
    let metadata = raw("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1").await;
    assert!(
        metadata.contains("PartialObjectMetadataList") && metadata.contains("\"held\""),
        "{metadata}"
    );
    assert!(
        !metadata.contains("czNjcmV0LXZhbHVlLTk=") && !metadata.contains("\"data\""),
        "{metadata}"
    );

    // The operator's watch, as kube-rs makes it.
    let api = Api::<PartialObjectMeta<Secret>>::namespaced(client, "default");
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut seen = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        if let watcher::Event::InitApply(s) | watcher::Event::Apply(s) = event.expect("no watch error") {
            seen |= s.metadata.name.as_deref() == Some("held");
        }
        if seen {
            break;
        }
    }
    assert!(seen, "the metadata watch saw the Secret");
}
