//! PrivateNetwork end to end: the real operator binary and kubectl against the test API server.

mod support;

use std::{collections::BTreeSet, time::Duration};

use appdb_operator::api::{NetworkAllocation, PrivateNetwork, PrivateNetworkSpec};
use futures::StreamExt;
use kube::{Api, Client, api::PostParams};
use support::{Cluster, eventually, free_port, spawn_operator};
use tokio::process::Child;

async fn start_operator(c: &Cluster, extra: &[&str]) -> Child {
    start_operator_on(c, free_port(), extra).await
}

/// An operator whose garbage collection looks every second and releases an allocation whose network is gone after a
/// second (`extra` may set a longer grace).
async fn start_operator_on(c: &Cluster, port: u16, extra: &[&str]) -> Child {
    let mut flags = vec![
        "--pool",
        "10.0.0.0/8,172.16.0.0/12",
        "--reserved",
        "10.244.0.0/16,10.96.0.0/12",
        "--allocation-gc-interval-seconds",
        "1",
    ];
    if !extra.contains(&"--allocation-gc-grace-seconds") {
        flags.extend(["--allocation-gc-grace-seconds", "1"]);
    }
    flags.extend_from_slice(extra);
    spawn_operator(c, port, &flags).await
}

fn network_yaml(ns: &str, name: &str, cidr: Option<&str>) -> String {
    let spec = cidr.map(|c| format!("{{cidr: {c}}}")).unwrap_or_else(|| "{}".into());
    format!(
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

async fn namespace(c: &Cluster, ns: &str) {
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )
    .await;
}

async fn jsonpath(c: &Cluster, ns: &str, name: &str, path: &str) -> String {
    c.ok(&["get", "pnet", name, "-n", ns, "-o", &format!("jsonpath={path}")])
        .await
}

async fn wait_condition(c: &Cluster, ns: &str, name: &str, condition: &str) {
    c.ok(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("pnet/{name}"),
        "-n",
        ns,
        "--timeout=30s",
    ])
    .await;
}

async fn stalled_reason(c: &Cluster, ns: &str, name: &str) -> String {
    wait_condition(c, ns, name, "Stalled").await;
    jsonpath(
        c,
        ns,
        name,
        r#"{.status.conditions[?(@.type=="Stalled")].reason}: {.status.conditions[?(@.type=="Stalled")].message}"#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lock_is_reclaimed_for_the_same_range_never_readdressed() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let mut op = start_operator(&c, &["--release-cooldown-seconds", "0"]).await;
    namespace(&c, "acme").await;
    let apply = |yaml: String| {
        let c = &c;
        async move { c.ok_stdin(&["apply", "--server-side", "-f", "-"], &yaml).await }
    };
    apply(network_yaml("acme", "first", None)).await;
    wait_condition(&c, "acme", "first", "Ready").await;
    apply(network_yaml("acme", "second", None)).await;
    wait_condition(&c, "acme", "second", "Ready").await;
    let low = jsonpath(&c, "acme", "first", "{.status.cidr}").await;
    let ours = jsonpath(&c, "acme", "second", "{.status.cidr}").await;
    let lock = ours.replace(['.', '/'], "-");
    // The lower range becomes free, then the second network's lock is deleted (by mistake, or by a hostile hand):
    // the next free range is now the lower one, and the network must not move there.
    c.ok(&["delete", "pnet", "first", "-n", "acme"]).await;
    eventually(30, "the first range freed", || async {
        (!c.kubectl(&["get", "nalloc", &low.replace(['.', '/'], "-")])
            .await
            .status
            .success())
        .then_some(())
    })
    .await;
    c.ok(&["delete", "nalloc", &lock]).await;
    eventually(30, "the same range claimed again", || async {
        let holder = c
            .kubectl(&["get", "nalloc", &lock, "-o", "jsonpath={.spec.network.name}"])
            .await;
        (String::from_utf8_lossy(&holder.stdout) == "second").then_some(())
    })
    .await;
    assert_eq!(jsonpath(&c, "acme", "second", "{.status.cidr}").await, ours);
    assert!(
        !c.kubectl(&["get", "nalloc", &low.replace(['.', '/'], "-")])
            .await
            .status
            .success(),
        "the network also claimed the lower range"
    );

    // The range is taken by someone else while the lock is gone (the operator is down): the network stalls with
    // a reason, and keeps its address.
    op.kill().await.unwrap();
    c.ok(&["delete", "nalloc", &lock]).await;
    apply(format!(
        "apiVersion: appdb.dev/v1alpha1\nkind: NetworkAllocation\nmetadata: {{name: {lock}}}\nspec:\n  cidr: {ours}\n  network: {{namespace: globex, name: thief, uid: 00000000-0000-0000-0000-000000000001}}\n"
    ))
    .await;
    // The thief's lock names a network this cluster does not have. Garbage collection releases such a lock after its
    // grace (300 s by default); a second, as the other tests use, would free the range while this test looks.
    let _op = start_operator(
        &c,
        &[
            "--release-cooldown-seconds",
            "0",
            "--allocation-gc-grace-seconds",
            "3600",
        ],
    )
    .await;
    let message = eventually(30, "AllocationLost", || async {
        // Reason and message from one read: they describe the same status.
        let stalled = jsonpath(
            &c,
            "acme",
            "second",
            r#"{.status.conditions[?(@.type=="Stalled")].reason}|{.status.conditions[?(@.type=="Stalled")].message}"#,
        )
        .await;
        let (why, message) = stalled.split_once('|')?;
        (why == "AllocationLost").then(|| message.to_owned())
    })
    .await;
    assert!(
        message.contains(&ours) && !message.contains("globex") && !message.contains("thief"),
        "{message}"
    );
    let held = c
        .ok(&["get", "nalloc", "-o", "jsonpath={.items[*].spec.network.name}"])
        .await;
    assert!(!held.contains("second"), "the network was readdressed: {held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_and_chosen_ranges_conflicts_pool_rules_and_release() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let port = free_port();
    let _op = start_operator_on(&c, port, &[]).await;
    namespace(&c, "acme").await;
    namespace(&c, "globex").await;

    // Automatic: the lowest free block; chosen: exactly the one asked for.
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("acme", "auto", None),
    )
    .await;
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("acme", "chosen", Some("10.20.30.64/26")),
    )
    .await;
    wait_condition(&c, "acme", "auto", "Ready").await;
    wait_condition(&c, "acme", "chosen", "Ready").await;
    assert_eq!(
        jsonpath(
            &c,
            "acme",
            "auto",
            "{.status.cidr} {.status.pinghost} {.status.type} {.status.state}"
        )
        .await,
        "10.0.0.0/26 10.0.0.1 Test Ready"
    );
    assert_eq!(
        jsonpath(&c, "acme", "chosen", "{.status.cidr} {.status.pinghost}").await,
        "10.20.30.64/26 10.20.30.65"
    );
    assert_eq!(
        jsonpath(&c, "acme", "chosen", "{.status.observedGeneration}").await,
        "1"
    );
    let allocation = c
        .ok(&[
            "get",
            "nalloc",
            "10-20-30-64-26",
            "-o",
            "jsonpath={.spec.network.namespace}/{.spec.network.name}",
        ])
        .await;
    assert_eq!(allocation, "acme/chosen");

    // Another customer asking for a taken range, a range outside the pool, a reserved range.
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("globex", "steal", Some("10.20.30.64/26")),
    )
    .await;
    let why = stalled_reason(&c, "globex", "steal").await;
    // The conflict is named, the other customer is not: neither its namespace nor its network.
    assert!(
        why.starts_with("CidrConflict:") && why.contains("another namespace"),
        "{why}"
    );
    assert!(!why.contains("acme") && !why.contains("chosen"), "{why}");
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("globex", "outside", Some("192.168.1.0/26")),
    )
    .await;
    let why = stalled_reason(&c, "globex", "outside").await;
    assert!(
        why.starts_with("OutsidePool:") && why.contains("10.0.0.0/8, 172.16.0.0/12"),
        "{why}"
    );
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("globex", "reserved", Some("10.96.0.64/26")),
    )
    .await;
    let why = stalled_reason(&c, "globex", "reserved").await;
    assert!(why.starts_with("Reserved:") && why.contains("10.96.0.0/12"), "{why}");
    assert_eq!(jsonpath(&c, "globex", "reserved", "{.status.state}").await, "Failed");
    let events = c
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "globex",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(
        events.contains("CidrConflict") && events.contains("Reserved"),
        "{events}"
    );
    let notes = c
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "globex",
            "-o",
            "jsonpath={.items[*].note}",
        ])
        .await;
    assert!(
        !notes.contains("acme"),
        "globex's Events name the other customer: {notes}"
    );

    // Pool usage is exported per range.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("appdb_pool_blocks_used{range=\"10.0.0.0/8\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("appdb_pool_blocks_capacity{range=\"172.16.0.0/12\"} 16384")
            && metrics.contains("appdb_pool_blocks_total{range=\"172.16.0.0/12\"} 16384"),
        "{metrics}"
    );
    assert!(
        metrics.contains("appdb_reconciles_total{controller=\"privatenetwork\"}"),
        "{metrics}"
    );

    // Isolation policies exist for each customer, owned by its networks.
    let owners = c
        .ok(&[
            "get",
            "netpol",
            "appdb-database-ingress",
            "-n",
            "acme",
            "-o",
            "jsonpath={.metadata.ownerReferences[*].name}",
        ])
        .await;
    assert_eq!(owners, "auto chosen");

    // Deleting a network releases its range into a cool-down: another customer cannot take it...
    c.ok(&["delete", "pnet", "chosen", "-n", "acme", "--timeout=30s"]).await;
    let released = c
        .ok(&[
            "get",
            "nalloc",
            "10-20-30-64-26",
            "-o",
            "jsonpath={.metadata.annotations.appdb\\.dev/released-at}",
        ])
        .await;
    assert!(
        !released.is_empty(),
        "released range keeps its lock during the cool-down"
    );
    c.ok(&["delete", "pnet", "steal", "-n", "globex"]).await;
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("globex", "steal-again", Some("10.20.30.64/26")),
    )
    .await;
    let why = stalled_reason(&c, "globex", "steal-again").await;
    assert!(why.contains("cooling down"), "{why}");
    // ...but the same customer may take its own range back at once.
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("acme", "restored", Some("10.20.30.64/26")),
    )
    .await;
    wait_condition(&c, "acme", "restored", "Ready").await;
    assert_eq!(
        c.ok(&["get", "nalloc", "10-20-30-64-26", "-o", "jsonpath={.spec.network.name}"])
            .await,
        "restored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cooldown_deletion_frees_the_range_and_type_follows_the_database() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let _op = start_operator(&c, &["--release-cooldown-seconds", "0"]).await;
    namespace(&c, "acme").await;
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &network_yaml("acme", "prod", None),
    )
    .await;
    wait_condition(&c, "acme", "prod", "Ready").await;
    assert_eq!(jsonpath(&c, "acme", "prod", "{.status.type}").await, "Test");

    let db = "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: s, key: k}}\n  storage: {size: 1Gi}\n";
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], db).await;
    eventually(30, "network turns Production", || async {
        (jsonpath(&c, "acme", "prod", "{.status.type}").await == "Production").then_some(())
    })
    .await;

    // A network under a live database is not deleted until the database has gone.
    c.ok(&["delete", "pnet", "prod", "-n", "acme", "--wait=false"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jsonpath(&c, "acme", "prod", "{.status.cidr}").await,
        "10.0.0.0/26",
        "still there, still holding its range"
    );
    let events = c
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "acme",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(events.contains("InUse"), "{events}");
    c.ok(&["delete", "adb", "orders", "-n", "acme"]).await;
    eventually(30, "network deleted once the database is gone", || async {
        (!c.kubectl(&["get", "pnet", "prod", "-n", "acme"]).await.status.success()).then_some(())
    })
    .await;
    let left = c.ok(&["get", "nalloc", "-o", "name"]).await;
    assert_eq!(left.trim(), "", "no cool-down: the allocation is deleted at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_outliving_their_network_are_collected() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let _op = start_operator(&c, &["--release-cooldown-seconds", "2"]).await;
    let orphan = "apiVersion: appdb.dev/v1alpha1\nkind: NetworkAllocation\nmetadata: {name: 10-9-9-0-26}\nspec:\n  cidr: 10.9.9.0/26\n  network: {namespace: gone, name: gone, uid: 00000000-0000-0000-0000-000000000000}\n";
    c.ok_stdin(&["create", "-f", "-"], orphan).await;
    eventually(
        30,
        "orphaned allocation released, then deleted after the cool-down",
        || async { (!c.kubectl(&["get", "nalloc", "10-9-9-0-26"]).await.status.success()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_without_leader_election_never_overlap() {
    const NETWORKS: usize = 200;
    let c = Cluster::start().await;
    c.install_crds().await;
    let _a = start_operator(&c, &[]).await;
    let _b = start_operator(&c, &[]).await;
    let client = Client::try_from(c.server.admin_config()).unwrap();
    for n in 0..10 {
        namespace(&c, &format!("customer-{n}")).await;
    }
    futures::stream::iter(0..NETWORKS)
        .map(|i| {
            let client = client.clone();
            async move {
                let api: Api<PrivateNetwork> = Api::namespaced(client, &format!("customer-{}", i % 10));
                api.create(
                    &PostParams::default(),
                    &PrivateNetwork::new(&format!("net-{i}"), PrivateNetworkSpec::default()),
                )
                .await
                .expect("create network");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let all: Api<PrivateNetwork> = Api::all(client.clone());
    let cidrs = eventually(120, "every network has a range", || async {
        let list = all.list(&Default::default()).await.ok()?;
        let cidrs: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.status.as_ref()?.cidr.clone())
            .collect();
        (cidrs.len() == NETWORKS).then_some(cidrs)
    })
    .await;
    let unique: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(unique.len(), NETWORKS, "two networks share a range");
    // Every network holds exactly one allocation, and it is the one in its status.
    let allocations: Api<NetworkAllocation> = Api::all(client);
    let settled = eventually(60, "extra allocations from races are released", || async {
        let list = allocations.list(&Default::default()).await.ok()?;
        (list.items.len() == NETWORKS).then_some(list.items)
    })
    .await;
    let held: BTreeSet<String> = settled.iter().map(|a| a.spec.cidr.clone()).collect();
    assert_eq!(held, unique.into_iter().cloned().collect::<BTreeSet<_>>());
}
