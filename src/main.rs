use std::{process::ExitCode, sync::Arc};

use appdb_operator::{
    cli::{Cli, Command},
    crdgen, manager,
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
            let client = match appdb_operator::client::infer("ipam").await {
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
        Command::RotatePassword => rotate_password().await,
        Command::Migrate(args) => appdb_operator::migrate_job::run(*args).await,
        Command::VpnAgent {
            forward,
            vici,
            report_file,
            report_to,
            ready_file,
        } => vpn_agent(forward, vici, report_file, report_to, ready_file).await,
        Command::VpnAgentReady { file, max_age } => {
            match appdb_operator::vpn::state::fresh(&file, std::time::Duration::from_secs(max_age)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("not ready: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let client = match appdb_operator::client::infer("controller").await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a Kubernetes client from KUBECONFIG or the in-cluster configuration");
                    return ExitCode::FAILURE;
                }
            };
            let mut config = args.operator_config();
            if config.isolation.api_server.is_empty() {
                match appdb_operator::netpol::discover_api_server(&client).await {
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
    }
}

/// `appdb-operator rotate-password`: credentials from the environment only.
async fn rotate_password() -> ExitCode {
    use appdb_operator::mysql::admin::{RotateRequest, rotate_admin_password};
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let request = (|| -> Result<RotateRequest, String> {
        Ok(RotateRequest {
            host: var("APPDB_HOST")?,
            port: std::env::var("APPDB_PORT")
                .ok()
                .map(|p| p.parse().map_err(|_| "APPDB_PORT is not a port number".to_owned()))
                .transpose()?
                .unwrap_or(3306),
            root_password: var("APPDB_ROOT_PASSWORD")?,
            username: var("APPDB_ADMIN_USERNAME")?,
            new_password: var("APPDB_ADMIN_PASSWORD")?,
        })
    })();
    let started = jiff::Timestamp::now();
    let (result, user) = match request {
        Ok(req) => (
            rotate_admin_password(&req).await.map_err(|e| e.to_string()),
            req.username.clone(),
        ),
        Err(e) => (Err(e), String::new()),
    };
    let line = serde_json::json!({
        "phase": "rotate-password",
        "user": user,
        "start": started.to_string(),
        "end": jiff::Timestamp::now().to_string(),
        "result": if result.is_ok() { "ok" } else { "error" },
        "message": result.as_ref().err(),
    });
    println!("{line}");
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `appdb-operator vpn-agent`: the relays of a gateway pod and the reports of its tunnel's state, until SIGTERM.
async fn vpn_agent(
    rules: Vec<appdb_operator::vpn::forward::Rule>,
    vici: Option<String>,
    report_file: Option<std::path::PathBuf>,
    report_to: Option<appdb_operator::report::Target>,
    ready_file: Option<std::path::PathBuf>,
) -> ExitCode {
    telemetry::init(telemetry::LogFormat::Json);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for rule in rules {
        tracing::info!(listen = %rule.listen, target = %rule.target, "relaying");
        tasks.spawn(appdb_operator::vpn::forward::forward(rule, stop.clone()));
    }
    if let Some(socket) = vici {
        let reporter = match report_to {
            Some(target) => match appdb_operator::client::infer("vpn-agent").await {
                Ok(client) => Some(appdb_operator::report::Reporter::new(client, target)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot report: an in-cluster client is needed");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let record = appdb_operator::vpn::state::Record {
            file: report_file,
            reporter,
            ready_file,
        };
        tasks.spawn(appdb_operator::vpn::state::report_forever(socket, record));
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
