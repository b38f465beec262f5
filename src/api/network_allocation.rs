//! `NetworkAllocation`: the cluster-wide claim on one /26.
//!
//! Its name is the range (`10-20-30-64-26`), so the API server's name uniqueness is the lock that keeps two
//! networks from ever sharing a range, whichever operator process, cache state or worker creates it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A claim on one /26 for one PrivateNetwork.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "appdb.dev",
    version = "v1alpha1",
    kind = "NetworkAllocation",
    shortname = "nalloc",
    category = "appdb",
    doc = "One allocated /26, named after its range (10.20.30.64/26 is 10-20-30-64-26), held by one PrivateNetwork. \
           Created and deleted by the operator only.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.network.namespace"),
    printcolumn(name = "Network", type_ = "string", json_path = ".spec.network.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name == self.spec.cidr.replace('.', '-').replace('/', '-')").message("a NetworkAllocation's name must be its cidr with '.' and '/' written as '-', for example 10-20-30-64-26"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a NetworkAllocation is immutable"))]
pub struct NetworkAllocationSpec {
    /// The allocated /26.
    #[schemars(length(min = 9, max = 18))]
    pub cidr: String,
    /// The PrivateNetwork holding the range.
    pub network: NetworkReference,
}

/// A reference to one PrivateNetwork, by UID so that a recreated network with the same name is a different holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkReference {
    /// Namespace of the PrivateNetwork.
    pub namespace: String,
    /// Name of the PrivateNetwork.
    pub name: String,
    /// UID of the PrivateNetwork.
    pub uid: String,
}

/// The object name of the allocation for `cidr` (`10.20.30.64/26` → `10-20-30-64-26`).
pub fn allocation_name(cidr: &ipnet::Ipv4Net) -> String {
    cidr.to_string().replace(['.', '/'], "-")
}
