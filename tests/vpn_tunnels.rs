//! Real IPsec: charon with the gateway configuration the operator renders, and charon with the strongSwan
//! configuration the customer downloads, in network namespaces of their own. Only the data path differs from
//! production: userspace ESP (`kernel-libipsec`), because this kernel has no ESP support.
//! Needs root, iproute2 and strongSwan (scripts/test.sh installs them); fails loudly without them.

mod support;

#[path = "support/netns.rs"]
mod netns;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use appdb_operator::vpn::{
    model::{Connection, Psk, Tunnel},
    render::{DataPath, customer_swanctl, gateway_strongswan_conf, gateway_swanctl},
};
use netns::{Netns, link};

const CHARON: &str = "/usr/lib/ipsec/charon";

struct Charon {
    child: Child,
    vici: PathBuf,
}

impl Charon {
    /// Starts charon inside `ns` with its own /run, configured by `conf` (strongswan.conf).
    fn start(ns: &Netns, conf: &Path, vici: PathBuf, log: &Path) -> Charon {
        assert!(
            Path::new(CHARON).exists(),
            "{CHARON} is required: install strongswan-charon (scripts/test.sh does)"
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "unshare",
                "-m",
                "sh",
                "-c",
                &format!("mount -t tmpfs tmpfs /run && exec {CHARON}"),
            ])
            .env("STRONGSWAN_CONF", conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start charon");
        let started = Instant::now();
        while !vici.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "charon in {} did not open {}",
                ns.name,
                vici.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Charon { child, vici }
    }

    fn swanctl(&self, args: &[&str]) -> String {
        let uri = format!("unix://{}", self.vici.display());
        let out = Command::new("swanctl")
            .args(args)
            .args(["--uri", &uri])
            .output()
            .expect("swanctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "swanctl {args:?} failed: {text}");
        text
    }

    fn load(&self, swanctl_conf: &Path) {
        self.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &swanctl_conf.display().to_string(),
        ]);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn customer_strongswan_conf(vici: &Path) -> String {
    // The customer's own charon: ours for the test, with the userspace data path.
    format!(
        "charon {{\n    load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey kdf gcm aes sha1 sha2 hmac gmp kernel-libipsec kernel-netlink socket-default vici updown\n    retransmit_tries = 3\n    retransmit_timeout = 2.0\n    retransmit_base = 1.5\n    filelog {{\n        stderr {{\n            default = 1\n            ike = 2\n        }}\n    }}\n    plugins {{\n        vici {{\n            socket = unix://{}\n        }}\n    }}\n}}\n",
        vici.display()
    )
}

fn connection(psk2: &str) -> Connection {
    let tunnel = |n: u8, addr: Ipv4Addr, psk: &str| Tunnel::new(n, addr, Psk(psk.into()), None).expect("tunnel");
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
        let conf = self.write("customer-strongswan.conf", &customer_strongswan_conf(&vici));
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

fn established(customer: &Charon, tunnel: u8) -> bool {
    let sas = customer.swanctl(&["--list-sas"]);
    sas.lines()
        .any(|l| l.contains(&format!("acme-seattle-tunnel{tunnel}:")) && l.contains("ESTABLISHED"))
        && sas
            .lines()
            .any(|l| l.contains(&format!("acme-seattle-tunnel{tunnel}:")) && l.contains("INSTALLED"))
}

fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
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
    wrong.tunnels[1].psk = Psk("Not.the_same_key_0123456789abcdef".into());
    let _gw2 = lab.start_gateway(&wrong, 2);
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
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
    let mut gw1 = lab.start_gateway(&conn, 1);
    let _gw2 = lab.start_gateway(&conn, 2);
    let customer = lab.start_customer(&conn);
    wait_until(30, "tunnel 1 ESTABLISHED", || established(&customer, 1));
    wait_until(30, "tunnel 2 ESTABLISHED", || established(&customer, 2));
    wait_until(20, "pinghost reachable", || lab.ping_pinghost());
    // Tunnel 1's gateway disappears without a word, as a node failure would make it.
    let killed = Instant::now();
    gw1.stop();
    // Let the device notice: at most the DPD interval plus the retransmissions (about 30 s with the defaults).
    // Zero when the device was already sending through tunnel 2; otherwise the time until DPD moves it there.
    let downtime = wait_until(90, "pinghost reachable again", || lab.ping_pinghost());
    wait_until(90, "tunnel 1 given up by the device (DPD)", || {
        !established(&customer, 1)
    });
    let detected = killed.elapsed();
    assert!(established(&customer, 2));
    assert!(lab.ping_pinghost(), "traffic flows through tunnel 2");
    println!(
        "failover: pinghost reachable {:.1} s after tunnel 1's gateway died; the device dropped tunnel 1 after {:.1} s (DPD)",
        downtime.as_secs_f64(),
        detected.as_secs_f64()
    );
}
