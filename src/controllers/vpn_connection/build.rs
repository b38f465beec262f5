//! Build (pure): the objects of one VpnConnection from its validated connection model.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource, PodAffinityTerm,
            PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret, SecretVolumeSource,
            SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount, WeightedPodAffinityTerm,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::{
    api::VpnConnection,
    names::{
        ANNOTATION_CONFIG_DIGEST, LABEL_MANAGED_BY, LABEL_NETWORK, LABEL_ROLE, LABEL_TUNNEL, LABEL_VPN, MANAGED_BY,
        ROLE_VPN_GATEWAY,
    },
    vpn::{
        model::Connection,
        render::{
            DEVICE_FORMATS, DataPath, Exposure, OUTSIDE_ADDRESS_PLACEHOLDER, device, gateway_strongswan_conf,
            gateway_swanctl, gateway_swanctl_template,
        },
    },
};

/// Where charon's control socket lives in a gateway pod.
pub const VICI_SOCKET: &str = "/run/appdb/charon.vici";
const CONFIG_DIR: &str = "/etc/appdb";

pub fn psk_secret_name(vpn: &VpnConnection) -> String {
    format!("{}-psk", vpn.name_any())
}
pub fn tunnel_name(vpn: &VpnConnection, tunnel: u8) -> String {
    format!("{}-tunnel{tunnel}", vpn.name_any())
}
pub fn gateway_config_name(vpn: &VpnConnection, tunnel: u8) -> String {
    format!("{}-tunnel{tunnel}-gateway", vpn.name_any())
}
pub fn customer_config_name(vpn: &VpnConnection) -> String {
    format!("{}-vpn-config", vpn.name_any())
}

fn owner(vpn: &VpnConnection) -> OwnerReference {
    vpn.controller_owner_ref(&())
        .expect("a VpnConnection read from the API server has a name and a UID")
}

fn labels(vpn: &VpnConnection) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_VPN.to_owned(), vpn.name_any()),
    ])
}

fn tunnel_labels(vpn: &VpnConnection, tunnel: u8) -> BTreeMap<String, String> {
    let mut l = labels(vpn);
    l.insert(LABEL_TUNNEL.to_owned(), tunnel.to_string());
    l
}

fn meta(vpn: &VpnConnection, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: vpn.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner(vpn)]),
        ..Default::default()
    }
}

/// The generated pre-shared keys (created once; never regenerated, or working tunnels would break).
pub fn psk_secret(vpn: &VpnConnection, tunnel1: String, tunnel2: String) -> Secret {
    Secret {
        metadata: meta(vpn, psk_secret_name(vpn), labels(vpn)),
        string_data: Some(BTreeMap::from([
            ("tunnel1".to_owned(), tunnel1),
            ("tunnel2".to_owned(), tunnel2),
        ])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The Service giving tunnel `tunnel` its outside address: UDP 500 and 4500 only (NAT traversal is always on), and
/// `externalTrafficPolicy: Local` so that the gateway sees the customer's real address.
pub fn tunnel_service(vpn: &VpnConnection, tunnel: u8, exposure: Exposure) -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        protocol: Some("UDP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(vpn, tunnel_name(vpn, tunnel), tunnel_labels(vpn, tunnel)),
        spec: Some(ServiceSpec {
            type_: Some(match exposure {
                Exposure::LoadBalancer => "LoadBalancer".into(),
                // With host networking the node's address is the outside address; the Service only names the pod.
                Exposure::HostNetwork => "ClusterIP".into(),
            }),
            external_traffic_policy: (exposure == Exposure::LoadBalancer).then(|| "Local".into()),
            selector: Some(tunnel_labels(vpn, tunnel)),
            ports: Some(vec![port("ike", 500), port("nat-t", 4500)]),
            // Readiness reports on the tunnel (charon loaded, state on record) and gates rollouts; it must never
            // cut the customer off: a gateway whose agent cannot reach the API server still carries the tunnel.
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    }
}

/// The gateway's strongSwan files for tunnel `tunnel` (a Secret: they contain the key).
pub fn gateway_config(
    vpn: &VpnConnection,
    conn: &Connection,
    tunnel: u8,
    datapath: DataPath,
    exposure: Exposure,
) -> Secret {
    let t = &conn.tunnels[usize::from(tunnel) - 1];
    let swanctl = match exposure {
        Exposure::LoadBalancer => gateway_swanctl(conn, tunnel),
        Exposure::HostNetwork => gateway_swanctl_template(conn, tunnel),
    };
    Secret {
        metadata: meta(vpn, gateway_config_name(vpn, tunnel), tunnel_labels(vpn, tunnel)),
        data: Some(BTreeMap::from([
            ("swanctl.conf".to_owned(), ByteString(swanctl.into_bytes())),
            (
                "strongswan.conf".to_owned(),
                ByteString(gateway_strongswan_conf(t, datapath, VICI_SOCKET).into_bytes()),
            ),
        ])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The shell command that copies `source` to `target` with the outside address (`$APPDB_OUTSIDE_ADDRESS`, the
/// node's address from the downward API) in place of [`OUTSIDE_ADDRESS_PLACEHOLDER`].
pub fn fill_outside_address(source: &str, target: &str) -> String {
    let placeholder = OUTSIDE_ADDRESS_PLACEHOLDER.replace('$', "\\$");
    format!("sed -e \"s/{placeholder}/$APPDB_OUTSIDE_ADDRESS/g\" {source} > {target}")
}

/// Digest of a gateway's configuration, put on its pod template so that a change rolls the pod.
pub fn config_digest(config: &Secret) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update(&v.0);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The customer's download: one key per device format.
pub fn customer_config(vpn: &VpnConnection, conn: &Connection) -> Secret {
    Secret {
        metadata: meta(vpn, customer_config_name(vpn), labels(vpn)),
        data: Some(
            DEVICE_FORMATS
                .iter()
                .filter_map(|(key, _)| Some((key.to_string(), ByteString(device(conn, key)?.into_bytes()))))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// What a gateway serves besides the tunnel: the addresses it owns in the network (the pinghost and every
/// database's address) and the relays from database addresses to the databases' stable Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    pub addresses: Vec<std::net::Ipv4Addr>,
    /// `LISTEN=TARGET` relay rules for the agent.
    pub relays: Vec<String>,
}

pub fn gateway_service_account_name(vpn: &VpnConnection) -> String {
    format!("{}-gateway", vpn.name_any())
}

/// `<vpn>-gateway-report`: where both tunnels' gateway pods report their state, each under its own pod name.
pub fn report_configmap_name(vpn: &VpnConnection) -> String {
    format!("{}-gateway-report", vpn.name_any())
}

/// The connection's report ConfigMap, without data (the agents write the reports; see `crate::report`).
pub fn report_configmap(vpn: &VpnConnection) -> k8s_openapi::api::core::v1::ConfigMap {
    crate::report::configmap(meta(vpn, report_configmap_name(vpn), labels(vpn)))
}

/// The identity of the gateway pods: they may read and patch the connection's report ConfigMap (to report the
/// tunnel's state), nothing else.
pub fn gateway_rbac(
    vpn: &VpnConnection,
) -> (
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
) {
    crate::controllers::rbac::reporter(
        meta(vpn, gateway_service_account_name(vpn), labels(vpn)),
        &report_configmap_name(vpn),
    )
}

/// What charon needs, and nothing more (every other capability is dropped):
/// - `NET_ADMIN`: XFRM states and policies (kernel ESP) or the TUN device (userspace ESP), routes, and the
///   gateway's own addresses on `lo`;
/// - `NET_BIND_SERVICE`: UDP 500 and 4500. charon's socket-default plugin refuses to load without it, whatever the
///   node's `ip_unprivileged_port_start` says, and then nothing listens for IKE at all.
pub const GATEWAY_CAPABILITIES: [&str; 2] = ["NET_ADMIN", "NET_BIND_SERVICE"];

/// Where the agent records that the tunnel state on the pod is current; its readiness probe reads the file's age.
pub const AGENT_READY_FILE: &str = "/run/appdb/agent-ready";
/// The agent confirms the state every 20 s ([`crate::vpn::state::RECHECK`]); older than this, it is not trusted.
pub const AGENT_REPORT_MAX_AGE_SECONDS: u64 = 90;

/// The name of tunnel `tunnel`'s connection in the gateway's swanctl.conf (`<namespace>-<name>-tunnel<n>`).
pub fn gateway_connection_name(vpn: &VpnConnection, tunnel: u8) -> String {
    format!(
        "{}-{}-tunnel{tunnel}",
        vpn.namespace().unwrap_or_default(),
        vpn.name_any()
    )
}

/// charon is ready when its IKE sockets exist (the socket-default plugin loaded: without `NET_BIND_SERVICE` it
/// does not, and nothing listens) and the tunnel's connection is loaded.
pub fn charon_ready_check(connection: &str) -> String {
    format!(
        "swanctl --stats --uri unix://{VICI_SOCKET} | grep -q ' socket-default' && \
         swanctl --list-conns --uri unix://{VICI_SOCKET} | grep -q '^{connection}:'"
    )
}

fn exec_probe(command: Vec<String>) -> k8s_openapi::api::core::v1::Probe {
    k8s_openapi::api::core::v1::Probe {
        exec: Some(k8s_openapi::api::core::v1::ExecAction { command: Some(command) }),
        period_seconds: Some(5),
        timeout_seconds: Some(3),
        failure_threshold: Some(2),
        ..Default::default()
    }
}

/// The gateway container's shell: set up, start the loader in the background, then become charon (PID 1).
pub fn gateway_script(own_addresses: &str, fill: &str) -> String {
    // The set-up list ends with `|| exit 1;` before the loader: a trailing `&` would send the whole list, mkdir
    // included, to the background, and charon could start before /run/appdb exists.
    format!(
        "{own_addresses}mkdir -p /run/appdb && {fill} || exit 1; \
         {{ until swanctl --load-all --noprompt --file /run/appdb/swanctl.conf --uri unix://{VICI_SOCKET} >/dev/null 2>&1; \
         do sleep 0.5; done; swanctl --list-conns --uri unix://{VICI_SOCKET}; }} & \
         exec /usr/lib/ipsec/charon"
    )
}

/// The gateway Deployment of tunnel `tunnel`.
#[allow(clippy::too_many_arguments)]
pub fn gateway(
    vpn: &VpnConnection,
    network: &str,
    tunnel: u8,
    image: &str,
    agent_image: &str,
    datapath: DataPath,
    digest: &str,
    serving: &Serving,
    exposure: Exposure,
) -> Deployment {
    let mut pod_labels = tunnel_labels(vpn, tunnel);
    pod_labels.insert(LABEL_ROLE.to_owned(), ROLE_VPN_GATEWAY.to_owned());
    pod_labels.insert(LABEL_NETWORK.to_owned(), network.to_owned());
    let (volumes, mounts) = gateway_volumes(vpn, tunnel, datapath);
    Deployment {
        metadata: meta(vpn, tunnel_name(vpn, tunnel), tunnel_labels(vpn, tunnel)),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(tunnel_labels(vpn, tunnel)),
                ..Default::default()
            },
            // One gateway per tunnel: the old pod goes before the new one starts (the other tunnel keeps carrying).
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_CONFIG_DIGEST.to_owned(),
                        digest.to_owned(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // The agent reports the tunnel's state on its own pod with this identity.
                    service_account_name: Some(gateway_service_account_name(vpn)),
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(apart_from_the_other_tunnel(vpn, tunnel, exposure)),
                        ..Default::default()
                    }),
                    host_network: (exposure == Exposure::HostNetwork).then_some(true),
                    dns_policy: (exposure == Exposure::HostNetwork).then(|| "ClusterFirstWithHostNet".into()),
                    containers: vec![
                        charon_container(vpn, tunnel, image, serving, mounts),
                        agent_container(vpn, agent_image, serving),
                    ],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// Two gateways on one node would share its fate; with host networking they could not even both bind UDP 500.
fn apart_from_the_other_tunnel(vpn: &VpnConnection, tunnel: u8, exposure: Exposure) -> PodAntiAffinity {
    let other_tunnel = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(tunnel_labels(vpn, if tunnel == 1 { 2 } else { 1 })),
            ..Default::default()
        }),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    match exposure {
        Exposure::LoadBalancer => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: other_tunnel,
            }]),
            ..Default::default()
        },
        Exposure::HostNetwork => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![other_tunnel]),
            ..Default::default()
        },
    }
}

/// An environment variable from the pod's own fields (downward API).
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// The tunnel's configuration (read-only Secret), charon's `/run`, and with the userspace data path the TUN device.
fn gateway_volumes(vpn: &VpnConnection, tunnel: u8, datapath: DataPath) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(gateway_config_name(vpn, tunnel)),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "run".into(),
            mount_path: "/run".into(),
            ..Default::default()
        },
    ];
    if datapath == DataPath::Userspace {
        volumes.push(Volume {
            name: "tun".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/dev/net/tun".into(),
                type_: Some("CharDevice".into()),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "tun".into(),
            mount_path: "/dev/net/tun".into(),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// charon, as the container's PID 1, with the capabilities IPsec needs and no others.
fn charon_container(
    vpn: &VpnConnection,
    tunnel: u8,
    image: &str,
    serving: &Serving,
    mounts: Vec<VolumeMount>,
) -> Container {
    let own_addresses: String = serving
        .addresses
        .iter()
        .map(|a| format!("ip addr replace {a}/32 dev lo && "))
        .collect();
    // The pod fills in its outside address where only it knows it (host networking), then loads the connection
    // once charon's control socket answers. The shell ends by exec'ing charon, so that charon is the container's
    // PID 1: a shell as PID 1 ignores the kubelet's SIGTERM, and charon would be SIGKILLed after the grace period
    // without telling the customer's device (IKE DELETE). The loader runs in the background meanwhile.
    let fill = fill_outside_address(&format!("{CONFIG_DIR}/swanctl.conf"), "/run/appdb/swanctl.conf");
    let script = gateway_script(&own_addresses, &fill);
    let udp = |name: &str, port: i32| k8s_openapi::api::core::v1::ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("UDP".into()),
        ..Default::default()
    };
    Container {
        name: "charon".into(),
        image: Some(image.into()),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        env: Some(vec![
            EnvVar {
                name: "STRONGSWAN_CONF".into(),
                value: Some(format!("{CONFIG_DIR}/strongswan.conf")),
                value_from: None,
            },
            field_env("APPDB_OUTSIDE_ADDRESS", "status.hostIP"),
        ]),
        ports: Some(vec![udp("ike", 500), udp("nat-t", 4500)]),
        security_context: Some(root_without_privileges(
            GATEWAY_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        )),
        volume_mounts: Some(mounts),
        readiness_probe: Some(exec_probe(vec![
            "sh".into(),
            "-c".into(),
            charon_ready_check(&gateway_connection_name(vpn, tunnel)),
        ])),
        ..Default::default()
    }
}

/// A gateway container: user 0 (charon's files and socket are root's), read-only, no privilege escalation, and of
/// all capabilities only `add`.
fn root_without_privileges(add: Vec<String>) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_user: Some(0),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then_some(add),
            drop: Some(vec!["ALL".into()]),
        }),
        ..Default::default()
    }
}

/// The agent: reports the tunnel's state and relays each database address to its stable Service.
fn agent_container(vpn: &VpnConnection, agent_image: &str, serving: &Serving) -> Container {
    let mut agent_args = vec![
        "vpn-agent".to_owned(),
        "--vici".into(),
        VICI_SOCKET.into(),
        "--report-to".into(),
        format!("$(POD_NAMESPACE)/{}/$(POD_NAME)", report_configmap_name(vpn)),
        "--ready-file".into(),
        AGENT_READY_FILE.into(),
    ];
    for relay in &serving.relays {
        agent_args.push("--forward".into());
        agent_args.push(relay.clone());
    }
    Container {
        name: "agent".into(),
        image: Some(agent_image.into()),
        args: Some(agent_args),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        // Root only to reach charon's socket; no capabilities at all.
        security_context: Some(root_without_privileges(Vec::new())),
        volume_mounts: Some(vec![VolumeMount {
            name: "run".into(),
            mount_path: "/run".into(),
            ..Default::default()
        }]),
        readiness_probe: Some(exec_probe(vec![
            "appdb-operator".into(),
            "vpn-agent-ready".into(),
            "--file".into(),
            AGENT_READY_FILE.into(),
            "--max-age".into(),
            AGENT_REPORT_MAX_AGE_SECONDS.to_string(),
        ])),
        ..Default::default()
    }
}

/// "Never both down": at most one gateway of the connection may be evicted at a time.
pub fn disruption_budget(vpn: &VpnConnection) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(vpn, vpn.name_any(), labels(vpn)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels(vpn)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_admitted_name_gives_valid_child_names() {
        let name = format!("v{}", "9".repeat(crate::names::MAX_VPN_NAME - 1));
        let vpn: VpnConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "VpnConnection",
            "metadata": {"name": name, "namespace": "acme", "uid": "u"},
            "spec": {"network": "prod", "customerCidrs": ["192.168.10.0/24"], "customerGatewayAddress": "198.51.100.7"}
        }))
        .unwrap();
        let rfc1035 = |s: &str| {
            s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && !s.ends_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        for n in [1u8, 2] {
            // Services and the Deployments' pod names (`<deployment>-<hash>-<5>`: the hostname is cut at 63).
            let service = tunnel_service(&vpn, n, Exposure::LoadBalancer).metadata.name.unwrap();
            assert!(rfc1035(&service), "{service}");
            assert!(rfc1035(&tunnel_name(&vpn, n)));
            assert!(
                rfc1035(&gateway_config_name(&vpn, n)),
                "{}",
                gateway_config_name(&vpn, n)
            );
        }
        for other in [
            psk_secret_name(&vpn),
            customer_config_name(&vpn),
            gateway_service_account_name(&vpn),
        ] {
            assert!(rfc1035(&other), "{other}");
        }
        assert!(rfc1035(&disruption_budget(&vpn).metadata.name.unwrap()));
    }

    #[test]
    fn the_pod_fills_in_its_outside_address() {
        let dir = std::env::temp_dir().join(format!("appdb-fill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("in.conf"), dir.join("out.conf"));
        std::fs::write(
            &src,
            format!("local {{\n    id = {OUTSIDE_ADDRESS_PLACEHOLDER}\n}}\nid-1 = {OUTSIDE_ADDRESS_PLACEHOLDER}\n"),
        )
        .unwrap();
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                &fill_outside_address(&src.display().to_string(), &dst.display().to_string()),
            ])
            .env("APPDB_OUTSIDE_ADDRESS", "203.0.113.21")
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(&dst).unwrap(),
            "local {\n    id = 203.0.113.21\n}\nid-1 = 203.0.113.21\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
