//! The replication and fencing statements of MySQL and MariaDB, which differ in names and GTID formats.
//!
//! | What                      | MariaDB                                   | MySQL 8.4                                      |
//! |---------------------------|-------------------------------------------|------------------------------------------------|
//! | position of a snapshot    | `@@GLOBAL.gtid_binlog_pos` (`0-1-42`)      | `@@GLOBAL.gtid_executed` (`uuid:1-42`)          |
//! | seed the replica position | `SET GLOBAL gtid_slave_pos`               | `RESET BINARY LOGS AND GTIDS` + `gtid_purged`  |
//! | point at the source       | `CHANGE MASTER TO … MASTER_USE_GTID`      | `CHANGE REPLICATION SOURCE TO … AUTO_POSITION` |
//! | wait for a position       | `MASTER_GTID_WAIT()` (0 = reached)        | `WAIT_FOR_EXECUTED_GTID_SET()` (0 = reached)   |
//! | refuse writes             | `read_only` (bypassed by READ ONLY ADMIN) | `super_read_only` (no bypass, not even root)   |
//! | roles                     | rows of `mysql.user` with `is_role = 'Y'` | locked accounts                                |
//!
//! Everything here is pure: the engine (`super::migrate`) sends what these functions return.

use super::admin::quote_literal;

/// Which server family a connection talks to (from `SELECT VERSION()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    MariaDb,
    MySql,
}

/// Where a replica finds its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceAddress<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
}

impl Dialect {
    /// MariaDB reports versions such as `11.4.2-MariaDB-log`; everything else is treated as MySQL.
    pub fn from_version(version: &str) -> Dialect {
        if version.to_ascii_lowercase().contains("mariadb") {
            Dialect::MariaDb
        } else {
            Dialect::MySql
        }
    }

    /// The GTID position covering everything the server has committed.
    pub fn position_query(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SELECT @@GLOBAL.gtid_binlog_pos",
            Dialect::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// The GTID position a replica has applied.
    pub fn applied_position_query(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SELECT @@GLOBAL.gtid_slave_pos",
            Dialect::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Tells a freshly seeded replica that it already holds everything up to `position`. Its own binary log is
    /// emptied first: transactions of its first start (the image's initialisation) would otherwise sit in the same
    /// GTID domain and make strict mode refuse the source's older sequence numbers.
    pub fn seed_position(self, position: &str) -> Vec<String> {
        match self {
            Dialect::MariaDb => vec![
                "RESET MASTER".to_owned(),
                format!("SET GLOBAL gtid_slave_pos = {}", quote_literal(position)),
            ],
            Dialect::MySql => vec![
                "RESET BINARY LOGS AND GTIDS".to_owned(),
                format!("SET GLOBAL gtid_purged = {}", quote_literal(position)),
            ],
        }
    }

    /// Points the replica at its source, continuing from the replica's own GTID position.
    pub fn change_source(self, source: &SourceAddress<'_>) -> String {
        match self {
            Dialect::MariaDb => format!(
                "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, MASTER_PASSWORD = {}, \
                 MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                quote_literal(source.host),
                source.port,
                quote_literal(source.user),
                quote_literal(source.password)
            ),
            Dialect::MySql => format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST = {}, SOURCE_PORT = {}, SOURCE_USER = {}, \
                 SOURCE_PASSWORD = {}, SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1, SOURCE_CONNECT_RETRY = 1",
                quote_literal(source.host),
                source.port,
                quote_literal(source.user),
                quote_literal(source.password)
            ),
        }
    }

    pub fn start_replica(self) -> &'static str {
        match self {
            Dialect::MariaDb => "START SLAVE",
            Dialect::MySql => "START REPLICA",
        }
    }

    /// Stops applying replicated transactions; the target holds still while it keeps what it has.
    pub fn pause_applier(self) -> &'static str {
        match self {
            // MariaDB's `START SLAVE UNTIL` needs both threads stopped.
            Dialect::MariaDb => "STOP SLAVE",
            Dialect::MySql => "STOP REPLICA SQL_THREAD",
        }
    }

    /// Applies replicated transactions up to and including `position` (a source's GTID position), then stops.
    pub fn apply_until(self, position: &str) -> String {
        match self {
            Dialect::MariaDb => format!("START SLAVE UNTIL master_gtid_pos = {}", quote_literal(position)),
            Dialect::MySql => format!(
                "START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = {}",
                quote_literal(position)
            ),
        }
    }

    pub fn stop_replica(self) -> &'static str {
        match self {
            Dialect::MariaDb => "STOP SLAVE",
            Dialect::MySql => "STOP REPLICA",
        }
    }

    /// Forgets the source entirely (after promotion).
    pub fn reset_replica(self) -> &'static str {
        match self {
            Dialect::MariaDb => "RESET SLAVE ALL",
            Dialect::MySql => "RESET REPLICA ALL",
        }
    }

    pub fn replica_status(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SHOW SLAVE STATUS",
            Dialect::MySql => "SHOW REPLICA STATUS",
        }
    }

    /// Column names of the replica status, in this order: IO thread running, SQL thread running, lag in seconds,
    /// last IO error, last SQL error.
    pub fn replica_status_columns(self) -> [&'static str; 5] {
        match self {
            Dialect::MariaDb => [
                "Slave_IO_Running",
                "Slave_SQL_Running",
                "Seconds_Behind_Master",
                "Last_IO_Error",
                "Last_SQL_Error",
            ],
            Dialect::MySql => [
                "Replica_IO_Running",
                "Replica_SQL_Running",
                "Seconds_Behind_Source",
                "Last_IO_Error",
                "Last_SQL_Error",
            ],
        }
    }

    /// Waits up to `timeout_seconds` for the replica to apply `position`; the query returns 0 when reached.
    pub fn wait_for_position(self, position: &str, timeout_seconds: u32) -> String {
        match self {
            Dialect::MariaDb => format!(
                "SELECT MASTER_GTID_WAIT({}, {timeout_seconds})",
                quote_literal(position)
            ),
            Dialect::MySql => format!(
                "SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {timeout_seconds})",
                quote_literal(position)
            ),
        }
    }

    /// Makes the server refuse writes from clients. MariaDB has no `super_read_only`: accounts with the
    /// `READ ONLY ADMIN` privilege still write. On MySQL this blocks the engine's own account too, so the engine's
    /// writes to such a server go through [`Dialect::lift_for_admin`].
    pub fn refuse_writes(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SET GLOBAL read_only = ON",
            Dialect::MySql => "SET GLOBAL super_read_only = ON",
        }
    }

    pub fn accept_writes(self) -> Vec<&'static str> {
        match self {
            Dialect::MariaDb => vec!["SET GLOBAL read_only = OFF"],
            Dialect::MySql => vec!["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"],
        }
    }

    /// Whether the server refuses even the engine's account (MySQL's `super_read_only`); MariaDB's `read_only`
    /// never does.
    pub fn admin_blocked_query(self) -> &'static str {
        match self {
            Dialect::MariaDb => "SELECT 0",
            Dialect::MySql => "SELECT @@GLOBAL.super_read_only",
        }
    }

    /// Lets the engine's account write again while clients stay refused (`read_only` stays on), and the statement
    /// that restores the full refusal afterwards.
    pub fn lift_for_admin(self) -> (&'static str, &'static str) {
        ("SET GLOBAL super_read_only = OFF", "SET GLOBAL super_read_only = ON")
    }

    /// Accounts (as `'user'@'host'`) that `read_only` does not hold: on MariaDB those with `READ ONLY ADMIN` or
    /// `SUPER` (an application's `ALL PRIVILEGES` account among them); on MySQL those with `SUPER` or
    /// `CONNECTION_ADMIN`, which `super_read_only` holds but plain `read_only` does not (the engine lifts
    /// `super_read_only` for its own bookkeeping on a retired source).
    pub fn read_only_bypass_query(self) -> &'static str {
        match self {
            Dialect::MariaDb => {
                "SELECT DISTINCT GRANTEE FROM information_schema.USER_PRIVILEGES \
                 WHERE PRIVILEGE_TYPE IN ('SUPER', 'READ_ONLY ADMIN') ORDER BY GRANTEE"
            }
            Dialect::MySql => {
                "SELECT DISTINCT GRANTEE FROM information_schema.USER_PRIVILEGES \
                 WHERE PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION_ADMIN') ORDER BY GRANTEE"
            }
        }
    }

    /// Retires a server that clients have left for another: every write refused and no event runs. Undone by
    /// [`Dialect::accept_writes`] and `SET GLOBAL event_scheduler = ON` (docs/copying-migration.md says how).
    pub fn retire(self) -> Vec<&'static str> {
        vec![self.refuse_writes(), "SET GLOBAL event_scheduler = OFF"]
    }

    /// Accounts that belong to the server itself and are never copied.
    pub fn system_accounts(self) -> &'static [&'static str] {
        match self {
            Dialect::MariaDb => &["root", "mariadb.sys", "mysql", ""],
            Dialect::MySql => &["root", "mysql.sys", "mysql.session", "mysql.infoschema", ""],
        }
    }

    /// Lists accounts as (user, host, is_role 'Y'/'N'), roles first: accounts that hold them are granted after.
    pub fn accounts_query(self) -> &'static str {
        match self {
            // No comparison with a literal: on MariaDB `mysql.user` is a view whose columns are coercible, and a
            // server whose `collation_server` differs from the connection's (the operator's own configuration)
            // refuses `is_role = 'N'` as an illegal mix of collations. The caller orders the rows.
            Dialect::MariaDb => "SELECT User, Host, is_role FROM mysql.user",
            // MySQL's roles are locked accounts; the ones granted to others are roles.
            Dialect::MySql => {
                "SELECT User, Host, IF(EXISTS(SELECT 1 FROM mysql.role_edges e WHERE e.FROM_USER = u.User \
                 AND e.FROM_HOST = u.Host), 'Y', 'N') AS is_role FROM mysql.user u"
            }
        }
    }

    /// Disables an event on a replica (it runs on the primary only). `definer` is the event's own (`user@host`
    /// as information_schema shows it): `ALTER EVENT` without it would make the engine's account the definer.
    pub fn disable_event_on_replica(self, schema: &str, event: &str, definer: &str) -> String {
        let name = format!("{}.{}", quote_identifier(schema), quote_identifier(event));
        let definer = definer_account(definer);
        match self {
            Dialect::MariaDb => format!("ALTER DEFINER = {definer} EVENT {name} DISABLE ON SLAVE"),
            Dialect::MySql => format!("ALTER DEFINER = {definer} EVENT {name} DISABLE ON REPLICA"),
        }
    }

    /// Enables an event again (at promotion), keeping its definer.
    pub fn enable_event(self, schema: &str, event: &str, definer: &str) -> String {
        format!(
            "ALTER DEFINER = {} EVENT {}.{} ENABLE",
            definer_account(definer),
            quote_identifier(schema),
            quote_identifier(event)
        )
    }
}

/// A quoted identifier (`` ` `` doubled), for schema, table, column and routine names.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A definer as information_schema shows it (`user@host`, the host after the last `@`) as `'user'@'host'`.
pub fn definer_account(definer: &str) -> String {
    match definer.rsplit_once('@') {
        Some((user, host)) => account(user, host),
        None => account(definer, "%"),
    }
}

/// An account name as `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote_literal(user), quote_literal(host))
}

/// Compares two GTID positions of MariaDB (`domain-server-seq`, comma separated): true when `applied` contains
/// every domain of `wanted` with at least its sequence number.
pub fn mariadb_position_reached(applied: &str, wanted: &str) -> bool {
    fn parse(p: &str) -> std::collections::BTreeMap<u32, u64> {
        p.split(',')
            .filter_map(|g| {
                let mut parts = g.trim().split('-');
                let domain = parts.next()?.parse().ok()?;
                let _server: u32 = parts.next()?.parse().ok()?;
                let seq = parts.next()?.parse().ok()?;
                Some((domain, seq))
            })
            .collect()
    }
    let applied = parse(applied);
    parse(wanted)
        .iter()
        .all(|(domain, seq)| applied.get(domain).is_some_and(|a| a >= seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceAddress<'static> {
        SourceAddress {
            host: "db-0.db.acme.svc",
            port: 3306,
            user: "appdb_replication",
            password: "p'w",
        }
    }

    #[test]
    fn dialect_is_read_from_the_version_string() {
        assert_eq!(Dialect::from_version("10.11.6-MariaDB-0+deb12u1-log"), Dialect::MariaDb);
        assert_eq!(Dialect::from_version("8.4.3"), Dialect::MySql);
    }

    #[test]
    fn mysql_replication_statements() {
        let d = Dialect::MySql;
        assert_eq!(
            d.change_source(&source()),
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db-0.db.acme.svc', SOURCE_PORT = 3306, \
             SOURCE_USER = 'appdb_replication', SOURCE_PASSWORD = 'p''w', SOURCE_AUTO_POSITION = 1, \
             GET_SOURCE_PUBLIC_KEY = 1, SOURCE_CONNECT_RETRY = 1"
        );
        assert_eq!(
            d.seed_position("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
            vec![
                "RESET BINARY LOGS AND GTIDS".to_owned(),
                "SET GLOBAL gtid_purged = '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5'".to_owned()
            ]
        );
        assert_eq!(d.start_replica(), "START REPLICA");
        assert_eq!(d.stop_replica(), "STOP REPLICA");
        assert_eq!(d.pause_applier(), "STOP REPLICA SQL_THREAD");
        assert_eq!(
            d.apply_until("uuid:1-9"),
            "START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = 'uuid:1-9'"
        );
        assert_eq!(d.reset_replica(), "RESET REPLICA ALL");
        assert_eq!(d.replica_status(), "SHOW REPLICA STATUS");
        assert_eq!(d.replica_status_columns()[2], "Seconds_Behind_Source");
        assert_eq!(
            d.wait_for_position("uuid:1-9", 30),
            "SELECT WAIT_FOR_EXECUTED_GTID_SET('uuid:1-9', 30)"
        );
        assert_eq!(d.refuse_writes(), "SET GLOBAL super_read_only = ON");
        assert_eq!(d.position_query(), "SELECT @@GLOBAL.gtid_executed");
        assert_eq!(
            d.disable_event_on_replica("s", "e", "owner@%"),
            "ALTER DEFINER = 'owner'@'%' EVENT `s`.`e` DISABLE ON REPLICA"
        );
        assert_eq!(
            d.enable_event("s", "e", "o@w@10.%"),
            "ALTER DEFINER = 'o@w'@'10.%' EVENT `s`.`e` ENABLE"
        );
        assert_eq!(
            d.retire(),
            vec!["SET GLOBAL super_read_only = ON", "SET GLOBAL event_scheduler = OFF"]
        );
    }

    #[test]
    fn mariadb_replication_statements() {
        let d = Dialect::MariaDb;
        assert_eq!(
            d.change_source(&source()),
            "CHANGE MASTER TO MASTER_HOST = 'db-0.db.acme.svc', MASTER_PORT = 3306, MASTER_USER = \
             'appdb_replication', MASTER_PASSWORD = 'p''w', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
        );
        assert_eq!(
            d.seed_position("0-1-42"),
            vec![
                "RESET MASTER".to_owned(),
                "SET GLOBAL gtid_slave_pos = '0-1-42'".to_owned()
            ]
        );
        assert_eq!(d.wait_for_position("0-1-42", 5), "SELECT MASTER_GTID_WAIT('0-1-42', 5)");
        assert_eq!(d.pause_applier(), "STOP SLAVE");
        assert_eq!(d.apply_until("0-1-42"), "START SLAVE UNTIL master_gtid_pos = '0-1-42'");
        assert_eq!(d.refuse_writes(), "SET GLOBAL read_only = ON");
        assert_eq!(d.accept_writes(), vec!["SET GLOBAL read_only = OFF"]);
        assert_eq!(
            d.disable_event_on_replica("s", "e`x", "root@localhost"),
            "ALTER DEFINER = 'root'@'localhost' EVENT `s`.`e``x` DISABLE ON SLAVE"
        );
        assert_eq!(d.admin_blocked_query(), "SELECT 0");
    }

    #[test]
    fn mariadb_positions_compare_per_domain() {
        assert!(mariadb_position_reached("0-1-42", "0-1-42"));
        assert!(mariadb_position_reached("0-2-50,1-1-3", "0-1-42"));
        assert!(!mariadb_position_reached("0-1-41", "0-1-42"));
        assert!(!mariadb_position_reached("0-1-42", "0-1-42,1-1-1"));
        assert!(mariadb_position_reached("", ""));
    }

    #[test]
    fn identifiers_and_accounts_are_quoted() {
        assert_eq!(quote_identifier("a`b"), "`a``b`");
        assert_eq!(account("app", "%"), "'app'@'%'");
    }
}
