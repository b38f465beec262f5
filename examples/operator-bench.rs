//! Operator speed against the test API server: time from applying networks and databases until every object exists
//! and every database is "Ready To Use" (StatefulSet readiness reported by this program, as a kubelet would), API
//! writes per steady-state reconcile (must be 0), and the operator's CPU time and peak RSS.
//!
//! `cargo build --release && cargo run --release --example operator-bench -- [customers]`
//! Uses target/release/appdb-operator (or APPDB_OPERATOR_BIN). Figures depend on the machine; nothing asserts on
//! wall-clock time.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use appdb_operator::api::{AppDatabase, PrivateNetwork, all_crds};
use appdb_testkit::apiserver::TestApiServer;
use futures::StreamExt;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams},
};

fn proc_stat(pid: u32) -> (f64, u64) {
    let ticks = 100.0;
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    (cpu, rss)
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let customers: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let server = TestApiServer::start("127.0.0.1:0".parse()?).await?;
    let client = Client::try_from(Config::new(server.url().parse()?))?;
    let ssa = PatchParams::apply("bench").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        crds.patch(
            crd.metadata.name.as_deref().unwrap_or_default(),
            &ssa,
            &Patch::Apply(&crd),
        )
        .await?;
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let binary = std::env::var("APPDB_OPERATOR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::current_exe()
                .expect("exe")
                .parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .join("appdb-operator")
        });
    let mut operator = tokio::process::Command::new(&binary)
        .args(["run", "--listen", "127.0.0.1:0", "--leader-election", "false"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (build it with cargo build --release)",
                binary.display()
            )
        })?;
    let pid = operator.id().unwrap_or(0);

    let start = Instant::now();
    futures::stream::iter(0..customers)
        .map(|i| {
            let client = client.clone();
            let ssa = ssa.clone();
            async move {
                let ns = format!("customer-{i}");
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                namespaces.patch(&ns, &ssa, &Patch::Apply(&body)).await?;
                let objects = [
                    ("v1", "secrets", serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin", "namespace": ns}, "stringData": {"password": "bench-Passw0rd"}})),
                    ("appdb.dev/v1alpha1", "privatenetworks", serde_json::json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork", "metadata": {"name": "prod", "namespace": ns}, "spec": {}})),
                    ("appdb.dev/v1alpha1", "appdatabases", serde_json::json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "AppDatabase", "metadata": {"name": "db", "namespace": ns},
                        "spec": {"network": "prod", "admin": {"username": "admin", "passwordSecretRef": {"name": "admin", "key": "password"}}, "storage": {"size": "1Gi"}}})),
                ];
                for (_, plural, body) in objects {
                    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    let ar = match plural {
                        "secrets" => kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
                        "privatenetworks" => kube::core::ApiResource::erase::<PrivateNetwork>(&()),
                        _ => kube::core::ApiResource::erase::<AppDatabase>(&()),
                    };
                    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
                    api.patch(&name, &ssa, &Patch::Apply(&body)).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let applied = start.elapsed();

    let statefulsets: Api<StatefulSet> = Api::all(client.clone());
    let created = wait_for("every StatefulSet", async || {
        statefulsets
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len() == customers)
            .unwrap_or(false)
    })
    .await
        + applied;
    for sts in statefulsets.list(&ListParams::default()).await?.items {
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let status = serde_json::json!({"status": {"replicas": 1, "readyReplicas": 1}});
        api.patch_status(
            sts.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    }
    let databases: Api<AppDatabase> = Api::all(client.clone());
    let ready = wait_for("every database Ready To Use", async || {
        databases
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|d| d.status.as_ref().and_then(|s| s.common.state.as_deref()) == Some("Ready To Use"))
                    .count()
                    == customers
            })
            .unwrap_or(false)
    })
    .await;

    // Steady state: touch every database (one reconcile each) and count the operator's writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = server.state().writes.load(Ordering::Relaxed);
    for i in 0..customers {
        let api: Api<AppDatabase> = Api::namespaced(client.clone(), &format!("customer-{i}"));
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"bench/touch": "1"}}})),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let operator_writes = server.state().writes.load(Ordering::Relaxed) - before - customers as u64;
    let (cpu, rss) = proc_stat(pid);
    let requests = server.state().requests.load(Ordering::Relaxed);

    println!("operator bench: {customers} customers (namespace, PrivateNetwork, admin Secret, AppDatabase each)");
    println!(
        "  applied in:                                {:>8.2} s",
        applied.as_secs_f64()
    );
    println!(
        "  every object created after:                {:>8.2} s",
        created.as_secs_f64()
    );
    println!(
        "  every database Ready To Use after ready:   {:>8.2} s",
        ready.as_secs_f64()
    );
    println!(
        "  operator writes in {customers} steady-state reconciles: {operator_writes} ({:.2} per reconcile)",
        operator_writes as f64 / customers as f64
    );
    println!(
        "  operator CPU time: {cpu:.2} s, peak RSS: {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!("  API requests served in total: {requests}");
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    server.shutdown().await;
    Ok(())
}
