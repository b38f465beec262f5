//! `appdb-operator migrate`: copy a database server to a new one and switch over with seconds of write outage.
//!
//! Phases (each ends with one [`PhaseReport`] JSON line):
//!
//! * `prepare`: connect, tell MySQL from MariaDB, refuse a target that holds data not written by this engine.
//! * `snapshot` (seed): a consistent copy over several connections sharing one snapshot, taken under a global read
//!   lock held only while the snapshot opens (`Replicate`) or inside the fence (`DumpRestore`).
//! * `replicate` (`Replicate` only): native GTID replication from the snapshot's position until the lag is zero and
//!   the cut-over time has come.
//! * `fence`: the source stops taking writes: a global read lock (held by this process, so it vanishes if the
//!   process dies) and `read_only`. Client writes wait rather than fail.
//! * `catch-up`: the target applies the source's last transaction.
//! * `verify`: per-table checksums on both sides.
//! * `promote`: the target stops replicating and becomes writable.
//! * `switch`: waits until the stable Service leads to the target (the operator switches it on seeing `promote`).
//! * `release`: client connections still on the source are closed (their unacknowledged writes are retried through
//!   the Service), and the lock is dropped; the source stays read-only for the rollback window.
//! * `done`, or `rolled-back` with the reason: before the switch any failure makes the source writable again.
//!
//! Every phase can be interrupted and the engine run again: progress is kept in the target
//! (`appdb_migration.progress`, never written to its binary log; it stays afterwards as the record of the
//! migration, and running the engine again then only reports the result).

pub mod catalog;
mod copy;
pub mod render;
pub mod verify;

use std::time::{Duration, Instant};

use mysql_async::{Conn, OptsBuilder, Row, prelude::Queryable};
use serde::Serialize;

use super::dialect::{Dialect, SourceAddress, account};
use crate::mysql::admin::quote_literal;

/// Why a migration could not go on. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the {role} at {host}:{port}: {reason}")]
    Connect {
        role: &'static str,
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{what} failed: {reason}")]
    Sql { what: &'static str, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "the target already holds schemas this engine did not copy ({0}); refusing to overwrite them — use an empty server"
    )]
    TargetNotEmpty(String),
    #[error("source and target have the same server_id {0}; replication needs distinct ids")]
    SameServerId(u32),
    #[error("copying rows failed: {0}")]
    Copy(String),
}

/// Maps a driver error to [`MigrateError::Sql`]. Server messages may quote the statement, so statements that carry
/// a password use [`sql_secret`] instead.
pub(crate) fn sql(what: &'static str) -> impl Fn(mysql_async::Error) -> MigrateError {
    move |e| MigrateError::Sql {
        what,
        reason: e.to_string(),
    }
}

/// Like [`sql`] but keeps only the server's error code.
fn sql_secret(what: &'static str) -> impl Fn(mysql_async::Error) -> MigrateError {
    move |e| MigrateError::Sql {
        what,
        reason: match e {
            mysql_async::Error::Server(s) => format!(
                "server error {} (message withheld: the statement holds a password)",
                s.code
            ),
            other => other.to_string().split(':').next().unwrap_or("error").to_owned(),
        },
    }
}

/// A server to connect to. The password is never printed.
#[derive(Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Server {
    async fn connect(&self, role: &'static str) -> Result<Conn, MigrateError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false);
        Conn::new(opts).await.map_err(|e| MigrateError::Connect {
            role,
            host: self.host.clone(),
            port: self.port,
            reason: e.to_string(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Strategy {
    /// Seed, replicate until the cut-over, then switch: seconds of write outage.
    Replicate,
    /// Fence the source, copy, switch: read-only for the whole copy.
    DumpRestore,
}

impl Strategy {
    fn as_str(self) -> &'static str {
        match self {
            Strategy::Replicate => "Replicate",
            Strategy::DumpRestore => "DumpRestore",
        }
    }
}

/// Time limits. Exceeding one before the switch rolls the migration back.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long the fence may wait for running statements (`lock_wait_timeout`).
    pub lock_wait: Duration,
    /// How long the target may take to apply the source's last transaction once fenced.
    pub catch_up: Duration,
    /// How long to wait for the Service to lead to the target once promoted.
    pub switch: Duration,
    /// How long replication may take to reach zero lag before the cut-over.
    pub replication: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lock_wait: Duration::from_secs(10),
            catch_up: Duration::from_secs(30),
            switch: Duration::from_secs(120),
            replication: Duration::from_secs(3600),
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub strategy: Strategy,
    pub source: Server,
    pub target: Server,
    /// Where the target server reaches the source for replication (defaults to `source`'s address).
    pub source_address_for_target: Option<(String, u16)>,
    /// The stable address clients use (the Service): the switch is complete when it leads to the target.
    pub service: Option<(String, u16)>,
    /// Not before this time does the source stop taking writes.
    pub cutover_at: Option<jiff::Timestamp>,
    /// Connections per side for the copy.
    pub parallel: usize,
    pub limits: Limits,
    /// Only undo: make the source writable again (refused once clients use the target).
    pub rollback_only: bool,
}

/// One JSON line per phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub phase: String,
    pub start: String,
    pub end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed { downtime_seconds: f64 },
    RolledBack { reason: String },
}

pub type Reports = tokio::sync::mpsc::UnboundedSender<PhaseReport>;

struct Phase {
    name: &'static str,
    start: jiff::Timestamp,
}

impl Phase {
    fn begin(name: &'static str) -> Phase {
        Phase {
            name,
            start: jiff::Timestamp::now(),
        }
    }

    fn report(self) -> PhaseReport {
        PhaseReport {
            phase: self.name.to_owned(),
            start: self.start.to_string(),
            end: jiff::Timestamp::now().to_string(),
            ..Default::default()
        }
    }
}

/// What the target remembers of a run.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    phase: String,
    position: String,
    fenced_at: Option<jiff::Timestamp>,
    downtime: Option<f64>,
}

const PROGRESS_SCHEMA: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS appdb_migration",
    "CREATE TABLE IF NOT EXISTS appdb_migration.progress (id TINYINT PRIMARY KEY, phase VARCHAR(32) NOT NULL, \
     position TEXT NOT NULL, strategy VARCHAR(16) NOT NULL, fenced_at VARCHAR(40) NULL, downtime_seconds DOUBLE NULL) \
     ENGINE=InnoDB",
];

mod progress_phase {
    pub const SEEDING: &str = "seeding";
    pub const SEEDED: &str = "seeded";
    pub const PROMOTED: &str = "promoted";
    /// Finished; kept so that running the engine again reports the result instead of starting over.
    pub const DONE: &str = "done";
}

/// The two servers and what is known about them.
struct Session {
    plan: Plan,
    source: Conn,
    target: Conn,
    source_dialect: Dialect,
    target_dialect: Dialect,
    source_version: String,
    target_version: String,
    target_server_id: u32,
    reports: Reports,
}

/// Runs (or resumes) a migration. Reports go to `reports` as phases end.
pub async fn run(plan: Plan, reports: Reports) -> Result<Outcome, MigrateError> {
    let phase = Phase::begin("prepare");
    let mut source = plan.source.connect("source").await?;
    let mut target = plan.target.connect("target").await?;
    let (source_version, source_id) = identify(&mut source).await?;
    let (target_version, target_id) = identify(&mut target).await?;
    if source_id == target_id {
        return Err(MigrateError::SameServerId(source_id));
    }
    copy::setup(&mut source, copy::SESSION_SETUP).await?;
    // Never wait forever behind a lock (a fence of an earlier run, a long DDL): fail and be run again.
    source
        .query_drop("SET SESSION lock_wait_timeout = 60")
        .await
        .map_err(sql("preparing a session"))?;
    copy::setup(&mut target, copy::SESSION_SETUP).await?;
    copy::setup(&mut target, copy::LOAD_SETUP).await?;
    for s in PROGRESS_SCHEMA {
        target.query_drop(*s).await.map_err(sql("keeping progress"))?;
    }
    let mut session = Session {
        source_dialect: Dialect::from_version(&source_version),
        target_dialect: Dialect::from_version(&target_version),
        source_version,
        target_version,
        target_server_id: target_id,
        plan,
        source,
        target,
        reports,
    };
    let progress = session.read_progress().await?;
    if progress.phase.is_empty() || progress.phase == progress_phase::SEEDING {
        let foreign = catalog::user_schemas(&mut session.target).await?;
        if progress.phase.is_empty() && !foreign.is_empty() {
            return Err(MigrateError::TargetNotEmpty(foreign.join(", ")));
        }
    }
    let mut report = phase.report();
    report.message = Some(format!(
        "{} {} → {} {}; resuming from {:?}",
        session.source_version,
        session.plan.source.host,
        session.target_version,
        session.plan.target.host,
        if progress.phase.is_empty() {
            "start"
        } else {
            progress.phase.as_str()
        }
    ));
    session.send(report);

    if session.plan.rollback_only {
        return session.rollback_request(&progress).await;
    }
    if progress.phase == progress_phase::DONE {
        return Ok(session.report_done(progress.downtime.unwrap_or(0.0)));
    }
    if progress.phase == progress_phase::PROMOTED {
        // Announced again: whoever switches the Service (the operator) may not have seen the earlier run's report.
        let mut report = Phase::begin("promote").report();
        report.message = Some("promoted by an earlier run".into());
        session.send(report);
        return session.finish_switch(None, progress.fenced_at).await;
    }
    match session.plan.strategy {
        Strategy::Replicate => session.replicate(progress).await,
        Strategy::DumpRestore => session.dump_restore(progress).await,
    }
}

async fn identify(conn: &mut Conn) -> Result<(String, u32), MigrateError> {
    let row: Option<(String, u32)> = conn
        .query_first("SELECT VERSION(), @@server_id")
        .await
        .map_err(sql("identifying the server"))?;
    row.ok_or_else(|| MigrateError::Unsupported("the server did not say what it is".into()))
}

async fn first_text(conn: &mut Conn, query: &str, what: &'static str) -> Result<String, MigrateError> {
    let v: Option<Option<String>> = conn.query_first(query).await.map_err(sql(what))?;
    Ok(v.flatten().unwrap_or_default())
}

impl Session {
    fn send(&self, report: PhaseReport) {
        let _ = self.reports.send(report);
    }

    async fn read_progress(&mut self) -> Result<Progress, MigrateError> {
        let row: Option<(String, String, Option<String>, Option<f64>)> = self
            .target
            .query_first(
                "SELECT phase, position, fenced_at, downtime_seconds FROM appdb_migration.progress WHERE id = 1",
            )
            .await
            .map_err(sql("reading progress"))?;
        Ok(row
            .map(|(phase, position, fenced, downtime)| Progress {
                phase,
                position,
                fenced_at: fenced.and_then(|f| f.parse().ok()),
                downtime,
            })
            .unwrap_or_default())
    }

    async fn write_progress(&mut self, p: &Progress) -> Result<(), MigrateError> {
        let fenced = p
            .fenced_at
            .map(|t| quote_literal(&t.to_string()))
            .unwrap_or_else(|| "NULL".into());
        self.target
            .query_drop(format!(
                "REPLACE INTO appdb_migration.progress VALUES (1, {}, {}, {}, {fenced}, {})",
                quote_literal(&p.phase),
                quote_literal(&p.position),
                quote_literal(self.plan.strategy.as_str()),
                p.downtime.map(|d| d.to_string()).unwrap_or_else(|| "NULL".into())
            ))
            .await
            .map_err(sql("keeping progress"))
    }

    /// `Replicate`: seed once, replicate, wait for the cut-over time, then fence and switch.
    async fn replicate(mut self, mut progress: Progress) -> Result<Outcome, MigrateError> {
        if progress.phase != progress_phase::SEEDED {
            progress = self.seed(true).await?;
        }
        let phase = Phase::begin("replicate");
        self.attach_replica().await?;
        let deadline = Instant::now() + self.plan.limits.replication;
        let lag = loop {
            let status = self.replica_status().await?;
            if let Some(error) = status.error {
                let reason = format!("replication stopped: {error}");
                return self.roll_back(None, reason).await;
            }
            let due = self.plan.cutover_at.is_none_or(|t| jiff::Timestamp::now() >= t);
            if status.running && status.lag == Some(0) && due {
                break 0;
            }
            if Instant::now() > deadline {
                let reason = format!(
                    "replication did not reach zero lag within {}s (lag {:?}s)",
                    self.plan.limits.replication.as_secs(),
                    status.lag
                );
                return self.roll_back(None, reason).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut report = phase.report();
        report.lag_seconds = Some(lag);
        self.send(report);
        self.cutover(progress, true).await
    }

    /// `DumpRestore`: fence first, then copy (unless an earlier run already copied exactly this state).
    async fn dump_restore(mut self, mut progress: Progress) -> Result<Outcome, MigrateError> {
        let (fence, fenced_at) = self.fence(&mut progress).await?;
        let position = first_text(
            &mut self.source,
            self.source_dialect.position_query(),
            "reading the position",
        )
        .await?;
        if progress.phase != progress_phase::SEEDED || progress.position != position {
            let fenced = progress.fenced_at;
            progress = self.seed(false).await?;
            progress.fenced_at = fenced;
            self.write_progress(&progress).await?;
        }
        self.after_fence(fence, fenced_at, progress, false).await
    }

    /// Copies everything into the (emptied) target and remembers the snapshot's position.
    async fn seed(&mut self, lock_for_snapshot: bool) -> Result<Progress, MigrateError> {
        let phase = Phase::begin("snapshot");
        self.write_progress(&Progress {
            phase: progress_phase::SEEDING.into(),
            ..Default::default()
        })
        .await?;
        let workers = self.plan.parallel.max(1);
        let mut readers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut c = self.plan.source.connect("source").await?;
            copy::setup(&mut c, copy::SESSION_SETUP).await?;
            c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(sql("opening the snapshot"))?;
            readers.push(c);
        }
        if lock_for_snapshot {
            self.source
                .query_drop(format!(
                    "SET SESSION lock_wait_timeout = {}",
                    self.plan.limits.lock_wait.as_secs().max(1)
                ))
                .await
                .map_err(sql("opening the snapshot"))?;
            self.source
                .query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(sql("holding writes while the snapshot opens"))?;
        }
        let opened = async {
            for c in &mut readers {
                c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await
                    .map_err(sql("opening the snapshot"))?;
            }
            let position = first_text(
                &mut self.source,
                self.source_dialect.position_query(),
                "reading the position",
            )
            .await?;
            let catalog = catalog::read(&mut self.source, self.source_dialect).await?;
            Ok::<_, MigrateError>((position, catalog))
        }
        .await;
        if lock_for_snapshot {
            self.source
                .query_drop("UNLOCK TABLES")
                .await
                .map_err(sql("releasing the snapshot lock"))?;
        }
        let (position, catalog) = opened?;

        copy::wipe(&mut self.target, &catalog).await?;
        copy::create_tables(&mut self.target, &catalog).await?;
        let mut writers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut c = self.plan.target.connect("target").await?;
            copy::setup(&mut c, copy::SESSION_SETUP).await?;
            copy::setup(&mut c, copy::LOAD_SETUP).await?;
            writers.push(c);
        }
        let (readers, copied) = copy::copy_rows(readers, writers, &catalog.tables).await?;
        for r in readers {
            let _ = r.disconnect().await;
        }
        copy::create_the_rest(
            &mut self.target,
            &catalog,
            self.target_dialect,
            self.plan.strategy == Strategy::Replicate,
        )
        .await?;
        copy::setup(&mut self.target, copy::LOAD_SETUP).await?;
        if self.plan.strategy == Strategy::Replicate {
            let _ = self.target.query_drop(self.target_dialect.stop_replica()).await;
            for s in self.target_dialect.seed_position(&position) {
                self.target
                    .query_drop(s)
                    .await
                    .map_err(sql("setting the replica's position"))?;
            }
        }
        let progress = Progress {
            phase: progress_phase::SEEDED.into(),
            position: position.clone(),
            fenced_at: None,
            downtime: None,
        };
        self.write_progress(&progress).await?;
        let mut report = phase.report();
        report.rows = Some(copied.rows);
        report.bytes = Some(copied.bytes);
        report.message = Some(format!(
            "{} tables, {} views, {} routines, {} triggers, {} events, {} accounts at position {position}",
            catalog.tables.len(),
            catalog.views.len(),
            catalog.routines.len(),
            catalog.triggers.len(),
            catalog.events.len(),
            catalog.accounts.len()
        ));
        self.send(report);
        Ok(progress)
    }

    /// Creates (or re-keys) the replication account on the source and points the target at it.
    async fn attach_replica(&mut self) -> Result<(), MigrateError> {
        let password = crate::vpn::psk::generate_psk();
        let user = account(catalog::REPLICATION_USER, "%");
        // Not binary-logged: the account must not replicate into the target (the target never had it).
        for s in [
            "SET SESSION sql_log_bin = 0".to_owned(),
            format!(
                "CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {}",
                quote_literal(&password)
            ),
            format!("ALTER USER {user} IDENTIFIED BY {}", quote_literal(&password)),
            format!("GRANT REPLICATION SLAVE ON *.* TO {user}"),
            "SET SESSION sql_log_bin = 1".to_owned(),
        ] {
            self.source
                .query_drop(s)
                .await
                .map_err(sql_secret("creating the replication account"))?;
        }
        let (host, port) = self
            .plan
            .source_address_for_target
            .clone()
            .unwrap_or_else(|| (self.plan.source.host.clone(), self.plan.source.port));
        let _ = self.target.query_drop(self.target_dialect.stop_replica()).await;
        self.target
            .query_drop(self.target_dialect.change_source(&SourceAddress {
                host: &host,
                port,
                user: catalog::REPLICATION_USER,
                password: &password,
            }))
            .await
            .map_err(sql_secret("pointing the target at the source"))?;
        self.target
            .query_drop(self.target_dialect.refuse_writes())
            .await
            .map_err(sql("making the target read-only"))?;
        self.target
            .query_drop(self.target_dialect.start_replica())
            .await
            .map_err(sql("starting replication"))
    }

    async fn replica_status(&mut self) -> Result<ReplicaStatus, MigrateError> {
        let row: Option<Row> = self
            .target
            .query_first(self.target_dialect.replica_status())
            .await
            .map_err(sql("reading the replica's status"))?;
        Ok(ReplicaStatus::from_row(row, self.target_dialect))
    }

    /// The fence: a global read lock held by a dedicated connection (gone if this process dies) plus read-only.
    async fn fence(&mut self, progress: &mut Progress) -> Result<(Conn, jiff::Timestamp), MigrateError> {
        let phase = Phase::begin("fence");
        let mut fence = self.plan.source.connect("source").await?;
        fence
            .query_drop(format!(
                "SET SESSION lock_wait_timeout = {}",
                self.plan.limits.lock_wait.as_secs().max(1)
            ))
            .await
            .map_err(sql("fencing the source"))?;
        fence
            .query_drop("FLUSH TABLES WITH READ LOCK")
            .await
            .map_err(sql("fencing the source (running statements did not finish in time)"))?;
        fence
            .query_drop(self.source_dialect.refuse_writes())
            .await
            .map_err(sql("making the source read-only"))?;
        // An earlier, interrupted run's fence counts: the source has refused writes since then.
        let fenced_at = *progress.fenced_at.get_or_insert(phase.start);
        self.write_progress(progress).await?;
        self.send(phase.report());
        Ok((fence, fenced_at))
    }

    async fn cutover(mut self, mut progress: Progress, replica: bool) -> Result<Outcome, MigrateError> {
        let (fence, fenced_at) = self.fence(&mut progress).await?;
        self.after_fence(fence, fenced_at, progress, replica).await
    }

    async fn after_fence(
        mut self,
        mut fence: Conn,
        fenced_at: jiff::Timestamp,
        mut progress: Progress,
        replica: bool,
    ) -> Result<Outcome, MigrateError> {
        if replica {
            let phase = Phase::begin("catch-up");
            let position = first_text(&mut fence, self.source_dialect.position_query(), "reading the position").await?;
            let waited: Option<i64> = self
                .target
                .query_first(
                    self.target_dialect
                        .wait_for_position(&position, self.plan.limits.catch_up.as_secs().max(1) as u32),
                )
                .await
                .map_err(sql("waiting for the target"))?;
            if waited != Some(0) {
                let error = self.replica_status().await.ok().and_then(|s| s.error);
                let reason = format!(
                    "the target did not apply the source's last transaction ({position}) within {}s{}",
                    self.plan.limits.catch_up.as_secs(),
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                );
                return self.roll_back(Some(fence), reason).await;
            }
            let mut report = phase.report();
            report.lag_seconds = Some(0);
            report.message = Some(format!("applied {position}"));
            self.send(report);
        }

        let phase = Phase::begin("verify");
        let tables = catalog::tables(&mut fence).await?;
        let method = verify::method(&self.source_version, &self.target_version);
        let (source_sums, target_sums) = {
            let mut target_conn = self.plan.target.connect("target").await?;
            let (a, b) = tokio::join!(
                verify::checksums(&mut fence, &tables, method),
                verify::checksums(&mut target_conn, &tables, method)
            );
            let _ = target_conn.disconnect().await;
            (a?, b?)
        };
        let differ = verify::mismatches(&source_sums, &target_sums);
        if !differ.is_empty() {
            let reason = format!("checksums differ for {}", differ.join(", "));
            return self.roll_back(Some(fence), reason).await;
        }
        let mut report = phase.report();
        report.message = Some(format!("{} tables equal ({:?})", tables.len(), method));
        self.send(report);

        let phase = Phase::begin("promote");
        if replica {
            self.target
                .query_drop(self.target_dialect.stop_replica())
                .await
                .map_err(sql("stopping replication"))?;
            self.target
                .query_drop(self.target_dialect.reset_replica())
                .await
                .map_err(sql("forgetting the source"))?;
            let enabled: Vec<(String, String)> = fence
                .query("SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE STATUS = 'ENABLED'")
                .await
                .map_err(sql("listing events"))?;
            for (schema, name) in enabled {
                self.target
                    .query_drop(format!(
                        "ALTER EVENT {}.{} ENABLE",
                        crate::mysql::dialect::quote_identifier(&schema),
                        crate::mysql::dialect::quote_identifier(&name)
                    ))
                    .await
                    .map_err(sql("enabling an event"))?;
            }
        }
        for s in self.target_dialect.accept_writes() {
            self.target
                .query_drop(s)
                .await
                .map_err(sql("making the target writable"))?;
        }
        progress.phase = progress_phase::PROMOTED.into();
        self.write_progress(&progress).await?;
        self.send(phase.report());
        self.finish_switch(Some(fence), Some(fenced_at)).await
    }

    /// Waits for the Service to lead to the target, then releases the source's clients.
    async fn finish_switch(
        mut self,
        fence: Option<Conn>,
        fenced_at: Option<jiff::Timestamp>,
    ) -> Result<Outcome, MigrateError> {
        let phase = Phase::begin("switch");
        let switched_at = match self.plan.service.clone() {
            None => jiff::Timestamp::now(),
            Some((host, port)) => {
                let deadline = Instant::now() + self.plan.limits.switch;
                loop {
                    if self.service_leads_to_target(&host, port).await {
                        break jiff::Timestamp::now();
                    }
                    if Instant::now() > deadline {
                        let reason = format!(
                            "the Service {host}:{port} did not lead to the target within {}s",
                            self.plan.limits.switch.as_secs()
                        );
                        self.demote_target().await?;
                        let outcome = self.roll_back(fence, reason).await;
                        return outcome;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.send(phase.report());

        let phase = Phase::begin("release");
        let mut source = match fence {
            Some(f) => f,
            None => self.plan.source.connect("source").await?,
        };
        let closed = close_clients(&mut source).await?;
        let _ = source.query_drop("UNLOCK TABLES").await;
        let _ = source.disconnect().await;
        let mut report = phase.report();
        report.message = Some(format!(
            "closed {closed} client connections on the source; it stays read-only"
        ));
        self.send(report);

        let downtime = fenced_at
            .map(|f| (switched_at.as_millisecond() - f.as_millisecond()) as f64 / 1000.0)
            .unwrap_or(0.0);
        let mut progress = self.read_progress().await?;
        progress.phase = progress_phase::DONE.into();
        progress.downtime = Some(downtime);
        self.write_progress(&progress).await?;
        Ok(self.report_done(downtime))
    }

    fn report_done(&self, downtime: f64) -> Outcome {
        let mut report = Phase::begin("done").report();
        report.downtime_seconds = Some(downtime);
        report.message = Some(format!("writes were refused for {downtime:.3}s"));
        self.send(report);
        Outcome::Completed {
            downtime_seconds: downtime,
        }
    }

    async fn service_leads_to_target(&self, host: &str, port: u16) -> bool {
        let via = Server {
            host: host.to_owned(),
            port,
            ..self.plan.target.clone()
        };
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(2), via.connect("service")).await else {
            return false;
        };
        let answer: Option<(u32, i64)> = conn.query_first("SELECT @@server_id, @@read_only").await.ok().flatten();
        let _ = conn.disconnect().await;
        answer == Some((self.target_server_id, 0))
    }

    /// After a failed switch: the target goes back to being a replica (nobody wrote to it: the Service never led
    /// there).
    async fn demote_target(&mut self) -> Result<(), MigrateError> {
        self.target
            .query_drop(self.target_dialect.refuse_writes())
            .await
            .map_err(sql("making the target read-only"))?;
        self.write_progress(&Progress {
            phase: progress_phase::SEEDED.into(),
            position: String::new(),
            fenced_at: None,
            downtime: None,
        })
        .await
    }

    /// Source writable again and authoritative; the target keeps replicating (a later run can try again).
    async fn roll_back(mut self, fence: Option<Conn>, reason: String) -> Result<Outcome, MigrateError> {
        let phase = Phase::begin("rolled-back");
        let mut source = match fence {
            Some(f) => f,
            None => self.plan.source.connect("source").await?,
        };
        for s in self.source_dialect.accept_writes() {
            source
                .query_drop(s)
                .await
                .map_err(sql("making the source writable again"))?;
        }
        let _ = source.query_drop("UNLOCK TABLES").await;
        let _ = source.disconnect().await;
        let mut progress = self.read_progress().await?;
        if progress.phase == progress_phase::PROMOTED {
            progress.phase = progress_phase::SEEDED.into();
        }
        progress.fenced_at = None;
        self.write_progress(&progress).await?;
        // The target follows the source again, so a later run starts from here (after the fence is gone: the
        // replication account cannot change while writes are held).
        if progress.phase == progress_phase::SEEDED && self.plan.strategy == Strategy::Replicate {
            self.attach_replica().await?;
        }
        let mut report = phase.report();
        report.message = Some(format!("{reason}; the source is writable and authoritative"));
        self.send(report);
        Ok(Outcome::RolledBack { reason })
    }

    /// `--rollback`: refused once the Service leads to the target (clients may have written there).
    async fn rollback_request(mut self, progress: &Progress) -> Result<Outcome, MigrateError> {
        if progress.phase == progress_phase::DONE {
            return Err(MigrateError::Unsupported(
                "the migration has completed and clients use the target: migrate back instead of rolling back".into(),
            ));
        }
        if progress.phase == progress_phase::PROMOTED
            && let Some((host, port)) = self.plan.service.clone()
            && self.service_leads_to_target(&host, port).await
        {
            return Err(MigrateError::Unsupported(
                "the Service already leads to the target, which clients may have written to: a rollback would lose \
                 those writes; migrate back instead"
                    .into(),
            ));
        }
        if progress.phase == progress_phase::PROMOTED {
            self.demote_target().await?;
        }
        self.roll_back(None, "rollback requested".into()).await
    }
}

/// Closes every client connection except this one and the servers' own threads. Returns how many.
async fn close_clients(conn: &mut Conn) -> Result<usize, MigrateError> {
    let ids: Vec<u64> = conn
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user', {}) \
             AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID')",
            quote_literal(catalog::REPLICATION_USER)
        ))
        .await
        .map_err(sql("listing client connections"))?;
    let mut closed = 0;
    for id in ids {
        if conn.query_drop(format!("KILL CONNECTION {id}")).await.is_ok() {
            closed += 1;
        }
    }
    Ok(closed)
}

/// The parts of the replica status the engine acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaStatus {
    pub running: bool,
    pub lag: Option<u64>,
    pub error: Option<String>,
}

impl ReplicaStatus {
    fn from_row(row: Option<Row>, dialect: Dialect) -> ReplicaStatus {
        let Some(row) = row else {
            return ReplicaStatus::default();
        };
        let [io, sql_thread, lag, io_error, sql_error] = dialect.replica_status_columns();
        let text = |name: &str| -> String { row.get::<Option<String>, _>(name).flatten().unwrap_or_default() };
        let error = [text(sql_error), text(io_error)].into_iter().find(|e| !e.is_empty());
        // An IO error while the thread retries (source briefly away) is not fatal; a stopped SQL thread is.
        let sql_running = text(sql_thread) == "Yes";
        ReplicaStatus {
            running: text(io) == "Yes" && sql_running,
            lag: text(lag).parse().ok(),
            error: if sql_running { None } else { error },
        }
    }
}
