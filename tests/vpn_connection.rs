//! VpnConnection end to end: the real operator binary and kubectl against the test API server.

mod support;

use support::{Cluster, apply, eventually, free_port, get, spawn_operator, write_report};
use tokio::process::Child;

async fn start_operator_on(c: &Cluster, port: u16) -> Child {
    start_operator_with(c, port, &[]).await
}

async fn start_operator_with(c: &Cluster, port: u16, extra: &[&str]) -> Child {
    let mut flags = vec![
        "--allow-documentation-gateways",
        "true",
        "--vpn-gateway-image",
        "registry.example/appdb-vpn-gateway:test",
    ];
    flags.extend_from_slice(extra);
    spawn_operator(c, port, &flags).await
}

fn vpn(name: &str, cidrs: &str, extra: &str) -> String {
    format!(
        "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  network: prod\n  description: Seattle office\n  customerCidrs: [{cidrs}]\n  customerGatewayAddress: 198.51.100.7\n{extra}"
    )
}

/// CRDs, the operator (its metrics port is returned too), a namespace and a ready network.
async fn setup(c: &Cluster) -> (Child, u16) {
    c.install_crds().await;
    let port = free_port();
    let op = start_operator_on(c, port).await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/prod",
        "-n",
        "acme",
        "--timeout=30s",
    ])
    .await;
    (op, port)
}

async fn ready_reason(c: &Cluster, name: &str) -> String {
    get(
        c,
        &format!("vpn/{name}"),
        r#"{.status.conditions[?(@.type=="Ready")].reason}"#,
    )
    .await
}

async fn wait_reason(c: &Cluster, name: &str, expected: &str) {
    eventually(30, &format!("{name} Ready reason {expected}"), || async {
        (ready_reason(c, name).await == expected).then_some(())
    })
    .await;
}

async fn give_outside_address(c: &Cluster, service: &str, ip: &str) {
    // What the cloud's load balancer controller would do.
    let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{ip}"}}]}}}}}}"#);
    c.ok(&[
        "patch",
        "svc",
        service,
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
}

/// A gateway pod of tunnel `n`, Running as the kubelet would report it, with its agent's report (UP since `up`)
/// or none yet.
async fn gateway_pod(c: &Cluster, n: u8, suffix: &str, up: Option<&str>) {
    let name = format!("seattle-tunnel{n}-{suffix}");
    apply(c, &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: acme\n  labels: {{appdb.dev/role: vpn-gateway, appdb.dev/vpn: seattle, appdb.dev/tunnel: \"{n}\"}}\nspec:\n  containers: [{{name: charon, image: x}}]\n")).await;
    if let Some(since) = up {
        let report = format!(r#"{{"state":"UP","since":"{since}","message":"ESTABLISHED"}}"#);
        write_report(c, "acme", "seattle-gateway-report", &name, &report).await;
    }
    c.ok(&[
        "patch",
        "pod",
        &name,
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tunnels_keys_gateways_budget_and_customer_download() {
    let c = Cluster::start().await;
    let (_op, port) = setup(&c).await;
    apply(&c, &vpn("seattle", "192.168.10.0/24", "")).await;

    wait_reason(&c, "seattle", "WaitingForOutsideAddress").await;
    let psk = c
        .ok(&["get", "secret", "seattle-psk", "-n", "acme", "-o", "json"])
        .await;
    let psk: serde_json::Value = serde_json::from_str(&psk).unwrap();
    let decode = |k: &str| String::from_utf8(base64_decode(psk["data"][k].as_str().unwrap())).unwrap();
    let (k1, k2) = (decode("tunnel1"), decode("tunnel2"));
    for k in [&k1, &k2] {
        assert_eq!(appdb_operator::vpn::psk::validate_psk(k), Ok(()));
        assert_eq!(k.len(), 32);
    }
    assert_ne!(k1, k2, "one key per tunnel");
    for n in [1, 2] {
        let svc = format!("svc/seattle-tunnel{n}");
        assert_eq!(
            get(&c, &svc, "{.spec.type} {.spec.externalTrafficPolicy}").await,
            "LoadBalancer Local"
        );
        assert_eq!(
            get(&c, &svc, "{.spec.ports[*].protocol} {.spec.ports[*].port}").await,
            "UDP UDP 500 4500"
        );
    }
    assert_eq!(get(&c, "pdb/seattle", "{.spec.maxUnavailable}").await, "1");

    give_outside_address(&c, "seattle-tunnel1", "203.0.113.11").await;
    give_outside_address(&c, "seattle-tunnel2", "203.0.113.12").await;
    wait_reason(&c, "seattle", "Available").await;
    assert_eq!(get(&c, "vpn/seattle", "{.status.state}").await, "Available");
    assert_eq!(
        get(&c, "vpn/seattle", "{.status.tunnels[*].outsideAddress}").await,
        "203.0.113.11 203.0.113.12"
    );
    assert_eq!(
        get(&c, "vpn/seattle", "{.status.tunnels[*].state}").await,
        "DOWN DOWN",
        "no gateway pod runs here"
    );
    assert_eq!(
        get(&c, "vpn/seattle", "{.status.configSecret}").await,
        "seattle-vpn-config"
    );
    let download = c
        .ok(&["get", "secret", "seattle-vpn-config", "-n", "acme", "-o", "json"])
        .await;
    let download: serde_json::Value = serde_json::from_str(&download).unwrap();
    for (key, _) in appdb_operator::vpn::render::DEVICE_FORMATS {
        let text = String::from_utf8(base64_decode(
            download["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing")),
        ))
        .unwrap();
        if *key == "strongswan.conf" {
            // Dead-peer timing only: no address, no key.
            assert!(text.contains("retransmit_tries") && !text.contains(&k1), "{key}");
            continue;
        }
        assert!(
            text.contains("203.0.113.11") && text.contains("203.0.113.12") && text.contains(&k1) && text.contains(&k2),
            "{key}"
        );
    }
    for n in [1, 2] {
        let d = format!("deploy/seattle-tunnel{n}");
        assert_eq!(
            get(
                &c,
                &d,
                "{.spec.template.metadata.labels.appdb\\.dev/role} {.spec.template.metadata.labels.appdb\\.dev/network}"
            )
            .await,
            "vpn-gateway prod"
        );
        assert_eq!(
            get(
                &c,
                &d,
                "{.spec.template.spec.containers[0].securityContext.capabilities.add}"
            )
            .await,
            r#"["NET_ADMIN","NET_BIND_SERVICE"]"#
        );
        assert_eq!(
            get(&c, &d, "{.spec.template.spec.containers[0].image}").await,
            "registry.example/appdb-vpn-gateway:test"
        );
        assert!(
            c.kubectl(&["get", "secret", &format!("seattle-tunnel{n}-gateway"), "-n", "acme"])
                .await
                .status
                .success()
        );
    }

    // A gateway reports its tunnel UP: status and an Event follow.
    gateway_pod(&c, 1, "abc", Some("2026-11-24T06:00:00Z")).await;
    eventually(30, "the tunnel metric counts it", || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics.contains("appdb_vpn_tunnels{state=\"UP\"} 1").then_some(())
    })
    .await;
    eventually(30, "tunnel 1 UP", || async {
        (get(&c, "vpn/seattle", "{.status.tunnels[0].state}").await == "UP").then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "vpn/seattle", "{.status.tunnels[0].lastChange}").await,
        "2026-11-24T06:00:00Z"
    );

    // Keys are never regenerated, and never leave their Secrets.
    c.ok(&["annotate", "vpn", "seattle", "-n", "acme", "touch=1"]).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let again: serde_json::Value = serde_json::from_str(
        &c.ok(&["get", "secret", "seattle-psk", "-n", "acme", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(again["data"], psk["data"], "keys unchanged");
    let visible = c
        .ok(&[
            "get",
            "vpn,deploy,svc,pdb,events.events.k8s.io",
            "-n",
            "acme",
            "-o",
            "json",
        ])
        .await;
    assert!(
        !visible.contains(&k1) && !visible.contains(&k2),
        "a key leaked into status, events or workloads"
    );

    // Never both down: a change reaches tunnel 2 only once tunnel 1 runs it *and carries again*. The test plays
    // the kubelet (pods, Deployment status) and the gateways' agents (reports); the timeline is printed.
    gateway_pod(&c, 2, "abc", Some("2026-11-24T06:00:00Z")).await;
    eventually(30, "both tunnels UP", || async {
        (get(&c, "vpn/seattle", "{.status.tunnels[*].state}").await == "UP UP").then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let mut timeline: Vec<String> = Vec::new();
    let mut mark = |what: &str| timeline.push(format!("{:>6.2} s  {what}", started.elapsed().as_secs_f64()));
    let digest = |n: u8| {
        let c = &c;
        async move {
            get(
                c,
                &format!("deploy/seattle-tunnel{n}"),
                "{.spec.template.metadata.annotations.appdb\\.dev/config-digest}",
            )
            .await
        }
    };
    let (before1, before2) = (digest(1).await, digest(2).await);
    apply(&c, &vpn("seattle", "192.168.10.0/24, 192.168.20.0/24", "")).await;
    mark("spec changed (a second customer network)");
    eventually(30, "tunnel 1 updated", || async {
        (digest(1).await != before1).then_some(())
    })
    .await;
    mark("tunnel 1's Deployment has the new configuration; tunnel 2's keeps the old");
    assert_eq!(digest(2).await, before2, "tunnel 2 waits");
    // Recreate: the old gateway goes, the new one starts and becomes available, but its tunnel is not up yet.
    c.ok(&["delete", "pod", "seattle-tunnel1-abc", "-n", "acme", "--wait=false"])
        .await;
    gateway_pod(&c, 1, "def", None).await;
    let generation = get(&c, "deploy/seattle-tunnel1", "{.metadata.generation}").await;
    let status = format!(
        r#"{{"status":{{"observedGeneration":{generation},"replicas":1,"updatedReplicas":1,"availableReplicas":1,"readyReplicas":1}}}}"#
    );
    c.ok(&[
        "patch",
        "deploy",
        "seattle-tunnel1",
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
    .await;
    mark("tunnel 1's new gateway is available; its tunnel is not up yet");
    eventually(30, "the rollout is reported", || async {
        (get(
            &c,
            "vpn/seattle",
            r#"{.status.conditions[?(@.type=="Reconciling")].reason}"#,
        )
        .await
            == "RollingOut")
            .then_some(())
    })
    .await;
    assert_eq!(get(&c, "vpn/seattle", "{.status.tunnels[0].state}").await, "UNKNOWN");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        digest(2).await,
        before2,
        "tunnel 2 is the only tunnel carrying: it waits"
    );
    mark("tunnel 2 still waits (tunnel 1 UNKNOWN, tunnel 2 UP)");
    write_report(
        &c,
        "acme",
        "seattle-gateway-report",
        "seattle-tunnel1-def",
        r#"{"state":"UP","since":"2026-11-24T06:05:00Z","message":"ESTABLISHED"}"#,
    )
    .await;
    mark("tunnel 1 reports UP");
    eventually(30, "tunnel 2 updated after tunnel 1 carries again", || async {
        (digest(2).await != before2).then_some(())
    })
    .await;
    mark("tunnel 2's Deployment has the new configuration");
    eprintln!("rollout timeline:\n{}", timeline.join("\n"));

    // The gateways own the pinghost and relay each database of the network to its stable Service.
    assert!(
        c.kubectl(&[
            "get",
            "sa/seattle-gateway",
            "role/seattle-gateway",
            "rolebinding/seattle-gateway",
            "-n",
            "acme"
        ])
        .await
        .status
        .success()
    );
    let script = get(
        &c,
        "deploy/seattle-tunnel1",
        "{.spec.template.spec.containers[0].command[2]}",
    )
    .await;
    assert!(script.contains("ip addr replace 10.20.30.65/32 dev lo"), "{script}");
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    eventually(30, "database StatefulSet", || async {
        c.kubectl(&["get", "sts", "orders", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    c.ok(&[
        "patch",
        "sts",
        "orders",
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
    ])
    .await;
    eventually(30, "tunnel 1's agent relays the database", || async {
        let args = get(&c, "deploy/seattle-tunnel1", "{.spec.template.spec.containers[1].args}").await;
        args.contains("10.20.30.74:3306=orders.acme.svc.cluster.local:3306")
            .then_some(())
    })
    .await;
    // Once both gateways carry it, the status says so: what a migration to this network waits for.
    eventually(30, "the status lists the relayed database", || async {
        (get(&c, "vpn/seattle", "{.status.relayedAddresses}").await == r#"["10.20.30.74"]"#).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_customer_side_and_keys_have_reasons() {
    let c = Cluster::start().await;
    let (_op, _) = setup(&c).await;
    apply(&c, &vpn("overlap", "10.20.0.0/16", "")).await;
    wait_reason(&c, "overlap", "CustomerCidrOverlap").await;
    assert_eq!(
        get(
            &c,
            "vpn/overlap",
            r#"{.status.conditions[?(@.type=="Stalled")].status}"#
        )
        .await,
        "True"
    );
    apply(&c, &vpn("reserved", "10.244.0.0/24", "")).await;
    wait_reason(&c, "reserved", "CustomerCidrOverlap").await;
    apply(&c, &vpn("twice", "192.168.0.0/16, 192.168.10.0/24", "")).await;
    wait_reason(&c, "twice", "CustomerCidrOverlap").await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: own-psk, namespace: acme}\nstringData: {key: 0badkey-with-dash}\n").await;
    apply(
        &c,
        &vpn(
            "ownkey",
            "192.168.10.0/24",
            "  tunnelOptions:\n  - pskSecretRef: {name: own-psk, key: key}\n",
        ),
    )
    .await;
    wait_reason(&c, "ownkey", "InvalidPsk").await;
    let message = get(&c, "vpn/ownkey", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("tunnel 1") && !message.contains("0badkey"),
        "{message}"
    );
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: own-psk, namespace: acme}\nstringData: {key: Good.key_for_tunnel_one}\n").await;
    wait_reason(&c, "ownkey", "WaitingForOutsideAddress").await;
    // A generated key edited by hand into something that would end the configuration's `secret = "…"` line and
    // open a section of its own: refused, never written.
    apply(&c, &vpn("edited", "192.168.10.0/24", "")).await;
    wait_reason(&c, "edited", "WaitingForOutsideAddress").await;
    apply(
        &c,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: edited-psk, namespace: acme}\nstringData: {tunnel1: \"Key_ok_12345\\\"\\n}\\nsecrets {\\n\"}\n",
    )
    .await;
    wait_reason(&c, "edited", "InvalidPsk").await;
    let message = get(&c, "vpn/edited", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("edited-psk key tunnel1") && !message.contains("Key_ok"),
        "{message}"
    );
    // A Secret with the generated keys' name, made by the customer (keys it chose, perhaps shared elsewhere): never
    // taken as the operator's.
    apply(
        &c,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: preseed-psk, namespace: acme}\nstringData: {tunnel1: Chosen_key_one1, tunnel2: Chosen_key_two2}\n",
    )
    .await;
    apply(&c, &vpn("preseed", "192.168.10.0/24", "")).await;
    wait_reason(&c, "preseed", "NameInUse").await;
    let message = get(&c, "vpn/preseed", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("Secret preseed-psk already exists") && !message.contains("Chosen_key"),
        "{message}"
    );
    assert_eq!(get(&c, "secret/preseed-psk", "{.metadata.ownerReferences}").await, "");
    apply(
        &c,
        &vpn("lost", "192.168.10.0/24", "").replace("network: prod", "network: nowhere"),
    )
    .await;
    wait_reason(&c, "lost", "NetworkNotFound").await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_gateways_use_their_nodes_address() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let _op = start_operator_with(&c, free_port(), &["--vpn-exposure", "host-network"]).await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/prod",
        "-n",
        "acme",
        "--timeout=30s",
    ])
    .await;
    apply(&c, &vpn("seattle", "192.168.10.0/24", "")).await;

    // The gateways start before their addresses are known: they learn them from their node.
    eventually(30, "gateway Deployments", || async {
        c.kubectl(&["get", "deploy/seattle-tunnel1", "deploy/seattle-tunnel2", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "deploy/seattle-tunnel1", "{.spec.template.spec.hostNetwork}").await,
        "true"
    );
    let required = get(
        &c,
        "deploy/seattle-tunnel1",
        "{.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey}",
    )
    .await;
    assert_eq!(
        required, "kubernetes.io/hostname",
        "the two gateways never share a node"
    );
    assert_eq!(get(&c, "svc/seattle-tunnel1", "{.spec.type}").await, "ClusterIP");
    wait_reason(&c, "seattle", "WaitingForOutsideAddress").await;

    // What the scheduler and kubelet would do: place each gateway pod on a node.
    for (n, node_ip) in [(1, "203.0.113.21"), (2, "203.0.113.22")] {
        apply(&c, &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: seattle-tunnel{n}-x\n  namespace: acme\n  labels: {{appdb.dev/role: vpn-gateway, appdb.dev/vpn: seattle, appdb.dev/tunnel: \"{n}\"}}\nspec:\n  containers: [{{name: charon, image: x}}]\n")).await;
        let status = format!(r#"{{"status":{{"hostIP":"{node_ip}"}}}}"#);
        c.ok(&[
            "patch",
            "pod",
            &format!("seattle-tunnel{n}-x"),
            "-n",
            "acme",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
    }
    wait_reason(&c, "seattle", "Available").await;
    assert_eq!(
        get(&c, "vpn/seattle", "{.status.tunnels[*].outsideAddress}").await,
        "203.0.113.21 203.0.113.22"
    );
    let download = c
        .ok(&[
            "get",
            "secret",
            "seattle-vpn-config",
            "-n",
            "acme",
            "-o",
            "jsonpath={.data.generic\\.txt}",
        ])
        .await;
    let generic = String::from_utf8(base64_decode(&download)).unwrap();
    assert!(
        generic.contains("Platform outside address: 203.0.113.21")
            && generic.contains("Platform outside address: 203.0.113.22"),
        "{generic}"
    );
    let gateway = c
        .ok(&[
            "get",
            "secret",
            "seattle-tunnel1-gateway",
            "-n",
            "acme",
            "-o",
            "jsonpath={.data.swanctl\\.conf}",
        ])
        .await;
    let gateway = String::from_utf8(base64_decode(&gateway)).unwrap();
    assert!(
        gateway.contains("id = ${APPDB_OUTSIDE_ADDRESS}"),
        "the pod fills in its own address: {gateway}"
    );
}

/// A namespace whose Pod Security level refuses the gateway pods (they need NET_ADMIN as root) gets no gateway
/// objects and a reason on the VpnConnection, instead of a Deployment whose pods are refused unseen; relabelling
/// the namespace `privileged` (what docs/vpn.md tells the platform to do) builds them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_that_refuses_privileged_pods_is_named_and_relabelling_it_proceeds() {
    let c = Cluster::start().await;
    let (_op, _) = setup(&c).await;
    c.ok(&[
        "label",
        "namespace",
        "acme",
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .await;
    apply(&c, &vpn("seattle", "192.168.10.0/24", "")).await;
    wait_reason(&c, "seattle", "PodSecurityForbidsGateway").await;
    let message = get(&c, "vpn/seattle", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("enforces the \"restricted\" Pod Security level")
            && message.contains("pod-security.kubernetes.io/enforce=privileged"),
        "{message}"
    );
    assert_eq!(
        get(
            &c,
            "vpn/seattle",
            r#"{.status.conditions[?(@.type=="Stalled")].status}"#
        )
        .await,
        "True"
    );
    assert!(
        !c.kubectl(&["get", "deployment", "seattle-tunnel1", "-n", "acme"])
            .await
            .status
            .success(),
        "no gateway Deployment in a namespace that would refuse its pods"
    );

    c.ok(&[
        "label",
        "namespace",
        "acme",
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    ])
    .await;
    eventually(30, "the gateways once the namespace admits them", || async {
        c.kubectl(&["get", "svc", "seattle-tunnel1", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    assert_ne!(ready_reason(&c, "seattle").await, "PodSecurityForbidsGateway");
}

/// The gateway pods face the internet: their identity may get and patch their connection's report ConfigMap and
/// nothing else — not a pod (they used to report on their own pod, which let them patch every pod of the
/// namespace), not another ConfigMap, not a Secret — as the test API server's RBAC answers `kubectl auth can-i`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_may_write_its_own_report_and_nothing_else() {
    let c = Cluster::start().await;
    let (_op, _) = setup(&c).await;
    apply(&c, &vpn("seattle", "192.168.10.0/24", "")).await;
    eventually(30, "the tunnel Services", || async {
        c.kubectl(&["get", "svc", "seattle-tunnel1", "seattle-tunnel2", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    give_outside_address(&c, "seattle-tunnel1", "203.0.113.10").await;
    give_outside_address(&c, "seattle-tunnel2", "203.0.113.11").await;
    eventually(30, "the gateway's RoleBinding", || async {
        c.kubectl(&["get", "rolebinding", "seattle-gateway", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    let gateway = "system:serviceaccount:acme:seattle-gateway";
    let c = &c;
    let can = |args: &'static [&'static str]| async move {
        let mut argv = vec!["auth", "can-i"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["-n", "acme", "--as", gateway]);
        String::from_utf8_lossy(&c.kubectl(&argv).await.stdout)
            .trim()
            .to_owned()
    };
    assert_eq!(can(&["patch", "configmap/seattle-gateway-report"]).await, "yes");
    assert_eq!(can(&["get", "configmap/seattle-gateway-report"]).await, "yes");
    for denied in [
        &["patch", "pods"][..],
        &["get", "pods"],
        &["patch", "pod/orders-0"],
        &["patch", "configmap/orders-config"],
        &["list", "configmaps"],
        &["get", "secrets"],
        &["create", "configmaps"],
    ] {
        assert_eq!(can(denied).await, "no", "{denied:?}");
    }
}
