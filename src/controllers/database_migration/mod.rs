//! The DatabaseMigration controller: dereference (`dereference.rs`: database, networks, VPNs, other migrations; a
//! copy's Job and reports) → validate and decide (`decide.rs`, pure) → apply (a copy's server plan, report ConfigMap,
//! RBAC and Job, `copy.rs` builds them; once the database lives on the target network, complete and delete the
//! source network and its VPN connections) → status (`status.rs`: state, phase times, conditions, Events).
//!
//! The moves themselves are done by the other controllers, each the single writer of its own status: the
//! AppDatabase controller places a database on the target network of a migration in progress (new address, DNS
//! record), the VpnConnection controller makes the target's gateways relay it (and the source's stop), and both
//! PrivateNetworks show "Migration In Progress".

use std::{sync::Arc, time::Duration};

use crate::controllers::events::EventType;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
    runtime::{controller::Action, watcher},
};

use crate::{
    api::{
        AppDatabase, DatabaseMigration, DatabaseMigrationStatus, PrivateNetwork, VpnConnection,
        conditions::{self, READY},
        database_migration::{MigrationStrategy, state},
    },
    config::OperatorConfig,
    controllers::apply::{ApplyError, apply_status, read, reading_child},
    controllers::runtime::Kind,
    manager::ControllerContext,
    metrics::Metrics,
    migration::{Schedule, decide, loses_premises_access, parse_schedule},
};

pub mod copy;
mod decide;
mod dereference;
mod status;

use self::{
    decide::{before_start, copying, still_on, validate_spec},
    dereference::{CopyJob, observe_copy_job, observe_preconditions},
    status::Outcome,
};

use crate::database::{ServerPlan, copy_server_plan};

const NAME: &str = "databasemigration";
/// Condition warning that premises would lose access (the target network has no VPN connection yet).
pub const PREMISES_ACCESS: &str = "PremisesAccess";

/// Why a reconcile failed: one of the steps every kind has, or deleting the source network.
pub type Error = crate::controllers::error::ReconcileError<crate::controllers::error::StepFailed>;

/// Deleting the source network (and its VPN connections) once the database has left it failed.
fn deleting_the_source(source: kube::Error) -> Error {
    Error::Own(crate::controllers::error::StepFailed {
        label: "delete_source",
        doing: "deleting the source network",
        source,
    })
}

/// The DatabaseMigration controller as the manager runs it.
pub struct DatabaseMigrationController {
    config: Arc<OperatorConfig>,
    gauges: MigrationGauges,
}

/// `appdb_migrations{state}` and `appdb_migration_downtime_seconds`.
#[derive(Clone)]
struct MigrationGauges {
    by_state:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>,
    downtime: prometheus_client::metrics::histogram::Histogram,
}

impl DatabaseMigrationController {
    pub fn new(config: Arc<OperatorConfig>, metrics: &mut Metrics) -> Self {
        let gauges = MigrationGauges {
            by_state: Default::default(),
            downtime: prometheus_client::metrics::histogram::Histogram::new([0.0, 1.0, 5.0, 30.0, 120.0, 600.0]),
        };
        metrics
            .registry_mut()
            .register("migrations", "DatabaseMigrations by state", gauges.by_state.clone());
        metrics.registry_mut().register(
            "migration_downtime_seconds",
            "Measured interruption of completed migrations",
            gauges.downtime.clone(),
        );
        Self { config, gauges }
    }
}

/// What only this kind's reconcile keeps: its caches and metrics.
struct KindState {
    migrations: kube::runtime::reflector::Store<DatabaseMigration>,
    gauges: MigrationGauges,
}

type Context = crate::controllers::runtime::Context<KindState>;

/// Recounts migrations by state from the cache (cheap: one entry per migration).
fn count_states(ctx: &Context) {
    let mut counts: std::collections::BTreeMap<String, i64> = [
        state::SCHEDULED,
        state::MIGRATION_IN_PROGRESS,
        state::COMPLETED,
        state::FAILED,
    ]
    .iter()
    .map(|s| (s.to_string(), 0))
    .collect();
    for m in ctx.kind.migrations.state() {
        if let Some(s) = m.state() {
            *counts.entry(s.to_owned()).or_default() += 1;
        }
    }
    // Label values without spaces ("MigrationInProgress"): PromQL and most dashboards handle them better; the
    // human text stays in status.
    for (s, n) in counts {
        ctx.kind
            .gauges
            .by_state
            .get_or_create(&vec![("state".to_owned(), s.replace(' ', ""))])
            .set(n);
    }
}

impl Kind for DatabaseMigrationController {
    const NAME: &'static str = NAME;

    async fn serve(self, ctx: ControllerContext) {
        let client = ctx.client.clone();
        let controller = crate::controllers::runtime::lean_controller(Api::<DatabaseMigration>::all(client.clone()));
        let store = controller.store();
        let by_db = store.clone();
        let by_network = store.clone();
        let controller = controller
            .watches(
                Api::<AppDatabase>::all(client.clone()),
                watcher::Config::default(),
                move |db| {
                    let ns = db.namespace();
                    crate::controllers::runtime::related_in(&by_db, ns, |m| m.spec.database == db.name_any())
                },
            )
            .watches(
                Api::<PrivateNetwork>::all(client.clone()),
                watcher::Config::default(),
                move |n| {
                    let ns = n.namespace();
                    crate::controllers::runtime::related_in(&by_network, ns, |m| m.spec.target_network == n.name_any())
                },
            );
        crate::controllers::runtime::mark_synced_when_ready(store.clone(), ctx.synced.clone());
        let kind = KindState {
            migrations: store.clone(),
            gauges: self.gauges.clone(),
        };
        crate::controllers::runtime::serve(NAME, controller, ctx, self.config.clone(), kind, reconcile).await;
    }
}

async fn reconcile(m: Arc<DatabaseMigration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = advance(m.clone(), &ctx).await;
    count_states(&ctx);
    match result {
        // An object in the way of one the migration needs (its Job's identity): a person has to remove it; the
        // migration keeps its state and says so instead of retrying every few seconds.
        Err(Error::Apply(ApplyError::NameInUse(in_use))) => {
            let mut status = m.status.clone().unwrap_or_default();
            let state = m.state().unwrap_or(state::SCHEDULED).to_owned();
            let message = in_use.to_string();
            write(&ctx, &m, &mut status, Outcome::stalled(&state, "NameInUse", &message)).await?;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        other => other,
    }
}

async fn advance(m: Arc<DatabaseMigration>, ctx: &Context) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    let status = m.status.clone().unwrap_or_default();
    let copying = m.spec.effective_strategy() != MigrationStrategy::Readdress;
    match m.state() {
        Some(state::COMPLETED) | Some(state::FAILED) | Some(state::ROLLED_BACK) => Ok(Action::await_change()),
        Some(state::PREPARING) | Some(state::MIGRATION_IN_PROGRESS) if copying => {
            copy_progress(m, ctx, status, now).await
        }
        Some(state::MIGRATION_IN_PROGRESS) => finish_readdress(&m, ctx, status, now).await,
        _ => start_or_wait(&m, ctx, status, now).await,
    }
}

/// A readdressing migration under way: it completes once the database is Ready To Use on the target network, both
/// networks have shown "Migration In Progress" and every VPN connection of the target relays the database's new
/// address; then the source network goes as `spec.deleteSourceNetwork` says.
async fn finish_readdress(
    m: &DatabaseMigration,
    ctx: &Context,
    mut status: DatabaseMigrationStatus,
    now: jiff::Timestamp,
) -> Result<Action, Error> {
    let ns = m.namespace().unwrap_or_default();
    let db = Api::<AppDatabase>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&m.spec.database)
        .await
        .map_err(read("the AppDatabase"))?;
    let moved = db.as_ref().and_then(|d| d.status.as_ref()).is_some_and(|s| {
        s.network.as_deref() == Some(m.spec.target_network.as_str()) && conditions::is_true(&s.common.conditions, READY)
    });
    // Both networks must have shown the migration before it ends (the source may already be gone).
    let networks = Api::<PrivateNetwork>::namespaced(ctx.client.clone(), &ns);
    let mut shown = true;
    for name in [Some(m.spec.target_network.clone()), status.source_network.clone()]
        .into_iter()
        .flatten()
    {
        if let Some(n) = networks.get_opt(&name).await.map_err(read("a PrivateNetwork"))? {
            shown &= n.status.as_ref().and_then(|s| s.common.state.as_deref()) == Some(state::MIGRATION_IN_PROGRESS);
        }
    }
    // The target's gateways must relay the database at its new address before the source goes away.
    let new_address = db
        .as_ref()
        .and_then(|d| d.status.as_ref()?.endpoint.as_ref()?.address.clone());
    let mut relayed = true;
    if let Some(address) = &new_address {
        let vpns = Api::<VpnConnection>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(read("the VpnConnections"))?;
        relayed = vpns
            .items
            .iter()
            .filter(|v| v.spec.network == m.spec.target_network)
            .all(|v| v.relays(address));
    }
    if !moved || !shown || !relayed {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Sessions use the stable Service, which never changed: no interruption for them.
    status.downtime_seconds = Some(0.0);
    ctx.kind.gauges.downtime.observe(0.0);
    status.phase_times.insert("Completed".into(), now.to_string());
    let msg = format!("AppDatabase {} now lives on {}", m.spec.database, m.spec.target_network);
    complete(ctx, m, status, msg).await
}

/// Records the migration as Completed (saying whether the source network goes) and then deletes the source
/// network, as `spec.deleteSourceNetwork` and the other databases on it allow.
async fn complete(
    ctx: &Context,
    m: &DatabaseMigration,
    mut status: DatabaseMigrationStatus,
    msg: String,
) -> Result<Action, Error> {
    let (msg, delete) = source_to_delete(ctx, m, &status, msg).await?;
    write(ctx, m, &mut status, Outcome::done(state::COMPLETED, "Completed", &msg)).await?;
    if let Some(source) = delete {
        delete_source(ctx, m, &source).await?;
    }
    Ok(Action::await_change())
}

/// Not started: checks the schedule and the preconditions, and starts, waits for the scheduled time, or says what
/// blocks the start.
async fn start_or_wait(
    m: &DatabaseMigration,
    ctx: &Context,
    mut status: DatabaseMigrationStatus,
    now: jiff::Timestamp,
) -> Result<Action, Error> {
    let ns = m.namespace().unwrap_or_default();
    let strategy = m.spec.effective_strategy();
    let copying = strategy != MigrationStrategy::Readdress;
    let scheduled = match validate_spec(m, &ctx.config.allowed_images) {
        Ok(scheduled) => scheduled,
        Err((reason, message)) => {
            write(
                ctx,
                m,
                &mut status,
                Outcome::stalled(state::SCHEDULED, reason, &message),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    status.scheduled_for = scheduled.as_ref().map(Schedule::utc);
    status.scheduled_for_local = scheduled.as_ref().and_then(Schedule::local);
    let scheduled = scheduled.map(|s| s.at);
    let (observed, source_network) = observe_preconditions(m, ctx, &ns, copying).await?;
    let warning = loses_premises_access(&observed).then(|| {
        format!("the source network has VPN connections and {} has none: premises lose access to the database after the move", m.spec.target_network)
    });
    // Replicate seeds and follows the source ahead of time; the engine fences the source at the scheduled time.
    let start_at = if strategy == MigrationStrategy::Replicate {
        None
    } else {
        scheduled
    };
    let decision = decide(&m.spec.database, start_at, &observed, now);
    let next = before_start(m, decision, source_network, &mut status, now);
    write(
        ctx,
        m,
        &mut status,
        Outcome::running(next.state, next.reason, &next.message).warning(warning),
    )
    .await?;
    Ok(Action::requeue(next.look_again_in))
}

/// Whether a completed migration deletes its source network (`spec.deleteSourceNetwork`), and the completion message:
/// a source network where other databases still live is kept with its VPN connections (they still carry those
/// databases' traffic from the premises), and the message says so.
async fn source_to_delete(
    ctx: &Context,
    m: &DatabaseMigration,
    status: &DatabaseMigrationStatus,
    message: String,
) -> Result<(String, Option<String>), Error> {
    let Some(source) = status
        .source_network
        .clone()
        .filter(|s| m.spec.delete_source_network && *s != m.spec.target_network)
    else {
        return Ok((message, None));
    };
    let databases = Api::<AppDatabase>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default())
        .list(&ListParams::default())
        .await
        .map_err(read("the AppDatabases"))?;
    Ok(match still_on(&databases.items, &source, &m.spec.database) {
        others if others.is_empty() => (message, Some(source)),
        others => (
            format!(
                "{message}; PrivateNetwork {source} and its VPN connections are kept although deleteSourceNetwork is set: AppDatabase {} still lives there",
                others.join(", ")
            ),
            None,
        ),
    })
}

/// Deletes the source network and its VPN connections (after a migration that moved the database off it).
async fn delete_source(ctx: &Context, m: &DatabaseMigration, source: &str) -> Result<(), Error> {
    let ns = m.namespace().unwrap_or_default();
    let vpns: Api<VpnConnection> = Api::namespaced(ctx.client.clone(), &ns);
    for vpn in vpns
        .list(&ListParams::default())
        .await
        .map_err(read("the VpnConnections"))?
        .items
        .iter()
        .filter(|v| v.spec.network == source)
    {
        match vpns.delete(&vpn.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(deleting_the_source(e)),
        }
    }
    match Api::<PrivateNetwork>::namespaced(ctx.client.clone(), &ns)
        .delete(source, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(deleting_the_source(e)),
    }
    crate::controllers::runtime::publish(
        &ctx.recorder,
        &m.object_ref(&()),
        EventType::Normal,
        "SourceDeleted",
        format!("deleted PrivateNetwork {source} and its VPN connections"),
        "Migrate",
    )
    .await;
    Ok(())
}

/// Creates the migration Job (or, with `rollback`, the Job that only makes the source writable again) from the
/// database's current server to the new one; returns both servers.
async fn start_copy_job(
    ctx: &Context,
    m: &DatabaseMigration,
    db: &AppDatabase,
    copy: &crate::api::database_migration::CopyStatus,
    rollback: bool,
) -> Result<(ServerPlan, ServerPlan), Error> {
    let source = db
        .status
        .as_ref()
        .and_then(|s| s.server.as_ref())
        .map(ServerPlan::from_status)
        .unwrap_or_else(|| ServerPlan::from_spec(db));
    let target = copy_server_plan(db, &source, &copy.server, m.spec.target.as_ref());
    let mut job = copy::job(&copy::JobInputs {
        migration: m,
        database: db,
        source: &source,
        target: &target,
        strategy: m.spec.effective_strategy(),
        cutover_at: if rollback {
            None
        } else {
            m.spec
                .scheduled_at
                .as_deref()
                .and_then(|at| parse_schedule(at, m.spec.time_zone.as_deref()).ok())
                .map(|s| s.at)
        },
        operator_image: &ctx.config.operator_image,
        cluster_domain: &ctx.config.cluster_domain,
        rollback,
    });
    if let Some(spec) = job.spec.as_mut() {
        ctx.config.placement.place(&mut spec.template);
    }
    let jobs =
        Api::<k8s_openapi::api::batch::v1::Job>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    crate::controllers::apply::create_once(&jobs, &job, "the migration Job").await?;
    Ok((source, target))
}

/// No migration Job yet: it starts once the new server (created by the AppDatabase controller) is ready, with its
/// report ConfigMap and identity made first.
async fn start_copy(
    m: &DatabaseMigration,
    ctx: &Context,
    db: &AppDatabase,
    copy: &crate::api::database_migration::CopyStatus,
    mut status: DatabaseMigrationStatus,
) -> Result<Action, Error> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let ns = m.namespace().unwrap_or_default();
    let ready = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&copy.server)
        .await
        .map_err(read("the new server's StatefulSet"))?
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1;
    if !ready {
        let msg = format!("waiting for the new server {} to start", copy.server);
        write(
            ctx,
            m,
            &mut status,
            Outcome::running(state::PREPARING, "WaitingForServer", &msg),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    crate::controllers::apply::apply_child(
        &Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &copy::report_configmap(m),
        "the migration's report ConfigMap",
    )
    .await?;
    let (sa, role, binding) = copy::rbac(m);
    crate::controllers::apply::apply_child(
        &Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(ctx.client.clone(), &ns),
        &sa,
        "the migration ServiceAccount",
    )
    .await?;
    crate::controllers::apply::apply_child(
        &Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(ctx.client.clone(), &ns),
        &role,
        "the migration Role",
    )
    .await?;
    crate::controllers::apply::apply_child(
        &Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(ctx.client.clone(), &ns),
        &binding,
        "the migration RoleBinding",
    )
    .await?;
    let (source, target) = start_copy_job(ctx, m, db, copy, false).await?;
    let msg = format!("copying {} to {}", source.name, target.name);
    write(ctx, m, &mut status, Outcome::running(state::PREPARING, "Copying", &msg)).await?;
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// The engine has switched: the migration completes once the database serves from the new server.
async fn complete_copy(
    m: &DatabaseMigration,
    ctx: &Context,
    db: &AppDatabase,
    copy: &crate::api::database_migration::CopyStatus,
    mut status: DatabaseMigrationStatus,
    downtime: f64,
    now: jiff::Timestamp,
) -> Result<Action, Error> {
    let switched = db.status.as_ref().is_some_and(|s| {
        s.server.as_ref().is_some_and(|srv| srv.name == copy.server) && conditions::is_true(&s.common.conditions, READY)
    });
    if !switched {
        let msg = format!(
            "waiting for AppDatabase {} to serve from {}",
            m.spec.database, copy.server
        );
        write(
            ctx,
            m,
            &mut status,
            Outcome::running(state::MIGRATION_IN_PROGRESS, "Switching", &msg),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    status.downtime_seconds = Some(downtime);
    ctx.kind.gauges.downtime.observe(downtime);
    status.phase_times.insert("Completed".into(), now.to_string());
    let msg = format!(
        "AppDatabase {} now runs on {} (writes were refused for {downtime:.3}s)",
        m.spec.database, copy.server
    );
    complete(ctx, m, status, msg).await
}

/// The migration Job failed for good: make sure the source is writable again with a Job that only rolls back, and
/// say so; if that fails too, the migration fails with what a person has to run.
async fn roll_back(
    m: &DatabaseMigration,
    ctx: &Context,
    db: &AppDatabase,
    copy: &crate::api::database_migration::CopyStatus,
    mut status: DatabaseMigrationStatus,
    current_state: &str,
) -> Result<Action, Error> {
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let job_name = copy::job_name(m, false);
    // The engine could not finish (it is run again after every failure until the Job gives up): make sure
    // the source is writable again with a Job that only rolls back.
    let rollback_name = copy::job_name(m, true);
    let rollback = jobs
        .get_opt(&rollback_name)
        .await
        .map_err(reading_child("the rollback Job"))?;
    match rollback {
        None => {
            start_copy_job(ctx, m, db, copy, true).await?;
        }
        Some(job) if copy::failed(&job) => {
            let msg = format!(
                "the migration Job and its rollback failed; the source may still refuse writes: run \
                 `appdb-operator migrate --rollback` against it (see the logs of Job {job_name})"
            );
            write(
                ctx,
                m,
                &mut status,
                Outcome::stalled(state::FAILED, "RollbackFailed", &msg),
            )
            .await?;
            return Ok(Action::await_change());
        }
        Some(_) => {}
    }
    let msg = format!("the migration Job {job_name} failed; rolling back");
    write(
        ctx,
        m,
        &mut status,
        Outcome::running(current_state, "RollingBack", &msg),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// A copying migration under way: start the Job once the new server runs, fold its reports into status, roll
/// back when it fails for good, complete once the database's Service leads to the new server.
async fn copy_progress(
    m: Arc<DatabaseMigration>,
    ctx: &Context,
    mut status: DatabaseMigrationStatus,
    now: jiff::Timestamp,
) -> Result<Action, Error> {
    let ns = m.namespace().unwrap_or_default();
    let Some(copy) = status.copy.clone() else {
        let msg = "the migration lost track of its new server (status.copy is missing)";
        write(
            ctx,
            &m,
            &mut status,
            Outcome::stalled(state::FAILED, "CopyStateLost", msg),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let Some(db) = Api::<AppDatabase>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&m.spec.database)
        .await
        .map_err(read("the AppDatabase"))?
    else {
        let msg = format!("AppDatabase {} was deleted during the migration", m.spec.database);
        write(
            ctx,
            &m,
            &mut status,
            Outcome::stalled(state::FAILED, "DatabaseNotFound", &msg),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let current_state = m.state().unwrap_or(state::PREPARING).to_owned();
    let Some(CopyJob { job, reports }) = observe_copy_job(&m, ctx, &ns).await? else {
        return start_copy(&m, ctx, &db, &copy, status).await;
    };
    let folded = copy::fold(&copy.server, &reports);
    status.copy = Some(folded.copy.clone());
    status.phase_times.extend(folded.phase_times.clone());
    if let Some(reason) = &folded.rolled_back {
        status.phase_times.insert("RolledBack".into(), now.to_string());
        let msg = format!(
            "rolled back: {reason}; AppDatabase {} stays on its server and is writable",
            m.spec.database
        );
        write(
            ctx,
            &m,
            &mut status,
            Outcome::stalled(state::ROLLED_BACK, "RolledBack", &msg),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if let Some(downtime) = folded.done {
        return complete_copy(&m, ctx, &db, &copy, status, downtime, now).await;
    }
    if copy::failed(&job) {
        return roll_back(&m, ctx, &db, &copy, status, &current_state).await;
    }
    if folded.fenced {
        status
            .phase_times
            .entry("MigrationInProgress".into())
            .or_insert_with(|| now.to_string());
    }
    let (new_state, why, msg) = copying(&folded);
    write(ctx, &m, &mut status, Outcome::running(new_state, why, &msg)).await?;
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// Writes the status with `outcome` (server-side apply, only when it changed) and publishes the Event a new state
/// is worth.
async fn write(
    ctx: &Context,
    m: &DatabaseMigration,
    status: &mut DatabaseMigrationStatus,
    outcome: Outcome<'_>,
) -> Result<(), Error> {
    status::record(m, status, &outcome, jiff::Timestamp::now());
    if m.status.as_ref() == Some(status) {
        return Ok(());
    }
    apply_status(&ctx.client, m, status).await.map_err(Error::Status)?;
    if m.state() != Some(outcome.state) {
        let reason = outcome.state.replace(' ', "");
        let note = outcome.message.to_owned();
        crate::controllers::runtime::publish(
            &ctx.recorder,
            &m.object_ref(&()),
            EventType::Normal,
            &reason,
            note,
            "Migrate",
        )
        .await;
    }
    Ok(())
}
