//! The engine (`appdb-operator migrate`) run as a process whose phases the tests react to.
#![allow(dead_code)]

use std::time::Duration;

use appdb_operator::mysql::migrate::PhaseReport;
use appdb_testkit::{
    copying::{SOURCE_ROOT, TARGET_ROOT},
    dbserver::DbServer,
    relay::Relay,
};
use tokio::io::AsyncBufReadExt;

/// How an engine run ended, with its phase reports.
pub struct EngineRun {
    pub exit: Option<i32>,
    pub reports: Vec<PhaseReport>,
    pub killed: bool,
    pub stderr: String,
}

/// Runs `appdb-operator migrate` from `source` to `target` with the relay as the Service. Like the operator, it
/// switches the relay to the target when the engine reports `promote`. `kill_after` SIGKILLs the engine right
/// after it reports that phase.
pub async fn run_engine(
    source: &DbServer,
    target: &DbServer,
    relay: &Relay,
    strategy: &str,
    kill_after: Option<&str>,
    switch_on_promote: bool,
    extra: &[&str],
) -> EngineRun {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"));
    command
        .args([
            "migrate",
            "--strategy",
            strategy,
            "--source",
            &format!("127.0.0.1:{}", source.port),
            "--target",
            &format!("127.0.0.1:{}", target.port),
            "--service",
            &format!("127.0.0.1:{}", relay.port),
            "--parallel",
            "2",
        ])
        .args(extra)
        .env("APPDB_SOURCE_PASSWORD", SOURCE_ROOT)
        .env("APPDB_TARGET_PASSWORD", TARGET_ROOT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if !extra.contains(&"--switch-timeout") {
        command.args(["--switch-timeout", "30"]);
    }
    let mut child = command.spawn().expect("start the engine");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut reports = Vec::new();
    let mut killed = false;
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let report: PhaseReport =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a phase report ({e}): {line}"));
            if report.phase == "promote" && switch_on_promote {
                relay.switch_to(target.port);
            }
            let stop_here = kill_after == Some(report.phase.as_str());
            reports.push(report);
            if stop_here {
                child.start_kill().expect("SIGKILL the engine");
                killed = true;
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the engine finished within 300 s");
    let status = child.wait().await.expect("engine exit");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    EngineRun {
        exit: status.code(),
        reports,
        killed,
        stderr,
    }
}

pub fn phases(run: &EngineRun) -> Vec<&str> {
    run.reports.iter().map(|r| r.phase.as_str()).collect()
}
