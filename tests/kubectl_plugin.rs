//! `kubectl appdb` as kubectl runs it (found on PATH as `kubectl-appdb`), against the test API server with the
//! real operator: a real MySQL or MariaDB server stands behind the database's pod (the test API server's
//! port-forward leads to it), the engine's real client queries through the tunnel, the tunnel survives a cut forward, and the three
//! errors of the seeds come out with their own exit codes.

mod support;

use std::{process::Output, time::Duration};

use appdb_testkit::{
    dbserver::{DbServer, Engine},
    on_both_engines,
};
use mysql_async::prelude::Queryable;
use support::{
    Cluster, apply, eventually, free_port, get, give_outside_addresses, kubectl_port_forward, mark_statefulset_ready,
    spawn_operator, wait_ready_to_use,
};
use tokio::io::AsyncBufReadExt;

const ROOT: &str = "TunnelRootPassw0rd";

/// kubectl with the plugin's folder first on PATH, as a user who installed it would have, with the given
/// kubeconfig (the administrator's, or a person's own identity).
fn kubectl_appdb_as(c: &Cluster, kubeconfig: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-appdb"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("appdb")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(c: &Cluster, args: &[&str]) -> Output {
    run_as(c, &c.kubeconfig(), args).await
}

async fn run_as(c: &Cluster, kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), kubectl_appdb_as(c, kubeconfig, args).output())
        .await
        .expect("kubectl appdb finished")
        .expect("run kubectl appdb")
}

/// Starts a tunnel and waits until it says where to connect.
async fn start_tunnel(c: &Cluster, args: &[&str]) -> (tokio::process::Child, String) {
    start_tunnel_as(c, &c.kubeconfig(), args).await
}

async fn start_tunnel_as(c: &Cluster, kubeconfig: &std::path::Path, args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = kubectl_appdb_as(c, kubeconfig, args).spawn().expect("start the tunnel");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the tunnel reported within 30 s")
        .expect("stdout")
        .expect("a line");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, line)
}

/// The engine's real command-line client (`mysql` / `mariadb`) through the tunnel.
async fn client_query(engine: Engine, port: u16, sql: &str) -> Result<String, String> {
    client_query_at(engine, "127.0.0.1", port, sql).await
}

async fn client_query_at(engine: Engine, host: &str, port: u16, sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new(engine.client())
        .args([
            "--no-defaults",
            "--protocol=tcp",
            &format!("-h{host}"),
            &format!("-P{port}"),
            "-uroot",
            &format!("--password={ROOT}"),
            "-N",
            "-e",
            sql,
        ])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The AppDatabase's `engine` and the image its pod runs.
fn engine_and_image(engine: Engine) -> (&'static str, &'static str) {
    match engine {
        Engine::MySql => ("MySQL", "mysql:8.4"),
        Engine::MariaDb => ("MariaDB", "mariadb:11.4"),
    }
}

fn flag_list(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| f.to_string()).collect()
}

/// Reports the pod's readiness as a kubelet would (no kubelet runs in these tests).
async fn set_pod_ready(c: &Cluster, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(r#"{{"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#);
    c.ok(&[
        "patch",
        "pod",
        pod,
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
}

/// The operator, a ready database whose pod is a real server of `engine`, and a VPN connection with outside
/// addresses.
async fn setup(c: &Cluster, engine: Engine) -> (tokio::process::Child, DbServer) {
    let (engine_name, image) = engine_and_image(engine);
    c.install_crds().await;
    let op = spawn_operator(c, free_port(), &["--allow-documentation-gateways", "true"]).await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n").await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {{name: orders, namespace: acme}}\nspec:\n  network: prod\n  engine: {engine_name}\n  admin: {{username: acme_admin, passwordSecretRef: {{name: orders-admin, key: password}}}}\n  storage: {{size: 1Gi}}\n")).await;
    eventually(30, "the database's StatefulSet and Service", || async {
        (c.kubectl(&["get", "sts/orders", "svc/orders", "-n", "acme"])
            .await
            .status
            .success())
        .then_some(())
    })
    .await;
    mark_statefulset_ready(c, "acme", "orders").await;
    // The StatefulSet's pod, as the cluster would run it, with the labels the Service selects.
    let selector: serde_json::Value =
        serde_json::from_str(&get(c, "svc/orders", "{.spec.selector}").await).expect("selector");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-0", "namespace": "acme", "labels": selector},
        "spec": {"containers": [{"name": "database", "image": image, "ports": [{"name": "mysql", "containerPort": 3306}]}]}
    });
    apply(c, &pod.to_string()).await;
    set_pod_ready(c, "orders-0", true).await;
    let db = DbServer::start(engine, ROOT).await;
    c.server
        .map_port_forward("acme", "orders-0", ([127, 0, 0, 1], db.port).into());
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n").await;
    give_outside_addresses(c, "acme", "seattle", ["203.0.113.10", "203.0.113.11"]).await;
    wait_ready_to_use(c, "orders").await;
    (op, db)
}

async fn the_tunnel_reaches_the_database_follows_drops_and_refuses_clearly(engine: Engine) {
    let c = Cluster::start().await;
    let (_op, db) = setup(&c, engine).await;
    client_query(
        engine,
        db.port,
        "CREATE DATABASE shop; CREATE TABLE shop.t (v INT); INSERT INTO shop.t VALUES (42)",
    )
    .await
    .expect("seed");

    // A person with the chart's appdb-tunnel-user role in acme, and nothing else.
    let alice = support::person_kubeconfig(&c, "alice@example.com", "acme", "appdb-tunnel-user", "alice-tunnel").await;
    let port = free_port();
    let (mut tunnel, line) = start_tunnel_as(
        &c,
        &alice,
        &["tunnel", "orders", "-n", "acme", "--local-port", &port.to_string()],
    )
    .await;
    assert!(
        line.contains(&format!("connect to tcp://localhost:{port}")) && line.contains("-u acme_admin"),
        "{line}"
    );
    // Both loopback families listen (this machine has ::1), as kubectl port-forward does: a client that resolves
    // `localhost` to ::1 first reaches the database too.
    assert!(
        line.contains(&format!("listening on 127.0.0.1:{port} and [::1]:{port}")),
        "{line}"
    );
    for host in ["127.0.0.1", "::1"] {
        assert_eq!(
            client_query_at(engine, host, port, "SELECT v FROM shop.t")
                .await
                .as_deref(),
            Ok("42"),
            "through {host}"
        );
    }

    // A session open through the tunnel while the forward is cut: it breaks; the next connection works again.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(ROOT))
        .prefer_socket(false);
    let mut session = mysql_async::Conn::new(opts.clone())
        .await
        .expect("connect through the tunnel");
    assert_eq!(session.query_first::<i64, _>("SELECT 1").await.expect("query"), Some(1));
    c.server.cut_port_forwards();
    let mut broken = false;
    for _ in 0..50 {
        if session.query_first::<i64, _>("SELECT 1").await.is_err() {
            broken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(broken, "the session carried by the cut forward must break");
    let mut again = mysql_async::Conn::new(opts)
        .await
        .expect("a new connection through the same tunnel");
    assert_eq!(
        again
            .query_first::<i64, _>("SELECT v FROM shop.t")
            .await
            .expect("query"),
        Some(42)
    );
    assert_eq!(
        client_query(engine, port, "SELECT COUNT(*) FROM shop.t")
            .await
            .as_deref(),
        Ok("1")
    );

    // A copying migration switches the database's Service to another pod: new connections follow it.
    let moved = DbServer::start(engine, ROOT).await;
    client_query(
        engine,
        moved.port,
        "CREATE DATABASE shop; CREATE TABLE shop.t (v INT); INSERT INTO shop.t VALUES (43)",
    )
    .await
    .expect("seed the new server");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-4f1a2b-0", "namespace": "acme", "labels": {"app.kubernetes.io/instance": "orders-4f1a2b", "moved": "yes"}},
        "spec": {"containers": [{"name": "database", "image": engine_and_image(engine).1}]}
    });
    apply(&c, &pod.to_string()).await;
    set_pod_ready(&c, "orders-4f1a2b-0", true).await;
    c.server
        .map_port_forward("acme", "orders-4f1a2b-0", ([127, 0, 0, 1], moved.port).into());
    // What the AppDatabase controller does at `promote` (here by hand: the operator's own switch is tested in
    // tests/database_migration.rs); the operator would put it back, so it is stopped first.
    drop(_op);
    c.ok(&["patch", "svc", "orders", "-n", "acme", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/selector","value":{"app.kubernetes.io/instance":"orders-4f1a2b","moved":"yes"}}]"#]).await;
    assert_eq!(
        client_query(engine, port, "SELECT v FROM shop.t").await.as_deref(),
        Ok("43")
    );
    moved.stop().await;

    // The port is taken now: the binding error.
    let out = run(
        &c,
        &["tunnel", "orders", "-n", "acme", "--local-port", &port.to_string()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!("while binding to tcp://localhost:{port}")),
        "{stderr}"
    );

    // No such database: "Tunnel not found".
    let out = run(
        &c,
        &[
            "tunnel",
            "billing",
            "-n",
            "acme",
            "--local-port",
            &free_port().to_string(),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Tunnel not found") && stderr.contains("billing"),
        "{stderr}"
    );

    // Alice's RoleBinding is removed: "Access denied", naming the missing permission.
    c.ok(&["delete", "rolebinding", "alice-tunnel", "-n", "acme"]).await;
    let out = run_as(
        &c,
        &alice,
        &[
            "tunnel",
            "orders",
            "-n",
            "acme",
            "--local-port",
            &free_port().to_string(),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("Access denied") && stderr.contains("get appdatabases.appdb.dev") && stderr.contains("acme"),
        "{stderr}"
    );
    // The API server refuses the forward itself too: the running tunnel's connections fail, nothing leaks.
    assert!(client_query(engine, port, "SELECT 1").await.is_err());
    tunnel.kill().await.expect("stop the tunnel");
    db.stop().await;
}

/// `spec.tunnel.allowed`: two users and a group, impersonated against the test API server's RBAC. Only they open a
/// tunnel, only to this database, and losing the entry revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tunnel_access_is_given_per_database_to_users_and_groups() {
    let c = Cluster::start().await;
    let engine = Engine::MariaDb;
    let (_op, db) = setup(&c, engine).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: billing, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n  tunnel:\n    allowed: [{kind: User, name: carol@example.com}]\n").await;
    let allow = |subjects: &str| {
        let patch = format!(r#"{{"spec":{{"tunnel":{subjects}}}}}"#);
        let c = &c;
        async move {
            c.ok(&["patch", "adb", "orders", "-n", "acme", "--type=merge", "-p", &patch])
                .await
        }
    };
    allow(r#"{"allowed":[{"kind":"User","name":"alice@example.com"},{"kind":"Group","name":"dbas"}]}"#).await;
    let subjects = || async {
        c.kubectl(&[
            "get",
            "rolebinding",
            "orders-tunnel",
            "-n",
            "acme",
            "-o",
            "jsonpath={.subjects[*].name}",
        ])
        .await
    };
    eventually(30, "the tunnel RoleBinding lists alice and dbas", || async {
        (String::from_utf8_lossy(&subjects().await.stdout) == "alice@example.com dbas").then_some(())
    })
    .await;
    // Port-forward to exactly the database's pod.
    assert_eq!(
        get(
            &c,
            "role/orders-tunnel",
            r#"{.rules[?(@.resources[0]=="pods/portforward")].resourceNames}"#
        )
        .await,
        r#"["orders-0"]"#
    );

    let person = |user: &str, groups: &[&str]| {
        let path = c.dir.path().join(format!("kubeconfig-{user}"));
        std::fs::write(&path, c.server.user_kubeconfig(user, groups)).expect("kubeconfig");
        path
    };
    let alice = person("alice@example.com", &[]);
    let bob = person("bob@example.com", &["dbas"]);
    let carol = person("carol@example.com", &[]);
    let opens_with = |kubeconfig: std::path::PathBuf, database: &'static str, flags: Vec<String>| {
        let c = &c;
        async move {
            let port = free_port().to_string();
            let mut args = vec!["tunnel", database, "-n", "acme", "--local-port", port.as_str()];
            args.extend(flags.iter().map(String::as_str));
            let mut child = kubectl_appdb_as(c, &kubeconfig, &args)
                .spawn()
                .expect("start the tunnel");
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the tunnel answered within 30 s")
                .expect("stdout");
            let status = match line {
                Some(_) => None,
                None => Some(child.wait().await.expect("exit status").code()),
            };
            let _ = child.kill().await;
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr).await;
            }
            (status.is_none(), status.flatten(), stderr)
        }
    };
    let opens = |kubeconfig: std::path::PathBuf, database: &'static str| opens_with(kubeconfig, database, Vec::new());
    // The user, and a member of the group, open it.
    assert!(opens(alice.clone(), "orders").await.0, "alice is listed");
    assert!(opens(bob.clone(), "orders").await.0, "bob is in dbas");
    // Without the plugin: plain kubectl port-forward to the database's Service, with the same access, and the
    // engine's real client through it. Listed at another database only: refused by the API server.
    let (mut forward, port) = kubectl_port_forward(&c, &bob, &["-n", "acme", "svc/orders", ":3306"], true)
        .await
        .expect("bob forwards with kubectl port-forward");
    assert_eq!(client_query(engine, port, "SELECT 1").await.as_deref(), Ok("1"));
    forward.kill().await.expect("stop kubectl");
    let refused = kubectl_port_forward(&c, &carol, &["-n", "acme", "pod/orders-0", ":3306"], true)
        .await
        .map(|_| ())
        .expect_err("carol may not forward to orders");
    assert!(
        refused.contains("User \"carol@example.com\" cannot get resource \"pods\""),
        "{refused}"
    );
    // Somebody else, and a listed user at another database: "Access denied".
    for (who, kubeconfig, database) in [("carol", carol.clone(), "orders"), ("alice", alice.clone(), "billing")] {
        let (opened, code, stderr) = opens(kubeconfig, database).await;
        assert!(!opened, "{who} opened a tunnel to {database}");
        assert_eq!(code, Some(4), "{who} → {database}: {stderr}");
        assert!(
            stderr.contains("Access denied") && stderr.contains("spec.tunnel.allowed"),
            "{stderr}"
        );
    }
    // kubectl's own flags, through the kube client's kubeconfig options: impersonation from the administrator's
    // kubeconfig, and --kubeconfig over $KUBECONFIG.
    let admin = c.kubeconfig();
    assert!(
        opens_with(admin.clone(), "orders", flag_list(&["--as", "alice@example.com"]))
            .await
            .0
    );
    assert!(
        opens_with(
            admin.clone(),
            "orders",
            flag_list(&["--as", "dave@example.com", "--as-group", "dbas"])
        )
        .await
        .0
    );
    assert_eq!(
        opens_with(admin.clone(), "orders", flag_list(&["--as", "dave@example.com"]))
            .await
            .1,
        Some(4)
    );
    let flags = vec!["--kubeconfig".to_owned(), carol.display().to_string()];
    assert_eq!(
        opens_with(admin.clone(), "orders", flags).await.1,
        Some(4),
        "--kubeconfig wins over $KUBECONFIG"
    );
    let (opened, code, stderr) =
        opens_with(admin.clone(), "orders", flag_list(&["--context", "no-such-context"])).await;
    assert!(
        !opened && code == Some(1) && stderr.contains("no-such-context"),
        "{code:?} {stderr}"
    );
    // Alice leaves the list: revoked at once; the group keeps its access. No list at all: nobody.
    allow(r#"{"allowed":[{"kind":"Group","name":"dbas"}]}"#).await;
    eventually(30, "alice revoked", || async {
        (String::from_utf8_lossy(&subjects().await.stdout) == "dbas").then_some(())
    })
    .await;
    assert_eq!(opens(alice.clone(), "orders").await.1, Some(4));
    assert!(opens(bob.clone(), "orders").await.0);
    allow("null").await;
    eventually(30, "everyone revoked", || async {
        String::from_utf8_lossy(&subjects().await.stdout)
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(opens(bob, "orders").await.1, Some(4));
    db.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tunnel_file_opens_several_and_status_and_vpn_config_show_the_namespace() {
    let c = Cluster::start().await;
    let engine = Engine::MariaDb;
    let (_op, db) = setup(&c, engine).await;
    let (first, second) = (free_port(), free_port());
    let file = c.dir.path().join("tunnels.yaml");
    std::fs::write(
        &file,
        format!(
            "tunnels:\n- database: orders\n  namespace: acme\n  localPort: {first}\n- database: billing\n  namespace: acme\n- database: orders\n  namespace: acme\n  localPort: {second}\n"
        ),
    )
    .expect("write the tunnel file");
    // The missing database is reported by name; the other two still open.
    let (mut tunnel, _) = start_tunnel(&c, &["tunnel", "--config", file.to_str().unwrap()]).await;
    for port in [first, second] {
        let answer = eventually(10, "a query through each tunnel", || async {
            client_query(engine, port, "SELECT 7").await.ok()
        })
        .await;
        assert_eq!(answer, "7");
    }
    tunnel.kill().await.expect("stop");
    let mut stderr = String::new();
    if let Some(mut e) = tunnel.stderr.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr)
            .await
            .expect("stderr");
    }
    assert!(
        stderr.contains("error: acme/billing: Tunnel not found") && stderr.contains("no database \"billing\""),
        "{stderr}"
    );

    let out = run(&c, &["status", "-n", "acme"]).await;
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(status.contains("prod  10.20.30.64/26  Production  Ready"), "{status}");
    assert!(
        status.contains("orders  Ready To Use  prod     orders.acme.svc.cluster.local:3306"),
        "{status}"
    );
    assert!(
        status.contains("seattle") && status.contains("203.0.113.10"),
        "{status}"
    );
    assert!(
        status.contains("MIGRATIONS\nNAME  DATABASE  TARGET  STRATEGY  SCHEDULED  STATE\n(none)"),
        "{status}"
    );

    // A namespace that does not exist: an error with its own exit code, not empty tables.
    let out = run(&c, &["status", "-n", "acme-typo"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("namespace acme-typo does not exist"), "{stderr}");

    let out = run(&c, &["vpn-config", "seattle", "--list-devices"]).await;
    let devices = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        devices.lines().count(),
        appdb_operator::vpn::render::DEVICE_FORMATS.len(),
        "{devices}"
    );
    assert!(
        devices.contains("strongswan.conf ") && devices.contains("mikrotik.rsc"),
        "{devices}"
    );
    let config = eventually(30, "the VPN configuration", || async {
        let out = run(
            &c,
            &[
                "vpn-config",
                "seattle",
                "-n",
                "acme",
                "--device",
                "strongswan-swanctl.conf",
            ],
        )
        .await;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert!(
        config.contains("connections") && config.contains("203.0.113.10"),
        "{config}"
    );
    let out = run(&c, &["vpn-config", "nowhere", "-n", "acme"]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = run(
        &c,
        &["vpn-config", "seattle", "-n", "acme", "--device", "carrier-pigeon"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));

    // No ready pod behind the database: the tunnel is refused, saying why, instead of failing every client later.
    set_pod_ready(&c, "orders-0", false).await;
    let out = run(
        &c,
        &[
            "tunnel",
            "orders",
            "-n",
            "acme",
            "--local-port",
            &free_port().to_string(),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Tunnel not found") && stderr.contains("no pod of database \"orders\" is ready"),
        "{stderr}"
    );
    db.stop().await;
}

/// The chart's `appdb-tunnel-user` ClusterRole grants exactly what the plugin checks before opening a tunnel, and
/// the pod read plain `kubectl port-forward` adds.
#[test]
fn the_charts_tunnel_role_grants_what_the_plugin_checks() {
    let template = std::fs::read_to_string("charts/appdb-operator/templates/user-roles.yaml").expect("template");
    let plain: String = template
        .lines()
        .filter(|l| !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let first = plain.split("\n---\n").next().expect("first document");
    let role: serde_json::Value = serde_saphyr::from_str(first).expect("YAML");
    assert_eq!(role["metadata"]["name"], "appdb-tunnel-user");
    let mut granted = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.push(format!(
                        "{} {}/{}",
                        verb.as_str().unwrap(),
                        group.as_str().unwrap(),
                        resource.as_str().unwrap()
                    ));
                }
            }
        }
    }
    let mut needed: Vec<String> = appdb_operator::plugin::tunnel::NEEDED
        .iter()
        .chain(appdb_operator::plugin::tunnel::ALSO_FOR_KUBECTL_PORT_FORWARD)
        .map(|(verb, group, resource, sub)| {
            let full = if sub.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{sub}")
            };
            format!("{verb} {group}/{full}")
        })
        .collect();
    granted.sort();
    needed.sort();
    assert_eq!(granted, needed);
}

on_both_engines!(the_tunnel_reaches_the_database_follows_drops_and_refuses_clearly);

/// A kubeconfig whose only cluster is `server` (any token; the server is never reached or never answers).
fn kubeconfig_for(c: &Cluster, name: &str, server: &str) -> std::path::PathBuf {
    let path = c.dir.path().join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: acme}}\ncurrent-context: x\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// A server that accepts connections and never answers (a hung API server, or a load balancer in front of
/// nothing) stops every command after the request timeout, 30 s unless `--request-timeout` says otherwise; a
/// refused connection says so. Each error names the server and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_refusing_server_is_named_with_its_cause_within_the_request_timeout() {
    let c = Cluster::start().await;
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("https://127.0.0.1:{}", hanging.local_addr().unwrap().port());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            open.push(socket);
        }
    });
    let silent = kubeconfig_for(&c, "silent", &hanging_url);
    let expect_failure = |out: &Output, cause: &str, server: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the Kubernetes API server at {server}: {cause}")),
            "{stderr}"
        );
        assert_eq!(stderr.matches("error:").count(), 1, "says error once: {stderr}");
    };
    let out = run_as(&c, &silent, &["status", "--request-timeout", "2s"]).await;
    expect_failure(&out, "no answer within 2s (--request-timeout)", &hanging_url);
    let out = run_as(
        &c,
        &silent,
        &["tunnel", "orders", "--request-timeout", "1", "--local-port", "0"],
    )
    .await;
    expect_failure(&out, "no answer within 1s (--request-timeout)", &hanging_url);
    // The default: 30 s, not the 400 s and more it used to wait.
    let out = run_as(&c, &silent, &["vpn-config", "seattle"]).await;
    expect_failure(&out, "no answer within 30s (--request-timeout)", &hanging_url);
    held.abort();

    let closed = free_port();
    let refused_url = format!("https://127.0.0.1:{closed}");
    let refused = kubeconfig_for(&c, "refused", &refused_url);
    let out = run_as(&c, &refused, &["status"]).await;
    expect_failure(&out, "Connection refused", &refused_url);
}

/// kubectl's plugin completion (`kubectl __complete appdb …`, what the shell scripts of `kubectl completion` call)
/// finds `kubectl_complete-appdb` on PATH, as shipped in `plugins/`, and offers subcommands, database names,
/// connection names, device names and namespaces from the test API server, honouring `-n` and `--kubeconfig`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_completion_through_kubectl_offers_names_from_the_cluster() {
    let c = Cluster::start().await;
    c.install_crds().await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: globex}\n").await;
    for (ns, db) in [("acme", "orders"), ("acme", "billing"), ("globex", "ledger")] {
        apply(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {{name: {db}, namespace: {ns}}}\nspec:\n  network: prod\n  admin: {{username: acme_admin, passwordSecretRef: {{name: a, key: password}}}}\n  storage: {{size: 1Gi}}\n")).await;
    }
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n").await;

    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-appdb"))
        .parent()
        .unwrap()
        .to_owned();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        shipped.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = c.dir.path().to_owned();
    let complete = |args: Vec<String>| {
        let path = path.clone();
        let kubeconfig = c.kubeconfig();
        let home = home.clone();
        async move {
            let out = tokio::process::Command::new("kubectl")
                .arg("__complete")
                .arg("appdb")
                .args(&args)
                .env("PATH", path)
                .env("KUBECONFIG", kubeconfig)
                .env("HOME", home)
                .output()
                .await
                .expect("run kubectl __complete");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut lines: Vec<String> = stdout
                .lines()
                .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
                .collect();
            let directive = lines.pop().unwrap_or_default();
            (lines, directive)
        }
    };
    let words = |text: &str| -> Vec<String> {
        let mut words: Vec<String> = text.split(' ').map(str::to_owned).collect();
        if text.is_empty() {
            words = vec![String::new()];
        }
        words
    };
    for (typed, expected, directive) in [
        ("", vec!["tunnel", "vpn-config", "status", "help"], ":4"),
        ("tunnel -n acme ", vec!["billing", "orders"], ":4"),
        ("-n acme tunnel o", vec!["orders"], ":4"),
        ("tunnel -n globex ", vec!["ledger"], ":4"),
        ("vpn-config -n acme ", vec!["seattle"], ":4"),
        ("vpn-config seattle --device cisco", vec!["cisco-ios.txt"], ":4"),
        ("status -n gl", vec!["globex"], ":4"),
        ("tunnel --config ", vec![], ":0"),
    ] {
        let (mut got, got_directive) = complete(words(typed)).await;
        got.sort();
        let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        expected.sort();
        assert_eq!(
            (got, got_directive.as_str()),
            (expected, directive),
            "completing {typed:?}"
        );
    }
    // Another cluster's kubeconfig, named on the command line, is the one asked (here: one that is not there).
    let (got, _) = complete(words("--kubeconfig /nonexistent tunnel -n acme ")).await;
    assert!(got.is_empty(), "{got:?}");
}
