//! The operator at scale, against the test API server with the real operator binary (issue #11):
//!
//! 1. `customers` namespaces, each with an admin Secret, a PrivateNetwork, an AppDatabase and a VpnConnection, all
//!    applied at once; a kubelet and load balancer controller play the cluster's part (`appdb_testkit::kubelet`).
//!    Measured: time until every object is Ready, per kind.
//! 2. Steady state: `--steady-seconds` without any change (default 300), then every object touched once (one
//!    reconcile each). Measured: operator writes in both (must be 0), API requests per reconcile.
//! 3. `--migrations` readdress migrations (default customers / 10): a new network and a DatabaseMigration each.
//!    Measured: time until every migration is Completed with its database Ready To Use on the new network.
//!
//! Throughout: the operator's CPU seconds and peak RSS, its requests (told from the benchmark's own by User-Agent),
//! its reconciles (from its /metrics), and the test API server's own CPU and request rate, so a bottleneck in the
//! server shows as such. Figures depend on the machine; nothing asserts on wall-clock time.
//!
//! `cargo build --release && cargo run --release --example operator-bench -- 1000 [--migrations 100]
//! [--steady-seconds 300]`. Uses target/release/appdb-operator (or APPDB_OPERATOR_BIN).

use std::time::{Duration, Instant};

use appdb_operator::api::all_crds;
use appdb_testkit::{
    apiserver::TestApiServer,
    customers::{customer, is_ready, migration, namespace, reconciles_total},
    kubelet::Kubelet,
};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};

const BENCH_AGENT: &str = "operator-bench";
const OPERATOR_AGENT: &str = "appdb-operator/";

struct Args {
    customers: usize,
    migrations: usize,
    steady: Duration,
}

fn args() -> Args {
    let mut customers = 100;
    let mut migrations = None;
    let mut steady = 300;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--migrations" => migrations = it.next().and_then(|v| v.parse().ok()),
            "--steady-seconds" => steady = it.next().and_then(|v| v.parse().ok()).unwrap_or(steady),
            n => customers = n.parse().unwrap_or(customers),
        }
    }
    Args {
        customers,
        migrations: migrations.unwrap_or(customers / 10).min(customers),
        steady: Duration::from_secs(steady),
    }
}

/// CPU seconds (user + system) and peak RSS in KiB of a process.
fn proc_stat(pid: &str) -> (f64, u64) {
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

fn resource(kind: &str) -> ApiResource {
    let (group, version, plural) = match kind {
        "Namespace" => ("", "v1", "namespaces"),
        "Secret" => ("", "v1", "secrets"),
        "PrivateNetwork" => ("appdb.dev", "v1alpha1", "privatenetworks"),
        "AppDatabase" => ("appdb.dev", "v1alpha1", "appdatabases"),
        "VpnConnection" => ("appdb.dev", "v1alpha1", "vpnconnections"),
        "DatabaseMigration" => ("appdb.dev", "v1alpha1", "databasemigrations"),
        other => panic!("no resource for {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

async fn apply(client: &Client, body: Value) -> Result<(), kube::Error> {
    let ar = resource(body["kind"].as_str().unwrap_or_default());
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let api: Api<DynamicObject> = match body["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&body))
        .await
        .map(drop)
}

/// Applies `objects(i)` for every i in `range`, 16 customers at a time.
async fn apply_all(
    client: &Client,
    range: std::ops::Range<usize>,
    objects: impl Fn(usize) -> Vec<Value>,
) -> Result<(), kube::Error> {
    futures::stream::iter(range)
        .map(|i| {
            let bodies = objects(i);
            async move {
                for body in bodies {
                    apply(client, body).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until `done` holds, checking the store in process every 50 ms (no API requests, so the waiting does not
/// load the server being measured). Returns the time from `since`.
async fn wait_until(what: &str, since: Instant, done: impl Fn() -> bool) -> Duration {
    let limit = Instant::now() + Duration::from_secs(1200);
    while !done() {
        assert!(Instant::now() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.elapsed()
}

async fn reconciles(metrics_url: &str) -> u64 {
    let text = reqwest::get(metrics_url)
        .await
        .expect("operator /metrics")
        .text()
        .await
        .expect("operator /metrics body");
    reconciles_total(&text)
}

struct Sample {
    operator: (u64, u64),
    reconciles: u64,
    operator_cpu: f64,
    server_cpu: f64,
    server_requests: u64,
}

async fn sample(server: &TestApiServer, metrics_url: &str, pid: &str) -> Sample {
    Sample {
        operator: server.requests_from(OPERATOR_AGENT),
        reconciles: reconciles(metrics_url).await,
        operator_cpu: proc_stat(pid).0,
        server_cpu: proc_stat("self").0,
        server_requests: server.state().requests.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn report(title: &str, wall: Duration, from: &Sample, to: &Sample) {
    let (reads, writes) = (to.operator.0 - from.operator.0, to.operator.1 - from.operator.1);
    let reconciles = to.reconciles - from.reconciles;
    let per = |n: u64| n as f64 / reconciles.max(1) as f64;
    let server_requests = to.server_requests - from.server_requests;
    println!("{title} ({:.2} s)", wall.as_secs_f64());
    println!(
        "  operator: {reconciles} reconciles, {reads} reads + {writes} writes ({:.2} reads, {:.2} writes per reconcile), CPU {:.2} s",
        per(reads),
        per(writes),
        to.operator_cpu - from.operator_cpu
    );
    println!(
        "  test API server (+ kubelet, in this process): {server_requests} requests ({:.0}/s), CPU {:.2} s",
        server_requests as f64 / wall.as_secs_f64().max(0.001),
        to.server_cpu - from.server_cpu
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        customers,
        migrations,
        steady,
    } = args();
    let server = TestApiServer::start("127.0.0.1:0".parse()?).await?;
    let mut config = server.admin_config();
    config.headers.push((http::header::USER_AGENT, BENCH_AGENT.parse()?));
    let client = Client::try_from(config)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&crd))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let binary = std::env::var("APPDB_OPERATOR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            let exe = std::env::current_exe().expect("exe");
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .join("appdb-operator")
        });
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut operator = tokio::process::Command::new(&binary)
        .args(["run", "--leader-election", "false", "--listen"])
        .arg(format!("127.0.0.1:{metrics_port}"))
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
    let pid = operator.id().unwrap_or(0).to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(Kubelet::new(client.clone()).run(stop.clone()));
    let started = Instant::now();
    while reqwest::get(&metrics_url).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the operator did not start serving /metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "operator bench: {customers} customers (namespace, admin Secret, PrivateNetwork, AppDatabase, VpnConnection \
         each), then {migrations} readdress migrations"
    );
    // 1. Everything at once.
    let before = sample(&server, &metrics_url, &pid).await;
    let start = Instant::now();
    apply_all(&client, 0..customers, customer).await?;
    let applied = start.elapsed();
    let ready = |plural: &'static str| {
        let server = &server;
        move || server.count("appdb.dev", plural, is_ready) == customers
    };
    let networks = wait_until("every PrivateNetwork Ready", start, ready("privatenetworks")).await;
    let databases = wait_until("every AppDatabase Ready", start, ready("appdatabases")).await;
    let vpns = wait_until("every VpnConnection Ready", start, ready("vpnconnections")).await;
    let all_ready = start.elapsed();
    let created = sample(&server, &metrics_url, &pid).await;
    report("1. creation: everything Ready", all_ready, &before, &created);
    println!(
        "  applied in {:.2} s; last PrivateNetwork Ready {:.2} s, AppDatabase {:.2} s, VpnConnection {:.2} s",
        applied.as_secs_f64(),
        networks.as_secs_f64(),
        databases.as_secs_f64(),
        vpns.as_secs_f64()
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&Default::default())
        .await?;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for e in &events.items {
        *reasons.entry(e.reason.clone().unwrap_or_default()).or_default() += 1;
    }
    println!(
        "  Events: {} ({:.1} per customer): {reasons:?}",
        events.items.len(),
        events.items.len() as f64 / customers as f64
    );

    // 2. Steady state: nothing changes, then every object is touched once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_start = sample(&server, &metrics_url, &pid).await;
    tokio::time::sleep(steady).await;
    let quiet_end = sample(&server, &metrics_url, &pid).await;
    report(
        &format!("2a. steady state, no changes for {} s", steady.as_secs()),
        steady,
        &quiet_start,
        &quiet_end,
    );
    let touch_start = Instant::now();
    futures::stream::iter((0..customers).flat_map(|i| {
        [
            ("PrivateNetwork", "prod"),
            ("AppDatabase", "db"),
            ("VpnConnection", "office"),
        ]
        .map(|(kind, name)| (i, kind, name))
    }))
    .map(|(i, kind, name)| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace(i), &resource(kind));
        async move {
            let touch = json!({"metadata": {"annotations": {"bench.appdb.dev/touched": "1"}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&touch))
                .await
                .map(drop)
        }
    })
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let expected = 3 * customers as u64;
    // Every touched object is reconciled at least once (more where a change triggers other controllers).
    let mut touched = sample(&server, &metrics_url, &pid).await;
    while touched.reconciles - quiet_end.reconciles < expected && touch_start.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        touched = sample(&server, &metrics_url, &pid).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let touched = sample(&server, &metrics_url, &pid).await;
    report(
        &format!("2b. steady state, {expected} objects touched once"),
        touch_start.elapsed(),
        &quiet_end,
        &touched,
    );

    // 3. Readdress migrations.
    let start = Instant::now();
    apply_all(&client, 0..migrations, migration).await?;
    let completed = wait_until("every migration Completed", start, || {
        let completed = server.count("appdb.dev", "databasemigrations", |m| {
            m["status"]["state"] == "Completed"
        });
        let moved = server.count("appdb.dev", "appdatabases", |d| {
            d["status"]["network"] == "next" && d["status"]["state"] == "Ready To Use"
        });
        completed == migrations && moved == migrations
    })
    .await;
    let migrated = sample(&server, &metrics_url, &pid).await;
    report(
        &format!("3. {migrations} readdress migrations Completed"),
        completed,
        &touched,
        &migrated,
    );

    let (cpu, rss) = proc_stat(&pid);
    let (server_cpu, server_rss) = proc_stat("self");
    println!(
        "operator in total: CPU {cpu:.2} s, peak RSS {:.1} MiB; test API server process: CPU {server_cpu:.2} s, peak RSS {:.1} MiB",
        rss as f64 / 1024.0,
        server_rss as f64 / 1024.0
    );
    stop.cancel();
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    server.shutdown().await;
    Ok(())
}
