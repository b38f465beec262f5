//! PrivateNetwork dereference: which databases live on a network (from the reflector store: a slightly stale view
//! only delays a status line) and whether a migration in progress involves it (read live).

use kube::{Api, ResourceExt, api::ListParams};

use super::Context;
use crate::api::{DatabaseMigration, PrivateNetwork};
use crate::controllers::apply::{ReadError, read};

/// The databases of the network's namespace that live on it (not being deleted), by name, sorted.
pub(super) fn databases_on(ctx: &Context, network: &PrivateNetwork) -> Vec<String> {
    let ns = network.namespace().unwrap_or_default();
    let name = network.name_any();
    let mut found: Vec<String> = ctx
        .kind
        .databases
        .state()
        .iter()
        .filter(|db| db.namespace().as_deref() == Some(ns.as_str()) && db.metadata.deletion_timestamp.is_none())
        .filter(|db| db.current_network() == name)
        .map(|db| db.name_any())
        .collect();
    found.sort();
    found
}

/// Whether a migration in progress moves a database to or from the network: both networks say so.
pub(super) async fn in_migration(ctx: &Context, network: &PrivateNetwork) -> Result<bool, ReadError> {
    let migrations = Api::<DatabaseMigration>::namespaced(ctx.client.clone(), &network.namespace().unwrap_or_default())
        .list(&ListParams::default())
        .await
        .map_err(read("the DatabaseMigrations"))?
        .items;
    Ok(migrations.iter().any(|m| m.in_progress_on(&network.name_any())))
}
