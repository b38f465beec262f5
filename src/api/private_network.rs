//! `PrivateNetwork`: a customer's /26 network inside the private ranges.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::CommonStatus;

/// Desired state of a customer's private network.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "appdb.dev",
    version = "v1alpha1",
    kind = "PrivateNetwork",
    namespaced,
    shortname = "pnet",
    category = "appdb",
    status = "PrivateNetworkStatus",
    doc = "A customer's private /26 network. The operator assigns the range (or takes the one chosen in spec.cidr), \
           guarantees it overlaps no other customer's range nor the platform's own, and isolates it with NetworkPolicies.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".status.cidr"),
    printcolumn(name = "Pinghost", type_ = "string", json_path = ".status.pinghost"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.type"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    ).message("a PrivateNetwork's name must be at most 63 characters of lowercase letters, digits and '-' (no dots): it is a label value on the objects of the network"),
    validation = Rule::new(
        "!has(oldSelf.spec.cidr) || (has(self.spec.cidr) && self.spec.cidr == oldSelf.spec.cidr)"
    ).message("spec.cidr is immutable once set: create a new PrivateNetwork and migrate the database to it"),
    validation = Rule::new(
        "has(oldSelf.spec.cidr) || !has(self.spec.cidr) || (has(oldSelf.status) && has(oldSelf.status.cidr) && self.spec.cidr == oldSelf.status.cidr)"
    ).message("spec.cidr can be added to an existing network only with the range already assigned to it (status.cidr)"),
)]
#[serde(rename_all = "camelCase")]
pub struct PrivateNetworkSpec {
    /// The network's IPv4 range: a /26 aligned on a 64-address boundary inside 10.0.0.0/8, 172.16.0.0/12 or
    /// 192.168.0.0/16, for example `10.20.30.64/26`. Omit it to have a free range assigned automatically.
    /// Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 18))]
    #[x_kube(
        validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4").message("cidr must be an IPv4 range in CIDR notation, for example 10.20.30.64/26"),
        validation = Rule::new("!isCIDR(self) || cidr(self).prefixLength() == 26").message("cidr must be a /26 (64 addresses)"),
        validation = Rule::new("!isCIDR(self) || cidr(self).prefixLength() != 26 || self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.](0|64|128|192)/26$')").message("cidr must start on a /26 boundary: the last number must be 0, 64, 128 or 192"),
        validation = Rule::new("!isCIDR(self) || cidr('10.0.0.0/8').containsCIDR(self) || cidr('172.16.0.0/12').containsCIDR(self) || cidr('192.168.0.0/16').containsCIDR(self)").message("cidr must lie inside a private range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
    )]
    pub cidr: Option<String>,

    /// Free text to recognise the network by, for example "Production network after the 2026 office move".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub description: Option<String>,
}

/// Whether a network hosts a customer's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NetworkType {
    /// No AppDatabase lives on the network (a new network, or one a database is about to move to).
    Test,
    /// An AppDatabase lives on the network.
    Production,
}

/// Observed state of a private network, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivateNetworkStatus {
    /// The /26 assigned to this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `Test` until an AppDatabase lives on the network, `Production` while one does. Computed, never a spec field.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub network_type: Option<NetworkType>,
    /// The address inside the range that answers pings through the VPN tunnels, to test them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinghost: Option<String>,
    /// Observed generation, human state ("Ready", "Migration In Progress", ...) and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

impl PrivateNetwork {
    /// The network's /26, once it is Ready with one. A range its status records but that is not a valid /26 (written
    /// by hand, say) counts as none: nothing is built on it.
    pub fn ready_block(&self) -> Option<ipnet::Ipv4Net> {
        crate::ipam::parse_block(self.ready_cidr()?).ok()
    }

    /// The network's range as its status writes it, once it is Ready with one.
    pub fn ready_cidr(&self) -> Option<&str> {
        let status = self.status.as_ref()?;
        crate::api::conditions::is_true(&status.common.conditions, crate::api::conditions::READY)
            .then_some(status.cidr.as_deref())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(status: serde_json::Value) -> PrivateNetwork {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork",
            "metadata": {"name": "prod", "namespace": "acme"},
            "spec": {}, "status": status
        }))
        .expect("network")
    }

    /// A range counts only once the network says Ready=True: an allocated range on a network that is not ready yet
    /// (or no longer) is not one to build on.
    #[test]
    fn the_range_counts_once_the_network_is_ready() {
        let ready = |status: &str| {
            serde_json::json!({"type": "Ready", "status": status, "reason": "r", "message": "",
                               "lastTransitionTime": "2026-12-05T10:00:00Z"})
        };
        let with = |conditions: Vec<serde_json::Value>| {
            network(serde_json::json!({"cidr": "10.20.30.64/26", "conditions": conditions}))
        };
        assert_eq!(with(vec![ready("True")]).ready_cidr(), Some("10.20.30.64/26"));
        assert_eq!(
            with(vec![ready("True")]).ready_block(),
            Some("10.20.30.64/26".parse().unwrap())
        );
        assert_eq!(with(vec![ready("False")]).ready_block(), None);
        assert_eq!(with(vec![ready("False")]).ready_cidr(), None);
        assert_eq!(with(vec![]).ready_cidr(), None);
        assert_eq!(
            network(serde_json::json!({"conditions": [ready("True")]})).ready_cidr(),
            None
        );
        let hand_written = network(serde_json::json!({"cidr": "10.20.30.70/26", "conditions": [ready("True")]}));
        assert_eq!(hand_written.ready_block(), None, "not aligned: nothing is built on it");
    }
}
