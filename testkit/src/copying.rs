//! Shared by the migration engine's tests: a dataset with every common type and object kind, a writer that
//! records every acknowledged write, and the engine run as a process whose phases the test reacts to.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mysql_async::{Conn, OptsBuilder, prelude::Queryable};

use crate::dbserver::DbServer;

pub const SOURCE_ROOT: &str = "SourceRootPassw0rd1";
pub const TARGET_ROOT: &str = "TargetRootPassw0rd2";
pub const APP_PASSWORD: &str = "AppPassw0rd-3";
pub const REPORTER_PASSWORD: &str = "Rep0rter-pass";

pub async fn connect(port: u16, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false),
    )
    .await
}

pub async fn root(db: &DbServer, password: &str) -> Conn {
    connect(db.port, "root", password).await.expect("root connection")
}

/// A schema with every common column type (utf8mb4 with emoji, BLOB, DECIMAL, JSON, dates, BIT, ENUM/SET, a
/// generated column, NULLs), tables with and without primary keys, a foreign key, a latin1 schema, views (one
/// over another), a trigger, a procedure, a function, an event and two accounts with grants.
pub async fn load_dataset(conn: &mut Conn, customers: u32) {
    let statements = [
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci".to_owned(),
        // Row numbers from a recursive CTE, which both engines have (MariaDB's `seq_1_to_N` is MariaDB's only);
        // both stop recursion at 1,000 levels by default.
        "SET SESSION cte_max_recursion_depth = 10000000".to_owned(),
        "CREATE TABLE shop.customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, note TEXT NULL, \
         balance DECIMAL(14,4) NOT NULL DEFAULT 0, ratio DOUBLE NULL, score FLOAT NULL, born DATE NULL, \
         seen DATETIME(6) NULL, changed TIMESTAMP NULL, opens TIME NULL, since YEAR NULL, flags BIT(10) NULL, \
         doc JSON NULL, photo BLOB NULL, kind ENUM('person','company') NULL, tags SET('vip','new','late') NULL, \
         doubled INT AS (CHAR_LENGTH(name) * 2) VIRTUAL, big BIGINT UNSIGNED NULL) ENGINE=InnoDB"
            .to_owned(),
        "CREATE TABLE shop.audit (msg VARCHAR(200) NOT NULL, at DATETIME NOT NULL) ENGINE=InnoDB".to_owned(),
        "CREATE TABLE shop.writes (id BIGINT PRIMARY KEY, value BIGINT NOT NULL) ENGINE=InnoDB".to_owned(),
        "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(10,2), \
         FOREIGN KEY (customer) REFERENCES shop.customers (id)) ENGINE=InnoDB"
            .to_owned(),
        "CREATE DATABASE legacy CHARACTER SET latin1".to_owned(),
        "CREATE TABLE legacy.notes (id INT PRIMARY KEY, body VARCHAR(100), raw VARBINARY(32), memo TEXT NULL) ENGINE=InnoDB".to_owned(),
        format!(
            "INSERT INTO shop.customers (name, note, balance, ratio, score, born, seen, changed, opens, since, flags, \
             doc, photo, kind, tags, big) SELECT CONCAT('Kunde ', seq, ' 😀 ünïcödé'), \
             IF(seq % 7 = 0, NULL, REPEAT('note\\n\\'\"\\\\ ', seq % 5)), seq * 1.2345, seq / 3, seq / 7, \
             DATE '1970-01-01' + INTERVAL seq DAY, TIMESTAMP '2026-01-01 00:00:00.123456' + INTERVAL seq SECOND, \
             FROM_UNIXTIME(1700000000 + seq), SEC_TO_TIME(seq), 1901 + seq % 254, seq % 1024, \
             JSON_OBJECT('n', seq, 's', 'ä\"b'), UNHEX(SHA2(seq, 256)), IF(seq % 2, 'person', 'company'), \
             IF(seq % 3 = 0, 'vip,late', 'new'), 18446744073709551615 - seq FROM {}",
            numbers(customers)
        ),
        "INSERT INTO shop.customers (name, photo, ratio, score, note) VALUES \
         ('zero bytes', 0x00FF00275C1A0D0A, 0.1 + 0.2, 3.14159, ''), ('nulls', NULL, NULL, NULL, NULL)"
            .to_owned(),
        format!(
            "INSERT INTO shop.orders (customer, total) SELECT seq, seq * 2.5 FROM {}",
            numbers(customers / 2)
        ),
        "INSERT INTO shop.audit VALUES ('dup', '2026-01-01 00:00:00'), ('dup', '2026-01-01 00:00:00')".to_owned(),
        "INSERT INTO legacy.notes VALUES (1, 'café', 0x00010203, 'Grüße'), (2, NULL, NULL, NULL), (3, 'naïve', '', '')".to_owned(),
        // Created before the view it reads, so creating views needs more than one pass.
        "CREATE VIEW shop.a_vip_count AS SELECT COUNT(*) AS n FROM shop.customers WHERE FIND_IN_SET('vip', tags)"
            .to_owned(),
        "CREATE VIEW shop.vip AS SELECT id, name FROM shop.customers WHERE FIND_IN_SET('vip', tags)".to_owned(),
        "CREATE OR REPLACE VIEW shop.a_vip_count AS SELECT COUNT(*) AS n FROM shop.vip".to_owned(),
        "CREATE TRIGGER shop.orders_audit AFTER INSERT ON shop.orders FOR EACH ROW \
         INSERT INTO shop.audit VALUES (CONCAT('order ', NEW.id), '2026-01-02 00:00:00')"
            .to_owned(),
        "CREATE PROCEDURE shop.add_order(IN c INT, IN t DECIMAL(10,2)) \
         BEGIN INSERT INTO shop.orders (customer, total) VALUES (c, t); END"
            .to_owned(),
        "CREATE FUNCTION shop.net(g DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN g / 1.19".to_owned(),
        "CREATE EVENT shop.prune ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.audit WHERE at < '2000-01-01'".to_owned(),
        format!("CREATE USER 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}'"),
        "GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON shop.* TO 'app'@'%'".to_owned(),
        format!("CREATE USER 'reporter'@'10.%' IDENTIFIED BY '{REPORTER_PASSWORD}'"),
        "GRANT SELECT ON shop.customers TO 'reporter'@'10.%'".to_owned(),
        "GRANT EXECUTE ON FUNCTION shop.net TO 'reporter'@'10.%'".to_owned(),
        "CALL shop.add_order(1, 99.95)".to_owned(),
    ];
    for s in statements {
        // MariaDB's name for the same limit.
        let s = if s.starts_with("SET SESSION cte_max") && is_mariadb(conn).await {
            "SET SESSION max_recursive_iterations = 10000000".to_owned()
        } else {
            s
        };
        conn.query_drop(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Whether `conn` talks to MariaDB (rather than MySQL).
pub async fn is_mariadb(conn: &mut Conn) -> bool {
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.expect("version");
    version.unwrap_or_default().to_ascii_lowercase().contains("mariadb")
}

/// A derived table `n` of the numbers 1 to `count` in column `seq`.
pub fn numbers(count: u32) -> String {
    format!(
        "(WITH RECURSIVE n (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM n WHERE seq < {count}) SELECT seq FROM n) AS n"
    )
}

/// Every table but `shop.writes` (which the writer changes on the target after the switch).
pub const STABLE_TABLES: &str = "shop.customers, shop.audit, shop.orders, legacy.notes";

pub async fn checksums(conn: &mut Conn) -> Vec<(String, Option<u64>)> {
    conn.query(format!("CHECKSUM TABLE {STABLE_TABLES} EXTENDED"))
        .await
        .expect("checksum")
}

/// Definitions (views, routines, triggers, events, accounts and grants) as comparable text.
pub async fn definitions(conn: &mut Conn) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for q in [
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME, ':', VIEW_DEFINITION) FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ('shop','legacy') ORDER BY 1",
        "SELECT CONCAT(ROUTINE_SCHEMA, '.', ROUTINE_NAME, ':', ROUTINE_TYPE, ':', ROUTINE_DEFINITION) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop' ORDER BY 1",
        "SELECT CONCAT(TRIGGER_NAME, ':', ACTION_STATEMENT) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop' ORDER BY 1",
        "SELECT CONCAT(EVENT_NAME, ':', EVENT_DEFINITION, ':', STATUS) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop' ORDER BY 1",
    ] {
        let rows: Vec<String> = conn.query(q).await.expect("definitions");
        out.extend(rows);
    }
    for account in ["'app'@'%'", "'reporter'@'10.%'"] {
        let grants: Vec<String> = conn.query(format!("SHOW GRANTS FOR {account}")).await.expect("grants");
        out.extend(grants);
    }
    out
}

/// What the writer saw.
#[derive(Debug, Default)]
pub struct Written {
    /// Acknowledged writes: id → the last acknowledged value.
    pub acked: BTreeMap<u64, u64>,
    pub attempts: u64,
    pub failures: u64,
    /// The longest time without an acknowledged write.
    pub longest_gap: Duration,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Written>,
}

impl Writer {
    /// Inserts and updates through `port` (the relay, as sessions use the Service) as the application user,
    /// reconnecting after errors and retrying the same write (every write is idempotent).
    pub fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut w = Written::default();
            let mut conn: Option<Conn> = None;
            let mut last_ack = Instant::now();
            let mut step: u64 = 0;
            while !stopping.load(Ordering::SeqCst) {
                let (id, value, statement) = if step % 3 == 2 {
                    let id = step / 2;
                    (
                        id,
                        step,
                        format!("UPDATE shop.writes SET value = {step} WHERE id = {id} AND value < {step}"),
                    )
                } else {
                    (
                        step,
                        0,
                        format!("INSERT INTO shop.writes VALUES ({step}, 0) ON DUPLICATE KEY UPDATE id = id"),
                    )
                };
                let known = step % 3 != 2 || w.acked.contains_key(&id);
                if !known {
                    step += 1;
                    continue;
                }
                w.attempts += 1;
                if conn.is_none() {
                    conn = tokio::time::timeout(Duration::from_secs(2), connect(port, "app", APP_PASSWORD))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let result = match conn.as_mut() {
                    Some(c) => tokio::time::timeout(Duration::from_secs(5), c.query_drop(&statement))
                        .await
                        .map_err(|_| ())
                        .and_then(|r| r.map_err(|_| ())),
                    None => Err(()),
                };
                match result {
                    Ok(()) => {
                        let entry = w.acked.entry(id).or_insert(0);
                        *entry = (*entry).max(value);
                        w.longest_gap = w.longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                        step += 1;
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    Err(()) => {
                        w.failures += 1;
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            w
        });
        Writer { stop, task }
    }

    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer")
    }
}

/// Every acknowledged write is on `conn`'s server with at least its acknowledged value.
pub async fn assert_no_write_lost(conn: &mut Conn, written: &Written) {
    let rows: Vec<(u64, u64)> = conn
        .query("SELECT id, value FROM shop.writes")
        .await
        .expect("read writes");
    let present: BTreeMap<u64, u64> = rows.into_iter().collect();
    let lost: Vec<_> = written
        .acked
        .iter()
        .filter(|(id, value)| present.get(id).is_none_or(|v| v < value))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes are missing or stale, for example {lost:?}",
        written
            .acked
            .iter()
            .filter(|(id, v)| present.get(id).is_none_or(|p| p < v))
            .count(),
        written.acked.len()
    );
}
