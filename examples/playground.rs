//! See the operator work without a cluster: `cargo run --example playground`.
//!
//! Starts the project's in-memory test API server and the real operator binary, applies `examples/acme/`, and plays
//! the parts of a cluster that do not exist here — it reports the database's StatefulSet ready (as a kubelet would)
//! and gives the VPN tunnels load-balancer addresses (as a cloud would). It prints every state transition, and moves
//! the migration's schedule to a few seconds from now so that it ends with the migration Completed.
//! SIMULATED: no pod runs; nothing reaches a real database or VPN peer.

use std::{collections::BTreeMap, time::Duration};

use appdb_operator::api::{AppDatabase, DatabaseMigration, PrivateNetwork, VpnConnection, all_crds};
use appdb_testkit::apiserver::TestApiServer;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::Discovery,
};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/acme");

fn line(what: &str, text: String) {
    println!("{:>8.1}s  {what:<42} {text}", START.with(|s| s.elapsed().as_secs_f64()));
}

thread_local! {
    static START: std::time::Instant = std::time::Instant::now();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    START.with(|_| ());
    let server = TestApiServer::start("127.0.0.1:0".parse()?).await?;
    let client = Client::try_from(server.admin_config())?;
    let ssa = PatchParams::apply("playground").force();
    for crd in all_crds() {
        Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
            client.clone(),
        )
        .patch(
            crd.metadata.name.as_deref().unwrap_or_default(),
            &ssa,
            &Patch::Apply(&crd),
        )
        .await?;
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("appdb-operator"))
        .ok_or("target dir")?;
    let mut operator = tokio::process::Command::new(&binary)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--leader-election",
            "false",
            "--allow-documentation-gateways",
            "true",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {} ({e}); run `cargo build` first", binary.display()))?;
    line(
        "operator",
        format!("started against the in-memory API server at {}", server.url()),
    );

    // Apply examples/acme in file order, moving the migration to a few seconds from now.
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLES)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for mut doc in serde_saphyr::from_multiple::<serde_json::Value>(&text)?
            .into_iter()
            .filter(|d| !d.is_null())
        {
            if doc["kind"] == "DatabaseMigration" {
                // In a few seconds, on the clock of the example's own time zone.
                let zone = doc["spec"]["timeZone"].as_str().unwrap_or("UTC");
                let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8))
                    .to_zoned(jiff::tz::TimeZone::get(zone)?);
                doc["spec"]["scheduledAt"] = soon.strftime("%Y-%m-%dT%H:%M:%S").to_string().into();
            }
            let (group, version) = doc["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .rsplit_once('/')
                .unwrap_or(("", doc["apiVersion"].as_str().unwrap_or_default()));
            let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap_or_default());
            let (resource, caps) = discovery.resolve_gvk(&gvk).ok_or("unknown kind")?;
            let api: Api<DynamicObject> = match (caps.scope, doc["metadata"]["namespace"].as_str()) {
                (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
                _ => Api::all_with(client.clone(), &resource),
            };
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            api.patch(&name, &ssa, &Patch::Apply(&doc)).await?;
            line(
                "applied",
                format!("{}/{}", doc["kind"].as_str().unwrap_or_default(), name),
            );
        }
    }

    let ns = "acme";
    let networks: Api<PrivateNetwork> = Api::namespaced(client.clone(), ns);
    let databases: Api<AppDatabase> = Api::namespaced(client.clone(), ns);
    let vpns: Api<VpnConnection> = Api::namespaced(client.clone(), ns);
    let migrations: Api<DatabaseMigration> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut now: Vec<(String, String)> = Vec::new();
        for n in networks.list(&ListParams::default()).await?.items {
            let s = n.status.clone().unwrap_or_default();
            now.push((
                format!("PrivateNetwork/{}", n.name_any()),
                format!(
                    "{} {} {}",
                    s.common.state.unwrap_or_default(),
                    s.cidr.unwrap_or_default(),
                    s.network_type.map(|t| format!("{t:?}")).unwrap_or_default()
                ),
            ));
        }
        for d in databases.list(&ListParams::default()).await?.items {
            let s = d.status.clone().unwrap_or_default();
            let e = s
                .endpoint
                .map(|e| format!("{}:{} (VPN {})", e.host, e.port, e.address.unwrap_or_default()))
                .unwrap_or_default();
            now.push((
                format!("AppDatabase/{}", d.name_any()),
                format!(
                    "{} on {} {e}",
                    s.common.state.unwrap_or_default(),
                    s.network.unwrap_or_default()
                ),
            ));
        }
        for v in vpns.list(&ListParams::default()).await?.items {
            let s = v.status.clone().unwrap_or_default();
            let t: Vec<String> = s
                .tunnels
                .iter()
                .map(|t| format!("{} {:?}", t.outside_address.clone().unwrap_or_default(), t.state))
                .collect();
            now.push((
                format!("VpnConnection/{}", v.name_any()),
                format!("{} [{}]", s.common.state.unwrap_or_default(), t.join(", ")),
            ));
        }
        let mut completed = false;
        for m in migrations.list(&ListParams::default()).await?.items {
            let s = m.status.clone().unwrap_or_default();
            completed |= s.common.state.as_deref() == Some("Completed");
            let why = s
                .common
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            now.push((
                format!("DatabaseMigration/{}", m.name_any()),
                format!("{}: {why}", s.common.state.unwrap_or_default()),
            ));
        }
        for (k, v) in now {
            if last.get(&k) != Some(&v) {
                line(&k, v.clone());
                last.insert(k, v);
            }
        }
        // Play the cluster: a kubelet reporting pods ready, a cloud giving load-balancer addresses.
        for sts in statefulsets.list(&ListParams::default()).await?.items {
            if sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) == 0 {
                statefulsets
                    .patch_status(
                        &sts.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"status": {"replicas": 1, "readyReplicas": 1}})),
                    )
                    .await?;
                line("simulated kubelet", format!("StatefulSet/{} ready", sts.name_any()));
            }
        }
        for (i, svc) in services
            .list(&ListParams::default().labels("appdb.dev/tunnel"))
            .await?
            .items
            .into_iter()
            .enumerate()
        {
            if svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .is_none()
            {
                let ip = format!("203.0.113.{}", 11 + i);
                services
                    .patch_status(
                        &svc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
                    )
                    .await?;
                line(
                    "simulated load balancer",
                    format!("Service/{} gets {ip}", svc.name_any()),
                );
            }
        }
        if completed {
            line(
                "done",
                "the migration completed; the old network and its VPN connection are gone".into(),
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the migration did not complete within 90 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.kill().await?;
    server.shutdown().await;
    Ok(())
}
