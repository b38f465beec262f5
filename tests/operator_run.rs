//! The real `appdb-operator run` binary against the test API server: CRD wait, readiness, Lease, SIGTERM.

mod support;

use std::{process::Stdio, time::Duration};

use support::{Cluster, apply, eventually, free_port};
use tokio::process::{Child, Command};

struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    async fn start(c: &Cluster, identity: &str, extra: &[&str]) -> Operator {
        Self::start_logging(c, identity, extra, Stdio::null()).await
    }

    /// As the chart runs it: its service account under the chart's RBAC, the Lease in the release namespace.
    async fn start_logging(c: &Cluster, identity: &str, extra: &[&str], stderr: Stdio) -> Operator {
        let kubeconfig = support::operator_kubeconfig(c).await;
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                "appdb-system",
                "--identity",
                identity,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start appdb-operator");
        Operator { child, port }
    }

    async fn readyz(&self) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
            .await
            .ok()?;
        Some((resp.status().as_u16(), resp.text().await.ok()?))
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20 s after SIGTERM")
            .expect("wait")
    }
}

async fn lease_holder(c: &Cluster) -> String {
    let out = c
        .kubectl(&[
            "get",
            "lease",
            "appdb-operator",
            "-n",
            "appdb-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_crds_then_is_ready_holds_the_lease_and_exits_cleanly_on_sigterm() {
    let c = Cluster::start().await;
    let op = Operator::start(&c, "replica-a", &[]).await;
    let (code, body) = eventually(20, "probe server answers", || op.readyz()).await;
    assert_eq!(code, 503, "not ready before the CRDs exist");
    assert!(body.contains("CustomResourceDefinitions"), "{body}");

    c.install_crds().await;
    eventually(20, "/readyz turns 200 once the CRDs are established", || async {
        op.readyz().await.filter(|(code, _)| *code == 200)
    })
    .await;
    eventually(20, "the operator holds the Lease", || async {
        (lease_holder(&c).await == "replica-a").then_some(())
    })
    .await;
    assert!(op.metrics().await.contains("appdb_leader 1"));

    let status = op.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM, got {status:?}");
    assert_eq!(
        lease_holder(&c).await,
        "",
        "the Lease is released so that a successor need not wait for expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_leads_and_the_other_takes_over() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let a = Operator::start(&c, "replica-a", &[]).await;
    eventually(20, "replica-a leads", || async {
        (lease_holder(&c).await == "replica-a").then_some(())
    })
    .await;
    let b = Operator::start(&c, "replica-b", &[]).await;
    eventually(20, "replica-b is ready while it waits", || async {
        b.readyz().await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert!(
        b.metrics().await.contains("appdb_leader 0"),
        "replica-b must not lead while replica-a holds the Lease"
    );
    assert_eq!(lease_holder(&c).await, "replica-a");

    assert!(a.terminate().await.success());
    eventually(30, "replica-b takes over", || async {
        (lease_holder(&c).await == "replica-b").then_some(())
    })
    .await;
    eventually(10, "replica-b reports leadership", || async {
        b.metrics().await.contains("appdb_leader 1").then_some(())
    })
    .await;
    assert!(b.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leader_election_no_lease_is_taken() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let op = Operator::start(&c, "solo", &["--leader-election", "false"]).await;
    eventually(20, "ready", || async {
        op.readyz().await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert!(op.metrics().await.contains("appdb_leader 1"));
    let out = c
        .kubectl(&["get", "lease", "appdb-operator", "-n", "appdb-system"])
        .await;
    assert!(!out.status.success(), "no Lease with leader election off");
    assert!(op.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let log_path = c.dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let op = Operator::start_logging(&c, "json", &["--log-format", "json"], Stdio::from(log)).await;
    // Readiness comes before leadership (a waiting replica is ready too): wait for the Lease itself.
    eventually(20, "the operator leads", || async {
        (lease_holder(&c).await == "json").then_some(())
    })
    .await;
    assert!(op.terminate().await.success());
    let text = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{text}");
    for line in &lines {
        assert!(
            line["level"].is_string() && line["message"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l["message"] == "acquired the leader Lease"),
        "{text}"
    );
}

/// Every JSON line about an object names it: lines logged inside a reconcile carry the `reconcile` span with the
/// object's namespace and name, and lines about an object outside one carry `namespace` and `name` fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_about_objects_name_them() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let log_path = c.dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let op = Operator::start_logging(&c, "json", &["--log-format", "json"], Stdio::from(log)).await;
    eventually(20, "the operator leads", || async {
        (lease_holder(&c).await == "json").then_some(())
    })
    .await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/prod",
        "-n",
        "acme",
        "--timeout=30s",
    ])
    .await;
    // Deleting the network releases its range: logged inside the network's reconcile.
    c.ok(&["delete", "pnet", "prod", "-n", "acme", "--wait=true", "--timeout=30s"])
        .await;
    let released = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("released range")
    };
    eventually(20, "the release is logged", || async { released().then_some(()) }).await;
    assert!(op.terminate().await.success());
    let text = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut in_reconcile = 0;
    for line in &lines {
        if line["span"]["name"] == "reconcile" {
            in_reconcile += 1;
            assert!(
                line["span"]["namespace"] == "acme" && line["span"]["object"] == "prod",
                "a line inside a reconcile without its object: {line}"
            );
        }
        let about_an_object = ["range", "allocation", "error"].iter().any(|f| !line[f].is_null());
        if about_an_object
            && line["span"]["name"] != "reconcile"
            && line["message"] != "NetworkAllocation watch failed; retrying"
        {
            assert!(
                line["namespace"].is_string() && line["name"].is_string(),
                "a line about an object without its namespace/name: {line}"
            );
        }
    }
    let release = lines
        .iter()
        .find(|l| l["message"] == "released range")
        .expect("the release line");
    assert_eq!(release["span"]["namespace"], "acme", "{release}");
    assert_eq!(release["span"]["object"], "prod", "{release}");
    assert!(in_reconcile >= 1);
}

fn signal(op: &Operator, sig: &str) {
    let pid = op.child.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success()
    );
}

/// Two replicas: the standby never reconciles while the leader holds the Lease, even when the leader is frozen
/// (SIGSTOP) and cannot reconcile itself; once the Lease expires the standby takes over and catches up; the old
/// leader, thawed, sees it lost the Lease and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_never_reconciles_until_it_holds_the_lease() {
    let c = Cluster::start().await;
    c.install_crds().await;
    // Renewed every 5 s, valid for 20 s: a frozen holder's Lease stays valid at least 15 s, so the check below is
    // always inside that window.
    let lease = ["--lease-duration-seconds", "20", "--lease-grace-seconds", "15"];
    let mut a = Operator::start(&c, "replica-a", &lease).await;
    eventually(20, "replica-a leads", || async {
        (lease_holder(&c).await == "replica-a").then_some(())
    })
    .await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: first, namespace: acme}\nspec: {}\n",
    )
    .await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/first",
        "-n",
        "acme",
        "--timeout=20s",
    ])
    .await;
    signal(&a, "-STOP");
    let b = Operator::start(&c, "replica-b", &lease).await;
    eventually(20, "replica-b is up (ready, not leading)", || async {
        b.readyz().await.filter(|(code, _)| *code == 200)
    })
    .await;
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: second, namespace: acme}\nspec: {}\n",
    )
    .await;
    // While the frozen leader's Lease is still valid, nobody reconciles: the standby writes nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        lease_holder(&c).await,
        "replica-a",
        "the frozen holder's Lease is still valid"
    );
    let status = c
        .ok(&["get", "pnet", "second", "-n", "acme", "-o", "jsonpath={.status}"])
        .await;
    assert_eq!(status, "", "the standby reconciled without the Lease");
    eventually(45, "replica-b takes over and catches up", || async {
        (lease_holder(&c).await == "replica-b").then_some(())
    })
    .await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/second",
        "-n",
        "acme",
        "--timeout=20s",
    ])
    .await;
    signal(&a, "-CONT");
    let exited = tokio::time::timeout(Duration::from_secs(30), a.child.wait()).await;
    assert!(
        exited.is_ok(),
        "the old leader must stop once it sees it lost the Lease"
    );
    assert_eq!(lease_holder(&c).await, "replica-b");
}
