//! The database pod as the operator's StatefulSet says, on the pod runner (testkit::pods), on MySQL and MariaDB:
//! the pod template the AppDatabase controller builds, started with the image's documented entrypoint behaviour
//! (testkit/images/db-entrypoint.sh: initialise an empty data folder from the environment, run
//! /docker-entrypoint-initdb.d once), its ConfigMap and Secrets as files and environment, its data on a claim that
//! outlives the pod, under its own security context (uid 999, no capabilities, no_new_privs) and with the
//! operator's own probes run inside the container.
//! Needs root, iproute2 and the engine (scripts/test.sh installs them); fails loudly without them.

use std::time::Duration;

use appdb_operator::{
    api::AppDatabase,
    controllers::app_database::build::{BuildInputs, build},
    database::{ROOT_PASSWORD_KEY, ServerPlan, names},
};
use appdb_testkit::{
    dbserver::Engine,
    on_both_engines,
    pods::{
        env::Sources,
        pod::{ClusterSetup, Programs, RunningPod},
        sandbox::Node,
    },
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, Volume};
use serde_json::json;

const ROOT_PASSWORD: &str = "Root-Pod-Passw0rd";
const ADMIN_PASSWORD: &str = "change-me-Secur3!";

fn database(engine: Engine) -> AppDatabase {
    let (engine, version) = match engine {
        Engine::MySql => ("MySQL", "8.4"),
        Engine::MariaDb => ("MariaDB", "11.4"),
    };
    serde_json::from_value(json!({
        "apiVersion": "appdb.dev/v1alpha1",
        "kind": "AppDatabase",
        "metadata": {"name": "orders", "namespace": "acme", "uid": "5a0c1f4e-2b7d-4f0a-9c1e-3d2b6a7e8f90"},
        "spec": {
            "network": "prod", "engine": engine, "version": version,
            "admin": {"username": "acme_admin", "passwordSecretRef": {"name": "orders-admin", "key": "password"}},
            "storage": {"size": "20Gi"}
        }
    }))
    .expect("AppDatabase")
}

/// Pod `orders-0` as the StatefulSet controller makes it from the operator's StatefulSet (its claim template
/// becomes the volume `data` on claim `data-orders-0`), and the objects it reads.
fn database_pod(engine: Engine) -> (Pod, Sources) {
    let db = database(engine);
    let server = ServerPlan::from_spec(&db);
    let desired = build(&BuildInputs {
        db: &db,
        network: "prod",
        servers: std::slice::from_ref(&server),
        serving: &server.name,
    });
    let objects = &desired.servers[0];
    let sts = &objects.statefulset;
    let pod_name = format!("{}-0", sts.metadata.name.as_deref().expect("name"));
    let template = sts.spec.template.clone();
    let mut spec = template.spec.expect("pod spec");
    for claim in sts.spec.volume_claim_templates.iter().flatten() {
        let name = claim.metadata.name.clone().expect("claim name");
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{name}-{pod_name}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(pod_name);
    metadata.namespace = Some("acme".into());
    let config = &objects.config;
    let sources = Sources {
        secrets: [
            (
                names(&db).root_secret,
                [(ROOT_PASSWORD_KEY.to_owned(), ROOT_PASSWORD.as_bytes().to_vec())].into(),
            ),
            (
                "orders-admin".to_owned(),
                [("password".to_owned(), ADMIN_PASSWORD.as_bytes().to_vec())].into(),
            ),
        ]
        .into(),
        config_maps: [(
            config.metadata.name.clone().expect("config name"),
            config.data.clone().unwrap_or_default(),
        )]
        .into(),
    };
    (
        Pod {
            metadata,
            spec: Some(spec),
            status: None,
        },
        sources,
    )
}

struct Lab {
    dir: tempfile::TempDir,
    node: Node,
    programs: Programs,
}

impl Lab {
    async fn start(&self, pod: &Pod, sources: &Sources) -> RunningPod {
        RunningPod::start(
            &self.node,
            pod,
            sources,
            &self.programs,
            &self.dir.path().join("pods"),
            &self.dir.path().join("claims"),
            &ClusterSetup::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("the database pod did not start: {e}"))
    }
}

/// Waits until the pod's own readiness probe passes, as the kubelet would run it.
async fn wait_ready(pod: &RunningPod, spec: &Pod, what: &str) {
    let container = &spec.spec.as_ref().expect("spec").containers[0];
    let readiness = container.readiness_probe.as_ref().expect("a readiness probe");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let outcome = pod.probe(&container.name, readiness).await;
        if outcome == Ok(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let users = pod
                .exec(&container.name, &["sh", "-c", "for c in mysql mariadb; do command -v $c && $c -uroot -p\"$APPDB_ROOT_PASSWORD\" --protocol=socket -e 'SELECT user, host, plugin FROM mysql.user' 2>&1; done"])
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            panic!(
                "{what}: not ready within 180 s (last probe: {outcome:?}); accounts: {users:?}; log:\n{}",
                pod.logs(&container.name)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs SQL inside the database container over TCP, as a client in the pod would.
async fn sql(pod: &RunningPod, engine: Engine, user: &str, password: &str, query: &str) -> Result<String, String> {
    let client = match engine {
        Engine::MySql => "mysql",
        Engine::MariaDb => "mariadb",
    };
    let out = pod
        .exec(
            "database",
            &[
                client,
                "-N",
                "-B",
                &format!("-u{user}"),
                &format!("-p{password}"),
                "-h127.0.0.1",
                "-e",
                query,
            ],
        )
        .await?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn the_database_pod_starts_from_its_own_spec_and_keeps_its_data_across_restarts(engine: Engine) {
    let lab = Lab {
        dir: tempfile::tempdir().expect("temp dir"),
        node: Node::start().await.expect("the node"),
        programs: Programs {
            operator: env!("CARGO_BIN_EXE_appdb-operator").into(),
        },
    };
    let (spec, sources) = database_pod(engine);
    let mut pod = lab.start(&spec, &sources).await;
    wait_ready(&pod, &spec, "first start").await;
    // The entrypoint initialised the empty claim and ran the operator's first-start script: the customer's
    // administrator exists with the password from its Secret.
    let log = pod.logs("database");
    assert!(log.contains("initializing database files"), "{log}");
    assert!(log.contains("running /docker-entrypoint-initdb.d/"), "{log}");
    assert_eq!(
        sql(&pod, engine, "acme_admin", ADMIN_PASSWORD, "SELECT CURRENT_USER()").await,
        Ok("acme_admin@%".to_owned())
    );
    assert!(
        sql(&pod, engine, "acme_admin", "wrong-password", "SELECT 1")
            .await
            .is_err(),
        "a wrong password is refused"
    );
    // As the pod's security context says: uid 999 and no capabilities at all.
    let status = pod
        .exec(
            "database",
            &["sh", "-c", "grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs)' /proc/1/status"],
        )
        .await
        .expect("exec");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("Uid:\t999\t999\t999\t999")
            && status.contains("CapEff:\t0000000000000000")
            && status.contains("CapBnd:\t0000000000000000")
            && status.contains("NoNewPrivs:\t1"),
        "{status}"
    );
    sql(
        &pod,
        engine,
        "acme_admin",
        ADMIN_PASSWORD,
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1), (2)",
    )
    .await
    .expect("write");

    // The kubelet's stop: SIGTERM reaches the server (PID 1, exec'd by the entrypoint), which shuts down cleanly
    // within the pod's grace period.
    let stopped = pod.stop().await;
    assert!(
        !stopped[0].2,
        "the server must stop on SIGTERM, not be killed: {stopped:?}"
    );

    // The StatefulSet's next pod gets the same claim: the data is there and nothing is initialised again.
    let again = lab.start(&spec, &sources).await;
    wait_ready(&again, &spec, "restart").await;
    assert!(
        !again.logs("database").contains("initializing"),
        "an initialised claim is never initialised again"
    );
    assert_eq!(
        sql(
            &again,
            engine,
            "acme_admin",
            ADMIN_PASSWORD,
            "SELECT COUNT(*) FROM shop.orders"
        )
        .await,
        Ok("2".to_owned())
    );
    let mut again = again;
    again.stop().await;
}

on_both_engines!(the_database_pod_starts_from_its_own_spec_and_keeps_its_data_across_restarts);
