//! Every status the operator writes follows kstatus's rules (what Flux `wait` and kubectl-style tools read), checked
//! on live objects of every kind while a whole scenario runs: creation, invalid input, readiness, a migration.

mod support;

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;
use support::{Cluster, free_port, spawn_operator};

/// kstatus's verdict for an object, in its order of rules.
fn kstatus(obj: &Value) -> &'static str {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating";
    }
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64);
    if observed.is_some() && observed != generation {
        return "InProgress";
    }
    let condition = |t: &str| {
        obj.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .and_then(|c| c["status"].as_str())
    };
    if condition("Reconciling") == Some("True") {
        return "InProgress";
    }
    if condition("Stalled") == Some("True") {
        return "Failed";
    }
    match condition("Ready") {
        Some("True") => "Current",
        Some(_) => "InProgress",
        None => "Current",
    }
}

/// The rules every written status keeps, whatever its state.
fn check(obj: &Value) -> Result<(), String> {
    let Some(status) = obj.get("status") else { return Ok(()) };
    let name = format!(
        "{}/{}",
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    if status["observedGeneration"].as_i64().is_none() {
        return Err(format!("{name}: status without observedGeneration"));
    }
    let conditions = status["conditions"]
        .as_array()
        .ok_or(format!("{name}: status without conditions"))?;
    let mut types = BTreeSet::new();
    for c in conditions {
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            if c.get(field).is_none() {
                return Err(format!("{name}: condition without {field}: {c}"));
            }
        }
        if !["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap_or_default()) {
            return Err(format!("{name}: condition status {}", c["status"]));
        }
        if c["observedGeneration"].as_i64().is_none() || c["observedGeneration"].as_i64() > generation {
            return Err(format!(
                "{name}: condition {} has observedGeneration {} (generation {generation:?})",
                c["type"], c["observedGeneration"]
            ));
        }
        if !types.insert(c["type"].as_str().unwrap_or_default().to_owned()) {
            return Err(format!("{name}: condition {} twice", c["type"]));
        }
    }
    for required in ["Ready", "Reconciling", "Stalled"] {
        if !types.contains(required) {
            return Err(format!("{name}: no {required} condition"));
        }
    }
    let get = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .and_then(|c| c["status"].as_str())
            .unwrap_or_default()
    };
    if get("Stalled") == "True" && get("Ready") == "True" {
        return Err(format!("{name}: Stalled and Ready at once"));
    }
    if get("Stalled") == "True" && get("Reconciling") == "True" {
        return Err(format!("{name}: Stalled and Reconciling at once"));
    }
    // The human state and kstatus agree.
    let state = status["state"].as_str().unwrap_or_default();
    let verdict = kstatus(obj);
    let expected: &[&str] = match state {
        "Ready" | "Ready To Use" | "Available" | "Completed" => &["Current", "InProgress"],
        "Failed" => &["Failed"],
        "Migration In Progress" => &["InProgress", "Current"],
        _ => &["InProgress", "Failed"],
    };
    // Between the API server marking an object for deletion and the operator's next status write, the state still
    // says what it was: kstatus rightly reads Terminating from the deletion timestamp alone, whatever the status.
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    if !expected.contains(&verdict) && (!deleting || verdict != "Terminating") {
        return Err(format!("{name}: state {state:?} but kstatus says {verdict}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_written_status_follows_kstatus() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let port = free_port();
    let _op = spawn_operator(
        &c,
        port,
        &[
            "--allow-documentation-gateways",
            "true",
            "--release-cooldown-seconds",
            "0",
        ],
    )
    .await;
    let apply = |yaml: String| {
        let c = &c;
        async move { c.ok_stdin(&["apply", "--server-side", "-f", "-"], &yaml).await }
    };
    apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n".into()).await;
    apply("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n".into()).await;
    apply("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod-2026, namespace: acme}\nspec: {}\n".into()).await;
    apply("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: clash, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n".into()).await;
    apply("apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n".into()).await;
    apply("apiVersion: appdb.dev/v1alpha1\nkind: VpnConnection\nmetadata: {name: seattle, namespace: acme}\nspec:\n  network: prod\n  customerCidrs: [192.168.10.0/24]\n  customerGatewayAddress: 198.51.100.7\n".into()).await;

    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut acted = (false, false, false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value =
            serde_json::from_str(&c.ok(&["get", "pnet,adb,vpn,dbmig", "-n", "acme", "-o", "json"]).await).unwrap();
        for obj in list["items"].as_array().unwrap() {
            if let Err(e) = check(obj) {
                panic!("{e}\n{obj:#}");
            }
            if let Some(state) = obj.pointer("/status/state").and_then(Value::as_str) {
                seen.insert((obj["kind"].as_str().unwrap().to_owned(), state.to_owned()));
            }
        }
        // Play the cluster as the scenario needs it.
        if !acted.0 && seen.contains(&("AppDatabase".into(), "Pending".into())) {
            apply("apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: first-Secret-9}\n".into()).await;
            acted.0 = true;
        }
        if !acted.1
            && c.kubectl(&["get", "sts", "orders", "-n", "acme"])
                .await
                .status
                .success()
        {
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
            acted.1 = true;
        }
        // Outside addresses only once the connection has been seen waiting for them (Pending): given earlier, the
        // operator may never need to write Pending at all.
        if !acted.2
            && seen.contains(&("VpnConnection".into(), "Pending".into()))
            && c.kubectl(&["get", "svc", "seattle-tunnel2", "-n", "acme"])
                .await
                .status
                .success()
        {
            for n in [1, 2] {
                let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"203.0.113.1{n}"}}]}}}}}}"#);
                c.ok(&[
                    "patch",
                    "svc",
                    &format!("seattle-tunnel{n}"),
                    "-n",
                    "acme",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ])
                .await;
            }
            acted.2 = true;
        }
        // The migration last, once the VPN connection has been seen Available.
        if !acted.3 && seen.contains(&("VpnConnection".into(), "Available".into())) {
            let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3))
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            apply(format!("apiVersion: appdb.dev/v1alpha1\nkind: DatabaseMigration\nmetadata: {{name: move, namespace: acme}}\nspec:\n  database: orders\n  targetNetwork: prod-2026\n  scheduledAt: \"{at}\"\n")).await;
            acted.3 = true;
        }
        if seen.contains(&("DatabaseMigration".into(), "Completed".into())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scenario did not complete; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Migrations are counted by state, and their measured interruption recorded.
    support::eventually(20, "migration metrics", || async {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        // Label values carry no spaces (the human "Migration In Progress" stays in status).
        (text.contains("appdb_migrations{state=\"Completed\"} 1")
            && text.contains("appdb_migrations{state=\"MigrationInProgress\"} 0")
            && !text.contains("state=\"Migration In Progress\"")
            && text.contains("appdb_migration_downtime_seconds_count 1"))
        .then_some(())
    })
    .await;
    for expected in [
        ("PrivateNetwork", "Ready"),
        ("PrivateNetwork", "Failed"),
        ("AppDatabase", "Pending"),
        ("AppDatabase", "Ready To Use"),
        ("VpnConnection", "Pending"),
        ("VpnConnection", "Available"),
        ("DatabaseMigration", "Scheduled"),
        ("DatabaseMigration", "Completed"),
    ] {
        assert!(
            seen.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "state {expected:?} never checked; seen {seen:?}"
        );
    }
}
