//! Operator configuration shared by the controllers (flags of `appdb-operator run`, Helm values).

use std::time::Duration;

use crate::{ipam::PoolConfig, netpol::IsolationConfig};

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Ranges customer networks are allocated from, and the platform's own ranges they avoid.
    pub pool: PoolConfig,
    /// A released range is not handed out again for this long: customer firewalls still point at it.
    pub release_cooldown: Duration,
    /// An allocation whose network has vanished without releasing it is released after this grace period
    /// (it covers the moment between creating an allocation and the network showing up in caches).
    pub allocation_gc_grace: Duration,
    /// How often the allocation garbage collection runs.
    pub allocation_gc_interval: Duration,
    /// Where DNS lives and which destinations sessions may never reach.
    pub isolation: IsolationConfig,
    /// Reconciles run at once per controller.
    pub concurrency: u16,
    /// Image of the operator itself, for the Jobs it runs (password rotation, data migration).
    pub operator_image: String,
    /// The cluster's DNS domain, for endpoint host names.
    pub cluster_domain: String,
    /// Domains every namespace may publish database names under, unless its `appdb.dev/dns-domains` annotation says
    /// otherwise.
    pub dns_domains: Vec<String>,
    /// Images customers may choose for their databases (see [`crate::image_policy`]).
    pub allowed_images: Vec<String>,
    /// Image of the VPN gateway pods (the Dockerfile's `vpn-gateway` target).
    pub vpn_gateway_image: String,
    /// Where gateway pods run ESP.
    pub vpn_datapath: crate::vpn::render::DataPath,
    /// How each tunnel's outside address is provided.
    pub vpn_exposure: crate::vpn::render::Exposure,
    /// After a copying migration the previous database server is kept (read-only) this long, then deleted.
    pub rollback_window: Duration,
    /// Test-only: accept documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) as customer gateways.
    pub allow_documentation_gateways: bool,
    /// Node selector, tolerations and affinity of every pod the operator creates.
    pub placement: crate::placement::WorkloadPlacement,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            pool: PoolConfig::default(),
            release_cooldown: Duration::from_secs(24 * 3600),
            allocation_gc_grace: Duration::from_secs(300),
            allocation_gc_interval: Duration::from_secs(60),
            isolation: IsolationConfig::default(),
            concurrency: 16,
            operator_image: concat!("ghcr.io/appdb-dev/appdb-operator:", env!("CARGO_PKG_VERSION")).into(),
            cluster_domain: "cluster.local".into(),
            dns_domains: Vec::new(),
            allowed_images: crate::image_policy::DEFAULT_ALLOWED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            vpn_gateway_image: concat!("ghcr.io/appdb-dev/appdb-vpn-gateway:", env!("CARGO_PKG_VERSION")).into(),
            vpn_datapath: crate::vpn::render::DataPath::Kernel,
            allow_documentation_gateways: false,
            rollback_window: Duration::from_secs(24 * 3600),
            vpn_exposure: crate::vpn::render::Exposure::LoadBalancer,
            placement: Default::default(),
        }
    }
}
