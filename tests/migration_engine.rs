//! The copying migration engine (`appdb-operator migrate`) between two real MariaDB servers on loopback, with a
//! writer going through a relay that stands in for the database's Service.

mod support;

#[path = "support/engine.rs"]
mod engine;

use appdb_testkit::{
    copying::*,
    dbserver::{DbServer, Engine},
    on_both_engines,
    relay::Relay,
};
use engine::{EngineRun, phases, run_engine};
use mysql_async::prelude::Queryable;

async fn servers(engine: Engine, customers: u32) -> (DbServer, DbServer) {
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
            "fence",
            "catch-up",
            "verify",
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
    assert!(snapshot.rows.unwrap_or(0) > 3000, "{snapshot:?}");
    let downtime = run
        .reports
        .last()
        .and_then(|r| r.downtime_seconds)
        .expect("downtime reported");
    eprintln!(
        "replicate: {} acknowledged writes ({} failed attempts), reported outage {downtime:.3}s, longest gap \
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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let written = writer.stop().await;
    assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
    assert_moved(&source, &target, &run).await;
    source.stop().await;
    target.stop().await;
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
    assert_eq!(last.phase, "rolled-back");
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
    assert_eq!(last.phase, "error");
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
                "fence",
                "catch-up",
                "verify",
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
            assert_no_write_lost(&mut root(&target, TARGET_ROOT).await, &written).await;
            let mut s = root(&source, SOURCE_ROOT).await;
            let mut t = root(&target, TARGET_ROOT).await;
            assert_eq!(
                checksums(&mut s).await,
                checksums(&mut t).await,
                "{strategy}, killed after {phase}"
            );
            eprintln!(
                "{strategy}: killed after {phase}, second run {:?}, {} acknowledged writes kept",
                phases(&second),
                written.acked.len()
            );
            source.stop().await;
            target.stop().await;
        }
    }
}

on_both_engines!(
    replicate_under_load_moves_everything_and_loses_no_acknowledged_write,
    dump_restore_copies_everything_with_the_source_fenced,
    a_service_that_never_switches_rolls_back_and_the_source_stays_authoritative,
    refuses_a_target_that_holds_other_data,
    killed_after_every_phase_and_run_again_completes_without_loss,
);
