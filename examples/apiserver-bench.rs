//! Throughput of the test API server, so that scale tests know whether it is their bottleneck.
//! `cargo run --release --example apiserver-bench` prints requests/s for get and server-side apply, watch fan-out
//! events/s, and the process's peak RSS. Figures depend on the machine; nothing asserts on them.

use std::time::Instant;

use appdb_testkit::apiserver::TestApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::watcher,
};

const OBJECTS: usize = 2_000;
const GETS: usize = 5_000;
const CONCURRENCY: usize = 16;
const WATCHERS: usize = 50;
const WATCHED_WRITES: usize = 500;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn configmap(i: usize) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i}"), "labels": {"bench": "yes"}},
        "data": {"index": i.to_string()}
    }))
    .expect("configmap")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestApiServer::start("127.0.0.1:0".parse()?).await?;
    let config = server.admin_config();
    let client = Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let start = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &configmap(i)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let create_rate = OBJECTS as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    futures::stream::iter(0..GETS)
        .map(|i| {
            let api = api.clone();
            async move { api.get(&format!("cm-{}", i % OBJECTS)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let get_rate = GETS as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let params = PatchParams::apply("bench").force();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let api = api.clone();
            let params = params.clone();
            async move {
                let mut cm = configmap(i);
                cm.data.get_or_insert_default().insert("applied".into(), "yes".into());
                api.patch(&format!("cm-{i}"), &params, &Patch::Apply(&cm)).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let apply_rate = OBJECTS as f64 / start.elapsed().as_secs_f64();

    // Watch fan-out: WATCHERS kube-runtime watchers each receive every one of WATCHED_WRITES changes.
    let watched: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let mut handles = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(WATCHERS);
    for _ in 0..WATCHERS {
        let watched = watched.clone();
        let ready_tx = ready_tx.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = 0usize;
            let mut stream = watcher(watched, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        let _ = ready_tx.send(()).await;
                    }
                    Ok(watcher::Event::Apply(_)) => {
                        seen += 1;
                        if seen == WATCHED_WRITES {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await;
    }
    let start = Instant::now();
    for i in 0..WATCHED_WRITES {
        watched.create(&PostParams::default(), &configmap(i)).await?;
    }
    for h in handles {
        h.await?;
    }
    let fanout_rate = (WATCHERS * WATCHED_WRITES) as f64 / start.elapsed().as_secs_f64();

    println!("test API server throughput ({CONCURRENCY} concurrent clients, kube-rs client, loopback HTTP)");
    println!("  create:            {create_rate:>9.0} requests/s ({OBJECTS} ConfigMaps)");
    println!("  get:               {get_rate:>9.0} requests/s ({GETS} gets)");
    println!("  server-side apply: {apply_rate:>9.0} requests/s ({OBJECTS} applies)");
    println!(
        "  watch fan-out:     {fanout_rate:>9.0} events/s delivered ({WATCHERS} watchers x {WATCHED_WRITES} writes)"
    );
    println!(
        "  peak RSS (server and client in one process): {} MiB",
        peak_rss_kib() / 1024
    );
    server.shutdown().await;
    Ok(())
}
