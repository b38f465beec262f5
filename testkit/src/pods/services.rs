//! Services as kube-proxy makes them, for the pod runner: each ClusterIP Service port leads to the Ready pods its
//! selector picks (their `targetPort`, by number or by the container port's name), chosen at random per
//! connection; a Service without ready endpoints refuses connections. The rules are an nftables table loaded
//! into every pod's network namespace and the node's, translating at the sender (the `output` hook), so replies
//! come back through the same connection tracking and NetworkPolicy sees pod addresses, as with kube-proxy.
//! Headless Services (`clusterIP: None`) get no rule: DNS gives their pods' addresses.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::ResourceExt;

use super::workloads::is_ready;

/// One Service port and where it leads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRule {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub backends: Vec<(Ipv4Addr, u16)>,
    /// A LoadBalancer's outside address: translated where traffic arrives from outside too (the node's
    /// `prerouting`), keeping the client's source address (`externalTrafficPolicy: Local`).
    pub external: bool,
}

/// Whether `labels` carry every pair of `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The container port `name` of `pod`.
fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port as u16)
}

/// The outside addresses a load balancer gave the Service.
pub fn load_balancer_addresses(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The rules for every ClusterIP Service with a selector.
pub fn rules(services: &[Service], pods: &[Pod]) -> Vec<ServiceRule> {
    let mut out = Vec::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let namespace = service.namespace();
        // `publishNotReadyAddresses` makes every running pod an endpoint, ready or not, as the EndpointSlice
        // controller does (it marks them ready).
        let any_readiness = spec.publish_not_ready_addresses == Some(true);
        let endpoints: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.namespace() == namespace && p.metadata.deletion_timestamp.is_none())
            .filter(|p| selects(selector, p.labels()) && (any_readiness || is_ready(p)) && pod_ip(p).is_some())
            .collect();
        for port in spec.ports.iter().flatten() {
            let backends: Vec<(Ipv4Addr, u16)> = endpoints
                .iter()
                .filter_map(|p| {
                    let target = match &port.target_port {
                        None => port.port as u16,
                        Some(IntOrString::Int(n)) => *n as u16,
                        Some(IntOrString::String(name)) => named_port(p, name)?,
                    };
                    Some((pod_ip(p)?, target))
                })
                .collect();
            let protocol = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            for outside in load_balancer_addresses(service) {
                out.push(ServiceRule {
                    ip: outside,
                    port: port.port as u16,
                    protocol: protocol.clone(),
                    backends: backends.clone(),
                    external: true,
                });
            }
            out.push(ServiceRule {
                ip,
                port: port.port as u16,
                protocol,
                backends,
                external: false,
            });
        }
    }
    out.sort();
    out
}

/// The nftables table for `rules` (replacing the previous one in one transaction).
pub fn render(rules: &[ServiceRule]) -> String {
    let mut nat = String::new();
    let mut outside = String::new();
    let mut refuse = String::new();
    for rule in rules {
        let nat = if rule.external { &mut outside } else { &mut nat };
        let (ip, port, proto) = (rule.ip, rule.port, &rule.protocol);
        match rule.backends.as_slice() {
            [] => refuse.push_str(&format!(
                "    ip daddr {ip} {proto} dport {port} reject{}\n",
                if proto == "tcp" { " with tcp reset" } else { "" }
            )),
            [(to, to_port)] => nat.push_str(&format!(
                "    ip daddr {ip} {proto} dport {port} dnat ip to {to}:{to_port}\n"
            )),
            many => {
                let map: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, (to, to_port))| format!("{i} : {to} . {to_port}"))
                    .collect();
                nat.push_str(&format!(
                    "    ip daddr {ip} {proto} dport {port} dnat ip to numgen random mod {} map {{ {} }}\n",
                    many.len(),
                    map.join(", ")
                ));
            }
        }
    }
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{nat}{outside}  }}\n  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n{outside}  }}\n  chain refuse {{\n    type filter hook output priority filter; policy accept;\n{refuse}  }}\n}}\n"
    )
}

/// The EndpointSlice the endpoint slice controller keeps for a Service with a selector (headless ones included):
/// one IPv4 slice named `<service>-runner`, every selected running pod with its readiness (`ready` also for
/// not-ready pods when the Service publishes them), and the ports with their target resolved per the first
/// endpoint (a named `targetPort` becomes that pod's container port). `None` for a Service without a selector.
pub fn endpoint_slice(service: &Service, pods: &[Pod]) -> Option<serde_json::Value> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let namespace = service.namespace();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.namespace() == namespace && p.metadata.deletion_timestamp.is_none())
        .filter(|p| selects(selector, p.labels()) && pod_ip(p).is_some())
        .collect();
    selected.sort_by_key(|p| p.name_any());
    let endpoints: Vec<serde_json::Value> = selected
        .iter()
        .map(|p| {
            let ready = is_ready(p);
            let hostname = p
                .spec
                .as_ref()
                .filter(|s| s.subdomain.as_deref() == Some(service.name_any().as_str()))
                .map(|s| s.hostname.clone().unwrap_or_else(|| p.name_any()));
            let mut endpoint = serde_json::json!({
                "addresses": [pod_ip(p).map(|ip| ip.to_string())],
                "conditions": {"ready": ready || publish_not_ready, "serving": ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": p.namespace(), "name": p.name_any(), "uid": p.uid()},
            });
            if let Some(h) = hostname {
                endpoint["hostname"] = serde_json::Value::String(h);
            }
            endpoint
        })
        .collect();
    let ports: Vec<serde_json::Value> = spec
        .ports
        .iter()
        .flatten()
        .map(|port| {
            let target = match &port.target_port {
                None => Some(port.port as u16),
                Some(IntOrString::Int(n)) => Some(*n as u16),
                Some(IntOrString::String(name)) => selected.iter().find_map(|p| named_port(p, name)),
            };
            serde_json::json!({
                "name": port.name.clone().unwrap_or_default(),
                "port": target,
                "protocol": port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect();
    let name = service.name_any();
    Some(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-runner"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": service.uid(),
                "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
}

/// UDP translations that lead to a backend no longer behind their Service address: (address, port, backend).
/// Their connection-tracking entries must go, as kube-proxy deletes them: a UDP peer that keeps sending (an IKE
/// device retransmitting) would otherwise keep its entry alive, and be sent to the old pod forever.
pub fn stale_udp(previous: &[ServiceRule], current: &[ServiceRule]) -> Vec<(Ipv4Addr, u16, Ipv4Addr)> {
    let mut stale = Vec::new();
    for old in previous.iter().filter(|r| r.protocol == "udp") {
        let now = current
            .iter()
            .find(|r| (r.ip, r.port, &r.protocol, r.external) == (old.ip, old.port, &old.protocol, old.external));
        for (backend, _) in &old.backends {
            if !now.is_some_and(|r| r.backends.iter().any(|(b, _)| b == backend)) {
                stale.push((old.ip, old.port, *backend));
            }
        }
    }
    stale.sort();
    stale.dedup();
    stale
}

/// The table's name in each namespace.
pub const TABLE: &str = "appdb_services";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "acme", "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "mysql", "containerPort": 3307}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn service(ip: &str, target: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "orders", "namespace": "acme"},
            "spec": {"clusterIP": ip, "selector": {"app": "db"}, "ports": [{"port": 3306, "targetPort": target}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_pods_of_the_namespace_are_the_endpoints_by_port_name() {
        let pods = [pod("a", "10.244.0.5", true), pod("b", "10.244.0.6", false), {
            let mut other = pod("c", "10.244.0.7", true);
            other.metadata.namespace = Some("globex".into());
            other
        }];
        let rules = rules(&[service("10.96.0.12", json!("mysql"))], &pods);
        assert_eq!(
            rules,
            [ServiceRule {
                ip: "10.96.0.12".parse().unwrap(),
                port: 3306,
                protocol: "tcp".into(),
                backends: vec![("10.244.0.5".parse().unwrap(), 3307)],
                external: false,
            }]
        );
        assert!(render(&rules).contains("ip daddr 10.96.0.12 tcp dport 3306 dnat ip to 10.244.0.5:3307"));
        assert!(
            super::rules(&[service("None", json!(3306))], &pods).is_empty(),
            "headless: DNS only"
        );
    }

    #[test]
    fn endpoint_slices_list_selected_pods_with_readiness_and_resolved_ports() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "acme", "uid": "s1"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let pod = |name: &str, ip: &str, ready: &str, extra: serde_json::Value| -> Pod {
            let mut v = serde_json::json!({
                "metadata": {"name": name, "namespace": "acme", "labels": {"app": "web"}},
                "spec": {"subdomain": "web", "containers": [{"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            });
            if let (Some(m), serde_json::Value::Object(e)) = (v["metadata"].as_object_mut(), extra) {
                m.extend(e);
            }
            serde_json::from_value(v).unwrap()
        };
        let pods = [
            pod("web-1", "10.244.0.6", "False", serde_json::json!({})),
            pod("web-0", "10.244.0.5", "True", serde_json::json!({})),
            pod(
                "gone",
                "10.244.0.7",
                "True",
                serde_json::json!({"deletionTimestamp": "2026-12-03T00:00:00Z"}),
            ),
        ];
        let slice = endpoint_slice(&service, &pods).unwrap();
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(slice["ports"][0]["port"], 8080, "named targetPort resolved");
        let endpoints = slice["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 2, "terminating pods are left out");
        assert_eq!(endpoints[0]["addresses"][0], "10.244.0.5");
        assert_eq!(endpoints[0]["conditions"]["ready"], true);
        assert_eq!(
            endpoints[0]["hostname"], "web-0",
            "pods of the Service's subdomain get a hostname"
        );
        assert_eq!(endpoints[1]["conditions"]["ready"], false);
        let mut published = service.clone();
        published.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let slice = endpoint_slice(&published, &pods).unwrap();
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], true);
        assert_eq!(slice["endpoints"][1]["conditions"]["serving"], false);
        let mut no_selector = service;
        no_selector.spec.as_mut().unwrap().selector = None;
        assert!(endpoint_slice(&no_selector, &pods).is_none());
    }

    #[test]
    fn udp_translations_to_a_removed_backend_are_stale() {
        let rule = |backends: &[[u8; 4]]| ServiceRule {
            ip: Ipv4Addr::new(203, 0, 113, 11),
            port: 4500,
            protocol: "udp".into(),
            backends: backends.iter().map(|b| (Ipv4Addr::from(*b), 4500)).collect(),
            external: true,
        };
        let (old, new) = ([10, 244, 0, 5], [10, 244, 0, 9]);
        assert_eq!(
            stale_udp(&[rule(&[old])], &[rule(&[new])]),
            [(Ipv4Addr::new(203, 0, 113, 11), 4500, Ipv4Addr::from(old))]
        );
        assert!(stale_udp(&[rule(&[old])], &[rule(&[old, new])]).is_empty());
        assert_eq!(stale_udp(&[rule(&[old])], &[]).len(), 1, "the Service went away");
        let mut tcp = rule(&[old]);
        tcp.protocol = "tcp".into();
        assert!(stale_udp(&[tcp], &[]).is_empty(), "TCP connections end by themselves");
    }

    #[test]
    fn a_load_balancer_address_is_translated_where_outside_traffic_arrives() {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "gw", "namespace": "acme"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "selector": {"app": "db"},
                "ports": [{"port": 500, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.11"}]}}
        }))
        .unwrap();
        let table = render(&rules(std::slice::from_ref(&svc), &[pod("a", "10.244.0.5", true)]));
        let prerouting = &table[table.find("chain prerouting").unwrap()..];
        assert!(
            prerouting.contains("ip daddr 203.0.113.11 udp dport 500 dnat ip to 10.244.0.5:500"),
            "{table}"
        );
        svc.status = None;
        assert_eq!(rules(&[svc], &[]).len(), 1, "no address yet: the ClusterIP only");
    }

    #[test]
    fn no_endpoints_refuse_and_several_are_chosen_at_random() {
        let none = rules(&[service("10.96.0.12", json!(3306))], &[]);
        assert!(render(&none).contains("ip daddr 10.96.0.12 tcp dport 3306 reject with tcp reset"));
        let two = rules(
            &[service("10.96.0.12", json!(3306))],
            &[pod("a", "10.244.0.5", true), pod("b", "10.244.0.6", true)],
        );
        assert!(
            render(&two)
                .contains("dnat ip to numgen random mod 2 map { 0 : 10.244.0.5 . 3306, 1 : 10.244.0.6 . 3306 }")
        );
    }
}
