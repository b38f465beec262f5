//! Real IPsec: charon with the gateway configuration the operator renders, and charon with the strongSwan
//! configuration the customer downloads, in network namespaces of their own. Only the data path differs from
//! production: userspace ESP (`kernel-libipsec`), because this kernel has no ESP support.
//! Needs root, iproute2 and strongSwan (scripts/test.sh installs them); fails loudly without them.

mod support;

#[path = "support/netns.rs"]
mod netns;

#[path = "support/charon.rs"]
#[allow(dead_code)]
mod charon;

use appdb_testkit::dbserver::{DbServer, Engine};

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Instant,
};

use appdb_operator::vpn::{
    model::{Connection, Psk, Tunnel},
    render::{self, DataPath, customer_swanctl, gateway_strongswan_conf, gateway_swanctl},
};
use charon::{Charon, carrying_tunnel, customer_strongswan_conf, established, wait_until};
use netns::{Netns, link};

fn connection(psk2: &str) -> Connection {
    let tunnel = |n: u8, addr: Ipv4Addr, psk: &str| Tunnel::new(n, addr, Psk::new(psk).unwrap(), None).expect("tunnel");
    Connection {
        name: "acme-seattle".into(),
        description: Some("Seattle office".into()),
        platform_cidr: "10.20.30.64/26".parse().unwrap(),
        pinghost: Ipv4Addr::new(10, 20, 30, 65),
        customer_cidrs: vec!["192.168.10.0/24".parse().unwrap()],
        customer_gateway: Ipv4Addr::new(198, 51, 100, 7),
        tunnels: [
            tunnel(1, Ipv4Addr::new(203, 0, 113, 11), "Tunnel1.Key_0123456789abcdefghijk"),
            tunnel(2, Ipv4Addr::new(203, 0, 113, 12), psk2),
        ],
    }
}

struct Lab {
    dir: tempfile::TempDir,
    customer: Netns,
    gateways: [Netns; 2],
}

impl Lab {
    /// The customer's VPN device (with the LAN host's address on lo) and two gateway "pods", each with its own
    /// link to the device, as the Internet between them.
    fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = std::process::id();
        let customer = Netns::new(&format!("appdb-{tag}-{id}-cust"));
        let gateways = [
            Netns::new(&format!("appdb-{tag}-{id}-gw1")),
            Netns::new(&format!("appdb-{tag}-{id}-gw2")),
        ];
        customer.add_address("198.51.100.7/32");
        customer.add_address("192.168.10.10/32");
        for (i, gw) in gateways.iter().enumerate() {
            let n = i + 1;
            let outside = format!("203.0.113.1{n}");
            gw.add_address(&format!("{outside}/32"));
            gw.add_address("10.20.30.65/32");
            link(&customer, &format!("c{n}"), gw, &format!("g{n}"));
            customer.exec(&[
                "ip",
                "route",
                "add",
                &format!("{outside}/32"),
                "dev",
                &format!("c{n}"),
                "src",
                "198.51.100.7",
            ]);
            gw.exec(&[
                "ip",
                "route",
                "add",
                "198.51.100.7/32",
                "dev",
                &format!("g{n}"),
                "src",
                &outside,
            ]);
        }
        Lab {
            dir,
            customer,
            gateways,
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn start_gateway(&self, conn: &Connection, n: u8) -> Charon {
        let vici = self.dir.path().join(format!("gw{n}.vici"));
        let conf = self.write(
            &format!("gw{n}-strongswan.conf"),
            &gateway_strongswan_conf(
                &conn.tunnels[usize::from(n) - 1],
                DataPath::Userspace,
                &vici.display().to_string(),
            ),
        );
        let charon = Charon::start(
            &self.gateways[usize::from(n) - 1],
            &conf,
            vici,
            &self.dir.path().join(format!("gw{n}.log")),
        );
        charon.load(&self.write(&format!("gw{n}-swanctl.conf"), &gateway_swanctl(conn, n)));
        charon
    }

    fn start_customer(&self, conn: &Connection) -> Charon {
        let vici = self.dir.path().join("customer.vici");
        let timing = self.write(
            "customer-download-strongswan.conf",
            &render::customer_strongswan_conf(conn),
        );
        let conf = self.write("customer-strongswan.conf", &customer_strongswan_conf(&vici, &timing));
        let charon = Charon::start(&self.customer, &conf, vici, &self.dir.path().join("customer.log"));
        charon.load(&self.write("customer-swanctl.conf", &customer_swanctl(conn)));
        charon
    }

    fn ping_pinghost(&self) -> bool {
        self.customer
            .try_exec(&["ping", "-c", "1", "-W", "1", "-I", "192.168.10.10", "10.20.30.65"])
            .status
            .success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // On failure, show what charon said: the reason is always in these logs.
        if std::thread::panicking() {
            for log in ["customer.log", "gw1.log", "gw2.log"] {
                let text = std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(400).collect();
                eprintln!(
                    "---- {log} (last lines) ----\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

#[test]
fn both_tunnels_come_up_and_premises_reach_the_pinghost() {
    let lab = Lab::new("up");
    let conn = connection("Tunnel2.Key_0123456789abcdefghijk");
    let _gw1 = lab.start_gateway(&conn, 1);
    let _gw2 = lab.start_gateway(&conn, 2);
    let started = Instant::now();
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    let up = started.elapsed();
    wait_until(20, "the pinghost answers through the tunnel", || lab.ping_pinghost());
    println!(
        "both tunnels up {:.2} s after the customer's device started",
        up.as_secs_f64()
    );
}

#[test]
fn a_wrong_pre_shared_key_keeps_the_tunnel_down_and_says_why() {
    let lab = Lab::new("psk");
    let conn = connection("Tunnel2.Key_0123456789abcdefghijk");
    let _gw1 = lab.start_gateway(&conn, 1);
    // The gateway of tunnel 2 has another key than the customer's download.
    let mut wrong = conn.clone();
    wrong.tunnels[1].psk = Psk::new("Not.the_same_key_0123456789abcdef").unwrap();
    let _gw2 = lab.start_gateway(&wrong, 2);
    // The gateway agents report each tunnel's state from charon's vici socket.
    let reports: Vec<PathBuf> = (1..=2)
        .map(|n| lab.dir.path().join(format!("gw{n}-state.json")))
        .collect();
    let _agents: Vec<Background> = (1..=2)
        .map(|n| {
            Background(
                Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
                    .args([
                        "vpn-agent",
                        "--vici",
                        &lab.dir.path().join(format!("gw{n}.vici")).display().to_string(),
                    ])
                    .args(["--report-file", &reports[n - 1].display().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the gateway agent"),
            )
        })
        .collect();
    let report = |n: usize| -> serde_json::Value {
        std::fs::read_to_string(&reports[n - 1])
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    // Both agents follow their charon before the customer's device connects.
    wait_until(30, "both agents report", || {
        report(1)["state"] == "DOWN" && report(2)["state"] == "DOWN"
    });
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "gateway 1 reports UP", || report(1)["state"] == "UP");
    wait_until(30, "gateway 2 reports DOWN with the reason", || {
        report(2)["state"] == "DOWN"
            && report(2)["message"]
                .as_str()
                .is_some_and(|m| m.contains("authentication failed"))
    });
    assert!(
        !report(2).to_string().contains("Not.the_same_key"),
        "the report never carries a key"
    );
    wait_until(30, "tunnel 2 refused for authentication", || {
        std::fs::read_to_string(lab.dir.path().join("gw2.log"))
            .unwrap_or_default()
            .contains("tried 1 shared key for '203.0.113.12' - '198.51.100.7', but MAC mismatched")
            || std::fs::read_to_string(lab.dir.path().join("customer.log"))
                .unwrap_or_default()
                .contains("AUTHENTICATION_FAILED")
    });
    assert!(!established(&customer, 2), "tunnel 2 must stay down with a wrong key");
    wait_until(20, "traffic still flows through tunnel 1", || lab.ping_pinghost());
}

#[test]
fn when_one_gateway_dies_traffic_moves_to_the_other_tunnel() {
    let lab = Lab::new("dpd");
    let conn = connection("Tunnel2.Key_0123456789abcdefghijk");
    let gw1 = lab.start_gateway(&conn, 1);
    let gw2 = lab.start_gateway(&conn, 2);
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    wait_until(20, "pinghost reachable", || lab.ping_pinghost());
    let carrying = carrying_tunnel(&customer).expect("one tunnel carries the pings");
    // The gateway carrying the traffic disappears without a word, as a node failure would make it.
    let (mut gateways, survivor) = ([Some(gw1), Some(gw2)], if carrying == 1 { 2 } else { 1 });
    let killed = Instant::now();
    if let Some(g) = gateways[usize::from(carrying) - 1].as_mut() {
        g.stop();
    }
    // The device notices after the DPD interval plus its retransmissions (about 26 s with these settings).
    let downtime = wait_until(90, "pinghost reachable again", || lab.ping_pinghost());
    wait_until(90, "the dead tunnel given up by the device (DPD)", || {
        !established(&customer, carrying)
    });
    let detected = killed.elapsed();
    assert!(established(&customer, survivor));
    assert!(lab.ping_pinghost(), "traffic flows through the other tunnel");
    assert_eq!(carrying_tunnel(&customer), Some(survivor));
    println!(
        "failover: tunnel {carrying} carried the traffic; pings answered again {:.1} s after its gateway died, through tunnel {survivor}; the device dropped tunnel {carrying} after {:.1} s (DPD)",
        downtime.as_secs_f64(),
        detected.as_secs_f64()
    );
    drop(gateways);
}

/// A process killed when the test ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premises_reach_the_database_through_the_tunnel() {
    const ROOT: &str = "Root-Passw0rd-for-the-tunnel-test";
    let lab = Lab::new("db");
    // The "cluster": the database's stable Service address, reachable from each gateway pod.
    let cluster = Netns::new(&format!("appdb-db-{}-k8s", std::process::id()));
    cluster.add_address("10.96.0.10/32");
    for (i, gw) in lab.gateways.iter().enumerate() {
        let n = i + 1;
        let pod_ip = format!("10.244.0.1{n}");
        gw.add_address(&format!("{pod_ip}/32"));
        // The database's address in the customer's network, owned by every gateway of that network.
        gw.add_address("10.20.30.74/32");
        link(gw, &format!("k{n}"), &cluster, &format!("p{n}"));
        gw.exec(&[
            "ip",
            "route",
            "add",
            "10.96.0.10/32",
            "dev",
            &format!("k{n}"),
            "src",
            &pod_ip,
        ]);
        cluster.exec(&[
            "ip",
            "route",
            "add",
            &format!("{pod_ip}/32"),
            "dev",
            &format!("p{n}"),
            "src",
            "10.96.0.10",
        ]);
    }
    let db = DbServer::start_in(Engine::MariaDb, &cluster.name, "10.96.0.10", ROOT).await;
    db.sql_as_os_root("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO app.t VALUES (1, 'read through the tunnel')")
        .await
        .expect("seed the database");
    let _agents: Vec<Background> = lab
        .gateways
        .iter()
        .map(|gw| {
            Background(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &gw.name,
                        env!("CARGO_BIN_EXE_appdb-operator"),
                        "vpn-agent",
                        "--forward",
                        &format!("10.20.30.74:3306=10.96.0.10:{}", db.port),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the gateway agent"),
            )
        })
        .collect();

    let conn = connection("Tunnel2.Key_0123456789abcdefghijk");
    let _gw1 = lab.start_gateway(&conn, 1);
    let _gw2 = lab.start_gateway(&conn, 2);
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    let query = || {
        let out = lab.customer.try_exec(&[
            "mariadb",
            "--no-defaults",
            "-h",
            "10.20.30.74",
            "-P",
            "3306",
            "--connect-timeout=2",
            "-uroot",
            &format!("-p{ROOT}"),
            "-N",
            "-e",
            "SELECT v FROM app.t WHERE id = 1",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if stdout.is_empty() {
            eprintln!("mariadb client: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        stdout
    };
    wait_until(30, "the database answers from premises", || {
        query() == "read through the tunnel"
    });
    db.stop().await;
}

/// The data path of a Readdress migration: the database moves from the old network's address (10.20.30.74, relayed by
/// the old network's gateways) to the new network's (10.0.0.10, relayed by the new network's gateways), as the
/// operator reconfigures the gateways. Premises reach it on the new address afterwards and no longer on the old one;
/// sessions, which use the stable Service address, never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_migration_premises_reach_the_database_on_its_new_address_only() {
    const ROOT: &str = "Root-Passw0rd-for-the-migration-test";
    let id = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let customer = Netns::new(&format!("appdb-mig-{id}-cust"));
    let cluster = Netns::new(&format!("appdb-mig-{id}-k8s"));
    customer.add_address("198.51.100.7/32");
    customer.add_address("192.168.10.10/32");
    cluster.add_address("10.96.0.10/32");
    // Old network 10.20.30.64/26 (gateways 1, 2) and new network 10.0.0.0/26 (gateways 3, 4).
    let plan = [
        (1, "203.0.113.11", "10.20.30.65", "10.20.30.74"),
        (2, "203.0.113.12", "10.20.30.65", "10.20.30.74"),
        (3, "203.0.113.21", "10.0.0.1", "10.0.0.10"),
        (4, "203.0.113.22", "10.0.0.1", "10.0.0.10"),
    ];
    let gateways: Vec<Netns> = plan
        .iter()
        .map(|(n, outside, pinghost, db_address)| {
            let gw = Netns::new(&format!("appdb-mig-{id}-gw{n}"));
            let pod_ip = format!("10.244.0.{}", 10 + n);
            for a in [
                outside.to_string(),
                pinghost.to_string(),
                db_address.to_string(),
                pod_ip.clone(),
            ] {
                gw.add_address(&format!("{a}/32"));
            }
            link(&customer, &format!("c{n}"), &gw, &format!("g{n}"));
            customer.exec(&[
                "ip",
                "route",
                "add",
                &format!("{outside}/32"),
                "dev",
                &format!("c{n}"),
                "src",
                "198.51.100.7",
            ]);
            gw.exec(&[
                "ip",
                "route",
                "add",
                "198.51.100.7/32",
                "dev",
                &format!("g{n}"),
                "src",
                outside,
            ]);
            link(&gw, &format!("k{n}"), &cluster, &format!("p{n}"));
            gw.exec(&[
                "ip",
                "route",
                "add",
                "10.96.0.10/32",
                "dev",
                &format!("k{n}"),
                "src",
                &pod_ip,
            ]);
            cluster.exec(&[
                "ip",
                "route",
                "add",
                &format!("{pod_ip}/32"),
                "dev",
                &format!("p{n}"),
                "src",
                "10.96.0.10",
            ]);
            gw
        })
        .collect();
    let db = DbServer::start_in(Engine::MariaDb, &cluster.name, "10.96.0.10", ROOT).await;
    db.sql_as_os_root("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO app.t VALUES (1, 'same data, new address')")
        .await
        .expect("seed");

    let old = connection("Tunnel2.Key_0123456789abcdefghijk");
    let mut new = connection("Tunnel2.Key_9876543210abcdefghijk");
    new.name = "acme-seattle-2026".into();
    new.platform_cidr = "10.0.0.0/26".parse().unwrap();
    new.pinghost = Ipv4Addr::new(10, 0, 0, 1);
    new.tunnels[0].platform_address = Ipv4Addr::new(203, 0, 113, 21);
    new.tunnels[1].platform_address = Ipv4Addr::new(203, 0, 113, 22);
    let start_gateway = |conn: &Connection, tunnel: u8, ns: &Netns, n: usize| {
        let vici = dir.path().join(format!("gw{n}.vici"));
        let conf = dir.path().join(format!("gw{n}-strongswan.conf"));
        std::fs::write(
            &conf,
            gateway_strongswan_conf(
                &conn.tunnels[usize::from(tunnel) - 1],
                DataPath::Userspace,
                &vici.display().to_string(),
            ),
        )
        .unwrap();
        let charon = Charon::start(ns, &conf, vici, &dir.path().join(format!("gw{n}.log")));
        let file = dir.path().join(format!("gw{n}-swanctl.conf"));
        std::fs::write(&file, gateway_swanctl(conn, tunnel)).unwrap();
        charon.load(&file);
        charon
    };
    let _charons: Vec<Charon> = vec![
        start_gateway(&old, 1, &gateways[0], 1),
        start_gateway(&old, 2, &gateways[1], 2),
        start_gateway(&new, 1, &gateways[2], 3),
        start_gateway(&new, 2, &gateways[3], 4),
    ];
    // The customer's device has both downloads (the new VpnConnection was added before the migration).
    let vici = dir.path().join("customer.vici");
    let conf = dir.path().join("customer-strongswan.conf");
    let timing = dir.path().join("customer-download-strongswan.conf");
    std::fs::write(&timing, render::customer_strongswan_conf(&old)).unwrap();
    std::fs::write(&conf, customer_strongswan_conf(&vici, &timing)).unwrap();
    let device = Charon::start(&customer, &conf, vici, &dir.path().join("customer.log"));
    let both = dir.path().join("customer-swanctl.conf");
    std::fs::write(&both, format!("{}{}", customer_swanctl(&old), customer_swanctl(&new))).unwrap();
    device.load(&both);
    let up = |name: &str| {
        let sas = device.swanctl(&["--list-sas"]);
        sas.lines()
            .any(|l| l.starts_with(&format!("{name}:")) && l.contains("ESTABLISHED"))
    };
    for name in [
        "acme-seattle-tunnel1",
        "acme-seattle-tunnel2",
        "acme-seattle-2026-tunnel1",
        "acme-seattle-2026-tunnel2",
    ] {
        wait_until(30, name, || up(name));
    }

    let relay = |n: usize, address: &str| {
        Background(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &gateways[n - 1].name,
                    env!("CARGO_BIN_EXE_appdb-operator"),
                    "vpn-agent",
                    "--forward",
                    &format!("{address}:3306=10.96.0.10:{}", db.port),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the gateway agent"),
        )
    };
    let query_from_premises = |address: &str| {
        let out = customer.try_exec(&[
            "mariadb",
            "--no-defaults",
            "-h",
            address,
            "--connect-timeout=2",
            "-uroot",
            &format!("-p{ROOT}"),
            "-N",
            "-e",
            "SELECT v FROM app.t WHERE id = 1",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Before: the old network's gateways relay the database.
    let old_relays = vec![relay(1, "10.20.30.74"), relay(2, "10.20.30.74")];
    wait_until(30, "premises read through the old address", || {
        query_from_premises("10.20.30.74") == "same data, new address"
    });

    // Sessions query through the stable Service address the whole time.
    let session_failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let session_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let session = {
        let (failures, queries, stop) = (session_failures.clone(), session_queries.clone(), stop.clone());
        let (cluster_name, port) = (cluster.name.clone(), db.port);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &cluster_name,
                        "mariadb",
                        "--no-defaults",
                        "-h",
                        "10.96.0.10",
                        "-P",
                        &port.to_string(),
                        "--connect-timeout=2",
                        "-uroot",
                        &format!("-p{ROOT}"),
                        "-N",
                        "-e",
                        "SELECT COUNT(*) FROM app.t",
                    ])
                    .output()
                    .expect("session client");
                queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if String::from_utf8_lossy(&out.stdout).trim() != "1" {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let count = || session_queries.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(30, "sessions querying before the migration", || count() >= 10);
    // The migration, as the operator carries it out: the new network's gateways relay the database at its new
    // address; the old network's gateways stop (their Deployments roll, then go with the source network).
    let _new_relays = [relay(3, "10.0.0.10"), relay(4, "10.0.0.10")];
    drop(old_relays);
    wait_until(30, "premises read through the new address", || {
        query_from_premises("10.0.0.10") == "same data, new address"
    });
    assert_eq!(
        query_from_premises("10.20.30.74"),
        "",
        "the old address no longer answers"
    );
    let during = count();
    wait_until(30, "sessions querying after the migration", || count() >= during + 10);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    session.join().unwrap();
    let (failures, queries) = (
        session_failures.load(std::sync::atomic::Ordering::Relaxed),
        session_queries.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(queries > 0);
    assert_eq!(failures, 0, "sessions saw {failures} failed queries out of {queries}");
    println!("migration data path: {queries} session queries through the stable Service address, {failures} failed");
    db.stop().await;
}
