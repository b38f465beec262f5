//! Command line of the `appdb-operator` binary.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{manager::ManagerConfig, telemetry::LogFormat};

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
    Run(RunArgs),
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
}

impl RunArgs {
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
