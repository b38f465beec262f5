//! `appdb-operator run`: the operator. Builds the client and the configuration, finds the API server's addresses
//! for the gateways' egress, and runs every controller of the registry (`crate::manager::controllers`) until
//! SIGTERM.

use std::{process::ExitCode, sync::Arc};

use crate::{cli::RunArgs, manager, metrics::Metrics, telemetry};

pub async fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let client = match crate::client::infer("controller").await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client from KUBECONFIG or the in-cluster configuration");
            return ExitCode::FAILURE;
        }
    };
    let mut config = args.operator_config();
    if config.isolation.api_server.is_empty() {
        match crate::netpol::discover_api_server(&client).await {
            Ok(found) => config.isolation.api_server = found,
            Err(e) => tracing::warn!(
                namespace = "default",
                name = "kubernetes",
                error = %e,
                "cannot read the API server's addresses from default/kubernetes; VPN gateways may not report \
                 their tunnels where NetworkPolicies are enforced (set --api-server-endpoints)"
            ),
        }
    }
    tracing::info!(endpoints = ?config.isolation.api_server, "API server endpoints for the gateways' egress");
    let mut metrics = Metrics::default();
    let controllers = match manager::controllers(Arc::new(config), &mut metrics) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid address pool");
            return ExitCode::FAILURE;
        }
    };
    match manager::run(client, args.manager_config(), Arc::new(metrics), controllers).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
