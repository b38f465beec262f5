//! DatabaseMigration dereference: what the start of a migration depends on, and what a copy under way reports, each
//! read in one place.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Pod},
};
use kube::{Api, ResourceExt, api::ListParams};

use super::{Context, copy};
use crate::{
    api::{AppDatabase, DatabaseMigration, PrivateNetwork, VpnConnection},
    controllers::apply::{ReadError, read},
    migration::{Observed, report::PhaseReport},
};

/// Dereference for the start: the database and where it lives now, the target network, the database's other
/// migrations in flight, and the VPN connections of both networks.
pub(super) async fn observe_preconditions(
    m: &DatabaseMigration,
    ctx: &Context,
    ns: &str,
    copying: bool,
) -> Result<(Observed, Option<String>), ReadError> {
    let db = Api::<AppDatabase>::namespaced(ctx.client.clone(), ns)
        .get_opt(&m.spec.database)
        .await
        .map_err(read("the AppDatabase"))?;
    let target = Api::<PrivateNetwork>::namespaced(ctx.client.clone(), ns)
        .get_opt(&m.spec.target_network)
        .await
        .map_err(read("the target PrivateNetwork"))?;
    let migrations = Api::<DatabaseMigration>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(read("the DatabaseMigrations"))?;
    let vpns = Api::<VpnConnection>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(read("the VpnConnections"))?;
    let source_network = db.as_ref().map(|d| d.current_network().to_owned());
    let observed = Observed {
        database: db.as_ref().map(|d| {
            let ready = d.status.as_ref().and_then(|s| s.common.state.as_deref())
                == Some(crate::api::app_database::state::READY_TO_USE);
            (ready, source_network.clone().unwrap_or_default())
        }),
        target_network: m.spec.target_network.clone(),
        target: target.as_ref().map(|t| t.ready_block().is_some()),
        others_in_flight: migrations
            .items
            .iter()
            .filter(|o| o.name_any() != m.name_any() && o.in_flight_for(&m.spec.database))
            .map(|o| o.name_any())
            .collect(),
        source_vpns: vpns
            .items
            .iter()
            .filter(|v| Some(&v.spec.network) == source_network.as_ref())
            .count(),
        target_vpns: vpns
            .items
            .iter()
            .filter(|v| v.spec.network == m.spec.target_network)
            .count(),
        copies: copying,
        target_is_production: target.as_ref().is_some_and(|t| {
            t.status.as_ref().and_then(|s| s.network_type.as_ref())
                == Some(&crate::api::private_network::NetworkType::Production)
        }),
    };
    Ok((observed, source_network))
}

/// A copy's migration Job and the phases its pods reported.
pub(super) struct CopyJob {
    pub job: Job,
    pub reports: Vec<PhaseReport>,
}

/// Dereference for a copy under way: the migration Job, if it has been created, and what its pods reported through
/// the migration's report ConfigMap (the newest reporting pod wins).
pub(super) async fn observe_copy_job(
    m: &DatabaseMigration,
    ctx: &Context,
    ns: &str,
) -> Result<Option<CopyJob>, ReadError> {
    let Some(job) = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(&copy::job_name(m, false))
        .await
        .map_err(read("the migration Job"))?
    else {
        return Ok(None);
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}={}", copy::LABEL_MIGRATION, m.name_any())))
        .await
        .map_err(read("the migration Job's pods"))?;
    let reports = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(&copy::report_configmap_name(m))
        .await
        .map_err(read("the migration's report ConfigMap"))?;
    Ok(Some(CopyJob {
        job,
        reports: copy::reports_from(&pods.items, reports.as_ref()),
    }))
}
