//! The engine (`appdb-operator migrate`) run as a process whose phases the tests react to.
#![allow(dead_code)]

use std::time::Duration;

use appdb_operator::migration::report::PhaseReport;
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
    run_engine_watching(
        source,
        target,
        relay,
        strategy,
        kill_after,
        switch_on_promote,
        extra,
        None,
        |_| {},
    )
    .await
}

/// Like [`run_engine`], calling `on_phase` with each phase as the engine reports it (to break something at that
/// moment).
#[allow(clippy::too_many_arguments)]
pub async fn run_engine_watching(
    source: &DbServer,
    target: &DbServer,
    relay: &Relay,
    strategy: &str,
    kill_after: Option<&str>,
    switch_on_promote: bool,
    extra: &[&str],
    via: Option<(u16, u16)>,
    mut on_phase: impl FnMut(&str),
) -> EngineRun {
    // `via`: the engine reaches source and target through these ports (proxies), while the target replicates
    // from the source directly.
    let (source_port, target_port) = via.unwrap_or((source.port, target.port));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"));
    command
        .args([
            "migrate",
            "--strategy",
            strategy,
            "--source",
            &format!("127.0.0.1:{source_port}"),
            "--source-for-target",
            &format!("127.0.0.1:{}", source.port),
            "--target",
            &format!("127.0.0.1:{target_port}"),
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
            on_phase(report.phase.as_str());
            if report.phase.as_str() == "promote" && switch_on_promote {
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
    let finished = tokio::time::timeout(Duration::from_secs(300), read).await.is_ok();
    if !finished {
        child.start_kill().expect("SIGKILL the engine");
    }
    let status = child.wait().await.expect("engine exit");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(
        finished,
        "the engine did not finish within 300 s; phases reported: {:?}; stderr:\n{stderr}",
        reports.iter().map(|r| r.phase.as_str()).collect::<Vec<_>>()
    );
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

/// SIGKILLs a process (a database server, to make it fail at a chosen moment).
pub fn sigkill(pid: Option<u32>) {
    let pid = pid.expect("a running process");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL {pid}");
}

/// Waits up to `within` for `port` to take a write from the application account; panics with the last error.
pub async fn assert_takes_writes(port: u16, id: u64, within: Duration, what: &str) {
    use mysql_async::prelude::Queryable;
    let deadline = std::time::Instant::now() + within;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_secs(2),
            appdb_testkit::copying::connect(port, "app", appdb_testkit::copying::APP_PASSWORD),
        )
        .await
        {
            Ok(Ok(mut c)) => {
                let write = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.query_drop(format!(
                        "INSERT INTO shop.writes VALUES ({id}, 0) ON DUPLICATE KEY UPDATE value = value"
                    )),
                )
                .await;
                match write {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "the write hung".into(),
                }
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connecting hung".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: no write was taken within {within:?}: {last}");
}
