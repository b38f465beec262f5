//! A whole run (network, database, password rotation, VPN with a customer-given and a generated key, device
//! downloads, a copying migration's Job) with debug JSON logs; afterwards every password and pre-shared key used
//! is searched for in the logs, in every Event, and in every object that is not a Secret (statuses included).
//! None may appear.

mod support;

use std::{process::Stdio, time::Duration};

use support::{
    Cluster, apply, eventually, free_port, get, give_outside_addresses, mark_statefulset_ready, wait_ready_to_use,
};

const ADMIN_FIRST: &str = "First-Passw0rd-xyz";
const ADMIN_SECOND: &str = "Second-Passw0rd-abc";
const CUSTOMER_PSK: &str = "customerGivenKey_8142";

fn decode(b64: &str) -> String {
    use std::process::Command;
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b64.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_key_reaches_logs_events_or_any_other_object() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let log_path = c.dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let _op = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--leader-election",
            "false",
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", support::operator_kubeconfig(&c).await)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");

    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(&c, &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: orders-admin, namespace: acme}}\nstringData: {{password: {ADMIN_FIRST}}}\n")).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  engine: MariaDB\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    mark_statefulset_ready(&c, "acme", "orders").await;
    wait_ready_to_use(&c, "orders").await;
    // Rotation: the operator starts a Job that sets the new password.
    apply(&c, &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: orders-admin, namespace: acme}}\nstringData: {{password: {ADMIN_SECOND}}}\n")).await;
    eventually(30, "the rotation Job", || async {
        let jobs = c.ok(&["get", "jobs", "-n", "acme", "-o", "name"]).await;
        jobs.contains("orders-rotate").then_some(())
    })
    .await;
    // A VPN with the customer's own key for tunnel 1 and a generated one for tunnel 2.
    apply(&c, &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: seattle-key, namespace: acme}}\nstringData: {{psk: {CUSTOMER_PSK}}}\n")).await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 93.184.216.34\n  tunnelOptions:\n  - pskSecretRef: {name: seattle-key, key: psk}\n").await;
    give_outside_addresses(&c, "acme", "seattle", ["203.0.113.10", "203.0.113.11"]).await;
    let config_secret = eventually(30, "the device downloads", || async {
        let s = get(&c, "vpn/seattle", "{.status.configSecret}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    // A copying migration: its Job takes the root password by reference.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {name: to-ssd, namespace: acme}\nspec:\n  database: orders\n  targetNetwork: prod\n  target: {storage: {size: 2Gi}}\n").await;
    let server = eventually(30, "the new server", || async {
        let s = get(&c, "dbmig/to-ssd", "{.status.copy.server}").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    mark_statefulset_ready(&c, "acme", &server).await;
    eventually(30, "the migration Job", || async {
        c.kubectl(&["get", "job", "to-ssd-copy", "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every secret value in play, including the ones the operator generated.
    let mut secrets = vec![ADMIN_FIRST.to_owned(), ADMIN_SECOND.to_owned(), CUSTOMER_PSK.to_owned()];
    let root = get(&c, "secret/orders-root", "{.data.password}").await;
    secrets.push(decode(&root));
    let psk_secret = c.ok(&["get", "secret", "-n", "acme", "-o", "json"]).await;
    let all: serde_json::Value = serde_json::from_str(&psk_secret).expect("secrets");
    for s in all["items"].as_array().expect("items") {
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        if name.contains("psk") {
            for (_, v) in s["data"].as_object().into_iter().flatten() {
                secrets.push(decode(v.as_str().unwrap_or_default()));
            }
        }
    }
    secrets.retain(|s| s.len() >= 8);
    assert!(
        secrets.len() >= 5,
        "the run used the passwords and keys: {}",
        secrets.len()
    );
    // Control: the scan looks for the right values (the customer's download does hold both keys).
    let generic = decode(&get(&c, &format!("secret/{config_secret}"), "{.data.generic\\.txt}").await);
    let found = secrets.iter().filter(|s| generic.contains(s.as_str())).count();
    assert!(
        generic.contains(CUSTOMER_PSK) && found >= 2,
        "the download holds the keys"
    );

    let mut haystacks = vec![(
        "the operator's logs".to_owned(),
        std::fs::read_to_string(&log_path).expect("log"),
    )];
    assert!(haystacks[0].1.lines().count() > 50, "debug logs were written");
    for what in ["events.events.k8s.io", "events"] {
        haystacks.push((what.to_owned(), c.ok(&["get", what, "-A", "-o", "json"]).await));
    }
    for kind in [
        "privatenetworks",
        "appdatabases",
        "vpnconnections",
        "databasemigrations",
        "networkallocations",
        "statefulsets",
        "deployments",
        "jobs",
        "services",
        "configmaps",
        "networkpolicies",
        "poddisruptionbudgets",
        "serviceaccounts",
        "roles",
        "rolebindings",
    ] {
        haystacks.push((kind.to_owned(), c.ok(&["get", kind, "-A", "-o", "json"]).await));
    }
    for (what, text) in &haystacks {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a password or key appears in {what}");
        }
    }
    eprintln!(
        "{} secret values, {} sources scanned: none found",
        secrets.len(),
        haystacks.len()
    );
}
