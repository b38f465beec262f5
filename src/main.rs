use std::{process::ExitCode, sync::Arc};

use appdb_operator::{
    cli::{Cli, Command},
    controllers, crdgen, manager,
    metrics::Metrics,
    telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => {
            let result = match out_dir {
                Some(dir) => crdgen::write_files(&dir),
                None => crdgen::render_all().map(|yaml| print!("{yaml}")),
            };
            if let Err(e) = result {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Ipam(args) => {
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: cannot build a Kubernetes client: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match appdb_operator::controllers::private_network::allocate::preview(&client, &args.pool_config()).await {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a Kubernetes client from KUBECONFIG or the in-cluster configuration");
                    return ExitCode::FAILURE;
                }
            };
            let mut metrics = Metrics::default();
            let controllers = match controllers::all(Arc::new(args.operator_config()), &mut metrics) {
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
    }
}
