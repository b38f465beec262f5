//! The VpnConnection controller: dereference (network, keys, Services, gateway pods) → validate (customer side,
//! keys, proposals) → build (PSK Secret, Services, gateway configuration and Deployments, PDB, customer download)
//! → apply (SSA, tunnel 2 only after tunnel 1 is back) → status (outside addresses, tunnel states).

pub mod build;
mod dereference;
mod status;

pub use self::status::state;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::{controller::Action, reflector::ObjectRef, watcher},
};

use self::{
    build::{
        config_digest, customer_config, customer_config_name, disruption_budget, gateway, gateway_config,
        tunnel_service,
    },
    dereference::{Validated, validate_customer_side},
    status::{Problem, tunnel_status},
};
use crate::{
    api::{
        PrivateNetwork, VpnConnection,
        vpn_connection::{TunnelState, TunnelStatus},
    },
    config::OperatorConfig,
    controllers::apply::{ApplyError, applied, apply_child, apply_if_changed, apply_status, read, reading_child},
    controllers::runtime::Kind,
    ipam::pinghost,
    manager::ControllerContext,
    metrics::Metrics,
    names::{LABEL_ROLE, LABEL_TUNNEL, LABEL_VPN, ROLE_VPN_GATEWAY},
    vpn::{
        model::{Connection, Tunnel},
        render::Exposure,
    },
};

const NAME: &str = "vpnconnection";

/// Why a reconcile failed: one of the steps every kind has (a connection has none of its own).
pub type Error = crate::controllers::error::ReconcileError<std::convert::Infallible>;

/// The VpnConnection controller as the manager runs it.
pub struct VpnConnectionController {
    config: Arc<OperatorConfig>,
    tunnels: TunnelGauge,
}

/// `appdb_vpn_tunnels{state}`: tunnels of all connections by reported state.
type TunnelGauge =
    prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>;

impl VpnConnectionController {
    pub fn new(config: Arc<OperatorConfig>, metrics: &mut Metrics) -> Self {
        let tunnels = TunnelGauge::default();
        metrics.registry_mut().register(
            "vpn_tunnels",
            "VPN tunnels by reported state (UP, DOWN, UNKNOWN)",
            tunnels.clone(),
        );
        Self { config, tunnels }
    }
}

/// What only this kind's reconcile keeps: its caches and metrics.
struct KindState {
    connections: kube::runtime::reflector::Store<VpnConnection>,
    tunnels: TunnelGauge,
}

type Context = crate::controllers::runtime::Context<KindState>;

/// Recounts the tunnel gauge from every connection's status (cheap: two entries per connection).
fn count_tunnels(ctx: &Context) {
    let mut counts: std::collections::BTreeMap<&str, i64> = [TunnelState::Up, TunnelState::Down, TunnelState::Unknown]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    for vpn in ctx.kind.connections.state() {
        for t in vpn.status.iter().flat_map(|s| s.tunnels.iter()) {
            *counts.entry(t.state.as_str()).or_default() += 1;
        }
    }
    for (state, n) in counts {
        ctx.kind
            .tunnels
            .get_or_create(&vec![("state".to_owned(), state.to_owned())])
            .set(n);
    }
}

impl Kind for VpnConnectionController {
    const NAME: &'static str = NAME;

    async fn serve(self, ctx: ControllerContext) {
        let client = ctx.client.clone();
        let managed = crate::controllers::runtime::made_by_the_operator();
        let controller = crate::controllers::runtime::lean_controller(Api::<VpnConnection>::all(client.clone()));
        let store = controller.store();
        let by_network = store.clone();
        let by_secret = store.clone();
        let by_database = store.clone();
        let by_namespace = store.clone();
        let controller = controller
            .owns(Api::<Service>::all(client.clone()), managed.clone())
            .owns(Api::<Deployment>::all(client.clone()), managed.clone())
            // The gateways' state reports.
            .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
            // Gateway pods report their tunnel's state in an annotation.
            .watches(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(&format!("{LABEL_ROLE}={ROLE_VPN_GATEWAY}")),
                |pod| {
                    pod.labels()
                        .get(LABEL_VPN)
                        .map(|vpn| ObjectRef::new(vpn).within(&pod.namespace().unwrap_or_default()))
                },
            )
            // A customer-supplied key changed.
            .watches_stream(
                crate::controllers::runtime::secret_changes(client.clone()),
                move |secret| {
                    let ns = secret.namespace();
                    crate::controllers::runtime::related_in(&by_secret, ns, |v| {
                        v.spec
                            .tunnel_options
                            .iter()
                            .any(|o| o.psk_secret_ref.as_ref().is_some_and(|r| r.name == secret.name_any()))
                    })
                },
            )
            // A database arriving on (or leaving) the network changes what the gateways serve.
            .watches(
                Api::<crate::api::AppDatabase>::all(client.clone()),
                watcher::Config::default(),
                move |db| {
                    let ns = db.namespace();
                    let network = db
                        .status
                        .as_ref()
                        .and_then(|s| s.network.clone())
                        .unwrap_or_else(|| db.spec.network.clone());
                    crate::controllers::runtime::related_in(&by_database, ns, |v| v.spec.network == network)
                },
            )
            .watches(
                Api::<PrivateNetwork>::all(client.clone()),
                watcher::Config::default(),
                move |network| {
                    let ns = network.namespace();
                    crate::controllers::runtime::related_in(&by_network, ns, |v| v.spec.network == network.name_any())
                },
            )
            // The platform relabelling a namespace's Pod Security level: its connections are checked again.
            .watches(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
                move |namespace| {
                    crate::controllers::runtime::related_in(&by_namespace, Some(namespace.name_any()), |_| true)
                },
            );
        crate::controllers::runtime::mark_synced_when_ready(store.clone(), ctx.synced.clone());
        let kind = KindState {
            connections: store.clone(),
            tunnels: self.tunnels.clone(),
        };
        crate::controllers::runtime::serve(NAME, controller, ctx, self.config.clone(), kind, reconcile).await;
    }
}

async fn reconcile(vpn: Arc<VpnConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_live(vpn, &ctx).await;
    count_tunnels(&ctx);
    result
}

fn outside_address(service: Option<&Service>) -> Option<Ipv4Addr> {
    service?
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| i.ip.as_deref()?.parse().ok())
}

/// Applies the connection, and reports an object in the way of one of its children as `NameInUse`: a person has to
/// remove it, so the connection waits instead of retrying.
async fn reconcile_live(vpn: Arc<VpnConnection>, ctx: &Context) -> Result<Action, Error> {
    match steps(vpn.clone(), ctx).await {
        Err(Error::Apply(ApplyError::NameInUse(in_use))) => {
            let tunnels = vpn.status.clone().unwrap_or_default().tunnels;
            write_status(
                ctx,
                &vpn,
                Err(&Problem::stalled("NameInUse", in_use)),
                tunnels,
                None,
                None,
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        other => other,
    }
}

/// The gateways' side as the cluster shows it: the tunnels' outside addresses, the gateway pods, their reports.
struct Observed {
    outside: [Option<Ipv4Addr>; 2],
    tunnels: Vec<TunnelStatus>,
}

/// How far the gateway Deployments got in this reconcile.
struct Rollout {
    /// Tunnel 1 runs its current configuration, ready: tunnel 2 may roll.
    tunnel1_settled: bool,
    /// Tunnel 2's new configuration waits for tunnel 1.
    tunnel2_held: bool,
}

/// The reconcile: validate the customer side, apply the Services and observe the gateways, describe the
/// connection, apply the gateways' RBAC and roll the gateways (tunnel 2 after tunnel 1), publish the download, status.
async fn steps(vpn: Arc<VpnConnection>, ctx: &Context) -> Result<Action, Error> {
    let ns = vpn.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let validated = match validate_customer_side(&vpn, ctx, &ns, &secrets).await? {
        Ok(v) => v,
        Err(problem) => return report_problem(ctx, &vpn, problem, Vec::new(), None).await,
    };
    let Observed { outside, tunnels } = apply_services_and_observe_gateways(&vpn, ctx, &ns).await?;
    // A proposal no device can use is reported at once, not after the load balancer has given out addresses.
    if let Some(e) = first_invalid_proposal(&vpn.spec) {
        return report_problem(ctx, &vpn, Problem::stalled("InvalidProposal", e), tunnels, None).await;
    }
    let conn = match connection(&vpn, &ns, validated, outside, ctx.config.vpn_exposure) {
        Ok(conn) => conn,
        Err(problem) => return report_problem(ctx, &vpn, problem, tunnels, None).await,
    };
    apply_gateway_rbac(&vpn, ctx, &ns).await?;
    let (serving, relayed) = serving(ctx, &ns, &vpn.spec.network, &conn).await?;
    let rollout = roll_gateways(&vpn, ctx, &ns, &conn, &serving, &tunnels).await?;
    // A held tunnel 2 still relays what it relayed before; the last published list stays until it rolls.
    let relayed = (!rollout.tunnel2_held).then_some(relayed);
    if outside.iter().any(Option::is_none) {
        let waiting = Problem::waiting(
            "WaitingForOutsideAddress",
            "waiting for each gateway pod to be placed on a node, whose address is the tunnel's outside address",
        );
        return report_problem(ctx, &vpn, waiting, tunnels, relayed).await;
    }
    apply_child(&secrets, &customer_config(&vpn, &conn), "the customer configuration").await?;
    let outcome = match rollout.tunnel2_held {
        true => Err(Problem::waiting(
            "RollingOut",
            "tunnel 1's gateway runs the new configuration; tunnel 2's follows once tunnel 1 is ready and up again, \
             so the two are never down at once",
        )),
        false => Ok(()),
    };
    let config_secret = Some(customer_config_name(&vpn));
    write_status(ctx, &vpn, outcome.as_ref().map(|_| ()), tunnels, config_secret, relayed).await?;
    Ok(Action::requeue(if rollout.tunnel1_settled {
        crate::controllers::runtime::spread(Duration::from_secs(300), vpn.uid().as_deref())
    } else {
        Duration::from_secs(10)
    }))
}

/// Applies what exists before any gateway runs (the disruption budget, both tunnel Services, the report
/// ConfigMap, pruned of gone pods' keys) and reads what the cluster shows of the gateways: each tunnel's outside
/// address (the load balancer's, or with host networking the node's) and state.
async fn apply_services_and_observe_gateways(vpn: &VpnConnection, ctx: &Context, ns: &str) -> Result<Observed, Error> {
    let client = &ctx.client;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    apply_child(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        &disruption_budget(vpn),
        "the PodDisruptionBudget",
    )
    .await?;
    let mut outside = [None, None];
    for n in [1u8, 2] {
        let live = apply_child(
            &services,
            &tunnel_service(vpn, n, ctx.config.vpn_exposure),
            "a tunnel Service",
        )
        .await?;
        outside[usize::from(n) - 1] = outside_address(live.as_ref());
    }
    // The gateways report under their pod names in the connection's report ConfigMap (created before any gateway
    // runs); keys of pods that are gone are removed.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let reports = apply_child(&configmaps, &build::report_configmap(vpn), "the report ConfigMap").await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_VPN}={}", vpn.name_any())))
        .await
        .map_err(reading_child("the gateway pods"))?
        .items;
    let live: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    if let Some(prune) = crate::report::prune_patch(reports.as_ref(), &live) {
        configmaps
            .patch(
                &build::report_configmap_name(vpn),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&prune),
            )
            .await
            .map_err(crate::controllers::apply::applying("the report ConfigMap"))?;
    }
    if ctx.config.vpn_exposure == Exposure::HostNetwork {
        // The node's address is the outside address; the pod learns it itself, the operator from the pod's status.
        for n in [1u8, 2] {
            outside[usize::from(n) - 1] = pods
                .iter()
                .filter(|p| {
                    p.labels().get(LABEL_TUNNEL).map(String::as_str) == Some(&n.to_string())
                        && p.metadata.deletion_timestamp.is_none()
                })
                .find_map(|p| p.status.as_ref()?.host_ip.as_deref()?.parse().ok());
        }
    }
    let previous = vpn.status.clone().unwrap_or_default().tunnels;
    let tunnels = [1u8, 2]
        .iter()
        .map(|&n| {
            tunnel_status(
                outside[usize::from(n) - 1],
                &pods,
                reports.as_ref(),
                n,
                previous.get(usize::from(n) - 1),
            )
        })
        .collect();
    Ok(Observed { outside, tunnels })
}

/// The canonical description of the connection (pure): with host networking the gateways start before their
/// addresses are known; with load balancers they wait for them (a transient problem).
fn connection(
    vpn: &VpnConnection,
    ns: &str,
    validated: Validated,
    outside: [Option<Ipv4Addr>; 2],
    exposure: Exposure,
) -> Result<Connection, Problem> {
    let gateway_side = match exposure {
        Exposure::HostNetwork => Some((
            outside[0].unwrap_or(Ipv4Addr::UNSPECIFIED),
            outside[1].unwrap_or(Ipv4Addr::UNSPECIFIED),
        )),
        Exposure::LoadBalancer => outside[0].zip(outside[1]),
    };
    let Some((first, second)) = gateway_side else {
        return Err(Problem::waiting(
            "WaitingForOutsideAddress",
            "waiting for the load balancer to give each tunnel its outside address",
        ));
    };
    let Validated {
        block,
        cidrs,
        gateway_address,
        psks: [psk1, psk2],
    } = validated;
    let options = |i: usize| vpn.spec.tunnel_options.get(i);
    let tunnel1 = Tunnel::new(1, first, psk1, options(0)).map_err(|e| Problem::stalled("InvalidProposal", e))?;
    let tunnel2 = Tunnel::new(2, second, psk2, options(1)).map_err(|e| Problem::stalled("InvalidProposal", e))?;
    Ok(Connection {
        name: format!("{ns}-{}", vpn.name_any()),
        description: vpn.spec.description.clone(),
        platform_cidr: block,
        pinghost: pinghost(block),
        customer_cidrs: cidrs,
        customer_gateway: gateway_address,
        tunnels: [tunnel1, tunnel2],
    })
}

/// The gateway pods' identity: a ServiceAccount with a Role on the report ConfigMap.
async fn apply_gateway_rbac(vpn: &VpnConnection, ctx: &Context, ns: &str) -> Result<(), Error> {
    let (sa, role, binding) = build::gateway_rbac(vpn);
    let client = &ctx.client;
    apply_child(
        &Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns),
        &sa,
        "the gateway ServiceAccount",
    )
    .await?;
    apply_child(
        &Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), ns),
        &role,
        "the gateway Role",
    )
    .await?;
    apply_child(
        &Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), ns),
        &binding,
        "the gateway RoleBinding",
    )
    .await?;
    Ok(())
}

/// Applies each tunnel's configuration and gateway Deployment. Tunnel 2 changes only once tunnel 1 runs its
/// current configuration: never both down for an update.
async fn roll_gateways(
    vpn: &VpnConnection,
    ctx: &Context,
    ns: &str,
    conn: &Connection,
    serving: &build::Serving,
    tunnels: &[TunnelStatus],
) -> Result<Rollout, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let mut rollout = Rollout {
        tunnel1_settled: true,
        tunnel2_held: false,
    };
    for n in [1u8, 2] {
        let config = gateway_config(vpn, conn, n, ctx.config.vpn_datapath, ctx.config.vpn_exposure);
        apply_child(&secrets, &config, "a gateway configuration").await?;
        let mut desired = gateway(
            vpn,
            &vpn.spec.network,
            n,
            &ctx.config.vpn_gateway_image,
            &ctx.config.operator_image,
            ctx.config.vpn_datapath,
            &config_digest(&config),
            serving,
            ctx.config.vpn_exposure,
        );
        ctx.config.placement.place(&mut desired.spec.template);
        let live = deployments
            .get_opt(&desired.name_any())
            .await
            .map_err(reading_child("a gateway Deployment"))?;
        if n == 2
            && !rollout.tunnel1_settled
            && let Some(live) = &live
        {
            rollout.tunnel2_held = template_digest(live) != template_digest(&desired);
            continue;
        }
        let changed = apply_if_changed(&deployments, &desired, live.as_ref())
            .await
            .map_err(applied("a gateway Deployment"))?;
        if n == 1 {
            rollout.tunnel1_settled =
                !changed && live.as_ref().is_some_and(deployment_available) && may_roll_tunnel2(tunnels);
        }
    }
    Ok(rollout)
}

/// The pinghost and the databases living on the network: the addresses a gateway owns and the relays it runs.
/// Also returns the databases' addresses alone: what the status publishes as relayed once both gateways carry them.
async fn serving(
    ctx: &Context,
    ns: &str,
    network: &str,
    conn: &Connection,
) -> Result<(build::Serving, Vec<String>), Error> {
    let databases = Api::<crate::api::AppDatabase>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(read("the AppDatabases"))?;
    let mut serving = build::Serving {
        addresses: vec![conn.pinghost],
        relays: Vec::new(),
    };
    let mut on_network: Vec<(String, Ipv4Addr)> = databases
        .items
        .iter()
        .filter_map(|db| {
            let status = db.status.as_ref()?;
            (status.network.as_deref() == Some(network)).then_some(())?;
            let address = status.endpoint.as_ref()?.address.as_ref()?.parse().ok()?;
            Some((db.name_any(), address))
        })
        .collect();
    on_network.sort();
    let relayed = on_network.iter().map(|(_, address)| address.to_string()).collect();
    for (name, address) in on_network {
        serving.addresses.push(address);
        serving.relays.push(format!(
            "{address}:{port}={name}.{ns}.svc.{}:{port}",
            ctx.config.cluster_domain,
            port = crate::mysql::PORT
        ));
    }
    Ok((serving, relayed))
}

fn template_digest(d: &Deployment) -> Option<&String> {
    d.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(crate::names::ANNOTATION_CONFIG_DIGEST)
}

/// Tunnel 2 may take its new configuration once tunnel 1 carries again, or when tunnel 2 carries nothing anyway:
/// rolling it then cannot take the last working tunnel down.
fn may_roll_tunnel2(tunnels: &[TunnelStatus]) -> bool {
    let up = |i: usize| tunnels.get(i).is_some_and(|t| t.state == TunnelState::Up);
    up(0) || !up(1)
}

fn deployment_available(d: &Deployment) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.available_replicas.unwrap_or(0) >= 1
            && s.updated_replicas.unwrap_or(0) >= 1
    })
}

/// Writes the status (server-side apply, only when it changed) and publishes the Event a change is worth.
async fn write_status(
    ctx: &Context,
    vpn: &VpnConnection,
    outcome: Result<(), &Problem>,
    tunnels: Vec<TunnelStatus>,
    config_secret: Option<String>,
    relayed_addresses: Option<Vec<String>>,
) -> Result<(), Error> {
    let new = status::build_status(
        vpn,
        outcome,
        tunnels,
        config_secret,
        relayed_addresses,
        jiff::Timestamp::now(),
    );
    if vpn.status.as_ref() == Some(&new) {
        return Ok(());
    }
    apply_status(&ctx.client, vpn, &new).await.map_err(Error::Status)?;
    let previous = vpn.status.clone().unwrap_or_default();
    if let Some((type_, reason, note)) = status::event(&previous, &new, outcome) {
        crate::controllers::runtime::publish(&ctx.recorder, &vpn.object_ref(&()), type_, &reason, note, "Reconcile")
            .await;
    }
    Ok(())
}

/// Reports `problem` in the status and looks again when it may have gone.
async fn report_problem(
    ctx: &Context,
    vpn: &VpnConnection,
    problem: Problem,
    tunnels: Vec<TunnelStatus>,
    relayed_addresses: Option<Vec<String>>,
) -> Result<Action, Error> {
    write_status(ctx, vpn, Err(&problem), tunnels, None, relayed_addresses).await?;
    Ok(Action::requeue(problem.retry_after()))
}

/// The first IKE or ESP proposal of the spec that does not parse.
fn first_invalid_proposal(spec: &crate::api::VpnConnectionSpec) -> Option<crate::vpn::model::ProposalError> {
    for options in &spec.tunnel_options {
        for proposal in options.ike_proposals.iter().chain(&options.esp_proposals) {
            if let Err(e) = crate::vpn::model::parse_proposal(&proposal.0) {
                return Some(e);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tunnel: u8, json: serde_json::Value) -> Pod {
        let mut pod: Pod = serde_json::from_value(json).expect("pod");
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_TUNNEL.into(), tunnel.to_string());
        pod
    }

    /// Test-only: the report a pod's agent wrote, carried on the test pod until `state_of` files it under the
    /// pod's name in the report ConfigMap, as the agent does.
    const REPORT: &str = "test/report";

    fn reporting(tunnel: u8, state: &str, extra: serde_json::Value) -> Pod {
        let mut json = serde_json::json!({
            "metadata": {
                "name": format!("gw{tunnel}"),
                "annotations": {REPORT: format!(r#"{{"state":"{state}","since":"2026-12-01T00:00:00Z","message":"m"}}"#)}
            },
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "charon", "ready": true, "restartCount": 0, "image": "g", "imageID": ""},
                {"name": "agent", "ready": true, "restartCount": 0, "image": "a", "imageID": ""}
            ]}
        });
        json_merge(&mut json, extra);
        pod(tunnel, json)
    }

    fn json_merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    json_merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn state_of(pods: &[Pod]) -> (TunnelState, String) {
        let reports = ConfigMap {
            data: Some(
                pods.iter()
                    .filter_map(|p| Some((p.name_any(), p.annotations().get(REPORT)?.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        let s = tunnel_status(None, pods, Some(&reports), 1, None);
        (s.state, s.message.unwrap_or_default())
    }

    #[test]
    fn a_report_counts_only_from_a_running_ready_pod() {
        assert_eq!(
            state_of(&[reporting(1, "UP", serde_json::json!({}))]).0,
            TunnelState::Up
        );
        let (state, why) = state_of(&[]);
        assert_eq!(
            (state, why.as_str()),
            (TunnelState::Down, "the gateway pod is not running")
        );
        let terminating = reporting(
            1,
            "UP",
            serde_json::json!({"metadata": {"deletionTimestamp": "2026-12-01T00:00:01Z"}}),
        );
        let (state, why) = state_of(std::slice::from_ref(&terminating));
        assert_eq!(
            (state, why.as_str()),
            (TunnelState::Down, "the gateway pod is terminating")
        );
        let charon_unready = reporting(1, "UP", serde_json::json!({}));
        let mut charon_unready = charon_unready;
        charon_unready
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .ready = false;
        let (state, why) = state_of(&[charon_unready]);
        assert_eq!(state, TunnelState::Down);
        assert!(why.contains("no IKE socket"), "{why}");
        let mut silent = reporting(1, "UP", serde_json::json!({}));
        silent.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[1].ready = false;
        let (state, why) = state_of(&[silent]);
        assert_eq!(
            state,
            TunnelState::Unknown,
            "a report not confirmed lately is not trusted"
        );
        assert!(why.contains("has not confirmed"), "{why}");
        let pending = reporting(1, "UP", serde_json::json!({"status": {"phase": "Pending"}}));
        assert_eq!(state_of(&[pending]).0, TunnelState::Down);
    }

    #[test]
    fn during_a_rollout_the_new_pod_speaks_for_the_tunnel() {
        let old = reporting(
            1,
            "UP",
            serde_json::json!({"metadata": {"deletionTimestamp": "2026-12-01T00:00:01Z"}}),
        );
        let mut new = reporting(1, "DOWN", serde_json::json!({"metadata": {"name": "gw1-new"}}));
        assert_eq!(state_of(&[old.clone(), new.clone()]).0, TunnelState::Down);
        new.metadata.annotations = None;
        let (state, why) = state_of(&[old, new]);
        assert_eq!(
            (state, why.as_str()),
            (TunnelState::Unknown, "waiting for the gateway to report")
        );
    }

    #[test]
    fn tunnel_2_rolls_only_when_it_would_not_take_the_last_tunnel_down() {
        let t = |state| TunnelStatus {
            outside_address: None,
            state,
            last_change: None,
            message: None,
        };
        use TunnelState::{Down, Unknown, Up};
        assert!(may_roll_tunnel2(&[t(Up), t(Up)]));
        assert!(
            !may_roll_tunnel2(&[t(Down), t(Up)]),
            "tunnel 2 is the only one carrying"
        );
        assert!(!may_roll_tunnel2(&[t(Unknown), t(Up)]));
        assert!(may_roll_tunnel2(&[t(Down), t(Down)]), "nothing to protect");
        assert!(may_roll_tunnel2(&[t(Unknown), t(Unknown)]));
    }
}
