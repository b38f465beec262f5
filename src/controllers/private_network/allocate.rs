//! Claiming and releasing /26 ranges through NetworkAllocation objects.
//!
//! Correctness rests on the API server alone: an allocation's name is its range, so two claimants of one range get
//! one success and one 409, whatever their caches say and however many operator processes run. The in-memory
//! [`AddressPlan`] only makes the search fast; a stale plan costs a retry, never an overlap.
//! A network that ends up with two allocations (two processes reconciling it at once) keeps the lowest range and
//! deletes the others, so every process converges on the same one.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use tracing::{info, warn};

use crate::{
    api::{
        NetworkAllocation, NetworkAllocationSpec, PrivateNetwork,
        network_allocation::{NetworkReference, allocation_name},
    },
    ipam::{AddressPlan, BlockError, PoolConfig, parse_block},
    names::{
        ANNOTATION_RELEASED_AT, LABEL_MANAGED_BY, LABEL_NETWORK_NAME, LABEL_NETWORK_NAMESPACE, LABEL_NETWORK_UID,
        MANAGED_BY,
    },
};

/// How many taken candidates automatic assignment skips before it gives up for this reconcile.
const MAX_CANDIDATES: usize = 64;

/// Why a network has no range (yet).
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    #[error("{0}")]
    Block(#[from] BlockError),
    /// `own_holder` names the holder only when it is in the claimant's own namespace: another customer's namespace
    /// and object names are theirs, and this message reaches the claimant's status and Events.
    #[error("{block} is already allocated to {}", own_holder.as_ref().map_or_else(|| "another namespace's network; choose another range".to_owned(), |n| format!("PrivateNetwork {n} in this namespace")))]
    Conflict { block: Ipv4Net, own_holder: Option<String> },
    #[error("{block} was released on {released_at} and is cooling down until {until}; choose another range")]
    CoolingDown {
        block: Ipv4Net,
        released_at: String,
        until: String,
    },
    #[error("no free /26 is left in the pool ({pool})")]
    PoolExhausted { pool: String },
    #[error("every candidate range was taken by others while claiming; will retry")]
    Contended,
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// The address plan kept current from a watch on NetworkAllocations.
#[derive(Clone)]
pub struct AllocationIndex {
    plan: Arc<RwLock<AddressPlan>>,
    pool: PoolConfig,
    ready: Arc<tokio::sync::Notify>,
    is_ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Pool usage gauges, per pool range.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    pub total: Family<Vec<(String, String)>, Gauge>,
    pub used: Family<Vec<(String, String)>, Gauge>,
    pub free: Family<Vec<(String, String)>, Gauge>,
    pub reserved: Family<Vec<(String, String)>, Gauge>,
}

impl PoolMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        // A gauge: Prometheus reserves `_total` for counters. The old name is still exported for one release
        // (deprecated; see docs/networking.md), with the same values.
        registry.register(
            "pool_blocks_capacity",
            "/26 blocks in each pool range",
            self.total.clone(),
        );
        registry.register(
            "pool_blocks_total",
            "Deprecated: use appdb_pool_blocks_capacity (same values); removed in the next release",
            self.total.clone(),
        );
        registry.register(
            "pool_blocks_used",
            "/26 blocks allocated (or cooling down) in each pool range",
            self.used.clone(),
        );
        registry.register(
            "pool_blocks_free",
            "/26 blocks free in each pool range",
            self.free.clone(),
        );
        registry.register(
            "pool_blocks_reserved",
            "/26 blocks reserved for the platform in each pool range",
            self.reserved.clone(),
        );
    }

    fn update(&self, plan: &AddressPlan) {
        for u in plan.usage() {
            let labels = vec![("range".to_owned(), u.range.to_string())];
            self.total.get_or_create(&labels).set(i64::from(u.total));
            self.used.get_or_create(&labels).set(i64::from(u.used));
            self.free.get_or_create(&labels).set(i64::from(u.free));
            self.reserved.get_or_create(&labels).set(i64::from(u.reserved));
        }
    }
}

impl AllocationIndex {
    pub fn new(pool: PoolConfig) -> Result<Self, crate::ipam::PlanError> {
        Ok(AllocationIndex {
            plan: Arc::new(RwLock::new(AddressPlan::new(&pool)?)),
            pool,
            ready: Arc::new(tokio::sync::Notify::new()),
            is_ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// A copy of the current plan (cheap: one bit per block).
    pub fn snapshot(&self) -> AddressPlan {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn wait_until_ready(&self) {
        while !self.is_ready.load(std::sync::atomic::Ordering::Acquire) {
            let notified = self.ready.notified();
            if self.is_ready.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Follows NetworkAllocations until the stream ends (shutdown), keeping the plan and the gauges current.
    pub async fn run(self, client: Client, metrics: PoolMetrics, shutdown: tokio_util::sync::CancellationToken) {
        let api: Api<NetworkAllocation> = Api::all(client);
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut rebuilding: Option<AddressPlan> = None;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => e,
            };
            let Some(event) = event else { return };
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "NetworkAllocation watch failed; retrying");
                    continue;
                }
            };
            let mut plan = self.plan.write().unwrap_or_else(|e| e.into_inner());
            match event {
                watcher::Event::Init => {
                    rebuilding = AddressPlan::new(&self.pool).ok();
                }
                watcher::Event::InitApply(a) => {
                    if let (Some(p), Ok(block)) = (rebuilding.as_mut(), parse_block(&a.spec.cidr)) {
                        p.mark_taken(block);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(p) = rebuilding.take() {
                        *plan = p;
                    }
                    metrics.update(&plan);
                    self.is_ready.store(true, std::sync::atomic::Ordering::Release);
                    self.ready.notify_waiters();
                }
                watcher::Event::Apply(a) => {
                    if let Ok(block) = parse_block(&a.spec.cidr) {
                        plan.mark_taken(block);
                    }
                    metrics.update(&plan);
                }
                watcher::Event::Delete(a) => {
                    if let Ok(block) = parse_block(&a.spec.cidr) {
                        plan.mark_free(block);
                    }
                    metrics.update(&plan);
                }
            }
        }
    }

    pub fn pool(&self) -> &PoolConfig {
        &self.pool
    }
}

fn holder_labels(network: &PrivateNetwork) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (
            LABEL_NETWORK_NAMESPACE.to_owned(),
            network.namespace().unwrap_or_default(),
        ),
        (LABEL_NETWORK_NAME.to_owned(), network.name_any()),
        (LABEL_NETWORK_UID.to_owned(), network.uid().unwrap_or_default()),
    ])
}

fn desired_allocation(network: &PrivateNetwork, block: Ipv4Net) -> NetworkAllocation {
    NetworkAllocation {
        metadata: ObjectMeta {
            name: Some(allocation_name(&block)),
            labels: Some(holder_labels(network)),
            ..Default::default()
        },
        spec: NetworkAllocationSpec {
            cidr: block.to_string(),
            network: NetworkReference {
                namespace: network.namespace().unwrap_or_default(),
                name: network.name_any(),
                uid: network.uid().unwrap_or_default(),
            },
        },
    }
}

fn released_at(a: &NetworkAllocation) -> Option<jiff::Timestamp> {
    a.annotations().get(ANNOTATION_RELEASED_AT).and_then(|t| t.parse().ok())
}

/// The allocations held by the network with this UID, read from the API server (never from a cache), lowest first.
async fn held_by(api: &Api<NetworkAllocation>, uid: &str) -> Result<Vec<NetworkAllocation>, kube::Error> {
    let mut held: Vec<NetworkAllocation> = api
        .list(&ListParams::default().labels(&format!("{LABEL_NETWORK_UID}={uid}")))
        .await?
        .items
        .into_iter()
        .filter(|a| a.spec.network.uid == uid && released_at(a).is_none())
        .collect();
    held.sort_by_key(|a| {
        parse_block(&a.spec.cidr)
            .map(|b| u32::from(b.network()))
            .unwrap_or(u32::MAX)
    });
    Ok(held)
}

/// Keeps the lowest of the network's allocations and deletes the others.
async fn settle(api: &Api<NetworkAllocation>, uid: &str) -> Result<Option<Ipv4Net>, kube::Error> {
    let held = held_by(api, uid).await?;
    let Some((keep, extra)) = held.split_first() else {
        return Ok(None);
    };
    for a in extra {
        info!(allocation = %a.name_any(), kept = %keep.name_any(), "network holds two ranges after a race; releasing the higher one");
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: a.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&a.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(parse_block(&keep.spec.cidr).ok())
}

/// Outcome of one attempt to create the allocation for `block`.
enum Claim {
    Won,
    Lost(Box<NetworkAllocation>),
}

async fn claim(
    api: &Api<NetworkAllocation>,
    network: &PrivateNetwork,
    block: Ipv4Net,
) -> Result<Claim, AllocationError> {
    match api
        .create(&PostParams::default(), &desired_allocation(network, block))
        .await
    {
        Ok(_) => Ok(Claim::Won),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            match api.get_opt(&allocation_name(&block)).await? {
                Some(existing) => Ok(Claim::Lost(Box::new(existing))),
                // Deleted between our create and get: try once more.
                None => match api
                    .create(&PostParams::default(), &desired_allocation(network, block))
                    .await
                {
                    Ok(_) => Ok(Claim::Won),
                    Err(kube::Error::Api(s)) if s.code == 409 => Err(AllocationError::Contended),
                    Err(e) => Err(e.into()),
                },
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Ensures the network holds exactly one range and returns it.
pub async fn ensure_allocation(
    client: &Client,
    index: &AllocationIndex,
    network: &PrivateNetwork,
    chosen: Option<Ipv4Net>,
    cooldown: std::time::Duration,
) -> Result<Ipv4Net, AllocationError> {
    let api: Api<NetworkAllocation> = Api::all(client.clone());
    let uid = network.uid().unwrap_or_default();
    // Idempotent across crashes: a range claimed before a crash is found again by the network's UID.
    if let Some(block) = settle(&api, &uid).await? {
        return Ok(block);
    }
    let plan = index.snapshot();
    if let Some(block) = chosen {
        plan.check(block)?;
        match claim(&api, network, block).await? {
            Claim::Won => {}
            Claim::Lost(existing) if existing.spec.network.uid == uid => {}
            Claim::Lost(existing) => {
                if let Some(at) = released_at(&existing) {
                    let until = at + jiff::SignedDuration::try_from(cooldown).unwrap_or(jiff::SignedDuration::ZERO);
                    // The same customer may take its own released range back at once.
                    if existing.spec.network.namespace == network.namespace().unwrap_or_default() {
                        let dp = DeleteParams {
                            preconditions: Some(Preconditions {
                                uid: existing.uid(),
                                resource_version: None,
                            }),
                            ..Default::default()
                        };
                        match api.delete(&existing.name_any(), &dp).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                            Err(e) => return Err(e.into()),
                        }
                        if let Claim::Lost(_) = claim(&api, network, block).await? {
                            return Err(AllocationError::Contended);
                        }
                    } else {
                        return Err(AllocationError::CoolingDown {
                            block,
                            released_at: at.to_string(),
                            until: until.to_string(),
                        });
                    }
                } else {
                    let own = existing.spec.network.namespace == network.namespace().unwrap_or_default();
                    return Err(AllocationError::Conflict {
                        block,
                        own_holder: own.then(|| existing.spec.network.name.clone()),
                    });
                }
            }
        }
    } else {
        let mut plan = plan;
        let mut won = false;
        for _ in 0..MAX_CANDIDATES {
            let Some(candidate) = plan.next_free() else {
                let pool = index
                    .pool()
                    .ranges
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(AllocationError::PoolExhausted { pool });
            };
            match claim(&api, network, candidate).await? {
                Claim::Won => {
                    won = true;
                    break;
                }
                Claim::Lost(existing) if existing.spec.network.uid == uid => {
                    won = true;
                    break;
                }
                Claim::Lost(_) => {
                    plan.mark_taken(candidate);
                }
            }
        }
        if !won {
            return Err(AllocationError::Contended);
        }
    }
    settle(&api, &uid).await?.ok_or(AllocationError::Contended)
}

/// Releases the network's ranges: deleted at once without a cool-down, else marked released so that the name stays
/// locked until the garbage collection deletes it after the cool-down.
pub async fn release(
    client: &Client,
    network: &PrivateNetwork,
    cooldown: std::time::Duration,
) -> Result<(), kube::Error> {
    let api: Api<NetworkAllocation> = Api::all(client.clone());
    let uid = network.uid().unwrap_or_default();
    for a in held_by(&api, &uid).await? {
        if cooldown.is_zero() {
            match api.delete(&a.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        } else {
            mark_released(&api, &a).await?;
        }
        info!(range = %a.spec.cidr, "released range");
    }
    Ok(())
}

async fn mark_released(api: &Api<NetworkAllocation>, a: &NetworkAllocation) -> Result<(), kube::Error> {
    let patch =
        serde_json::json!({"metadata": {"annotations": {ANNOTATION_RELEASED_AT: jiff::Timestamp::now().to_string()}}});
    match api
        .patch(&a.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// One garbage-collection pass: deletes released allocations whose cool-down is over, and releases allocations
/// whose network no longer exists (after the grace period). Returns how many objects it changed.
pub async fn collect_garbage(
    client: &Client,
    cooldown: std::time::Duration,
    grace: std::time::Duration,
) -> Result<usize, kube::Error> {
    let api: Api<NetworkAllocation> = Api::all(client.clone());
    let now = jiff::Timestamp::now();
    let to_signed = |d: std::time::Duration| jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    let mut changed = 0;
    for a in api.list(&ListParams::default()).await?.items {
        if let Some(at) = released_at(&a) {
            if at + to_signed(cooldown) <= now {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: a.uid(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&a.name_any(), &dp).await {
                    Ok(_) => changed += 1,
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            continue;
        }
        let created = a.creation_timestamp().map(|t| t.0).unwrap_or(now);
        if created + to_signed(grace) > now {
            continue;
        }
        let networks: Api<PrivateNetwork> = Api::namespaced(client.clone(), &a.spec.network.namespace);
        let holder_alive = networks
            .get_opt(&a.spec.network.name)
            .await?
            .is_some_and(|n| n.uid().as_deref() == Some(a.spec.network.uid.as_str()));
        if !holder_alive {
            warn!(
                namespace = %a.spec.network.namespace,
                name = %a.spec.network.name,
                range = %a.spec.cidr,
                "allocation outlived its network; releasing it"
            );
            if cooldown.is_zero() {
                match api.delete(&a.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            } else {
                mark_released(&api, &a).await?;
            }
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_names_the_holder_only_inside_the_own_namespace() {
        let block: Ipv4Net = "10.20.30.64/26".parse().unwrap();
        let theirs = AllocationError::Conflict {
            block,
            own_holder: None,
        }
        .to_string();
        assert_eq!(
            theirs,
            "10.20.30.64/26 is already allocated to another namespace's network; choose another range"
        );
        let ours = AllocationError::Conflict {
            block,
            own_holder: Some("staging".into()),
        }
        .to_string();
        assert_eq!(
            ours,
            "10.20.30.64/26 is already allocated to PrivateNetwork staging in this namespace"
        );
    }
}
