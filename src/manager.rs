//! The manager: waits for the CRDs, serves probes and metrics, holds the leader Lease and runs the controllers.
//!
//! Readiness (`/readyz`): the CRDs are established and, on the replica that holds the Lease, every controller has
//! synced its caches. A replica waiting for the Lease is ready too, so that rolling updates make progress.
//! Liveness (`/healthz`): the process answers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::future::BoxFuture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{api::all_crds, metrics::Metrics};

/// Settings of `appdb-operator run` that the manager itself uses.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Address of the probes and metrics server.
    pub listen: SocketAddr,
    /// Hold a Lease so that only one replica reconciles. Turning it off is safe for correctness (allocation does not
    /// depend on it) but wastes work when several replicas run.
    pub leader_election: bool,
    pub lease_name: String,
    /// Namespace of the Lease; default: the client's namespace (in a pod: its own).
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease; default: `POD_NAME`, else host name and process id.
    pub identity: Option<String>,
    pub lease_duration_seconds: u64,
    pub lease_grace_seconds: u64,
}

/// Why the manager stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("probe and metrics server failed: {0}")]
    Serve(std::io::Error),
    #[error("leader election failed: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader Lease; exiting so that no two replicas reconcile at once")]
    LostLeadership,
    #[error("controller {0} stopped unexpectedly")]
    ControllerExited(&'static str),
}

/// What every controller gets from the manager.
pub struct ControllerContext {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Call [`SyncedHandle::mark_synced`] once the controller's caches are synced.
    pub synced: SyncedHandle,
    /// Fires when the controller must stop (shutdown or lost Lease).
    pub shutdown: CancellationToken,
}

/// A controller the manager runs while this replica leads.
pub trait Controller: Send + 'static {
    /// Short name used in metrics, logs and readiness (`privatenetwork`).
    fn name(&self) -> &'static str;
    /// Runs until `ctx.shutdown` fires.
    fn run(self: Box<Self>, ctx: ControllerContext) -> BoxFuture<'static, ()>;
}

/// Readiness of this replica, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Readiness {
    crds_established: AtomicBool,
    leading: AtomicBool,
    controllers_synced: Mutex<BTreeMap<&'static str, bool>>,
}

impl Readiness {
    /// `Ok` when ready, else the reasons it is not.
    pub fn check(&self) -> Result<(), String> {
        if !self.crds_established.load(Ordering::Acquire) {
            return Err("waiting for the CustomResourceDefinitions to be established".into());
        }
        if !self.leading.load(Ordering::Acquire) {
            return Ok(());
        }
        let synced = self.controllers_synced.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: Vec<&str> = synced.iter().filter(|(_, s)| !**s).map(|(n, _)| *n).collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("caches not yet synced: {}", waiting.join(", ")))
        }
    }

    fn register(&self, name: &'static str) {
        self.controllers_synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, false);
    }
}

/// Lets one controller report that its caches are synced.
#[derive(Clone, Debug)]
pub struct SyncedHandle {
    name: &'static str,
    readiness: Arc<Readiness>,
}

impl SyncedHandle {
    pub fn mark_synced(&self) {
        self.readiness
            .controllers_synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name, true);
        info!(controller = self.name, "caches synced");
    }
}

#[derive(Clone)]
struct ServerState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, String) {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn serve_metrics(State(state): State<ServerState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Polls until every CRD of this operator reports `Established=True`, or `shutdown` fires.
async fn wait_for_crds(client: &Client, shutdown: &CancellationToken) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = all_crds().into_iter().filter_map(|c| c.metadata.name).collect();
    let mut logged_at = None::<tokio::time::Instant>;
    loop {
        let mut missing = Vec::new();
        for name in &names {
            let established = match api.get_opt(name).await {
                Ok(Some(crd)) => crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True"),
                Ok(None) => false,
                Err(e) => {
                    warn!(crd = %name, error = %e, "cannot read CustomResourceDefinition");
                    false
                }
            };
            if !established {
                missing.push(name.as_str());
            }
        }
        if missing.is_empty() {
            info!("all CustomResourceDefinitions are established");
            return true;
        }
        if logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            warn!(missing = %missing.join(", "), "waiting for CustomResourceDefinitions; install them from crds/ or the Helm chart");
            logged_at = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Runs the manager until SIGTERM/SIGINT (`Ok`) or a fatal error.
pub async fn run(
    client: Client,
    config: ManagerConfig,
    metrics: Arc<Metrics>,
    controllers: Vec<Box<dyn Controller>>,
) -> Result<(), ManagerError> {
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            termination_signal().await;
            info!("termination signal received, shutting down");
            shutdown.cancel();
        });
    }
    run_until(client, config, metrics, controllers, shutdown).await
}

/// Like [`run`], but stops when `shutdown` fires instead of on a signal (for embedding and tests).
pub async fn run_until(
    client: Client,
    config: ManagerConfig,
    metrics: Arc<Metrics>,
    controllers: Vec<Box<dyn Controller>>,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    let readiness = Arc::new(Readiness::default());
    for c in &controllers {
        readiness.register(c.name());
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ManagerError::Bind {
            addr: config.listen,
            source,
        })?;
    info!(addr = %listener.local_addr().map_err(ManagerError::Serve)?, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(serve_metrics))
        .with_state(ServerState {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        });
    let server_stop = CancellationToken::new();
    let server = {
        let server_stop = server_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await
        })
    };

    let result = lead_and_reconcile(client, &config, &metrics, &readiness, controllers, &shutdown).await;

    server_stop.cancel();
    // Graceful: open probe and scrape connections finish their request, but none may hold the exit up.
    match finish_within(server, STOP_GRACE).await {
        Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => error!(error = %e, "probe server failed"),
        Some(Err(e)) => error!(error = %e, "probe server task failed"),
        None => warn!(
            seconds = STOP_GRACE.as_secs(),
            "probe server connections still open; closed"
        ),
    }
    info!("stopped");
    result
}

async fn lead_and_reconcile(
    client: Client,
    config: &ManagerConfig,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
    controllers: Vec<Box<dyn Controller>>,
    shutdown: &CancellationToken,
) -> Result<(), ManagerError> {
    if !wait_for_crds(&client, shutdown).await {
        return Ok(());
    }
    readiness.crds_established.store(true, Ordering::Release);

    if !config.leader_election {
        info!("leader election is off: reconciling without a Lease");
        metrics.leader.set(1);
        readiness.leading.store(true, Ordering::Release);
        return run_controllers(client, metrics, readiness, controllers, shutdown, None).await;
    }

    let namespace = config
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = config.identity.clone().unwrap_or_else(default_identity);
    let lease = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(config.lease_duration_seconds)
        .with_grace(config.lease_grace_seconds)
        .build()
        .await?;
    let (mut leading, lease_task) = lease.watch().await;
    info!(lease = %config.lease_name, %namespace, %identity, "waiting for the leader Lease");

    let result = loop {
        if *leading.borrow_and_update() {
            break Ok(true);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(false),
            changed = leading.changed() => if changed.is_err() { break Err(ManagerError::LostLeadership) },
        }
    };
    let result = match result {
        Ok(true) => {
            info!(%identity, "acquired the leader Lease");
            metrics.leader.set(1);
            readiness.leading.store(true, Ordering::Release);
            run_controllers(client, metrics, readiness, controllers, shutdown, Some(&mut leading)).await
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    metrics.leader.set(0);
    readiness.leading.store(false, Ordering::Release);
    // Closing the channel makes the lease task release the Lease so that a successor need not wait for expiry.
    drop(leading);
    match finish_within(lease_task, STOP_GRACE).await {
        Some(Ok(Ok(_))) => info!("released the leader Lease"),
        Some(Ok(Err(e))) => warn!(error = %e, "could not release the leader Lease; it expires by itself"),
        Some(Err(e)) => warn!(error = %e, "lease task failed"),
        None => warn!(
            seconds = STOP_GRACE.as_secs(),
            "the API server did not answer the Lease release in time; it expires by itself"
        ),
    }
    result
}

/// How long each step of stopping may take: running reconciles finishing, the Lease release, the probe server's
/// open connections. Three steps stay well inside a pod's default 30 s termination grace, so the operator exits
/// by itself rather than being killed, whatever the API server does meanwhile.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Waits up to `grace` for every task to end, then aborts the rest. `names` has each task's name by its id;
/// returns the names of the aborted ones.
async fn drain(
    mut tasks: tokio::task::JoinSet<&'static str>,
    mut names: BTreeMap<tokio::task::Id, &'static str>,
    grace: Duration,
) -> Vec<&'static str> {
    let deadline = tokio::time::Instant::now() + grace;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
        names.remove(&done.map(|(id, _)| id).unwrap_or_else(|e| e.id()));
    }
    tasks.abort_all();
    names.into_values().collect()
}

async fn run_controllers(
    client: Client,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
    controllers: Vec<Box<dyn Controller>>,
    shutdown: &CancellationToken,
    mut leading: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> Result<(), ManagerError> {
    let stop = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = BTreeMap::new();
    for controller in controllers {
        let name = controller.name();
        let ctx = ControllerContext {
            client: client.clone(),
            metrics: metrics.clone(),
            synced: SyncedHandle {
                name,
                readiness: readiness.clone(),
            },
            shutdown: stop.clone(),
        };
        info!(controller = name, "starting controller");
        let task = tasks.spawn(async move {
            controller.run(ctx).await;
            name
        });
        names.insert(task.id(), name);
    }
    let lost_lease = async {
        match leading.as_deref_mut() {
            Some(rx) => loop {
                if rx.changed().await.is_err() || !*rx.borrow_and_update() {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(()),
        _ = lost_lease => Err(ManagerError::LostLeadership),
        // A controller stopping on its own is an error, unless it stopped because shutdown began meanwhile.
        Some(done) = tasks.join_next_with_id() => {
            let id = done.as_ref().map(|(id, _)| *id).unwrap_or_else(|e| e.id());
            let name = names.remove(&id).unwrap_or("unknown");
            if shutdown.is_cancelled() { Ok(()) } else { Err(ManagerError::ControllerExited(name)) }
        }
    };
    stop.cancel();
    let abandoned = drain(tasks, names, STOP_GRACE).await;
    if !abandoned.is_empty() {
        warn!(
            controllers = ?abandoned,
            seconds = STOP_GRACE.as_secs(),
            "controllers still reconciling after the grace; stopped where they were (the next leader reconciles again)"
        );
    }
    result
}

/// Waits up to `grace` for a task; one still running then is aborted (`None`), so stopping never hangs on it.
async fn finish_within<T>(
    task: tokio::task::JoinHandle<T>,
    grace: std::time::Duration,
) -> Option<Result<T, tokio::task::JoinError>> {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(finished) => Some(finished),
        Err(_) => {
            abort.abort();
            None
        }
    }
}

/// Every controller `appdb-operator run` starts while it leads.
pub fn controllers(
    config: std::sync::Arc<crate::config::OperatorConfig>,
    metrics: &mut crate::metrics::Metrics,
) -> Result<Vec<Box<dyn Controller>>, crate::ipam::PlanError> {
    Ok(vec![
        Box::new(crate::controllers::private_network::PrivateNetworkController::new(
            config.clone(),
            metrics,
        )?),
        Box::new(crate::controllers::app_database::AppDatabaseController::new(
            config.clone(),
        )),
        Box::new(crate::controllers::database_migration::DatabaseMigrationController::new(config.clone(), metrics)),
        Box::new(crate::controllers::vpn_connection::VpnConnectionController::new(
            config, metrics,
        )),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_aborts_what_outlives_the_grace_and_names_it() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = BTreeMap::new();
        let finished = tasks.spawn(async { "finished" });
        names.insert(finished.id(), "finished");
        let stuck = tasks.spawn(async {
            std::future::pending::<()>().await;
            "stuck"
        });
        names.insert(stuck.id(), "stuck");
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let holds = tasks.spawn(async move {
            // Dropped when the task is aborted: the receiver then sees the channel closed.
            let _tx = dropped_tx;
            std::future::pending::<()>().await;
            "holds"
        });
        names.insert(holds.id(), "holds");
        let mut abandoned = drain(tasks, names, Duration::from_millis(50)).await;
        abandoned.sort();
        assert_eq!(abandoned, ["holds", "stuck"]);
        assert!(
            dropped_rx.await.is_err(),
            "an abandoned task is aborted, not left running"
        );
    }

    #[tokio::test]
    async fn stopping_waits_for_tasks_that_end_in_time() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = BTreeMap::new();
        for name in ["a", "b"] {
            let task = tasks.spawn(async move {
                tokio::task::yield_now().await;
                name
            });
            names.insert(task.id(), name);
        }
        assert!(drain(tasks, names, Duration::from_secs(60)).await.is_empty());
    }
}
