//! Seeding by `CLONE INSTANCE` (MySQL's clone plugin): the target becomes a physical copy of the source, at
//! storage speed, with the GTID position of the copy. Possible only between MySQL servers of the same version; the
//! recipient server exits when the copy is in place and comes back as a restarted pod would.
//!
//! A clone copies everything the server stores, accounts and passwords included: afterwards the target has the
//! source's accounts, as a logical copy gives it too, and the engine's own target account is given the target's
//! password back (the operator runs both servers with the same root secret, so there it is unchanged).

use mysql_async::{Conn, prelude::Queryable};

use super::{Dialect, MigrateError, sql};
use crate::mysql::{admin::quote_literal, dialect::account};

/// How the target is seeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Seeding {
    /// `CLONE INSTANCE` where both servers allow it, the logical copy otherwise.
    #[default]
    Auto,
    /// Always the logical copy (rows over several connections).
    Logical,
    /// Only `CLONE INSTANCE`: a migration it cannot seed fails at once.
    Clone,
}

/// The account the target's clone connects to the source as (`BACKUP_ADMIN`; dropped afterwards).
pub const CLONE_USER: &str = "appdb_clone";

/// MySQL's answer to `CLONE INSTANCE` when the copy is complete but no supervisor restarts the server: it exits,
/// and whatever runs it (the kubelet) starts it again.
pub const RESTART_REQUIRED: u16 = 3707;

/// Why a clone cannot seed this pair of servers (`None`: it can, as far as versions tell).
pub fn impossible(source: (Dialect, &str), target: (Dialect, &str)) -> Option<String> {
    match (source.0, target.0) {
        (Dialect::MySql, Dialect::MySql) if source.1 == target.1 => None,
        (Dialect::MySql, Dialect::MySql) => Some(format!(
            "CLONE INSTANCE needs the same MySQL version on both servers ({} → {})",
            source.1, target.1
        )),
        _ => Some("CLONE INSTANCE is MySQL's; MariaDB has no clone plugin".into()),
    }
}

/// Loads the clone plugin unless it is active. `Err` is the server's reason (no plugin file, no privilege).
pub async fn ensure_plugin(conn: &mut Conn) -> Result<(), String> {
    let status: Option<String> = conn
        .query_first("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'")
        .await
        .map_err(|e| e.to_string())?;
    match status.as_deref() {
        Some("ACTIVE") => Ok(()),
        Some(other) => Err(format!("the clone plugin is {other}")),
        None => conn
            .query_drop("INSTALL PLUGIN clone SONAME 'mysql_clone.so'")
            .await
            .map_err(|e| format!("the clone plugin could not be loaded: {e}")),
    }
}

/// Statements on the source: the donor account (not binary-logged; a clone copies it to the target, where it is
/// dropped again).
pub fn donor_account(password: &str) -> Vec<String> {
    let user = account(CLONE_USER, "%");
    vec![
        "SET SESSION sql_log_bin = 0".to_owned(),
        format!(
            "CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {}",
            quote_literal(password)
        ),
        format!("ALTER USER {user} IDENTIFIED BY {}", quote_literal(password)),
        format!("GRANT BACKUP_ADMIN ON *.* TO {user}"),
        "SET SESSION sql_log_bin = 1".to_owned(),
    ]
}

/// Statements that drop the donor account again (on both servers after the clone).
pub fn drop_donor_account() -> Vec<String> {
    vec![
        "SET SESSION sql_log_bin = 0".to_owned(),
        format!("DROP USER IF EXISTS {}", account(CLONE_USER, "%")),
        "SET SESSION sql_log_bin = 1".to_owned(),
    ]
}

/// Statements on the target that copy the source into it.
pub fn clone_statements(host: &str, port: u16, password: &str) -> Vec<String> {
    vec![
        format!(
            "SET GLOBAL clone_valid_donor_list = {}",
            quote_literal(&format!("{host}:{port}"))
        ),
        format!(
            "CLONE INSTANCE FROM {}@{}:{port} IDENTIFIED BY {}",
            quote_literal(CLONE_USER),
            quote_literal(host),
            quote_literal(password)
        ),
    ]
}

/// Whether the target's own record says it was cloned, completely, from `host:port` (it survives the restart:
/// a run that died after the clone finds its copy there).
pub async fn completed_from(conn: &mut Conn, host: &str, port: u16) -> bool {
    let row: Option<(String, String)> = conn
        .query_first("SELECT STATE, SOURCE FROM performance_schema.clone_status ORDER BY ID DESC LIMIT 1")
        .await
        .ok()
        .flatten();
    matches!(row, Some((state, source)) if state == "Completed" && source == format!("{host}:{port}"))
}

/// What the last clone moved and how long it took (for the report): bytes, seconds copying, seconds restarting
/// and recovering.
pub async fn figures(conn: &mut Conn) -> (Option<u64>, f64, f64) {
    let stages: Vec<(String, Option<u64>, Option<i64>)> = conn
        .query(
            "SELECT STAGE, CAST(DATA AS UNSIGNED), TIMESTAMPDIFF(MICROSECOND, BEGIN_TIME, END_TIME) \
             FROM performance_schema.clone_progress",
        )
        .await
        .unwrap_or_default();
    let (mut bytes, mut copying, mut restarting) = (None::<u64>, 0.0, 0.0);
    for (stage, data, micros) in stages {
        let seconds = micros.unwrap_or(0).max(0) as f64 / 1e6;
        if matches!(stage.as_str(), "RESTART" | "RECOVERY") {
            restarting += seconds;
        } else {
            copying += seconds;
        }
        if let Some(d) = data {
            bytes = Some(bytes.unwrap_or(0) + d);
        }
    }
    (bytes, copying, restarting)
}

/// Events that were enabled on the source arrive enabled; on a replica they must not run (they would write what
/// replication brings anyway). Turned off on the target, keeping each definer, without binary logging.
pub async fn quiet_events(target: &mut Conn, dialect: Dialect) -> Result<usize, MigrateError> {
    let enabled: Vec<(String, String, String)> = target
        .query("SELECT EVENT_SCHEMA, EVENT_NAME, DEFINER FROM information_schema.EVENTS WHERE STATUS = 'ENABLED'")
        .await
        .map_err(sql("listing events"))?;
    target
        .query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(sql("disabling events on the target"))?;
    for (schema, name, definer) in &enabled {
        target
            .query_drop(dialect.disable_event_on_replica(schema, name, definer))
            .await
            .map_err(sql("disabling an event on the target"))?;
    }
    target
        .query_drop("SET SESSION sql_log_bin = 1")
        .await
        .map_err(sql("disabling events on the target"))?;
    Ok(enabled.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mysql_of_one_version_clones() {
        assert_eq!(
            impossible((Dialect::MySql, "9.7.4-2"), (Dialect::MySql, "9.7.4-2")),
            None
        );
        assert!(
            impossible((Dialect::MySql, "8.4.3"), (Dialect::MySql, "9.7.4"))
                .unwrap()
                .contains("same MySQL version")
        );
        assert!(
            impossible(
                (Dialect::MariaDb, "10.11.6-MariaDB"),
                (Dialect::MariaDb, "10.11.6-MariaDB")
            )
            .unwrap()
            .contains("MariaDB")
        );
    }

    #[test]
    fn statements_quote_everything() {
        assert_eq!(
            clone_statements("db-0.db.acme.svc", 3306, "p'w"),
            vec![
                "SET GLOBAL clone_valid_donor_list = 'db-0.db.acme.svc:3306'".to_owned(),
                "CLONE INSTANCE FROM 'appdb_clone'@'db-0.db.acme.svc':3306 IDENTIFIED BY 'p''w'".to_owned(),
            ]
        );
        assert!(
            donor_account("x")
                .iter()
                .any(|s| s == "GRANT BACKUP_ADMIN ON *.* TO 'appdb_clone'@'%'")
        );
        assert_eq!(drop_donor_account()[1], "DROP USER IF EXISTS 'appdb_clone'@'%'");
    }
}
