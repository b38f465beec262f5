//! The pod runner's NetworkPolicy compiler (testkit::pods::policy, what the test cluster enforces with packets)
//! against the project's evaluator (src/netpol/evaluate.rs, what the operator's own tests reason with): on the
//! operator's policies and on hand-written ones covering every feature, for every pair of endpoints and a set of
//! ports, both must give the same answer. Where they disagree, one of them is wrong.

use std::{collections::BTreeMap, net::Ipv4Addr};

use appdb_operator::netpol::{
    IsolationConfig, customer_policies, database_policy,
    evaluate::{Cluster, Endpoint},
};
use appdb_testkit::pods::policy::{Compiled, PodInfo, compile, connection_allowed};
use k8s_openapi::{api::networking::v1::NetworkPolicy, apimachinery::pkg::apis::meta::v1::OwnerReference};
use serde_json::json;

/// An endpoint both sides understand: a pod (with its address) or an outside address.
#[derive(Clone)]
struct Point {
    name: String,
    pod: Option<PodInfo>,
    ip: Ipv4Addr,
}

fn pod(name: &str, ns: &str, labels: &[(&str, &str)], ip: &str) -> Point {
    Point {
        name: name.into(),
        pod: Some(PodInfo {
            namespace: ns.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ip: ip.parse().unwrap(),
        }),
        ip: ip.parse().unwrap(),
    }
}

fn outside(ip: &str) -> Point {
    Point {
        name: format!("outside {ip}"),
        pod: None,
        ip: ip.parse().unwrap(),
    }
}

fn endpoint(p: &Point) -> Endpoint {
    match &p.pod {
        Some(info) => Endpoint::Pod {
            namespace: info.namespace.clone(),
            labels: info.labels.clone(),
        },
        None => Endpoint::External(p.ip),
    }
}

/// Every (from, to, protocol, port): the evaluator's answer and the compiled rules' answer.
fn compare(
    policies: Vec<NetworkPolicy>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    points: &[Point],
) -> usize {
    let pods: Vec<PodInfo> = points.iter().filter_map(|p| p.pod.clone()).collect();
    let compiled: Vec<Option<Compiled>> = points
        .iter()
        .map(|p| p.pod.as_ref().map(|info| compile(info, &policies, &pods, &namespaces)))
        .collect();
    let cluster = Cluster {
        policies,
        namespace_labels: namespaces,
    };
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for (i, from) in points.iter().enumerate() {
        for (j, to) in points.iter().enumerate() {
            if i == j || (from.pod.is_none() && to.pod.is_none()) {
                continue;
            }
            for (protocol, port) in [
                ("TCP", 3306),
                ("TCP", 22),
                ("UDP", 53),
                ("TCP", 53),
                ("UDP", 500),
                ("UDP", 4500),
                ("TCP", 8080),
                ("TCP", 443),
                ("TCP", 6443),
            ] {
                let evaluator = cluster.allows(&endpoint(from), &endpoint(to), protocol, port);
                let runner = connection_allowed(
                    compiled[i].as_ref(),
                    from.ip,
                    compiled[j].as_ref(),
                    to.ip,
                    protocol,
                    port,
                );
                checked += 1;
                if evaluator != runner {
                    disagreements.push(format!(
                        "{} → {} {protocol}/{port}: evaluator {evaluator}, compiled {runner}",
                        from.name, to.name
                    ));
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    checked
}

fn points() -> Vec<Point> {
    let role = |r: &'static str| ("appdb.dev/role", r);
    vec![
        pod("acme session", "acme", &[role("session")], "10.244.0.10"),
        pod(
            "acme database",
            "acme",
            &[role("database"), ("appdb.dev/database", "orders")],
            "10.244.0.11",
        ),
        pod(
            "acme gateway",
            "acme",
            &[role("vpn-gateway"), ("appdb.dev/network", "prod")],
            "10.244.0.12",
        ),
        pod(
            "acme old gateway",
            "acme",
            &[role("vpn-gateway"), ("appdb.dev/network", "old")],
            "10.244.0.13",
        ),
        pod("acme job", "acme", &[role("operator-job")], "10.244.0.14"),
        pod("acme stranger", "acme", &[("app", "something-else")], "10.244.0.15"),
        pod("globex session", "globex", &[role("session")], "10.244.0.20"),
        pod(
            "globex database",
            "globex",
            &[role("database"), ("appdb.dev/database", "orders")],
            "10.244.0.21",
        ),
        pod(
            "globex gateway",
            "globex",
            &[role("vpn-gateway"), ("appdb.dev/network", "main")],
            "10.244.0.22",
        ),
        pod("dns", "kube-system", &[("k8s-app", "kube-dns")], "10.244.0.2"),
        pod(
            "operator",
            "appdb-system",
            &[("app.kubernetes.io/name", "appdb-operator")],
            "10.244.0.3",
        ),
        outside("93.184.216.34"),
        outside("198.51.100.7"),
        outside("10.20.30.70"),
        outside("192.168.10.5"),
        outside("172.20.1.1"),
        outside("169.254.169.254"),
        outside("100.64.0.1"),
    ]
}

#[test]
fn the_operators_policies_compile_to_what_the_evaluator_says() {
    // The gateways' way to the API server: one outside address and port.
    let config = IsolationConfig {
        api_server: vec!["172.20.1.1:6443".parse().unwrap()],
        ..Default::default()
    };
    let owner = OwnerReference::default();
    let mut policies = customer_policies("acme", &[], &config);
    policies.extend(customer_policies("globex", &[], &config));
    policies.push(database_policy("acme", "orders", "prod", owner.clone()));
    policies.push(database_policy("globex", "orders", "main", owner));
    let checked = compare(policies, BTreeMap::new(), &points());
    assert!(checked > 2000, "{checked}");
}

#[test]
fn every_feature_compiles_to_what_the_evaluator_says() {
    let policy = |v: serde_json::Value| -> NetworkPolicy { serde_json::from_value(v).unwrap() };
    let policies = vec![
        // Ingress by namespace labels and match expressions, both selectors in one peer.
        policy(json!({"metadata": {"name": "a", "namespace": "acme"}, "spec": {
            "podSelector": {"matchExpressions": [{"key": "appdb.dev/role", "operator": "In", "values": ["database"]}]},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "trusted"}},
                                   "podSelector": {"matchExpressions": [{"key": "appdb.dev/role", "operator": "Exists"}]}}],
                         "ports": [{"port": 3306}, {"protocol": "UDP", "port": 500, "endPort": 4500}]}]}})),
        // Egress only, with an ipBlock and exceptions, and a rule without ports.
        policy(json!({"metadata": {"name": "b", "namespace": "globex"}, "spec": {
            "podSelector": {"matchLabels": {"appdb.dev/role": "session"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.0.0.0/8"]}}]},
                       {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}]}]}})),
        // Deny all ingress in a namespace (empty rule list), and an allow-all egress (empty rule).
        policy(json!({"metadata": {"name": "c", "namespace": "kube-system"}, "spec": {
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{}]}})),
        // Ingress from anywhere on one port, NotIn and DoesNotExist.
        policy(json!({"metadata": {"name": "d", "namespace": "acme"}, "spec": {
            "podSelector": {"matchExpressions": [{"key": "appdb.dev/role", "operator": "NotIn", "values": ["database", "session"]},
                                                  {"key": "app", "operator": "DoesNotExist"}]},
            "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}})),
    ];
    let namespaces = BTreeMap::from([(
        "acme".to_owned(),
        BTreeMap::from([("tier".to_owned(), "trusted".to_owned())]),
    )]);
    let checked = compare(policies, namespaces, &points());
    assert!(checked > 2000, "{checked}");
}
