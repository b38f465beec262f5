//! The copying migration engine (`appdb-operator migrate`) between two real MariaDB servers on loopback, with a
//! writer going through a relay that stands in for the database's Service.

mod support;

#[path = "support/engine.rs"]
mod engine;

use appdb_testkit::{
    copying::*,
    dbserver::{DbServer, Engine},
    faulty::{FaultPlan, FaultyProxy},
    on_both_engines,
    relay::Relay,
};
use engine::{EngineRun, assert_takes_writes, phases, run_engine, run_engine_watching, sigkill};
use mysql_async::prelude::Queryable;

/// Source and target with the dataset. The target runs as a pod's container does: started again when it exits (a
/// `CLONE INSTANCE` makes MySQL exit).
async fn servers(engine: Engine, customers: u32) -> (DbServer, DbServer) {
    let (source, mut target) = servers_not_restarted(engine, customers).await;
    target.restart_on_exit();
    (source, target)
}

/// Like [`servers`], with a target that stays down when it dies.
async fn servers_not_restarted(engine: Engine, customers: u32) -> (DbServer, DbServer) {
    let (source, target) = tokio::join!(
        DbServer::start_numbered(engine, SOURCE_ROOT, 1),
        DbServer::start_numbered(engine, TARGET_ROOT, 2)
    );
    load_dataset(&mut root(&source, SOURCE_ROOT).await, customers).await;
    // The target's own first start wrote more transactions than the source has (higher GTID sequence numbers in
    // the same domain): with strict GTID mode, replication must still accept the source's.
    let mut t = root(&target, TARGET_ROOT).await;
    for _ in 0..300 {
        t.query_drop("CREATE DATABASE scratch").await.expect("scratch");
        t.query_drop("DROP DATABASE scratch").await.expect("scratch");
    }
    (source, target)
}

async fn read_only(db: &DbServer, password: &str) -> i64 {
    root(db, password)
        .await
        .query_first::<i64, _>("SELECT @@GLOBAL.read_only")
        .await
        .expect("read_only")
        .expect("a value")
}

/// Everything copied and equal, the accounts usable, the engine's bookkeeping gone, no secret printed.
async fn assert_moved(source: &DbServer, target: &DbServer, run: &EngineRun) {
    let mut s = root(source, SOURCE_ROOT).await;
    let mut t = root(target, TARGET_ROOT).await;
    assert_eq!(
        checksums(&mut s).await,
        checksums(&mut t).await,
        "table checksums differ"
    );
    assert_eq!(
        definitions(&mut s).await,
        definitions(&mut t).await,
        "definitions differ"
    );
    let name: Option<String> = t
        .query_first("SELECT name FROM shop.customers WHERE id = 1")
        .await
        .expect("read");
    assert_eq!(name.as_deref(), Some("Kunde 1 😀 ünïcödé"));
    let record: Option<String> = t
        .query_first("SELECT phase FROM appdb_migration.progress")
        .await
        .expect("the engine's record");
    assert_eq!(record.as_deref(), Some("done"));
    // The application account works on the target: routine, trigger and grants came along.
    let mut app = connect(target.port, "app", APP_PASSWORD)
        .await
        .expect("app logs in to the target");
    app.query_drop("CALL shop.add_order(2, 10.00)")
        .await
        .expect("procedure runs");
    let audited: Option<i64> = t
        .query_first("SELECT COUNT(*) FROM shop.audit WHERE msg LIKE 'order %'")
        .await
        .expect("audit");
    assert_eq!(audited, Some(2), "the trigger fired on the target");
    let out = format!("{:?}{}", run.reports, run.stderr);
    for secret in [SOURCE_ROOT, TARGET_ROOT, APP_PASSWORD, REPORTER_PASSWORD] {
        assert!(!out.contains(secret), "a password appeared in the engine's output");
    }
}

/// The end of a run that completed: the writer stops, every acknowledged write is on the target, everything
/// moved ([`assert_moved`]), and both servers stop.
async fn assert_completed_without_loss(source: DbServer, target: DbServer, writer: Writer, run: &EngineRun) {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let written = writer.stop().await;
    assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
    assert_moved(&source, &target, run).await;
    source.stop().await;
    target.stop().await;
}

async fn replicate_under_load_moves_everything_and_loses_no_acknowledged_write(engine: Engine) {
    let (source, target) = servers(engine, 3000).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "engine failed: {:?} {}", run.reports, run.stderr);
    assert_eq!(
        phases(&run),
        [
            "prepare",
            "snapshot",
            "replicate",
            "verify",
            "fence",
            "catch-up",
            "promote",
            "switch",
            "release",
            "done"
        ]
    );
    // Writes go on through the Service, now to the target.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let written = writer.stop().await;
    let snapshot = &run.reports[1];
    let cloned = snapshot.message.as_deref().unwrap_or("").starts_with("cloned");
    assert!(
        snapshot.rows.unwrap_or(0) > 3000 || (cloned && snapshot.bytes.unwrap_or(0) > 0),
        "{snapshot:?}"
    );
    let downtime = run
        .reports
        .last()
        .and_then(|r| r.downtime_seconds)
        .expect("downtime reported");
    eprintln!(
        "{engine} replicate: {} acknowledged writes ({} failed attempts), reported outage {downtime:.3}s, longest gap \
         between acknowledged writes {:?}",
        written.acked.len(),
        written.failures,
        written.longest_gap
    );
    assert!(written.acked.len() > 50, "the writer barely wrote: {written:?}");
    assert_eq!(
        read_only(&source, SOURCE_ROOT).await,
        1,
        "the old source must refuse writes"
    );
    assert_eq!(read_only(&target, TARGET_ROOT).await, 0);
    assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
    assert_moved(&source, &target, &run).await;
    // Running it again (a Job retried after success, a person) only reports the result.
    let again = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(again.exit, Some(0), "{:?} {}", again.reports, again.stderr);
    assert_eq!(phases(&again), ["prepare", "done"]);
    assert_eq!(again.reports[1].downtime_seconds, Some(downtime));
    source.stop().await;
    target.stop().await;
}

async fn dump_restore_copies_everything_with_the_source_fenced(engine: Engine) {
    let (source, target) = servers(engine, 2000).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let run = run_engine(&source, &target, &relay, "dump-restore", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "engine failed: {:?} {}", run.reports, run.stderr);
    assert_eq!(
        phases(&run),
        [
            "prepare", "fence", "snapshot", "verify", "promote", "switch", "release", "done"
        ]
    );
    assert_completed_without_loss(source, target, writer, &run).await;
}

async fn a_service_that_never_switches_rolls_back_and_the_source_stays_authoritative(engine: Engine) {
    let (source, target) = servers(engine, 500).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    let run = run_engine(
        &source,
        &target,
        &relay,
        "replicate",
        None,
        false,
        &["--switch-timeout", "2"],
    )
    .await;
    assert_eq!(
        run.exit,
        Some(3),
        "expected a rollback: {:?} {}",
        run.reports,
        run.stderr
    );
    let last = run.reports.last().expect("reports");
    assert_eq!(last.phase.as_str(), "rolled-back");
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("did not lead to the target"),
        "{last:?}"
    );
    assert_eq!(
        read_only(&source, SOURCE_ROOT).await,
        0,
        "the source must be writable again"
    );
    assert_eq!(
        read_only(&target, TARGET_ROOT).await,
        1,
        "the target is a replica again"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Writes after the rollback land on the source and replicate; a second run completes.
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "second run: {:?} {}", run.reports, run.stderr);
    let written = writer.stop().await;
    assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
    source.stop().await;
    target.stop().await;
}

async fn refuses_a_target_that_holds_other_data(engine: Engine) {
    let (source, target) = servers(engine, 10).await;
    root(&target, TARGET_ROOT)
        .await
        .query_drop("CREATE DATABASE precious")
        .await
        .expect("create");
    let relay = Relay::start(source.port).await;
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(1));
    let last = run.reports.last().expect("an error line");
    assert_eq!(last.phase.as_str(), "error");
    assert!(last.message.as_deref().unwrap_or("").contains("precious"), "{last:?}");
    assert_eq!(read_only(&source, SOURCE_ROOT).await, 0);
    let kept: Vec<String> = root(&target, TARGET_ROOT)
        .await
        .query("SHOW DATABASES LIKE 'precious'")
        .await
        .expect("schemas");
    assert_eq!(kept, ["precious"]);
    source.stop().await;
    target.stop().await;
}

/// SIGKILL right after each phase, then run again: it completes and no acknowledged write is lost.
async fn killed_after_every_phase_and_run_again_completes_without_loss(engine: Engine) {
    for (strategy, kill_points) in [
        (
            "replicate",
            &[
                "prepare",
                "snapshot",
                "replicate",
                "verify",
                "fence",
                "catch-up",
                "promote",
                "switch",
                "release",
            ][..],
        ),
        ("dump-restore", &["fence", "snapshot", "verify", "promote"][..]),
    ] {
        for phase in kill_points {
            let (source, target) = servers(engine, 300).await;
            let relay = Relay::start(source.port).await;
            let writer = Writer::start(relay.port);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let first = run_engine(&source, &target, &relay, strategy, Some(phase), true, &[]).await;
            assert!(
                first.killed,
                "{strategy}: never reached {phase}: {:?} {}",
                first.reports, first.stderr
            );
            // The invariant: a dead engine leaves the database taking writes. Before `promote` that is the
            // source (its fence died with the engine); from `promote` on it is the target, through the Service.
            // An engine killed inside `promote` (between the source's refusal and its report, milliseconds) leaves
            // the target writable and the source refusing; the next run re-announces the switch (below).
            let promoted = first.reports.iter().any(|r| r.phase.as_str() == "promote");
            let inside_promote =
                !promoted && read_only(&source, SOURCE_ROOT).await == 1 && read_only(&target, TARGET_ROOT).await == 0;
            let (port, who) = if promoted {
                (relay.port, "the target, through the Service")
            } else {
                (source.port, "the source")
            };
            if inside_promote {
                eprintln!("{engine} {strategy}: the kill after {phase} landed inside promote");
            } else {
                assert_takes_writes(
                    port,
                    1_000_000_000,
                    std::time::Duration::from_secs(10),
                    &format!("{engine} {strategy}, engine killed after {phase}: {who}"),
                )
                .await;
            }
            let second = run_engine(&source, &target, &relay, strategy, None, true, &[]).await;
            assert_eq!(
                second.exit,
                Some(0),
                "{strategy}, killed after {phase}: {:?} {}",
                second.reports,
                second.stderr
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let written = writer.stop().await;
            assert_eq!(relay.backend(), target.port);
            // The outage reported covers what the writer saw, across both runs (never under-reported).
            let reported = second
                .reports
                .last()
                .and_then(|r| r.downtime_seconds)
                .expect("downtime");
            assert!(
                reported + 2.0 >= written.longest_gap.as_secs_f64(),
                "{engine} {strategy}, killed after {phase}: reported {reported:.3}s, the writer waited {:?}",
                written.longest_gap
            );
            assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
            let mut s = root(&source, SOURCE_ROOT).await;
            let mut t = root(&target, TARGET_ROOT).await;
            assert_eq!(
                checksums(&mut s).await,
                checksums(&mut t).await,
                "{strategy}, killed after {phase}"
            );
            eprintln!(
                "{engine} {strategy}: killed after {phase}, second run {:?}, {} acknowledged writes kept, outage \
                 reported {reported:.3}s, longest gap seen {:?}",
                phases(&second),
                written.acked.len(),
                written.longest_gap
            );
            source.stop().await;
            target.stop().await;
        }
    }
}

/// A target that dies right after the fence: the run rolls back (exit 3), the source takes writes again at once,
/// nothing acknowledged is lost, and `--rollback` works with only the source.
async fn a_target_failure_after_the_fence_rolls_back_with_the_source_writable(engine: Engine) {
    let (source, target) = servers_not_restarted(engine, 300).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let target_pid = target.pid();
    // A clone would make this target (which stays down when it exits) exit before the fence.
    let logical = &["--seed", "logical"][..];
    let run = run_engine_watching(
        &source,
        &target,
        &relay,
        "replicate",
        None,
        true,
        logical,
        None,
        |phase| {
            if phase == "fence" {
                sigkill(target_pid);
            }
        },
    )
    .await;
    assert_eq!(
        run.exit,
        Some(3),
        "expected a rollback: {:?} {}",
        run.reports,
        run.stderr
    );
    assert_eq!(run.reports.last().map(|r| r.phase.as_str()), Some("rolled-back"));
    assert_eq!(read_only(&source, SOURCE_ROOT).await, 0, "the source must take writes");
    assert_takes_writes(
        relay.port,
        1_000_000_001,
        std::time::Duration::from_secs(5),
        "after the rollback",
    )
    .await;
    let written = writer.stop().await;
    assert_no_write_lost(&mut root(&source, SOURCE_ROOT).await, &written).await;

    // `--rollback` with the target gone: only the source is needed.
    let again = run_engine(&source, &target, &relay, "replicate", None, false, &["--rollback"]).await;
    assert_eq!(again.exit, Some(3), "{:?} {}", again.reports, again.stderr);
    let last = again.reports.last().expect("reports");
    assert_eq!(last.phase.as_str(), "rolled-back");
    assert!(last.message.as_deref().unwrap_or("").contains("target"), "{last:?}");
    assert_eq!(read_only(&source, SOURCE_ROOT).await, 0);
    source.stop().await;
    target.stop().await;
}

/// What an older engine could leave behind (both servers refusing writes, the source fenced by `read_only`) is
/// recovered: `--rollback` makes the source writable, and a re-run completes.
async fn rollback_and_rerun_recover_both_servers_left_read_only(engine: Engine) {
    let (source, target) = servers(engine, 200).await;
    let relay = Relay::start(source.port).await;
    let first = run_engine(&source, &target, &relay, "replicate", Some("replicate"), true, &[]).await;
    assert!(first.killed);
    let refuse = match engine {
        Engine::MySql => "SET GLOBAL super_read_only = ON",
        Engine::MariaDb => "SET GLOBAL read_only = ON",
    };
    for (db, password) in [(&source, SOURCE_ROOT), (&target, TARGET_ROOT)] {
        root(db, password).await.query_drop(refuse).await.expect("read-only");
    }
    let back = run_engine(&source, &target, &relay, "replicate", None, false, &["--rollback"]).await;
    assert_eq!(back.exit, Some(3), "{:?} {}", back.reports, back.stderr);
    assert_eq!(
        read_only(&source, SOURCE_ROOT).await,
        0,
        "--rollback makes the source writable"
    );
    root(&source, SOURCE_ROOT)
        .await
        .query_drop(refuse)
        .await
        .expect("read-only");
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "{:?} {}", run.reports, run.stderr);
    assert!(
        run.reports[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("takes writes again"),
        "{:?}",
        run.reports[0]
    );
    source.stop().await;
    target.stop().await;
}

/// Objects that broke earlier engines: an event and views whose definer is a customer account (a view over such
/// a view), a role held by an account, and a row larger than the target's packet limit. After the switch the
/// source refuses every write, runs no event and records its retirement.
async fn definers_roles_and_large_rows_move_and_the_source_is_retired(engine: Engine) {
    let (source, target) = servers(engine, 100).await;
    let mut s = root(&source, SOURCE_ROOT).await;
    let role_statements: [&str; 4] = match engine {
        Engine::MySql => [
            "CREATE ROLE 'reader'",
            "GRANT SELECT ON shop.* TO 'reader'",
            "GRANT 'reader' TO 'app'@'%'",
            "SET DEFAULT ROLE 'reader' TO 'app'@'%'",
        ],
        Engine::MariaDb => [
            "CREATE ROLE reader",
            "GRANT SELECT ON shop.* TO reader",
            "GRANT reader TO 'app'@'%'",
            "SET DEFAULT ROLE reader FOR 'app'@'%'",
        ],
    };
    for statement in [
        "CREATE USER 'owner'@'%' IDENTIFIED BY 'Owner-passw0rd'",
        "CREATE USER 'owner_all'@'%' IDENTIFIED BY 'Owner-all-passw0rd'",
        "GRANT ALL PRIVILEGES ON *.* TO 'owner_all'@'%' WITH GRANT OPTION",
        "GRANT ALL PRIVILEGES ON shop.* TO 'owner'@'%'",
        "CREATE DEFINER = 'owner'@'%' VIEW shop.owned AS SELECT id, name FROM shop.customers",
        "CREATE DEFINER = 'owner'@'%' VIEW shop.owned_count AS SELECT COUNT(*) AS n FROM shop.owned",
        "CREATE DEFINER = 'owner'@'%' EVENT shop.tidy ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.audit WHERE at < '1990-01-01'",
        "CREATE TABLE shop.big (id INT PRIMARY KEY, body LONGBLOB) ENGINE=InnoDB",
        // What the operator's servers allow (and the official images' defaults do not).
        "SET GLOBAL max_allowed_packet = 67108864",
    ]
    .into_iter()
    .chain(role_statements)
    {
        s.query_drop(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    drop(s);
    let mut s = root(&source, SOURCE_ROOT).await;
    s.query_drop("INSERT INTO shop.big VALUES (1, REPEAT('x', 17 * 1024 * 1024))")
        .await
        .expect("a 17 MiB row");
    // The target keeps a 16 MiB limit, as the official images do.
    root(&target, TARGET_ROOT)
        .await
        .query_drop("SET GLOBAL max_allowed_packet = 16777216")
        .await
        .expect("limit");
    let relay = Relay::start(source.port).await;
    // The logical copy's fidelity is what this test is about (a clone copies pages, definers and all).
    let run = run_engine(
        &source,
        &target,
        &relay,
        "replicate",
        None,
        true,
        &["--seed", "logical"],
    )
    .await;
    assert_eq!(run.exit, Some(0), "{:?} {}", run.reports, run.stderr);

    let mut t = root(&target, TARGET_ROOT).await;
    let event: Option<(String, String)> = t
        .query_first("SELECT DEFINER, STATUS FROM information_schema.EVENTS WHERE EVENT_NAME = 'tidy'")
        .await
        .expect("event");
    assert_eq!(
        event,
        Some(("owner@%".to_owned(), "ENABLED".to_owned())),
        "the event keeps its definer"
    );
    let count: Option<i64> = t
        .query_first("SELECT n FROM shop.owned_count")
        .await
        .expect("a view over a view");
    assert_eq!(count, Some(102));
    let big: Option<i64> = t
        .query_first("SELECT LENGTH(body) FROM shop.big WHERE id = 1")
        .await
        .expect("big");
    assert_eq!(big, Some(17 * 1024 * 1024));
    let grants: Vec<String> = t.query("SHOW GRANTS FOR 'app'@'%'").await.expect("grants");
    assert!(
        grants.iter().any(|g| g.contains("reader")),
        "the role came along: {grants:?}"
    );

    // The retired source: no write from the application; no event runs.
    let mut s = root(&source, SOURCE_ROOT).await;
    let (read_only, scheduler): (i64, String) = s
        .query_first("SELECT @@GLOBAL.read_only, @@GLOBAL.event_scheduler")
        .await
        .expect("state")
        .expect("a row");
    assert_eq!((read_only, scheduler.as_str()), (1, "OFF"));
    let retired: Option<String> = s
        .query_first("SELECT target FROM appdb_migration.retired")
        .await
        .expect("the retirement record");
    assert_eq!(retired, Some(format!("127.0.0.1:{}", target.port)));
    assert!(
        connect(source.port, "app", APP_PASSWORD)
            .await
            .expect("app")
            .query_drop("INSERT INTO shop.writes VALUES (77, 0)")
            .await
            .is_err(),
        "the application account must not write to the retired source"
    );
    if engine == Engine::MySql {
        assert!(
            s.query_drop("INSERT INTO shop.writes VALUES (78, 0)").await.is_err(),
            "MySQL's super_read_only refuses root too"
        );
    }
    // An account with every privilege (MariaDB's read_only does not hold it: the retirement locks it).
    assert!(
        connect(source.port, "owner_all", "Owner-all-passw0rd")
            .await
            .map(|_| ())
            .is_err()
            || engine == Engine::MySql
                && connect(source.port, "owner_all", "Owner-all-passw0rd")
                    .await
                    .expect("login")
                    .query_drop("INSERT INTO shop.writes VALUES (79, 0)")
                    .await
                    .is_err(),
        "an all-privileges account must not write to the retired source"
    );
    // `--rollback` after completion is refused, and leaves both as they are.
    let back = run_engine(&source, &target, &relay, "replicate", None, false, &["--rollback"]).await;
    assert_eq!(back.exit, Some(1), "{:?}", back.reports);
    assert_eq!(read_only_of(&mut s).await, 1);
    source.stop().await;
    target.stop().await;
}

async fn read_only_of(conn: &mut mysql_async::Conn) -> i64 {
    conn.query_first::<i64, _>("SELECT @@GLOBAL.read_only")
        .await
        .expect("read_only")
        .expect("a value")
}

/// Every SQL statement of the engine made to fail once (a proxy in front of each server answers that one
/// statement with an error): the run completes, rolls back (exit 3) or stops with an error (exit 1), and in each
/// case the database takes writes at once, and a second run completes with nothing acknowledged lost. CI spreads
/// about a dozen failure points over a run; `APPDB_FAULT_STRIDE=1` tries every statement (a longer run).
async fn every_statement_failing_once_leaves_the_database_writable(engine: Engine) {
    let statements = {
        let (source, target) = servers(engine, 50).await;
        let relay = Relay::start(source.port).await;
        let plan = FaultPlan::default();
        let via_source = FaultyProxy::start(source.port, plan.clone()).await;
        let via_target = FaultyProxy::start(target.port, plan.clone()).await;
        let via = Some((via_source.port, via_target.port));
        let run = run_engine_watching(&source, &target, &relay, "replicate", None, true, &[], via, |_| {}).await;
        assert_eq!(run.exit, Some(0), "counting run: {:?} {}", run.reports, run.stderr);
        source.stop().await;
        target.stop().await;
        plan.statements()
    };
    assert!(statements > 50, "the engine ran only {statements} statements");
    let stride = std::env::var("APPDB_FAULT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or((statements / 12).max(1));
    let mut outcomes = std::collections::BTreeMap::<Option<i32>, u32>::new();
    for k in (1..=statements).step_by(stride as usize) {
        let (source, target) = servers(engine, 50).await;
        let relay = Relay::start(source.port).await;
        let writer = Writer::start(relay.port);
        let plan = FaultPlan::failing(k);
        let via_source = FaultyProxy::start(source.port, plan.clone()).await;
        let via_target = FaultyProxy::start(target.port, plan.clone()).await;
        let via = Some((via_source.port, via_target.port));
        let run = run_engine_watching(&source, &target, &relay, "replicate", None, true, &[], via, |_| {}).await;
        let failed = plan.failed().await.unwrap_or_default();
        let context = format!("{engine}, statement {k} failing ({failed}): {:?}", run.reports);
        assert!(matches!(run.exit, Some(0 | 1 | 3)), "{context} {}", run.stderr);
        *outcomes.entry(run.exit).or_default() += 1;
        let (port, who) = if relay.backend() == target.port {
            (relay.port, "the target, through the Service")
        } else {
            (source.port, "the source")
        };
        assert_takes_writes(
            port,
            1_000_000_000 + k,
            std::time::Duration::from_secs(10),
            &format!("{context}: {who}"),
        )
        .await;
        let again = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
        assert_eq!(
            again.exit,
            Some(0),
            "{context}; second run: {:?} {}",
            again.reports,
            again.stderr
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let written = writer.stop().await;
        assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
        source.stop().await;
        target.stop().await;
    }
    eprintln!("{engine}: {statements} statements, failing every {stride}th: exit codes {outcomes:?}");
}

/// A copy that differs from the source (a row changed on the target behind replication's back) is found before
/// the fence: the run rolls back without ever holding writes, and the next run copies again and completes.
async fn a_copy_that_differs_is_caught_before_the_fence_and_copied_again(engine: Engine) {
    let (source, target) = servers(engine, 300).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let first = run_engine(&source, &target, &relay, "replicate", Some("snapshot"), true, &[]).await;
    assert!(first.killed, "{:?} {}", first.reports, first.stderr);
    let mut t = root(&target, TARGET_ROOT).await;
    for statement in [
        "SET GLOBAL read_only = OFF",
        "SET SESSION sql_log_bin = 0",
        "UPDATE shop.customers SET name = 'changed behind replication' WHERE id = 7",
    ] {
        t.query_drop(statement).await.expect(statement);
    }
    drop(t);

    let second = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(second.exit, Some(3), "{:?} {}", second.reports, second.stderr);
    assert!(
        !phases(&second).contains(&"fence"),
        "found only under the fence: {:?}",
        phases(&second)
    );
    let last = second.reports.last().expect("reports");
    assert_eq!(last.phase.as_str(), "rolled-back");
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("checksums differ for `shop`.`customers`"),
        "{last:?}"
    );
    assert_eq!(read_only(&source, SOURCE_ROOT).await, 0);

    let third = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(third.exit, Some(0), "{:?} {}", third.reports, third.stderr);
    assert!(
        phases(&third).contains(&"snapshot"),
        "copied again: {:?}",
        phases(&third)
    );
    assert_completed_without_loss(source, target, writer, &third).await;
}

/// Replicate seeds by `CLONE INSTANCE` between two servers of the same MySQL version: the target exits when the
/// copy is in place and is started again (as the kubelet restarts a pod's container); the engine waits for it,
/// gives its own account the target's password back (the clone brought the source's accounts), and completes
/// with nothing acknowledged lost. On MariaDB, `auto` falls back to the logical copy and says why; `--seed clone`
/// refuses before anything moves.
async fn replicate_seeds_by_clone_where_the_servers_allow_it(engine: Engine) {
    let (source, target) = servers(engine, 300).await;
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if engine == Engine::MariaDb {
        let refused = run_engine(&source, &target, &relay, "replicate", None, true, &["--seed", "clone"]).await;
        assert_eq!(refused.exit, Some(3), "{:?} {}", refused.reports, refused.stderr);
        let last = refused.reports.last().expect("reports");
        assert!(
            last.message.as_deref().unwrap_or("").contains("cannot be cloned"),
            "{last:?}"
        );
        assert_eq!(read_only(&source, SOURCE_ROOT).await, 0);
    }
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "{:?} {}", run.reports, run.stderr);
    let snapshot = run
        .reports
        .iter()
        .find(|r| r.phase.as_str() == "snapshot")
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    match engine {
        Engine::MySql => {
            assert!(snapshot.starts_with("cloned (CLONE INSTANCE"), "{snapshot}");
            assert_eq!(target.restarts(), 1, "the target restarts once, after the clone");
        }
        Engine::MariaDb => {
            assert!(
                snapshot.starts_with("logical copy (CLONE INSTANCE is MySQL's"),
                "{snapshot}"
            );
            assert_eq!(target.restarts(), 0);
        }
    }
    // The donor account is gone from both servers; the engine's target account has the target's password again
    // (assert_moved logs in with it).
    for (db, password) in [(&source, SOURCE_ROOT), (&target, TARGET_ROOT)] {
        let donors: Option<i64> = root(db, password)
            .await
            .query_first("SELECT COUNT(*) FROM mysql.user WHERE User = 'appdb_clone'")
            .await
            .expect("accounts");
        assert_eq!(donors, Some(0));
    }
    assert_completed_without_loss(source, target, writer, &run).await;
}

const OWNER_ALL_PASSWORD: &str = "Owner-all-passw0rd";

/// A client that reaches the source itself rather than the Service (a node whose routes still lead there), as an
/// account that `read_only` does not hold (`ALL PRIVILEGES`, as the operator's own admin account has), with a new
/// connection for each write: every write the source acknowledges reaches the target, and once the fence is up
/// the source acknowledges none. Then that account cannot log in to the retired source and logs in to the target.
async fn stale_route(engine: Engine, strategy: &str) {
    let (source, target) = servers(engine, 100).await;
    let mut s = root(&source, SOURCE_ROOT).await;
    for statement in [
        format!("CREATE USER 'owner_all'@'%' IDENTIFIED BY '{OWNER_ALL_PASSWORD}'"),
        "GRANT ALL PRIVILEGES ON *.* TO 'owner_all'@'%' WITH GRANT OPTION".to_owned(),
    ] {
        s.query_drop(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    drop(s);
    let relay = Relay::start(source.port).await;
    let writer = Writer::start(relay.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stale = tokio::spawn({
        let stop = stop.clone();
        let port = source.port;
        async move {
            let mut acknowledged = Vec::new();
            let mut id: u64 = 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let write = async {
                    let mut c = connect(port, "owner_all", OWNER_ALL_PASSWORD).await?;
                    c.query_drop(format!("INSERT INTO shop.writes VALUES ({id}, 0)"))
                        .await?;
                    let _ = c.disconnect().await;
                    Ok::<_, mysql_async::Error>(())
                };
                if let Ok(Ok(())) = tokio::time::timeout(std::time::Duration::from_secs(10), write).await {
                    acknowledged.push(id);
                }
                id += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            acknowledged
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let run = run_engine(&source, &target, &relay, strategy, None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "engine failed: {:?} {}", run.reports, run.stderr);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acknowledged = stale.await.expect("the stale writer");
    assert!(!acknowledged.is_empty(), "the stale writer wrote before the fence");
    let mut t = root(&target, TARGET_ROOT).await;
    let present: std::collections::BTreeSet<u64> = t
        .query::<u64, _>("SELECT id FROM shop.writes WHERE id >= 1000000")
        .await
        .expect("read the target")
        .into_iter()
        .collect();
    let lost: Vec<u64> = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} writes the source acknowledged through the stale route are not on the target: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    let refused = connect(source.port, "owner_all", OWNER_ALL_PASSWORD)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.to_lowercase().contains("locked"),
        "the account cannot log in to the retired source: {refused:?}"
    );
    connect(target.port, "owner_all", OWNER_ALL_PASSWORD)
        .await
        .expect("the account logs in to the target");
    let recorded: Option<String> = root(&source, SOURCE_ROOT)
        .await
        .query_first("SELECT locked FROM appdb_migration.retired")
        .await
        .expect("the retirement record");
    assert!(
        recorded.as_deref().is_some_and(|l| l.contains("'owner_all'@'%'")),
        "the record names the locked account: {recorded:?}"
    );
    assert_completed_without_loss(source, target, writer, &run).await;
}

async fn a_stale_route_to_the_source_loses_no_write_while_replicating(engine: Engine) {
    stale_route(engine, "replicate").await;
}

async fn a_stale_route_to_the_source_loses_no_write_in_a_dump_and_restore(engine: Engine) {
    stale_route(engine, "dump-restore").await;
}

/// A run that died after a clone gave the target the source's accounts, before it gave the engine's target account
/// its password back: the next run finds the target's credentials refused, reaches it with the source's, gives the
/// account its password back and migrates.
async fn a_target_left_with_the_source_accounts_is_reclaimed_by_the_next_run(engine: Engine) {
    let (source, target) = servers(engine, 50).await;
    {
        let mut t = root(&target, TARGET_ROOT).await;
        t.query_drop("SET SESSION sql_log_bin = 0").await.expect("no binlog");
        let hosts: Vec<String> = t
            .query("SELECT Host FROM mysql.user WHERE User = 'root'")
            .await
            .expect("hosts");
        for host in hosts {
            t.query_drop(format!("ALTER USER 'root'@'{host}' IDENTIFIED BY '{SOURCE_ROOT}'"))
                .await
                .expect("the source's password");
        }
        t.disconnect().await.expect("disconnect");
    }
    let relay = Relay::start(source.port).await;
    let run = run_engine(&source, &target, &relay, "replicate", None, true, &[]).await;
    assert_eq!(run.exit, Some(0), "engine failed: {:?} {}", run.reports, run.stderr);
    assert!(run.stderr.contains("its password back"), "{}", run.stderr);
    assert_moved(&source, &target, &run).await;
    source.stop().await;
    target.stop().await;
}

on_both_engines!(
    a_target_left_with_the_source_accounts_is_reclaimed_by_the_next_run,
    a_stale_route_to_the_source_loses_no_write_while_replicating,
    a_stale_route_to_the_source_loses_no_write_in_a_dump_and_restore,
    replicate_seeds_by_clone_where_the_servers_allow_it,
    a_copy_that_differs_is_caught_before_the_fence_and_copied_again,
    every_statement_failing_once_leaves_the_database_writable,
    a_target_failure_after_the_fence_rolls_back_with_the_source_writable,
    rollback_and_rerun_recover_both_servers_left_read_only,
    definers_roles_and_large_rows_move_and_the_source_is_retired,
    replicate_under_load_moves_everything_and_loses_no_acknowledged_write,
    dump_restore_copies_everything_with_the_source_fenced,
    a_service_that_never_switches_rolls_back_and_the_source_stays_authoritative,
    refuses_a_target_that_holds_other_data,
    killed_after_every_phase_and_run_again_completes_without_loss,
);
