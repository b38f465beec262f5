//! An in-memory Kubernetes API server for tests, honest enough for the unmodified `kubectl` and the unmodified
//! operator binary. See `testkit/README.md` for exactly what it implements and what it does not.

pub mod auth;
pub mod faults;
mod http;
pub mod lists;
pub mod logs;
pub mod portforward;
pub mod protobuf;
pub mod resources;
pub mod spdy;
pub mod ssa;
pub mod store;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use resources::ResourceType;
use store::Store;

/// An error answered as a Kubernetes `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self {
            code,
            reason,
            message,
            details,
        }
    }
    fn details(rt: &ResourceType, name: &str) -> Value {
        json!({"name": name, "group": rt.group, "kind": rt.plural})
    }
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
            Some(Self::details(rt, name)),
        )
    }
    pub fn not_found_ns(ns: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        )
    }
    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            None,
        )
    }
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
            Some(Self::details(rt, name)),
        )
    }
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", rt.qualified()),
            Some(Self::details(rt, name)),
        )
    }
    pub fn invalid(rt: &ResourceType, name: &str, message: String, causes: Vec<Value>) -> Self {
        let mut details = json!({"name": name, "group": rt.group, "kind": rt.kind});
        if !causes.is_empty() {
            details["causes"] = Value::Array(causes);
        }
        Self::new(422, "Invalid", message, Some(details))
    }
    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message.to_owned(), None)
    }
    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified()),
            Some(Self::details(rt, name)),
        )
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        )
    }
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct})"
            ),
            None,
        )
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response()
    }
}

/// One kind of authorised request: (user, verb, API group, resource[/subresource], namespaced).
pub type AuditKey = (String, String, String, String, bool);

/// The user of the tests' own kubeconfig (`TestApiServer::kubeconfig`): a cluster administrator.
pub const ADMIN_TOKEN: &str = "testkit";
pub const ADMIN_USER: &str = "testkit-admin";

/// Shared state of a running server.
pub struct ServerState {
    pub store: Mutex<Store>,
    /// Requests served, for benchmarks.
    pub requests: AtomicU64,
    /// Write requests (POST, PUT, PATCH, DELETE) served, for "no write when nothing changed" checks.
    pub writes: AtomicU64,
    /// Requests by User-Agent header ("" when none): (reads, writes), to tell the operator's traffic from a test's.
    pub by_agent: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Bearer tokens and their users.
    pub tokens: Mutex<auth::Tokens>,
    /// Authorised resource requests per (user, verb, group, resource[/subresource], namespaced), for RBAC audits.
    pub audit: Mutex<std::collections::BTreeMap<AuditKey, u64>>,
    /// Where `pods/portforward` of (namespace, pod) leads: a local address standing in for the pod.
    pub port_forwards: Mutex<std::collections::HashMap<(String, String), portforward::Target>>,
    /// Dials pods that have no fixed mapping.
    pub port_forward_dialer: Mutex<Option<portforward::Dialer>>,
    /// Reads `pods/log` (the pod runner's kubelet).
    pub log_reader: Mutex<Option<logs::LogReader>>,
    /// Port-forward sessions opened, per protocol (`SPDY/3.1+portforward.k8s.io`, `SPDY/3.1`, `v5.channel.k8s.io`…).
    pub forward_sessions: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Bumped to cut every open port-forward.
    pub forward_cut: tokio::sync::watch::Sender<u64>,
    /// Faults to inject (none by default) and how many were.
    pub faults: Mutex<faults::Faults>,
    pub fault_counts: faults::FaultCounts,
}

/// A running test API server on loopback (HTTPS, with its own CA).
pub struct TestApiServer {
    addr: SocketAddr,
    certificates: tls::Certificates,
    state: Arc<ServerState>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApiServer {
    /// Whether built-in kinds are validated against the Kubernetes schemas (`kubernetes-validate` installed), and
    /// if not, why. Tests assert it, so that the check never goes missing silently.
    pub fn validates_builtin_kinds() -> Result<(), String> {
        crate::builtin_schemas::shared().map(|_| ()).map_err(str::to_owned)
    }

    /// Starts serving on `addr` (use port 0 for a free port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(ServerState {
            store: Mutex::new(Store::new()),
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            by_agent: Mutex::default(),
            tokens: Mutex::new({
                let mut tokens = auth::Tokens::default();
                tokens.insert(ADMIN_TOKEN, auth::UserInfo::new(ADMIN_USER, &[auth::MASTERS]));
                tokens
            }),
            audit: Mutex::default(),
            port_forwards: Mutex::new(Default::default()),
            port_forward_dialer: Mutex::new(None),
            log_reader: Mutex::new(None),
            forward_sessions: Mutex::default(),
            forward_cut: tokio::sync::watch::channel(0).0,
            faults: Mutex::new(faults::Faults::default()),
            fault_counts: faults::FaultCounts::default(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let certificates = tls::certificates(
            "appdb test API server CA",
            &["localhost"],
            &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        )
        .map_err(std::io::Error::other)?;
        let acceptor = tls::acceptor(&certificates).map_err(std::io::Error::other)?;
        let stop = CancellationToken::new();
        let app = http::router(state.clone());
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let (stream, _) = tokio::select! {
                        _ = stop.cancelled() => break,
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                    };
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    connections.spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                                use tower::ServiceExt;
                                app.clone().oneshot(request.map(axum::body::Body::new))
                            });
                        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                    // Reap finished connections so that the set does not grow with every request.
                    while connections.try_join_next().is_some() {}
                }
                // Open watches and port-forwards end with the server, as when a real one stops.
                connections.shutdown().await;
            })
        };
        Ok(Self {
            addr,
            certificates,
            state,
            stop,
            task: Some(task),
        })
    }

    /// The CA that signed the server's certificate (PEM), as kubeconfigs carry it.
    pub fn ca_pem(&self) -> &str {
        &self.certificates.ca_pem
    }

    /// The CA (DER), for TLS clients in process.
    pub fn ca_der(&self) -> &[u8] {
        &self.certificates.ca_der
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// (reads, writes) served to clients whose User-Agent starts with `prefix`.
    pub fn requests_from(&self, prefix: &str) -> (u64, u64) {
        let by_agent = self.state.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        by_agent
            .iter()
            .filter(|(agent, _)| agent.starts_with(prefix))
            .fold((0, 0), |(r, w), (_, (reads, writes))| (r + reads, w + writes))
    }

    /// How many stored objects of `(group, plural)` satisfy `predicate`, read in process (no request).
    pub fn count(&self, group: &str, plural: &str, predicate: impl Fn(&serde_json::Value) -> bool) -> usize {
        let store = self.state.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .objects
            .get(&(group.to_owned(), plural.to_owned()))
            .map(|objects| objects.values().filter(|o| predicate(o.object())).count())
            .unwrap_or(0)
    }

    /// A kubeconfig for this server as the tests' administrator (`system:masters`).
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with("testkit", ADMIN_TOKEN)
    }

    fn kubeconfig_with(&self, user: &str, token: &str) -> String {
        use base64::Engine;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: {user}\n    namespace: default\ncurrent-context: testkit\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
            self.url(),
            base64::engine::general_purpose::STANDARD.encode(self.ca_pem())
        )
    }

    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Injects `faults` into every resource request from now on (`Faults::default()` stops).
    pub fn set_faults(&self, faults: faults::Faults) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Port-forwards to pod `namespace/pod` lead to `addr` from now on.
    pub fn map_port_forward(&self, namespace: &str, pod: &str, addr: SocketAddr) {
        self.state
            .port_forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (namespace.to_owned(), pod.to_owned()),
                portforward::Target::Address(addr),
            );
    }

    /// Port-forwards to pods are dialled by `dial(namespace, pod, port)` (the pod runner's kubelet: into the pod's
    /// own network namespace), for pods without a fixed mapping.
    pub fn dial_port_forwards(&self, dial: portforward::Dialer) {
        *self.state.port_forward_dialer.lock().unwrap_or_else(|e| e.into_inner()) = Some(dial);
    }

    /// `pods/log` is answered by `read(namespace, pod, container)` (the pod runner's kubelet: the container's output).
    pub fn read_logs_with(&self, read: logs::LogReader) {
        *self.state.log_reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    /// Port-forward sessions opened so far, per protocol: which of kubectl's paths a test actually took.
    pub fn port_forward_sessions(&self) -> std::collections::BTreeMap<String, u64> {
        self.state
            .forward_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes every open port-forward (as a dropped connection or an API server restart would).
    pub fn cut_port_forwards(&self) {
        self.state.forward_cut.send_modify(|n| *n += 1);
    }

    /// A kubeconfig for a person: a new bearer token for `user` in `groups` (RBAC decides what they may do).
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> String {
        let token = self
            .state
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mint(auth::UserInfo::new(user, groups));
        self.kubeconfig_with(user, &token)
    }

    /// A kubeconfig for service account `namespace/name` (as its pods get from TokenRequest).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> String {
        let token = self
            .state
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mint(auth::UserInfo::service_account(namespace, name));
        self.kubeconfig_with(&format!("{namespace}-{name}"), &token)
    }

    /// A kube client configuration as the tests' administrator.
    pub fn admin_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("the server's URL"));
        config.auth_info.token = Some(ADMIN_TOKEN.to_owned().into());
        config.root_cert = Some(vec![self.ca_der().to_vec()]);
        config
    }

    /// Authorised resource requests so far: (user, verb, group, resource[/subresource], namespaced) → count.
    pub fn audit(&self) -> std::collections::BTreeMap<AuditKey, u64> {
        self.state.audit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the watch history: watches from older resource versions now get `410 Gone`.
    pub fn compact(&self) {
        self.state.store.lock().unwrap_or_else(|e| e.into_inner()).compact();
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
