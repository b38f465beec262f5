//! The scale benchmark's properties, small enough for every CI run (issue #11; the figures at 1,000 customers come
//! from `examples/operator-bench.rs`): with the real operator binary and a kubelet playing the cluster,
//! customers with a network, a database and a VPN all become Ready with a bounded number of reconciles each (no
//! storm); a quiet cluster gets no writes and no requests; touching every object makes the operator reconcile and
//! read, but never write; readdress migrations complete. Nothing here depends on how fast the machine is.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use appdb_testkit::{
    customers::{customer, is_ready, manifest, migration, namespace, reconciles_total},
    kubelet::Kubelet,
};
use support::{Cluster, eventually, free_port, spawn_operator};
use tokio_util::sync::CancellationToken;

const CUSTOMERS: usize = 12;
const MIGRATIONS: usize = 3;
/// Creation costs about 20 reconciles per customer (each object is reconciled again as its children report status
/// and its neighbours become Ready); a feedback loop would cost hundreds.
const RECONCILES_PER_CUSTOMER: u64 = 60;
const OPERATOR_AGENT: &str = "appdb-operator/";

async fn reconciles(port: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("operator /metrics")
        .text()
        .await
        .expect("operator /metrics body");
    reconciles_total(&text)
}

/// Waits until the operator's reconcile count has not moved for two seconds: the work a change caused is done.
async fn settled(port: u16) -> u64 {
    let mut last = reconciles(port).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = reconciles(port).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_become_ready_without_a_reconcile_storm_and_a_quiet_cluster_gets_no_writes() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let port = free_port();
    let _operator = spawn_operator(&c, port, &[]).await;
    let client = kube::Client::try_from(c.server.admin_config()).expect("client");
    let stop = CancellationToken::new();
    let _stop_kubelet = stop.clone().drop_guard();
    tokio::spawn(Kubelet::new(client).run(stop));
    eventually(60, "operator /metrics", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()
            .map(drop)
    })
    .await;

    // Creation.
    let before = reconciles(port).await;
    let all = manifest((0..CUSTOMERS).flat_map(customer));
    support::apply(&c, &all).await;
    for plural in ["privatenetworks", "appdatabases", "vpnconnections"] {
        eventually(180, &format!("every {plural} Ready"), || async {
            (c.server.count("appdb.dev", plural, is_ready) == CUSTOMERS).then_some(())
        })
        .await;
    }
    let created = settled(port).await;
    let per_customer = (created - before) / CUSTOMERS as u64;
    assert!(
        per_customer <= RECONCILES_PER_CUSTOMER,
        "{per_customer} reconciles per customer during creation: a feedback loop?"
    );

    // A quiet cluster: no requests at all from the operator, let alone writes.
    let (reads, writes) = c.server.requests_from(OPERATOR_AGENT);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        c.server.requests_from(OPERATOR_AGENT),
        (reads, writes),
        "requests while nothing changed"
    );

    // Every object touched once (a label the operator does not own): reconciles and reads, no writes.
    for i in 0..CUSTOMERS {
        c.ok(&[
            "label",
            "-n",
            &namespace(i),
            "privatenetwork/prod",
            "appdatabase/db",
            "vpnconnection/office",
            "touched=yes",
        ])
        .await;
    }
    let touched = settled(port).await;
    assert!(
        touched >= created + 3 * CUSTOMERS as u64,
        "every touched object is reconciled"
    );
    let (_, writes_after_touch) = c.server.requests_from(OPERATOR_AGENT);
    assert_eq!(writes_after_touch, writes, "writes when nothing needed changing");

    // Readdress migrations complete, and the databases are Ready To Use on their new networks.
    let writes_before_migrations = c.server.state().writes.load(Ordering::Relaxed);
    let all = manifest((0..MIGRATIONS).flat_map(migration));
    support::apply(&c, &all).await;
    eventually(180, "every migration Completed", || async {
        let completed = c.server.count("appdb.dev", "databasemigrations", |m| {
            m["status"]["state"] == "Completed"
        });
        let moved = c.server.count("appdb.dev", "appdatabases", |d| {
            d["status"]["network"] == "next" && d["status"]["state"] == "Ready To Use"
        });
        (completed == MIGRATIONS && moved == MIGRATIONS).then_some(())
    })
    .await;
    assert!(c.server.state().writes.load(Ordering::Relaxed) > writes_before_migrations);
    settled(port).await;
    let (reads, writes) = c.server.requests_from(OPERATOR_AGENT);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        c.server.requests_from(OPERATOR_AGENT),
        (reads, writes),
        "requests after the migrations settled"
    );
}
