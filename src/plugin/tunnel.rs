//! `kubectl appdb tunnel`: local port → Kubernetes API port-forward → the pod that serves the database now.
//!
//! Every local connection gets its own port-forward to whichever pod the database's Service selects at that
//! moment, so the tunnel follows restarts and migrations, and a dropped forward only ends the connections it
//! carried: the next connection forwards again.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{Pod, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use tokio::net::{TcpListener, TcpStream};

use super::PluginError;
use crate::{api::AppDatabase, mysql::PORT as MYSQL_PORT};

/// One tunnel to open.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSpec {
    pub database: String,
    /// Default: the command line's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "default_port")]
    pub local_port: u16,
    /// Default: both loopback addresses (127.0.0.1 and ::1), as kubectl port-forward listens.
    #[serde(default)]
    pub address: Option<IpAddr>,
}

fn default_port() -> u16 {
    MYSQL_PORT
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelFile {
    tunnels: Vec<TunnelSpec>,
}

/// Parses a tunnel file (the tunnels to open together, for example at login).
pub fn parse_config(text: &str) -> Result<Vec<TunnelSpec>, PluginError> {
    let file: TunnelFile = serde_saphyr::from_str(text).map_err(|e| {
        // The YAML reader's message may start with its own "error: ", and ours already says so once.
        let message = e.to_string();
        let message = message.strip_prefix("error: ").unwrap_or(&message).to_owned();
        PluginError::Usage(format!("invalid tunnel file: {message}"))
    })?;
    if file.tunnels.is_empty() {
        return Err(PluginError::Usage("the tunnel file lists no tunnels".into()));
    }
    Ok(file.tunnels)
}

pub fn read_config(path: &Path) -> Result<Vec<TunnelSpec>, PluginError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PluginError::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse_config(&text)
}

/// `localhost:3306` for the address `localhost` names (127.0.0.1, ::1), else the address itself: what people type
/// into their tools. Another loopback address (127.0.0.2) is printed as is: `localhost` would lead elsewhere.
pub fn display_address(address: IpAddr, port: u16) -> String {
    if address == IpAddr::from([127, 0, 0, 1]) || address == IpAddr::from(std::net::Ipv6Addr::LOCALHOST) {
        format!("localhost:{port}")
    } else {
        SocketAddr::new(address, port).to_string()
    }
}

/// A permission as (verb, group, resource, subresource).
pub type Permission = (&'static str, &'static str, &'static str, &'static str);

/// The permissions a tunnel needs.
pub const NEEDED: &[Permission] = &[
    ("get", "appdb.dev", "appdatabases", ""),
    ("get", "", "services", ""),
    ("list", "", "pods", ""),
    ("create", "", "pods", "portforward"),
];

/// What plain `kubectl port-forward` needs besides [`NEEDED`] (it reads the pod to check that it runs), so that
/// the roles that grant a tunnel also serve a person without the plugin.
pub const ALSO_FOR_KUBECTL_PORT_FORWARD: &[Permission] = &[("get", "", "pods", "")];

/// Asks the API server which of `needed` the user lacks, each for the object it names (`None`: any): access given
/// per database (`spec.tunnel.allowed`, a Role with resource names) answers only for that database and its pods.
async fn missing_permissions(
    client: &Client,
    namespace: &str,
    needed: &[(Permission, Option<&str>)],
) -> Result<Vec<String>, PluginError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for ((verb, group, resource, subresource), name) in needed {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    verb: Some((*verb).into()),
                    group: Some((*group).into()),
                    resource: Some((*resource).into()),
                    subresource: (!subresource.is_empty()).then(|| (*subresource).into()),
                    name: name.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| PluginError::from_kube("asking the API server for your permissions", e))?;
        if !answer.status.is_some_and(|s| s.allowed) {
            let what = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            let group = if group.is_empty() {
                String::new()
            } else {
                format!(".{group}")
            };
            missing.push(format!("{verb} {what}{group}"));
        }
    }
    Ok(missing)
}

/// A checked, bound tunnel, ready to serve.
pub struct Opened {
    pub spec: TunnelSpec,
    pub namespace: String,
    /// One listener per address (both loopback families by default), all on the same port.
    pub listeners: Vec<TcpListener>,
}

impl Opened {
    /// Where clients connect: `localhost:PORT` when both loopback addresses (or one that `localhost` names) are
    /// bound, else the bound address itself.
    pub fn connect_to(&self) -> String {
        let bound: Vec<SocketAddr> = self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        match bound.as_slice() {
            [only] => display_address(only.ip(), only.port()),
            [first, ..] => format!("localhost:{}", first.port()),
            [] => String::new(),
        }
    }

    /// The addresses actually bound, as `127.0.0.1:3306 and [::1]:3306`.
    pub fn bound(&self) -> String {
        let bound: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        bound.join(" and ")
    }
}

/// Linux's "address family not supported" (IPv6 disabled in the kernel).
const EAFNOSUPPORT: i32 = 97;

/// Binds the tunnel's local port. An explicit address is bound alone. By default 127.0.0.1 is required and ::1 is
/// added on the same port when the machine has IPv6 (a client that resolves `localhost` to ::1 first then finds the
/// tunnel too). Were 127.0.0.1's port taken, `localhost` could lead a client to whatever holds it, so that fails.
pub async fn bind(address: Option<IpAddr>, port: u16) -> Result<(Vec<TcpListener>, Option<String>), PluginError> {
    let bind_one =
        |ip: IpAddr, port: u16| async move { TcpListener::bind(SocketAddr::new(ip, port)).await.map_err(|e| (ip, e)) };
    let failed = |ip: IpAddr, port: u16, e: std::io::Error| PluginError::Bind {
        address: display_address(ip, port),
        reason: e.to_string(),
    };
    match address {
        Some(ip) => {
            let listener = bind_one(ip, port).await.map_err(|(ip, e)| failed(ip, port, e))?;
            Ok((vec![listener], None))
        }
        None => {
            let v4 = IpAddr::from([127, 0, 0, 1]);
            let first = bind_one(v4, port).await.map_err(|(_, e)| PluginError::Bind {
                address: format!("localhost:{port}"),
                reason: e.to_string(),
            })?;
            let port = first.local_addr().map(|a| a.port()).unwrap_or(port);
            match bind_one(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), port).await {
                Ok(second) => Ok((vec![first, second], None)),
                // No IPv6 on this machine: 127.0.0.1 is all `localhost` can mean.
                Err((_, e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    ) || e.raw_os_error() == Some(EAFNOSUPPORT) =>
                {
                    Ok((vec![first], None))
                }
                Err((ip, e)) => Ok((
                    vec![first],
                    Some(format!(
                        "listening on 127.0.0.1:{port} only: cannot listen on [{ip}]:{port} ({e}); connect to 127.0.0.1, not localhost"
                    )),
                )),
            }
        }
    }
}

/// Checks access and existence and binds the local port, in that order (so each failure says the right thing).
pub async fn open(client: &Client, namespace: &str, spec: TunnelSpec) -> Result<Opened, PluginError> {
    let denied = |missing: Vec<String>| {
        PluginError::AccessDenied(format!(
            "you may not {} in namespace {namespace}; a tunnel to {} needs you (or your group) in its \
             spec.tunnel.allowed, or the appdb-tunnel-user role in the namespace",
            missing.join(", "),
            spec.database
        ))
    };
    let [get_database, get_service, list_pods, forward] = NEEDED else {
        unreachable!("NEEDED lists four permissions")
    };
    let database = Some(spec.database.as_str());
    let missing = missing_permissions(
        client,
        namespace,
        &[(*get_database, database), (*get_service, database), (*list_pods, None)],
    )
    .await?;
    if !missing.is_empty() {
        return Err(denied(missing));
    }
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), namespace);
    let Some(found) = databases
        .get_opt(&spec.database)
        .await
        .map_err(|e| PluginError::from_kube("reading the AppDatabase", e))?
    else {
        return Err(PluginError::TunnelNotFound(format!(
            "there is no database {:?} in namespace {namespace}",
            spec.database
        )));
    };
    // A tunnel with nothing behind it would report success and then fail every client (MySQL error 2013): refuse
    // it, saying why. Port-forward is then checked for the pod that serves the database now.
    let pod = match serving_pod(client, namespace, &spec.database).await {
        Ok(pod) => pod,
        Err(PluginError::NotFound(why) | PluginError::TunnelNotFound(why)) => {
            let state = found
                .status
                .as_ref()
                .and_then(|s| s.common.state.clone())
                .unwrap_or_default();
            return Err(PluginError::TunnelNotFound(format!(
                "{why} (the database is {:?}); try again when `kubectl get adb {} -n {namespace}` shows Ready To Use",
                if state.is_empty() { "new" } else { state.as_str() },
                spec.database
            )));
        }
        Err(e) => return Err(e),
    };
    let missing = missing_permissions(client, namespace, &[(*forward, Some(pod.as_str()))]).await?;
    if !missing.is_empty() {
        return Err(denied(missing));
    }
    let (listeners, warning) = bind(spec.address, spec.local_port).await?;
    if let Some(warning) = warning {
        eprintln!("warning: {namespace}/{}: {warning}", spec.database);
    }
    Ok(Opened {
        spec,
        namespace: namespace.to_owned(),
        listeners,
    })
}

/// The running, ready pod the database's Service selects now.
pub async fn serving_pod(client: &Client, namespace: &str, database: &str) -> Result<String, PluginError> {
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(database)
        .await
        .map_err(|e| PluginError::from_kube("reading the database's Service", e))?
        .ok_or_else(|| PluginError::TunnelNotFound(format!("the database {database:?} has no Service yet")))?;
    let selector = service
        .spec
        .and_then(|s| s.selector)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PluginError::TunnelNotFound(format!("the Service of {database:?} selects no pod")))?;
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|e| PluginError::from_kube("listing the database's pods", e))?;
    let ready = |p: &Pod| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    pods.items
        .iter()
        .find(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .ok_or_else(|| PluginError::NotFound(format!("no pod of database {database:?} is ready right now")))
}

/// Carries one local connection to the database through a fresh port-forward.
async fn carry(
    client: Client,
    namespace: String,
    database: String,
    mut local: TcpStream,
) -> Result<String, PluginError> {
    let pod = serving_pod(&client, &namespace, &database).await?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut forward = pods
        .portforward(&pod, &[MYSQL_PORT])
        .await
        .map_err(|e| PluginError::from_kube("opening the port-forward", e))?;
    let mut remote = forward
        .take_stream(MYSQL_PORT)
        .ok_or_else(|| PluginError::Kubernetes("the port-forward has no stream".into()))?;
    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
    drop(remote);
    let _ = forward.join().await;
    Ok(pod)
}

/// Serves one opened tunnel until the process ends.
pub async fn serve(client: Client, opened: Opened) {
    let Opened {
        spec,
        namespace,
        listeners,
    } = opened;
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel::<TcpStream>();
    for listener in listeners {
        let accepted_tx = accepted_tx.clone();
        tokio::spawn(async move {
            loop {
                if let Ok((local, _)) = listener.accept().await
                    && accepted_tx.send(local).is_err()
                {
                    return;
                }
            }
        });
    }
    let mut last_pod: Option<String> = None;
    let (pods_tx, mut pods_rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    loop {
        tokio::select! {
            Some(local) = accepted_rx.recv() => {
                let (client, namespace, database, tx) =
                    (client.clone(), namespace.clone(), spec.database.clone(), pods_tx.clone());
                tokio::spawn(async move {
                    let result = carry(client, namespace, database, local).await.map_err(|e| e.to_string());
                    let _ = tx.send(result);
                });
            }
            Some(result) = pods_rx.recv() => match result {
                Ok(pod) if last_pod.as_deref() != Some(pod.as_str()) => {
                    eprintln!("{}/{}: forwarding to pod {pod}", namespace, spec.database);
                    last_pod = Some(pod);
                }
                Ok(_) => {}
                Err(e) => eprintln!("{}/{}: a connection failed ({e}); the next one tries again", namespace, spec.database),
            },
        }
    }
}

/// Opens every tunnel it can, prints where to connect, and serves until interrupted. With several tunnels (a
/// tunnel file), each one that cannot open is reported by name and the others still open; if none opens, the first
/// failure is the command's error.
pub async fn run(client: Client, namespace: &str, specs: Vec<TunnelSpec>) -> Result<(), PluginError> {
    let several = specs.len() > 1;
    let mut opened = Vec::new();
    let mut failures = Vec::new();
    for spec in specs {
        let ns = spec.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        let database = spec.database.clone();
        match open(&client, &ns, spec).await {
            Ok(o) => opened.push(o),
            Err(e) => {
                if several {
                    eprintln!("error: {ns}/{database}: {e}");
                }
                failures.push(e);
            }
        }
    }
    if opened.is_empty() {
        return Err(failures
            .into_iter()
            .next()
            .unwrap_or_else(|| PluginError::Usage("no tunnel to open".into())));
    }
    for o in &opened {
        let admin = Api::<AppDatabase>::namespaced(client.clone(), &o.namespace)
            .get_opt(&o.spec.database)
            .await
            .ok()
            .flatten()
            .map(|d| d.spec.admin.username)
            .unwrap_or_default();
        let first = o.listeners.first().and_then(|l| l.local_addr().ok());
        let (host, port) = first.map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()));
        println!(
            "{}/{}: connect to tcp://{} (listening on {}; for example: mariadb -h {host} -P {port} -u {admin} -p)",
            o.namespace,
            o.spec.database,
            o.connect_to(),
            o.bound(),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for o in opened {
        tasks.spawn(serve(client.clone(), o));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = tasks.join_next() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this machine can listen on ::1 at all (the default then binds both families).
    async fn has_ipv6_loopback() -> bool {
        TcpListener::bind("[::1]:0").await.is_ok()
    }

    #[tokio::test]
    async fn by_default_both_loopback_families_listen_on_one_port() {
        let (listeners, warning) = bind(None, 0).await.unwrap();
        assert_eq!(warning, None);
        let bound: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(bound[0].ip(), IpAddr::from([127, 0, 0, 1]));
        if has_ipv6_loopback().await {
            assert_eq!(bound.len(), 2, "{bound:?}");
            assert_eq!(bound[1].ip(), IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
            assert_eq!(bound[0].port(), bound[1].port(), "one port for both");
        } else {
            assert_eq!(bound.len(), 1, "{bound:?}");
        }
        let opened = Opened {
            spec: TunnelSpec {
                database: "orders".into(),
                namespace: None,
                local_port: 0,
                address: None,
            },
            namespace: "acme".into(),
            listeners,
        };
        assert_eq!(opened.connect_to(), format!("localhost:{}", bound[0].port()));
        assert!(opened.bound().starts_with("127.0.0.1:"), "{}", opened.bound());
    }

    #[tokio::test]
    async fn a_taken_ipv4_port_fails_and_a_taken_ipv6_port_warns() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let Err(e) = bind(None, port).await else {
            panic!("127.0.0.1's port is taken, yet the tunnel bound it");
        };
        assert_eq!(e.exit_code(), 5);
        assert!(
            e.to_string()
                .starts_with(&format!("while binding to tcp://localhost:{port}")),
            "{e}"
        );
        drop(taken);

        if has_ipv6_loopback().await {
            // A port held on ::1 only (an ephemeral port of ::1 is almost always free on 127.0.0.1; try a few).
            let mut checked = false;
            for _ in 0..20 {
                let taken = TcpListener::bind("[::1]:0").await.unwrap();
                let port = taken.local_addr().unwrap().port();
                let Ok((listeners, warning)) = bind(None, port).await else {
                    continue;
                };
                assert_eq!(listeners.len(), 1);
                let warning = warning.expect("a warning names the address it could not take");
                assert!(warning.contains(&format!("[::1]:{port}")), "{warning}");
                assert!(warning.contains("connect to 127.0.0.1, not localhost"), "{warning}");
                checked = true;
                break;
            }
            assert!(checked, "no port was free on 127.0.0.1 while held on ::1, in 20 tries");
        }
        // An explicit address is bound alone, and printed as itself.
        let (listeners, _) = bind(Some(IpAddr::from([127, 0, 0, 2])), 0).await.unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].local_addr().unwrap().ip(), IpAddr::from([127, 0, 0, 2]));
    }

    #[test]
    fn only_the_addresses_localhost_names_print_as_localhost() {
        assert_eq!(display_address("127.0.0.1".parse().unwrap(), 3306), "localhost:3306");
        assert_eq!(display_address("127.0.0.2".parse().unwrap(), 3306), "127.0.0.2:3306");
        assert_eq!(display_address("::1".parse().unwrap(), 3306), "localhost:3306");
        assert_eq!(display_address("10.1.2.3".parse().unwrap(), 13306), "10.1.2.3:13306");
    }

    #[test]
    fn a_bad_tunnel_file_says_error_once() {
        let e = parse_config("tunnels:\n- database: orders\n  localPort: nope\n")
            .unwrap_err()
            .to_string();
        // The command prints it after its own "error: ".
        assert!(
            e.starts_with("invalid tunnel file: line 3") && !e.contains("error"),
            "{e}"
        );
    }

    #[test]
    fn tunnel_files_list_tunnels_with_defaults() {
        let specs = parse_config(
            "tunnels:\n- database: orders\n  namespace: acme\n- database: billing\n  localPort: 3307\n  address: 127.0.0.2\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].local_port, 3306);
        assert_eq!(specs[0].namespace.as_deref(), Some("acme"));
        assert_eq!(specs[1].address, Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(specs[0].address, None, "both loopback addresses by default");
        assert!(matches!(parse_config("tunnels: []"), Err(PluginError::Usage(_))));
        assert!(matches!(
            parse_config("tunnels:\n- database: x\n  port: 1\n"),
            Err(PluginError::Usage(m)) if m.contains("port")
        ));
    }

    #[test]
    fn loopback_is_shown_as_localhost() {
        assert_eq!(display_address(IpAddr::from([127, 0, 0, 1]), 3306), "localhost:3306");
        assert_eq!(display_address(IpAddr::from([10, 0, 0, 1]), 3306), "10.0.0.1:3306");
    }

    #[test]
    fn errors_have_distinct_exit_codes_and_the_seeds_wording() {
        let bind = PluginError::Bind {
            address: "localhost:3306".into(),
            reason: "Address already in use (os error 98)".into(),
        };
        assert!(bind.to_string().starts_with("while binding to tcp://localhost:3306"));
        let codes = [
            PluginError::TunnelNotFound("x".into()).exit_code(),
            PluginError::AccessDenied("x".into()).exit_code(),
            bind.exit_code(),
            PluginError::Kubernetes("x".into()).exit_code(),
        ];
        assert_eq!(codes, [3, 4, 5, 1]);
        assert!(
            PluginError::AccessDenied("x".into())
                .to_string()
                .starts_with("Access denied")
        );
        assert!(
            PluginError::TunnelNotFound("x".into())
                .to_string()
                .starts_with("Tunnel not found")
        );
    }
}
