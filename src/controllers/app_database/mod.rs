//! The AppDatabase controller: dereference (network, admin Secret, live children) → validate (references, password,
//! address) → build (ConfigMap, StatefulSet, Services, NetworkPolicy, DNSEndpoint, rotation Job) → apply (SSA) →
//! status ("Ready To Use" once the server answers queries).

pub mod build;
mod dereference;
pub mod dns;
pub mod status;
pub mod validate;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::controllers::events::EventType;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        batch::v1::Job,
        core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service},
        networking::v1::NetworkPolicy,
        rbac::v1::{Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use self::{
    build::{
        BuildInputs, build, dns_endpoint, dns_endpoint_resource, root_secret, rotation_job, rotation_job_name,
        tunnel_access_name, tunnel_binding, tunnel_role,
    },
    dereference::{Observed, dereference},
    status::{Dns, Phase, build_status},
    validate::{Invalid, Tenant, Valid, current_network, plan_addresses, validate_on},
};
use crate::{
    api::{AppDatabase, PrivateNetwork, app_database::DeletionPolicy},
    config::OperatorConfig,
    controllers::apply::{
        ApplyError, apply_child, apply_status, applying, create_once, get_owned, read, reading_child,
    },
    controllers::runtime::{Kind, with_finalizer},
    database::{ServerPlan, copy_server_plan, names},
    manager::ControllerContext,
    names::{ANNOTATION_DNS_DOMAINS, ANNOTATION_SECRET_REVISION, FINALIZER_DATABASE_CLEANUP, LABEL_DATABASE},
};

const NAME: &str = "appdatabase";
const DNS_CRD: &str = "dnsendpoints.externaldns.k8s.io";

/// Why a reconcile failed: one of the steps every kind has, or cleaning up.
pub type Error = crate::controllers::error::ReconcileError<crate::controllers::error::StepFailed>;

/// Removing what a deleted database leaves outside its owner references failed.
fn cleaning_up(source: kube::Error) -> Error {
    Error::Own(crate::controllers::error::StepFailed {
        label: "cleanup",
        doing: "cleaning up",
        source,
    })
}

/// The AppDatabase controller as the manager runs it.
pub struct AppDatabaseController {
    config: Arc<OperatorConfig>,
}

impl AppDatabaseController {
    pub fn new(config: Arc<OperatorConfig>) -> Self {
        Self { config }
    }
}

/// What only this kind's reconcile keeps: its caches and metrics.
struct KindState {
    databases: Store<AppDatabase>,
    /// Whether ExternalDNS's CRD is installed, looked up at most once a minute.
    dns_crd: Mutex<Option<(Instant, bool)>>,
}

type Context = crate::controllers::runtime::Context<KindState>;

impl Kind for AppDatabaseController {
    const NAME: &'static str = NAME;

    async fn serve(self, ctx: ControllerContext) {
        let client = ctx.client.clone();
        let managed = crate::controllers::runtime::made_by_the_operator();
        let controller = crate::controllers::runtime::lean_controller(Api::<AppDatabase>::all(client.clone()));
        let store = controller.store();
        let by_secret = store.clone();
        let by_network = store.clone();
        let by_namespace = store.clone();
        let controller = controller
            .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
            .owns(Api::<Job>::all(client.clone()), managed)
            // A migration starting or ending moves the database.
            .watches(
                Api::<crate::api::DatabaseMigration>::all(client.clone()),
                watcher::Config::default(),
                |m| Some(ObjectRef::new(&m.spec.database).within(&m.namespace().unwrap_or_default())),
            )
            // A changed admin Secret: validation again, and password rotation.
            .watches_stream(
                crate::controllers::runtime::secret_changes(client.clone()),
                move |secret| {
                    let ns = secret.namespace();
                    // The root Secret's name too: one in the way (`NameInUse`) being deleted frees the database.
                    crate::controllers::runtime::related_in(&by_secret, ns, |db| {
                        db.spec.admin.password_secret_ref.name == secret.name_any()
                            || names(db).root_secret == secret.name_any()
                    })
                },
            )
            // The platform changing a namespace's DNS domains: its databases' names are checked again at once.
            .watches(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
                move |namespace| {
                    crate::controllers::runtime::related_in(&by_namespace, Some(namespace.name_any()), |db| {
                        db.spec.dns.is_some()
                    })
                },
            )
            // A network turning ready (or going away).
            .watches(
                Api::<PrivateNetwork>::all(client.clone()),
                watcher::Config::default(),
                move |network| {
                    let ns = network.namespace();
                    crate::controllers::runtime::related_in(&by_network, ns, |db| {
                        current_network(db) == network.name_any()
                    })
                },
            );
        crate::controllers::runtime::mark_synced_when_ready(store.clone(), ctx.synced.clone());
        let kind = KindState {
            databases: store,
            dns_crd: Mutex::new(None),
        };
        crate::controllers::runtime::serve(NAME, controller, ctx, self.config.clone(), kind, reconcile).await;
    }
}

async fn reconcile(db: Arc<AppDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        &ctx.client,
        FINALIZER_DATABASE_CLEANUP,
        db,
        |o| reconcile_live(o, &ctx),
        |o| cleanup(o, &ctx),
    )
    .await
}

async fn dns_crd_installed(ctx: &Context) -> Result<bool, Error> {
    // A missing CRD is looked up again sooner than a present one: installing ExternalDNS should take effect soon.
    if let Some((at, present)) = *ctx.kind.dns_crd.lock().unwrap_or_else(|e| e.into_inner())
        && at.elapsed() < Duration::from_secs(if present { 60 } else { 10 })
    {
        return Ok(present);
    }
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let present = crds
        .get_opt(DNS_CRD)
        .await
        .map_err(read("the DNSEndpoint CRD"))?
        .is_some();
    *ctx.kind.dns_crd.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), present));
    Ok(present)
}

/// Whether the database may publish its DNS name: under its namespace's allowed domains, and not held by another.
async fn dns_permission(ctx: &Context, db: &AppDatabase) -> Result<Result<(), dns::DnsRefusal>, Error> {
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&db.namespace().unwrap_or_default())
        .await
        .map_err(read("the Namespace"))?;
    let annotation = namespace
        .as_ref()
        .and_then(|n| n.annotations().get(ANNOTATION_DNS_DOMAINS).cloned());
    let domains = dns::allowed_domains(annotation.as_deref(), &ctx.config.dns_domains);
    let all = ctx.kind.databases.state();
    Ok(dns::check(db, &domains, all.iter().map(|d| d.as_ref())))
}

/// Applies the database, and reports an object in the way of one of its children as `NameInUse` (no retry storm: the
/// object has to go first, which takes a person).
async fn reconcile_live(db: Arc<AppDatabase>, ctx: &Context) -> Result<Action, Error> {
    match steps(db.clone(), ctx).await {
        Err(Error::Apply(ApplyError::NameInUse(in_use))) => {
            let ns = db.namespace().unwrap_or_default();
            let host = format!("{}.{ns}.svc.{}", names(&db).client, ctx.config.cluster_domain);
            let dns = if db.spec.dns.is_some() {
                Dns::Waiting
            } else {
                Dns::NotRequested
            };
            let revision = db.status.as_ref().and_then(|s| s.admin_password_revision.clone());
            let servers = status::Servers::recorded(&db);
            write_status(
                ctx,
                &db,
                &Phase::Invalid(Invalid::NameInUse(in_use)),
                host,
                &dns,
                revision,
                servers,
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        other => other,
    }
}

async fn steps(db: Arc<AppDatabase>, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let observed = dereference(&db, ctx, &ns).await?;
    let host = format!("{}.{ns}.svc.{}", names(&db).client, ctx.config.cluster_domain);
    let valid = match validate(&db, &observed, &ctx.config.allowed_images) {
        Ok(v) => v,
        Err(invalid) => return report_invalid(ctx, &db, invalid, host).await,
    };
    ensure_root_secret(&db, ctx, &ns).await?;
    let plan = plan_servers(
        &db,
        &observed.migrations,
        jiff::Timestamp::now(),
        ctx.config.rollback_window,
    );
    let ready = apply_servers(&db, ctx, &ns, &valid.network, &plan).await?;
    apply_tunnel_access(&db, ctx, &ns, &plan.run).await?;
    retire_servers(&db, ctx, &ns, &plan).await?;
    let servers = plan.recorded.clone();
    let tenants = tenants(&ctx.kind.databases.state(), &db, &valid.network);
    let Some(address) = plan_addresses(valid.block, &tenants).get(&db.name_any()).copied() else {
        let phase = Phase::Invalid(Invalid::NoAddressLeft(valid.network.clone()));
        write_status(ctx, &db, &phase, host, &Dns::NotRequested, None, servers).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let dns = publish_dns(&db, ctx, &ns, address, ready).await?;
    let mut revision = db.status.as_ref().and_then(|s| s.admin_password_revision.clone());
    let mut rotating = false;
    if ready {
        (revision, rotating) = rotate_password(&db, ctx, &ns, &valid.secret_revision, revision).await?;
    }
    let phase = match ready {
        true => Phase::Ready {
            network: valid.network.clone(),
            address,
            rotating,
            migrating: observed.moving_to.is_some(),
        },
        false => Phase::Creating { network: valid.network },
    };
    write_status(ctx, &db, &phase, host, &dns, revision, servers).await?;
    Ok(Action::requeue(requeue_after(
        &db,
        &plan,
        &phase,
        &dns,
        jiff::Timestamp::now(),
    )))
}

/// Validate (pure): the image against the allowed list, then the network and the admin Secret as dereferenced.
fn validate(db: &AppDatabase, observed: &Observed, allowed_images: &[String]) -> Result<Valid, Invalid> {
    if let Some(image) = db.spec.image.as_deref() {
        crate::image_policy::check(image, allowed_images).map_err(Invalid::ImageNotAllowed)?;
    }
    validate_on(
        db,
        &observed.network_name,
        observed.network.as_ref(),
        observed.secret.as_ref(),
    )
}

/// Says in the status why the database cannot be built, keeping what it recorded of its servers and password.
async fn report_invalid(ctx: &Context, db: &AppDatabase, invalid: Invalid, host: String) -> Result<Action, Error> {
    let transient = invalid.is_transient();
    let dns = if db.spec.dns.is_some() {
        Dns::Waiting
    } else {
        Dns::NotRequested
    };
    let revision = db.status.as_ref().and_then(|s| s.admin_password_revision.clone());
    let servers = status::Servers::recorded(db);
    write_status(ctx, db, &Phase::Invalid(invalid), host, &dns, revision, servers).await?;
    // Watches on the Secret and the network bring the next reconcile; the requeue is only a safety net.
    Ok(Action::requeue(Duration::from_secs(if transient { 15 } else { 300 })))
}

/// The root password is generated once and never regenerated. A Secret with the root Secret's name that the
/// operator did not make (a customer's pre-seeded password) is never taken as the root password.
async fn ensure_root_secret(db: &AppDatabase, ctx: &Context, ns: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let uid = db.uid().unwrap_or_default();
    if get_owned(&secrets, &names(db).root_secret, &uid, "the root Secret")
        .await?
        .is_none()
    {
        create_once(&secrets, &root_secret(db, crate::secret::random(32)), "the root Secret").await?;
    }
    Ok(())
}

/// Builds and applies every server of the plan, the client Service and the NetworkPolicy. Returns whether the
/// serving server has a ready pod.
async fn apply_servers(
    db: &AppDatabase,
    ctx: &Context,
    ns: &str,
    network: &str,
    plan: &ServerPlanning,
) -> Result<bool, Error> {
    let client = &ctx.client;
    let mut desired = build(&BuildInputs {
        db,
        network,
        servers: &plan.run,
        serving: &plan.serving.name,
    });
    for server in &mut desired.servers {
        ctx.config.placement.place(&mut server.statefulset.spec.template);
    }
    let mut ready = false;
    for server in &desired.servers {
        apply_child(
            &Api::<ConfigMap>::namespaced(client.clone(), ns),
            &server.config,
            "the ConfigMap",
        )
        .await?;
        apply_child(
            &Api::<Service>::namespaced(client.clone(), ns),
            &server.headless,
            "the headless Service",
        )
        .await?;
        let live_sts = apply_child(
            &Api::<StatefulSet>::namespaced(client.clone(), ns),
            &server.statefulset,
            "the StatefulSet",
        )
        .await?;
        if server.statefulset.metadata.name.as_deref() == Some(plan.serving.name.as_str()) {
            ready = live_sts
                .and_then(|s| s.status)
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= 1;
        }
    }
    apply_child(
        &Api::<Service>::namespaced(client.clone(), ns),
        &desired.client,
        "the client Service",
    )
    .await?;
    apply_child(
        &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        &desired.policy,
        "the NetworkPolicy",
    )
    .await?;
    Ok(ready)
}

/// Tunnel access for the users and groups the database lists. Without a list, a binding left from an earlier one is
/// emptied (access revoked at once), never left behind.
async fn apply_tunnel_access(db: &AppDatabase, ctx: &Context, ns: &str, servers: &[ServerPlan]) -> Result<(), Error> {
    let bindings = Api::<RoleBinding>::namespaced(ctx.client.clone(), ns);
    if db.spec.tunnel.is_some() {
        let role = tunnel_role(db, servers);
        apply_child(
            &Api::<Role>::namespaced(ctx.client.clone(), ns),
            &role,
            "the tunnel Role",
        )
        .await?;
        apply_child(&bindings, &tunnel_binding(db), "the tunnel RoleBinding").await?;
    } else if bindings
        .get_opt(&tunnel_access_name(db))
        .await
        .map_err(reading_child("the tunnel RoleBinding"))?
        .is_some()
    {
        apply_child(&bindings, &tunnel_binding(db), "the tunnel RoleBinding").await?;
    }
    Ok(())
}

/// Deletes the servers whose rollback window has passed (or an unfinished copy) and announces a switch of the
/// Service to a new server.
async fn retire_servers(db: &AppDatabase, ctx: &Context, ns: &str, plan: &ServerPlanning) -> Result<(), Error> {
    for name in &plan.delete {
        if !delete_server(&ctx.client, ns, name).await? {
            continue;
        }
        publish(
            ctx,
            db,
            EventType::Normal,
            "ServerRetired",
            &format!("deleted the server {name} (a retired server after its rollback window, or an unfinished copy)"),
        )
        .await;
    }
    if plan.switched {
        publish(
            ctx,
            db,
            EventType::Normal,
            "ServerSwitched",
            &format!("the database's Service now leads to {}", plan.serving.name),
        )
        .await;
    }
    Ok(())
}

/// The databases that share `network` with `db` (from the controller's cache, `db` itself as read now), each with
/// its creation time and the address it holds there: the address plan's input.
fn tenants(databases: &[Arc<AppDatabase>], db: &AppDatabase, network: &str) -> Vec<Tenant> {
    let ns = db.namespace();
    databases
        .iter()
        .filter(|d| d.namespace() == ns && d.metadata.deletion_timestamp.is_none())
        .filter(|d| current_network(d) == network)
        .map(|d| Tenant {
            name: d.name_any(),
            created: d.creation_timestamp().map(|t| t.0.to_string()).unwrap_or_default(),
            address: d
                .status
                .as_ref()
                .filter(|s| s.network.as_deref() == Some(network))
                .and_then(|s| s.endpoint.as_ref()?.address.as_ref()?.parse().ok()),
        })
        .chain(std::iter::once(Tenant {
            name: db.name_any(),
            created: db.creation_timestamp().map(|t| t.0.to_string()).unwrap_or_default(),
            address: db
                .status
                .as_ref()
                .and_then(|s| s.endpoint.as_ref()?.address.as_ref()?.parse().ok()),
        }))
        .fold(Vec::new(), |mut acc: Vec<Tenant>, t| {
            if !acc.iter().any(|a| a.name == t.name) {
                acc.push(t);
            }
            acc
        })
}

/// The DNS record of `spec.dns`, published once the server is ready, where the namespace may use the name and the
/// DNSEndpoint kind is installed.
async fn publish_dns(
    db: &AppDatabase,
    ctx: &Context,
    ns: &str,
    address: std::net::Ipv4Addr,
    ready: bool,
) -> Result<Dns, Error> {
    Ok(match &db.spec.dns {
        None => Dns::NotRequested,
        Some(_) if let Err(refusal) = dns_permission(ctx, db).await? => Dns::Refused(refusal),
        Some(_) if !dns_crd_installed(ctx).await? => Dns::CrdMissing,
        Some(_) if !ready => Dns::Waiting,
        Some(spec) => {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &dns_endpoint_resource());
            apply_child(&api, &dns_endpoint(db, &spec.hostname, address), "the DNSEndpoint").await?;
            Dns::Published(spec.hostname.clone())
        }
    })
}

/// Brings the running server's admin password to the Secret's value: the first start created the administrator
/// with the Secret's value of that time; a later change runs a rotation Job. Returns the revision the server has
/// and whether a rotation is under way.
async fn rotate_password(
    db: &AppDatabase,
    ctx: &Context,
    ns: &str,
    secret_revision: &str,
    revision: Option<String>,
) -> Result<(Option<String>, bool), Error> {
    match revision.as_deref() {
        None => return Ok((Some(secret_revision.to_owned()), false)),
        Some(r) if r == secret_revision => return Ok((revision, false)),
        Some(_) => {}
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let job_name = rotation_job_name(db, secret_revision);
    match jobs
        .get_opt(&job_name)
        .await
        .map_err(reading_child("the rotation Job"))?
    {
        None => {
            let mut job = rotation_job(
                db,
                secret_revision,
                &ctx.config.operator_image,
                &ctx.config.cluster_domain,
            );
            if let Some(spec) = job.spec.as_mut() {
                ctx.config.placement.place(&mut spec.template);
            }
            create_once(&jobs, &job, "the rotation Job").await?;
            Ok((revision, true))
        }
        Some(job) if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1 => {
            publish(
                ctx,
                db,
                EventType::Normal,
                "PasswordRotated",
                "the admin password now matches its Secret",
            )
            .await;
            Ok((job.annotations().get(ANNOTATION_SECRET_REVISION).cloned(), false))
        }
        Some(_) => Ok((revision, true)),
    }
}

/// When to look again (pure): when a retired server's rollback window ends, soon while something is under way,
/// within a minute when an unwatched cause may clear, else a spread resync.
fn requeue_after(db: &AppDatabase, plan: &ServerPlanning, phase: &Phase, dns: &Dns, now: jiff::Timestamp) -> Duration {
    let retire_in = plan
        .recorded
        .retired
        .as_ref()
        .and_then(|r| r.delete_after.parse::<jiff::Timestamp>().ok())
        .map(|t| Duration::from_secs((t.as_second() - now.as_second()).clamp(1, 600) as u64));
    let action = match (phase, dns) {
        (_, Dns::CrdMissing) => Duration::from_secs(30),
        // Cleared by another database giving the name up, or the platform annotating the namespace: neither is
        // watched, so look again within a minute.
        (_, Dns::Refused(_)) => Duration::from_secs(60),
        (Phase::Ready { rotating: false, .. }, _) => {
            crate::controllers::runtime::spread(Duration::from_secs(600), db.uid().as_deref())
        }
        _ => Duration::from_secs(10),
    };
    retire_in.map_or(action, |r| r.min(action))
}

async fn publish(ctx: &Context, db: &AppDatabase, type_: EventType, reason: &str, note: &str) {
    crate::controllers::runtime::publish(
        &ctx.recorder,
        &db.object_ref(&()),
        type_,
        reason,
        note.to_owned(),
        "Reconcile",
    )
    .await;
}

/// The servers of a database at this moment (pure).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerPlanning {
    /// The server the client Service leads to.
    pub serving: ServerPlan,
    /// Every server to keep running (applied).
    pub run: Vec<ServerPlan>,
    /// Retired servers whose rollback window has passed.
    pub delete: Vec<String>,
    /// What the status records afterwards.
    pub recorded: status::Servers,
    /// The Service switches to a new server in this reconcile.
    pub switched: bool,
}

/// Decides which servers run: the serving one (from the status once a copy has taken over, else the spec's), the
/// new server of a copying migration under way, and the switch once that migration's engine has promoted it.
pub fn plan_servers(
    db: &AppDatabase,
    migrations: &[crate::api::DatabaseMigration],
    now: jiff::Timestamp,
    rollback_window: Duration,
) -> ServerPlanning {
    use crate::api::database_migration::state as mstate;
    let mut recorded = status::Servers::recorded(db);
    let mut serving = recorded
        .server
        .as_ref()
        .map(ServerPlan::from_status)
        .unwrap_or_else(|| ServerPlan::from_spec(db));
    let mut run = Vec::new();
    let mut delete = Vec::new();
    let mut switched = false;
    for m in migrations.iter().filter(|m| m.spec.database == db.name_any()) {
        let Some(status) = &m.status else { continue };
        let Some(copy) = &status.copy else { continue };
        let state = status.common.state.as_deref();
        if copy.server == serving.name {
            continue;
        }
        if matches!(state, Some(mstate::ROLLED_BACK | mstate::FAILED)) {
            // The source stayed authoritative: the unfinished copy goes (its volume is kept).
            delete.push(copy.server.clone());
            continue;
        }
        if copy.promoted() && (m.in_flight() || state == Some(mstate::COMPLETED)) {
            let new = copy_server_plan(db, &serving, &copy.server, m.spec.target.as_ref());
            let delete_after =
                jiff::Timestamp::from_second(now.as_second() + rollback_window.as_secs() as i64).unwrap_or(now);
            recorded.retired = Some(crate::api::app_database::RetiredServer {
                name: serving.name.clone(),
                delete_after: delete_after.to_string(),
            });
            recorded.server = Some(new.to_status());
            run.push(serving.clone());
            serving = new;
            switched = true;
        } else if m.in_flight() {
            run.push(copy_server_plan(db, &serving, &copy.server, m.spec.target.as_ref()));
        }
    }
    if let Some(retired) = &recorded.retired {
        let due = retired.delete_after.parse::<jiff::Timestamp>().is_ok_and(|t| now >= t);
        if due {
            delete.push(retired.name.clone());
            recorded.retired = None;
        }
    }
    // A retired server keeps running as it is (never re-applied) until it is deleted; it was only re-applied above
    // in the reconcile that switched away from it.
    run.retain(|s| s.name != serving.name && !delete.contains(&s.name));
    run.insert(0, serving.clone());
    ServerPlanning {
        serving,
        run,
        delete,
        recorded,
        switched,
    }
}

/// Deletes a server's StatefulSet, headless Service and ConfigMap (its volume is kept: StatefulSets leave their
/// claims behind). Returns whether the StatefulSet was still there.
async fn delete_server(client: &Client, ns: &str, name: &str) -> Result<bool, Error> {
    let dp = kube::api::DeleteParams::default();
    let gone = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(applying("a retired server")(e)),
    };
    let plan = ServerPlan {
        name: name.to_owned(),
        image: String::new(),
        storage: crate::api::app_database::Storage {
            size: String::new(),
            storage_class_name: None,
        },
    };
    let existed = gone(
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    )?;
    gone(
        Api::<Service>::namespaced(client.clone(), ns)
            .delete(&plan.headless(), &dp)
            .await
            .map(|_| ()),
    )?;
    gone(
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .delete(&plan.config(), &dp)
            .await
            .map(|_| ()),
    )?;
    Ok(existed)
}

async fn write_status(
    ctx: &Context,
    db: &AppDatabase,
    phase: &Phase,
    host: String,
    dns: &Dns,
    revision: Option<String>,
    servers: status::Servers,
) -> Result<(), Error> {
    let new_status = build_status(db, phase, host, dns, revision, servers, jiff::Timestamp::now());
    if db.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    apply_status(&ctx.client, db, &new_status)
        .await
        .map_err(Error::Status)?;
    let old_state = db.status.as_ref().and_then(|s| s.common.state.clone());
    if old_state != new_status.common.state {
        let state = new_status.common.state.clone().unwrap_or_default();
        let (type_, reason, note) = match phase {
            Phase::Invalid(why) => (
                if why.is_transient() {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                why.reason(),
                why.to_string(),
            ),
            Phase::Creating { network } => (
                EventType::Normal,
                "Creating",
                format!("creating the database on network {network}"),
            ),
            Phase::Ready {
                address,
                migrating: true,
                ..
            } => (
                EventType::Normal,
                "MigrationInProgress",
                format!("{state}: VPN address {address}"),
            ),
            Phase::Ready { address, .. } => (
                EventType::Normal,
                "ReadyToUse",
                format!("{state}: VPN address {address}"),
            ),
        };
        publish(ctx, db, type_, reason, &note).await;
    }
    Ok(())
}

async fn cleanup(db: Arc<AppDatabase>, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{LABEL_DATABASE}={}", db.name_any());
    let claims = pvcs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(cleaning_up)?
        .items;
    match db.spec.deletion_policy {
        DeletionPolicy::Delete => {
            for claim in &claims {
                match pvcs.delete(&claim.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(cleaning_up(e)),
                }
            }
            publish(
                ctx,
                &db,
                EventType::Normal,
                "DataDeleted",
                "deletionPolicy Delete: the data volume is deleted with the database",
            )
            .await;
        }
        DeletionPolicy::Retain => {
            let kept: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
            let note = if kept.is_empty() {
                "deletionPolicy Retain: the data volume is kept".to_owned()
            } else {
                format!("deletionPolicy Retain: kept PersistentVolumeClaim {}", kept.join(", "))
            };
            publish(ctx, &db, EventType::Normal, "DataRetained", &note).await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DatabaseMigration, DatabaseMigrationSpec, DatabaseMigrationStatus,
        database_migration::{CopyPhase, CopyStatus, MigrationStrategy, state as mstate},
    };

    /// A database as the tests of this kind's steps use it.
    pub(super) fn db() -> AppDatabase {
        let spec: crate::api::AppDatabaseSpec = serde_json::from_value(serde_json::json!({
            "network": "prod", "engine": "MariaDB",
            "admin": {"username": "acme_admin", "passwordSecretRef": {"name": "orders-admin", "key": "password"}},
            "storage": {"size": "10Gi"}
        }))
        .expect("spec");
        let mut db = AppDatabase::new("orders", spec);
        db.metadata.namespace = Some("acme".into());
        db.metadata.uid = Some("db-uid".into());
        db
    }

    fn copying(state: &str, phase: CopyPhase) -> DatabaseMigration {
        let mut m = DatabaseMigration::new(
            "to-ssd",
            DatabaseMigrationSpec {
                database: "orders".into(),
                target_network: "prod".into(),
                scheduled_at: None,
                time_zone: None,
                strategy: Some(MigrationStrategy::Replicate),
                target: None,
                delete_source_network: true,
            },
        );
        m.status = Some(DatabaseMigrationStatus {
            copy: Some(CopyStatus {
                server: "orders-abc123".into(),
                phase: Some(phase),
                ..Default::default()
            }),
            common: crate::api::common::CommonStatus {
                state: Some(state.into()),
                ..Default::default()
            },
            ..Default::default()
        });
        m
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_copy_runs_beside_the_server_until_promoted_then_serves() {
        let now: jiff::Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let db = db();
        let alone = plan_servers(&db, &[], now, DAY);
        assert_eq!(alone.serving.name, "orders");
        assert_eq!(alone.run.len(), 1);
        assert!(!alone.switched && alone.recorded == status::Servers::default());

        let preparing = plan_servers(&db, &[copying(mstate::PREPARING, CopyPhase::Snapshot)], now, DAY);
        assert_eq!(preparing.serving.name, "orders");
        let names: Vec<&str> = preparing.run.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["orders", "orders-abc123"]);

        let promoted = plan_servers(
            &db,
            &[copying(mstate::MIGRATION_IN_PROGRESS, CopyPhase::Promote)],
            now,
            DAY,
        );
        assert!(promoted.switched);
        assert_eq!(promoted.serving.name, "orders-abc123");
        assert_eq!(
            promoted.recorded.server.as_ref().map(|s| s.name.as_str()),
            Some("orders-abc123")
        );
        let retired = promoted.recorded.retired.clone().expect("the old server is retired");
        assert_eq!(
            (retired.name.as_str(), retired.delete_after.as_str()),
            ("orders", "2026-11-25T10:00:00Z")
        );

        // The next reconcile: the status says so; the old server is left alone until its window ends.
        let mut after = db.clone();
        after.status = Some(crate::api::AppDatabaseStatus {
            server: promoted.recorded.server.clone(),
            retired_server: promoted.recorded.retired.clone(),
            ..Default::default()
        });
        let steady = plan_servers(&after, &[copying(mstate::COMPLETED, CopyPhase::Done)], now, DAY);
        assert!(!steady.switched && steady.delete.is_empty());
        assert_eq!(
            steady.run.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["orders-abc123"]
        );
        let later: jiff::Timestamp = "2026-11-25T10:00:01Z".parse().unwrap();
        let retire = plan_servers(&after, &[copying(mstate::COMPLETED, CopyPhase::Done)], later, DAY);
        assert_eq!(retire.delete, ["orders"]);
        assert!(retire.recorded.retired.is_none());
    }

    #[test]
    fn a_rolled_back_copy_is_removed_and_never_served() {
        let now: jiff::Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let plan = plan_servers(&db(), &[copying(mstate::ROLLED_BACK, CopyPhase::RolledBack)], now, DAY);
        assert_eq!(plan.serving.name, "orders");
        assert_eq!(plan.delete, ["orders-abc123"]);
        assert_eq!(plan.run.len(), 1);
    }

    /// A retired server's deletion time brings the next reconcile forward; otherwise a ready database resyncs
    /// rarely and anything under way is looked at again soon.
    #[test]
    fn requeue_comes_back_when_the_rollback_window_ends() {
        let db = db();
        let now: jiff::Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let mut plan = plan_servers(&db, &[], now, Duration::from_secs(86_400));
        let ready = Phase::Ready {
            network: "prod".into(),
            address: "10.20.30.68".parse().unwrap(),
            rotating: false,
            migrating: false,
        };
        let creating = Phase::Creating { network: "prod".into() };
        let steady = requeue_after(&db, &plan, &ready, &Dns::NotRequested, now);
        assert!(steady >= Duration::from_secs(300), "{steady:?}");
        assert_eq!(
            requeue_after(&db, &plan, &creating, &Dns::NotRequested, now),
            Duration::from_secs(10)
        );
        assert_eq!(
            requeue_after(&db, &plan, &ready, &Dns::CrdMissing, now),
            Duration::from_secs(30)
        );
        plan.recorded.retired = Some(crate::api::app_database::RetiredServer {
            name: "orders".into(),
            delete_after: "2026-12-05T10:00:42Z".into(),
        });
        assert_eq!(
            requeue_after(&db, &plan, &ready, &Dns::NotRequested, now),
            Duration::from_secs(42)
        );
        // A window already passed: at once (one second), never a zero or negative wait.
        plan.recorded.retired.as_mut().unwrap().delete_after = "2026-12-05T09:00:00Z".into();
        assert_eq!(
            requeue_after(&db, &plan, &ready, &Dns::NotRequested, now),
            Duration::from_secs(1)
        );
    }

    /// The address plan sees the databases of this namespace on this network that are not being deleted, each
    /// once: the cached copy, or the reconciled database as read when the cache has not seen it yet.
    #[test]
    fn tenants_are_this_networks_databases_each_once() {
        let mut this = db();
        this.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
        let named = |name: &str, ns: &str, network: &str| {
            let mut d = db();
            d.metadata.name = Some(name.into());
            d.metadata.namespace = Some(ns.into());
            d.spec.network = network.into();
            Arc::new(d)
        };
        let mut stale = db();
        stale.metadata.creation_timestamp = None;
        let cache = vec![
            Arc::new(stale),
            named("billing", "acme", "prod"),
            named("other", "acme", "staging"),
            named("neighbour", "globex", "prod"),
        ];
        let mut gone = named("leaving", "acme", "prod");
        Arc::make_mut(&mut gone).metadata.deletion_timestamp = this.metadata.creation_timestamp.clone();
        let mut cache = cache;
        cache.push(gone);
        let planned = tenants(&cache, &this, "prod");
        let names: Vec<&str> = planned.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["orders", "billing"]);
        let fresh = tenants(&cache[1..], &this, "prod");
        let orders = fresh.iter().find(|t| t.name == "orders").unwrap();
        assert_eq!(orders.created, "2026-01-01T00:00:00Z");
    }
}
