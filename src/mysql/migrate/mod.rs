//! `appdb-operator migrate`: copy a database server to a new one and switch over with seconds of write outage.
//!
//! Phases (each ends with one [`PhaseReport`] JSON line; `crate::migration::report` names them):
//!
//! * `prepare`: connect, tell MySQL from MariaDB, refuse a target that holds data not written by this engine.
//! * `snapshot` (seed): a consistent copy over several connections sharing one snapshot, taken under a global read
//!   lock held only while the snapshot opens (`Replicate`) or inside the fence (`DumpRestore`).
//! * `replicate` (`Replicate` only): native GTID replication from the snapshot's position until the lag is zero.
//! * `verify`: per-table checksums on both sides. `Replicate` verifies *before* the fence, while writes go on (a
//!   fresh snapshot of the source at a known GTID position against the target stopped at exactly that position),
//!   so that the write outage does not grow with the data; it then waits for the cut-over time. `DumpRestore`
//!   copies inside the fence and verifies there.
//! * `fence`: the source stops taking writes: a global read lock held by this process's own connection and
//!   nothing persistent, so it vanishes if the process dies. Client writes wait rather than fail.
//! * `catch-up`: the target applies the source's last transaction (its GTID position equals the source's).
//! * `promote`: the source is made to refuse writes for good (`super_read_only` / `read_only`, set under the lock:
//!   clients may reach the target from now on), then the target stops replicating and becomes writable.
//! * `switch`: waits until the stable Service leads to the target (the operator switches it on seeing `promote`).
//! * `release`: client connections still on the source are closed (their unacknowledged writes are retried through
//!   the Service), its events stop, the lock is dropped and the source records that it was retired
//!   (`appdb_migration.retired`); it stays read-only for the rollback window.
//! * `done`, or `rolled-back` with the reason: before the switch any failure makes the source writable again.
//!
//! The fence's lifetime rule: before `promote` nothing but this process's connection keeps the source from taking
//! writes; from `promote` on the database is the target. A failure of any statement before the switch rolls back
//! (exit 3); `--rollback` needs only the source.
//!
//! Every phase can be interrupted and the engine run again: progress is kept in the target
//! (`appdb_migration.progress`, never written to its binary log; it stays afterwards as the record of the
//! migration, and running the engine again then only reports the result).

pub mod catalog;
pub mod clone;
mod copy;
pub mod render;
pub mod verify;

use std::time::{Duration, Instant};

use mysql_async::{Conn, OptsBuilder, Row, prelude::Queryable};
use serde::Serialize;

use super::dialect::{Dialect, SourceAddress, account};
use crate::migration::report::{CopyPhase, PhaseReport};
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
            .prefer_socket(false)
            // The largest row must fit (the servers' own limit is raised to the same by the engine).
            .max_allowed_packet(Some(MAX_PACKET as usize));
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
    /// How long replication may take to catch up (a lag of at most 1 s) before the cut-over.
    pub replication: Duration,
    /// How long the target may take to come back after a clone made it exit.
    pub restart: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lock_wait: Duration::from_secs(10),
            catch_up: Duration::from_secs(30),
            switch: Duration::from_secs(120),
            replication: Duration::from_secs(3600),
            restart: Duration::from_secs(300),
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
    /// How a `Replicate` target is seeded.
    pub seeding: clone::Seeding,
    pub limits: Limits,
    /// Only undo: make the source writable again (refused once clients use the target).
    pub rollback_only: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed { downtime_seconds: f64 },
    RolledBack { reason: String },
}

pub type Reports = tokio::sync::mpsc::UnboundedSender<PhaseReport>;

struct Phase {
    name: CopyPhase,
    start: jiff::Timestamp,
}

impl Phase {
    fn begin(name: CopyPhase) -> Phase {
        // On stderr: where a run that seems stuck is.
        tracing::info!(phase = name.as_str(), "phase started");
        Phase {
            name,
            start: jiff::Timestamp::now(),
        }
    }

    fn report(self) -> PhaseReport {
        PhaseReport::ended(self.name, self.start)
    }
}

/// What the target remembers of a run.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    phase: String,
    position: String,
    /// When this migration's first fence began; the outage is measured from here (across interrupted runs).
    fenced_at: Option<jiff::Timestamp>,
    downtime: Option<f64>,
}

const PROGRESS_TABLE: &str = "CREATE TABLE appdb_migration.progress (id TINYINT PRIMARY KEY, phase VARCHAR(32) NOT \
     NULL, position TEXT NOT NULL, strategy VARCHAR(16) NOT NULL, fenced_at VARCHAR(40) NULL, downtime_seconds DOUBLE \
     NULL) ENGINE=InnoDB";

/// On a retired source: which target took over, and when. Its presence refuses `--rollback` without the target.
/// `locked` lists the accounts locked because `read_only` does not hold them (MariaDB), for whoever reopens it.
const RETIRED_TABLE: &str = "CREATE TABLE appdb_migration.retired (id TINYINT PRIMARY KEY, target VARCHAR(255) NOT \
     NULL, retired_at VARCHAR(40) NOT NULL, locked TEXT NOT NULL) ENGINE=InnoDB";

/// On the source: the accounts the engine locked for the switch, one row each, written before each lock (so a run
/// that dies in between still knows to unlock it). Not binary-logged, like everything the engine writes there.
const LOCKED_TABLE: &str = "CREATE TABLE IF NOT EXISTS appdb_migration.locked_accounts (grantee VARCHAR(512) \
     PRIMARY KEY) ENGINE=InnoDB";

mod progress_phase {
    pub const SEEDING: &str = "seeding";
    pub const SEEDED: &str = "seeded";
    pub const PROMOTED: &str = "promoted";
    /// Finished; kept so that running the engine again reports the result instead of starting over.
    pub const DONE: &str = "done";
}

/// Where a run stands: it decides what a failure must undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The source takes writes; nothing to undo but the target's bookkeeping.
    Copying,
    /// This process holds the source's fence (a global read lock on its own connection).
    Fenced,
    /// The target accepts writes, but the Service may still lead to the source.
    Promoted,
    /// The Service leads to the target: the target is authoritative, and nothing is rolled back any more.
    Switched,
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
    stage: Stage,
    /// The connection that holds the fence. The fence is this connection's global read lock and nothing
    /// persistent: if this process dies, the server drops the connection and the source takes writes again.
    fence: Option<Conn>,
    /// The copy was found to differ from the source: a rollback makes the next run copy again from scratch.
    copy_diverged: bool,
    /// Why a `Replicate` target was copied logically rather than cloned (said in the snapshot's report).
    logical_seed_note: Option<String>,
    /// The source's accounts this run locked before its fence ([`lock_bypassing_accounts`]).
    locked_accounts: Vec<String>,
}

/// Runs (or resumes) a migration. Reports go to `reports` as phases end.
///
/// The rule it keeps: **a dead or failed engine never leaves the database refusing writes.** Until the Service
/// leads to the target, the source is fenced only by a lock of this process's own connection; any failure rolls
/// back (exit 3) with the source writable; only a source that cannot be reached at all ends in an error (exit 1).
pub async fn run(plan: Plan, reports: Reports) -> Result<Outcome, MigrateError> {
    if plan.rollback_only {
        return rollback_request(plan, reports).await;
    }
    let phase = Phase::begin(CopyPhase::Prepare);
    let mut source = plan.source.connect("source").await?;
    let (source_version, source_id) = identify(&mut source).await?;
    let source_dialect = Dialect::from_version(&source_version);
    let target = match prepare_target(&plan).await {
        Ok(t) => Ok(t),
        // A run that died between a clone and giving the target account its password back left the target with
        // the source's accounts: give it back, then prepare again.
        Err(_) if reclaim_target_account(&plan).await => prepare_target(&plan).await,
        Err(error) => Err(error),
    };
    let target = match target {
        Ok(t) => t,
        Err(error) => {
            // Nothing has moved: make sure the source takes writes (an older engine's fence may be left on it).
            return source_only_rollback(&plan, source, source_dialect, &reports, phase, error.to_string()).await;
        }
    };
    let (target, target_version, target_id) = target;
    if source_id == target_id {
        return Err(MigrateError::SameServerId(source_id));
    }
    copy::setup(&mut source, copy::SESSION_SETUP).await?;
    // Never wait forever behind a lock (a fence of an earlier run, a long DDL): fail and be run again.
    source
        .query_drop("SET SESSION lock_wait_timeout = 60")
        .await
        .map_err(sql("preparing a session"))?;
    let mut session = Session::new(
        plan,
        (source, source_version),
        (target, target_version, target_id),
        reports,
    )
    .await?;
    let mut progress = session.read_progress().await?;
    let healed = session.heal_source(&progress).await?;
    if progress.phase.is_empty() || progress.phase == progress_phase::SEEDING {
        let foreign = catalog::user_schemas(&mut session.target).await?;
        if progress.phase.is_empty() && !foreign.is_empty() {
            let (host, port) = session.source_for_target();
            if !clone::completed_from(&mut session.target, &host, port).await {
                return Err(MigrateError::TargetNotEmpty(foreign.join(", ")));
            }
            // An earlier run's clone of this source completed, and the run ended before recording it.
            progress = session.after_clone().await?;
        }
    }
    let mut report = phase.report();
    report.message = Some(format!(
        "{} {} → {} {}; resuming from {:?}{}",
        session.source_version,
        session.plan.source.host,
        session.target_version,
        session.plan.target.host,
        if progress.phase.is_empty() {
            "start"
        } else {
            progress.phase.as_str()
        },
        if healed {
            "; the source was left refusing writes by an interrupted run and takes writes again"
        } else {
            ""
        }
    ));
    session.send(report);

    if progress.phase == progress_phase::DONE {
        return Ok(session.report_done(progress.downtime.unwrap_or(0.0)));
    }
    let result = if progress.phase == progress_phase::PROMOTED {
        // Announced again: whoever switches the Service (the operator) may not have seen the earlier run's report.
        session.stage = Stage::Promoted;
        let mut report = Phase::begin(CopyPhase::Promote).report();
        report.message = Some("promoted by an earlier run".into());
        session.send(report);
        session.finish_switch(progress).await
    } else {
        match session.plan.strategy {
            Strategy::Replicate => session.replicate(progress).await,
            Strategy::DumpRestore => session.dump_restore(progress).await,
        }
    };
    match result {
        Err(error) if session.stage < Stage::Switched => session.roll_back(error.to_string()).await,
        other => other,
    }
}

/// Connects to the target and raises its packet limit so that the largest row fits (1 GiB, the servers' own
/// maximum; the engine's connections are opened after this).
async fn prepare_target(plan: &Plan) -> Result<(Conn, String, u32), MigrateError> {
    let mut target = plan.target.connect("target").await?;
    let (version, id) = identify(&mut target).await?;
    target
        .query_drop(format!("SET GLOBAL max_allowed_packet = {MAX_PACKET}"))
        .await
        .map_err(sql("raising the target's packet limit"))?;
    copy::setup(&mut target, copy::SESSION_SETUP).await?;
    copy::setup(&mut target, copy::LOAD_SETUP).await?;
    Ok((target, version, id))
}

/// The largest packet both engines accept (`max_allowed_packet`'s maximum).
const MAX_PACKET: u64 = 1 << 30;

/// Creates the progress table unless it exists. `CREATE … IF NOT EXISTS` is not enough: MySQL refuses it on a
/// super-read-only server even when the object exists.
async fn ensure_progress_table(target: &mut Conn, dialect: Dialect) -> Result<(), MigrateError> {
    if table_exists(target, "appdb_migration", "progress").await? {
        return Ok(());
    }
    as_admin(
        target,
        dialect,
        &["CREATE DATABASE IF NOT EXISTS appdb_migration", PROGRESS_TABLE],
    )
    .await
    .map_err(sql("keeping progress"))
}

async fn table_exists(conn: &mut Conn, schema: &str, table: &str) -> Result<bool, MigrateError> {
    let n: Option<i64> = conn
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            quote_literal(schema),
            quote_literal(table)
        ))
        .await
        .map_err(sql("looking for the engine's tables"))?;
    Ok(n.unwrap_or(0) > 0)
}

/// Runs the engine's own statements on a server that may refuse even root (MySQL's `super_read_only`): the
/// refusal is lifted for those statements only, and `read_only` keeps refusing clients meanwhile.
async fn as_admin(conn: &mut Conn, dialect: Dialect, statements: &[&str]) -> Result<(), mysql_async::Error> {
    let blocked: Option<i64> = conn.query_first(dialect.admin_blocked_query()).await?;
    let blocked = blocked == Some(1);
    let (lift, restore) = dialect.lift_for_admin();
    if blocked {
        conn.query_drop(lift).await?;
    }
    let mut result = Ok(());
    for s in statements {
        result = conn.query_drop(*s).await;
        if result.is_err() {
            break;
        }
    }
    if blocked {
        conn.query_drop(restore).await?;
    }
    result
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

/// Whether the source was retired by a completed migration (its clients moved to another server).
async fn retired_to(source: &mut Conn) -> Result<Option<String>, MigrateError> {
    if !table_exists(source, "appdb_migration", "retired").await? {
        return Ok(None);
    }
    source
        .query_first("SELECT target FROM appdb_migration.retired WHERE id = 1")
        .await
        .map_err(sql("reading the retirement record"))
}

/// Makes the source take writes again: clears `read_only` (an older engine's fence, or a rollback's) and any lock,
/// and unlocks the accounts the engine locked for the switch.
async fn open_source(source: &mut Conn, dialect: Dialect) -> Result<(), MigrateError> {
    for s in dialect.accept_writes() {
        source
            .query_drop(s)
            .await
            .map_err(sql("making the source writable again"))?;
    }
    let _ = source.query_drop("UNLOCK TABLES").await;
    unlock_accounts(source, dialect).await?;
    Ok(())
}

/// Locks, on the source, the accounts its write refusal does not hold ([`Dialect::read_only_bypass_query`]),
/// root, the replication account and the engine's own account aside. This happens before the fence because it
/// cannot happen after: the fence's global read lock refuses `ALTER USER`, and once the lock is released a session
/// of such an account (a client that reached the source through a stale route after its connections were closed)
/// would write where nobody reads any more. Locked first, such an account cannot log in from here on; its
/// sessions from before are closed while the lock still holds. Returns the locked accounts.
async fn lock_bypassing_accounts(
    source: &mut Conn,
    dialect: Dialect,
    engine_user: &str,
) -> Result<Vec<String>, MigrateError> {
    let listed: Vec<String> = source
        .query(dialect.read_only_bypass_query())
        .await
        .map_err(sql("listing accounts that bypass read_only"))?;
    let locked: Vec<String> = listed
        .into_iter()
        .filter(|grantee| lockable(grantee, engine_user))
        .collect();
    let mut statements = vec![
        "SET SESSION sql_log_bin = 0".to_owned(),
        "CREATE DATABASE IF NOT EXISTS appdb_migration".to_owned(),
        LOCKED_TABLE.to_owned(),
    ];
    for grantee in &locked {
        statements.push(format!(
            "INSERT IGNORE INTO appdb_migration.locked_accounts VALUES ({})",
            quote_literal(grantee)
        ));
        statements.push(format!("ALTER USER IF EXISTS {grantee} ACCOUNT LOCK"));
    }
    statements.push("SET SESSION sql_log_bin = 1".to_owned());
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    as_admin(source, dialect, &statements)
        .await
        .map_err(sql("locking the accounts that bypass read_only"))?;
    Ok(locked)
}

/// Whether the engine locks `grantee` (`'user'@'host'`) for the switch: not root, the replication account or the
/// engine's own account, and not a MariaDB role (no `@host`; roles do not log in).
fn lockable(grantee: &str, engine_user: &str) -> bool {
    grantee.contains("'@'")
        && ["root", catalog::REPLICATION_USER, engine_user]
            .iter()
            .all(|user| !grantee.starts_with(&format!("'{user}'@")))
}

/// The accounts [`lock_bypassing_accounts`] locked and nobody unlocked yet.
async fn locked_accounts(source: &mut Conn) -> Result<Vec<String>, MigrateError> {
    if !table_exists(source, "appdb_migration", "locked_accounts").await? {
        return Ok(Vec::new());
    }
    source
        .query("SELECT grantee FROM appdb_migration.locked_accounts ORDER BY grantee")
        .await
        .map_err(sql("reading the locked accounts"))
}

/// Unlocks what [`lock_bypassing_accounts`] locked (a rollback, or a run that died before the switch). Returns how
/// many accounts it unlocked.
async fn unlock_accounts(source: &mut Conn, dialect: Dialect) -> Result<usize, MigrateError> {
    let locked = locked_accounts(source).await?;
    if locked.is_empty() {
        return Ok(0);
    }
    let mut statements = vec!["SET SESSION sql_log_bin = 0".to_owned()];
    statements.extend(
        locked
            .iter()
            .map(|grantee| format!("ALTER USER IF EXISTS {grantee} ACCOUNT UNLOCK")),
    );
    statements.push("DELETE FROM appdb_migration.locked_accounts".to_owned());
    statements.push("SET SESSION sql_log_bin = 1".to_owned());
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    as_admin(source, dialect, &statements)
        .await
        .map_err(sql("unlocking the accounts locked for the switch"))?;
    Ok(locked.len())
}

/// A rollback that needs only the source: the target cannot be reached (or is not needed). Refused on a source
/// that a completed migration retired, where the target holds writes the source never saw.
async fn source_only_rollback(
    plan: &Plan,
    mut source: Conn,
    dialect: Dialect,
    reports: &Reports,
    prepare: Phase,
    reason: String,
) -> Result<Outcome, MigrateError> {
    if let Some(target) = retired_to(&mut source).await? {
        return Err(MigrateError::Unsupported(format!(
            "the source was retired: its clients moved to {target}, which may hold writes the source never saw; \
             migrate back instead of rolling back ({reason})"
        )));
    }
    let mut report = prepare.report();
    report.message = Some(format!("{}: source only ({reason})", plan.source.host));
    let _ = reports.send(report);
    let phase = Phase::begin(CopyPhase::RolledBack);
    open_source(&mut source, dialect).await?;
    let _ = source.disconnect().await;
    let mut report = phase.report();
    report.message = Some(format!("{reason}; the source is writable and authoritative"));
    let _ = reports.send(report);
    Ok(Outcome::RolledBack { reason })
}

/// `--rollback`: makes the source writable and authoritative again. Needs only the source: with the target
/// reachable, it also refuses once the Service leads to the target and resets the target's bookkeeping.
async fn rollback_request(plan: Plan, reports: Reports) -> Result<Outcome, MigrateError> {
    let phase = Phase::begin(CopyPhase::Prepare);
    let mut source = plan.source.connect("source").await?;
    let (source_version, _) = identify(&mut source).await?;
    let source_dialect = Dialect::from_version(&source_version);
    let target = tokio::time::timeout(Duration::from_secs(10), prepare_target(&plan)).await;
    let (target, target_version, target_id) = match target {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let reason = format!("rollback requested (the target is unavailable: {e})");
            return source_only_rollback(&plan, source, source_dialect, &reports, phase, reason).await;
        }
        Err(_) => {
            let reason = "rollback requested (the target did not answer within 10 s)".to_owned();
            return source_only_rollback(&plan, source, source_dialect, &reports, phase, reason).await;
        }
    };
    let mut session = Session::new(
        plan,
        (source, source_version),
        (target, target_version, target_id),
        reports,
    )
    .await?;
    let progress = session.read_progress().await?;
    session.send(phase.report());
    if progress.phase == progress_phase::DONE {
        return Err(MigrateError::Unsupported(
            "the migration has completed and clients use the target: migrate back instead of rolling back".into(),
        ));
    }
    if progress.phase == progress_phase::PROMOTED {
        if let Some((host, port)) = session.plan.service.clone()
            && session.service_leads_to_target(&host, port).await
        {
            return Err(MigrateError::Unsupported(
                "the Service already leads to the target, which clients may have written to: a rollback would \
                 lose those writes; migrate back instead"
                    .into(),
            ));
        }
        session.stage = Stage::Promoted;
    }
    session.roll_back("rollback requested".into()).await
}

impl Session {
    /// Both servers connected; the target keeps the engine's progress table.
    async fn new(
        plan: Plan,
        (source, source_version): (Conn, String),
        (mut target, target_version, target_server_id): (Conn, String, u32),
        reports: Reports,
    ) -> Result<Session, MigrateError> {
        let target_dialect = Dialect::from_version(&target_version);
        ensure_progress_table(&mut target, target_dialect).await?;
        Ok(Session {
            source_dialect: Dialect::from_version(&source_version),
            target_dialect,
            source_version,
            target_version,
            target_server_id,
            plan,
            source,
            target,
            reports,
            stage: Stage::Copying,
            copy_diverged: false,
            logical_seed_note: None,
            fence: None,
            locked_accounts: Vec::new(),
        })
    }

    fn send(&self, report: PhaseReport) {
        let _ = self.reports.send(report);
    }

    /// An interrupted run could leave the source `read_only` (an older engine's fence) or accounts locked for a
    /// switch that never happened (a run that died between locking them and its fence). Unless the source was
    /// retired (or is being switched away from), it takes writes, and those accounts log in, again.
    async fn heal_source(&mut self, progress: &Progress) -> Result<bool, MigrateError> {
        if progress.phase == progress_phase::DONE || progress.phase == progress_phase::PROMOTED {
            return Ok(false);
        }
        if retired_to(&mut self.source).await?.is_some() {
            return Ok(false);
        }
        let read_only: Option<i64> = self
            .source
            .query_first("SELECT @@GLOBAL.read_only")
            .await
            .map_err(sql("reading the source's state"))?;
        if read_only == Some(1) {
            open_source(&mut self.source, self.source_dialect).await?;
            return Ok(true);
        }
        Ok(unlock_accounts(&mut self.source, self.source_dialect).await? > 0)
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
        let statement = format!(
            "REPLACE INTO appdb_migration.progress VALUES (1, {}, {}, {}, {fenced}, {})",
            quote_literal(&p.phase),
            quote_literal(&p.position),
            quote_literal(self.plan.strategy.as_str()),
            p.downtime.map(|d| d.to_string()).unwrap_or_else(|| "NULL".into())
        );
        as_admin(&mut self.target, self.target_dialect, &[&statement])
            .await
            .map_err(sql("keeping progress"))
    }

    /// `Replicate`: seed once, replicate until the target has caught up, verify the copy while writes go on, wait
    /// for the cut-over time, then fence and switch.
    async fn replicate(&mut self, mut progress: Progress) -> Result<Outcome, MigrateError> {
        if progress.phase != progress_phase::SEEDED {
            progress = match self.seed_by_clone().await? {
                Ok(cloned) => cloned,
                Err(why_not) => {
                    self.logical_seed_note = Some(why_not);
                    self.seed(true, None).await?
                }
            };
        }
        let phase = Phase::begin(CopyPhase::Replicate);
        self.attach_replica().await?;
        let lag = self.wait_until_caught_up(false).await?;
        let mut report = phase.report();
        report.lag_seconds = Some(lag);
        self.send(report);
        self.verify_replica().await?;
        self.wait_until_caught_up(true).await?;
        self.apply_the_source_position().await?;
        self.fence(&mut progress).await?;
        self.after_fence(progress, true).await
    }

    /// Waits until the replica runs caught up (and, with `until_due`, the cut-over time has come). The replication
    /// limit bounds catching up, not waiting for a cut-over time that is still ahead.
    ///
    /// Caught up is a lag of at most [`CAUGHT_UP_LAG_SECONDS`], not exactly zero: the servers count lag in whole
    /// seconds of event timestamps, so a replica that keeps pace with a source taking writes all the time reads 1
    /// for as long as the writes go on (seen for minutes on a loaded machine). What is left is applied exactly by
    /// [`Self::apply_the_source_position`] before the fence.
    async fn wait_until_caught_up(&mut self, until_due: bool) -> Result<u64, MigrateError> {
        let limit = self.plan.limits.replication;
        let mut deadline = Instant::now() + limit;
        let mut next_note = Instant::now() + Duration::from_secs(30);
        let mut reconnecting_since: Option<Instant> = None;
        loop {
            let status = self.replica_progressing().await?;
            // A source the replica cannot reach (or log in to) for this long is an error, not a wait.
            match &status.reconnecting {
                Some(error) => {
                    let since = *reconnecting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_PATIENCE {
                        return Err(MigrateError::Unsupported(format!(
                            "the replica could not connect to the source for {}s: {error}",
                            RECONNECT_PATIENCE.as_secs()
                        )));
                    }
                }
                None => reconnecting_since = None,
            }
            if Instant::now() > next_note {
                tracing::info!(?status, "waiting for the replica to catch up");
                next_note = Instant::now() + Duration::from_secs(30);
            }
            let caught_up = status.running && status.lag.is_some_and(|lag| lag <= CAUGHT_UP_LAG_SECONDS);
            let due = !until_due || self.plan.cutover_at.is_none_or(|t| jiff::Timestamp::now() >= t);
            if caught_up && due {
                return Ok(status.lag.unwrap_or_default());
            }
            if caught_up {
                deadline = Instant::now() + limit;
            } else if Instant::now() > deadline {
                return Err(MigrateError::Unsupported(format!(
                    "replication did not catch up (lag at most {CAUGHT_UP_LAG_SECONDS}s) within {}s (lag {:?}s)",
                    limit.as_secs(),
                    status.lag
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Right before the fence, the target applies everything the source has committed so far. A lag of zero
    /// seconds is not enough: the servers count lag in whole seconds of event timestamps, and a backlog of
    /// transactions from the same second (the writes made while `verify` held the replica) would otherwise be
    /// applied under the fence, in `catch-up`.
    async fn apply_the_source_position(&mut self) -> Result<(), MigrateError> {
        let position = first_text(
            &mut self.source,
            self.source_dialect.position_query(),
            "reading the position",
        )
        .await?;
        let deadline = Instant::now() + self.plan.limits.replication;
        loop {
            // In short waits, so that a replication error is seen at once rather than after the whole limit.
            let waited: Option<i64> = self
                .target
                .query_first(self.target_dialect.wait_for_position(&position, 2))
                .await
                .map_err(sql("waiting for the target"))?;
            if waited == Some(0) {
                return Ok(());
            }
            self.replica_progressing().await?;
            if Instant::now() > deadline {
                return Err(MigrateError::Unsupported(format!(
                    "the target did not apply the source's position ({position}) within {}s",
                    self.plan.limits.replication.as_secs()
                )));
            }
        }
    }

    /// `verify` for `Replicate`, before the fence so that the write outage does not grow with the data: the
    /// source's consistent snapshot at a known GTID position is compared, row digest by row digest, with the target
    /// stopped at exactly that position. Writes go on meanwhile; replication carries them, and at the fence the
    /// target must have applied the source's last position (`catch-up`).
    async fn verify_replica(&mut self) -> Result<(), MigrateError> {
        let phase = Phase::begin(CopyPhase::Verify);
        // Held first, so that the target cannot pass the position the snapshot is taken at.
        self.target
            .query_drop(self.target_dialect.pause_applier())
            .await
            .map_err(sql("pausing the replica"))?;
        let mut snapshot = self.plan.source.connect("source").await?;
        copy::setup(&mut snapshot, copy::SESSION_SETUP).await?;
        snapshot
            .query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(sql("opening the snapshot"))?;
        // A global read lock only while the snapshot opens and its position is read (milliseconds). Writes queue
        // behind a lock that waits for running statements: it waits no longer than the fence would.
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
        let opened = async {
            snapshot
                .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(sql("opening the snapshot"))?;
            first_text(
                &mut self.source,
                self.source_dialect.position_query(),
                "reading the position",
            )
            .await
        }
        .await;
        self.source
            .query_drop("UNLOCK TABLES")
            .await
            .map_err(sql("releasing the snapshot lock"))?;
        let position = opened?;
        self.target
            .query_drop(self.target_dialect.apply_until(&position))
            .await
            .map_err(sql("replicating up to the snapshot"))?;
        let waited: Option<i64> = self
            .target
            .query_first(
                self.target_dialect
                    .wait_for_position(&position, self.plan.limits.catch_up.as_secs().max(1) as u32),
            )
            .await
            .map_err(sql("waiting for the target"))?;
        if waited != Some(0) {
            return Err(MigrateError::Unsupported(format!(
                "the target did not reach the snapshot's position ({position}) within {}s",
                self.plan.limits.catch_up.as_secs()
            )));
        }
        let tables = catalog::tables(&mut snapshot).await?;
        let (source_sums, target_sums) = tokio::join!(
            verify::checksums(&mut snapshot, &tables, verify::Method::RowDigest),
            verify::checksums(&mut self.target, &tables, verify::Method::RowDigest)
        );
        let _ = snapshot.disconnect().await;
        self.target
            .query_drop(self.target_dialect.start_replica())
            .await
            .map_err(sql("resuming replication"))?;
        let differ = verify::mismatches(&source_sums?, &target_sums?);
        if !differ.is_empty() {
            self.copy_diverged = true;
            return Err(MigrateError::Unsupported(format!(
                "checksums differ for {} at {position}",
                differ.join(", ")
            )));
        }
        let mut report = phase.report();
        report.message = Some(format!(
            "{} tables equal at {position} ({:?}, before the fence)",
            tables.len(),
            verify::Method::RowDigest
        ));
        self.send(report);
        Ok(())
    }

    /// `DumpRestore`: fence first, then copy (unless an earlier run already copied exactly this state).
    async fn dump_restore(&mut self, mut progress: Progress) -> Result<Outcome, MigrateError> {
        self.fence(&mut progress).await?;
        let position = first_text(
            &mut self.source,
            self.source_dialect.position_query(),
            "reading the position",
        )
        .await?;
        if progress.phase != progress_phase::SEEDED || progress.position != position {
            progress = self.seed(false, progress.fenced_at).await?;
        }
        self.after_fence(progress, false).await
    }

    /// Copies everything into the (emptied) target and remembers the snapshot's position. `fenced_at` (a
    /// `DumpRestore` copies inside the fence) is kept in the record, so the outage is measured from the first fence.
    async fn seed(
        &mut self,
        lock_for_snapshot: bool,
        fenced_at: Option<jiff::Timestamp>,
    ) -> Result<Progress, MigrateError> {
        let phase = Phase::begin(CopyPhase::Snapshot);
        self.write_progress(&Progress {
            phase: progress_phase::SEEDING.into(),
            fenced_at,
            ..Default::default()
        })
        .await?;
        // A target left read-only by an earlier run (rolled back to a replica) is loaded again.
        let _ = self.target.query_drop(self.target_dialect.stop_replica()).await;
        for s in self.target_dialect.accept_writes() {
            self.target
                .query_drop(s)
                .await
                .map_err(sql("making the target writable for the copy"))?;
        }
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
        // A copy made inside the fence (`DumpRestore`) read the accounts this run locked on the source as locked:
        // on the target, where the clients go, they log in.
        if !self.locked_accounts.is_empty() {
            let unlock: Vec<String> = self
                .locked_accounts
                .iter()
                .map(|grantee| format!("ALTER USER IF EXISTS {grantee} ACCOUNT UNLOCK"))
                .collect();
            let unlock: Vec<&str> = unlock.iter().map(String::as_str).collect();
            as_admin(&mut self.target, self.target_dialect, &unlock)
                .await
                .map_err(sql("unlocking the copied accounts on the target"))?;
        }
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
            fenced_at,
            downtime: None,
        };
        self.write_progress(&progress).await?;
        let mut report = phase.report();
        report.rows = Some(copied.rows);
        report.bytes = Some(copied.bytes);
        report.message = Some(format!(
            "{}{} tables, {} views, {} routines, {} triggers, {} events, {} accounts at position {position}",
            self.logical_seed_note
                .as_deref()
                .map(|why| format!("logical copy ({why}): "))
                .unwrap_or_default(),
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

    /// `snapshot` by `CLONE INSTANCE` (see [`clone`]). `Ok(Err(why))`: the logical copy must do, for that reason.
    async fn seed_by_clone(&mut self) -> Result<Result<Progress, String>, MigrateError> {
        let mut why_not = match self.plan.seeding {
            clone::Seeding::Logical => Some("--seed logical".to_owned()),
            _ => clone::impossible(
                (self.source_dialect, &self.source_version),
                (self.target_dialect, &self.target_version),
            ),
        };
        if why_not.is_none() {
            why_not = match clone::ensure_plugin(&mut self.source).await {
                Err(e) => Some(format!("on the source: {e}")),
                Ok(()) => clone::ensure_plugin(&mut self.target)
                    .await
                    .err()
                    .map(|e| format!("on the target: {e}")),
            };
        }
        if let Some(reason) = why_not {
            if self.plan.seeding == clone::Seeding::Clone {
                return Err(MigrateError::Unsupported(format!(
                    "--seed clone, but the target cannot be cloned: {reason}"
                )));
            }
            return Ok(Err(reason));
        }
        let phase = Phase::begin(CopyPhase::Snapshot);
        self.write_progress(&Progress {
            phase: progress_phase::SEEDING.into(),
            ..Default::default()
        })
        .await?;
        let _ = self.target.query_drop(self.target_dialect.stop_replica()).await;
        for s in self.target_dialect.accept_writes() {
            self.target
                .query_drop(s)
                .await
                .map_err(sql("making the target writable for the clone"))?;
        }
        // The copy arrives with the source's events enabled; they must not run before they are turned off on the
        // target, and the target restarts in between: the scheduler's pause is persisted.
        let scheduler = first_text(
            &mut self.target,
            "SELECT @@GLOBAL.event_scheduler",
            "reading the event scheduler",
        )
        .await?;
        if scheduler == "ON" {
            self.target
                .query_drop("SET PERSIST event_scheduler = OFF")
                .await
                .map_err(sql("pausing the target's events"))?;
        }
        let password = crate::secret::random(32);
        for s in clone::donor_account(&password) {
            self.source
                .query_drop(s)
                .await
                .map_err(sql_secret("creating the clone account"))?;
        }
        let (host, port) = self.source_for_target();
        let started = jiff::Timestamp::now();
        let statements = clone::clone_statements(&host, port, &password);
        self.target
            .query_drop(&statements[0])
            .await
            .map_err(sql("allowing the source as the clone's donor"))?;
        match self.target.query_drop(&statements[1]).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == clone::RESTART_REQUIRED => {}
            // The server may go before it answers; whether the copy is complete is read after the restart.
            Err(mysql_async::Error::Server(e)) => {
                // Nothing was copied: the target keeps running, with its events as they were.
                if scheduler == "ON" {
                    for s in [
                        "RESET PERSIST IF EXISTS event_scheduler",
                        "SET GLOBAL event_scheduler = ON",
                    ] {
                        let _ = self.target.query_drop(s).await;
                    }
                }
                self.drop_clone_account().await;
                return Err(sql_secret("cloning the source")(mysql_async::Error::Server(e)));
            }
            Err(_) => {}
        }
        self.reconnect_target_after_restart(started).await?;
        if !clone::completed_from(&mut self.target, &host, port).await {
            self.drop_clone_account().await;
            return Err(MigrateError::Unsupported(
                "CLONE INSTANCE did not complete (performance_schema.clone_status on the target says why)".into(),
            ));
        }
        let (bytes, copying, restarting) = clone::figures(&mut self.target).await;
        let progress = self.after_clone().await?;
        let mut report = phase.report();
        report.bytes = bytes;
        report.message = Some(format!(
            "cloned (CLONE INSTANCE: {copying:.1}s copying; the target restarted, {restarting:.1}s) at position {}",
            progress.position
        ));
        self.send(report);
        Ok(Ok(progress))
    }

    /// How the target reaches the source.
    fn source_for_target(&self) -> (String, u16) {
        self.plan
            .source_address_for_target
            .clone()
            .unwrap_or_else(|| (self.plan.source.host.clone(), self.plan.source.port))
    }

    /// Best effort: the donor account goes from both servers (a later run re-keys it anyway).
    async fn drop_clone_account(&mut self) {
        for s in clone::drop_donor_account() {
            let _ = self.source.query_drop(&s).await;
            let _ = as_admin(&mut self.target, self.target_dialect, &[&s]).await;
        }
    }

    /// Waits until the target runs again, started after `since` (a clone made it exit; the kubelet starts the
    /// pod's container again). A clone gives the target the source's accounts: when the target's credentials no
    /// longer work, the source's do, and the engine's target account gets its own password back.
    async fn reconnect_target_after_restart(&mut self, since: jiff::Timestamp) -> Result<(), MigrateError> {
        let deadline = Instant::now() + self.plan.limits.restart;
        let mut last_error = String::new();
        loop {
            match prepare_target(&self.plan).await {
                Ok((mut conn, _, _)) => {
                    if started_after(&mut conn, since).await {
                        self.target = conn;
                        return Ok(());
                    }
                }
                Err(e) => {
                    last_error = e.to_string();
                    if let Ok(mut conn) = source_credentials_on_target(&self.plan).connect("target").await
                        && started_after(&mut conn, since).await
                    {
                        // Retried until the deadline when it fails: without its password back, no later run could
                        // reach the target with the target's credentials.
                        let restored = restore_target_account(&mut conn, &self.plan.target).await;
                        let _ = conn.disconnect().await;
                        match restored {
                            Ok(()) => continue,
                            Err(e) => last_error = sql_secret(GIVE_PASSWORD_BACK)(e).to_string(),
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(MigrateError::Unsupported(format!(
                    "the target did not come back within {}s after the clone: {last_error}",
                    self.plan.limits.restart.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a completed clone: the engine's record, the events quiet on the replica, the scheduler as it was,
    /// the donor account gone; the position is the clone's.
    async fn after_clone(&mut self) -> Result<Progress, MigrateError> {
        ensure_progress_table(&mut self.target, self.target_dialect).await?;
        clone::quiet_events(&mut self.target, self.target_dialect).await?;
        let paused: Option<String> = self
            .target
            .query_first(
                "SELECT VARIABLE_VALUE FROM performance_schema.persisted_variables \
                 WHERE VARIABLE_NAME = 'event_scheduler'",
            )
            .await
            .map_err(sql("reading the event scheduler"))?;
        if paused.as_deref() == Some("OFF") {
            for s in [
                "RESET PERSIST IF EXISTS event_scheduler",
                "SET GLOBAL event_scheduler = ON",
            ] {
                self.target
                    .query_drop(s)
                    .await
                    .map_err(sql("restoring the event scheduler"))?;
            }
        }
        self.drop_clone_account().await;
        let position = first_text(
            &mut self.target,
            self.target_dialect.applied_position_query(),
            "reading the clone's position",
        )
        .await?;
        let progress = Progress {
            phase: progress_phase::SEEDED.into(),
            position,
            ..Default::default()
        };
        self.write_progress(&progress).await?;
        Ok(progress)
    }

    /// Creates (or re-keys) the replication account on the source and points the target at it; the target
    /// refuses client writes while it replicates.
    async fn attach_replica(&mut self) -> Result<(), MigrateError> {
        let password = crate::secret::random(32);
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
        let (host, port) = self.source_for_target();
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

    /// The replica's status, for a wait that needs replication to progress: a thread that stopped with an error
    /// fails the wait at once, and one that stopped without saying why (an earlier run killed while the applier was
    /// paused or bounded by `UNTIL`) is started again, rather than waited on until the replication limit.
    async fn replica_progressing(&mut self) -> Result<ReplicaStatus, MigrateError> {
        let status = self.replica_status().await?;
        if let Some(error) = &status.error {
            return Err(MigrateError::Unsupported(format!("replication stopped: {error}")));
        }
        if status.stopped {
            tracing::info!(?status, "replication had stopped without an error; starting it again");
            self.target
                .query_drop(self.target_dialect.start_replica())
                .await
                .map_err(sql("restarting replication"))?;
        }
        Ok(status)
    }

    async fn replica_status(&mut self) -> Result<ReplicaStatus, MigrateError> {
        let row: Option<Row> = self
            .target
            .query_first(self.target_dialect.replica_status())
            .await
            .map_err(sql("reading the replica's status"))?;
        Ok(ReplicaStatus::from_row(row, self.target_dialect))
    }

    /// The fence: a global read lock held by a dedicated connection, and nothing else. Client writes wait rather
    /// than fail; if this process dies, the server closes the connection and the source takes writes again.
    async fn fence(&mut self, progress: &mut Progress) -> Result<(), MigrateError> {
        let phase = Phase::begin(CopyPhase::Fence);
        self.locked_accounts =
            lock_bypassing_accounts(&mut self.source, self.source_dialect, &self.plan.source.user).await?;
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
        self.fence = Some(fence);
        self.stage = Stage::Fenced;
        // The outage counts from this migration's first fence: an interrupted run's fence began it.
        progress.fenced_at.get_or_insert(phase.start);
        self.write_progress(progress).await?;
        self.send(phase.report());
        Ok(())
    }

    fn fence_conn(&mut self) -> Result<&mut Conn, MigrateError> {
        self.fence
            .as_mut()
            .ok_or_else(|| MigrateError::Unsupported("the fence was lost".into()))
    }

    async fn after_fence(&mut self, mut progress: Progress, replica: bool) -> Result<Outcome, MigrateError> {
        if replica {
            let phase = Phase::begin(CopyPhase::CatchUp);
            let source_dialect = self.source_dialect;
            let position = first_text(
                self.fence_conn()?,
                source_dialect.position_query(),
                "reading the position",
            )
            .await?;
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
                return Err(MigrateError::Unsupported(format!(
                    "the target did not apply the source's last transaction ({position}) within {}s{}",
                    self.plan.limits.catch_up.as_secs(),
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            let mut report = phase.report();
            report.lag_seconds = Some(0);
            report.message = Some(format!("applied {position}"));
            self.send(report);
        }

        if !replica {
            self.verify_fenced().await?;
        }

        let phase = Phase::begin(CopyPhase::Promote);
        if replica {
            self.target
                .query_drop(self.target_dialect.stop_replica())
                .await
                .map_err(sql("stopping replication"))?;
            self.target
                .query_drop(self.target_dialect.reset_replica())
                .await
                .map_err(sql("forgetting the source"))?;
        }
        self.stage = Stage::Promoted;
        for s in self.target_dialect.accept_writes() {
            self.target
                .query_drop(s)
                .await
                .map_err(sql("making the target writable"))?;
        }
        if replica {
            let enabled: Vec<(String, String, String)> = self
                .fence_conn()?
                .query(
                    "SELECT EVENT_SCHEMA, EVENT_NAME, DEFINER FROM information_schema.EVENTS WHERE STATUS = 'ENABLED'",
                )
                .await
                .map_err(sql("listing events"))?;
            for (schema, name, definer) in enabled {
                self.target
                    .query_drop(self.target_dialect.enable_event(&schema, &name, &definer))
                    .await
                    .map_err(sql("enabling an event"))?;
            }
        }
        // Clients may reach the target from this phase's report on (the Service switches on it), so the source
        // must refuse writes even if this process dies and its lock goes: a client still connected to it must not
        // write where nobody reads any more. Set while the lock holds, as the last step before the record and the
        // report (an engine that dies in these milliseconds leaves the database refusing writes until it runs again).
        let refuse = self.source_dialect.refuse_writes();
        self.fence_conn()?
            .query_drop(refuse)
            .await
            .map_err(sql("making the source refuse writes"))?;
        progress.phase = progress_phase::PROMOTED.into();
        self.write_progress(&progress).await?;
        self.send(phase.report());
        self.finish_switch(progress).await
    }

    /// `verify` for `DumpRestore`: the copy was made inside the fence, so it is checked there too.
    async fn verify_fenced(&mut self) -> Result<(), MigrateError> {
        let phase = Phase::begin(CopyPhase::Verify);
        let tables = catalog::tables(self.fence_conn()?).await?;
        let method = verify::method(&self.source_version, &self.target_version);
        let (source_sums, target_sums) = {
            let mut target_conn = self.plan.target.connect("target").await?;
            let fence = self
                .fence
                .as_mut()
                .ok_or_else(|| MigrateError::Unsupported("the fence was lost".into()))?;
            let (a, b) = tokio::join!(
                verify::checksums(fence, &tables, method),
                verify::checksums(&mut target_conn, &tables, method)
            );
            let _ = target_conn.disconnect().await;
            (a?, b?)
        };
        let differ = verify::mismatches(&source_sums, &target_sums);
        if !differ.is_empty() {
            self.copy_diverged = true;
            return Err(MigrateError::Unsupported(format!(
                "checksums differ for {}",
                differ.join(", ")
            )));
        }
        let mut report = phase.report();
        report.message = Some(format!("{} tables equal ({:?})", tables.len(), method));
        self.send(report);
        Ok(())
    }

    /// Waits for the Service to lead to the target, then retires the source: its clients are closed, it refuses
    /// every write and runs no event (docs/copying-migration.md says how to undo that by hand).
    async fn finish_switch(&mut self, mut progress: Progress) -> Result<Outcome, MigrateError> {
        let phase = Phase::begin(CopyPhase::Switch);
        let switched_at = match self.plan.service.clone() {
            None => jiff::Timestamp::now(),
            Some((host, port)) => {
                let deadline = Instant::now() + self.plan.limits.switch;
                loop {
                    if self.service_leads_to_target(&host, port).await {
                        break jiff::Timestamp::now();
                    }
                    if Instant::now() > deadline {
                        return Err(MigrateError::Unsupported(format!(
                            "the Service {host}:{port} did not lead to the target within {}s",
                            self.plan.limits.switch.as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.stage = Stage::Switched;
        self.send(phase.report());

        let phase = Phase::begin(CopyPhase::Release);
        let mut source = match self.fence.take() {
            Some(f) => f,
            None => self.plan.source.connect("source").await?,
        };
        let closed = close_clients(&mut source).await?;
        for s in self.source_dialect.retire() {
            source.query_drop(s).await.map_err(sql("retiring the source"))?;
        }
        let _ = source.query_drop("UNLOCK TABLES").await;
        // The accounts the fence's preparation locked stay locked: the record names them for whoever reopens the
        // source by hand (docs/copying-migration.md), and the bookkeeping table goes.
        let locked = locked_accounts(&mut source).await?;
        let mut record = vec![
            "SET SESSION sql_log_bin = 0".to_owned(),
            "CREATE DATABASE IF NOT EXISTS appdb_migration".to_owned(),
            RETIRED_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"),
            format!(
                "REPLACE INTO appdb_migration.retired VALUES (1, {}, {}, {})",
                quote_literal(&format!("{}:{}", self.plan.target.host, self.plan.target.port)),
                quote_literal(&jiff::Timestamp::now().to_string()),
                quote_literal(&locked.join(", "))
            ),
        ];
        if !locked.is_empty() {
            record.push("DELETE FROM appdb_migration.locked_accounts".to_owned());
        }
        let record: Vec<&str> = record.iter().map(String::as_str).collect();
        as_admin(&mut source, self.source_dialect, &record)
            .await
            .map_err(sql("recording the source's retirement"))?;
        let _ = source.disconnect().await;
        let mut report = phase.report();
        report.message = Some(format!(
            "closed {closed} client connections on the source; it refuses writes and runs no events"
        ));
        self.send(report);

        let downtime = progress
            .fenced_at
            .map(|f| (switched_at.as_millisecond() - f.as_millisecond()) as f64 / 1000.0)
            .unwrap_or(0.0);
        progress.phase = progress_phase::DONE.into();
        progress.downtime = Some(downtime);
        self.write_progress(&progress).await?;
        Ok(self.report_done(downtime))
    }

    fn report_done(&self, downtime: f64) -> Outcome {
        let mut report = Phase::begin(CopyPhase::Done).report();
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

    /// Undoes a run that has not switched: the source writable and authoritative (this must succeed, and needs
    /// only the source), then, as far as the target answers, the target a replica again and its record reset so
    /// that a later run can try again.
    async fn roll_back(&mut self, reason: String) -> Result<Outcome, MigrateError> {
        let phase = Phase::begin(CopyPhase::RolledBack);
        let mut notes = Vec::new();
        if self.stage == Stage::Promoted {
            // Nobody wrote to the target: the Service never led there.
            if let Err(e) = self.target.query_drop(self.target_dialect.refuse_writes()).await {
                notes.push(format!("the target could not be made read-only again: {e}"));
            }
        }
        let mut source = match self.fence.take() {
            Some(f) => f,
            None => self.plan.source.connect("source").await?,
        };
        open_source(&mut source, self.source_dialect).await?;
        let _ = source.disconnect().await;
        self.stage = Stage::Copying;
        if let Err(e) = self.reset_after_rollback().await {
            notes.push(format!("the target was not reset ({e}); the next run resets it"));
        }
        let mut report = phase.report();
        report.message = Some(format!(
            "{reason}; the source is writable and authoritative{}",
            notes.iter().map(|n| format!("; {n}")).collect::<String>()
        ));
        self.send(report);
        Ok(Outcome::RolledBack { reason })
    }

    /// After a rollback: the fence is forgotten, and a seeded target follows the source again.
    async fn reset_after_rollback(&mut self) -> Result<(), MigrateError> {
        let mut progress = self.read_progress().await?;
        if progress.phase == progress_phase::PROMOTED {
            progress.phase = progress_phase::SEEDED.into();
        }
        progress.fenced_at = None;
        if self.copy_diverged {
            // Replication cannot repair a copy that differs: the next run wipes what this engine copied and
            // copies again.
            progress.phase = progress_phase::SEEDING.into();
            progress.position.clear();
            let _ = self.target.query_drop(self.target_dialect.stop_replica()).await;
        }
        self.write_progress(&progress).await?;
        if progress.phase == progress_phase::SEEDED && self.plan.strategy == Strategy::Replicate {
            self.attach_replica().await?;
        }
        Ok(())
    }
}

/// Whether the server behind `conn` started after `since` (it is the restarted one, not the one shutting down).
async fn started_after(conn: &mut Conn, since: jiff::Timestamp) -> bool {
    let uptime: Option<i64> = conn
        .query_first("SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM performance_schema.global_status WHERE VARIABLE_NAME = 'Uptime'")
        .await
        .ok()
        .flatten();
    uptime.is_some_and(|seconds| jiff::Timestamp::now().as_second() - seconds >= since.as_second())
}

/// Sets the password of every account named like the engine's target user (not binary-logged).
const GIVE_PASSWORD_BACK: &str = "giving the engine's target account its password back";

/// The target's address with the source's account: what reaches the target after a clone gave it the source's
/// accounts.
fn source_credentials_on_target(plan: &Plan) -> Server {
    Server {
        user: plan.source.user.clone(),
        password: plan.source.password.clone(),
        ..plan.target.clone()
    }
}

/// When the source's credentials reach the target (a clone's accounts), gives the engine's target account its
/// password back; true when it did.
async fn reclaim_target_account(plan: &Plan) -> bool {
    let Ok(mut conn) = source_credentials_on_target(plan).connect("target").await else {
        return false;
    };
    let restored = restore_target_account(&mut conn, &plan.target).await;
    let _ = conn.disconnect().await;
    match restored {
        Ok(()) => {
            tracing::info!(
                "the target held the source's accounts (an interrupted clone): its account has its password back"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %sql_secret(GIVE_PASSWORD_BACK)(e), "cannot give the target account its password back");
            false
        }
    }
}

async fn restore_target_account(conn: &mut Conn, target: &Server) -> Result<(), mysql_async::Error> {
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (target.user.as_str(),))
        .await?;
    conn.query_drop("SET SESSION sql_log_bin = 0").await?;
    for host in hosts {
        conn.query_drop(format!(
            "ALTER USER {} IDENTIFIED BY {}",
            account(&target.user, &host),
            quote_literal(&target.password)
        ))
        .await?;
    }
    conn.query_drop("SET SESSION sql_log_bin = 1").await
}

/// Closes every client connection except this one and the servers' own threads, sessions still logging in too
/// (one could otherwise finish logging in and write once the lock is gone). Returns how many.
async fn close_clients(conn: &mut Conn) -> Result<usize, MigrateError> {
    let ids: Vec<u64> = conn
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ('system user', 'event_scheduler', {}) \
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

/// The lag, in the servers' whole seconds, at which a replica counts as caught up (see
/// `Session::wait_until_caught_up`).
const CAUGHT_UP_LAG_SECONDS: u64 = 1;

/// How long a replica may keep failing to connect to its source before the engine gives up (and rolls back).
const RECONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// The parts of the replica status the engine acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaStatus {
    /// Both threads run.
    pub running: bool,
    /// A thread has stopped (not merely reconnecting): replication makes no progress until it is started again.
    pub stopped: bool,
    pub lag: Option<u64>,
    /// Why a thread stopped, when the server says.
    pub error: Option<String>,
    /// The IO thread's last error while it keeps reconnecting (not fatal by itself).
    pub reconnecting: Option<String>,
}

impl Default for ReplicaStatus {
    /// What a server that is not a replica reports (no status row).
    fn default() -> Self {
        ReplicaStatus {
            running: false,
            stopped: true,
            lag: None,
            error: None,
            reconnecting: None,
        }
    }
}

impl ReplicaStatus {
    fn from_row(row: Option<Row>, dialect: Dialect) -> ReplicaStatus {
        let Some(row) = row else {
            return ReplicaStatus::default();
        };
        let [io, sql_thread, lag, io_error, sql_error] = dialect.replica_status_columns();
        let text = |name: &str| -> String { row.get::<Option<String>, _>(name).flatten().unwrap_or_default() };
        ReplicaStatus::from_fields(
            &text(io),
            &text(sql_thread),
            &text(lag),
            &text(io_error),
            &text(sql_error),
        )
    }

    /// The IO thread reports `Yes`, `No`, `Connecting` or `Preparing`; the SQL thread `Yes` or `No`. An IO error
    /// while the thread retries (`Connecting`: the source is briefly away) is not fatal; an IO thread that gave up
    /// (`No`, for example when the source no longer has the binary logs it needs) is, like a stopped SQL thread.
    fn from_fields(io: &str, sql_thread: &str, lag: &str, io_error: &str, sql_error: &str) -> ReplicaStatus {
        let sql_running = sql_thread == "Yes";
        let io_stopped = io == "No";
        let error = if !sql_running && !sql_error.is_empty() {
            Some(sql_error)
        } else if (io_stopped || !sql_running) && !io_error.is_empty() {
            Some(io_error)
        } else {
            None
        };
        ReplicaStatus {
            running: io == "Yes" && sql_running,
            stopped: io_stopped || !sql_running,
            lag: lag.parse().ok(),
            error: error.map(str::to_owned),
            reconnecting: (io == "Connecting" && !io_error.is_empty()).then(|| io_error.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicaStatus;

    #[test]
    fn a_replica_that_reconnects_is_neither_stopped_nor_failed() {
        let status = ReplicaStatus::from_fields("Connecting", "Yes", "", "error connecting to master", "");
        assert!(!status.running && !status.stopped);
        assert_eq!(status.error, None);
        assert_eq!(status.reconnecting.as_deref(), Some("error connecting to master"));
    }

    #[test]
    fn an_io_thread_that_gave_up_fails_with_its_error() {
        let status = ReplicaStatus::from_fields("No", "Yes", "", "Got fatal error 1236", "");
        assert!(status.stopped);
        assert_eq!(status.error.as_deref(), Some("Got fatal error 1236"));
    }

    #[test]
    fn a_stopped_sql_thread_reports_its_own_error_first() {
        let status = ReplicaStatus::from_fields("Yes", "No", "", "io said", "Duplicate entry");
        assert_eq!(status.error.as_deref(), Some("Duplicate entry"));
    }

    #[test]
    fn threads_stopped_without_an_error_are_stopped_not_failed() {
        // What `UNTIL` or a paused applier leaves behind when the run that set them was killed.
        let status = ReplicaStatus::from_fields("Yes", "No", "", "", "");
        assert!(status.stopped && status.error.is_none());
        assert!(ReplicaStatus::default().stopped, "no status row: not a replica");
    }

    #[test]
    fn a_running_replica_reports_its_lag() {
        let status = ReplicaStatus::from_fields("Yes", "Yes", "3", "", "");
        assert!(status.running && !status.stopped);
        assert_eq!(status.lag, Some(3));
    }
}
