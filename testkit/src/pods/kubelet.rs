//! The test cluster's kubelet and workload controllers, for real: [`PodKubelet`] follows the test API server,
//! creates the pods of StatefulSets, Deployments and Jobs ([`super::workloads`]), starts every Pod as real
//! processes ([`super::pod::RunningPod`]), runs its probes, restarts its containers as `restartPolicy` says, stops
//! the pods that were deleted (SIGTERM, grace period, SIGKILL) and writes each pod's and each workload's status as
//! a cluster would, computed from the processes.
//!
//! It polls (every 200 ms) rather than watching: the API server is in memory, and a poll never misses a change.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Probe, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    api_access::{ApiAccess, KUBERNETES_SERVICE_IP, NODE_API_PORT},
    env::Sources,
    pod::{ClusterSetup, Programs, RunningPod},
    policy::{self, PodInfo},
    sandbox::Node,
    services::{self, ServiceRule},
    workloads::{self, Step},
};

/// The cluster DNS Service's address (`kube-system/kube-dns`).
pub const DNS_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 10);
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How often the kubelet looks at the API server.
const TICK: Duration = Duration::from_millis(200);
/// The kubelet's first back-off before restarting a crashed container (it doubles up to five minutes).
const FIRST_BACKOFF: Duration = Duration::from_secs(10);

fn now_text() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// One probe's record.
#[derive(Default)]
struct ProbeRecord {
    last_run: Option<Instant>,
    failures: i32,
    passed: bool,
}

/// One container as the kubelet tracks it.
struct ContainerRecord {
    name: String,
    image: String,
    started_at: Instant,
    started_text: String,
    restarts: i32,
    /// Exit code and time of its last end (`lastState.terminated`).
    last_exit: Option<(i32, String)>,
    /// Ended for good (restartPolicy says no restart), with its code.
    done: Option<i32>,
    /// Waiting to restart until then (`CrashLoopBackOff`).
    back_off_until: Option<Instant>,
    startup: ProbeRecord,
    readiness: ProbeRecord,
    liveness: ProbeRecord,
    ready: bool,
}

impl ContainerRecord {
    fn new(name: String, image: String) -> Self {
        ContainerRecord {
            name,
            image,
            started_at: Instant::now(),
            started_text: now_text(),
            restarts: 0,
            last_exit: None,
            done: None,
            back_off_until: None,
            startup: ProbeRecord::default(),
            readiness: ProbeRecord::default(),
            liveness: ProbeRecord::default(),
            ready: false,
        }
    }
}

/// A pod the kubelet has taken on.
struct PodRecord {
    pod: Pod,
    run: Option<RunningPod>,
    /// Why it has not started (the containers' `waiting` reason and message), and when to try again.
    waiting: Option<(String, String)>,
    next_try: Instant,
    containers: Vec<ContainerRecord>,
    start_text: String,
    ready_since: Option<String>,
    last_refresh: Instant,
    written: Option<Value>,
    /// The NetworkPolicy table loaded into its namespace.
    policy: Option<String>,
}

/// The kubelet of one node, with the StatefulSet, Deployment and Job controllers.
pub struct PodKubelet {
    client: Client,
    node: Node,
    programs: Programs,
    dir: PathBuf,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    /// Owners (uids) whose deleted pods are still stopping (a Recreate rollout waits for them).
    stopping: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    written: Mutex<BTreeMap<String, Value>>,
    names: AtomicU64,
    load_balancers: AtomicU64,
    access: ApiAccess,
    /// The Service rules every pod's namespace holds, and the DNS records, as last written.
    services: Mutex<String>,
    /// The Service rules loaded last, to find UDP translations that became stale.
    service_rules: Mutex<Vec<ServiceRule>>,
    /// The EndpointSlices written last, by (namespace, name): written again only when they change.
    endpoint_slices: Mutex<std::collections::BTreeMap<(String, String), serde_json::Value>>,
    dns_records: Mutex<String>,
}

impl PodKubelet {
    /// A node of its own; pods' folders and claims under `dir`. `api_server` is the test API server's address and
    /// `api_server_ca` its CA (DER); pods reach it as `https://10.96.0.1` (the `default/kubernetes` Service). Creates what every cluster has:
    /// `kube-system`, the `kubernetes` and `kube-dns` Services and the DNS Deployment (`coredns`).
    pub async fn start(
        client: Client,
        programs: Programs,
        dir: PathBuf,
        api_server: std::net::SocketAddr,
        api_server_ca: &[u8],
    ) -> Result<Arc<PodKubelet>, String> {
        let node = Node::start().await?;
        let access = ApiAccess::start(&node.netns, node.address, api_server, api_server_ca).await?;
        std::fs::create_dir_all(dir.join("dns")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("dns/records"), "").map_err(|e| e.to_string())?;
        let kubelet = Arc::new(PodKubelet {
            client,
            node,
            programs,
            dir,
            pods: Mutex::new(BTreeMap::new()),
            stopping: Arc::default(),
            written: Mutex::new(BTreeMap::new()),
            names: AtomicU64::new(0),
            load_balancers: AtomicU64::new(0),
            access,
            services: Mutex::new(String::new()),
            service_rules: Mutex::new(Vec::new()),
            endpoint_slices: Mutex::new(std::collections::BTreeMap::new()),
            dns_records: Mutex::new(String::new()),
        });
        kubelet
            .cluster_objects()
            .await
            .map_err(|e| format!("the cluster's own objects: {e}"))?;
        Ok(kubelet)
    }

    async fn cluster_objects(&self) -> Result<(), kube::Error> {
        use k8s_openapi::api::core::v1::{Namespace, Service};
        let apply = PatchParams::apply("appdb-test-kubelet").force();
        Api::<Namespace>::all(self.client.clone())
            .patch(
                "kube-system",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})),
            )
            .await?;
        Api::<Service>::namespaced(self.client.clone(), "default")
            .patch(
                "kubernetes",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver"}},
                    "spec": {"clusterIP": KUBERNETES_SERVICE_IP.to_string(),
                        "ports": [{"name": "https", "port": 443, "targetPort": NODE_API_PORT, "protocol": "TCP"}]}})),
            )
            .await?;
        // The API server's own endpoint, as a cluster publishes it: the node's address, where the relay to the test
        // API server listens (what a gateway's egress policy must allow).
        Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(self.client.clone(), "default")
            .patch(
                "kubernetes",
                &apply,
                &Patch::Apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "kubernetes"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [self.node.address.to_string()], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": NODE_API_PORT, "protocol": "TCP"}]})),
            )
            .await?;
        Api::<Service>::namespaced(self.client.clone(), "kube-system")
            .patch(
                "kube-dns",
                &apply,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                    "spec": {"clusterIP": DNS_SERVICE_IP.to_string(), "selector": {"k8s-app": "kube-dns"},
                        "ports": [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"}]}})),
            )
            .await?;
        Api::<Deployment>::namespaced(self.client.clone(), "kube-system")
            .patch(
                "coredns",
                &apply,
                &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                            "spec": {"dnsPolicy": "Default", "automountServiceAccountToken": false,
                                "containers": [{"name": "coredns", "image": "appdb-test/dns:latest",
                                    "volumeMounts": [{"name": "records", "mountPath": "/etc/appdb-dns", "readOnly": true}]}],
                                "volumes": [{"name": "records", "hostPath": {"path": self.dir.join("dns").display().to_string(),
                                    "type": "Directory"}}]}}}})),
            )
            .await?;
        Ok(())
    }

    /// What the next pod gets from the cluster: its service account's token comes from TokenRequest, as a real
    /// kubelet's projected token does, so the pod acts with exactly its account's RBAC permissions.
    async fn setup(&self, pod: &Pod) -> Result<ClusterSetup, String> {
        let spec = pod.spec.as_ref();
        let token = if spec.and_then(|s| s.automount_service_account_token) == Some(false) {
            self.access.token.clone()
        } else {
            let account = spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let request = k8s_openapi::api::authentication::v1::TokenRequest {
                spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            };
            accounts
                .create_token_request(&account, &Default::default(), &request)
                .await
                .map_err(|e| format!("the service account {account}'s token: {e}"))?
                .status
                .and_then(|s| s.token)
                .ok_or_else(|| format!("the service account {account}'s token: no token in the answer"))?
        };
        Ok(ClusterSetup {
            nft: vec![self.services.lock().await.clone()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            dns: Some(DNS_SERVICE_IP),
            cluster_domain: CLUSTER_DOMAIN.into(),
            api: Some((self.access.ca_pem.clone(), token)),
        })
    }

    /// The cloud's load balancer controller: each LoadBalancer Service without an address gets the next one of
    /// 203.0.113.0/24 (documentation range, the "public" segment an outside namespace reaches through the node).
    async fn give_load_balancer_addresses(&self, list: &[k8s_openapi::api::core::v1::Service]) {
        use k8s_openapi::api::core::v1::Service;
        for service in list {
            let is_load_balancer = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if !is_load_balancer || !services::load_balancer_addresses(service).is_empty() {
                continue;
            }
            let n = self.load_balancers.fetch_add(1, Ordering::Relaxed);
            let address = std::net::Ipv4Addr::new(203, 0, 113, 10 + (n % 240) as u8);
            let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace().unwrap_or_default());
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": address.to_string()}]}}});
            if let Err(e) = api
                .patch_status(&service.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::debug!(error = %e, "pod kubelet: load balancer address not written");
            }
        }
    }

    /// The endpoint slice controller: each Service's EndpointSlice written when it changed, and removed with its
    /// Service.
    async fn write_endpoint_slices(&self, list: &[k8s_openapi::api::core::v1::Service], pods: &[Pod]) {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let desired: std::collections::BTreeMap<(String, String), serde_json::Value> = list
            .iter()
            .filter_map(|service| {
                let slice = services::endpoint_slice(service, pods)?;
                let key = (
                    slice["metadata"]["namespace"].as_str()?.to_owned(),
                    slice["metadata"]["name"].as_str()?.to_owned(),
                );
                Some((key, slice))
            })
            .collect();
        let mut written = self.endpoint_slices.lock().await;
        let apply = PatchParams::apply("endpointslice-controller").force();
        for ((namespace, name), slice) in &desired {
            if written.get(&(namespace.clone(), name.clone())) == Some(slice) {
                continue;
            }
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
            match api.patch(name, &apply, &Patch::Apply(slice)).await {
                Ok(_) => {
                    written.insert((namespace.clone(), name.clone()), slice.clone());
                }
                Err(e) => tracing::debug!(error = %e, "pod kubelet: EndpointSlice not written"),
            }
        }
        let gone: Vec<(String, String)> = written.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
        for (namespace, name) in gone {
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
            match api.delete(&name, &Default::default()).await {
                Ok(_) => {
                    written.remove(&(namespace, name));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    written.remove(&(namespace, name));
                }
                Err(e) => tracing::debug!(error = %e, "pod kubelet: EndpointSlice not removed"),
            }
        }
    }

    /// Service rules into every namespace and DNS records into the DNS pod's file, when they changed.
    async fn follow_services(&self, pods: &[Pod]) -> Result<(), kube::Error> {
        use k8s_openapi::api::core::v1::Service;
        let list: Vec<Service> = Api::<Service>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        self.give_load_balancer_addresses(&list).await;
        self.write_endpoint_slices(&list, pods).await;
        let mut rules = services::rules(&list, pods);
        rules.push(ServiceRule {
            ip: KUBERNETES_SERVICE_IP,
            port: 443,
            protocol: "tcp".into(),
            backends: vec![(self.node.address, NODE_API_PORT)],
            external: false,
        });
        rules.sort();
        let script = services::render(&rules);
        let mut current = self.services.lock().await;
        if *current != script {
            let mut namespaces = vec![self.node.netns.clone()];
            let records = self.pods.lock().await;
            namespaces.extend(
                records
                    .values()
                    .filter_map(|r| r.run.as_ref())
                    .map(|r| r.netns().to_owned()),
            );
            drop(records);
            namespaces.dedup();
            let stale = services::stale_udp(&self.service_rules.lock().await, &rules);
            for netns in namespaces {
                if let Err(e) = super::sandbox::nft(&netns, &script).await {
                    tracing::warn!(error = %e, "pod kubelet: Service rules not loaded");
                }
                for (address, port, backend) in &stale {
                    super::sandbox::forget_udp_translation(&netns, *address, *port, Some(*backend)).await;
                }
            }
            *current = script;
            *self.service_rules.lock().await = rules;
        }
        drop(current);
        let records = dns_records(&list, pods);
        let mut written = self.dns_records.lock().await;
        if *written != records {
            let path = self.dir.join("dns/records");
            let fresh = self.dir.join("dns/records.new");
            if std::fs::write(&fresh, &records)
                .and_then(|_| std::fs::rename(&fresh, &path))
                .is_ok()
            {
                *written = records;
            }
        }
        Ok(())
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Runs until `stop`, then stops every pod (SIGTERM, grace, SIGKILL).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "pod kubelet: a pass failed");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        let mut pods = self.pods.lock().await;
        let stops = pods.values_mut().filter_map(|r| r.run.as_mut()).map(|run| run.stop());
        futures::future::join_all(stops).await;
        pods.clear();
    }

    /// The network namespace and address of a running pod (for tests that reach into it).
    pub async fn pod_network(&self, namespace: &str, name: &str) -> Option<(String, std::net::Ipv4Addr)> {
        let pods = self.pods.lock().await;
        pods.values()
            .find(|r| r.pod.namespace().as_deref() == Some(namespace) && r.pod.name_any() == name)
            .and_then(|r| r.run.as_ref())
            .map(|run| (run.netns().to_owned(), run.ip))
    }

    /// How the API server's `pods/portforward` reaches a running pod: a connection to `127.0.0.1:<port>` made
    /// inside the pod's network namespace, as the kubelet's port-forward does.
    pub fn port_forward_dialer(self: &Arc<Self>) -> crate::apiserver::portforward::Dialer {
        let kubelet = Arc::downgrade(self);
        Arc::new(move |namespace: String, name: String, port: u16| {
            let kubelet = kubelet.clone();
            Box::pin(async move {
                let kubelet = kubelet
                    .upgrade()
                    .ok_or_else(|| std::io::Error::other("the kubelet has stopped"))?;
                let (netns, _) = kubelet
                    .pod_network(&namespace, &name)
                    .await
                    .ok_or_else(|| std::io::Error::other(format!("pod {namespace}/{name} does not run")))?;
                super::netns_socket::connect_tcp(&netns, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await
            })
        })
    }

    /// How the API server's `pods/log` reads a container's output: the log file the runner writes for each
    /// container of the pod (`<dir>/pods/<namespace>_<pod>/<container>.log`), as `kubectl logs` shows it.
    pub fn log_reader(&self) -> crate::apiserver::logs::LogReader {
        use crate::apiserver::logs::LogError;
        let pods = self.dir.join("pods");
        Arc::new(move |namespace: &str, name: &str, container: Option<&str>| {
            let dir = pods.join(format!("{namespace}_{name}"));
            let mut containers: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|_| LogError::NotFound(format!("pods \"{name}\" not found")))?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log").map(str::to_owned))
                .collect();
            containers.sort();
            let chosen = match (container, containers.as_slice()) {
                (Some(c), _) => c.to_owned(),
                (None, [only]) => only.clone(),
                (None, many) => {
                    return Err(LogError::BadRequest(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        many.join(" ")
                    )));
                }
            };
            std::fs::read_to_string(dir.join(format!("{chosen}.log")))
                .map_err(|_| LogError::BadRequest(format!("container {chosen} is not valid for pod {name}")))
        })
    }

    /// A command in a running pod's container (`kubectl exec`).
    pub async fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        argv: &[&str],
    ) -> Result<std::process::Output, String> {
        let pods = self.pods.lock().await;
        let run = pods
            .values()
            .find(|r| r.pod.namespace().as_deref() == Some(namespace) && r.pod.name_any() == name)
            .and_then(|r| r.run.as_ref())
            .ok_or_else(|| format!("pod {namespace}/{name} does not run"))?;
        run.exec(container, argv).await
    }

    /// A container's log (`kubectl logs`).
    pub async fn logs(&self, namespace: &str, name: &str, container: &str) -> Option<String> {
        let pods = self.pods.lock().await;
        pods.values()
            .find(|r| r.pod.namespace().as_deref() == Some(namespace) && r.pod.name_any() == name)
            .and_then(|r| r.run.as_ref())
            .map(|run| run.logs(container))
    }

    async fn tick(&self) -> Result<(), kube::Error> {
        let pods: Vec<Pod> = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        self.follow_services(&pods).await?;
        self.follow_pods(&pods).await;
        self.control_workloads(&pods).await
    }

    async fn sources(&self, namespace: &str) -> Sources {
        let mut sources = Sources::default();
        if let Ok(secrets) = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
        {
            for s in secrets {
                let data = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
                sources.secrets.insert(s.name_any(), data);
            }
        }
        if let Ok(maps) = Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
        {
            for m in maps {
                sources
                    .config_maps
                    .insert(m.name_any(), m.data.clone().unwrap_or_default());
            }
        }
        sources
    }

    /// What NetworkPolicy needs to know: every policy, every running pod's namespace, labels and address, and the
    /// namespaces' labels.
    async fn policy_inputs(&self, listed: &[Pod]) -> Result<PolicyInputs, kube::Error> {
        use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy};
        let policies = Api::<NetworkPolicy>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let namespaces = Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let pods = listed
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) != Some(true))
            .filter_map(|p| {
                Some(PodInfo {
                    namespace: p.namespace()?,
                    labels: p.labels().clone(),
                    ip: p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?,
                })
            })
            .collect();
        Ok(PolicyInputs {
            policies,
            pods,
            namespaces,
        })
    }

    async fn follow_pods(&self, listed: &[Pod]) {
        let inputs = match self.policy_inputs(listed).await {
            Ok(inputs) => Some(inputs),
            Err(e) => {
                tracing::warn!(error = %e, "pod kubelet: NetworkPolicies not read");
                None
            }
        };
        let mut records = self.pods.lock().await;
        let alive: BTreeSet<String> = listed
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.uid())
            .collect();
        // Deleted pods stop, in the background (their grace period may be long).
        let gone: Vec<String> = records.keys().filter(|uid| !alive.contains(*uid)).cloned().collect();
        for uid in gone {
            if let Some(record) = records.remove(&uid) {
                self.stop_in_background(record);
            }
        }
        for pod in listed {
            let Some(uid) = pod.uid() else { continue };
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if alive.contains(&uid) && !records.contains_key(&uid) && !finished {
                let containers = pod
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .map(|c| ContainerRecord::new(c.name.clone(), c.image.clone().unwrap_or_default()))
                    .collect();
                records.insert(
                    uid.clone(),
                    PodRecord {
                        pod: pod.clone(),
                        run: None,
                        waiting: Some(("ContainerCreating".into(), String::new())),
                        next_try: Instant::now(),
                        containers,
                        start_text: now_text(),
                        ready_since: None,
                        last_refresh: Instant::now(),
                        written: None,
                        policy: None,
                    },
                );
            }
        }
        for record in records.values_mut() {
            self.drive(record, inputs.as_ref()).await;
            if let (Some(inputs), Some(run)) = (inputs.as_ref(), record.run.as_ref())
                && record.pod.spec.as_ref().and_then(|s| s.host_network) != Some(true)
            {
                let script = policy::render(&inputs.compile_for(&record.pod, run.ip));
                if record.policy.as_ref() != Some(&script) {
                    match super::sandbox::nft(run.netns(), &script).await {
                        Ok(()) => record.policy = Some(script),
                        Err(e) => tracing::warn!(error = %e, "pod kubelet: NetworkPolicy not loaded"),
                    }
                }
            }
            let status = pod_status(record, &self.node);
            if record.written.as_ref() != Some(&status) {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &record.pod.namespace().unwrap_or_default());
                match api
                    .patch_status(&record.pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    Ok(_) => record.written = Some(status),
                    Err(e) => tracing::debug!(error = %e, pod = %record.pod.name_any(), "pod status not written"),
                }
            }
        }
    }

    fn stop_in_background(&self, mut record: PodRecord) {
        let owner = record
            .pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone());
        if let Some(owner) = &owner {
            *self
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(owner.clone())
                .or_default() += 1;
        }
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            if let Some(run) = record.run.as_mut() {
                run.stop().await;
            }
            if let Some(owner) = owner {
                let mut map = stopping.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = map.get_mut(&owner) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&owner);
                    }
                }
            }
        });
    }

    /// Starts, probes, restarts and ends one pod's containers.
    async fn drive(&self, record: &mut PodRecord, inputs: Option<&PolicyInputs>) {
        let namespace = record.pod.namespace().unwrap_or_default();
        if record.run.is_none() {
            if record.containers.iter().all(|c| c.done.is_some()) && !record.containers.is_empty() {
                return;
            }
            if Instant::now() < record.next_try {
                return;
            }
            let sources = self.sources(&namespace).await;
            let mut setup = match self.setup(&record.pod).await {
                Ok(setup) => setup,
                Err(e) => {
                    record.waiting = Some(("CreateContainerConfigError".to_owned(), e));
                    record.next_try = Instant::now() + Duration::from_secs(1);
                    return;
                }
            };
            // Its NetworkPolicy is in force before its first process starts.
            if let Some(inputs) = inputs
                && record.pod.spec.as_ref().and_then(|s| s.host_network) != Some(true)
            {
                let script = policy::render(&inputs.compile_for(&record.pod, std::net::Ipv4Addr::UNSPECIFIED));
                setup.nft.push(script.clone());
                record.policy = Some(script);
            }
            match RunningPod::start(
                &self.node,
                &record.pod,
                &sources,
                &self.programs,
                &self.dir.join("pods"),
                &self.dir.join("claims"),
                &setup,
            )
            .await
            {
                Ok(run) => {
                    record.run = Some(run);
                    record.waiting = None;
                    for c in &mut record.containers {
                        c.started_at = Instant::now();
                        c.started_text = now_text();
                    }
                }
                Err(e) => {
                    record.waiting = Some((e.reason().to_owned(), e.to_string()));
                    record.next_try = Instant::now() + Duration::from_secs(2);
                }
            }
            return;
        }
        if record.last_refresh.elapsed() > Duration::from_secs(2) {
            record.last_refresh = Instant::now();
            let sources = self.sources(&namespace).await;
            if let Some(run) = record.run.as_ref() {
                let _ = run.volumes.refresh(&record.pod, &sources);
            }
        }
        let spec = record.pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let Some(run) = record.run.as_mut() else { return };
        for (i, container) in spec.containers.iter().enumerate() {
            let c = &mut record.containers[i];
            if c.done.is_some() {
                continue;
            }
            if let Some(until) = c.back_off_until {
                if Instant::now() < until {
                    continue;
                }
                c.back_off_until = None;
                if run.restart_container(&c.name).await.is_ok() {
                    c.restarts += 1;
                    c.started_at = Instant::now();
                    c.started_text = now_text();
                    c.startup = ProbeRecord::default();
                    c.readiness = ProbeRecord::default();
                    c.liveness = ProbeRecord::default();
                }
                continue;
            }
            let exited = run.container(&c.name).and_then(|p| p.try_exit_code());
            if let Some(code) = exited {
                c.ready = false;
                c.last_exit = Some((code, now_text()));
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if restart {
                    // The first restart is immediate; then 10 s, doubling up to five minutes (the kubelet's
                    // CrashLoopBackOff). A container that ran ten minutes starts over.
                    let ran_long = c.started_at.elapsed() > Duration::from_secs(600);
                    let backoff = if c.restarts == 0 || ran_long {
                        Duration::ZERO
                    } else {
                        FIRST_BACKOFF * 2u32.saturating_pow((c.restarts - 1).clamp(0, 5) as u32)
                    };
                    c.back_off_until = Some(Instant::now() + backoff.min(Duration::from_secs(300)));
                } else {
                    c.done = Some(code);
                }
                continue;
            }
            // Probes: startup first; readiness and liveness only once it has passed.
            let since = c.started_at.elapsed();
            if let Some(probe) = &container.startup_probe
                && !c.startup.passed
            {
                match run_probe(run, &c.name, probe, &mut c.startup, since).await {
                    Some(false) if c.startup.failures >= probe.failure_threshold.unwrap_or(3) => {
                        c.back_off_until = Some(Instant::now());
                    }
                    _ => {}
                }
                continue;
            }
            match &container.readiness_probe {
                Some(probe) => {
                    if let Some(result) = run_probe(run, &c.name, probe, &mut c.readiness, since).await {
                        if result {
                            c.ready = true;
                        } else if c.readiness.failures >= probe.failure_threshold.unwrap_or(3) {
                            c.ready = false;
                        }
                    }
                }
                None => c.ready = true,
            }
            if let Some(probe) = &container.liveness_probe
                && run_probe(run, &c.name, probe, &mut c.liveness, since).await == Some(false)
                && c.liveness.failures >= probe.failure_threshold.unwrap_or(3)
            {
                // The kubelet kills and restarts a container that fails its liveness probe.
                c.ready = false;
                c.back_off_until = Some(Instant::now());
            }
        }
        let all_ready = record.containers.iter().all(|c| c.ready);
        if all_ready && record.ready_since.is_none() {
            record.ready_since = Some(now_text());
        } else if !all_ready {
            record.ready_since = None;
        }
        // Every container ended for good: the pod is finished; its sandbox goes, its claims stay.
        if record.containers.iter().all(|c| c.done.is_some())
            && let Some(mut run) = record.run.take()
        {
            run.stop().await;
        }
    }

    async fn control_workloads(&self, pods: &[Pod]) -> Result<(), kube::Error> {
        let owned = |uid: &str| -> Vec<Pod> { pods.iter().filter(|p| workloads::owned_by(p, uid)).cloned().collect() };
        for sts in Api::<StatefulSet>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            let uid = sts.uid().unwrap_or_default();
            let decision = workloads::statefulset(&sts, &owned(&uid));
            self.carry_out(&sts, decision).await;
        }
        for deployment in Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            let uid = deployment.uid().unwrap_or_default();
            let stopping = self
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&uid);
            let decision = workloads::deployment(&deployment, &owned(&uid), stopping, &self.suffix());
            self.carry_out(&deployment, decision).await;
        }
        for job in Api::<Job>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
        {
            let uid = job.uid().unwrap_or_default();
            let decision = workloads::job(&job, &owned(&uid), &self.suffix(), &now_text());
            self.carry_out(&job, decision).await;
        }
        Ok(())
    }

    /// Five characters for a generated pod name.
    fn suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.names.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 7919;
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                n = n.wrapping_mul(31).wrapping_add(17);
                c
            })
            .collect()
    }

    async fn carry_out<K>(&self, owner: &K, decision: workloads::Decision)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let namespace = owner.namespace().unwrap_or_default();
        let uid = owner.uid().unwrap_or_default();
        if !decision.status.is_null() {
            let mut written = self.written.lock().await;
            if written.get(&uid) != Some(&decision.status) {
                let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
                if api
                    .patch_status(
                        &owner.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&decision.status),
                    )
                    .await
                    .is_ok()
                {
                    written.insert(uid, decision.status);
                }
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match decision.step {
            Step::Create(pod) => {
                if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                    tracing::debug!(error = %e, "pod kubelet: creating a pod failed");
                }
            }
            Step::Delete(name) => {
                let _ = pods.delete(&name, &DeleteParams::default()).await;
            }
            Step::Nothing => {}
        }
    }
}

/// What NetworkPolicy is computed from, read once per pass.
struct PolicyInputs {
    policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    pods: Vec<PodInfo>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl PolicyInputs {
    fn compile_for(&self, pod: &Pod, ip: std::net::Ipv4Addr) -> policy::Compiled {
        let info = PodInfo {
            namespace: pod.namespace().unwrap_or_default(),
            labels: pod.labels().clone(),
            ip,
        };
        policy::compile(&info, &self.policies, &self.pods, &self.namespaces)
    }
}

/// The DNS names CoreDNS would answer: `<service>.<namespace>.svc.<domain>` (its ClusterIP, or a headless
/// Service's ready pods) and `<hostname>.<subdomain>.<namespace>.svc.<domain>` for pods of a headless Service.
pub fn dns_records(list: &[k8s_openapi::api::core::v1::Service], pods: &[Pod]) -> String {
    let mut lines = BTreeSet::new();
    for service in list {
        let (Some(name), Some(ns), Some(spec)) = (service.metadata.name.as_ref(), service.namespace(), &service.spec)
        else {
            continue;
        };
        let fqdn = format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}");
        match spec.cluster_ip.as_deref() {
            Some("None") => {
                let selector = spec.selector.clone().unwrap_or_default();
                for pod in pods.iter().filter(|p| {
                    p.namespace().as_deref() == Some(ns.as_str())
                        && !selector.is_empty()
                        && services::selects(&selector, p.labels())
                        && workloads::is_ready(p)
                }) {
                    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()) {
                        lines.insert(format!("{fqdn} {ip}"));
                        if let Some(spec) = &pod.spec
                            && spec.subdomain.as_deref() == Some(name.as_str())
                        {
                            let host = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
                            lines.insert(format!("{host}.{fqdn} {ip}"));
                        }
                    }
                }
            }
            Some(ip) if !ip.is_empty() => {
                lines.insert(format!("{fqdn} {ip}"));
            }
            _ => {}
        }
    }
    lines.into_iter().map(|l| l + "\n").collect()
}

/// Runs `probe` when it is due; `None` when it was not due (or could not run).
async fn run_probe(
    run: &RunningPod,
    container: &str,
    probe: &Probe,
    record: &mut ProbeRecord,
    since_start: Duration,
) -> Option<bool> {
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    if since_start < initial || record.last_run.is_some_and(|t| t.elapsed() < period) {
        return None;
    }
    record.last_run = Some(Instant::now());
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let result = match tokio::time::timeout(timeout, run.probe(container, probe)).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, container, "probe could not run");
            false
        }
        Err(_) => false,
    };
    if result {
        record.failures = 0;
        record.passed = true;
    } else {
        record.failures += 1;
    }
    Some(result)
}

/// The pod's status as the kubelet reports it.
fn pod_status(record: &PodRecord, node: &Node) -> Value {
    let ip = record.run.as_ref().map(|r| r.ip.to_string());
    let ended = !record.containers.is_empty() && record.containers.iter().all(|c| c.done.is_some());
    let phase = if ended {
        if record.containers.iter().all(|c| c.done == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if record.run.is_some() {
        "Running"
    } else {
        "Pending"
    };
    let ready = record.ready_since.is_some() && !ended;
    let statuses: Vec<Value> = record
        .containers
        .iter()
        .map(|c| {
            let state = if let Some((reason, message)) = &record.waiting {
                json!({"waiting": {"reason": reason, "message": message}})
            } else if let Some(code) = c.done {
                json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                    "finishedAt": c.last_exit.as_ref().map(|e| e.1.clone())}})
            } else if c.back_off_until.is_some() {
                json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off restarting failed container {}", c.name)}})
            } else {
                json!({"running": {"startedAt": c.started_text}})
            };
            let mut status = json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": c.ready && !ended,
                "started": record.run.is_some() && c.done.is_none() && c.back_off_until.is_none(),
                "restartCount": c.restarts, "state": state,
            });
            if let Some((code, at)) = &c.last_exit
                && c.done.is_none()
            {
                status["lastState"] = json!({"terminated": {"exitCode": code,
                    "reason": if *code == 0 { "Completed" } else { "Error" }, "finishedAt": at}});
            }
            status
        })
        .collect();
    let truth = |b: bool| if b { "True" } else { "False" };
    let mut status = json!({"status": {
        "phase": phase,
        "hostIP": node.gateway.to_string(),
        "startTime": record.start_text,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": truth(ready)},
            {"type": "Ready", "status": truth(ready), "lastTransitionTime": record.ready_since},
        ],
        "containerStatuses": statuses,
    }});
    if let Some(ip) = ip {
        status["status"]["podIP"] = json!(ip);
        status["status"]["podIPs"] = json!([{"ip": ip}]);
    }
    status
}
