//! End to end on the pod runner: the real operator and kubectl against the test API server, every pod the operator
//! creates running as real processes under its own spec (testkit::pods::kubelet), with Services, cluster DNS and
//! NetworkPolicy enforced by packets. Each test shows something no earlier test shows.
//! Needs root, iproute2, nftables, kubectl, MySQL and MariaDB (scripts/test.sh installs them).

mod support;

#[path = "support/real_cluster.rs"]
mod real_cluster;

#[path = "support/netns.rs"]
#[allow(dead_code)]
mod netns;

#[path = "support/charon.rs"]
#[allow(dead_code)]
mod charon;

use std::{net::SocketAddr, time::Duration};

use appdb_testkit::{dbserver::Engine, on_both_engines, pods::netns_socket};
use real_cluster::RealCluster;
use support::{apply, eventually, free_port, get, spawn_operator};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/acme");
const SESSION: &str = "appdb-test/session:latest";
const ADMIN_PASSWORD: &str = "change-me-Secur3!";
/// The cloud metadata address, with a stand-in listening on it (on the node) for the isolation test.
const METADATA: &str = "169.254.169.254";

fn client(engine: Engine) -> &'static str {
    match engine {
        Engine::MySql => "mysql",
        Engine::MariaDb => "mariadb",
    }
}

/// The acme example's namespace, network and database (for `engine`), applied with kubectl, and the operator.
async fn acme(rc: &RealCluster, engine: Engine) -> tokio::process::Child {
    acme_with(rc, engine, &[]).await
}

async fn acme_with(rc: &RealCluster, engine: Engine, operator_flags: &[&str]) -> tokio::process::Child {
    let c = &rc.c;
    c.install_crds().await;
    let operator = spawn_operator(c, free_port(), operator_flags).await;
    for file in ["00-namespace.yaml", "10-network.yaml"] {
        c.ok(&["apply", "--server-side", "-f", &format!("{EXAMPLES}/{file}")])
            .await;
    }
    let database = std::fs::read_to_string(format!("{EXAMPLES}/20-database.yaml")).expect("example");
    let database = match engine {
        Engine::MySql => database,
        Engine::MariaDb => database
            .replace("engine: MySQL", "engine: MariaDB")
            .replace("version: \"8.4\"", "version: \"11.4\""),
    };
    apply(c, &database).await;
    eventually(240, "orders Ready To Use", || async {
        (get(c, "adb/orders", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
    operator
}

/// A customer's session pod (`appdb.dev/role: session`) in `ns`, running.
async fn session(rc: &RealCluster, ns: &str, name: &str) {
    apply(
        &rc.c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{appdb.dev/role: session}}}}\nspec:\n  containers:\n  - {{name: main, image: {SESSION}}}\n"
        ),
    )
    .await;
    eventually(60, &format!("session {ns}/{name} runs"), || async {
        (rc.jsonpath(ns, &format!("pod/{name}"), "{.status.phase}").await == "Running").then_some(())
    })
    .await;
}

/// A query from inside a pod with the engine's client; the client's error when it fails.
async fn query_from(
    rc: &RealCluster,
    ns: &str,
    pod: &str,
    engine: Engine,
    host: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let out = rc
        .kubelet
        .exec(
            ns,
            pod,
            "main",
            &[
                client(engine),
                "--connect-timeout=3",
                "-N",
                "-h",
                host,
                "-uacme_admin",
                &format!("-p{password}"),
                "-e",
                sql,
            ],
        )
        .await?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Whether a pod can open a TCP connection to `host:port` within 3 s.
async fn connects(rc: &RealCluster, ns: &str, pod: &str, host: &str, port: u16) -> bool {
    connects_from(rc, ns, pod, "main", host, port).await
}

/// Like [`connects`], from a named container. With bash's `/dev/tcp`, which every image here has and every user may
/// run (the database image's uid 999 cannot run the machine's python3), so that a "no" means the connection failed,
/// not the probe; each test also shows a "yes" from the same container.
async fn connects_from(rc: &RealCluster, ns: &str, pod: &str, container: &str, host: &str, port: u16) -> bool {
    let script = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' && echo connected");
    rc.kubelet
        .exec(ns, pod, container, &["bash", "-c", &script])
        .await
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("connected"))
}

async fn the_acme_example_isolates_its_database_from_a_hostile_neighbour(engine: Engine) {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    // A stand-in for the cloud metadata service, on the node (where a cloud's would answer).
    let node = rc.kubelet.node().netns.clone();
    let added = std::process::Command::new("ip")
        .args(["-n", &node, "addr", "add", &format!("{METADATA}/32"), "dev", "lo"])
        .status()
        .expect("ip");
    assert!(added.success(), "the metadata stand-in's address");
    let metadata = netns_socket::listen_tcp(&node, SocketAddr::from(([169, 254, 169, 254], 80)))
        .await
        .expect("the metadata stand-in");
    let served = tokio::spawn(async move {
        while let Ok((mut s, _)) = metadata.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\ninstance-credentials\n").await;
        }
    });
    let _operator = acme(&rc, engine).await;
    let host = get(c, "adb/orders", "{.status.endpoint.host}").await;
    assert!(host.ends_with(".svc.cluster.local"), "{host}");

    // acme's session reaches its database through the endpoint's DNS name, with the example's credentials.
    session(&rc, "acme", "app").await;
    eventually(30, "acme's session queries its database", || async {
        query_from(
            &rc,
            "acme",
            "app",
            engine,
            &host,
            ADMIN_PASSWORD,
            "SELECT CURRENT_USER()",
        )
        .await
        .ok()
        .filter(|u| u == "acme_admin@%")
    })
    .await;

    // A hostile neighbour: another customer, with its own network (so its own isolation), in its own namespace.
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: globex}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: main, namespace: globex}\nspec: {cidr: 10.20.31.0/26}\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/main",
        "-n",
        "globex",
        "--timeout=60s",
    ])
    .await;
    session(&rc, "globex", "intruder").await;
    let db_ip = rc.jsonpath("acme", "pod/orders-0", "{.status.podIP}").await;
    for target in [host.as_str(), db_ip.as_str()] {
        assert!(
            !connects(&rc, "globex", "intruder", target, 3306).await,
            "another customer's session must not reach acme's database at {target}"
        );
    }
    assert!(
        query_from(&rc, "globex", "intruder", engine, &host, ADMIN_PASSWORD, "SELECT 1")
            .await
            .is_err(),
        "not even with the right password"
    );
    // Sessions never reach the metadata address; a pod no policy isolates does (so the block is the policy's).
    assert!(!connects(&rc, "globex", "intruder", METADATA, 80).await);
    assert!(!connects(&rc, "acme", "app", METADATA, 80).await);
    // The database pod runs an image the customer may choose: it does not reach the metadata address (the control
    // pod below shows the stand-in answers pods no policy isolates).
    assert!(
        !connects_from(&rc, "acme", "orders-0", "database", METADATA, 80).await,
        "a database pod must not reach the metadata address"
    );
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n").await;
    apply(
        c,
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: control, namespace: plain}}\nspec:\n  containers:\n  - {{name: main, image: {SESSION}}}\n"),
    )
    .await;
    eventually(60, "the control pod runs", || async {
        (rc.jsonpath("plain", "pod/control", "{.status.phase}").await == "Running").then_some(())
    })
    .await;
    assert!(
        connects(&rc, "plain", "control", METADATA, 80).await,
        "the stand-in answers unisolated pods"
    );
    // And acme's own session still works: isolation took nothing from it.
    assert_eq!(
        query_from(&rc, "acme", "app", engine, &host, ADMIN_PASSWORD, "SELECT 1").await,
        Ok("1".to_owned())
    );
    served.abort();
    rc.shutdown().await;
}

on_both_engines!(the_acme_example_isolates_its_database_from_a_hostile_neighbour);

async fn password_rotation_on_the_real_pod_takes_the_new_password_and_refuses_the_old(engine: Engine) {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    let _operator = acme(&rc, engine).await;
    let host = get(c, "adb/orders", "{.status.endpoint.host}").await;
    session(&rc, "acme", "app").await;
    eventually(30, "the first password works", || async {
        query_from(&rc, "acme", "app", engine, &host, ADMIN_PASSWORD, "SELECT 1")
            .await
            .ok()
    })
    .await;
    let before = get(c, "adb/orders", "{.status.adminPasswordRevision}").await;
    const NEW: &str = "rotated-Secur3-Passw0rd!";
    apply(
        c,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: orders-admin, namespace: acme}}\ntype: Opaque\nstringData:\n  password: \"{NEW}\"\n"),
    )
    .await;
    // The operator's rotation Job runs as a real pod and changes the password on the real server.
    eventually(180, "the rotation recorded", || async {
        let now = get(c, "adb/orders", "{.status.adminPasswordRevision}").await;
        (now != before && !now.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        query_from(&rc, "acme", "app", engine, &host, NEW, "SELECT CURRENT_USER()").await,
        Ok("acme_admin@%".to_owned())
    );
    let old = query_from(&rc, "acme", "app", engine, &host, ADMIN_PASSWORD, "SELECT 1").await;
    assert!(
        old.as_ref().is_err_and(|e| e.contains("Access denied")),
        "the old password is refused: {old:?}"
    );
    rc.shutdown().await;
}

on_both_engines!(password_rotation_on_the_real_pod_takes_the_new_password_and_refuses_the_old);

async fn kubectl_appdb_tunnel_reaches_the_real_pod(engine: Engine) {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    let _operator = acme(&rc, engine).await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-appdb"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let port = free_port();
    let mut tunnel = tokio::process::Command::new("kubectl")
        .args([
            "appdb",
            "tunnel",
            "orders",
            "-n",
            "acme",
            "--local-port",
            &port.to_string(),
        ])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the tunnel");
    let stdout = tunnel.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the tunnel reported within 30 s")
        .expect("stdout")
        .expect("a line");
    assert!(line.contains(&port.to_string()), "{line}");
    // The engine's real client on this machine, through kubectl's port-forward, into the pod's own network.
    let out = tokio::process::Command::new(engine.client())
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-uacme_admin",
            &format!("--password={ADMIN_PASSWORD}"),
            "-N",
            "-e",
            "SELECT @@hostname",
        ])
        .output()
        .await
        .expect("the client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "orders-0",
        "the real pod answered"
    );
    tunnel.kill().await.expect("stop the tunnel");
    rc.shutdown().await;
}

on_both_engines!(kubectl_appdb_tunnel_reaches_the_real_pod);

/// A writer in a session pod: one INSERT per connection through `host` (the database's Service), printing
/// `ok <n> <time>` for each acknowledged write and `err <n> <time>` for each refused one, until /tmp/stop exists.
fn writer_script(engine: Engine, host: &str, password: &str) -> String {
    format!(
        "i=0; while [ ! -f /tmp/stop ]; do i=$((i+1)); if {} --connect-timeout=5 -h {host} -uacme_admin -p'{password}' -e \"INSERT INTO shop.w VALUES ($i)\" 2>/dev/null; then echo \"ok $i $(date +%s.%N)\"; else echo \"err $i $(date +%s.%N)\"; fi; done",
        client(engine)
    )
}

async fn a_copying_migration_runs_as_its_real_job_between_real_pods_without_losing_a_write(engine: Engine) {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    let _operator = acme(&rc, engine).await;
    let host = get(c, "adb/orders", "{.status.endpoint.host}").await;
    session(&rc, "acme", "app").await;
    // A new pod's address reaches the other pods' policies within a pass of the kubelet, as with a real CNI.
    eventually(30, "the writer's table", || async {
        query_from(
            &rc,
            "acme",
            "app",
            engine,
            &host,
            ADMIN_PASSWORD,
            "CREATE DATABASE IF NOT EXISTS shop; CREATE TABLE IF NOT EXISTS shop.w (id INT PRIMARY KEY)",
        )
        .await
        .ok()
    })
    .await;
    apply(
        c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: writer, namespace: acme, labels: {{appdb.dev/role: session}}}}\nspec:\n  containers:\n  - name: main\n    image: {SESSION}\n    command: [sh, -c, {:?}]\n",
            writer_script(engine, &host, ADMIN_PASSWORD)
        ),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while rc
        .kubelet
        .logs("acme", "writer", "main")
        .await
        .unwrap_or_default()
        .matches("ok ")
        .count()
        < 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer does not write: {}",
            rc.jsonpath("acme", "pod/writer", "{.status}").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let version = match engine {
        Engine::MySql => "9.1",
        Engine::MariaDb => "11.8",
    };
    apply(
        c,
        &format!("apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {{name: upgrade, namespace: acme}}\nspec:\n  database: orders\n  targetNetwork: prod\n  strategy: Replicate\n  target: {{version: '{version}'}}\n"),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    loop {
        let state = get(c, "dbmig/upgrade", "{.status.state}").await;
        if state == "Completed" {
            break;
        }
        assert!(
            state != "RolledBack" && std::time::Instant::now() < deadline,
            "the migration did not complete ({state}): {}",
            get(c, "dbmig/upgrade", "{.status}").await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let server = get(c, "dbmig/upgrade", "{.status.copy.server}").await;
    // Writes go on against the new server, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rc.kubelet
        .exec("acme", "writer", "main", &["touch", "/tmp/stop"])
        .await
        .expect("stop the writer");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = rc.kubelet.logs("acme", "writer", "main").await.unwrap_or_default();
    let mut acknowledged = Vec::new();
    let mut times = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["ok", n, t] = parts[..]
            && let (Ok(n), Ok(t)) = (n.parse::<u64>(), t.parse::<f64>())
        {
            acknowledged.push(n);
            times.push(t);
        }
    }
    let stored = query_from(
        &rc,
        "acme",
        "app",
        engine,
        &host,
        ADMIN_PASSWORD,
        "SELECT id FROM shop.w",
    )
    .await
    .expect("read back through the Service");
    let stored: std::collections::BTreeSet<u64> = stored.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<u64> = acknowledged.iter().filter(|n| !stored.contains(n)).copied().collect();
    let longest_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let answered_by = query_from(&rc, "acme", "app", engine, &host, ADMIN_PASSWORD, "SELECT @@hostname")
        .await
        .expect("who answers");
    println!(
        "{engine}: {} writes acknowledged, {} lost, longest gap between acknowledged writes {longest_gap:.3} s, outage reported {} s; the Service now leads to {answered_by}",
        acknowledged.len(),
        lost.len(),
        get(c, "dbmig/upgrade", "{.status.downtimeSeconds}").await
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        answered_by,
        format!("{server}-0"),
        "the Service leads to the new server's pod"
    );
    assert!(
        acknowledged.len() > 40,
        "the writer wrote throughout: {}",
        acknowledged.len()
    );
    rc.shutdown().await;
}

on_both_engines!(a_copying_migration_runs_as_its_real_job_between_real_pods_without_losing_a_write);

/// Whether premises (the customer's LAN host) get an answer from `address`.
fn premises_ping(premises: &netns::Netns, address: &str) -> bool {
    premises
        .try_exec(&["ping", "-c", "1", "-W", "1", "-I", "192.168.10.10", address])
        .status
        .success()
}

fn premises_query(premises: &netns::Netns, address: &str) -> Result<String, String> {
    let out = premises.try_exec(&[
        &Engine::MySql.client().display().to_string(),
        "--no-defaults",
        "--connect-timeout=3",
        "-h",
        address,
        "-uacme_admin",
        &format!("-p{ADMIN_PASSWORD}"),
        "-N",
        "-e",
        "SELECT @@hostname",
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The VPN as the operator deploys it: both gateway pods (charon and the agent) under their own securityContext,
/// behind their LoadBalancer addresses; the customer's device is charon in a premises namespace with the file
/// `kubectl appdb vpn-config` downloads, unmodified. Premises reach the pinghost and MySQL (through the agent's
/// relay to the database's Service); when one gateway pod is deleted, traffic goes on over the other tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vpn_runs_as_its_pods_and_premises_reach_the_pinghost_and_the_database() {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    let _operator = acme_with(
        &rc,
        Engine::MySql,
        &["--allow-documentation-gateways", "true", "--vpn-datapath", "userspace"],
    )
    .await;
    c.ok(&["apply", "--server-side", "-f", &format!("{EXAMPLES}/30-vpn.yaml")])
        .await;
    for n in [1, 2] {
        // The operator creates each gateway once the load balancer gave its Service an address.
        eventually(60, "the gateway Deployment", || async {
            c.kubectl(&["get", &format!("deployment/seattle-tunnel{n}"), "-n", "acme"])
                .await
                .status
                .success()
                .then_some(())
        })
        .await;
        c.ok(&[
            "rollout",
            "status",
            &format!("deployment/seattle-tunnel{n}"),
            "-n",
            "acme",
            "--timeout=120s",
        ])
        .await;
    }
    // The premises: the device's public address and its LAN host, on the node's outside segment.
    let premises =
        charon::premises_behind(rc.kubelet.node(), &format!("appdb-vpne2e-{}-prem", std::process::id())).await;

    // The downloads, exactly as the customer gets them: the connections and the dead-peer timing.
    let download = |device: &'static str| {
        let c = &c;
        eventually(60, "the VPN configuration", move || async move {
            let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-appdb"))
                .parent()?
                .to_owned();
            let out = tokio::process::Command::new("kubectl")
                .args(["appdb", "vpn-config", "seattle", "-n", "acme", "--device", device])
                .env(
                    "PATH",
                    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
                )
                .env("KUBECONFIG", c.kubeconfig())
                .env("HOME", c.dir.path())
                .output()
                .await
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
    };
    let swanctl = rc.dir.path().join("customer-swanctl.conf");
    std::fs::write(&swanctl, download("strongswan-swanctl.conf").await).expect("the download");
    let timing = rc.dir.path().join("customer-download-strongswan.conf");
    std::fs::write(&timing, download("strongswan.conf").await).expect("the download");
    let vici = rc.dir.path().join("customer.vici");
    let conf = rc.dir.path().join("customer-strongswan.conf");
    std::fs::write(&conf, charon::customer_strongswan_conf(&vici, &timing)).expect("strongswan.conf");
    let device = charon::Charon::start(&premises, &conf, vici, &rc.dir.path().join("customer.log"));
    device.load(&swanctl);
    charon::wait_until(60, "tunnel 1 up", || charon::established(&device, 1));
    charon::wait_until(60, "tunnel 2 up", || charon::established(&device, 2));

    let pinghost = rc.jsonpath("acme", "pnet/prod", "{.status.pinghost}").await;
    let address = get(c, "adb/orders", "{.status.endpoint.address}").await;
    charon::wait_until(30, "the pinghost answers through a tunnel", || {
        premises_ping(&premises, &pinghost)
    });
    charon::wait_until(60, "MySQL answers through a tunnel", || {
        premises_query(&premises, &address).is_ok_and(|h| h == "orders-0")
    });

    // One gateway pod deleted (a node drain, a rollout): its charon says goodbye and traffic moves to the other.
    let pod = c
        .ok(&[
            "get",
            "pods",
            "-n",
            "acme",
            "-l",
            "appdb.dev/tunnel=1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .await;
    assert!(!pod.trim().is_empty(), "tunnel 1's gateway pod");
    c.ok(&["delete", "pod", pod.trim(), "-n", "acme", "--wait=false"]).await;
    charon::wait_until(20, "the device drops tunnel 1", || !charon::established(&device, 1));
    assert!(charon::established(&device, 2), "tunnel 2 carries on");
    charon::wait_until(20, "the pinghost answers over tunnel 2", || {
        premises_ping(&premises, &pinghost)
    });
    charon::wait_until(30, "MySQL answers over tunnel 2", || {
        premises_query(&premises, &address).is_ok_and(|h| h == "orders-0")
    });
    // The Deployment makes a new gateway pod behind the same load balancer address; the device, told to keep its
    // tunnels up, finds it without anyone touching the premises.
    let back = charon::wait_until(90, "tunnel 1 re-established to the new gateway pod", || {
        charon::established(&device, 1)
    });
    println!(
        "tunnel 1 back {:.1} s after its gateway pod was deleted",
        back.as_secs_f64()
    );
    eventually(60, "status shows both tunnels UP", || async {
        (get(c, "vpn/seattle", "{.status.tunnels[*].state}").await == "UP UP").then_some(())
    })
    .await;

    // A change to both gateways' configuration (a longer DPD timeout): both roll, one after the other, and the
    // device never sees both tunnels down. The timeline is sampled from the device every 200 ms.
    let digest = |n: u8| {
        let c = &c;
        async move {
            get(
                c,
                &format!("deploy/seattle-tunnel{n}"),
                "{.spec.template.metadata.annotations.appdb\\.dev/config-digest}",
            )
            .await
        }
    };
    let before = [digest(1).await, digest(2).await];
    c.ok(&[
        "patch",
        "vpn",
        "seattle",
        "-n",
        "acme",
        "--type=merge",
        "-p",
        r#"{"spec":{"tunnelOptions":[{"dpdTimeoutSeconds":40},{"dpdTimeoutSeconds":40}]}}"#,
    ])
    .await;
    let started = std::time::Instant::now();
    let mut timeline: Vec<String> = Vec::new();
    let mut last = String::new();
    let mut both_down_samples = 0;
    loop {
        let up = [charon::established(&device, 1), charon::established(&device, 2)];
        let rolled = [digest(1).await != before[0], digest(2).await != before[1]];
        let reported = get(c, "vpn/seattle", "{.status.tunnels[*].state}").await;
        let sample = format!(
            "tunnel 1 {} (gateway {}), tunnel 2 {} (gateway {}); status {reported}",
            if up[0] { "up" } else { "DOWN" },
            if rolled[0] { "new" } else { "old" },
            if up[1] { "up" } else { "DOWN" },
            if rolled[1] { "new" } else { "old" },
        );
        if sample != last {
            timeline.push(format!("{:>6.1} s  {sample}", started.elapsed().as_secs_f64()));
            last = sample;
        }
        if !up[0] && !up[1] {
            both_down_samples += 1;
        }
        if rolled[0] && rolled[1] && up[0] && up[1] && reported == "UP UP" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(240),
            "the rollout did not finish:\n{}",
            timeline.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!(
        "rollout of both gateways, as the device saw it:\n{}",
        timeline.join("\n")
    );
    assert_eq!(
        both_down_samples,
        0,
        "both tunnels were down at once during the rollout:\n{}",
        timeline.join("\n")
    );
    drop(device);
    rc.shutdown().await;
}

/// An outside address ("the internet") with a stand-in listening on the node, as the metadata stand-in is.
const INTERNET: &str = "198.51.100.80";

/// A pod in `ns` with `labels`, running the session image's `command` (a listener, or just a shell to probe from).
async fn labelled_pod(rc: &RealCluster, ns: &str, name: &str, labels: &str, command: &str) {
    apply(
        &rc.c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec:\n  containers:\n  - name: main\n    image: {SESSION}\n    command: [python3, -c, {command:?}]\n"
        ),
    )
    .await;
    eventually(60, &format!("{ns}/{name} runs"), || async {
        (rc.jsonpath(ns, &format!("pod/{name}"), "{.status.phase}").await == "Running").then_some(())
    })
    .await;
}

/// Whether a pod gets an answer from `host:port` over UDP within 3 s (the stand-in echoes).
async fn udp_answers(rc: &RealCluster, ns: &str, pod: &str, container: &str, host: &str, port: u16) -> bool {
    let script =
        // One byte: bash reads a socket a byte at a time, and a datagram read in part is gone.
        format!("exec 3<>/dev/udp/{host}/{port} && printf ike >&3 && read -t 3 -n 1 reply <&3 && echo connected");
    rc.kubelet
        .exec(ns, pod, container, &["bash", "-c", &script])
        .await
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("connected"))
}

/// The reachability matrix of docs/security.md, by packets on the pod runner (which enforces NetworkPolicy): every
/// kind of pod a customer's namespace holds (its session, its real database pod, an operator Job and a VPN gateway)
/// against every destination (its own database, another customer's real database and its gateway, the operator,
/// the API server, the metadata and internet stand-ins), with the operator's real policies. The Job and gateway
/// sources, the other customer's gateway and the operator are stand-in pods with exactly the labels the policies
/// select (a policy sees nothing else); the databases are the operator's real pods. Every "no" has a control: a pod
/// no policy isolates reaches the same destination, so the block is the policy's. One engine: the subject is the
/// network, not the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_pod_kind_reaches_exactly_what_its_job_needs() {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    let node = rc.kubelet.node().netns.clone();
    let mut served = Vec::new();
    for (address, port, answer) in [
        (METADATA, 80, &b"HTTP/1.0 200 OK\r\n\r\ninstance-credentials\n"[..]),
        (INTERNET, 80, &b"HTTP/1.0 200 OK\r\n\r\nthe internet\n"[..]),
    ] {
        let added = std::process::Command::new("ip")
            .args(["-n", &node, "addr", "add", &format!("{address}/32"), "dev", "lo"])
            .status()
            .expect("ip");
        assert!(added.success(), "the stand-in's address {address}");
        let listener = netns_socket::listen_tcp(&node, SocketAddr::new(address.parse().unwrap(), port))
            .await
            .expect("a stand-in");
        served.push(tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(answer).await;
            }
        }));
    }
    let _operator = acme(&rc, Engine::MySql).await;

    // The other customer: its own network and a real database.
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: globex}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: main, namespace: globex}\nspec: {cidr: 10.20.31.0/26}\n").await;
    apply(c, "apiVersion: v1\nkind: Secret\nmetadata: {name: ledger-admin, namespace: globex}\nstringData: {password: Globex-Secur3!}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: ledger, namespace: globex}\nspec:\n  network: main\n  engine: MySQL\n  admin: {username: globex_admin, passwordSecretRef: {name: ledger-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    eventually(240, "globex's database Ready To Use", || async {
        (rc.jsonpath("globex", "adb/ledger", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;

    // Stand-ins with the labels the policies select: acme's Job and gateway (sources), globex's gateway (an IKE
    // echo on NAT-T's port) and the operator (its metrics port), and globex's own session (a control).
    let shell = "import time; time.sleep(100000)";
    labelled_pod(&rc, "acme", "job", "appdb.dev/role: operator-job", shell).await;
    // A second database of acme's (what a copying migration's new server is), for the database pod's own row: a
    // pod connecting to its own address never leaves its network namespace, so it proves nothing.
    let mysql_port = "import socket\ns=socket.socket()\ns.bind(('0.0.0.0', 3306))\ns.listen(16)\nwhile True:\n    s.accept()[0].close()";
    labelled_pod(
        &rc,
        "acme",
        "orders-new-0",
        "appdb.dev/role: database, appdb.dev/database: orders-new",
        mysql_port,
    )
    .await;
    labelled_pod(
        &rc,
        "acme",
        "gateway",
        "appdb.dev/role: vpn-gateway, appdb.dev/network: prod",
        shell,
    )
    .await;
    let echo = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 4500))\nwhile True:\n    d, a = s.recvfrom(64)\n    s.sendto(d, a)";
    labelled_pod(
        &rc,
        "globex",
        "gateway",
        "appdb.dev/role: vpn-gateway, appdb.dev/network: main",
        echo,
    )
    .await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: appdb-system}\n").await;
    let metrics = "import http.server\nhttp.server.HTTPServer(('0.0.0.0', 8080), http.server.SimpleHTTPRequestHandler).serve_forever()";
    labelled_pod(
        &rc,
        "appdb-system",
        "operator",
        "app.kubernetes.io/name: appdb-operator",
        metrics,
    )
    .await;
    session(&rc, "acme", "app").await;
    session(&rc, "globex", "app").await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n").await;
    session(&rc, "plain", "control").await;

    let rc_ref = &rc;
    let ip = |ns: &'static str, pod: &'static str| async move {
        rc_ref.jsonpath(ns, &format!("pod/{pod}"), "{.status.podIP}").await
    };
    let own_db = ip("acme", "orders-0").await;
    let second_db = ip("acme", "orders-new-0").await;
    let other_db = ip("globex", "ledger-0").await;
    let other_gateway = ip("globex", "gateway").await;
    let operator = ip("appdb-system", "operator").await;
    let api_server = String::from_utf8_lossy(
        &rc.kubelet
            .exec(
                "acme",
                "app",
                "main",
                &["sh", "-c", "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"],
            )
            .await
            .expect("the API server's address in a pod")
            .stdout,
    )
    .trim()
    .to_owned();
    let (api_host, api_port) = api_server.rsplit_once(':').expect("host:port");
    let api_port: u16 = api_port.parse().expect("port");

    #[derive(Clone, Copy, Debug)]
    enum Probe {
        Tcp(u16),
        Udp(u16),
    }
    let destinations: Vec<(&str, String, Probe)> = vec![
        ("own database", own_db.clone(), Probe::Tcp(3306)),
        ("other customer's database", other_db.clone(), Probe::Tcp(3306)),
        (
            "other customer's gateway (IKE)",
            other_gateway.clone(),
            Probe::Udp(4500),
        ),
        ("operator metrics", operator.clone(), Probe::Tcp(8080)),
        ("API server", api_host.to_owned(), Probe::Tcp(api_port)),
        ("metadata", METADATA.to_owned(), Probe::Tcp(80)),
        ("internet", INTERNET.to_owned(), Probe::Tcp(80)),
    ];
    // Source → what it reaches, in the order of `destinations` (docs/security.md, "isolated both ways").
    let matrix: [(&str, &str, [bool; 7]); 4] = [
        ("session", "app", [true, false, false, false, false, false, true]),
        ("database", "orders-0", [true, false, false, false, false, false, false]),
        ("operator job", "job", [true, false, false, false, true, false, false]),
        (
            "VPN gateway",
            "gateway",
            [true, false, false, false, true, false, false],
        ),
    ];
    let probe = |ns: &'static str, pod: &'static str, container: &'static str, host: String, p: Probe| {
        let rc = &rc;
        async move {
            match p {
                Probe::Tcp(port) => connects_from(rc, ns, pod, container, &host, port).await,
                Probe::Udp(port) => udp_answers(rc, ns, pod, container, &host, port).await,
            }
        }
    };
    // Every probe at once (a blocked one waits its whole timeout).
    let mut probes = Vec::new();
    for (source, pod, expected) in &matrix {
        let container = if *pod == "orders-0" { "database" } else { "main" };
        for ((destination, host, p), expected) in destinations.iter().zip(expected) {
            let (source, destination, expected) = (*source, *destination, *expected);
            // The database pod's own database is the namespace's other one (replication), not itself.
            let host = if *pod == "orders-0" && destination == "own database" {
                second_db.clone()
            } else {
                host.clone()
            };
            let run = probe("acme", pod, container, host, *p);
            probes.push(futures::FutureExt::boxed_local(async move {
                (source, destination, expected, run.await)
            }));
        }
    }
    // Controls: an unisolated pod reaches every destination no ingress policy guards, and the other customer's
    // own session reaches its database, so each "no" above is a policy's.
    for (destination, host, p) in &destinations {
        let destination = *destination;
        let (ns, pod) = if destination == "other customer's database" {
            ("globex", "app")
        } else {
            ("plain", "control")
        };
        if destination == "own database" {
            continue;
        }
        let run = probe(ns, pod, "main", host.clone(), *p);
        probes.push(futures::FutureExt::boxed_local(async move {
            ("control", destination, true, run.await)
        }));
    }
    let results = futures::future::join_all(probes).await;

    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, _, expected, got)| expected != got)
        .map(|(source, destination, expected, got)| format!("{source} → {destination}: expected {expected}, got {got}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "reachability differs from the matrix:\n{}",
        wrong.join("\n")
    );
    assert_eq!(results.len(), 4 * 7 + 6);
    for s in served {
        s.abort();
    }
    rc.shutdown().await;
}
