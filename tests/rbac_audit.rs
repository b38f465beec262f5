//! The operator's API calls against the chart's RBAC. The operator runs as its service account under the chart's
//! ClusterRole and leader-election Role (so a missing permission fails at once, with a real server's 403), through
//! a whole customer's life: a network, a database with a DNS record, a VPN connection, a password rotation, a
//! copying migration to a new network (the engine's Job simulated by its reports) that removes the old network and
//! its VPN, a dump-and-restore copy that rolls back, and the database's deletion with its volume. The test API
//! server records every authorised request; every rule of the chart must have been used, or be listed below with why
//! it stays.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{
    Cluster, apply, chart_objects, eventually, free_port, get, give_outside_addresses, mark_statefulset_ready,
    operator_kubeconfig, try_get,
};

const OPERATOR: &str = "system:serviceaccount:appdb-system:appdb-operator";

/// Rules the lifecycle does not exercise, each with why the chart keeps it.
const KEPT_WITHOUT_USE: &[(&str, &str)] = &[
    (
        "get appdb.dev/networkallocations",
        "read when two networks claim the same range at once (a create conflict); a single operator never races itself",
    ),
    (
        "delete appdb.dev/networkallocations",
        "frees a released range once its cool-down has passed: an hour in this run (tests/private_network.rs runs without one)",
    ),
];

/// Rules a run may or may not use, depending on timing, with why they stay.
const USED_BY_TIMING: &[(&str, &str)] = &[(
    "patch events.k8s.io/events",
    "a repeated Event is patched (its count and last time); two reconciles of one change, racing the cache, repeat one in some runs and not in others",
)];

/// Every (verb, group/resource) a rule grants, expanded.
fn granted(rules: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    for rule in rules {
        for verb in strings(&rule["verbs"]) {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    out.insert(format!("{verb} {group}/{resource}"));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_of_a_customers_life_is_granted_and_every_chart_rule_is_used() {
    let c = Cluster::start().await;
    c.install_crds().await;
    // ExternalDNS's CRD, so that the DNS record is written too.
    apply(&c, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: dnsendpoints.externaldns.k8s.io}\nspec:\n  group: externaldns.k8s.io\n  scope: Namespaced\n  names: {kind: DNSEndpoint, plural: dnsendpoints, singular: dnsendpoint}\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n").await;
    // The API server's own Service and EndpointSlice, as every cluster has them (read at start-up).
    apply(&c, "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {ports: [{name: https, port: 443, targetPort: 6443}]}\n").await;
    apply(&c, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}\naddressType: IPv4\nendpoints: [{addresses: [172.18.0.2]}]\nports: [{name: https, port: 6443, protocol: TCP}]\n").await;
    let kubeconfig = operator_kubeconfig(&c).await;
    let log = c.dir.path().join("operator.log");
    // As the chart runs it: leader election on, its Lease in the release namespace.
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--lease-namespace",
            "appdb-system",
            "--allow-documentation-gateways",
            "true",
            "--release-cooldown-seconds",
            "3600",
            "--rollback-window-seconds",
            "2",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "appdb-operator-0")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");

    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: acme\n  annotations: {appdb.dev/dns-domains: acme.example.com}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod-2026, namespace: acme}\nspec: {}\n").await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  deletionPolicy: Delete\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n  dns: {hostname: orders.db.acme.example.com}\n  tunnel: {allowed: [{kind: User, name: alice@example.com}]}\n").await;
    mark_statefulset_ready(&c, "acme", "orders").await;
    eventually(60, "the database Ready To Use", || async {
        (get(&c, "adb/orders", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n").await;
    give_outside_addresses(&c, "acme", "seattle", ["203.0.113.10", "203.0.113.11"]).await;
    eventually(60, "the VPN's downloadable configuration", || async {
        try_get(&c, "secret/seattle-vpn-config", "{.metadata.name}").await
    })
    .await;
    // A password rotation: the operator starts its Job.
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: second-Secret-9}\n").await;
    eventually(60, "the rotation Job", || async {
        let jobs = c.ok(&["get", "jobs", "-n", "acme", "-o", "name"]).await;
        (!jobs.trim().is_empty()).then_some(())
    })
    .await;

    // A copying migration to the new network; the engine's Job is simulated by its pod's reports.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: to-2026, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n  strategy: Replicate\n  target: {version: '8.4'}\n").await;
    let server = eventually(60, "the new server", || async {
        let s = get(&c, "dbmig/to-2026", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    mark_statefulset_ready(&c, "acme", &server).await;
    eventually(60, "the migration Job", || async {
        try_get(&c, "job/to-2026-copy", "{.metadata.name}").await
    })
    .await;
    apply(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: to-2026-copy-x7k2p, namespace: acme, labels: {appdb.dev/migration: to-2026}}\nspec: {containers: [{name: migrate, image: op}]}\n").await;
    report_phases(
        &c,
        "to-2026-copy-x7k2p",
        &[
            "prepare",
            "snapshot",
            "replicate",
            "fence",
            "catch-up",
            "verify",
            "promote",
            "switch",
            "release",
            "done",
        ],
    )
    .await;
    eventually(60, "the migration Completed", || async {
        (get(&c, "dbmig/to-2026", "{.status.state}").await == "Completed").then_some(())
    })
    .await;
    eventually(60, "the old network and its VPN removed", || async {
        let gone = |what: &'static str| {
            let c = &c;
            async move { !c.kubectl(&["get", what, "-n", "acme"]).await.status.success() }
        };
        (gone("pnet/prod").await && gone("vpn/seattle").await).then_some(())
    })
    .await;

    // A dump-and-restore copy whose engine reports a rollback.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: dump, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n  strategy: DumpRestore\n  target: {storage: {size: 2Gi}}\n").await;
    let copy = eventually(60, "the dump's server", || async {
        let s = get(&c, "dbmig/dump", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    mark_statefulset_ready(&c, "acme", &copy).await;
    eventually(60, "the dump Job", || async {
        try_get(&c, "job/dump-copy", "{.metadata.name}").await
    })
    .await;
    apply(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: dump-copy-b8m3q, namespace: acme, labels: {appdb.dev/migration: dump}}\nspec: {containers: [{name: migrate, image: op}]}\n").await;
    let rolled_back = serde_json::json!([
        {"phase": "prepare", "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T10:00:01Z"},
        {"phase": "rolled-back", "start": "2026-11-24T10:00:01Z", "end": "2026-11-24T10:00:02Z", "message": "the target refused the load"}
    ]);
    write_progress(&c, "dump-copy-b8m3q", &rolled_back).await;
    eventually(60, "the dump RolledBack", || async {
        (get(&c, "dbmig/dump", "{.status.state}").await == "RolledBack").then_some(())
    })
    .await;

    // The database goes, with its volume (deletionPolicy: Delete): the claim the StatefulSet controller made.
    apply(&c, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data-orders-0, namespace: acme, labels: {appdb.dev/database: orders}}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n").await;
    c.ok(&["delete", "adb/orders", "-n", "acme", "--wait=true", "--timeout=60s"])
        .await;
    let _ = operator.kill().await;

    let used: BTreeSet<String> = c
        .server
        .audit()
        .into_keys()
        .filter(|(user, ..)| user == OPERATOR)
        .map(|(_, verb, group, resource, _)| format!("{verb} {group}/{resource}"))
        .collect();
    let rules: Vec<Value> = chart_objects()
        .iter()
        .filter(|o| (o["kind"] == "ClusterRole" && o["metadata"]["name"] == "appdb-operator") || o["kind"] == "Role")
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let granted = granted(&rules);
    // A call outside the rules would have failed with 403 already; this says which.
    let ungranted: Vec<&String> = used.iter().filter(|u| !granted.contains(*u)).collect();
    assert!(ungranted.is_empty(), "calls the chart does not grant: {ungranted:#?}");
    let kept: BTreeSet<&str> = KEPT_WITHOUT_USE.iter().map(|(rule, _)| *rule).collect();
    let by_timing: BTreeSet<&str> = USED_BY_TIMING.iter().map(|(rule, _)| *rule).collect();
    let unused: Vec<&String> = granted
        .iter()
        .filter(|g| !used.contains(*g) && !kept.contains(g.as_str()) && !by_timing.contains(g.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "chart rules nothing used (remove them, or justify them in KEPT_WITHOUT_USE): {unused:#?}\nused: {used:#?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let stale: Vec<&&str> = kept.iter().filter(|k| used.contains(**k)).collect();
    assert!(stale.is_empty(), "rules listed as unused that are used: {stale:?}");
    let gone: Vec<&&str> = by_timing.iter().filter(|r| !granted.contains(**r)).collect();
    assert!(
        gone.is_empty(),
        "USED_BY_TIMING lists rules the chart no longer grants: {gone:?}"
    );
}

/// The engine's progress annotation with `phases` all done.
async fn report_phases(c: &Cluster, pod: &str, phases: &[&str]) {
    let reports: Vec<Value> = phases
        .iter()
        .map(|phase| {
            let mut r =
                serde_json::json!({"phase": phase, "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T10:00:01Z"});
            if *phase == "done" {
                r["downtimeSeconds"] = 1.0.into();
            }
            r
        })
        .collect();
    write_progress(c, pod, &Value::Array(reports)).await;
}

async fn write_progress(c: &Cluster, pod: &str, reports: &Value) {
    let configmap = support::migration_report_configmap(pod);
    support::write_report(c, "acme", &configmap, pod, &reports.to_string()).await;
}
