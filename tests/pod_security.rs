//! Every pod template the operator creates, held to the Pod Security level of the namespace it runs in
//! (`appdb_testkit::pod_security`, the admission controller's rules): database servers, password-rotation and
//! migration Jobs pass `restricted`, so customer namespaces can enforce it; the VPN gateways need `NET_ADMIN`
//! (XFRM or TUN, routes) as root, which only `privileged` allows — docs/vpn.md ("Pod Security") says where they may
//! run.

mod support;

use appdb_testkit::pod_security::{Level, violations};
use serde_json::Value;
use support::{
    Cluster, apply, eventually, free_port, get, give_outside_addresses, mark_statefulset_ready, spawn_operator,
};

async fn template(c: &Cluster, what: &str) -> Value {
    let object: Value = serde_json::from_str(&c.ok(&["get", what, "-n", "acme", "-o", "json"]).await).expect("JSON");
    object["spec"]["template"]["spec"].clone()
}

async fn exists(c: &Cluster, what: &str) -> bool {
    c.kubectl(&["get", what, "-n", "acme"]).await.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_job_pods_are_restricted_and_gateways_need_privileged() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let _op = spawn_operator(&c, free_port(), &["--allow-documentation-gateways", "true"]).await;
    // A namespace with VPNs is labelled privileged by the platform (docs/vpn.md); the operator refuses to build
    // gateways in one that enforces less (tests/vpn_connection.rs).
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: acme\n  labels: {pod-security.kubernetes.io/enforce: privileged}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    mark_statefulset_ready(&c, "acme", "orders").await;
    eventually(60, "Ready To Use", || async {
        (get(&c, "adb/orders", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: second-Secret-9}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n").await;
    give_outside_addresses(&c, "acme", "seattle", ["203.0.113.10", "203.0.113.11"]).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: to-ssd, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod\n  strategy: Replicate\n  target: {version: '8.4', storage: {size: 5Gi}}\n").await;
    let server = eventually(60, "the copy's server", || async {
        let s = get(&c, "dbmig/to-ssd", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    mark_statefulset_ready(&c, "acme", &server).await;
    let rotation = eventually(60, "the rotation Job", || async {
        let jobs = c.ok(&["get", "jobs", "-n", "acme", "-o", "name"]).await;
        jobs.lines().find(|j| !j.contains("to-ssd")).map(str::to_owned)
    })
    .await;
    eventually(60, "the copy Job and the gateways", || async {
        (exists(&c, "job/to-ssd-copy").await
            && exists(&c, "deployment/seattle-tunnel1").await
            && exists(&c, "deployment/seattle-tunnel2").await)
            .then_some(())
    })
    .await;

    for what in [
        "sts/orders".to_owned(),
        format!("sts/{server}"),
        rotation,
        "job/to-ssd-copy".into(),
    ] {
        let spec = template(&c, &what).await;
        assert_eq!(
            violations(&spec, Level::Restricted),
            Vec::<String>::new(),
            "{what}: {spec}"
        );
    }
    let enforced = c
        .ok(&[
            "get",
            "namespace",
            "acme",
            "-o",
            r#"jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}"#,
        ])
        .await;
    assert_eq!(enforced, "privileged");
    for tunnel in ["deployment/seattle-tunnel1", "deployment/seattle-tunnel2"] {
        let spec = template(&c, tunnel).await;
        assert!(
            violations(&spec, Level::Privileged).is_empty(),
            "passes its namespace's level"
        );
        let beyond_baseline = violations(&spec, Level::Baseline);
        assert_eq!(
            beyond_baseline.len(),
            1,
            "{tunnel}: only NET_ADMIN: {beyond_baseline:?}"
        );
        assert!(beyond_baseline[0].contains("\"NET_ADMIN\""), "{beyond_baseline:?}");
        // Beyond that, restricted would ask for non-root users: charon needs root for its capabilities to be
        // effective (a non-root process gets none without file capabilities), and the agent shares its sockets.
        let restricted = violations(&spec, Level::Restricted);
        assert!(
            restricted
                .iter()
                .all(|v| v.contains("\"NET_ADMIN\"") || v.starts_with("runAsNonRoot") || v.starts_with("runAsUser=0")),
            "{tunnel}: {restricted:?}"
        );
    }
}
