//! The VPN gateway as its Deployment says, on the pod runner (testkit::pods): the `charon` container of the pod
//! template the operator builds, with its own command, environment, volumes (the gateway's Secret as files, an
//! emptyDir on /run, /dev/net/tun) and security context (capabilities, user, no_new_privs), as PID 1 of its own
//! PID namespace, in a pod network namespace behind a node, reached through a LoadBalancer address. The customer's
//! device is charon in a premises namespace with the strongSwan file from the customer's download, unmodified.
//!
//! What this does not run: the pod's `agent` container (it reports to the API server; the VPN tests run it against
//! a file) and the kernel's ESP (this machine has none, so the gateway runs with the userspace data path, as the
//! operator's `--vpn-datapath userspace` makes it).
//! Needs root, iproute2, nftables and strongSwan (scripts/test.sh installs them); fails loudly without them.

#[path = "support/netns.rs"]
#[allow(dead_code)]
mod netns;

#[path = "support/charon.rs"]
mod charon;

use std::{collections::BTreeMap, net::Ipv4Addr};

use appdb_operator::{
    api::VpnConnection,
    controllers::vpn_connection::build::{Serving, config_digest, customer_config, gateway, gateway_config},
    vpn::{
        model::{Connection, Psk, Tunnel},
        render::{DataPath, Exposure},
    },
};
use appdb_testkit::pods::{
    env::Sources,
    pod::{ClusterSetup, Programs, RunningPod},
    sandbox::Node,
};
use charon::{Charon, carrying_tunnel, customer_strongswan_conf, established, premises_behind, wait_until};
use k8s_openapi::api::core::v1::{Pod, Secret};
use netns::Netns;
use serde_json::json;

const GATEWAY_IMAGE: &str = "ghcr.io/appdb-dev/appdb-vpn-gateway:0.1.0";
const OPERATOR_IMAGE: &str = "ghcr.io/appdb-dev/appdb-operator:0.1.0";
const PINGHOST: Ipv4Addr = Ipv4Addr::new(10, 20, 30, 65);

fn vpn() -> VpnConnection {
    serde_json::from_value(json!({
        "apiVersion": "appdb.dev/v1alpha1",
        "kind": "VpnConnection",
        "metadata": {"name": "seattle", "namespace": "acme", "uid": "0b6c2a52-7d1e-4c55-9b57-1f7b0c3c9a10"},
        "spec": {"network": "prod", "customerCidrs": ["192.168.10.0/24"], "customerGatewayAddress": "198.51.100.7"}
    }))
    .expect("VpnConnection")
}

fn connection() -> Connection {
    let tunnel = |n: u8, addr: Ipv4Addr, psk: &str| Tunnel::new(n, addr, Psk::new(psk).unwrap(), None).expect("tunnel");
    Connection {
        name: "acme-seattle".into(),
        description: Some("Seattle office".into()),
        platform_cidr: "10.20.30.64/26".parse().unwrap(),
        pinghost: PINGHOST,
        customer_cidrs: vec!["192.168.10.0/24".parse().unwrap()],
        customer_gateway: Ipv4Addr::new(198, 51, 100, 7),
        tunnels: [
            tunnel(1, Ipv4Addr::new(203, 0, 113, 11), "Tunnel1.Key_0123456789abcdefghijk"),
            tunnel(2, Ipv4Addr::new(203, 0, 113, 12), "Tunnel2.Key_0123456789abcdefghijk"),
        ],
    }
}

/// Tunnel `n`'s gateway pod as the ReplicaSet would create it from the operator's Deployment, with the
/// `agent` container left out (see the file's header), and the Secret it mounts.
fn gateway_pod(n: u8, generation: u8) -> (Pod, Secret) {
    let (vpn, conn) = (vpn(), connection());
    let config = gateway_config(&vpn, &conn, n, DataPath::Userspace, Exposure::LoadBalancer);
    let serving = Serving {
        addresses: vec![PINGHOST],
        relays: vec![],
    };
    let deployment = gateway(
        &vpn,
        "prod",
        n,
        GATEWAY_IMAGE,
        OPERATOR_IMAGE,
        DataPath::Userspace,
        &config_digest(&config),
        &serving,
        Exposure::LoadBalancer,
    );
    let template = deployment.spec.template;
    let mut spec = template.spec.expect("pod spec");
    spec.containers.retain(|c| c.name == "charon");
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(format!("seattle-tunnel{n}-7d9f8c6b5-x{n}k2p{generation}"));
    metadata.namespace = Some("acme".into());
    (
        Pod {
            metadata,
            spec: Some(spec),
            status: None,
        },
        config,
    )
}

fn sources(secret: &Secret) -> Sources {
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    Sources {
        secrets: [(secret.metadata.name.clone().unwrap_or_default(), data)].into(),
        config_maps: BTreeMap::new(),
    }
}

/// A node with the customer's premises on its outside segment, and the gateway pods the test starts.
struct Lab {
    dir: tempfile::TempDir,
    node: Node,
    premises: Netns,
    programs: Programs,
}

impl Lab {
    async fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Node::start().await.expect("the node");
        let premises = premises_behind(&node, &format!("appdb-{tag}-{}-prem", std::process::id())).await;
        Lab {
            dir,
            node,
            premises,
            programs: Programs {
                operator: env!("CARGO_BIN_EXE_appdb-operator").into(),
            },
        }
    }

    /// Starts tunnel `n`'s gateway pod and gives it its LoadBalancer address once the pod's own readiness probe
    /// passes (charon has its IKE sockets and the tunnel's connection): what the Deployment's availability and the
    /// operator's rollout wait for.
    async fn start_gateway(&self, n: u8) -> RunningPod {
        self.start_gateway_generation(n, 0).await
    }

    async fn start_gateway_generation(&self, n: u8, generation: u8) -> RunningPod {
        let (pod, secret) = gateway_pod(n, generation);
        let readiness = pod.spec.as_ref().expect("spec").containers[0]
            .readiness_probe
            .clone()
            .expect("charon's readiness probe");
        let running = RunningPod::start(
            &self.node,
            &pod,
            &sources(&secret),
            &self.programs,
            &self.dir.path().join("pods"),
            &self.dir.path().join("claims"),
            &ClusterSetup::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("gateway pod {n} did not start: {e}"));
        let started = std::time::Instant::now();
        while !running.probe("charon", &readiness).await.unwrap_or(false) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "gateway {n} never became ready (its readiness probe never passed)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let address = connection().tunnels[usize::from(n) - 1].platform_address;
        self.node
            .expose_load_balancer(address, running.ip, &[500, 4500])
            .await
            .expect("the load balancer address");
        running
    }

    /// The customer's device with the two strongSwan files exactly as `kubectl appdb vpn-config` downloads them.
    fn start_customer(&self) -> Charon {
        let download = customer_config(&vpn(), &connection());
        let file = |key: &str| {
            let path = self.dir.path().join(format!("download-{key}"));
            std::fs::write(&path, &download.data.as_ref().expect("data")[key].0).expect("write the download");
            path
        };
        let (swanctl, timing) = (file("strongswan-swanctl.conf"), file("strongswan.conf"));
        let vici = self.dir.path().join("customer.vici");
        let conf = self.dir.path().join("customer-strongswan.conf");
        std::fs::write(&conf, customer_strongswan_conf(&vici, &timing)).expect("write strongswan.conf");
        let charon = Charon::start(&self.premises, &conf, vici, &self.dir.path().join("customer.log"));
        charon.load(&swanctl);
        charon
    }

    fn ping_pinghost(&self) -> bool {
        self.premises
            .try_exec(&[
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                "192.168.10.10",
                &PINGHOST.to_string(),
            ])
            .status
            .success()
    }
}

impl Drop for Lab {
    /// On failure, every container's log and the device's: the reason is always in them.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let pods = self.dir.path().join("pods");
        let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir(&pods)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|pod| std::fs::read_dir(pod.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.push(self.dir.path().join("customer.log"));
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!("---- {} ----\n{}", log.display(), tail(&text));
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(150)..].join("\n")
}

/// The container's capability bounding set, as the kernel holds it for its PID 1.
fn bounding_set(pod: &mut RunningPod) -> u64 {
    let pid = pod.container("charon").and_then(|c| c.pid1()).expect("charon's PID 1");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).expect("CapBnd");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_pod_under_its_own_security_context_carries_both_tunnels_from_the_downloaded_file() {
    let lab = Lab::new("gwpod").await;
    let mut gw1 = lab.start_gateway(1).await;
    let mut gw2 = lab.start_gateway(2).await;
    let customer = lab.start_customer();
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    wait_until(20, "the pinghost answers through a tunnel", || lab.ping_pinghost());
    // Exactly what the pod spec grants, and nothing more.
    assert_eq!(bounding_set(&mut gw1), CAP_NET_ADMIN | CAP_NET_BIND_SERVICE);
    assert!(
        gw1.logs("charon").contains("readOnlyRootFilesystem is not enforced"),
        "the runner says what it does not enforce"
    );
    gw1.stop().await;
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gateway_pod_stops_charon_within_its_grace_period_and_the_device_learns_at_once() {
    let lab = Lab::new("gwterm").await;
    let mut gw1 = lab.start_gateway(1).await;
    let mut gw2 = lab.start_gateway(2).await;
    let customer = lab.start_customer();
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    // The kubelet's deletion: SIGTERM to PID 1, the pod's grace period, then SIGKILL.
    let stopped = gw1.stop().await;
    let (_, code, killed) = &stopped[0];
    assert!(
        !killed,
        "charon must end on SIGTERM, not be SIGKILLed after the grace period (exit {code}):\n{}",
        tail(&gw1.logs("charon"))
    );
    // charon said goodbye (IKE DELETE): the device drops the tunnel now, not after dead-peer detection.
    wait_until(5, "the device drops tunnel 1 on the gateway's DELETE", || {
        !established(&customer, 1)
    });
    assert!(established(&customer, 2), "the other tunnel carries on");
    wait_until(20, "the pinghost answers through tunnel 2", || lab.ping_pinghost());
    gw2.stop().await;
}

/// A gateway that dies without a word (its node fails): PID 1 of its charon container is SIGKILLed.
fn kill_without_goodbye(pod: &mut RunningPod) {
    let pid = pod.container("charon").and_then(|c| c.pid1()).expect("charon's PID 1");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "SIGKILL to charon's PID 1");
}

/// The failover and recovery the customer gets from the downloaded files, unmodified: the gateway carrying the
/// traffic dies (no IKE DELETE), stays away longer than one whole connection attempt of the device, comes back
/// as a new pod behind the same load balancer address; then the other gateway is deleted cleanly (DELETE) and
/// comes back. Figures are printed for docs/vpn.md; the bounds are the goals with room for a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_downloaded_files_fail_over_within_the_dpd_timeout_and_recover_after_any_outage() {
    let lab = Lab::new("gwfail").await;
    let mut gateways = [Some(lab.start_gateway(1).await), Some(lab.start_gateway(2).await)];
    let customer = lab.start_customer();
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    wait_until(20, "the pinghost answers", || lab.ping_pinghost());
    let dead = carrying_tunnel(&customer).expect("one tunnel carries the pings");
    let survivor = 3 - dead;
    let slot = |n: u8| usize::from(n) - 1;

    // 1. The carrying gateway dies.
    let died = std::time::Instant::now();
    kill_without_goodbye(gateways[slot(dead)].as_mut().expect("running"));
    let failover = wait_until(60, "traffic over the surviving tunnel", || lab.ping_pinghost());
    wait_until(60, "the device declares the dead gateway's tunnel down (DPD)", || {
        !established(&customer, dead)
    });
    let detected = died.elapsed();
    assert_eq!(carrying_tunnel(&customer), Some(survivor), "traffic moved");

    // 2. It stays away longer than one whole connection attempt (dead-peer detection, then a full round of
    //    retransmits): a device that gives up would never come back.
    let outage = std::time::Duration::from_secs(60);
    while died.elapsed() < outage {
        assert!(!established(&customer, dead));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(lab.ping_pinghost(), "the survivor carries throughout");
    gateways[slot(dead)].take().expect("the dead pod").stop().await;
    let returned = std::time::Instant::now();
    gateways[slot(dead)] = Some(lab.start_gateway_generation(dead, 1).await);
    wait_until(60, "the returned gateway's tunnel re-established by the device", || {
        established(&customer, dead)
    });
    let recovered = returned.elapsed();

    // 3. The other gateway is deleted cleanly (a rollout, a drain): its DELETE moves traffic at once, and the
    //    device re-initiates to the new pod.
    let deleted = std::time::Instant::now();
    gateways[slot(survivor)].take().expect("running").stop().await;
    wait_until(10, "the device drops the deleted gateway's tunnel", || {
        !established(&customer, survivor)
    });
    let clean_failover = wait_until(30, "traffic over the returned tunnel", || lab.ping_pinghost());
    let returned_clean = std::time::Instant::now();
    gateways[slot(survivor)] = Some(lab.start_gateway_generation(survivor, 1).await);
    wait_until(
        60,
        "the re-created gateway's tunnel re-established by the device",
        || established(&customer, survivor),
    );
    let recovered_clean = returned_clean.elapsed();
    assert!(established(&customer, dead), "both tunnels up again");
    println!(
        "failover and recovery with the downloaded files (gateway pods on the pod runner):\n\
         gateway {dead} killed: pings answered again after {:.1} s, tunnel declared down after {:.1} s\n\
         gateway {dead} back after a {} s outage: tunnel up {:.1} s after its pod was ready\n\
         gateway {survivor} deleted (IKE DELETE): pings answered again after {:.1} s; back {:.1} s after its new pod was ready ({:.1} s after the deletion)",
        failover.as_secs_f64(),
        detected.as_secs_f64(),
        outage.as_secs(),
        recovered.as_secs_f64(),
        clean_failover.as_secs_f64(),
        recovered_clean.as_secs_f64(),
        deleted.elapsed().as_secs_f64(),
    );
    for g in gateways.iter_mut().flatten() {
        g.stop().await;
    }
}

/// Route-based devices (Cisco IOS with a virtual tunnel interface, Juniper st0 without traffic selectors) propose
/// 0.0.0.0/0 on both sides. A charon plays such a device: the downloaded strongSwan file with both selectors
/// widened to 0.0.0.0/0, which is what the Cisco file's VTI proposes (not a tuned copy of a customer's file).
/// The gateway narrows them to the customer's network and the platform range (RFC 7296 §2.9), the device
/// accepts the narrowing, and traffic flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_based_device_proposing_any_to_any_is_narrowed_to_the_connections_networks() {
    let lab = Lab::new("gwvti").await;
    let mut gw1 = lab.start_gateway(1).await;
    let download = customer_config(&vpn(), &connection());
    let swanctl = String::from_utf8(
        download.data.as_ref().expect("data")["strongswan-swanctl.conf"]
            .0
            .clone(),
    )
    .expect("text");
    let vti = swanctl
        .replace("local_ts = 192.168.10.0/24", "local_ts = 0.0.0.0/0")
        .replace("remote_ts = 10.20.30.64/26", "remote_ts = 0.0.0.0/0");
    assert_ne!(vti, swanctl, "the selectors were widened");
    let (conf_path, timing) = (
        lab.dir.path().join("vti-swanctl.conf"),
        lab.dir.path().join("vti-timing.conf"),
    );
    std::fs::write(&conf_path, vti).expect("write");
    std::fs::write(&timing, &download.data.as_ref().expect("data")["strongswan.conf"].0).expect("write");
    let vici = lab.dir.path().join("customer.vici");
    let conf = lab.dir.path().join("customer-strongswan.conf");
    std::fs::write(&conf, customer_strongswan_conf(&vici, &timing)).expect("write strongswan.conf");
    let device = Charon::start(&lab.premises, &conf, vici, &lab.dir.path().join("customer.log"));
    device.load(&conf_path);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&device, 1));
    let sas = device.swanctl(&["--list-sas"]);
    assert!(
        sas.contains("local  192.168.10.0/24") && sas.contains("remote 10.20.30.64/26"),
        "the CHILD_SA carries exactly the connection's networks:\n{sas}"
    );
    assert!(!sas.contains("0.0.0.0/0"), "nothing wider was installed:\n{sas}");
    wait_until(20, "the pinghost answers through the narrowed tunnel", || {
        lab.ping_pinghost()
    });
    gw1.stop().await;
}
