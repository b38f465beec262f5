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
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a Kubernetes client from KUBECONFIG or the in-cluster configuration");
                    return ExitCode::FAILURE;
                }
            };
            let metrics = Arc::new(Metrics::default());
            match manager::run(client, args.manager_config(), metrics, controllers::all()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
