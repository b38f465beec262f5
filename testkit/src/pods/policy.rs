//! NetworkPolicy as a CNI enforces it, for the pod runner: per pod, the policies that select it are compiled into
//! the addresses and ports it may receive from and send to ([`compile`]), then into an nftables table in its own
//! network namespace ([`render`]). The Kubernetes semantics, exactly:
//! - a pod no policy selects for a direction is not isolated in that direction;
//! - once selected, only what some rule of some selecting policy allows passes (rules add up);
//! - a connection needs the sender's egress *and* the receiver's ingress; replies of an allowed connection pass;
//! - `policyTypes` defaults to Ingress, plus Egress when the policy has egress rules;
//! - a peer is pods (podSelector within the policy's namespace, or namespaceSelector, or both), or an ipBlock with
//!   exceptions; ipBlocks match addresses outside the cluster's pod range only (how CNIs treat pod traffic, and
//!   how the project's evaluator models it);
//! - ports by number or range with a protocol (TCP by default); named ports are not compiled (the runner says so
//!   by matching nothing, never everything).
//!
//! Only traffic through the pod's `eth0` is filtered, as a CNI filters on the pod's veth: loopback (probes, a pod
//! talking to itself) and what a pod decapsulates itself (a VPN gateway's TUN device) are not. `hostNetwork` pods
//! are not isolated.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

/// A pod as policies see it.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
}

/// Who a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    /// No peers listed: everyone.
    Any,
    /// These pods' addresses, and these outside ranges (each with its exceptions).
    Some {
        pods: BTreeSet<Ipv4Addr>,
        blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)>,
    },
}

/// A port (or range) and its protocol, lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub protocol: String,
    /// `None`: every port of the protocol.
    pub range: Option<(u16, u16)>,
}

/// One rule: these peers on these ports (`None`: every port and protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peers: Peers,
    pub ports: Option<Vec<PortRange>>,
}

/// One direction of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub isolated: bool,
    pub rules: Vec<Rule>,
}

/// What one pod may receive and send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub ingress: Direction,
    pub egress: Direction,
}

/// The cluster's pod range: ipBlocks never match inside it.
pub const POD_RANGE: &str = "10.244.0.0/16";

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

fn namespace_labels(labels: &BTreeMap<String, BTreeMap<String, String>>, namespace: &str) -> BTreeMap<String, String> {
    let mut l = labels.get(namespace).cloned().unwrap_or_default();
    l.insert("kubernetes.io/metadata.name".into(), namespace.into());
    l
}

fn policy_types(policy: &NetworkPolicy) -> Vec<String> {
    let spec = policy.spec.as_ref();
    spec.and_then(|s| s.policy_types.clone()).unwrap_or_else(|| {
        let mut types = vec!["Ingress".to_owned()];
        if spec.is_some_and(|s| s.egress.is_some()) {
            types.push("Egress".to_owned());
        }
        types
    })
}

fn peers(
    list: Option<&Vec<NetworkPolicyPeer>>,
    policy_namespace: &str,
    pods: &[PodInfo],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Peers {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Peers::Any;
    };
    let mut ips = BTreeSet::new();
    let mut blocks = Vec::new();
    for peer in list {
        if let Some(block) = &peer.ip_block {
            if let Ok(cidr) = block.cidr.parse::<Ipv4Net>() {
                let except = block.except.iter().flatten().filter_map(|e| e.parse().ok()).collect();
                blocks.push((cidr, except));
            }
            continue;
        }
        for pod in pods {
            let namespace_ok = match &peer.namespace_selector {
                Some(selector) => selector_matches(selector, &namespace_labels(namespaces, &pod.namespace)),
                None => pod.namespace == policy_namespace,
            };
            let pod_ok = peer
                .pod_selector
                .as_ref()
                .is_none_or(|selector| selector_matches(selector, &pod.labels));
            if namespace_ok && pod_ok {
                ips.insert(pod.ip);
            }
        }
    }
    Peers::Some { pods: ips, blocks }
}

fn ports(list: Option<&Vec<NetworkPolicyPort>>) -> Option<Vec<PortRange>> {
    let list = list.filter(|l| !l.is_empty())?;
    Some(
        list.iter()
            .filter_map(|p| {
                let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let range = match &p.port {
                    None => None,
                    Some(IntOrString::Int(start)) => Some((*start as u16, p.end_port.unwrap_or(*start) as u16)),
                    // Not compiled: matches nothing rather than everything.
                    Some(IntOrString::String(_)) => return None,
                };
                Some(PortRange { protocol, range })
            })
            .collect(),
    )
}

/// What the policies allow `pod`, given every pod and the namespaces' labels.
pub fn compile(
    pod: &PodInfo,
    policies: &[NetworkPolicy],
    pods: &[PodInfo],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Compiled {
    let mut compiled = Compiled::default();
    for policy in policies {
        let Some(spec) = &policy.spec else { continue };
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        if namespace != pod.namespace
            || !spec
                .pod_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, &pod.labels))
        {
            continue;
        }
        let types = policy_types(policy);
        if types.iter().any(|t| t == "Ingress") {
            compiled.ingress.isolated = true;
            for rule in spec.ingress.iter().flatten() {
                compiled.ingress.rules.push(Rule {
                    peers: peers(rule.from.as_ref(), namespace, pods, namespaces),
                    ports: ports(rule.ports.as_ref()),
                });
            }
        }
        if types.iter().any(|t| t == "Egress") {
            compiled.egress.isolated = true;
            for rule in spec.egress.iter().flatten() {
                compiled.egress.rules.push(Rule {
                    peers: peers(rule.to.as_ref(), namespace, pods, namespaces),
                    ports: ports(rule.ports.as_ref()),
                });
            }
        }
    }
    compiled
}

fn in_pod_range(ip: Ipv4Addr) -> bool {
    POD_RANGE.parse::<Ipv4Net>().is_ok_and(|n| n.contains(&ip))
}

impl Direction {
    /// Whether a connection with `peer` on `protocol`/`port` passes this direction's rules.
    pub fn admits(&self, peer: Ipv4Addr, protocol: &str, port: u16) -> bool {
        let protocol = protocol.to_ascii_lowercase();
        !self.isolated
            || self.rules.iter().any(|rule| {
                let peer_ok = match &rule.peers {
                    Peers::Any => true,
                    Peers::Some { pods, blocks } => {
                        pods.contains(&peer)
                            || (!in_pod_range(peer)
                                && blocks.iter().any(|(cidr, except)| {
                                    cidr.contains(&peer) && !except.iter().any(|e| e.contains(&peer))
                                }))
                    }
                };
                let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                    ports.iter().any(|p| {
                        p.protocol == protocol && p.range.is_none_or(|(start, end)| (start..=end).contains(&port))
                    })
                });
                peer_ok && port_ok
            })
    }
}

/// Whether a connection from `from` (its compiled rules, or `None` outside the cluster) at `from_ip` to `to` at
/// `to_ip` passes: the sender's egress and the receiver's ingress.
pub fn connection_allowed(
    from: Option<&Compiled>,
    from_ip: Ipv4Addr,
    to: Option<&Compiled>,
    to_ip: Ipv4Addr,
    protocol: &str,
    port: u16,
) -> bool {
    from.is_none_or(|c| c.egress.admits(to_ip, protocol, port))
        && to.is_none_or(|c| c.ingress.admits(from_ip, protocol, port))
}

/// The table's name in each pod's namespace.
pub const TABLE: &str = "appdb_policy";

fn render_direction(out: &mut String, direction: &Direction, address: &str, hook: &str, interface: &str) {
    // Only what crosses the pod's own interface, as a CNI sees it on the pod's veth: loopback and what a pod
    // decapsulates itself (a VPN gateway's TUN device) never meet NetworkPolicy.
    out.push_str(&format!(
        "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    {interface} != \"eth0\" accept\n"
    ));
    if direction.isolated {
        out.push_str("    ct state established,related accept\n");
        for rule in &direction.rules {
            let peer_matches: Vec<String> = match &rule.peers {
                Peers::Any => vec![String::new()],
                Peers::Some { pods, blocks } => {
                    let mut m = Vec::new();
                    if !pods.is_empty() {
                        let list: Vec<String> = pods.iter().map(Ipv4Addr::to_string).collect();
                        m.push(format!("ip {address} {{ {} }} ", list.join(", ")));
                    }
                    for (cidr, except) in blocks {
                        let mut not: Vec<String> = except.iter().map(Ipv4Net::to_string).collect();
                        not.push(POD_RANGE.to_owned());
                        m.push(format!("ip {address} {cidr} ip {address} != {{ {} }} ", not.join(", ")));
                    }
                    m
                }
            };
            let port_matches: Vec<String> = match &rule.ports {
                None => vec![String::new()],
                Some(ports) => ports
                    .iter()
                    .filter(|p| matches!(p.protocol.as_str(), "tcp" | "udp" | "sctp"))
                    .map(|p| match p.range {
                        None => format!("meta l4proto {} ", p.protocol),
                        Some((a, b)) if a == b => format!("{} dport {a} ", p.protocol),
                        Some((a, b)) => format!("{} dport {a}-{b} ", p.protocol),
                    })
                    .collect(),
            };
            for peer in &peer_matches {
                for port in &port_matches {
                    out.push_str(&format!("    {peer}{port}accept\n"));
                }
            }
        }
        out.push_str("    drop\n");
    }
    out.push_str("  }\n");
}

/// The pod's nftables table (replacing the previous one in one transaction).
pub fn render(compiled: &Compiled) -> String {
    let mut out = format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    render_direction(&mut out, &compiled.ingress, "saddr", "input", "iifname");
    render_direction(&mut out, &compiled.egress, "daddr", "output", "oifname");
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn pod(ns: &str, labels: &[(&str, &str)], ip: &str) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn unselected_pods_are_open_and_selected_ones_admit_only_their_rules() {
        let db = pod("acme", &[("app", "db")], "10.244.0.5");
        let session = pod("acme", &[("app", "session")], "10.244.0.6");
        let stranger = pod("globex", &[("app", "session")], "10.244.0.7");
        let pods = [db.clone(), session.clone(), stranger.clone()];
        let policies = [policy(json!({
            "metadata": {"name": "db", "namespace": "acme"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "session"}}}], "ports": [{"port": 3306}]}]}
        }))];
        let none = BTreeMap::new();
        let for_db = compile(&db, &policies, &pods, &none);
        let for_session = compile(&session, &policies, &pods, &none);
        assert!(for_db.ingress.isolated && !for_db.egress.isolated && !for_session.ingress.isolated);
        let ip = |p: &PodInfo| p.ip;
        assert!(connection_allowed(
            Some(&for_session),
            ip(&session),
            Some(&for_db),
            ip(&db),
            "TCP",
            3306
        ));
        assert!(!connection_allowed(
            Some(&for_session),
            ip(&session),
            Some(&for_db),
            ip(&db),
            "TCP",
            22
        ));
        let for_stranger = compile(&stranger, &policies, &pods, &none);
        assert!(!connection_allowed(
            Some(&for_stranger),
            ip(&stranger),
            Some(&for_db),
            ip(&db),
            "TCP",
            3306
        ));
        let table = render(&for_db);
        assert!(
            table.contains("ip saddr { 10.244.0.6 } tcp dport 3306 accept"),
            "{table}"
        );
        assert!(table.contains("    drop\n"));
    }

    #[test]
    fn ip_blocks_match_outside_the_pod_range_with_their_exceptions() {
        let db = pod("acme", &[("app", "db")], "10.244.0.5");
        let policies = [policy(json!({
            "metadata": {"name": "p", "namespace": "acme"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                    "ports": [{"protocol": "UDP", "port": 500, "endPort": 501}]}]}
        }))];
        let compiled = compile(&db, &policies, std::slice::from_ref(&db), &BTreeMap::new());
        let egress = &compiled.egress;
        assert!(egress.admits("198.51.100.7".parse().unwrap(), "UDP", 501));
        assert!(!egress.admits("198.51.100.7".parse().unwrap(), "TCP", 500));
        assert!(!egress.admits("169.254.169.254".parse().unwrap(), "UDP", 500));
        assert!(
            !egress.admits("10.244.0.9".parse().unwrap(), "UDP", 500),
            "pods are not ipBlock addresses"
        );
        assert!(
            render(&compiled).contains(
                "ip daddr 0.0.0.0/0 ip daddr != { 169.254.169.254/32, 10.244.0.0/16 } udp dport 500-501 accept"
            )
        );
    }
}
