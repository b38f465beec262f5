//! The operator under injected API faults (server errors before and after writes take effect, conflicts, slow
//! responses, watches that end early, expired resource versions): everything still converges, no range is given
//! to two networks, and no generated Secret (root password, pre-shared key) is ever regenerated.

mod support;

use std::{collections::BTreeMap, time::Duration};

use appdb_testkit::apiserver::faults::Faults;
use support::{Cluster, eventually, free_port, spawn_operator};

const CUSTOMERS: usize = 8;

/// kubectl suffers the faults too: retry like a person would.
async fn apply_retrying(c: &Cluster, yaml: &str) {
    for _ in 0..30 {
        if c.kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(yaml))
            .await
            .status
            .success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not apply through the faults: {yaml}");
}

async fn get_retrying(c: &Cluster, args: &[&str]) -> Option<String> {
    for _ in 0..30 {
        let out = c.kubectl(args).await;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn patch_status_retrying(c: &Cluster, args: &[&str]) -> bool {
    for _ in 0..30 {
        if c.kubectl(args).await.status.success() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// name → data of the Secrets the operator generates (root passwords and pre-shared keys).
async fn generated_secrets(c: &Cluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(json) = get_retrying(c, &["get", "secrets", "-A", "-o", "json"]).await else {
        return out;
    };
    let list: serde_json::Value = serde_json::from_str(&json).expect("secrets");
    for s in list["items"].as_array().into_iter().flatten() {
        let name = format!(
            "{}/{}",
            s["metadata"]["namespace"].as_str().unwrap_or_default(),
            s["metadata"]["name"].as_str().unwrap_or_default()
        );
        if name.ends_with("-root") || name.contains("-psk") {
            out.insert(name, s["data"].to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_converges_through_api_faults_without_double_allocation_or_new_keys() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let log_path = std::env::var("APPDB_FAULTS_LOG").ok();
    let _op = match &log_path {
        // For diagnosis: APPDB_FAULTS_LOG=/tmp/faults.log keeps the operator's logs.
        Some(path) => tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--leader-election",
                "false",
            ])
            .env("KUBECONFIG", support::operator_kubeconfig(&c).await)
            .env("RUST_LOG", "info,kube_runtime=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(path).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator"),
        None => spawn_operator(&c, free_port(), &[]).await,
    };
    c.server.set_faults(Faults {
        server_errors: 0.03,
        server_errors_after_write: 0.05,
        conflicts: 0.05,
        max_delay: Duration::from_millis(30),
        short_watches: true,
    });
    // Expired resource versions: the history of watch events is dropped every ten seconds (etcd compacts every five
    // minutes by default; every two seconds starves relisting watchers of a usable version, which no real API
    // server does).
    let compactor = {
        let state = c.server.state().clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                state.store.lock().unwrap_or_else(|e| e.into_inner()).compact();
            }
        })
    };
    for i in 0..CUSTOMERS {
        let ns = format!("customer-{i}");
        apply_retrying(
            &c,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        )
        .await;
        apply_retrying(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {{name: prod, namespace: {ns}}}\nspec: {{}}\n")).await;
        apply_retrying(&c, &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: admin, namespace: {ns}}}\nstringData: {{password: Valid-Passw0rd-{i}}}\n")).await;
        apply_retrying(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  network: prod\n  admin: {{username: acme_admin, passwordSecretRef: {{name: admin, key: password}}}}\n  storage: {{size: 1Gi}}\n")).await;
        apply_retrying(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {{name: office, namespace: {ns}}}\nspec:\n  network: prod\n  customerCidrs: [192.168.{i}.0/24]\n  customerGatewayAddress: 93.184.216.{}\n", 10 + i)).await;
    }
    // What the cluster would do: StatefulSets become ready, load balancers give addresses.
    let mut first_seen: BTreeMap<String, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        for (name, data) in generated_secrets(&c).await {
            first_seen.entry(name).or_insert(data);
        }
        let mut done = 0;
        let mut pending = Vec::new();
        for i in 0..CUSTOMERS {
            let ns = format!("customer-{i}");
            if get_retrying(&c, &["get", "sts", "orders", "-n", &ns]).await.is_some() {
                patch_status_retrying(
                    &c,
                    &[
                        "patch",
                        "sts",
                        "orders",
                        "-n",
                        &ns,
                        "--subresource=status",
                        "--type=merge",
                        "-p",
                        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
                    ],
                )
                .await;
            }
            for t in 1..=2 {
                let svc = format!("office-tunnel{t}");
                if get_retrying(&c, &["get", "svc", &svc, "-n", &ns]).await.is_some() {
                    let patch = format!(
                        r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"203.0.113.{}"}}]}}}}}}"#,
                        10 * t + i
                    );
                    patch_status_retrying(
                        &c,
                        &[
                            "patch",
                            "svc",
                            &svc,
                            "-n",
                            &ns,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &patch,
                        ],
                    )
                    .await;
                }
            }
            let db = get_retrying(
                &c,
                &["get", "adb", "orders", "-n", &ns, "-o", "jsonpath={.status.state}"],
            )
            .await;
            let vpn = get_retrying(
                &c,
                &[
                    "get",
                    "vpn",
                    "office",
                    "-n",
                    &ns,
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
                ],
            )
            .await;
            if db.as_deref() == Some("Ready To Use") && vpn.as_deref() == Some("True") {
                done += 1;
            } else {
                let why = get_retrying(&c, &["get", "adb,vpn", "-n", &ns, "-o", r#"jsonpath={range .items[*]}{.kind}={.status.state}/{.status.conditions[?(@.type=="Ready")].reason} {end}"#]).await;
                pending.push(format!("{ns}: {}", why.unwrap_or_default()));
            }
        }
        if done == CUSTOMERS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {CUSTOMERS} customers converged through the faults: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Faults go on for a while in steady state, then stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.server.set_faults(Faults::default());
    compactor.abort();
    let injected = c.server.state().fault_counts.total();
    assert!(injected > 100, "faults were injected: {injected}");

    // No range twice, one allocation per network.
    let networks: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "pnet", "-A", "-o", "json"]).await).expect("networks");
    let cidrs: Vec<String> = networks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"]["cidr"].as_str().expect("a range").to_owned())
        .collect();
    let mut distinct = cidrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), CUSTOMERS, "a range was given twice: {cidrs:?}");
    let allocations = eventually(30, "one allocation per network", || async {
        let names = c.ok(&["get", "networkallocations", "-o", "name"]).await;
        (names.lines().count() == CUSTOMERS).then_some(names)
    })
    .await;
    for cidr in &cidrs {
        assert!(
            allocations.contains(&cidr.replace(['.', '/'], "-")),
            "{cidr} has no allocation: {allocations}"
        );
    }
    // No generated Secret was ever replaced.
    let now = generated_secrets(&c).await;
    assert!(now.len() >= 2 * CUSTOMERS, "root and PSK Secrets: {:?}", now.keys());
    for (name, data) in &now {
        assert_eq!(first_seen.get(name), Some(data), "{name} was regenerated");
    }
    eprintln!(
        "{CUSTOMERS} customers converged through {injected} injected faults; {} generated Secrets unchanged",
        now.len()
    );
}
