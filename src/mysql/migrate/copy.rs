//! The seed: a consistent copy of one server's schemas, rows, views, routines, triggers, events and accounts
//! into an empty target, in parallel over several connections that share one snapshot.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use mysql_async::{Conn, prelude::Queryable};

use super::{
    MigrateError,
    catalog::{self, Catalog, Table},
    render::{InsertBuilder, ValueKind, insert_head, select_expression},
    sql,
};
use crate::mysql::dialect::{Dialect, quote_identifier};

/// Size of one multi-row INSERT (well under the servers' default `max_allowed_packet` of 16 MiB or more).
const STATEMENT_BYTES: usize = 1 << 20;

/// Settings every copying session uses on both sides: utf8mb4, UTC for TIMESTAMP columns, backslash escapes.
pub const SESSION_SETUP: &[&str] = &[
    "SET NAMES utf8mb4",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// Settings of the target's loading sessions: nothing is written to the target's binary log (replication starts
/// from the snapshot's position instead), and checks the source already made are skipped.
pub const LOAD_SETUP: &[&str] = &[
    "SET SESSION sql_log_bin = 0",
    "SET SESSION foreign_key_checks = 0",
    "SET SESSION unique_checks = 0",
];

pub async fn setup(conn: &mut Conn, statements: &[&str]) -> Result<(), MigrateError> {
    for s in statements {
        conn.query_drop(*s).await.map_err(sql("preparing a session"))?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Copied {
    pub rows: u64,
    pub bytes: u64,
}

/// Removes what a previous, interrupted seed left on the target: user schemas and the accounts about to be copied.
pub async fn wipe(target: &mut Conn, catalog: &Catalog) -> Result<(), MigrateError> {
    for schema in catalog::user_schemas(target).await? {
        target
            .query_drop(format!("DROP DATABASE {}", quote_identifier(&schema)))
            .await
            .map_err(sql("removing a partial copy"))?;
    }
    for a in &catalog.accounts {
        target
            .query_drop(a.drop_statement())
            .await
            .map_err(sql("replacing an account"))?;
    }
    Ok(())
}

async fn run_in(
    conn: &mut Conn,
    schema: &str,
    sql_mode: Option<&str>,
    create: &str,
    what: &'static str,
) -> Result<(), MigrateError> {
    conn.query_drop(format!("USE {}", quote_identifier(schema)))
        .await
        .map_err(sql(what))?;
    if let Some(mode) = sql_mode {
        conn.query_drop(format!(
            "SET SESSION sql_mode = {}",
            crate::mysql::admin::quote_literal(mode)
        ))
        .await
        .map_err(sql(what))?;
    }
    conn.query_drop(create).await.map_err(sql(what))
}

/// Schemas and tables, before the rows.
pub async fn create_tables(target: &mut Conn, catalog: &Catalog) -> Result<(), MigrateError> {
    for s in &catalog.schemas {
        target.query_drop(&s.create).await.map_err(sql("creating a schema"))?;
    }
    for t in &catalog.tables {
        run_in(target, &t.schema, None, &t.create, "creating a table").await?;
    }
    Ok(())
}

/// Accounts and roles first, then routines, triggers and events, and last views and grants together, in passes:
/// a view needs its definer's grants, and a grant may name a view. All after the rows, so that triggers do not
/// fire while loading.
pub async fn create_the_rest(
    target: &mut Conn,
    catalog: &Catalog,
    dialect: Dialect,
    replica: bool,
) -> Result<(), MigrateError> {
    // A MySQL account whose default role is not there yet fails: passes here too.
    let creates: Vec<(&str, &str)> = catalog.accounts.iter().map(|a| ("", a.create.as_str())).collect();
    in_passes(target, creates, "creating an account").await?;
    for r in catalog.routines.iter().chain(&catalog.triggers) {
        run_in(
            target,
            &r.schema,
            r.sql_mode.as_deref(),
            &r.create,
            "creating a routine or trigger",
        )
        .await?;
    }
    for e in &catalog.events {
        let d = &e.definition;
        run_in(target, &d.schema, d.sql_mode.as_deref(), &d.create, "creating an event").await?;
        if replica {
            // Events run on the primary only; promotion enables the ones that were enabled on the source.
            target
                .query_drop(dialect.disable_event_on_replica(&d.schema, &d.name, &e.definer))
                .await
                .map_err(sql("disabling an event on the replica"))?;
        }
    }
    let views_and_grants: Vec<(&str, &str)> = catalog
        .views
        .iter()
        .map(|v| (v.schema.as_str(), v.create.as_str()))
        .chain(
            catalog
                .accounts
                .iter()
                .flat_map(|a| a.grants.iter().map(|g| ("", g.as_str()))),
        )
        .collect();
    in_passes(target, views_and_grants, "creating views and granting privileges").await?;
    setup(target, SESSION_SETUP).await
}

/// Runs `(schema, statement)` pairs (an empty schema: none), again and again while some succeed: for statements
/// that depend on each other in an order the catalog does not give.
async fn in_passes(target: &mut Conn, mut pending: Vec<(&str, &str)>, what: &'static str) -> Result<(), MigrateError> {
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_error = None;
        for (schema, statement) in &pending {
            let result = if schema.is_empty() {
                target.query_drop(*statement).await.map_err(sql(what))
            } else {
                run_in(target, schema, None, statement, what).await
            };
            if let Err(e) = result {
                failed.push((*schema, *statement));
                last_error = Some(e);
            }
        }
        if failed.len() == pending.len() {
            return Err(last_error.unwrap_or_else(|| MigrateError::Unsupported(format!("{what} failed"))));
        }
        pending = failed;
    }
    Ok(())
}

/// Copies the rows of every table. `sources` are connections inside one consistent snapshot; each gets its own
/// target connection, and reading and writing overlap (one statement in flight per worker, a few buffered).
pub async fn copy_rows(
    sources: Vec<Conn>,
    targets: Vec<Conn>,
    tables: &[Table],
) -> Result<(Vec<Conn>, Copied), MigrateError> {
    let mut ordered: Vec<Table> = tables.to_vec();
    ordered.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    let queue = Arc::new(Mutex::new(VecDeque::from(ordered)));
    let mut workers = tokio::task::JoinSet::new();
    for (source, target) in sources.into_iter().zip(targets) {
        workers.spawn(copy_worker(source, target, queue.clone()));
    }
    let mut total = Copied::default();
    let mut conns = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (source, copied) = joined.map_err(|e| MigrateError::Copy(format!("a copy worker stopped: {e}")))??;
        total.rows += copied.rows;
        total.bytes += copied.bytes;
        conns.push(source);
    }
    Ok((conns, total))
}

async fn copy_worker(
    mut source: Conn,
    target: Conn,
    queue: Arc<Mutex<VecDeque<Table>>>,
) -> Result<(Conn, Copied), MigrateError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let writer = tokio::spawn(async move {
        let mut target = target;
        while let Some(statement) = rx.recv().await {
            target.query_drop(statement).await.map_err(sql("loading rows"))?;
        }
        let _ = target.disconnect().await;
        Ok::<(), MigrateError>(())
    });
    let mut copied = Copied::default();
    let result = async {
        loop {
            let next = queue
                .lock()
                .map_err(|_| MigrateError::Copy("queue poisoned".into()))?
                .pop_front();
            let Some(table) = next else { break };
            if table.columns.is_empty() {
                continue;
            }
            let names: Vec<String> = table.columns.iter().map(|(c, _)| c.clone()).collect();
            let kinds: Vec<ValueKind> = table.columns.iter().map(|(_, t)| ValueKind::of(t)).collect();
            let mut builder =
                InsertBuilder::new(insert_head(&table.schema, &table.name, &names), kinds, STATEMENT_BYTES);
            let select = format!(
                "SELECT {} FROM {}",
                table
                    .columns
                    .iter()
                    .map(|(c, t)| select_expression(c, t))
                    .collect::<Vec<_>>()
                    .join(", "),
                table.qualified()
            );
            let mut result = source.query_iter(select).await.map_err(sql("reading rows"))?;
            while let Some(row) = result.next().await.map_err(sql("reading rows"))? {
                let values = (0..row.len()).map(|i| match row.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
                    _ => None,
                });
                if let Some(statement) = builder.push_row(values) {
                    copied.bytes += statement.len() as u64;
                    if tx.send(statement).await.is_err() {
                        break;
                    }
                }
            }
            drop(result);
            if let Some(statement) = builder.finish() {
                copied.bytes += statement.len() as u64;
                if tx.send(statement).await.is_err() {
                    break;
                }
            }
            copied.rows += builder.rows();
        }
        Ok::<(), MigrateError>(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| MigrateError::Copy(format!("a loader stopped: {e}")))?;
    // A loading error explains a closed channel better than the reader's own result.
    written?;
    result?;
    Ok((source, copied))
}
