//! What a server holds besides rows: schemas, tables, views, routines, triggers, events and accounts, read as the
//! server's own `SHOW CREATE` text so the target gets exactly the same definitions.

use mysql_async::{Conn, Row, prelude::Queryable};

use super::{MigrateError, sql};
use crate::mysql::{
    admin::quote_literal,
    dialect::{Dialect, account, quote_identifier},
};

/// Schemas that belong to the server and are never copied. `appdb_migration` holds the engine's own progress.
pub const SYSTEM_SCHEMAS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "appdb_migration",
];

/// The replication account the engine creates on the source (never copied).
pub const REPLICATION_USER: &str = "appdb_replication";

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub schemas: Vec<Definition>,
    pub tables: Vec<Table>,
    pub views: Vec<Definition>,
    pub routines: Vec<Definition>,
    pub triggers: Vec<Definition>,
    pub events: Vec<Event>,
    pub accounts: Vec<Account>,
}

/// A `CREATE …` statement to run in `schema` with the `sql_mode` it was created under.
#[derive(Clone, Debug)]
pub struct Definition {
    pub schema: String,
    pub name: String,
    pub create: String,
    pub sql_mode: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub create: String,
    /// Stored (not generated) columns with their `DATA_TYPE`, in order.
    pub columns: Vec<(String, String)>,
    /// The server's size estimate, for scheduling the biggest tables first.
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub definition: Definition,
    pub enabled: bool,
    /// `user@host` as information_schema shows it: toggling an event with `ALTER EVENT` would make the engine's
    /// account its definer, so every toggle names this one.
    pub definer: String,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub host: String,
    /// A MariaDB role (created with `CREATE ROLE`, named without a host).
    pub role: bool,
    pub create: String,
    pub grants: Vec<String>,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_identifier(&self.schema), quote_identifier(&self.name))
    }
}

/// The `IN (…)` list of user schemas, or `None` when there are none.
fn schema_list(schemas: &[Definition]) -> Option<String> {
    (!schemas.is_empty()).then(|| {
        schemas
            .iter()
            .map(|s| quote_literal(&s.schema))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

pub fn user_schemas_query() -> String {
    let system: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote_literal(s)).collect();
    format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({}) ORDER BY SCHEMA_NAME",
        system.join(", ")
    )
}

/// Names of the user schemas on a server.
pub async fn user_schemas(conn: &mut Conn) -> Result<Vec<String>, MigrateError> {
    conn.query(user_schemas_query()).await.map_err(sql("listing schemas"))
}

async fn show_create(
    conn: &mut Conn,
    what: &'static str,
    statement: String,
    column: usize,
) -> Result<Row, MigrateError> {
    let row: Option<Row> = conn.query_first(statement).await.map_err(sql(what))?;
    let row = row.ok_or_else(|| MigrateError::Unsupported(format!("{what}: the server returned nothing")))?;
    if row.len() <= column {
        return Err(MigrateError::Unsupported(format!("{what}: unexpected answer")));
    }
    Ok(row)
}

fn text(row: &Row, column: usize) -> String {
    match row.as_ref(column) {
        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

type ColumnRow = (String, String, String, String, String);

fn columns_query(list: &str) -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA IN ({list}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    )
}

/// The stored (not generated) columns of one table with their `DATA_TYPE`.
fn stored_columns(columns: &[ColumnRow], schema: &str, table: &str) -> Vec<(String, String)> {
    columns
        .iter()
        .filter(|c| c.0 == schema && c.1 == table && !c.4.to_ascii_uppercase().contains("GENERATED"))
        .map(|c| (c.2.clone(), c.3.clone()))
        .collect()
}

/// Only the tables and their columns, without definitions: what the checksums under the fence need (two queries,
/// so the write outage does not pay for `SHOW CREATE` of every object).
pub async fn tables(conn: &mut Conn) -> Result<Vec<Table>, MigrateError> {
    let schemas = user_schemas(conn).await?;
    if schemas.is_empty() {
        return Ok(Vec::new());
    }
    let list = schemas.iter().map(|s| quote_literal(s)).collect::<Vec<_>>().join(", ");
    let listed: Vec<(String, String, Option<u64>)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(sql("listing tables"))?;
    let columns: Vec<ColumnRow> = conn.query(columns_query(&list)).await.map_err(sql("listing columns"))?;
    Ok(listed
        .into_iter()
        .map(|(schema, name, bytes)| Table {
            columns: stored_columns(&columns, &schema, &name),
            create: String::new(),
            bytes: bytes.unwrap_or(0),
            schema,
            name,
        })
        .collect())
}

/// Reads everything to copy. Run while writes and DDL are held (global read lock) so it matches the snapshot.
pub async fn read(conn: &mut Conn, dialect: Dialect) -> Result<Catalog, MigrateError> {
    let mut catalog = Catalog::default();
    for schema in user_schemas(conn).await? {
        let row = show_create(
            conn,
            "reading a schema",
            format!("SHOW CREATE DATABASE {}", quote_identifier(&schema)),
            1,
        )
        .await?;
        catalog.schemas.push(Definition {
            create: text(&row, 1),
            name: schema.clone(),
            schema,
            sql_mode: None,
        });
    }
    let Some(list) = schema_list(&catalog.schemas) else {
        catalog.accounts = read_accounts(conn, dialect).await?;
        return Ok(catalog);
    };
    let tables: Vec<(String, String, String, Option<u64>)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({list}) ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(sql("listing tables"))?;
    let columns: Vec<ColumnRow> = conn.query(columns_query(&list)).await.map_err(sql("listing columns"))?;
    for (schema, name, kind, bytes) in tables {
        let qualified = format!("{}.{}", quote_identifier(&schema), quote_identifier(&name));
        match kind.as_str() {
            "BASE TABLE" | "SYSTEM VERSIONED" => {
                let row = show_create(conn, "reading a table", format!("SHOW CREATE TABLE {qualified}"), 1).await?;
                let table_columns = stored_columns(&columns, &schema, &name);
                catalog.tables.push(Table {
                    create: text(&row, 1),
                    columns: table_columns,
                    bytes: bytes.unwrap_or(0),
                    schema,
                    name,
                });
            }
            "VIEW" => {
                let row = show_create(conn, "reading a view", format!("SHOW CREATE VIEW {qualified}"), 1).await?;
                catalog.views.push(Definition {
                    create: text(&row, 1),
                    schema,
                    name,
                    sql_mode: None,
                });
            }
            other => {
                return Err(MigrateError::Unsupported(format!(
                    "{schema}.{name} is a {other}, which the engine cannot copy"
                )));
            }
        }
    }
    let routines: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA IN ({list}) ORDER BY ROUTINE_SCHEMA, ROUTINE_NAME"
        ))
        .await
        .map_err(sql("listing routines"))?;
    for (schema, name, kind) in routines {
        if kind != "PROCEDURE" && kind != "FUNCTION" {
            return Err(MigrateError::Unsupported(format!(
                "{schema}.{name} is a {kind}, which the engine cannot copy"
            )));
        }
        let row = show_create(
            conn,
            "reading a routine",
            format!(
                "SHOW CREATE {kind} {}.{}",
                quote_identifier(&schema),
                quote_identifier(&name)
            ),
            2,
        )
        .await?;
        catalog.routines.push(Definition {
            sql_mode: Some(text(&row, 1)),
            create: text(&row, 2),
            schema,
            name,
        });
    }
    let triggers: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({list}) ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_ORDER"
        ))
        .await
        .map_err(sql("listing triggers"))?;
    for (schema, name) in triggers {
        let row = show_create(
            conn,
            "reading a trigger",
            format!(
                "SHOW CREATE TRIGGER {}.{}",
                quote_identifier(&schema),
                quote_identifier(&name)
            ),
            2,
        )
        .await?;
        catalog.triggers.push(Definition {
            sql_mode: Some(text(&row, 1)),
            create: text(&row, 2),
            schema,
            name,
        });
    }
    let events: Vec<(String, String, String, String)> = conn
        .query(format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME, STATUS, DEFINER FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA IN ({list}) ORDER BY EVENT_SCHEMA, EVENT_NAME"
        ))
        .await
        .map_err(sql("listing events"))?;
    for (schema, name, status, definer) in events {
        let row = show_create(
            conn,
            "reading an event",
            format!(
                "SHOW CREATE EVENT {}.{}",
                quote_identifier(&schema),
                quote_identifier(&name)
            ),
            3,
        )
        .await?;
        catalog.events.push(Event {
            definition: Definition {
                sql_mode: Some(text(&row, 1)),
                create: text(&row, 3),
                schema,
                name,
            },
            enabled: status == "ENABLED",
            definer,
        });
    }
    catalog.accounts = read_accounts(conn, dialect).await?;
    Ok(catalog)
}

async fn read_accounts(conn: &mut Conn, dialect: Dialect) -> Result<Vec<Account>, MigrateError> {
    let mut listed: Vec<(String, String, String)> = conn
        .query(dialect.accounts_query())
        .await
        .map_err(sql("listing accounts"))?;
    // Roles first (they are granted to the accounts that follow), then by name.
    listed.sort_by(|a, b| (a.2 != "Y", &a.0, &a.1).cmp(&(b.2 != "Y", &b.0, &b.1)));
    let mut accounts = Vec::new();
    for (user, host, is_role) in listed {
        if dialect.system_accounts().contains(&user.as_str()) || user == REPLICATION_USER {
            continue;
        }
        let mariadb_role = dialect == Dialect::MariaDb && is_role == "Y";
        let (create, name) = if mariadb_role {
            (format!("CREATE ROLE {}", quote_literal(&user)), quote_literal(&user))
        } else {
            let name = account(&user, &host);
            let create: Option<String> = conn
                .query_first(format!("SHOW CREATE USER {name}"))
                .await
                .map_err(sql("reading an account"))?;
            (create.unwrap_or_default(), name)
        };
        let grants: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {name}"))
            .await
            .map_err(sql("reading an account's grants"))?;
        accounts.push(Account {
            create,
            grants,
            user,
            host,
            role: mariadb_role,
        });
    }
    Ok(accounts)
}

impl Account {
    /// The statement that removes this account (or role) from a target before it is created again.
    pub fn drop_statement(&self) -> String {
        if self.role {
            format!("DROP ROLE IF EXISTS {}", quote_literal(&self.user))
        } else {
            format!("DROP USER IF EXISTS {}", account(&self.user, &self.host))
        }
    }
}
