//! `appdb-operator migrate`: the command around the engine (`mysql::migrate`): credentials from the environment,
//! one JSON line per phase on stdout, and the same reports under the Job pod's key of the migration's report
//! ConfigMap (`crate::report`), where the DatabaseMigration controller reads them.

use std::{process::ExitCode, time::Duration};

use crate::{
    cli::MigrateArgs,
    migration::report::{CopyPhase, PhaseReport},
    mysql::migrate::{Limits, Outcome, Plan, Server},
};

/// Exit code of a run that rolled back (the source is writable and authoritative).
pub const EXIT_ROLLED_BACK: u8 = 3;

fn server(endpoint: &crate::cli::HostPort, role: &str) -> Result<Server, String> {
    let var = |suffix: &str| format!("APPDB_{role}_{suffix}");
    Ok(Server {
        host: endpoint.host.clone(),
        port: endpoint.port,
        user: std::env::var(var("USER")).unwrap_or_else(|_| "root".into()),
        password: std::env::var(var("PASSWORD")).map_err(|_| format!("{} is not set", var("PASSWORD")))?,
    })
}

pub fn plan(args: &MigrateArgs) -> Result<Plan, String> {
    Ok(Plan {
        strategy: args.strategy,
        source: server(&args.source, "SOURCE")?,
        target: server(&args.target, "TARGET")?,
        source_address_for_target: args.source_for_target.as_ref().map(|h| (h.host.clone(), h.port)),
        service: args.service.as_ref().map(|h| (h.host.clone(), h.port)),
        cutover_at: args.cutover_at,
        parallel: args.parallel,
        seeding: args.seed,
        limits: Limits {
            catch_up: Duration::from_secs(args.catch_up_timeout),
            switch: Duration::from_secs(args.switch_timeout),
            replication: Duration::from_secs(args.replication_timeout),
            restart: Duration::from_secs(args.restart_timeout),
            ..Limits::default()
        },
        rollback_only: args.rollback,
    })
}

pub async fn run(args: MigrateArgs) -> ExitCode {
    // Logs go to stderr; stdout carries the phase reports.
    crate::telemetry::init(crate::telemetry::LogFormat::Json);
    let plan = match plan(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reporter = match args.report_to.clone() {
        None => None,
        Some(target) => match crate::client::infer("migrate").await {
            Ok(client) => Some(crate::report::Reporter::new(client, target)),
            Err(e) => {
                eprintln!("error: cannot report: an in-cluster client is needed: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PhaseReport>();
    let reporter = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(report) = rx.recv().await {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            all.push(report);
            if let Some(reporter) = &reporter {
                let value = serde_json::to_string(&all).unwrap_or_default();
                // Progress is advisory: the engine goes on if the API server is briefly unreachable.
                let _ = reporter.write(&value).await;
            }
        }
    });
    let result = crate::mysql::migrate::run(plan, tx).await;
    let _ = reporter.await;
    match result {
        Ok(Outcome::Completed { .. }) => ExitCode::SUCCESS,
        Ok(Outcome::RolledBack { .. }) => ExitCode::from(EXIT_ROLLED_BACK),
        Err(e) => {
            let report = PhaseReport {
                message: Some(e.to_string()),
                ..PhaseReport::ended(CopyPhase::Error, jiff::Timestamp::now())
            };
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}
