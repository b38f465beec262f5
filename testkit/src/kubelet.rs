//! What the rest of a cluster does for the operator's objects, for tests and benchmarks that have no nodes: a
//! kubelet whose pods start at once (StatefulSets report ready, Deployments finish their rollout) and a cloud load
//! balancer controller that hands each LoadBalancer Service its own outside address.
//!
//! The decisions are pure functions (`*_status`), so a test can use them one object at a time; [`Kubelet`] applies
//! them to a whole API server, once ([`Kubelet::play_once`]) or continuously from watches ([`Kubelet::run`]).

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Service,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The status a StatefulSet's kubelet reports once its pod runs; None when it already says so.
pub fn statefulset_status(sts: &StatefulSet) -> Option<Value> {
    let ready = sts.status.as_ref().and_then(|s| s.ready_replicas);
    ready
        .is_none()
        .then(|| json!({"status": {"replicas": 1, "readyReplicas": 1}}))
}

/// The status of a Deployment whose current generation has rolled out; None when it already has. (The operator
/// rolls one tunnel's gateway at a time and waits for this.)
pub fn deployment_status(deployment: &Deployment) -> Option<Value> {
    let generation = deployment.metadata.generation;
    let observed = deployment.status.as_ref().and_then(|s| s.observed_generation);
    (observed != generation).then(|| {
        json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1}})
    })
}

/// The status a load balancer controller gives a LoadBalancer Service without an address yet; None otherwise.
pub fn load_balancer_status(service: &Service, address: impl FnOnce() -> Ipv4Addr) -> Option<Value> {
    let is_load_balancer = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let has_address = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty());
    (is_load_balancer && !has_address)
        .then(|| json!({"status": {"loadBalancer": {"ingress": [{"ip": address().to_string()}]}}}))
}

/// Plays kubelet and load balancer controller against one API server. Outside addresses come from 198.18.0.0/15
/// (RFC 2544, benchmarking), one per Service, never reused.
#[derive(Clone)]
pub struct Kubelet {
    client: Client,
    handed_out: Arc<AtomicU32>,
}

impl Kubelet {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            handed_out: Arc::default(),
        }
    }

    fn next_address(&self) -> Ipv4Addr {
        let n = self.handed_out.fetch_add(1, Ordering::Relaxed) + 1;
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n % (1 << 17)))
    }

    /// One pass over every StatefulSet, Deployment and Service; returns how many statuses it wrote.
    pub async fn play_once(&self) -> Result<usize, kube::Error> {
        let mut written = 0;
        for sts in Api::<StatefulSet>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            written += self.write(&sts, statefulset_status(&sts)).await?;
        }
        for deployment in Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            written += self.write(&deployment, deployment_status(&deployment)).await?;
        }
        for service in Api::<Service>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            written += self
                .write(&service, load_balancer_status(&service, || self.next_address()))
                .await?;
        }
        Ok(written)
    }

    /// Follows the three kinds by watch and writes each status as soon as it is due, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let this = &self;
        let statefulsets = watcher(Api::<StatefulSet>::all(self.client.clone()), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .and_then(|sts| async move {
                this.write(&sts, statefulset_status(&sts))
                    .await
                    .map_err(into_watch_error)
            });
        let deployments = watcher(Api::<Deployment>::all(self.client.clone()), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .and_then(|d| async move { this.write(&d, deployment_status(&d)).await.map_err(into_watch_error) });
        let services = watcher(Api::<Service>::all(self.client.clone()), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .and_then(|svc| async move {
                this.write(&svc, load_balancer_status(&svc, || this.next_address()))
                    .await
                    .map_err(into_watch_error)
            });
        let all = futures::stream::select(
            futures::stream::select(statefulsets.boxed(), deployments.boxed()),
            services.boxed(),
        );
        // A deleted object is not an error (`write`); anything else is said, since that object's status stays unplayed
        // until its next event, and a run waiting on it would otherwise time out without a clue.
        let played = all.for_each(|result| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "kubelet: a watch or a status write failed");
            }
            futures::future::ready(())
        });
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = played => {}
        }
    }

    async fn write<K>(&self, object: &K, status: Option<Value>) -> Result<usize, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let Some(status) = status else {
            return Ok(0);
        };
        let api: Api<K> = Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        match api
            .patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => Ok(1),
            // Deleted meanwhile: nothing left to play.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(0),
            Err(e) => Err(e),
        }
    }
}

fn into_watch_error(e: kube::Error) -> watcher::Error {
    watcher::Error::WatchFailed(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ty: &str, ingress: Option<&str>) -> Service {
        let mut svc: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": ty}})).unwrap();
        if let Some(ip) = ingress {
            svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": ip}]}})).unwrap();
        }
        svc
    }

    #[test]
    fn load_balancers_get_one_address_once() {
        let addr = || Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(
            load_balancer_status(&service("LoadBalancer", None), addr),
            Some(json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.1"}]}}}))
        );
        assert_eq!(
            load_balancer_status(&service("LoadBalancer", Some("198.18.0.2")), addr),
            None
        );
        assert_eq!(load_balancer_status(&service("ClusterIP", None), addr), None);
    }

    #[test]
    fn deployments_roll_out_each_generation_once() {
        let mut d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d", "generation": 3}})).unwrap();
        let status = deployment_status(&d).expect("due");
        assert_eq!(status["status"]["observedGeneration"], 3);
        d.status = serde_json::from_value(status["status"].clone()).unwrap();
        assert_eq!(deployment_status(&d), None);
        d.metadata.generation = Some(4);
        assert!(deployment_status(&d).is_some());
    }

    #[test]
    fn statefulsets_become_ready_once() {
        let mut sts: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db"}})).unwrap();
        let status = statefulset_status(&sts).expect("due");
        sts.status = serde_json::from_value(status["status"].clone()).unwrap();
        assert_eq!(statefulset_status(&sts), None);
    }

    #[test]
    fn addresses_are_distinct_and_in_the_benchmark_range() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let kubelet = Kubelet::new(Client::try_from(config).unwrap());
        let a = kubelet.next_address();
        let b = kubelet.next_address();
        assert_ne!(a, b);
        for address in [a, b] {
            let [first, second, ..] = address.octets();
            assert!(first == 198 && second & 0xfe == 18, "{address} outside 198.18.0.0/15");
        }
    }
}
