//! AppDatabase dereference: what one reconcile reads before it decides anything.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, api::ListParams};

use super::{Context, validate::current_network};
use crate::{
    api::{AppDatabase, DatabaseMigration, PrivateNetwork},
    controllers::apply::{ReadError, read},
};

/// What one reconcile reads before deciding anything: the database's migrations (a migration in progress moves it
/// to its target network), that network, and the admin Secret.
pub(super) struct Observed {
    pub migrations: Vec<DatabaseMigration>,
    /// The target network of a migration in progress.
    pub moving_to: Option<String>,
    pub network_name: String,
    pub network: Option<PrivateNetwork>,
    pub secret: Option<Secret>,
}

pub(super) async fn dereference(db: &AppDatabase, ctx: &Context, ns: &str) -> Result<Observed, ReadError> {
    let migrations = Api::<DatabaseMigration>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(read("the DatabaseMigrations"))?
        .items;
    let moving_to = migrations
        .iter()
        .find(|m| m.spec.database == db.name_any() && m.in_progress())
        .map(|m| m.spec.target_network.clone());
    let network_name = moving_to.clone().unwrap_or_else(|| current_network(db));
    let network = Api::<PrivateNetwork>::namespaced(ctx.client.clone(), ns)
        .get_opt(&network_name)
        .await
        .map_err(read("the PrivateNetwork"))?;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&db.spec.admin.password_secret_ref.name)
        .await
        .map_err(read("the admin Secret"))?;
    Ok(Observed {
        migrations,
        moving_to,
        network_name,
        network,
        secret,
    })
}
