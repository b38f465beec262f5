//! The controllers, one folder per kind: dereference → validate → build → apply → status.

pub mod app_database;
pub mod apply;
pub mod database_migration;
pub mod private_network;
pub mod rbac;
pub mod vpn_connection;

use std::sync::Arc;

use crate::{config::OperatorConfig, manager::Controller, metrics::Metrics};

/// Every controller `appdb-operator run` starts while it leads.
pub fn all(
    config: Arc<OperatorConfig>,
    metrics: &mut Metrics,
) -> Result<Vec<Box<dyn Controller>>, crate::ipam::PlanError> {
    Ok(vec![
        Box::new(private_network::PrivateNetworkController::new(config.clone(), metrics)?),
        Box::new(app_database::AppDatabaseController::new(config.clone())),
        Box::new(database_migration::DatabaseMigrationController::new(
            config.clone(),
            metrics,
        )),
        Box::new(vpn_connection::VpnConnectionController::new(config, metrics)),
    ])
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
    recorder: &kube::runtime::events::Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
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

/// The Event recorder of the operator (reporting controller `appdb-operator`, instance: the pod's name).
pub fn recorder(client: kube::Client) -> kube::runtime::events::Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: crate::names::FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    kube::runtime::events::Recorder::new(client, reporter)
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
