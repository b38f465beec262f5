//! A NetworkPolicy evaluator: "may A reach B on this port?", with the semantics of the Kubernetes API for the
//! features the operator's policies use (pod and namespace selectors with match labels and expressions, IP blocks
//! with exceptions, ports with protocols, policy types). IP blocks match endpoints outside the cluster only, which is
//! how CNIs treat pod traffic in practice.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

/// One end of a connection.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A pod in the cluster.
    Pod {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    /// An address outside the cluster (internet, premises, another customer's range).
    External(Ipv4Addr),
}

impl Endpoint {
    pub fn pod(namespace: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint::Pod {
            namespace: namespace.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

/// The cluster the policies live in: every policy, and the labels of each namespace.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub policies: Vec<NetworkPolicy>,
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

impl Cluster {
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespace_labels.get(namespace).cloned().unwrap_or_default();
        // Kubernetes labels every namespace with its own name.
        labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        labels
    }

    fn peer_matches(&self, peer: &NetworkPolicyPeer, policy_namespace: &str, other: &Endpoint) -> bool {
        match other {
            Endpoint::External(ip) => peer.ip_block.as_ref().is_some_and(|block| {
                let in_cidr = block.cidr.parse::<Ipv4Net>().is_ok_and(|n| n.contains(ip));
                let excepted = block
                    .except
                    .iter()
                    .flatten()
                    .any(|e| e.parse::<Ipv4Net>().is_ok_and(|n| n.contains(ip)));
                in_cidr && !excepted
            }),
            Endpoint::Pod { namespace, labels } => {
                if peer.ip_block.is_some() {
                    return false;
                }
                let namespace_ok = match &peer.namespace_selector {
                    Some(sel) => selector_matches(sel, &self.namespace_labels(namespace)),
                    None => namespace == policy_namespace,
                };
                let pod_ok = peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, labels));
                namespace_ok && pod_ok
            }
        }
    }

    fn port_matches(ports: &Option<Vec<NetworkPolicyPort>>, protocol: &str, number: u16) -> bool {
        ports.as_ref().is_none_or(|ports| {
            ports.is_empty()
                || ports.iter().any(|p| {
                    let proto_ok = p.protocol.as_deref().unwrap_or("TCP") == protocol;
                    let port_ok = match &p.port {
                        None => true,
                        Some(IntOrString::Int(start)) => {
                            let end = p.end_port.unwrap_or(*start);
                            (*start..=end).contains(&i32::from(number))
                        }
                        // Named ports are not used by the operator's policies.
                        Some(IntOrString::String(_)) => false,
                    };
                    proto_ok && port_ok
                })
        })
    }

    /// Policies in `namespace` selecting `labels` for `direction` ("Ingress" or "Egress").
    fn selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
        direction: &'a str,
    ) -> impl Iterator<Item = &'a NetworkPolicy> {
        self.policies.iter().filter(move |p| {
            let spec = p.spec.as_ref();
            let types = spec.and_then(|s| s.policy_types.clone()).unwrap_or_else(|| {
                let mut t = vec!["Ingress".to_owned()];
                if spec.is_some_and(|s| s.egress.is_some()) {
                    t.push("Egress".to_owned());
                }
                t
            });
            p.metadata.namespace.as_deref() == Some(namespace)
                && types.iter().any(|t| t == direction)
                && spec
                    .and_then(|s| s.pod_selector.as_ref())
                    .is_none_or(|sel| selector_matches(sel, labels))
        })
    }

    fn egress_allows(&self, from: &Endpoint, to: &Endpoint, protocol: &str, port: u16) -> bool {
        let Endpoint::Pod { namespace, labels } = from else {
            return true;
        };
        let mut selected = self.selecting(namespace, labels, "Egress").peekable();
        if selected.peek().is_none() {
            return true;
        }
        selected.any(|p| {
            p.spec.as_ref().and_then(|s| s.egress.as_ref()).is_some_and(|rules| {
                rules.iter().any(|r| {
                    let peer_ok = r.to.as_ref().is_none_or(|peers| {
                        peers.is_empty() || peers.iter().any(|peer| self.peer_matches(peer, namespace, to))
                    });
                    peer_ok && Self::port_matches(&r.ports, protocol, port)
                })
            })
        })
    }

    fn ingress_allows(&self, from: &Endpoint, to: &Endpoint, protocol: &str, port: u16) -> bool {
        let Endpoint::Pod { namespace, labels } = to else {
            return true;
        };
        let mut selected = self.selecting(namespace, labels, "Ingress").peekable();
        if selected.peek().is_none() {
            return true;
        }
        selected.any(|p| {
            p.spec.as_ref().and_then(|s| s.ingress.as_ref()).is_some_and(|rules| {
                rules.iter().any(|r| {
                    let peer_ok = r.from.as_ref().is_none_or(|peers| {
                        peers.is_empty() || peers.iter().any(|peer| self.peer_matches(peer, namespace, from))
                    });
                    peer_ok && Self::port_matches(&r.ports, protocol, port)
                })
            })
        })
    }

    /// Whether `from` may open a connection to `to` on `protocol`/`port`.
    pub fn allows(&self, from: &Endpoint, to: &Endpoint, protocol: &str, port: u16) -> bool {
        self.egress_allows(from, to, protocol, port) && self.ingress_allows(from, to, protocol, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::{IsolationConfig, customer_policies, database_policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn cluster() -> Cluster {
        let config = IsolationConfig {
            api_server: vec!["172.18.0.2:6443".parse().unwrap(), "10.96.0.1:443".parse().unwrap()],
            ..Default::default()
        };
        let owner = OwnerReference::default();
        let mut policies = customer_policies("acme", &[], &config);
        policies.extend(customer_policies("globex", &[], &config));
        policies.push(database_policy("acme", "orders", "prod", owner.clone()));
        policies.push(database_policy("globex", "orders", "main", owner));
        Cluster {
            policies,
            namespace_labels: BTreeMap::new(),
        }
    }

    fn ext(s: &str) -> Endpoint {
        Endpoint::External(s.parse().unwrap())
    }

    #[test]
    fn isolation_table() {
        let c = cluster();
        let session = |ns: &str| Endpoint::pod(ns, &[("appdb.dev/role", "session")]);
        let database =
            |ns: &str| Endpoint::pod(ns, &[("appdb.dev/role", "database"), ("appdb.dev/database", "orders")]);
        let gateway = |ns: &str| Endpoint::pod(ns, &[("appdb.dev/role", "vpn-gateway"), ("appdb.dev/network", "prod")]);
        let other_network_gateway = Endpoint::pod(
            "acme",
            &[("appdb.dev/role", "vpn-gateway"), ("appdb.dev/network", "old")],
        );
        let job = |ns: &str| Endpoint::pod(ns, &[("appdb.dev/role", "operator-job")]);
        let stranger = |ns: &str| Endpoint::pod(ns, &[("app", "something-else")]);
        let dns = Endpoint::pod("kube-system", &[("k8s-app", "kube-dns")]);

        let cases: &[(&str, Endpoint, Endpoint, &str, u16, bool)] = &[
            (
                "session reaches its own database",
                session("acme"),
                database("acme"),
                "TCP",
                3306,
                true,
            ),
            (
                "session cannot reach another customer's database",
                session("acme"),
                database("globex"),
                "TCP",
                3306,
                false,
            ),
            (
                "another customer's session cannot reach this database",
                session("globex"),
                database("acme"),
                "TCP",
                3306,
                false,
            ),
            (
                "session reaches its database only on the MySQL port",
                session("acme"),
                database("acme"),
                "TCP",
                22,
                false,
            ),
            ("session resolves names", session("acme"), dns.clone(), "UDP", 53, true),
            (
                "session resolves names over TCP",
                session("acme"),
                dns.clone(),
                "TCP",
                53,
                true,
            ),
            (
                "session reaches the internet",
                session("acme"),
                ext("93.184.216.34"),
                "TCP",
                443,
                true,
            ),
            (
                "session cannot reach another customer's /26",
                session("acme"),
                ext("10.20.30.70"),
                "TCP",
                3306,
                false,
            ),
            (
                "session cannot reach an on-premise network",
                session("acme"),
                ext("192.168.10.5"),
                "TCP",
                445,
                false,
            ),
            (
                "session cannot reach 172.16/12",
                session("acme"),
                ext("172.20.1.1"),
                "TCP",
                80,
                false,
            ),
            (
                "session cannot reach the cloud metadata endpoint",
                session("acme"),
                ext("169.254.169.254"),
                "TCP",
                80,
                false,
            ),
            (
                "session cannot reach shared address space",
                session("acme"),
                ext("100.64.0.1"),
                "TCP",
                80,
                false,
            ),
            (
                "VPN gateway reaches its databases",
                gateway("acme"),
                database("acme"),
                "TCP",
                3306,
                true,
            ),
            (
                "VPN gateway cannot reach another customer's database",
                gateway("acme"),
                database("globex"),
                "TCP",
                3306,
                false,
            ),
            (
                "a gateway of another network of the customer cannot reach the database",
                other_network_gateway.clone(),
                database("acme"),
                "TCP",
                3306,
                false,
            ),
            (
                "VPN gateway accepts IKE from the internet",
                ext("198.51.100.7"),
                gateway("acme"),
                "UDP",
                500,
                true,
            ),
            (
                "VPN gateway accepts NAT-T from the internet",
                ext("198.51.100.7"),
                gateway("acme"),
                "UDP",
                4500,
                true,
            ),
            (
                "VPN gateway accepts nothing else",
                ext("198.51.100.7"),
                gateway("acme"),
                "TCP",
                22,
                false,
            ),
            (
                "VPN gateway cannot open connections into premises",
                gateway("acme"),
                ext("192.168.10.5"),
                "TCP",
                445,
                false,
            ),
            (
                "VPN gateway may initiate IKE to a public peer",
                gateway("acme"),
                ext("198.51.100.7"),
                "UDP",
                500,
                true,
            ),
            (
                "VPN gateway's agent reports to the API server",
                gateway("acme"),
                ext("172.18.0.2"),
                "TCP",
                6443,
                true,
            ),
            (
                "VPN gateway reaches the API server only on its port",
                gateway("acme"),
                ext("172.18.0.2"),
                "TCP",
                22,
                false,
            ),
            (
                "a session cannot reach the API server through the gateways' rule",
                session("acme"),
                ext("172.18.0.2"),
                "TCP",
                6443,
                false,
            ),
            (
                "operator job reaches the database",
                job("acme"),
                database("acme"),
                "TCP",
                3306,
                true,
            ),
            (
                "an unlabelled pod of the customer cannot reach the database",
                stranger("acme"),
                database("acme"),
                "TCP",
                3306,
                false,
            ),
            (
                "the internet cannot reach the database",
                ext("93.184.216.34"),
                database("acme"),
                "TCP",
                3306,
                false,
            ),
            (
                "a database reaches another database of its namespace (replication)",
                database("acme"),
                Endpoint::pod(
                    "acme",
                    &[("appdb.dev/role", "database"), ("appdb.dev/database", "orders-new")],
                ),
                "TCP",
                3306,
                true,
            ),
            (
                "a database resolves names",
                database("acme"),
                dns.clone(),
                "UDP",
                53,
                true,
            ),
            (
                "a database cannot reach the cloud metadata address",
                database("acme"),
                ext("169.254.169.254"),
                "TCP",
                80,
                false,
            ),
            (
                "a database cannot reach the internet",
                database("acme"),
                ext("93.184.216.34"),
                "TCP",
                443,
                false,
            ),
            (
                "a database cannot reach the API server",
                database("acme"),
                ext("172.18.0.2"),
                "TCP",
                6443,
                false,
            ),
            (
                "a database cannot reach another customer's database",
                database("acme"),
                database("globex"),
                "TCP",
                3306,
                false,
            ),
            (
                "a database cannot reach another customer's gateway",
                database("acme"),
                gateway("globex"),
                "UDP",
                500,
                false,
            ),
            (
                "a database cannot reach the operator's metrics",
                database("acme"),
                Endpoint::pod("appdb-system", &[("app.kubernetes.io/name", "appdb-operator")]),
                "TCP",
                8080,
                false,
            ),
            (
                "an operator job reports to the API server",
                job("acme"),
                ext("172.18.0.2"),
                "TCP",
                6443,
                true,
            ),
            (
                "an operator job resolves names",
                job("acme"),
                dns.clone(),
                "UDP",
                53,
                true,
            ),
            (
                "an operator job cannot reach the cloud metadata address",
                job("acme"),
                ext("169.254.169.254"),
                "TCP",
                80,
                false,
            ),
            (
                "an operator job cannot reach another customer's database",
                job("acme"),
                database("globex"),
                "TCP",
                3306,
                false,
            ),
            (
                "nothing connects to an operator job",
                session("acme"),
                job("acme"),
                "TCP",
                8080,
                false,
            ),
            (
                "unrelated pods are not restricted by the customer policies",
                stranger("acme"),
                ext("10.1.1.1"),
                "TCP",
                80,
                true,
            ),
        ];
        for (what, from, to, proto, port, expected) in cases {
            assert_eq!(c.allows(from, to, proto, *port), *expected, "{what}");
        }
    }

    #[test]
    fn no_policy_means_allowed() {
        let c = Cluster::default();
        assert!(c.allows(&Endpoint::pod("a", &[]), &Endpoint::pod("b", &[]), "TCP", 1));
    }

    #[test]
    fn selector_expressions() {
        let labels: BTreeMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        let sel = |op: &str, vals: &[&str]| LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "a".into(),
                    operator: op.into(),
                    values: Some(vals.iter().map(|s| s.to_string()).collect()),
                },
            ]),
            match_labels: None,
        };
        assert!(selector_matches(&sel("In", &["1", "2"]), &labels));
        assert!(!selector_matches(&sel("NotIn", &["1"]), &labels));
        assert!(selector_matches(&sel("Exists", &[]), &labels));
        assert!(!selector_matches(&sel("DoesNotExist", &[]), &labels));
    }
}
