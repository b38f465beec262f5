//! The pod runner's own cost (issue #18): how much a pod adds to its program's start, and how long the kubelet
//! takes from a created Pod to its status saying Ready.
//!
//! 1. `--pods N` (default 30) times: a session pod whose container prints one line, started with
//!    `RunningPod::start` (sandbox, volumes, cluster files, PID and mount namespaces, setpriv), timed until the line
//!    is in its log; against the same program spawned directly. Reported: mean, median and 95th percentile of each
//!    and of the overhead.
//! 2. The same through the test API server and `PodKubelet`: `kubectl`-equivalent creation of a Pod until its
//!    `Ready` condition is True (includes the kubelet's 200 ms pass and the status write).
//! 3. Peak RSS of this process (runner, kubelet and test API server together).
//!
//! Needs root, iproute2 and nftables. Figures depend on the machine; nothing asserts on them.
//! `cargo run --release --example pod-runner-bench -- [--pods N]`

use std::time::{Duration, Instant};

use appdb_testkit::{
    apiserver::TestApiServer,
    pods::{
        env::Sources,
        kubelet::PodKubelet,
        pod::{ClusterSetup, Programs, RunningPod},
        sandbox::Node,
    },
};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn summary(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
        mean * 1e3,
        at(0.5) * 1e3,
        at(0.95) * 1e3
    );
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "main", "image": "appdb-test/session:latest",
            "command": ["sh", "-c", "trap 'exit 0' TERM; echo started; while :; do sleep 0.1; done"]}]}
    }))
    .expect("pod")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pods: usize = args
        .iter()
        .position(|a| a == "--pods")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("temp dir");
    let programs = Programs {
        operator: std::env::current_exe().expect("exe"),
    };

    // 1. The program alone, and as a pod.
    let mut direct = Vec::new();
    for _ in 0..pods {
        let start = Instant::now();
        let out = tokio::process::Command::new("sh")
            .args(["-c", "echo started"])
            .output()
            .await
            .expect("sh");
        assert!(out.status.success());
        direct.push(start.elapsed().as_secs_f64());
    }
    let node = Node::start().await.expect("node");
    let mut as_pod = Vec::new();
    for i in 0..pods {
        let start = Instant::now();
        let mut running = RunningPod::start(
            &node,
            &pod(&format!("p{i}")),
            &Sources::default(),
            &programs,
            &dir.path().join("pods"),
            &dir.path().join("claims"),
            &ClusterSetup::default(),
        )
        .await
        .expect("pod");
        while !running.logs("main").contains("started") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the pod did not start: {}",
                running.logs("main")
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        as_pod.push(start.elapsed().as_secs_f64());
        running.stop().await;
    }
    let overhead: Vec<f64> = as_pod.iter().zip(&direct).map(|(p, d)| p - d).collect();
    println!("| Start (n = {pods}) | mean | median | p95 |\n|---|---|---|---|");
    summary("`sh -c 'echo started'` spawned directly", direct);
    summary("the same as a pod (`RunningPod::start` until its log line)", as_pod);
    summary("overhead of the pod", overhead);
    node.stop().await;

    // 2. Through the API server and the kubelet, until Ready.
    let server = TestApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("server");
    let client = Client::try_from(server.admin_config()).expect("client");
    let kubelet = PodKubelet::start(
        client.clone(),
        programs,
        dir.path().join("kubelet"),
        server.addr(),
        server.ca_der(),
    )
    .await
    .expect("kubelet");
    let stop = CancellationToken::new();
    let running = tokio::spawn(kubelet.clone().run(stop.clone()));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap(),
        )
        .await
        .expect("namespace");
    let api: Api<Pod> = Api::namespaced(client, "bench");
    let mut ready = Vec::new();
    for i in 0..pods.min(10) {
        let start = Instant::now();
        api.create(&PostParams::default(), &pod(&format!("k{i}")))
            .await
            .expect("create");
        loop {
            let p = api.get(&format!("k{i}")).await.expect("get");
            if appdb_testkit::pods::workloads::is_ready(&p) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ready.push(start.elapsed().as_secs_f64());
    }
    println!(
        "\n| Through the API server (n = {}) | mean | median | p95 |\n|---|---|---|---|",
        ready.len()
    );
    summary("Pod created → `Ready` True (kubelet pass 200 ms)", ready);
    println!(
        "\npeak RSS (runner, kubelet and test API server in one process): {:.1} MiB",
        peak_rss_mib()
    );
    stop.cancel();
    let _ = running.await;
    server.shutdown().await;
}
