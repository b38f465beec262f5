//! `kubectl-appdb`: the kubectl plugin (`kubectl appdb tunnel|vpn-config|status`). The logic lives in
//! `appdb_operator::plugin`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    appdb_operator::plugin::main(appdb_operator::plugin::Cli::parse()).await
}
