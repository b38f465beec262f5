//! Everything the operator renders validates against the Kubernetes schemas of the oldest supported version (1.33),
//! checked by `kubernetes-validate` (PyPI; `scripts/test.sh` installs it).

use std::process::Command;

use appdb_operator::{
    api::database_migration::MigrationStrategy,
    api::{
        AppDatabase, AppDatabaseSpec,
        app_database::{AdminCredentials, DeletionPolicy, DnsSpec, Engine, Storage},
        common::SecretKeyRef,
    },
    controllers::{
        app_database::build::{BuildInputs, build, root_secret, rotation_job},
        database_migration::copy,
    },
    database::{ServerPlan, copy_server_name, copy_server_plan},
    netpol::{IsolationConfig, customer_policies},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

const OLDEST_SUPPORTED: &str = "1.33.0";

fn database(engine: Engine) -> AppDatabase {
    let mut db = AppDatabase::new(
        "orders",
        AppDatabaseSpec {
            network: "prod".into(),
            engine,
            version: None,
            image: None,
            admin: AdminCredentials {
                username: "acme_admin".into(),
                password_secret_ref: SecretKeyRef {
                    name: "orders-admin".into(),
                    key: "password".into(),
                },
            },
            storage: Storage {
                size: "20Gi".into(),
                storage_class_name: Some("fast".into()),
            },
            resources: None,
            dns: Some(DnsSpec {
                hostname: "orders.db.acme.example.com".into(),
            }),
            deletion_policy: DeletionPolicy::Retain,
            tunnel: None,
        },
    );
    db.metadata.namespace = Some("acme".into());
    db.metadata.uid = Some("0b6c7a2e-1f0e-4e55-9a43-3c2f0c1d9f10".into());
    db
}

fn yaml<T: serde::Serialize>(docs: &mut String, object: &T) {
    docs.push_str("---\n");
    docs.push_str(&serde_saphyr::to_string(object).expect("render YAML"));
}

#[test]
fn rendered_objects_validate_against_kubernetes_1_33() {
    let mut docs = String::new();
    for engine in [Engine::MySQL, Engine::MariaDB] {
        let db = database(engine);
        // The database's server and the new one a copying migration adds beside it.
        let current = ServerPlan::from_spec(&db);
        let copy = copy_server_plan(&db, &current, &copy_server_name("orders", "uid-1"), None);
        let servers = [current, copy];
        let desired = build(&BuildInputs {
            db: &db,
            network: "prod",
            servers: &servers,
            serving: &servers[0].name,
        });
        for server in &desired.servers {
            yaml(&mut docs, &server.config);
            yaml(&mut docs, &server.statefulset);
            yaml(&mut docs, &server.headless);
        }
        yaml(&mut docs, &desired.client);
        let mut migration = appdb_operator::api::DatabaseMigration::new(
            "orders-to-ssd",
            appdb_operator::api::DatabaseMigrationSpec {
                database: "orders".into(),
                target_network: "prod".into(),
                scheduled_at: None,
                time_zone: None,
                strategy: Some(MigrationStrategy::Replicate),
                target: None,
                delete_source_network: true,
            },
        );
        migration.metadata.namespace = Some("acme".into());
        migration.metadata.uid = Some("uid-1".into());
        let (sa, role, binding) = copy::rbac(&migration);
        yaml(&mut docs, &sa);
        yaml(&mut docs, &role);
        yaml(&mut docs, &binding);
        yaml(
            &mut docs,
            &copy::job(&copy::JobInputs {
                migration: &migration,
                database: &db,
                source: &servers[0],
                target: &servers[1],
                strategy: MigrationStrategy::Replicate,
                cutover_at: None,
                operator_image: "registry.example/appdb-operator:1",
                cluster_domain: "cluster.local",
                rollback: false,
            }),
        );
        yaml(&mut docs, &desired.policy);
        yaml(&mut docs, &root_secret(&db, "x".repeat(32)));
        yaml(
            &mut docs,
            &rotation_job(&db, "42", "registry.example/appdb-operator:1", "cluster.local"),
        );
    }
    let mut vpn = appdb_operator::api::VpnConnection::new(
        "seattle",
        appdb_operator::api::VpnConnectionSpec {
            network: "prod".into(),
            customer_cidrs: vec!["192.168.10.0/24".into()],
            customer_gateway_address: "198.51.100.7".into(),
            description: None,
            tunnel_options: vec![],
        },
    );
    vpn.metadata.namespace = Some("acme".into());
    vpn.metadata.uid = Some("6f1c1f43-6c0a-4a8e-9f55-5c6b2d6f7a10".into());
    {
        use appdb_operator::{
            controllers::vpn_connection::build as vb,
            vpn::model::{Connection, Psk, Tunnel},
            vpn::render::{DataPath, Exposure},
        };
        let t = |n: u8, ip: [u8; 4]| {
            Tunnel::new(n, ip.into(), Psk::new("Key.for_tunnel_0123456789abcdef").unwrap(), None).unwrap()
        };
        let conn = Connection {
            name: "acme-seattle".into(),
            description: None,
            platform_cidr: "10.20.30.64/26".parse().unwrap(),
            pinghost: [10, 20, 30, 65].into(),
            customer_cidrs: vec!["192.168.10.0/24".parse().unwrap()],
            customer_gateway: [198, 51, 100, 7].into(),
            tunnels: [t(1, [203, 0, 113, 11]), t(2, [203, 0, 113, 12])],
        };
        let serving = vb::Serving {
            addresses: vec![[10, 20, 30, 65].into()],
            relays: vec!["10.20.30.74:3306=orders.acme.svc.cluster.local:3306".into()],
        };
        yaml(&mut docs, &vb::psk_secret(&vpn, "a".repeat(32), "b".repeat(32)));
        yaml(&mut docs, &vb::disruption_budget(&vpn));
        yaml(&mut docs, &vb::customer_config(&vpn, &conn));
        let (sa, role, binding) = vb::gateway_rbac(&vpn);
        yaml(&mut docs, &sa);
        yaml(&mut docs, &role);
        yaml(&mut docs, &binding);
        for n in [1u8, 2] {
            yaml(&mut docs, &vb::tunnel_service(&vpn, n, Exposure::LoadBalancer));
            let config = vb::gateway_config(&vpn, &conn, n, DataPath::Userspace, Exposure::HostNetwork);
            yaml(
                &mut docs,
                &vb::gateway(
                    &vpn,
                    "prod",
                    n,
                    "gw:1",
                    "op:1",
                    DataPath::Userspace,
                    &vb::config_digest(&config),
                    &serving,
                    Exposure::HostNetwork,
                ),
            );
            yaml(&mut docs, &config);
        }
    }
    let owner = OwnerReference {
        api_version: "appdb.dev/v1alpha1".into(),
        kind: "PrivateNetwork".into(),
        name: "prod".into(),
        uid: "u".into(),
        ..Default::default()
    };
    for policy in customer_policies("acme", &[owner], &IsolationConfig::default()) {
        yaml(&mut docs, &policy);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &docs).unwrap();
    // Through the module, so that no console-script shim on PATH is needed.
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", OLDEST_SUPPORTED])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate is required (pip install kubernetes-validate; scripts/test.sh does): {e}")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "rendered objects do not validate against Kubernetes {OLDEST_SUPPORTED}:\n{report}"
    );
    assert_eq!(
        report.matches(" passed for resource ").count(),
        docs.matches("---\n").count(),
        "every document checked:\n{report}"
    );
}
