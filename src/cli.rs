//! Command line of the `appdb-operator` binary.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use ipnet::Ipv4Net;

use crate::{config::OperatorConfig, ipam::PoolConfig, manager::ManagerConfig, telemetry::LogFormat};

/// Kubernetes operator for per-customer application databases, private networks, VPNs and migrations.
#[derive(Debug, Parser)]
#[command(name = "appdb-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition as multi-document YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<group>_<plural>.yaml` files into this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the operator (client from KUBECONFIG or in-cluster configuration).
    Run(Box<RunArgs>),
    /// Show the address pool's usage and the range automatic assignment would pick next.
    Ipam(PoolArgs),
    /// Set a database administrator's password in a running server (what the rotation Job runs). Everything comes
    /// from the environment, never the command line: APPDB_HOST, APPDB_PORT (default 3306), APPDB_ROOT_PASSWORD,
    /// APPDB_ADMIN_USERNAME, APPDB_ADMIN_PASSWORD. Prints one JSON line.
    RotatePassword,
    /// Copy a database server to a new one and switch over (what a copying DatabaseMigration's Job runs; also run
    /// by hand between two servers). Credentials come from the environment only: APPDB_SOURCE_PASSWORD and
    /// APPDB_TARGET_PASSWORD (users APPDB_SOURCE_USER / APPDB_TARGET_USER, default root). Prints one JSON line
    /// per phase. Exit codes: 0 completed, 3 rolled back (the source is writable and authoritative), 1 error
    /// (safe to run again).
    Migrate(Box<MigrateArgs>),
    /// Run in a VPN gateway pod beside charon: relay database connections arriving through the tunnels to the
    /// databases' stable Services (`--forward 10.20.30.74:3306=orders.acme.svc.cluster.local:3306`, repeatable).
    VpnAgent {
        /// LISTEN=TARGET rules.
        #[arg(long = "forward", env = "APPDB_FORWARD", value_delimiter = ',')]
        forward: Vec<crate::vpn::forward::Rule>,
        /// charon's vici socket: report the tunnel's state (UP/DOWN and why) whenever it changes.
        #[arg(long, env = "APPDB_VICI_SOCKET")]
        vici: Option<String>,
        /// Write each state report (JSON) to this file.
        #[arg(long, env = "APPDB_REPORT_FILE")]
        report_file: Option<std::path::PathBuf>,
        /// Write each state report into the connection's report ConfigMap, under this pod's key
        /// (NAMESPACE/CONFIGMAP/POD); the gateway's Role may patch that ConfigMap and nothing else.
        #[arg(long, env = "APPDB_REPORT_TO")]
        report_to: Option<crate::report::Target>,
        /// Touch this file whenever the state is known to be on record (a report written, or the report on
        /// record checked against charon every 20 s); the agent's readiness probe reads its age.
        #[arg(long, env = "APPDB_READY_FILE")]
        ready_file: Option<std::path::PathBuf>,
    },
    /// The VPN agent's readiness probe: succeeds when the agent's ready file was touched within `--max-age` seconds,
    /// that is, when the tunnel state on record is fresh.
    VpnAgentReady {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long, default_value_t = 90)]
        max_age: u64,
    },
}

/// The address pool, as `run` and `ipam` take it.
#[derive(Debug, Args, Clone)]
pub struct PoolArgs {
    /// Ranges customer networks are allocated from (comma-separated, canonical CIDRs).
    #[arg(
        long,
        env = "APPDB_POOL",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    )]
    pub pool: Vec<Ipv4Net>,
    /// Ranges the platform uses itself (pod, service, node networks), never handed out. The default fits kind
    /// (pods 10.244.0.0/16, services 10.96.0.0/12); set your cluster's own.
    #[arg(
        long,
        env = "APPDB_RESERVED",
        value_delimiter = ',',
        default_value = "10.244.0.0/16,10.96.0.0/12"
    )]
    pub reserved: Vec<Ipv4Net>,
}

impl PoolArgs {
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            ranges: self.pool.clone(),
            reserved: self.reserved.clone(),
        }
    }
}

/// Flags of `appdb-operator run`. Every flag can also be set by the environment variable shown in `--help`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "APPDB_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "APPDB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Hold a Lease so that only one replica reconciles.
    #[arg(long, env = "APPDB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "APPDB_LEASE_NAME", default_value = "appdb-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease holder may go without renewing before another replica takes over.
    #[arg(long, env = "APPDB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    #[arg(long, env = "APPDB_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Seconds a released range stays locked before it can be handed out again (customer firewalls may still point
    /// at it). The same customer namespace may take its own released range back at once.
    #[arg(long, env = "APPDB_RELEASE_COOLDOWN_SECONDS", default_value_t = 86_400)]
    pub release_cooldown_seconds: u64,
    /// Seconds an allocation whose network has vanished is kept before it is released.
    #[arg(long, env = "APPDB_ALLOCATION_GC_GRACE_SECONDS", default_value_t = 300)]
    pub allocation_gc_grace_seconds: u64,
    /// Seconds between allocation garbage-collection passes.
    #[arg(long, env = "APPDB_ALLOCATION_GC_INTERVAL_SECONDS", default_value_t = 60)]
    pub allocation_gc_interval_seconds: u64,
    /// Reconciles each controller runs at once.
    #[arg(long, env = "APPDB_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Image of the operator, for the Jobs it runs (password rotation, migration). The Helm chart sets it.
    #[arg(long, env = "APPDB_OPERATOR_IMAGE", default_value = concat!("ghcr.io/appdb-dev/appdb-operator:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,
    /// The cluster's DNS domain.
    #[arg(long, env = "APPDB_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// DNS domains under which every namespace may publish `AppDatabase.spec.dns.hostname` (comma-separated). A
    /// namespace's `appdb.dev/dns-domains` annotation, set by the platform, replaces the list for that namespace.
    /// Empty and no annotation: no name is published.
    #[arg(long, env = "APPDB_DNS_DOMAINS", value_delimiter = ',')]
    pub dns_domains: Vec<String>,
    /// Images customers may choose for their databases (`spec.image`, a migration's `target.image`),
    /// comma-separated: a repository (any tag or digest), or a prefix ending in `/`. Default: the engines' official
    /// images.
    #[arg(
        long,
        env = "APPDB_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = "mysql,mariadb,docker.io/library/mysql,docker.io/library/mariadb"
    )]
    pub allowed_images: Vec<String>,
    /// Image of the VPN gateway pods (the Dockerfile's `vpn-gateway` target). The Helm chart sets it.
    #[arg(long, env = "APPDB_VPN_GATEWAY_IMAGE", default_value = concat!("ghcr.io/appdb-dev/appdb-vpn-gateway:", env!("CARGO_PKG_VERSION")))]
    pub vpn_gateway_image: String,
    /// Where gateway pods run ESP: `kernel` (XFRM, default) or `userspace` (strongSwan's kernel-libipsec over TUN,
    /// for nodes without kernel ESP).
    #[arg(long, env = "APPDB_VPN_DATAPATH", value_enum, default_value_t = DataPathArg::Kernel)]
    pub vpn_datapath: DataPathArg,
    /// How tunnels get their outside address: `load-balancer` (a LoadBalancer Service per tunnel, default) or
    /// `host-network` (the gateway pod uses its node's network and address; for nodes with public addresses and no
    /// load balancer).
    #[arg(long, env = "APPDB_VPN_EXPOSURE", value_enum, default_value_t = ExposureArg::LoadBalancer)]
    pub vpn_exposure: ExposureArg,
    /// After a copying migration, keep the previous database server (read-only, with its volume) this long for a
    /// rollback by hand, then delete it.
    #[arg(long, env = "APPDB_ROLLBACK_WINDOW_SECONDS", default_value_t = 24 * 3600)]
    pub rollback_window_seconds: u64,
    /// Test-only: accept documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) as customer gateways.
    #[arg(long, env = "APPDB_ALLOW_DOCUMENTATION_GATEWAYS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_documentation_gateways: bool,
    /// Where the API server answers (IP:PORT, comma-separated), for the VPN gateways' egress policy. Default: read
    /// at start-up from the `default/kubernetes` Service and its EndpointSlices.
    #[arg(long, env = "APPDB_API_SERVER_ENDPOINTS", value_delimiter = ',')]
    pub api_server_endpoints: Vec<std::net::SocketAddrV4>,
    /// Node selector, tolerations, affinity and priority class (JSON, the pod spec's field names) added to every
    /// pod the operator creates: database servers, VPN gateways, Jobs. The Helm chart sets it from `workloads.*`.
    #[arg(long, env = "APPDB_WORKLOAD_PLACEMENT", value_parser = crate::placement::parse, default_value = "{}")]
    pub workload_placement: crate::placement::WorkloadPlacement,
}

/// `--vpn-exposure` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExposureArg {
    LoadBalancer,
    HostNetwork,
}

/// `--vpn-datapath` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPathArg {
    Kernel,
    Userspace,
}

impl RunArgs {
    pub fn operator_config(&self) -> OperatorConfig {
        OperatorConfig {
            pool: self.pool.pool_config(),
            release_cooldown: std::time::Duration::from_secs(self.release_cooldown_seconds),
            allocation_gc_grace: std::time::Duration::from_secs(self.allocation_gc_grace_seconds),
            allocation_gc_interval: std::time::Duration::from_secs(self.allocation_gc_interval_seconds.max(1)),
            concurrency: self.concurrency,
            operator_image: self.operator_image.clone(),
            cluster_domain: self.cluster_domain.clone(),
            dns_domains: self
                .dns_domains
                .iter()
                .filter(|d| !d.trim().is_empty())
                .cloned()
                .collect(),
            allowed_images: self
                .allowed_images
                .iter()
                .filter(|d| !d.trim().is_empty())
                .cloned()
                .collect(),
            vpn_gateway_image: self.vpn_gateway_image.clone(),
            vpn_datapath: match self.vpn_datapath {
                DataPathArg::Kernel => crate::vpn::render::DataPath::Kernel,
                DataPathArg::Userspace => crate::vpn::render::DataPath::Userspace,
            },
            allow_documentation_gateways: self.allow_documentation_gateways,
            rollback_window: std::time::Duration::from_secs(self.rollback_window_seconds),
            vpn_exposure: match self.vpn_exposure {
                ExposureArg::LoadBalancer => crate::vpn::render::Exposure::LoadBalancer,
                ExposureArg::HostNetwork => crate::vpn::render::Exposure::HostNetwork,
            },
            isolation: crate::netpol::IsolationConfig {
                api_server: self.api_server_endpoints.clone(),
                ..Default::default()
            },
            placement: self.workload_placement.clone(),
        }
    }

    pub fn manager_config(&self) -> ManagerConfig {
        ManagerConfig {
            listen: self.listen,
            leader_election: self.leader_election,
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            lease_grace_seconds: self.lease_grace_seconds,
        }
    }
}

/// `appdb-operator migrate`.
#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// Replicate (seconds of write outage) or dump-restore (read-only throughout the copy).
    #[arg(long, value_enum, default_value = "replicate")]
    pub strategy: crate::mysql::migrate::Strategy,
    /// The server the data lives on now (HOST:PORT).
    #[arg(long, env = "APPDB_SOURCE")]
    pub source: HostPort,
    /// The new, empty server (HOST:PORT).
    #[arg(long, env = "APPDB_TARGET")]
    pub target: HostPort,
    /// How the target server reaches the source for replication, when that differs from --source.
    #[arg(long, env = "APPDB_SOURCE_FOR_TARGET")]
    pub source_for_target: Option<HostPort>,
    /// The stable address clients use (the database's Service): the switch is complete when it leads to the target.
    #[arg(long, env = "APPDB_SERVICE")]
    pub service: Option<HostPort>,
    /// Not before this time (RFC 3339) does the source stop taking writes.
    #[arg(long, env = "APPDB_CUTOVER_AT")]
    pub cutover_at: Option<jiff::Timestamp>,
    /// Connections per server for the copy.
    #[arg(long, env = "APPDB_PARALLEL", default_value_t = 4)]
    pub parallel: usize,
    /// How a replicate target is seeded: `auto` clones (MySQL's CLONE INSTANCE, same version on both servers)
    /// where it can and copies logically otherwise; `logical` always copies; `clone` fails when it cannot clone.
    #[arg(long, value_enum, env = "APPDB_SEED", default_value = "auto")]
    pub seed: crate::mysql::migrate::clone::Seeding,
    /// Seconds the target may take to come back after a clone made it exit (the pod restarts).
    #[arg(long, default_value_t = 300)]
    pub restart_timeout: u64,
    /// Seconds the target may take to apply the source's last transaction once the source is fenced.
    #[arg(long, default_value_t = 30)]
    pub catch_up_timeout: u64,
    /// Seconds to wait for the Service to lead to the target once it is promoted.
    #[arg(long, default_value_t = 120)]
    pub switch_timeout: u64,
    /// Seconds replication may take to catch up (a lag of at most 1 s).
    #[arg(long, default_value_t = 3600)]
    pub replication_timeout: u64,
    /// Only make the source writable again (refused once clients use the target).
    #[arg(long)]
    pub rollback: bool,
    /// Also write the phases into the migration's report ConfigMap, under this pod's key (NAMESPACE/CONFIGMAP/POD).
    #[arg(long, env = "APPDB_REPORT_TO")]
    pub report_to: Option<crate::report::Target>,
}

/// HOST:PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port = port.parse().map_err(|_| format!("{port:?} is not a port number"))?;
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        Ok(HostPort {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
        })
    }
}
