//! DatabaseMigration (Readdress) end to end: the real operator binary and kubectl against the test API server.

mod support;

use std::time::Duration;

use appdb_operator::api::PrivateNetwork;
use kube::{Api, Client};
use support::{Cluster, apply, eventually, free_port, get, mark_statefulset_ready, spawn_operator, try_get};
use tokio::process::Child;

/// Two networks, a ready database on the first with a VPN connection, the operator running.
async fn setup(c: &Cluster) -> Child {
    c.install_crds().await;
    let op = spawn_operator(
        c,
        free_port(),
        &[
            "--allow-documentation-gateways",
            "true",
            "--release-cooldown-seconds",
            "0",
            "--rollback-window-seconds",
            "3",
        ],
    )
    .await;
    // The platform allows the customer its DNS domain.
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: acme\n  annotations: {appdb.dev/dns-domains: acme.example.com}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod-2026, namespace: acme}\nspec: {}\n").await;
    apply(c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n  dns: {hostname: orders.db.acme.example.com}\n").await;
    eventually(30, "database StatefulSet", || async {
        c.kubectl(&["get", "sts", "orders", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    c.ok(&[
        "patch",
        "sts",
        "orders",
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
    ])
    .await;
    eventually(30, "database Ready To Use on prod", || async {
        (get(c, "adb/orders", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/prod-2026",
        "-n",
        "acme",
        "--timeout=30s",
    ])
    .await;
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_readdress_moves_the_database_and_removes_the_source() {
    let c = Cluster::start().await;
    // ExternalDNS is installed: the database's DNS name must follow it to the new address.
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: dnsendpoints.externaldns.k8s.io}\nspec:\n  group: externaldns.k8s.io\n  scope: Namespaced\n  names: {kind: DNSEndpoint, plural: dnsendpoints, singular: dnsendpoint}\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], crd).await;
    let _op = setup(&c).await;
    let dns = || async {
        c.ok(&[
            "get",
            "dnsendpoints",
            "orders",
            "-n",
            "acme",
            "-o",
            "jsonpath={.spec.endpoints[0].targets[0]}",
        ])
        .await
    };
    eventually(30, "DNS record on the old address", || async {
        (dns().await == "10.20.30.74").then_some(())
    })
    .await;
    assert_eq!(get(&c, "adb/orders", "{.status.endpoint.address}").await, "10.20.30.74");
    let host = get(&c, "adb/orders", "{.status.endpoint.host}").await;
    let cluster_ip = get(&c, "svc/orders", "{.spec.clusterIP}").await;

    // Scheduled a few seconds ahead, in a time zone that is not UTC.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    let local = at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(2)));
    let scheduled = local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    assert!(scheduled.ends_with("+02:00"));
    apply(&c, &format!("apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {{name: move, namespace: acme}}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n  scheduledAt: \"{scheduled}\"\n")).await;
    eventually(10, "Scheduled", || async {
        (get(&c, "dbmig/move", "{.status.state}").await == "Scheduled").then_some(())
    })
    .await;
    let scheduled_for: jiff::Timestamp = get(&c, "dbmig/move", "{.status.scheduledFor}").await.parse().unwrap();
    assert_eq!(scheduled_for.as_second(), at.as_second(), "the offset is honoured");
    assert_eq!(
        get(
            &c,
            "dbmig/move",
            r#"{.status.conditions[?(@.type=="PremisesAccess")].reason}"#
        )
        .await,
        "TargetHasNoVpn"
    );

    // Watch both networks closely while it runs: each must show "Migration In Progress".
    let client = Client::try_from(c.server.admin_config()).unwrap();
    let networks: Api<PrivateNetwork> = Api::namespaced(client, "acme");
    let mut seen = (false, false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while tokio::time::Instant::now() < deadline {
        for (name, flag) in [("prod", &mut seen.0), ("prod-2026", &mut seen.1)] {
            if let Ok(n) = networks.get(name).await
                && n.status.and_then(|s| s.common.state).as_deref() == Some("Migration In Progress")
            {
                *flag = true;
            }
        }
        if get(&c, "adb/orders", "{.status.state}").await == "Migration In Progress" {
            seen.2 = true;
        }
        if get(&c, "dbmig/move", "{.status.state}").await == "Completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&c, "dbmig/move", "{.status.state}").await, "Completed");
    // Polling may miss a short window; the Events of each object record that it was there.
    let by_object = c
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "acme",
            "-o",
            "jsonpath={range .items[*]}{.regarding.kind}/{.regarding.name}={.reason}{\"\\n\"}{end}",
        ])
        .await;
    for object in ["PrivateNetwork/prod", "PrivateNetwork/prod-2026", "AppDatabase/orders"] {
        assert!(
            by_object.contains(&format!("{object}=MigrationInProgress")),
            "{object} never showed Migration In Progress (polled: {seen:?}):\n{by_object}"
        );
    }

    // The database lives on the new network, with a new address; sessions' name and Service never changed.
    assert_eq!(
        get(
            &c,
            "adb/orders",
            "{.status.network} {.status.endpoint.address} {.status.state}"
        )
        .await,
        "prod-2026 10.0.0.10 Ready To Use"
    );
    assert_eq!(get(&c, "adb/orders", "{.status.endpoint.host}").await, host);
    assert_eq!(get(&c, "svc/orders", "{.spec.clusterIP}").await, cluster_ip);
    assert_eq!(
        get(&c, "dbmig/move", "{.status.sourceNetwork} {.status.downtimeSeconds}").await,
        "prod 0"
    );
    let phases = get(&c, "dbmig/move", "{.status.phaseTimes}").await;
    assert!(
        phases.contains("MigrationInProgress") && phases.contains("Completed"),
        "{phases}"
    );
    eventually(30, "target network Production", || async {
        (get(&c, "pnet/prod-2026", "{.status.type}").await == "Production").then_some(())
    })
    .await;
    eventually(30, "source network and its VPN connection deleted", || async {
        let net = c.kubectl(&["get", "pnet", "prod", "-n", "acme"]).await.status.success();
        let vpn = c
            .kubectl(&["get", "vpn", "seattle", "-n", "acme"])
            .await
            .status
            .success();
        (!net && !vpn).then_some(())
    })
    .await;
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
    for reason in ["Scheduled", "MigrationInProgress", "Completed", "SourceDeleted"] {
        assert!(events.contains(reason), "Event {reason} missing: {events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_network_that_still_hosts_a_database_keeps_its_vpns() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    // A second database stays on prod: its premises traffic runs through seattle.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: billing, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: move, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n").await;
    eventually(60, "Completed", || async {
        (get(&c, "dbmig/move", "{.status.state}").await == "Completed").then_some(())
    })
    .await;
    let message = get(&c, "dbmig/move", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("PrivateNetwork prod and its VPN connections are kept")
            && message.contains("AppDatabase billing still lives there"),
        "{message}"
    );
    // Given time to do the wrong thing, the source and its VPN connection are still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&c, "vpn/seattle", "{.spec.network}").await, "prod");
    assert_eq!(
        try_get(&c, "pnet/prod", "{.metadata.deletionTimestamp}")
            .await
            .as_deref(),
        Some("")
    );
    assert_eq!(get(&c, "adb/orders", "{.status.network}").await, "prod-2026");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmet_preconditions_wait_with_reasons_and_cancellation_changes_nothing() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: early, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: later\n").await;
    eventually(15, "TargetNetworkNotFound", || async {
        (get(&c, "dbmig/early", r#"{.status.conditions[?(@.type=="Ready")].reason}"#).await == "TargetNetworkNotFound")
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "dbmig/early", "{.status.state}").await,
        "Scheduled",
        "waiting is not failing"
    );
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: same, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod\n  scheduledAt: \"2099-01-01T00:00:00Z\"\n").await;
    eventually(15, "TargetIsSource", || async {
        (get(&c, "dbmig/same", r#"{.status.conditions[?(@.type=="Ready")].reason}"#).await == "TargetIsSource")
            .then_some(())
    })
    .await;
    // A target where another database lives (a Production network) is refused before anything moves.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: billing, namespace: acme}\nspec:\n  network: prod-2026\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    eventually(30, "prod-2026 is Production", || async {
        (get(&c, "pnet/prod-2026", "{.status.type}").await == "Production").then_some(())
    })
    .await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: crowded, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n").await;
    eventually(15, "TargetNetworkInUse", || async {
        (get(
            &c,
            "dbmig/crowded",
            r#"{.status.conditions[?(@.type=="Ready")].reason}"#,
        )
        .await
            == "TargetNetworkInUse")
            .then_some(())
    })
    .await;
    assert_eq!(get(&c, "dbmig/crowded", "{.status.state}").await, "Scheduled");
    assert_eq!(
        get(&c, "adb/orders", "{.status.network}").await,
        "prod",
        "nothing moved"
    );
    c.ok(&["delete", "dbmig", "crowded", "-n", "acme"]).await;
    // A new server with a strategy that keeps the old one is refused at admission.
    let refused = c
        .fails(
            &["apply", "--server-side", "-f", "-"],
            Some("apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: copy, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n  strategy: Readdress\n  target: {version: '8.4'}\n"),
        )
        .await;
    assert!(refused.contains("needs a copying strategy"), "{refused}");
    // Cancelling a migration that has not started changes nothing.
    c.ok(&["delete", "dbmig", "same", "-n", "acme"]).await;
    assert_eq!(
        get(&c, "adb/orders", "{.status.network} {.status.state}").await,
        "prod Ready To Use",
        "nothing moved"
    );
    // The target appears: the waiting migration starts (no schedule: as soon as possible) and completes.
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: later, namespace: acme}\nspec: {}\n",
    )
    .await;
    eventually(40, "migration completed", || async {
        (get(&c, "dbmig/early", "{.status.state}").await == "Completed").then_some(())
    })
    .await;
    assert_eq!(get(&c, "adb/orders", "{.status.network}").await, "later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_migration_finishes_it_after_restart() {
    let c = Cluster::start().await;
    let mut op = setup(&c).await;
    let client = Client::try_from(c.server.admin_config()).unwrap();
    let migrations: Api<appdb_operator::api::DatabaseMigration> = Api::namespaced(client, "acme");
    // The target network has a VPN connection whose gateways must relay the database before the migration ends;
    // its load balancer has not given it addresses yet, so the migration stays in progress.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: office, namespace: acme}\nspec:\n  network: prod-2026\n  customerCidrs: [192.168.20.0/24]\n  customerGatewayAddress: 198.51.100.8\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: move, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n").await;
    // SIGKILL the moment the migration is recorded as started: nothing after that point ran to completion.
    let killed_mid_way = eventually(30, "migration started", || async {
        let m = migrations.get("move").await.ok()?;
        match m.status.and_then(|s| s.common.state).as_deref() {
            Some("Migration In Progress") => Some(true),
            Some("Completed") => Some(false),
            _ => None,
        }
    })
    .await;
    op.start_kill().expect("kill the operator");
    let _ = op.wait().await;
    assert!(
        killed_mid_way,
        "the operator was killed while the migration was in progress"
    );
    let _restarted = spawn_operator(
        &c,
        free_port(),
        &[
            "--allow-documentation-gateways",
            "true",
            "--release-cooldown-seconds",
            "0",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get(&c, "dbmig/move", "{.status.state}").await,
        "Migration In Progress",
        "waits for the target's gateways"
    );
    for n in [1, 2] {
        let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"203.0.113.3{n}"}}]}}}}}}"#);
        c.ok(&[
            "patch",
            "svc",
            &format!("office-tunnel{n}"),
            "-n",
            "acme",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .await;
    }
    eventually(60, "migration completed after the restart", || async {
        (get(&c, "dbmig/move", "{.status.state}").await == "Completed").then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "adb/orders", "{.status.network} {.status.state}").await,
        "prod-2026 Ready To Use"
    );
    eventually(30, "source network deleted", || async {
        (!c.kubectl(&["get", "pnet", "prod", "-n", "acme"]).await.status.success()).then_some(())
    })
    .await;
}

/// What the engine would write under its Job pod's name in the migration's report ConfigMap: the phases so far.
async fn report_phases(c: &Cluster, pod: &str, phases: &[(&str, &str)]) {
    let reports: Vec<serde_json::Value> = phases
        .iter()
        .map(|(phase, extra)| {
            let mut r =
                serde_json::json!({"phase": phase, "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T10:00:01Z"});
            if !extra.is_empty() {
                let more: serde_json::Value = serde_json::from_str(extra).expect("extra fields");
                r.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
            }
            r
        })
        .collect();
    let value = serde_json::to_string(&reports).unwrap();
    support::write_report(c, "acme", &support::migration_report_configmap(pod), pod, &value).await;
}

/// A copying migration to a new server (other version and storage) on the same network: the operator creates the
/// server beside the old one, starts the engine's Job once it is ready, follows the phases the engine reports,
/// switches the Service at `promote`, completes at `done` with the measured outage, and retires the old server
/// after the rollback window. (The engine itself is proven against real servers in tests/migration_engine.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_creates_the_new_server_follows_the_engine_and_switches_the_service() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: orders-to-ssd, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod\n  strategy: Replicate\n  target: {version: '9.1', storage: {size: 5Gi, storageClassName: fast}}\n").await;
    let server = eventually(30, "the migration names its new server", || async {
        let s = get(&c, "dbmig/orders-to-ssd", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert!(server.starts_with("orders-"), "{server}");
    assert_eq!(get(&c, "dbmig/orders-to-ssd", "{.status.state}").await, "Preparing");
    eventually(30, "the new server's StatefulSet", || async {
        let image = try_get(
            &c,
            &format!("sts/{server}"),
            "{.spec.template.spec.containers[0].image}",
        )
        .await;
        (image.as_deref() == Some("mysql:9.1")).then_some(())
    })
    .await;
    assert_eq!(
        get(
            &c,
            &format!("sts/{server}"),
            "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}"
        )
        .await,
        "5Gi"
    );
    eventually(30, "waiting for the new server", || async {
        (get(
            &c,
            "dbmig/orders-to-ssd",
            "{.status.conditions[?(@.type==\"Reconciling\")].reason}",
        )
        .await
            == "WaitingForServer")
            .then_some(())
    })
    .await;
    mark_statefulset_ready(&c, "acme", &server).await;
    let args = eventually(30, "the migration Job", || async {
        try_get(&c, "job/orders-to-ssd-copy", "{.spec.template.spec.containers[0].args}").await
    })
    .await;
    assert!(
        args.contains(&format!("{server}-0.{server}-headless.acme.svc.cluster.local:3306"))
            && args.contains("orders-0.orders-headless.acme.svc.cluster.local:3306")
            && args.contains("orders.acme.svc.cluster.local:3306"),
        "{args}"
    );
    let job = c
        .ok(&["get", "job", "orders-to-ssd-copy", "-n", "acme", "-o", "json"])
        .await;
    assert!(
        job.contains("\"secretKeyRef\"") && !job.contains("first-Secret-9"),
        "passwords only by reference"
    );
    for kind in ["serviceaccount", "role", "rolebinding"] {
        c.ok(&["get", kind, "orders-to-ssd-copy", "-n", "acme"]).await;
    }
    // The Job controller's pod, as a cluster would create it.
    apply(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: orders-to-ssd-copy-x7k2p, namespace: acme, labels: {appdb.dev/migration: orders-to-ssd}}\nspec: {containers: [{name: migrate, image: op}]}\n").await;
    let pod = "orders-to-ssd-copy-x7k2p";
    report_phases(
        &c,
        pod,
        &[("prepare", ""), ("snapshot", r#"{"rows": 4596, "bytes": 897583}"#)],
    )
    .await;
    eventually(30, "the snapshot in status", || async {
        (get(&c, "dbmig/orders-to-ssd", "{.status.copy.rows}").await == "4596").then_some(())
    })
    .await;
    assert_eq!(get(&c, "dbmig/orders-to-ssd", "{.status.state}").await, "Preparing");
    let phases = [
        ("prepare", ""),
        ("snapshot", r#"{"rows": 4596}"#),
        ("replicate", r#"{"lagSeconds": 0}"#),
        ("fence", ""),
    ];
    report_phases(&c, pod, &phases).await;
    eventually(30, "Migration In Progress once the source is fenced", || async {
        (get(&c, "dbmig/orders-to-ssd", "{.status.state}").await == "Migration In Progress"
            && get(&c, "pnet/prod", "{.status.state}").await == "Migration In Progress")
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "svc/orders", "{.spec.selector.app\\.kubernetes\\.io/instance}").await,
        "orders"
    );
    let mut phases = phases.to_vec();
    phases.extend([("catch-up", ""), ("verify", ""), ("promote", "")]);
    report_phases(&c, pod, &phases).await;
    eventually(30, "the Service leads to the new server at promote", || async {
        (get(&c, "svc/orders", "{.spec.selector.app\\.kubernetes\\.io/instance}").await == server).then_some(())
    })
    .await;
    assert_eq!(get(&c, "adb/orders", "{.status.server.name}").await, server);
    assert_eq!(get(&c, "adb/orders", "{.status.server.image}").await, "mysql:9.1");
    assert_eq!(get(&c, "adb/orders", "{.status.retiredServer.name}").await, "orders");
    phases.extend([
        ("switch", ""),
        ("release", ""),
        ("done", r#"{"downtimeSeconds": 1.25}"#),
    ]);
    report_phases(&c, pod, &phases).await;
    eventually(30, "Completed with the measured outage", || async {
        (get(&c, "dbmig/orders-to-ssd", "{.status.state}").await == "Completed").then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "dbmig/orders-to-ssd", "{.status.downtimeSeconds}").await,
        "1.25"
    );
    assert_eq!(get(&c, "adb/orders", "{.status.state}").await, "Ready To Use");
    // Same network: nothing to delete there.
    c.ok(&["get", "pnet/prod", "-n", "acme"]).await;
    // The old server is kept for the rollback window (3 s here), then deleted.
    eventually(30, "the retired server is deleted after its window", || async {
        (!c.kubectl(&["get", "sts", "orders", "-n", "acme"])
            .await
            .status
            .success())
        .then_some(())
    })
    .await;
    c.ok(&["get", "sts", &server, "-n", "acme"]).await;
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
    for reason in [
        "Preparing",
        "MigrationInProgress",
        "ServerSwitched",
        "Completed",
        "ServerRetired",
    ] {
        assert!(events.contains(reason), "Event {reason} missing: {events}");
    }
    eventually(30, "the status forgets the retired server", || async {
        get(&c, "adb/orders", "{.status.retiredServer}")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The engine reports a rollback: the migration ends RolledBack with the engine's reason, the Service never
/// moved, and the unfinished copy's server is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_copy_keeps_the_database_on_its_server() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: dump, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod\n  strategy: DumpRestore\n  target: {storage: {size: 2Gi}}\n").await;
    let server = eventually(30, "the new server", || async {
        let s = get(&c, "dbmig/dump", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    mark_statefulset_ready(&c, "acme", &server).await;
    let args = eventually(30, "the migration Job", || async {
        try_get(&c, "job/dump-copy", "{.spec.template.spec.containers[0].args}").await
    })
    .await;
    assert!(args.contains("dump-restore"), "{args}");
    apply(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: dump-copy-a1b2c, namespace: acme, labels: {appdb.dev/migration: dump}}\nspec: {containers: [{name: migrate, image: op}]}\n").await;
    report_phases(
        &c,
        "dump-copy-a1b2c",
        &[
            ("prepare", ""),
            ("fence", ""),
            ("snapshot", ""),
            (
                "rolled-back",
                r#"{"message": "checksums differ for `shop`.`orders`; the source is writable and authoritative"}"#,
            ),
        ],
    )
    .await;
    eventually(30, "RolledBack with the engine's reason", || async {
        (get(&c, "dbmig/dump", "{.status.state}").await == "RolledBack").then_some(())
    })
    .await;
    let stalled = get(&c, "dbmig/dump", "{.status.conditions[?(@.type==\"Stalled\")].message}").await;
    assert!(stalled.contains("checksums differ"), "{stalled}");
    assert_eq!(
        get(&c, "dbmig/dump", "{.status.conditions[?(@.type==\"Ready\")].status}").await,
        "False"
    );
    assert_eq!(
        get(&c, "svc/orders", "{.spec.selector.app\\.kubernetes\\.io/instance}").await,
        "orders"
    );
    eventually(30, "the unfinished copy's server is removed", || async {
        (!c.kubectl(&["get", "sts", &server, "-n", "acme"]).await.status.success()).then_some(())
    })
    .await;
    assert_eq!(get(&c, "adb/orders", "{.status.state}").await, "Ready To Use");
    assert_eq!(get(&c, "adb/orders", "{.status.server}").await, "");
}

/// A schedule in a named time zone: status shows the instant in UTC and on the zone's clock, and a local time that
/// a daylight-saving change skips or repeats is refused with its own reason, before anything else is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_in_a_named_zone_reads_the_zones_clock_and_refuses_skipped_and_repeated_times() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let _op = spawn_operator(&c, free_port(), &[]).await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    let migration = |name: &str, at: &str, zone: &str| {
        format!(
            "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  database: orders\n  targetNetwork: prod-2027\n  scheduledAt: \"{at}\"\n  timeZone: {zone}\n"
        )
    };
    // Winter in Amsterdam (+01:00) and summer in New York (-04:00).
    apply(&c, &migration("winter", "2027-01-15T22:00:00", "Europe/Amsterdam")).await;
    apply(&c, &migration("summer", "2027-07-04T09:30:00", "America/New_York")).await;
    for (name, utc, local) in [
        (
            "winter",
            "2027-01-15T21:00:00Z",
            "2027-01-15T22:00:00+01:00[Europe/Amsterdam]",
        ),
        (
            "summer",
            "2027-07-04T13:30:00Z",
            "2027-07-04T09:30:00-04:00[America/New_York]",
        ),
    ] {
        let object = format!("dbmig/{name}");
        eventually(20, "scheduledFor", || async {
            (get(&c, &object, "{.status.scheduledFor}").await == utc).then_some(())
        })
        .await;
        assert_eq!(get(&c, &object, "{.status.scheduledForLocal}").await, local);
    }

    // The spring gap, the autumn repeat, a repeat with the offset chosen, and an unknown zone.
    apply(&c, &migration("gap", "2027-03-28T02:30:00", "Europe/Amsterdam")).await;
    apply(&c, &migration("repeat", "2027-11-07T01:30:00", "America/New_York")).await;
    apply(
        &c,
        &migration("chosen", "2027-11-07T01:30:00-05:00", "America/New_York"),
    )
    .await;
    apply(&c, &migration("typo", "2027-01-15T22:00:00", "Europe/Amsterdan")).await;
    for (name, reason, words) in [
        ("gap", "NonexistentLocalTime", "does not exist in Europe/Amsterdam"),
        (
            "repeat",
            "AmbiguousLocalTime",
            "2027-11-07T01:30:00-04:00 for the first",
        ),
        ("typo", "UnknownTimeZone", "\"Europe/Amsterdan\""),
    ] {
        let object = format!("dbmig/{name}");
        let stalled = r#"{.status.conditions[?(@.type=="Stalled")].reason}"#;
        eventually(20, reason, || async {
            (get(&c, &object, stalled).await == reason).then_some(())
        })
        .await;
        let message = get(&c, &object, r#"{.status.conditions[?(@.type=="Stalled")].message}"#).await;
        assert!(message.contains(words), "{name}: {message}");
        assert_eq!(get(&c, &object, "{.status.state}").await, "Scheduled");
        assert_eq!(
            get(&c, &object, "{.status.scheduledFor}").await,
            "",
            "{name}: no instant was picked"
        );
    }
    eventually(20, "the chosen repeat", || async {
        (get(&c, "dbmig/chosen", "{.status.scheduledFor}").await == "2027-11-07T06:30:00Z").then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "dbmig/chosen", "{.status.scheduledForLocal}").await,
        "2027-11-07T01:30:00-05:00[America/New_York]"
    );
}
