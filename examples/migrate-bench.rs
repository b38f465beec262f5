//! Benchmark of the copying migration engine against a plain `mysqldump | mysql` (`mariadb-dump | mariadb`) pipe,
//! on the same generated data, and the write outage of a `Replicate` migration under a steady write load, seen
//! from the writers' timeline.
//!
//! `cargo build --release && cargo run --release --example migrate-bench -- [--engine mysql|mariadb] [--gb 1.2]`
//! (MySQL from `scripts/install-mysql.sh`, MariaDB from mariadb-server; `APPDB_BENCH_GB` also sets the size).

use std::time::{Duration, Instant};

use appdb_testkit::{
    copying::{Writer, load_dataset, numbers},
    dbserver::{DbServer, Engine, ServerOptions},
    relay::Relay,
};
use mysql_async::{OptsBuilder, prelude::Queryable};
use tokio::io::AsyncBufReadExt;

const ROOT: &str = "BenchRootPassw0rd";
const TABLES: u32 = 8;
/// Each generated row holds about 900 bytes (a 704-character pad, a short text, numbers, a date).
const ROW_BYTES: f64 = 900.0;
const SERVER_OPTIONS: &[&str] = &["--innodb-buffer-pool-size=1G", "--max-allowed-packet=64M"];

async fn root(db: &DbServer) -> mysql_async::Conn {
    mysql_async::Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(db.port)
            .user(Some("root"))
            .pass(Some(ROOT))
            .prefer_socket(false),
    )
    .await
    .expect("connect")
}

async fn data_bytes(db: &DbServer) -> u64 {
    let mut c = root(db).await;
    for t in 0..TABLES {
        c.query_drop(format!("ANALYZE TABLE bench.t{t}"))
            .await
            .expect("analyze");
    }
    c.query_first::<u64, _>(
        "SELECT CAST(SUM(DATA_LENGTH + INDEX_LENGTH) AS UNSIGNED) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ('bench', 'shop', 'legacy')",
    )
    .await
    .expect("size")
    .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let gigabytes: f64 = flag("--gb")
        .or_else(|| std::env::var("APPDB_BENCH_GB").ok())
        .map(|v| v.parse().expect("--gb takes a number"))
        .unwrap_or(1.2);
    let kind = match flag("--engine").as_deref() {
        None | Some("mysql") => Engine::MySql,
        Some("mariadb") => Engine::MariaDb,
        Some(other) => panic!("--engine takes mysql or mariadb, not {other}"),
    };
    let engine = std::env::current_exe()
        .expect("own path")
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("appdb-operator"))
        .expect("target dir");
    assert!(
        engine.is_file(),
        "build the operator first: cargo build --release ({})",
        engine.display()
    );
    let (source, by_pipe) = tokio::join!(
        DbServer::start_with(
            kind,
            ROOT,
            ServerOptions {
                server_id: 1,
                extra: SERVER_OPTIONS,
                ..Default::default()
            }
        ),
        DbServer::start_with(
            kind,
            ROOT,
            ServerOptions {
                server_id: 2,
                extra: SERVER_OPTIONS,
                ..Default::default()
            }
        ),
    );

    // The data: the test dataset (every type and object kind) plus TABLES large tables.
    let started = Instant::now();
    let mut c = root(&source).await;
    load_dataset(&mut c, 1000).await;
    // Row numbers from a recursive CTE (both engines); each stops recursion at 1,000 levels by default.
    let depth = if kind == Engine::MySql {
        "SET SESSION cte_max_recursion_depth = 1000000"
    } else {
        "SET SESSION max_recursive_iterations = 1000000"
    };
    c.query_drop(depth).await.expect("recursion depth");
    let rows_per_table = ((gigabytes * 1e9) / ROW_BYTES / TABLES as f64) as u64;
    c.query_drop("CREATE DATABASE bench").await.expect("schema");
    c.query_drop("USE bench").await.expect("use");
    for t in 0..TABLES {
        c.query_drop(format!(
            "CREATE TABLE t{t} (id BIGINT PRIMARY KEY, k INT NOT NULL, c VARCHAR(120) NOT NULL, pad TEXT NOT NULL, \
             amount DECIMAL(12,2) NOT NULL, created DATETIME NOT NULL, KEY (k)) ENGINE=InnoDB"
        ))
        .await
        .expect("table");
        let mut done = 0;
        while done < rows_per_table {
            let n = (rows_per_table - done).min(100_000);
            // SHA2, not MD5: MySQL 9 moved MD5 into an optional component.
            c.query_drop(format!(
                "INSERT INTO t{t} SELECT seq + {done}, seq % 1000, CONCAT('row ', seq, ' ', LEFT(SHA2(seq, 256), 32)), \
                 REPEAT(LEFT(SHA2(seq * {t}, 256), 32), 22), seq / 100, \
                 TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND FROM {}",
                numbers(n as u32)
            ))
            .await
            .expect("generate rows");
            done += n;
        }
    }
    let size = data_bytes(&source).await;
    println!(
        "generated {:.0} MiB ({} rows in {TABLES} tables + the test dataset) in {:.1}s",
        mib(size),
        rows_per_table * TABLES as u64,
        started.elapsed().as_secs_f64()
    );

    // Baseline: the engine's own dump program piped into its client.
    let started = Instant::now();
    let gtids = if kind == Engine::MySql {
        // The target has transactions of its own: the dump must not try to set gtid_purged.
        "--set-gtid-purged=OFF"
    } else {
        ""
    };
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} --no-defaults -h127.0.0.1 -P{} -uroot --single-transaction {gtids} \
             --routines --triggers --events --databases bench shop legacy | {} --no-defaults -h127.0.0.1 -P{} -uroot",
            kind.dump().display(),
            source.port,
            kind.client().display(),
            by_pipe.port
        ))
        .env("MYSQL_PWD", ROOT)
        .status()
        .await
        .expect("run the pipe");
    assert!(
        status.success(),
        "{} | {} failed",
        kind.dump().display(),
        kind.client().display()
    );
    let pipe_seconds = started.elapsed().as_secs_f64();

    let pipe_size = data_bytes(&by_pipe).await;
    by_pipe.stop().await;

    // The engine, logical copy and (MySQL) clone, each into a new server with a steady write load through a relay
    // standing in for the Service.
    let seedings: &[&str] = if kind == Engine::MySql {
        &["logical", "clone"]
    } else {
        &["logical"]
    };
    let mut runs = Vec::new();
    for (n, seeding) in seedings.iter().enumerate() {
        if n > 0 {
            reopen(&source).await;
        }
        let mut target = DbServer::start_with(
            kind,
            ROOT,
            ServerOptions {
                server_id: 3 + n as u32,
                extra: SERVER_OPTIONS,
                ..Default::default()
            },
        )
        .await;
        // As a pod's container: a clone makes the server exit, and it is started again.
        target.restart_on_exit();
        runs.push(migrate(&engine, &source, &target, seeding).await);
        target.stop().await;
    }

    println!();
    println!(
        "| measure ({kind}, {:.0} MiB of InnoDB data + indexes on the source) | value |",
        mib(size)
    );
    println!("|---|---|");
    println!(
        "| {} dump \\| load | {pipe_seconds:.1} s ({:.1} MiB/s; target {:.0} MiB) |",
        kind,
        mib(size) / pipe_seconds,
        mib(pipe_size)
    );
    for run in &runs {
        let s = run.seeding;
        println!(
            "| engine seed, {s} (under write load) | {:.1} s ({:.1} MiB/s; target {:.0} MiB); **{:.2}× the dump \\| load rate** |",
            run.copy_seconds,
            mib(size) / run.copy_seconds,
            mib(run.target_bytes),
            pipe_seconds / run.copy_seconds
        );
        let phases: Vec<String> = run
            .phases
            .iter()
            .map(|(phase, seconds)| format!("{phase} {seconds:.3}"))
            .collect();
        println!("| phases after the seed, {s} (s) | {} |", phases.join(" · "));
        println!(
            "| write outage reported (fence → Service leads to target), {s} | {:.3} s |",
            run.downtime
        );
        println!(
            "| **longest gap between acknowledged writes (writers' timeline)**, {s} | **{:.3} s** |",
            run.longest_gap
        );
        println!(
            "| acknowledged writes / failed attempts (retried) / **lost**, {s} | {} / {} / **{}** |",
            run.acked, run.failures, run.lost
        );
        println!("| engine peak RSS, {s} | {:.1} MiB |", run.peak_rss_mib);
    }
    source.stop().await;
}

/// What one engine run showed.
struct Run {
    seeding: &'static str,
    copy_seconds: f64,
    phases: Vec<(&'static str, f64)>,
    downtime: f64,
    longest_gap: f64,
    acked: usize,
    failures: u64,
    lost: usize,
    peak_rss_mib: f64,
    target_bytes: u64,
}

/// docs/copying-migration.md's "reopening a retired source", so that the next run starts from the same data.
async fn reopen(source: &DbServer) {
    let mut c = root(source).await;
    let mariadb = appdb_testkit::copying::is_mariadb(&mut c).await;
    let mut statements = vec!["SET GLOBAL read_only = OFF", "SET GLOBAL event_scheduler = ON"];
    if !mariadb {
        statements.insert(0, "SET GLOBAL super_read_only = OFF");
    }
    for s in statements {
        c.query_drop(s).await.expect(s);
    }
    if mariadb {
        let locked: Vec<String> = c
            .query("SELECT locked FROM appdb_migration.retired")
            .await
            .expect("retired accounts");
        for accounts in locked {
            for account in accounts.split(',').filter(|a| !a.is_empty()) {
                c.query_drop(format!("ALTER USER {account} ACCOUNT UNLOCK"))
                    .await
                    .expect("unlock");
            }
        }
    }
    c.query_drop("DROP TABLE appdb_migration.retired")
        .await
        .expect("reopen");
}

async fn migrate(engine: &std::path::Path, source: &DbServer, target: &DbServer, seeding: &'static str) -> Run {
    let relay = Relay::start(source.port).await;
    let writers: Vec<Writer> = (0..2).map(|_| Writer::start(relay.port)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut child = tokio::process::Command::new(engine)
        .args([
            "migrate",
            "--strategy",
            "replicate",
            "--seed",
            seeding,
            "--source",
            &format!("127.0.0.1:{}", source.port),
            "--target",
            &format!("127.0.0.1:{}", target.port),
            "--service",
            &format!("127.0.0.1:{}", relay.port),
            "--parallel",
            "4",
        ])
        .env("APPDB_SOURCE_PASSWORD", ROOT)
        .env("APPDB_TARGET_PASSWORD", ROOT)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the engine");
    let pid = child.id().expect("pid");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watching = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            {
                watching.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut reports: Vec<serde_json::Value> = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let report: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        if report["phase"] == "promote" {
            relay.switch_to(target.port);
        }
        println!("  {line}");
        reports.push(report);
    }
    let exit = child.wait().await.expect("engine exit");
    sampler.abort();
    assert!(exit.success(), "the engine failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut all = appdb_testkit::copying::Written::default();
    for w in writers {
        let written = w.stop().await;
        all.failures += written.failures;
        all.longest_gap = all.longest_gap.max(written.longest_gap);
        for (id, value) in written.acked {
            let entry = all.acked.entry(id).or_insert(0);
            *entry = (*entry).max(value);
        }
    }
    // Every acknowledged write must be on the target with at least its acknowledged value.
    let mut t = root(target).await;
    let present: Vec<(u64, u64)> = t.query("SELECT id, value FROM shop.writes").await.expect("writes");
    let present: std::collections::BTreeMap<u64, u64> = present.into_iter().collect();
    let lost = all
        .acked
        .iter()
        .filter(|(id, value)| present.get(id).is_none_or(|v| v < value))
        .count();
    let seconds = |phase: &str| -> f64 {
        reports
            .iter()
            .find(|r| r["phase"] == phase)
            .map(|r| {
                let start: jiff::Timestamp = r["start"].as_str().unwrap_or_default().parse().expect("start");
                let end: jiff::Timestamp = r["end"].as_str().unwrap_or_default().parse().expect("end");
                (end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
            })
            .unwrap_or(f64::NAN)
    };
    Run {
        seeding,
        copy_seconds: seconds("snapshot"),
        phases: [
            "replicate",
            "verify",
            "fence",
            "catch-up",
            "promote",
            "switch",
            "release",
        ]
        .into_iter()
        .map(|p| (p, seconds(p)))
        .collect(),
        downtime: reports
            .iter()
            .find_map(|r| r["downtimeSeconds"].as_f64())
            .unwrap_or(f64::NAN),
        longest_gap: all.longest_gap.as_secs_f64(),
        acked: all.acked.len(),
        failures: all.failures,
        lost,
        peak_rss_mib: peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0,
        target_bytes: data_bytes(target).await,
    }
}
