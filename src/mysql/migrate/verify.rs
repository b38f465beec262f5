//! Per-table checksums compared between source and target while both hold still (source fenced, target caught
//! up and not yet writable).
//!
//! `CHECKSUM TABLE` runs at storage-engine speed but depends on the row format, so it is only comparable between
//! servers of the same family and major.minor version. Across versions the engine uses a row-by-row checksum
//! computed from the values themselves (slower: it makes the write outage longer).

use std::collections::BTreeMap;

use mysql_async::{Conn, prelude::Queryable};

use super::{MigrateError, catalog::Table, sql};
use crate::mysql::dialect::quote_identifier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Method {
    /// `CHECKSUM TABLE … EXTENDED`.
    ChecksumTable,
    /// Row count and XOR of 64-bit SHA-256 prefixes of every row's values, long values digested first (SHA2 is
    /// built into both engines; MySQL 9 moved MD5 and SHA1 into an optional component).
    RowDigest,
}

/// Chooses the method: `CHECKSUM TABLE` needs the same family and major.minor version on both sides.
pub fn method(source_version: &str, target_version: &str) -> Method {
    fn family_and_release(v: &str) -> (bool, String) {
        let release: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
        (v.to_ascii_lowercase().contains("mariadb"), release)
    }
    if family_and_release(source_version) == family_and_release(target_version) {
        Method::ChecksumTable
    } else {
        Method::RowDigest
    }
}

pub fn checksum_table_statement(tables: &[Table]) -> String {
    let names: Vec<String> = tables.iter().map(Table::qualified).collect();
    format!("CHECKSUM TABLE {} EXTENDED", names.join(", "))
}

/// Column types whose values can be longer than a server's `max_allowed_packet`: their digest is taken first, because
/// a server returns NULL for a `CONCAT` longer than its packet limit (and the two servers' limits may differ).
fn may_exceed_a_packet(data_type: &str) -> bool {
    let t = data_type.to_ascii_lowercase();
    t.contains("blob") || t.contains("text") || t == "json" || t == "geometry"
}

pub fn row_digest_statement(table: &Table) -> String {
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|(c, data_type)| {
            let c = quote_identifier(c);
            // Bytes, not characters: columns of different character sets (a latin1 TEXT's digest beside utf8mb4
            // values) cannot be concatenated as text ("illegal mix of collations").
            if may_exceed_a_packet(data_type) {
                format!("CAST(SHA2({c}, 256) AS BINARY)")
            } else {
                format!("CAST({c} AS BINARY)")
            }
        })
        .collect();
    let nulls: Vec<String> = table
        .columns
        .iter()
        .map(|(c, _)| format!("ISNULL({})", quote_identifier(c)))
        .collect();
    let row = if values.is_empty() {
        "''".to_owned()
    } else {
        format!("CONCAT_WS('#', {}, CONCAT({}))", values.join(", "), nulls.join(", "))
    };
    format!(
        "SELECT CONCAT(COUNT(*), '/', COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2({row}, 256), 16), 16, 10) AS UNSIGNED)), 0)) \
         FROM {}",
        table.qualified()
    )
}

/// Checksums of every table, by qualified name, as text.
pub async fn checksums(
    conn: &mut Conn,
    tables: &[Table],
    method: Method,
) -> Result<BTreeMap<String, String>, MigrateError> {
    let mut out = BTreeMap::new();
    if tables.is_empty() {
        return Ok(out);
    }
    match method {
        Method::ChecksumTable => {
            let rows: Vec<(String, Option<u64>)> = conn
                .query(checksum_table_statement(tables))
                .await
                .map_err(sql("checksumming tables"))?;
            // The server names tables `schema.table` in the order asked.
            for (table, (_, sum)) in tables.iter().zip(rows) {
                out.insert(
                    table.qualified(),
                    sum.map(|s| s.to_string()).unwrap_or_else(|| "missing".into()),
                );
            }
        }
        Method::RowDigest => {
            for table in tables {
                let sum: Option<String> = conn
                    .query_first(row_digest_statement(table))
                    .await
                    .map_err(sql("checksumming a table"))?;
                out.insert(table.qualified(), sum.unwrap_or_default());
            }
        }
    }
    Ok(out)
}

/// Tables whose checksums differ (or are missing on one side).
pub fn mismatches(source: &BTreeMap<String, String>, target: &BTreeMap<String, String>) -> Vec<String> {
    source
        .iter()
        .filter(|(table, sum)| target.get(*table) != Some(sum))
        .map(|(table, _)| table.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            schema: "shop".into(),
            name: "orders".into(),
            create: String::new(),
            columns: vec![("id".into(), "int".into()), ("note".into(), "text".into())],
            bytes: 0,
        }
    }

    #[test]
    fn checksum_table_only_between_equal_releases() {
        assert_eq!(
            method("10.11.6-MariaDB-0+deb12u1-log", "10.11.9-MariaDB"),
            Method::ChecksumTable
        );
        assert_eq!(method("10.11.6-MariaDB", "11.4.2-MariaDB"), Method::RowDigest);
        assert_eq!(method("8.4.3", "8.4.0"), Method::ChecksumTable);
        assert_eq!(method("8.0.36", "10.11.6-MariaDB"), Method::RowDigest);
    }

    #[test]
    fn statements() {
        assert_eq!(
            checksum_table_statement(&[table(), table()]),
            "CHECKSUM TABLE `shop`.`orders`, `shop`.`orders` EXTENDED"
        );
        let digest = row_digest_statement(&table());
        assert!(
            digest.contains(
                "CONCAT_WS('#', CAST(`id` AS BINARY), CAST(SHA2(`note`, 256) AS BINARY), CONCAT(ISNULL(`id`), ISNULL(`note`)))"
            )
                && digest.ends_with("FROM `shop`.`orders`"),
            "{digest}"
        );
    }

    #[test]
    fn mismatches_include_missing_tables() {
        let a: BTreeMap<String, String> = [("t1".into(), "1".into()), ("t2".into(), "2".into())].into();
        let b: BTreeMap<String, String> = [("t1".into(), "1".into())].into();
        assert_eq!(mismatches(&a, &b), vec!["t2".to_owned()]);
        assert!(mismatches(&a, &a).is_empty());
    }
}
