//! `VpnConnection`: a site-to-site IPsec connection (two tunnels) from a customer's premises into a network.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CommonStatus, SecretKeyRef};

/// CEL: every entry is an IPv4 CIDR inside one of the private ranges.
const PRIVATE_CIDRS_RULE: &str = "self.all(c, isCIDR(c) && cidr(c).ip().family() == 4 && (cidr('10.0.0.0/8').containsCIDR(c) || cidr('172.16.0.0/12').containsCIDR(c) || cidr('192.168.0.0/16').containsCIDR(c)))";

/// Desired state of a site-to-site VPN connection.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "appdb.dev",
    version = "v1alpha1",
    kind = "VpnConnection",
    namespaced,
    shortname = "vpn",
    category = "appdb",
    status = "VpnConnectionStatus",
    doc = "A site-to-site IPsec VPN from a customer's VPN device into one PrivateNetwork: two tunnels, each with its own \
           pre-shared key and outside address, never both down for maintenance. Traffic is initiated from premises only.",
    printcolumn(name = "Network", type_ = "string", json_path = ".spec.network"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.customerGatewayAddress"),
    printcolumn(name = "Tunnel1", type_ = "string", json_path = ".status.tunnels[0].state"),
    printcolumn(name = "Tunnel2", type_ = "string", json_path = ".status.tunnels[1].state"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "size(self.metadata.name) <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message("a VpnConnection's name must be at most 47 characters of lowercase letters, digits and '-', starting with a letter: its gateway Services are named <name>-tunnel1-gateway and <name>-tunnel2-gateway")
)]
#[serde(rename_all = "camelCase")]
pub struct VpnConnectionSpec {
    /// Name of the PrivateNetwork (same namespace) the tunnels lead into. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("network is immutable: create a new VpnConnection for another network"))]
    pub network: String,

    /// The customer's on-premise ranges reachable through the tunnels, in canonical CIDR notation inside the private
    /// ranges, for example `192.168.10.0/24`.
    #[schemars(length(min = 1, max = 16), inner(length(min = 9, max = 18)))]
    #[x_kube(
        validation = Rule::new(PRIVATE_CIDRS_RULE).message("each customerCidrs entry must be an IPv4 CIDR inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
        validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("customerCidrs must not list the same range twice"),
    )]
    pub customer_cidrs: Vec<String>,

    /// Public IPv4 address of the customer's VPN device.
    #[schemars(length(min = 7, max = 15))]
    #[x_kube(
        validation = Rule::new("isIP(self) && ip(self).family() == 4").message("customerGatewayAddress must be an IPv4 address such as 203.0.113.10"),
        validation = Rule::new("!isIP(self) || ip(self).family() != 4 || (ip(self).isGlobalUnicast() && !cidr('10.0.0.0/8').containsIP(self) && !cidr('172.16.0.0/12').containsIP(self) && !cidr('192.168.0.0/16').containsIP(self) && !cidr('100.64.0.0/10').containsIP(self) && !cidr('0.0.0.0/8').containsIP(self) && !cidr('240.0.0.0/4').containsIP(self))").message("customerGatewayAddress must be a public unicast address: private, shared (100.64.0.0/10), loopback, link-local, multicast and reserved addresses cannot reach the platform"),
    )]
    pub customer_gateway_address: String,

    /// Free text to recognise the connection by, for example "Seattle office".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub description: Option<String>,

    /// Per-tunnel options; the first entry applies to tunnel 1, the second to tunnel 2. Omitted: secure defaults and a
    /// generated pre-shared key per tunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub tunnel_options: Vec<TunnelOptions>,
}

/// Options of one tunnel. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelOptions {
    /// A Secret key holding this tunnel's pre-shared key instead of a generated one: 8 to 64 characters of letters,
    /// digits, `.` and `_`, not starting with `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_secret_ref: Option<SecretKeyRef>,
    /// IKE (phase 1) proposals in strongSwan notation, for example `aes256gcm16-prfsha256-ecp256`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub ike_proposals: Vec<Proposal>,
    /// ESP (phase 2) proposals in strongSwan notation, for example `aes256gcm16-ecp256`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub esp_proposals: Vec<Proposal>,
    /// Dead peer detection timeout in seconds (at least 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 3600))]
    pub dpd_timeout_seconds: Option<i32>,
    /// `Add` (default): the customer's device initiates. `Start`: the platform side initiates too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_action: Option<StartupAction>,
}

/// An IKE or ESP proposal in strongSwan notation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Proposal(#[schemars(length(min = 3, max = 128), regex(pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$"))] pub String);

/// Who starts a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StartupAction {
    /// Wait for the customer's device to initiate.
    Add,
    /// Initiate from the platform side as well.
    Start,
}

/// State of one tunnel as its gateway reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TunnelState {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl TunnelState {
    /// The word the status, the gateway's report and the metrics use.
    pub const fn as_str(self) -> &'static str {
        match self {
            TunnelState::Up => "UP",
            TunnelState::Down => "DOWN",
            TunnelState::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of one tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// The platform side's public address for this tunnel (its Service's external address), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_address: Option<String>,
    /// `UP`, `DOWN` or `UNKNOWN`.
    pub state: TunnelState,
    /// When `state` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// Why the tunnel is in this state, for example "authentication failed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed state of a VPN connection, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpnConnectionStatus {
    /// The two tunnels, tunnel 1 first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelStatus>,
    /// Name of the Secret (same namespace) holding the customer's device configurations, one key per device format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret: Option<String>,
    /// The database addresses in the network that both tunnels' gateways relay (each to its database's stable
    /// Service), once both gateway Deployments carry them. A migration to this network completes only when the
    /// database's new address is listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relayed_addresses: Vec<String>,
    /// Observed generation, state and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

impl VpnConnection {
    /// Whether both of this connection's gateways relay the database at `address` (its status says so).
    pub fn relays(&self, address: &str) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.relayed_addresses.iter().any(|a| a == address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration waits for exactly its database's new address in the connection's status.
    #[test]
    fn relays_reads_the_published_addresses() {
        let mut vpn: VpnConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "VpnConnection",
            "metadata": {"name": "seattle", "namespace": "acme"},
            "spec": {"network": "prod", "customerCidrs": ["192.168.10.0/24"], "customerGatewayAddress": "198.51.100.7"}
        }))
        .expect("vpn");
        assert!(!vpn.relays("10.20.30.74"), "no status yet");
        vpn.status = Some(VpnConnectionStatus {
            relayed_addresses: vec!["10.20.30.74".into()],
            ..Default::default()
        });
        assert!(vpn.relays("10.20.30.74"));
        assert!(!vpn.relays("10.20.30.7"));
    }
}
