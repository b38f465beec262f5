//! The PrivateNetwork controller: dereference (the network's databases and namespace peers) → validate (the chosen
//! range) → allocate (claim a NetworkAllocation) → build (status, isolation policies) → apply (SSA) → status.

pub mod allocate;
mod dereference;
pub mod status;
pub mod validate;

use std::{sync::Arc, time::Duration};

use crate::controllers::events::EventType;
use k8s_openapi::{api::networking::v1::NetworkPolicy, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use self::{
    allocate::{AllocationError, AllocationIndex, PoolMetrics, ensure_allocation, release},
    dereference::{databases_on, in_migration},
    status::{Problem, build_status},
};
use crate::{
    api::{AppDatabase, NetworkAllocation, PrivateNetwork, conditions::reason},
    config::OperatorConfig,
    controllers::apply::{apply_if_changed, apply_status},
    controllers::runtime::{Kind, with_finalizer},
    ipam::BlockError,
    manager::ControllerContext,
    metrics::Metrics,
    names::{FINALIZER_RELEASE_RANGE, LABEL_NETWORK_NAME, LABEL_NETWORK_NAMESPACE},
    netpol::customer_policies,
};

const NAME: &str = "privatenetwork";

/// Why a reconcile failed: one of the steps every kind has, or one of a network's own.
pub type Error = crate::controllers::error::ReconcileError<NetworkError>;

/// The steps only a network has: claiming and releasing its range, its isolation policies, and waiting for the
/// databases on it to go before it goes.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("claiming a range failed: {0}")]
    Allocate(#[source] kube::Error),
    #[error("releasing the range failed: {0}")]
    Release(#[source] kube::Error),
    #[error("reading the isolation NetworkPolicies failed: {0}")]
    ReadPolicies(#[source] kube::Error),
    #[error("applying the isolation NetworkPolicies failed: {0}")]
    ApplyPolicies(#[source] crate::controllers::apply::PatchError),
    #[error("AppDatabase {0} still lives on this network; delete it or migrate it to another network first")]
    InUse(String),
}

impl crate::controllers::error::KindError for NetworkError {
    fn metric_label(&self) -> &'static str {
        match self {
            NetworkError::Allocate(_) => "allocate",
            NetworkError::Release(_) => "release",
            NetworkError::ReadPolicies(_) | NetworkError::ApplyPolicies(_) => "apply_policies",
            NetworkError::InUse(_) => "in_use",
        }
    }

    fn retry_after(&self) -> Duration {
        Duration::from_secs(match self {
            NetworkError::InUse(_) => 30,
            // A NetworkPolicy of someone else's holds an isolation policy's name: a person must remove it.
            NetworkError::ApplyPolicies(crate::controllers::apply::PatchError::NameInUse(_)) => 30,
            _ => 5,
        })
    }
}

/// The PrivateNetwork controller as the manager runs it.
pub struct PrivateNetworkController {
    config: Arc<OperatorConfig>,
    index: AllocationIndex,
    pool_metrics: PoolMetrics,
}

impl PrivateNetworkController {
    pub fn new(config: Arc<OperatorConfig>, metrics: &mut Metrics) -> Result<Self, crate::ipam::PlanError> {
        let index = AllocationIndex::new(config.pool.clone())?;
        let pool_metrics = PoolMetrics::default();
        pool_metrics.register(metrics.registry_mut());
        Ok(Self {
            config,
            index,
            pool_metrics,
        })
    }
}

/// What only this kind's reconcile keeps: its caches and metrics.
struct KindState {
    index: AllocationIndex,
    networks: Store<PrivateNetwork>,
    databases: Store<AppDatabase>,
}

type Context = crate::controllers::runtime::Context<KindState>;

impl Kind for PrivateNetworkController {
    const NAME: &'static str = NAME;

    async fn serve(self, ctx: ControllerContext) {
        let client = ctx.client.clone();
        let networks_api: Api<PrivateNetwork> = Api::all(client.clone());
        let managed = crate::controllers::runtime::made_by_the_operator();

        // The store of AppDatabases answers "does a database live on this network?"; its watch also triggers.
        let (databases, db_writer) = reflector::store();
        let db_stream = crate::controllers::runtime::lean_reflector(Api::<AppDatabase>::all(client.clone()), db_writer)
            .touched_objects();
        let controller = crate::controllers::runtime::lean_controller(networks_api)
            .owns(Api::<NetworkPolicy>::all(client.clone()), managed)
            // A migration starting or ending changes both networks' state.
            .watches(
                Api::<crate::api::DatabaseMigration>::all(client.clone()),
                watcher::Config::default(),
                |m| {
                    let ns = m.namespace().unwrap_or_default();
                    let mut refs = vec![ObjectRef::new(&m.spec.target_network).within(&ns)];
                    refs.extend(
                        m.status
                            .as_ref()
                            .and_then(|s| s.source_network.as_deref())
                            .map(|n| ObjectRef::new(n).within(&ns)),
                    );
                    refs
                },
            )
            .watches(
                Api::<NetworkAllocation>::all(client.clone()),
                watcher::Config::default(),
                |a| {
                    let labels = a.labels();
                    match (labels.get(LABEL_NETWORK_NAMESPACE), labels.get(LABEL_NETWORK_NAME)) {
                        (Some(ns), Some(name)) => Some(ObjectRef::new(name).within(ns)),
                        _ => None,
                    }
                },
            )
            // Database changes (created on, or moved to, a network) change the network's type.
            .watches_stream(db_stream, |db| {
                let ns = db.namespace().unwrap_or_default();
                let mut refs = vec![ObjectRef::new(&db.spec.network).within(&ns)];
                if let Some(current) = db.status.as_ref().and_then(|s| s.network.as_deref())
                    && current != db.spec.network
                {
                    refs.push(ObjectRef::new(current).within(&ns));
                }
                refs
            });
        let networks = controller.store();

        tokio::spawn(
            self.index
                .clone()
                .run(client.clone(), self.pool_metrics.clone(), ctx.shutdown.clone()),
        );
        {
            let (networks, databases, index, synced) = (
                networks.clone(),
                databases.clone(),
                self.index.clone(),
                ctx.synced.clone(),
            );
            tokio::spawn(async move {
                crate::controllers::runtime::wait_until_ready(&networks).await;
                crate::controllers::runtime::wait_until_ready(&databases).await;
                index.wait_until_ready().await;
                synced.mark_synced();
            });
        }
        spawn_garbage_collection(client.clone(), self.config.clone(), ctx.shutdown.clone());
        let kind = KindState {
            index: self.index.clone(),
            networks,
            databases,
        };
        crate::controllers::runtime::serve(NAME, controller, ctx, self.config.clone(), kind, reconcile).await;
    }
}

fn spawn_garbage_collection(
    client: Client,
    config: Arc<OperatorConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(config.allocation_gc_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match allocate::collect_garbage(&client, config.release_cooldown, config.allocation_gc_grace).await {
                Ok(0) => {}
                Ok(n) => info!(changed = n, "allocation garbage collection"),
                Err(e) => {
                    warn!(error = %e, "allocation garbage collection failed; next pass retries")
                }
            }
        }
    });
}

/// Owners of the namespace's isolation policies: every live PrivateNetwork of the namespace.
fn policy_owners(ctx: &Context, namespace: &str) -> Vec<OwnerReference> {
    let mut owners: Vec<OwnerReference> = ctx
        .kind
        .networks
        .state()
        .iter()
        .filter(|n| n.namespace().as_deref() == Some(namespace) && n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| n.object_ref(&()).uid.map(|uid| (n.name_any(), uid)))
        .map(|(name, uid)| OwnerReference {
            api_version: PrivateNetwork::api_version(&()).into_owned(),
            kind: PrivateNetwork::kind(&()).into_owned(),
            name,
            uid,
            controller: None,
            block_owner_deletion: None,
        })
        .collect();
    owners.sort_by(|a, b| a.name.cmp(&b.name));
    owners
}

fn problem_of(e: AllocationError) -> Result<Problem, kube::Error> {
    Ok(match e {
        AllocationError::Kube(e) => return Err(e),
        AllocationError::Block(b @ BlockError::OutsidePool { .. }) => Problem::Stalled {
            reason: reason::OUTSIDE_POOL,
            message: b.to_string(),
        },
        AllocationError::Block(b @ BlockError::Reserved { .. }) => Problem::Stalled {
            reason: reason::RESERVED,
            message: b.to_string(),
        },
        AllocationError::Block(b) => Problem::Stalled {
            reason: reason::INVALID_SPEC,
            message: b.to_string(),
        },
        e @ (AllocationError::Conflict { .. } | AllocationError::CoolingDown { .. }) => Problem::Stalled {
            reason: reason::CIDR_CONFLICT,
            message: e.to_string(),
        },
        e @ AllocationError::PoolExhausted { .. } => Problem::Stalled {
            reason: reason::POOL_EXHAUSTED,
            message: e.to_string(),
        },
        e @ AllocationError::Contended => Problem::InProgress {
            reason: reason::ALLOCATING,
            message: e.to_string(),
        },
    })
}

async fn reconcile(network: Arc<PrivateNetwork>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        &ctx.client,
        FINALIZER_RELEASE_RANGE,
        network,
        |o| steps(o, &ctx),
        |o| cleanup(o, &ctx),
    )
    .await
}

/// The reconcile: validate and claim the range, apply the namespace's policies, observe what the network hosts,
/// status.
async fn steps(network: Arc<PrivateNetwork>, ctx: &Context) -> Result<Action, Error> {
    let namespace = network.namespace().unwrap_or_default();
    let allocation = claim_range(&network, ctx).await?;
    if allocation.is_ok() {
        apply_policies(ctx, &namespace).await?;
    }
    let hosts_database = !databases_on(ctx, &network).is_empty();
    let migrating = in_migration(ctx, &network).await?;
    write_status(ctx, &network, &allocation, hosts_database, migrating).await?;
    Ok(requeue_after(&network, &allocation))
}

/// Validates the requested range and holds it (or the next free one) with a NetworkAllocation. A range the pool
/// cannot give is a [`Problem`] for the status.
async fn claim_range(network: &PrivateNetwork, ctx: &Context) -> Result<Result<ipnet::Ipv4Net, Problem>, Error> {
    let chosen = match validate::requested_block(network) {
        Ok(chosen) => chosen,
        Err(e) => {
            return Ok(Err(Problem::Stalled {
                reason: reason::INVALID_SPEC,
                message: e.to_string(),
            }));
        }
    };
    ctx.kind.index.wait_until_ready().await;
    // A network that already had a range keeps it: when its lock (the NetworkAllocation) was deleted, the same range
    // is claimed again, never the next free one. Readdressing a network readdresses its databases and VPN
    // selectors; that takes a migration, not a deleted object.
    let recorded = network
        .status
        .as_ref()
        .and_then(|s| s.cidr.as_deref())
        .and_then(|c| crate::ipam::parse_block(c).ok());
    let wanted = chosen.or(recorded);
    match ensure_allocation(
        &ctx.client,
        &ctx.kind.index,
        network,
        wanted,
        ctx.config.release_cooldown,
    )
    .await
    {
        Ok(block) => Ok(Ok(block)),
        Err(AllocationError::Conflict { block, .. } | AllocationError::CoolingDown { block, .. })
            if chosen.is_none() =>
        {
            Ok(Err(Problem::Stalled {
                reason: reason::ALLOCATION_LOST,
                message: format!(
                    "this network's range {block} lost its NetworkAllocation and is now held elsewhere; it is not readdressed automatically: migrate its databases to a new network, or delete and recreate it"
                ),
            }))
        }
        Err(e) => Ok(Err(problem_of(e).map_err(|e| Error::Own(NetworkError::Allocate(e)))?)),
    }
}

/// The namespace's customer NetworkPolicies (shared by its networks), applied when they differ.
async fn apply_policies(ctx: &Context, namespace: &str) -> Result<(), Error> {
    let owners = policy_owners(ctx, namespace);
    let policies_api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    for policy in customer_policies(namespace, &owners, &ctx.config.isolation) {
        let live = policies_api
            .get_opt(&policy.name_any())
            .await
            .map_err(|e| Error::Own(NetworkError::ReadPolicies(e)))?;
        apply_if_changed(&policies_api, &policy, live.as_ref())
            .await
            .map_err(|e| Error::Own(NetworkError::ApplyPolicies(e)))?;
    }
    Ok(())
}

/// Writes the status when it changed, with the Events of a range gained or lost and of a migration begun or ended.
async fn write_status(
    ctx: &Context,
    network: &PrivateNetwork,
    allocation: &Result<ipnet::Ipv4Net, Problem>,
    hosts_database: bool,
    migrating: bool,
) -> Result<(), Error> {
    let new_status = build_status(network, allocation, hosts_database, migrating, jiff::Timestamp::now());
    if network.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    apply_status(&ctx.client, network, &new_status)
        .await
        .map_err(Error::Status)?;
    publish_transition(ctx, network, allocation).await;
    let was_migrating =
        network.status.as_ref().and_then(|s| s.common.state.as_deref()) == Some(status::state::MIGRATION_IN_PROGRESS);
    if migrating != was_migrating {
        let (reason, note) = if migrating {
            ("MigrationInProgress", "a database is moving to or from this network")
        } else {
            ("MigrationFinished", "no migration involves this network any more")
        };
        let object = network.object_ref(&());
        crate::controllers::runtime::publish(
            &ctx.recorder,
            &object,
            EventType::Normal,
            reason,
            note.into(),
            "Migrate",
        )
        .await;
    }
    Ok(())
}

/// When to look again: rarely when the range is held; conflicts and exhaustion can clear when other networks go,
/// so now and then, never in a storm; soon while the range is being claimed.
fn requeue_after(network: &PrivateNetwork, allocation: &Result<ipnet::Ipv4Net, Problem>) -> Action {
    match allocation {
        Ok(_) => Action::requeue(crate::controllers::runtime::spread(
            Duration::from_secs(600),
            network.uid().as_deref(),
        )),
        Err(Problem::Stalled { .. }) => Action::requeue(Duration::from_secs(60)),
        Err(Problem::InProgress { .. }) => Action::requeue(Duration::from_secs(2)),
    }
}

async fn publish_transition(ctx: &Context, network: &PrivateNetwork, allocation: &Result<ipnet::Ipv4Net, Problem>) {
    let was_ready = network
        .status
        .as_ref()
        .is_some_and(|s| crate::api::conditions::is_true(&s.common.conditions, crate::api::conditions::READY));
    let (type_, reason, note) = match allocation {
        Ok(block) if !was_ready => (EventType::Normal, reason::ALLOCATED, format!("Allocated {block}")),
        Err(Problem::Stalled { reason, message }) => (EventType::Warning, *reason, message.clone()),
        _ => return,
    };
    crate::controllers::runtime::publish(&ctx.recorder, &network.object_ref(&()), type_, reason, note, "Allocate")
        .await;
}

async fn cleanup(network: Arc<PrivateNetwork>, ctx: &Context) -> Result<Action, Error> {
    let on_it = databases_on(ctx, &network);
    if let Some(first) = on_it.first() {
        // Deleting a network under a live database would cut it off: hold the finalizer until it has moved.
        let note = format!(
            "AppDatabase {first} still lives on this network; the network is deleted once it has moved or gone"
        );
        crate::controllers::runtime::publish(
            &ctx.recorder,
            &network.object_ref(&()),
            EventType::Warning,
            "InUse",
            note,
            "Release",
        )
        .await;
        return Err(Error::Own(NetworkError::InUse(first.clone())));
    }
    release(&ctx.client, &network, ctx.config.release_cooldown)
        .await
        .map_err(|e| Error::Own(NetworkError::Release(e)))?;
    Ok(Action::await_change())
}
