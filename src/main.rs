use std::process::ExitCode;

use appdb_operator::{
    cli::{Cli, Command},
    commands,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => commands::run::run(*args).await,
        Command::Crds { out_dir } => commands::crds::run(out_dir),
        Command::Ipam(args) => commands::ipam::run(args).await,
        Command::RotatePassword => commands::rotate_password::run().await,
        Command::Migrate(args) => commands::migrate::run(*args).await,
        Command::VpnAgent {
            forward,
            vici,
            report_file,
            report_to,
            ready_file,
        } => {
            commands::vpn_agent::run(commands::vpn_agent::AgentArgs {
                rules: forward,
                vici,
                report_file,
                report_to,
                ready_file,
            })
            .await
        }
        Command::VpnAgentReady { file, max_age } => {
            commands::vpn_agent::ready(&file, std::time::Duration::from_secs(max_age))
        }
    }
}
