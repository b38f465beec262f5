//! `kubectl appdb`: the kubectl plugin for customers' databases and VPNs (binary `kubectl-appdb`).
//!
//! * `tunnel`: a local port leading to a customer's database through the Kubernetes API (port-forward), for
//!   occasional direct access with a tool such as MySQL Workbench. Access is Kubernetes RBAC.
//! * `vpn-config`: the customer's VPN device configuration from a VpnConnection's download Secret.
//! * `status`: networks, databases, tunnels and migrations of a namespace in one table.
//! * shell completion through kubectl (`kubectl_complete-appdb`, see `complete`).

pub mod complete;
pub mod status;
pub mod tunnel;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Why a command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Exit code 3.
    #[error("Tunnel not found: {0}")]
    TunnelNotFound(String),
    /// Exit code 3.
    #[error("{0}")]
    NotFound(String),
    /// Exit code 4.
    #[error("Access denied: {0}")]
    AccessDenied(String),
    /// Exit code 5.
    #[error("while binding to tcp://{address}: {reason}")]
    Bind { address: String, reason: String },
    /// Exit code 1.
    #[error("{0}")]
    Kubernetes(String),
    /// Exit code 2 (like clap's usage errors).
    #[error("{0}")]
    Usage(String),
}

impl PluginError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PluginError::TunnelNotFound(_) | PluginError::NotFound(_) => 3,
            PluginError::AccessDenied(_) => 4,
            PluginError::Bind { .. } => 5,
            PluginError::Kubernetes(_) => 1,
            PluginError::Usage(_) => 2,
        }
    }

    /// A Kubernetes error, with 403 turned into "Access denied". A request that got no answer says which server
    /// and why (`crate::client::Unreachable`), without kube's `ServiceError:` wrapping.
    pub fn from_kube(what: &str, e: kube::Error) -> PluginError {
        match e {
            kube::Error::Api(s) if s.code == 403 => PluginError::AccessDenied(format!("{what}: {}", s.message)),
            kube::Error::Service(e) => PluginError::Kubernetes(format!("{what}: {e}")),
            other => PluginError::Kubernetes(format!("{what}: {other}")),
        }
    }
}

/// `--request-timeout`; `None` waits without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTimeout(pub Option<std::time::Duration>);

fn parse_request_timeout(text: &str) -> Result<RequestTimeout, String> {
    crate::client::parse_request_timeout(text).map(RequestTimeout)
}

/// kubectl plugin for appdb-operator: database tunnels, VPN device configurations and an overview.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-appdb",
    bin_name = "kubectl appdb",
    version,
    about = "Work with your appdb databases from a laptop: open a tunnel to a database, print a VPN device's \
             configuration, or see a namespace's networks, databases, tunnels and migrations at a glance."
)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config), as kubectl's flag.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use, as kubectl's flag.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use, as kubectl's flag.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use, as kubectl's flag.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// User to impersonate, as kubectl's `--as`.
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Group to impersonate (repeatable), as kubectl's `--as-group`.
    #[arg(long = "as-group", global = true)]
    pub as_group: Vec<String>,
    /// How long to wait for the server's answer to each request, as kubectl's flag: 0 for no limit, seconds, or a
    /// duration (30s, 2m). An open tunnel's traffic is not limited by it.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_request_timeout)]
    pub request_timeout: RequestTimeout,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a local port that leads to a database (through the Kubernetes API), until interrupted. Exit codes:
    /// 3 tunnel not found, 4 access denied, 5 local port in use.
    Tunnel {
        /// The AppDatabase.
        #[arg(required_unless_present = "config")]
        database: Option<String>,
        /// Local port.
        #[arg(long, default_value_t = crate::mysql::PORT)]
        local_port: u16,
        /// Local address to listen on (default: 127.0.0.1 and ::1, as kubectl port-forward does).
        #[arg(long)]
        address: Option<IpAddr>,
        /// Open every tunnel listed in this file (YAML: `tunnels: [{database, namespace, localPort, address}]`).
        #[arg(long, conflicts_with = "database")]
        config: Option<PathBuf>,
    },
    /// Print the customer's VPN device configuration of a VpnConnection.
    VpnConfig {
        /// The VpnConnection.
        vpn: String,
        /// Device format (see --list-devices).
        #[arg(long, default_value = "generic.txt")]
        device: String,
        /// List the available device formats.
        #[arg(long)]
        list_devices: bool,
    },
    /// Networks, databases, VPN tunnels and migrations of the namespace.
    Status,
}

/// The client as kubectl would build it from the same flags: the kube client's own kubeconfig options, not a
/// re-parse by hand.
async fn client(cli: &Cli) -> Result<(kube::Client, String), PluginError> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        cluster: cli.cluster.clone(),
        user: cli.user.clone(),
    };
    let unreadable =
        |e: kube::config::KubeconfigError| PluginError::Kubernetes(format!("cannot read the kubeconfig: {e}"));
    let mut config = match &cli.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(unreadable)?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(unreadable)?
        }
        None if options.context.is_some() || options.cluster.is_some() || options.user.is_some() => {
            kube::Config::from_kubeconfig(&options).await.map_err(unreadable)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| PluginError::Kubernetes(format!("cannot read the kubeconfig: {e}")))?,
    };
    if let Some(user) = &cli.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !cli.as_group.is_empty() {
        config.auth_info.impersonate_groups = Some(cli.as_group.clone());
    }
    let namespace = config.default_namespace.clone();
    let client = crate::client::interactive(config, "kubectl-appdb", cli.request_timeout.0)
        .map_err(|e| PluginError::Kubernetes(e.to_string()))?;
    Ok((client, namespace))
}

/// The binary's entry: shell completion when asked for it (`kubectl-appdb __complete …`, or run under the name
/// `kubectl_complete-appdb`, as kubectl's plugin completion calls it), else the command line.
pub async fn entry() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let completing = if invoked_as.starts_with("kubectl_complete-appdb") {
        Some(&args[1..])
    } else if args.get(1).map(String::as_str) == Some("__complete") {
        Some(&args[2..])
    } else {
        None
    };
    match completing {
        Some(words) => {
            print!("{}", complete::complete(words).await);
            ExitCode::SUCCESS
        }
        None => main(<Cli as clap::Parser>::parse()).await,
    }
}

/// Runs the plugin; errors are printed as `error: …` with their exit code.
pub async fn main(cli: Cli) -> ExitCode {
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let (client, default_namespace) = client(&cli).await?;
    let namespace = cli.namespace.unwrap_or(default_namespace);
    match cli.command {
        Command::Tunnel {
            database,
            local_port,
            address,
            config,
        } => {
            let specs = match (database, config) {
                (Some(database), None) => vec![tunnel::TunnelSpec {
                    database,
                    namespace: Some(namespace.clone()),
                    local_port,
                    address,
                }],
                (None, Some(path)) => tunnel::read_config(&path)?,
                _ => return Err(PluginError::Usage("give a database or --config".into())),
            };
            tunnel::run(client, &namespace, specs).await
        }
        Command::VpnConfig {
            vpn,
            device,
            list_devices,
        } => {
            let text = status::vpn_config(&client, &namespace, &vpn, &device, list_devices).await?;
            print!("{text}");
            Ok(())
        }
        Command::Status => {
            print!("{}", status::overview(&client, &namespace).await?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_plugin_has_its_own_help_not_the_operators() {
        let help = Cli::command().render_help().to_string();
        assert!(
            help.starts_with("Work with your appdb databases from a laptop"),
            "{help}"
        );
        assert!(!help.contains("Kubernetes operator for"), "{help}");
    }
}
