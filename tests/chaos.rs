//! The operator SIGKILLed 50 times at random moments while customers are created, deleted and migrated. After
//! the last restart everything converges: every network has exactly one range and allocation (none leaked), no
//! gateway outlives its VPN connection, every remaining database is Ready To Use on its target network.

mod support;

use std::time::Duration;

use rand::Rng;
use support::{Cluster, free_port, spawn_operator};

const ROUNDS: usize = 50;

async fn apply(c: &Cluster, yaml: &str) {
    let out = c
        .kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(yaml))
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn customer(c: &Cluster, i: usize) {
    let ns = format!("chaos-{i}");
    apply(
        c,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )
    .await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {{name: prod, namespace: {ns}}}\nspec: {{}}\n")).await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {{name: next, namespace: {ns}}}\nspec: {{}}\n")).await;
    apply(c, &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: admin, namespace: {ns}}}\nstringData: {{password: Valid-Passw0rd-{i}}}\n")).await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  network: prod\n  admin: {{username: acme_admin, passwordSecretRef: {{name: admin, key: password}}}}\n  storage: {{size: 1Gi}}\n")).await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {{name: office, namespace: {ns}}}\nspec:\n  network: prod\n  customerCidrs: [192.168.{}.0/24]\n  customerGatewayAddress: 93.184.216.34\n", i % 250)).await;
    apply(c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {{name: office-next, namespace: {ns}}}\nspec:\n  network: next\n  customerCidrs: [192.168.{}.0/24]\n  customerGatewayAddress: 93.184.216.34\n", i % 250)).await;
}

/// What the cluster does by itself: StatefulSets become ready, load balancers hand out addresses.
async fn play_cluster(c: &Cluster) {
    let list = c.ok(&["get", "sts,svc,deploy", "-A", "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("list");
    for item in list["items"].as_array().into_iter().flatten() {
        let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        if item["kind"] == "StatefulSet" && item["status"]["readyReplicas"].is_null() {
            let _ = c
                .kubectl(&[
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
        // Gateway Deployments roll out (tunnel 2 is only updated once tunnel 1 is back).
        if item["kind"] == "Deployment" && item["status"]["observedGeneration"] != item["metadata"]["generation"] {
            let patch = format!(
                r#"{{"status":{{"observedGeneration":{},"replicas":1,"updatedReplicas":1,"readyReplicas":1,"availableReplicas":1}}}}"#,
                item["metadata"]["generation"]
            );
            let _ = c
                .kubectl(&[
                    "patch",
                    "deploy",
                    name,
                    "-n",
                    ns,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ])
                .await;
        }
        if item["spec"]["type"] == "LoadBalancer" && item["status"]["loadBalancer"]["ingress"].is_null() {
            // Distinct per Service (both tunnels of a connection need their own address).
            let last = 10 + name.bytes().chain(ns.bytes()).map(usize::from).sum::<usize>() % 240;
            let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"203.0.113.{last}"}}]}}}}}}"#);
            let _ = c
                .kubectl(&[
                    "patch",
                    "svc",
                    name,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_sigkills_during_creation_deletion_and_migration_leave_nothing_behind() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let mut rng = rand::rng();
    let mut created = 0;
    let mut deleted = Vec::new();
    let mut migrated = Vec::new();
    let rounds: usize = std::env::var("APPDB_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        let mut op = spawn_operator(&c, free_port(), &["--release-cooldown-seconds", "0"]).await;
        // One action per round, and the cluster's part.
        match round % 5 {
            0..=2 => {
                customer(&c, created).await;
                created += 1;
            }
            3 if created > 2 && deleted.len() < created / 3 => {
                let victim = deleted.len() * 3;
                let _ = c
                    .kubectl(&["delete", "namespace", &format!("chaos-{victim}"), "--wait=false"])
                    .await;
                deleted.push(victim);
            }
            _ => {
                let candidate = (0..created).find(|i| !deleted.contains(i) && !migrated.contains(i));
                if let Some(i) = candidate {
                    apply(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {{name: move, namespace: chaos-{i}}}\nspec: {{database: orders, targetNetwork: next}}\n")).await;
                    migrated.push(i);
                }
            }
        }
        play_cluster(&c).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        op.start_kill().expect("SIGKILL");
        let _ = op.wait().await;
    }
    // The last restart: everything converges.
    let _op = spawn_operator(&c, free_port(), &["--release-cooldown-seconds", "0"]).await;
    let alive: Vec<usize> = (0..created).filter(|i| !deleted.contains(i)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        play_cluster(&c).await;
        let mut pending = Vec::new();
        for &i in &alive {
            let ns = format!("chaos-{i}");
            let state = c
                .ok(&["get", "adb", "orders", "-n", &ns, "-o", "jsonpath={.status.state}"])
                .await;
            let network = c
                .ok(&["get", "adb", "orders", "-n", &ns, "-o", "jsonpath={.status.network}"])
                .await;
            let want = if migrated.contains(&i) { "next" } else { "prod" };
            let migration = if migrated.contains(&i) {
                c.ok(&[
                    "get",
                    "dbmig",
                    "move",
                    "-n",
                    &ns,
                    "-o",
                    r#"jsonpath={.status.state}/{.status.conditions[?(@.type=="Ready")].reason}"#,
                ])
                .await
            } else {
                "Completed/-".into()
            };
            if state != "Ready To Use" || network != want || !migration.starts_with("Completed") {
                let vpn = c.ok(&["get", "vpn", "-n", &ns, "-o", r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].reason} {end}"#]).await;
                let nets = c
                    .ok(&[
                        "get",
                        "pnet",
                        "-n",
                        &ns,
                        "-o",
                        "jsonpath={range .items[*]}{.metadata.name}={.status.state} {end}",
                    ])
                    .await;
                let args = c
                    .ok(&[
                        "get",
                        "deploy",
                        "-n",
                        &ns,
                        "-o",
                        "jsonpath={range .items[*]}{.metadata.name}:{.spec.template.spec.containers[*].args} {end}",
                    ])
                    .await;
                let address = c
                    .ok(&[
                        "get",
                        "adb",
                        "orders",
                        "-n",
                        &ns,
                        "-o",
                        "jsonpath={.status.endpoint.address}",
                    ])
                    .await;
                pending.push(format!("{ns}: database {state:?} on {network:?} (want {want}) at {address}, migration {migration}; vpns {vpn}; networks {nets}; gateways {args}"));
            }
        }
        if pending.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged after the last restart: {pending:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Deleted customers are gone entirely; no allocation leaked; every gateway belongs to a live VpnConnection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let networks = c.ok(&["get", "pnet", "-A", "-o", "name"]).await.lines().count();
        let allocations = c.ok(&["get", "networkallocations", "-o", "name"]).await.lines().count();
        let vpns = c.ok(&["get", "vpn", "-A", "-o", "name"]).await.lines().count();
        let gateways = c
            .ok(&["get", "deploy", "-A", "-o", "name"])
            .await
            .lines()
            .filter(|l| l.contains("-tunnel"))
            .count();
        let namespaces = c.ok(&["get", "ns", "-o", "name"]).await;
        let left: Vec<&usize> = deleted
            .iter()
            .filter(|i| namespaces.contains(&format!("namespace/chaos-{i}\n")))
            .collect();
        if networks == allocations && gateways == 2 * vpns && left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{networks} networks but {allocations} allocations; {vpns} VPN connections but {gateways} gateways; \
             deleted namespaces still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ranges = c
        .ok(&["get", "pnet", "-A", "-o", "jsonpath={.items[*].status.cidr}"])
        .await;
    let mut list: Vec<&str> = ranges.split_whitespace().collect();
    let total = list.len();
    list.sort();
    list.dedup();
    assert_eq!(list.len(), total, "a range is held twice: {ranges}");
    eprintln!(
        "{rounds} SIGKILLs: {created} customers created, {} deleted, {} migrated; all converged",
        deleted.len(),
        migrated.len()
    );
}
