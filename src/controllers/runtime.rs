//! What every controller's wiring shares: lean caches, watch mappers, the drained run loop, the retry policy for
//! errors, spread resyncs, and Events.

use super::{
    error::{KindError, ReconcileError},
    events,
};

/// One kind's controller as the manager runs it: its name (in metrics, logs and readiness) and how it watches and
/// reconciles. Every [`Kind`] is a [`crate::manager::Controller`].
pub trait Kind: Send + 'static {
    /// Short name used in metrics, logs and readiness (`privatenetwork`).
    const NAME: &'static str;
    /// Watches and reconciles until `ctx.shutdown` fires.
    fn serve(self, ctx: crate::manager::ControllerContext) -> impl std::future::Future<Output = ()> + Send + 'static;
}

impl<T: Kind> crate::manager::Controller for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn run(self: Box<Self>, ctx: crate::manager::ControllerContext) -> futures::future::BoxFuture<'static, ()> {
        Box::pin((*self).serve(ctx))
    }
}

/// The one error policy of every controller: count, log with the object's namespace and name (errors name objects,
/// never a Secret's value), retry after [`ReconcileError::retry_after`].
fn error_policy<K, Own>(
    controller: &'static str,
    metrics: &crate::metrics::Metrics,
    object: &K,
    error: &ReconcileError<Own>,
) -> kube::runtime::controller::Action
where
    K: kube::Resource,
    Own: KindError,
{
    metrics.count_error(controller, error.metric_label());
    tracing::warn!(
        controller,
        namespace = %object.meta().namespace.as_deref().unwrap_or_default(),
        name = %object.meta().name.as_deref().unwrap_or_default(),
        error = %error,
        "reconcile failed"
    );
    kube::runtime::controller::Action::requeue(error.retry_after())
}

/// Waits until a reflector store has its initial list. Polls again every 200 ms because a store's readiness signal
/// wakes only its most recent waiter (the controller's own runner usually), not every task waiting on it.
pub async fn wait_until_ready<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(std::time::Duration::from_millis(200), store.wait_until_ready()).await
        {
            // An error means the writer is gone (shutdown): nothing left to wait for.
            let _ = result;
            return;
        }
    }
}

/// Records an Event on `reference`. A failure is logged, never fatal: Events are for people, not for correctness.
pub async fn publish(
    recorder: &events::Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: events::EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    if let Err(e) = recorder.publish(reference, type_, reason, note, action).await {
        tracing::warn!(
            namespace = reference.namespace.as_deref().unwrap_or_default(),
            name = reference.name.as_deref().unwrap_or_default(),
            kind = reference.kind.as_deref().unwrap_or_default(),
            error = %e,
            "cannot publish event"
        );
    }
}

/// Marks the controller's caches synced (for `/readyz`) once `store` has its initial list.
pub fn mark_synced_when_ready<K>(store: kube::runtime::reflector::Store<K>, synced: crate::manager::SyncedHandle)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    tokio::spawn(async move {
        wait_until_ready(&store).await;
        synced.mark_synced();
    });
}

/// A watch of the objects the operator made (labelled `app.kubernetes.io/managed-by`): what each controller `owns`.
pub fn made_by_the_operator() -> kube::runtime::watcher::Config {
    use crate::names::{LABEL_MANAGED_BY, MANAGED_BY};
    kube::runtime::watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
}

/// The Event recorder of the operator (reporting controller `appdb-operator`, instance: the pod's name).
pub fn recorder(client: kube::Client) -> events::Recorder {
    events::Recorder::new(client, crate::names::FIELD_MANAGER, std::env::var("POD_NAME").ok())
}

/// The objects in `store` in `namespace` for which `related` holds: the mapper of a `watches` trigger.
pub fn related_in<K>(
    store: &kube::runtime::reflector::Store<K>,
    namespace: Option<String>,
    related: impl Fn(&K) -> bool,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace == namespace && related(o))
        .map(|o| kube::runtime::reflector::ObjectRef::from_obj(&*o))
        .collect()
}

/// What a reconcile reads besides its object: the client, the operator's configuration, the Event recorder, and what
/// only its kind keeps (`kind`: its caches and metrics).
pub struct Context<T> {
    pub client: kube::Client,
    pub config: std::sync::Arc<crate::config::OperatorConfig>,
    pub recorder: events::Recorder,
    pub kind: T,
}

/// Runs `controller` until `ctx.shutdown`, `config.concurrency` objects at a time: each object through `reconcile`
/// with a [`Context`] of `kind`, measured (`appdb_reconciles_total`, the duration histogram, a span naming the
/// object), failures through the one [`error_policy`], the results drained ([`drain`]).
pub async fn serve<K, T, Own, Fut>(
    name: &'static str,
    controller: kube::runtime::Controller<K>,
    ctx: crate::manager::ControllerContext,
    config: std::sync::Arc<crate::config::OperatorConfig>,
    kind: T,
    mut reconcile: impl FnMut(std::sync::Arc<K>, std::sync::Arc<Context<T>>) -> Fut,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::fmt::Debug + Eq + std::hash::Hash + Clone + Unpin,
    T: Send + Sync + 'static,
    Own: KindError,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, ReconcileError<Own>>> + Send + 'static,
{
    let concurrency = config.concurrency;
    let context = std::sync::Arc::new(Context {
        client: ctx.client.clone(),
        config,
        recorder: recorder(ctx.client),
        kind,
    });
    let metrics = ctx.metrics;
    let measured = {
        let metrics = metrics.clone();
        move |object: std::sync::Arc<K>, context| {
            let work = reconcile(object.clone(), context);
            let metrics = metrics.clone();
            async move { metrics.measure(name, &*object, work).await }
        }
    };
    drain(
        controller
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
            .graceful_shutdown_on(ctx.shutdown.cancelled_owned())
            .run(
                measured,
                move |object, error, _| error_policy(name, &metrics, &*object, error),
                context,
            ),
    )
    .await;
}

/// Runs `apply` on a live object, `cleanup` on one being deleted, and keeps `finalizer` on it in between (kube-rs's
/// finalizer helper, with its errors as the [`ReconcileError::Finalizer`] step).
pub async fn with_finalizer<K, Own, Apply, Cleanup>(
    client: &kube::Client,
    finalizer: &str,
    object: std::sync::Arc<K>,
    apply: impl FnOnce(std::sync::Arc<K>) -> Apply,
    cleanup: impl FnOnce(std::sync::Arc<K>) -> Cleanup,
) -> Result<kube::runtime::controller::Action, ReconcileError<Own>>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    Own: KindError,
    Apply: std::future::Future<Output = Result<kube::runtime::controller::Action, ReconcileError<Own>>>,
    Cleanup: std::future::Future<Output = Result<kube::runtime::controller::Action, ReconcileError<Own>>>,
{
    use kube::runtime::finalizer::{Event, finalizer as keep_finalizer};
    let api: kube::Api<K> =
        kube::Api::namespaced(client.clone(), object.meta().namespace.as_deref().unwrap_or_default());
    keep_finalizer(&api, finalizer, object, |event| async move {
        match event {
            Event::Apply(object) => apply(object).await,
            Event::Cleanup(object) => cleanup(object).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Runs a controller's result stream to its end. Reconcile failures are logged by each `error_policy`; what is left
/// to say here is that a watch failed (the controller retries it with backoff) — otherwise such failures go unseen.
pub async fn drain<K, E, S>(results: S)
where
    K: kube::Resource,
    E: std::error::Error + 'static,
    S: futures::Stream<
            Item = Result<
                (
                    kube::runtime::reflector::ObjectRef<K>,
                    kube::runtime::controller::Action,
                ),
                kube::runtime::controller::Error<E, kube::runtime::watcher::Error>,
            >,
        >,
{
    use futures::StreamExt;
    results
        .for_each(|result| {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                tracing::warn!(error = %e, "watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// A periodic look at an object, spread over ±10 % of `period` by its uid: objects created together (a GitOps sync, a
/// restore) otherwise all come back in the same second, every period, for ever. Deterministic per object.
pub fn spread(period: std::time::Duration, uid: Option<&str>) -> std::time::Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    uid.hash(&mut hasher);
    // A point in [-1, 1] from the hash, then ±10 % of the period around it.
    let unit = (hasher.finish() % 2001) as f64 / 1000.0 - 1.0;
    period.mul_f64(1.0 + unit / 10.0)
}

/// The annotation `kubectl apply` (client-side) keeps: a second copy of the spec the operator never reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a cached object what the operator never reads. managedFields are most of a custom resource's weight:
/// at 500 customers the reflector stores held 20 MB of a 44 MB heap, three quarters of it managedFields.
pub fn lean<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A watch of every `K`, kept in `writer`'s store without what [`lean`] drops.
pub fn lean_reflector<K>(
    api: kube::Api<K>,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl futures::Stream<Item = kube::runtime::watcher::Result<kube::runtime::watcher::Event<K>>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(lean)
        .reflect(writer)
}

/// Changes to Secrets, as metadata only (name, namespace, resourceVersion): enough to know that a referenced Secret
/// changed, without ever listing or holding another Secret's values. The controller then reads the one Secret it
/// needs by name.
pub fn secret_changes(
    client: kube::Client,
) -> impl futures::Stream<
    Item = kube::runtime::watcher::Result<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>,
> + Send
+ 'static {
    use kube::runtime::{WatchStreamExt, watcher};
    // An `Api` of `PartialObjectMeta` asks the API server for metadata only.
    let api = kube::Api::<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>::all(client);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// A controller of every `K` whose cache holds objects without what [`lean`] drops.
pub fn lean_controller<K>(api: kube::Api<K>) -> kube::runtime::Controller<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    kube::runtime::Controller::for_stream(lean_reflector(api, writer).applied_objects(), reader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    #[test]
    fn spread_periods_stay_within_ten_percent_are_stable_per_object_and_differ_between_objects() {
        let period = std::time::Duration::from_secs(300);
        let looks: Vec<_> = (0..1000).map(|i| spread(period, Some(&format!("uid-{i}")))).collect();
        assert!(
            looks
                .iter()
                .all(|d| d.as_secs_f64() >= 270.0 && d.as_secs_f64() <= 330.0)
        );
        assert_eq!(spread(period, Some("uid-7")), spread(period, Some("uid-7")));
        let distinct_seconds: std::collections::BTreeSet<u64> = looks.iter().map(|d| d.as_secs()).collect();
        assert!(
            distinct_seconds.len() > 50,
            "{} distinct seconds",
            distinct_seconds.len()
        );
        let mean = looks.iter().map(|d| d.as_secs_f64()).sum::<f64>() / looks.len() as f64;
        assert!((mean - 300.0).abs() < 5.0, "mean {mean}");
    }

    #[test]
    fn lean_objects_keep_everything_but_managed_fields_and_the_last_applied_copy() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                annotations: Some(
                    [
                        (LAST_APPLIED.to_owned(), "{}".to_owned()),
                        ("keep".to_owned(), "me".to_owned()),
                    ]
                    .into(),
                ),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            data: Some([("k".to_owned(), "v".to_owned())].into()),
            ..Default::default()
        };
        lean(&mut cm);
        assert_eq!(cm.metadata.managed_fields, None);
        assert_eq!(
            cm.metadata.annotations,
            Some([("keep".to_owned(), "me".to_owned())].into())
        );
        assert_eq!(cm.metadata.name.as_deref(), Some("a"));
        assert_eq!(cm.data, Some([("k".to_owned(), "v".to_owned())].into()));
    }
}
