//! `appdb-operator vpn-agent` and `vpn-agent-ready`: run in a VPN gateway pod beside charon. The agent relays
//! database connections arriving through the tunnel to the databases' Services and reports the tunnel's state
//! (`crate::vpn::state`) until SIGTERM; the readiness probe says whether that report is fresh.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    manager, report,
    telemetry::{self, LogFormat},
    vpn::{forward, state},
};

pub struct AgentArgs {
    pub rules: Vec<forward::Rule>,
    pub vici: Option<String>,
    pub report_file: Option<PathBuf>,
    pub report_to: Option<report::Target>,
    pub ready_file: Option<PathBuf>,
}

pub async fn run(args: AgentArgs) -> ExitCode {
    telemetry::init(LogFormat::Json);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for rule in args.rules {
        tracing::info!(listen = %rule.listen, target = %rule.target, "relaying");
        tasks.spawn(forward::forward(rule, stop.clone()));
    }
    if let Some(socket) = args.vici {
        let reporter = match args.report_to {
            Some(target) => match crate::client::infer("vpn-agent").await {
                Ok(client) => Some(report::Reporter::new(client, target)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot report: an in-cluster client is needed");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let record = state::Record {
            file: args.report_file,
            reporter,
            ready_file: args.ready_file,
        };
        tasks.spawn(state::report_forever(socket, record));
    }
    tokio::select! {
        _ = manager::termination_signal() => {}
        Some(done) = tasks.join_next() => {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "a relay failed");
                return ExitCode::FAILURE;
            }
        }
    }
    stop.cancel();
    ExitCode::SUCCESS
}

/// The agent's readiness probe: the tunnel state on record was confirmed within `max_age`.
pub fn ready(file: &std::path::Path, max_age: Duration) -> ExitCode {
    match state::fresh(file, max_age) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("not ready: {why}");
            ExitCode::FAILURE
        }
    }
}
