//! Shared helpers of the end-to-end tests: an in-process test API server and the real `kubectl`.
#![allow(dead_code)]

use std::{path::PathBuf, process::Output, time::Duration};

use appdb_testkit::apiserver::TestApiServer;

/// A test API server with a kubeconfig and a private kubectl cache.
pub struct Cluster {
    pub server: TestApiServer,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        // Built-in kinds are validated against the Kubernetes schemas; a run without them would prove less.
        if let Err(why) = TestApiServer::validates_builtin_kinds() {
            panic!("the test API server cannot validate built-in kinds: {why}");
        }
        let server = TestApiServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("start test API server");
        let dir = tempfile::tempdir().expect("temp dir");
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("write kubeconfig");
        Cluster { server, dir }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs the real kubectl against this server. Fails the test loudly when kubectl is not installed.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl must be installed (scripts/test.sh checks it): {e}"));
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.expect("write stdin");
        }
        drop(input);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished within 60 s")
            .expect("kubectl output")
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl with a manifest on stdin that must succeed.
    pub async fn ok_stdin(&self, args: &[&str], manifest: &str) -> String {
        let out = self.kubectl_stdin(args, Some(manifest)).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Applies the project's CRDs the way a platform engineer does.
    pub async fn install_crds(&self) {
        let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
        self.ok(&["apply", "--server-side", "-f", crds]).await;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts the real operator binary against `cluster` as its service account under the chart's RBAC, with leader
/// election off, probes and metrics on `port`, and the given extra flags. Killed when the returned child is dropped.
pub async fn spawn_operator(cluster: &Cluster, port: u16, flags: &[&str]) -> tokio::process::Child {
    let kubeconfig = operator_kubeconfig(cluster).await;
    tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--leader-election",
            "false",
        ])
        .args(flags)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start appdb-operator")
}

/// Server-side applies `yaml` with kubectl; must succeed.
pub async fn apply(c: &Cluster, yaml: &str) {
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], yaml).await;
}

/// `kubectl get <what> -n acme -o jsonpath=<path>` (the examples' customer namespace).
pub async fn get(c: &Cluster, what: &str, path: &str) -> String {
    c.ok(&["get", what, "-n", "acme", "-o", &format!("jsonpath={path}")])
        .await
}

/// Like [`get`], or `None` while the object does not exist.
pub async fn try_get(c: &Cluster, what: &str, path: &str) -> Option<String> {
    let out = c
        .kubectl(&["get", what, "-n", "acme", "-o", &format!("jsonpath={path}")])
        .await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the cluster does for a database: once the operator created StatefulSet `name` in `ns`, it reports one
/// ready replica.
pub async fn mark_statefulset_ready(c: &Cluster, ns: &str, name: &str) {
    eventually(30, &format!("StatefulSet {ns}/{name}"), || async {
        c.kubectl(&["get", "sts", name, "-n", ns])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    c.ok(&[
        "patch",
        "sts",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
    ])
    .await;
}

/// What a cloud's load balancer controller does for VPN connection `vpn` in `ns`: each tunnel's Service gets its
/// outside address.
pub async fn give_outside_addresses(c: &Cluster, ns: &str, vpn: &str, addresses: [&str; 2]) {
    for (tunnel, ip) in addresses.iter().enumerate() {
        let svc = format!("{vpn}-tunnel{}", tunnel + 1);
        eventually(30, &svc, || async {
            c.kubectl(&["get", "svc", &svc, "-n", ns])
                .await
                .status
                .success()
                .then_some(())
        })
        .await;
        let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{ip}"}}]}}}}}}"#);
        c.ok(&[
            "patch",
            "svc",
            &svc,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .await;
    }
}

/// Waits until AppDatabase `name` (namespace acme) is "Ready To Use".
pub async fn wait_ready_to_use(c: &Cluster, name: &str) {
    eventually(30, &format!("{name} Ready To Use"), || async {
        (get(c, &format!("adb/{name}"), "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
}

/// The chart's objects as Helm renders them with the default values (release `appdb-operator` in `appdb-system`),
/// rendered once per test binary with the real Helm engine (scripts/helm-render.py).
pub fn chart_objects() -> &'static [serde_json::Value] {
    chart_rendered()["objects"].as_array().expect("objects")
}

/// NOTES.txt as Helm renders it for the tests' values: what `helm install` prints.
pub fn chart_notes() -> &'static str {
    chart_rendered()["manifests"]
        .as_object()
        .expect("manifests")
        .iter()
        .find(|(path, _)| path.ends_with("templates/NOTES.txt"))
        .and_then(|(_, text)| text.as_str())
        .expect("NOTES.txt rendered")
}

/// The chart rendered by the real Helm engine with the tests' values: objects and manifests.
fn chart_rendered() -> &'static serde_json::Value {
    static RENDERED: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    RENDERED.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/helm-render.py"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/appdb-operator"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/chart-values.yaml"))
            .output()
            .unwrap_or_else(|e| panic!("python3 with helm-python-sdk is required (scripts/test.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "Helm refused the chart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from helm-render.py")
    })
}

/// Applies the chart's objects of the given kinds (as an administrator), in the release namespace where namespaced.
pub async fn apply_chart(c: &Cluster, kinds: &[&str]) {
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: appdb-system}\n").await;
    for object in chart_objects().iter().filter(|o| kinds.iter().any(|k| o["kind"] == *k)) {
        let mut object = object.clone();
        if object["metadata"].get("namespace").is_none()
            && !object["kind"].as_str().unwrap_or("").starts_with("Cluster")
        {
            object["metadata"]["namespace"] = "appdb-system".into();
        }
        apply(c, &serde_json::to_string(&object).expect("JSON")).await;
    }
}

/// A kubeconfig for the operator's service account under the chart's own RBAC (its ServiceAccount, ClusterRole,
/// leader-election Role and their bindings are applied first): a missing permission fails a test as it would fail
/// in a cluster.
pub async fn operator_kubeconfig(c: &Cluster) -> PathBuf {
    let path = c.dir.path().join("operator-kubeconfig");
    if !path.exists() {
        apply_chart(
            c,
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await;
        std::fs::write(
            &path,
            c.server.service_account_kubeconfig("appdb-system", "appdb-operator"),
        )
        .expect("write the operator's kubeconfig");
    }
    path
}

/// A kubeconfig for person `user`, bound in `namespace` to the chart's ClusterRole `cluster_role` with a RoleBinding
/// named `binding`.
pub async fn person_kubeconfig(c: &Cluster, user: &str, namespace: &str, cluster_role: &str, binding: &str) -> PathBuf {
    apply_chart(c, &["ClusterRole"]).await;
    apply(
        c,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {binding}, namespace: {namespace}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {cluster_role}}}\nsubjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"{user}\"}}\n"
        ),
    )
    .await;
    let path = c.dir.path().join(format!("kubeconfig-{binding}"));
    std::fs::write(&path, c.server.user_kubeconfig(user, &[])).expect("write kubeconfig");
    path
}

/// What a reporting pod's agent or Job writes: `report` under the pod's name in the report ConfigMap
/// `configmap` (the operator creates it; this waits until it exists).
pub async fn write_report(c: &Cluster, ns: &str, configmap: &str, pod: &str, report: &str) {
    let patch = serde_json::json!({"data": {pod: report}}).to_string();
    eventually(30, &format!("the report ConfigMap {configmap}"), || async {
        c.kubectl(&["patch", "configmap", configmap, "-n", ns, "--type=merge", "-p", &patch])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
}

/// The migration Job pod `pod`'s report ConfigMap: `<migration>-copy-report`, the migration read off the pod's
/// name (`<migration>-copy-<suffix>` or `<migration>-rollback-<suffix>`).
pub fn migration_report_configmap(pod: &str) -> String {
    let job = pod.rsplit_once('-').map_or(pod, |(job, _)| job);
    let migration = job
        .strip_suffix("-copy")
        .or_else(|| job.strip_suffix("-rollback"))
        .unwrap_or(job);
    format!("{migration}-copy-report")
}

/// Starts the real `kubectl port-forward ARGS` as the user of `kubeconfig`, over SPDY in a WebSocket (`websockets`,
/// kubectl's default) or plain SPDY, and returns it with the local 127.0.0.1 port it reports; or what it said on
/// stderr when it gave up instead.
pub async fn kubectl_port_forward(
    c: &Cluster,
    kubeconfig: &std::path::Path,
    args: &[&str],
    websockets: bool,
) -> Result<(tokio::process::Child, u16), String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut child = tokio::process::Command::new("kubectl")
        .arg("port-forward")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", c.dir.path())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl must be installed (scripts/test.sh checks it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kubectl port-forward reported or gave up within 30 s")
        .expect("stdout");
    let Some(line) = line else {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr).await;
        }
        return Err(stderr);
    };
    // "Forwarding from 127.0.0.1:40215 -> 3306"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl port-forward's first line names the local port: {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}
