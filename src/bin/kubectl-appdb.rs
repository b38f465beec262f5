//! `kubectl-appdb`: the kubectl plugin (`kubectl appdb tunnel|vpn-config|status`), and its shell completion under
//! the name `kubectl_complete-appdb`. The logic lives in `appdb_operator::plugin`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    appdb_operator::plugin::entry().await
}
