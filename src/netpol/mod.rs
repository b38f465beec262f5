//! Customer isolation: the NetworkPolicies of a customer namespace, rendered from one description.
//!
//! - Database pods (`appdb.dev/role: database`) accept MySQL traffic only from the same namespace's sessions and
//!   operator jobs, and (per database) from the VPN gateways of the network the database lives on; they reach only
//!   the namespace's other databases (replication) and DNS.
//! - Operator jobs (`appdb.dev/role: operator-job`) accept nothing and reach the databases, DNS and the API server.
//! - Sessions (`appdb.dev/role: session`) may reach their own databases, the cluster DNS and the internet, but no
//!   private, shared or link-local address: not another customer's range, not an on-premise network, not the cloud
//!   metadata endpoint.
//! - VPN gateways (`appdb.dev/role: vpn-gateway`) accept IKE/NAT-T (UDP 500, 4500) from anywhere and may reach their
//!   own databases, DNS and public IKE peers; nothing routes from the cluster to premises.

pub mod evaluate;

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

use crate::mysql::PORT as MYSQL_PORT;
use crate::names::{
    LABEL_DATABASE, LABEL_MANAGED_BY, LABEL_NETWORK, LABEL_ROLE, MANAGED_BY, ROLE_DATABASE, ROLE_OPERATOR_JOB,
    ROLE_SESSION, ROLE_VPN_GATEWAY,
};

pub const POLICY_DATABASE_INGRESS: &str = "appdb-database-ingress";
pub const POLICY_SESSION_EGRESS: &str = "appdb-session-egress";
pub const POLICY_VPN_GATEWAY: &str = "appdb-vpn-gateway";
pub const POLICY_OPERATOR_JOB: &str = "appdb-operator-job";

/// Where the cluster DNS runs, and which destinations count as "not the internet".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationConfig {
    pub dns_namespace: String,
    pub dns_pod_labels: BTreeMap<String, String>,
    /// Destinations sessions and gateways may never reach by address.
    pub denied_destinations: Vec<Ipv4Net>,
    /// Where the Kubernetes API server answers (its endpoints, and the `kubernetes` Service's address): the VPN
    /// gateways' agents report their tunnel's state there. Empty: no such egress (the reports then fail wherever
    /// NetworkPolicies are enforced, and the tunnels show UNKNOWN).
    pub api_server: Vec<std::net::SocketAddrV4>,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        let net = |s: &str| s.parse().expect("valid constant");
        IsolationConfig {
            dns_namespace: "kube-system".into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]),
            denied_destinations: vec![
                net("10.0.0.0/8"),
                net("172.16.0.0/12"),
                net("192.168.0.0/16"),
                net("100.64.0.0/10"),
                net("169.254.0.0/16"),
                net("127.0.0.0/8"),
                net("0.0.0.0/8"),
            ],
            api_server: Vec::new(),
        }
    }
}

fn role_selector(roles: &[&str]) -> LabelSelector {
    if let [role] = roles {
        return LabelSelector {
            match_labels: Some(BTreeMap::from([(LABEL_ROLE.to_owned(), role.to_string())])),
            ..Default::default()
        };
    }
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: LABEL_ROLE.into(),
            operator: "In".into(),
            values: Some(roles.iter().map(|r| r.to_string()).collect()),
        }]),
        ..Default::default()
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

fn pods(roles: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(role_selector(roles)),
        ..Default::default()
    }
}

fn internet(config: &IsolationConfig) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".into(),
            except: Some(config.denied_destinations.iter().map(|n| n.to_string()).collect()),
        }),
        ..Default::default()
    }
}

/// The gateway agents' way to the API server: exactly its addresses and ports, one rule per address so that no
/// address is allowed another's port.
fn api_server_rules(config: &IsolationConfig) -> Vec<NetworkPolicyEgressRule> {
    config
        .api_server
        .iter()
        .map(|endpoint| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: format!("{}/32", endpoint.ip()),
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: Some(vec![port("TCP", i32::from(endpoint.port()))]),
        })
        .collect()
}

/// Where the API server answers, as the cluster publishes it: the `default/kubernetes` Service's address and
/// port, and its EndpointSlices' addresses and ports (what most CNIs match after translating the Service).
pub async fn discover_api_server(client: &kube::Client) -> Result<Vec<std::net::SocketAddrV4>, kube::Error> {
    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
    let mut found = Vec::new();
    let service = kube::Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    if let Some(spec) = &service.spec
        && let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        for p in spec.ports.iter().flatten() {
            found.push(std::net::SocketAddrV4::new(ip, p.port as u16));
        }
    }
    let slices = kube::Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await?;
    for slice in slices.items.iter().filter(|s| s.address_type == "IPv4") {
        for endpoint in slice.endpoints.iter().flatten() {
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                for p in slice.ports.iter().flatten() {
                    if let Some(port) = p.port {
                        found.push(std::net::SocketAddrV4::new(address, port as u16));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn dns_rule(config: &IsolationConfig) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    config.dns_namespace.clone(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(config.dns_pod_labels.clone()),
                ..Default::default()
            }),
            ip_block: None,
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }
}

fn database_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![pods(&[ROLE_DATABASE])]),
        ports: Some(vec![port("TCP", MYSQL_PORT.into())]),
    }
}

fn policy(name: &str, namespace: &str, owners: &[OwnerReference], spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())])),
            owner_references: Some(owners.to_vec()),
            ..Default::default()
        },
        spec: Some(spec),
    }
}

/// The isolation policies of one customer namespace. `owners` are the namespace's PrivateNetworks, so the
/// policies live exactly as long as the customer has a network.
pub fn customer_policies(namespace: &str, owners: &[OwnerReference], config: &IsolationConfig) -> Vec<NetworkPolicy> {
    vec![
        policy(
            POLICY_DATABASE_INGRESS,
            namespace,
            owners,
            NetworkPolicySpec {
                pod_selector: Some(role_selector(&[ROLE_DATABASE])),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    // Database pods reach each other only for a copying migration's replication.
                    from: Some(vec![pods(&[ROLE_SESSION, ROLE_OPERATOR_JOB, ROLE_DATABASE])]),
                    ports: Some(vec![port("TCP", MYSQL_PORT.into())]),
                }]),
                // A database reaches only another database of its namespace (a replica its source) and the DNS
                // that names it: not the cloud metadata address, not the operator, not the internet. A customer
                // chooses the image (`spec.image`); whatever runs there gets no further.
                egress: Some(vec![database_rule(), dns_rule(config)]),
            },
        ),
        policy(
            POLICY_OPERATOR_JOB,
            namespace,
            owners,
            NetworkPolicySpec {
                // Password rotation and migration Jobs: nothing connects to them; they reach the databases, DNS,
                // and the API server (a migration Job reports its progress on its own pod).
                pod_selector: Some(role_selector(&[ROLE_OPERATOR_JOB])),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(Vec::new()),
                egress: Some(
                    [database_rule(), dns_rule(config)]
                        .into_iter()
                        .chain(api_server_rules(config))
                        .collect(),
                ),
            },
        ),
        policy(
            POLICY_SESSION_EGRESS,
            namespace,
            owners,
            NetworkPolicySpec {
                pod_selector: Some(role_selector(&[ROLE_SESSION])),
                policy_types: Some(vec!["Egress".into()]),
                ingress: None,
                egress: Some(vec![
                    database_rule(),
                    dns_rule(config),
                    NetworkPolicyEgressRule {
                        to: Some(vec![internet(config)]),
                        ports: None,
                    },
                ]),
            },
        ),
        policy(
            POLICY_VPN_GATEWAY,
            namespace,
            owners,
            NetworkPolicySpec {
                pod_selector: Some(role_selector(&[ROLE_VPN_GATEWAY])),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port("UDP", 500), port("UDP", 4500)]),
                }]),
                egress: Some(
                    [
                        database_rule(),
                        dns_rule(config),
                        NetworkPolicyEgressRule {
                            to: Some(vec![internet(config)]),
                            ports: Some(vec![port("UDP", 500), port("UDP", 4500)]),
                        },
                    ]
                    .into_iter()
                    .chain(api_server_rules(config))
                    .collect(),
                ),
            },
        ),
    ]
}

/// Name of a database's own policy.
pub fn database_policy_name(database: &str) -> String {
    format!("appdb-db-{database}")
}

/// The per-database part of the isolation: the VPN gateways of the network the database lives on may reach it.
pub fn database_policy(namespace: &str, database: &str, network: &str, owner: OwnerReference) -> NetworkPolicy {
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_ROLE.to_owned(), ROLE_DATABASE.to_owned()),
            (LABEL_DATABASE.to_owned(), database.to_owned()),
        ])),
        ..Default::default()
    };
    let gateways = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                (LABEL_ROLE.to_owned(), ROLE_VPN_GATEWAY.to_owned()),
                (LABEL_NETWORK.to_owned(), network.to_owned()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut p = policy(
        &database_policy_name(database),
        namespace,
        &[owner],
        NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![gateways]),
                ports: Some(vec![port("TCP", MYSQL_PORT.into())]),
            }]),
            egress: None,
        },
    );
    p.metadata
        .labels
        .get_or_insert_default()
        .insert(LABEL_DATABASE.to_owned(), database.to_owned());
    p
}
