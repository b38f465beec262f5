//! A real charon in a network namespace of its own (own /run, own strongswan.conf), driven with swanctl; the
//! customer's device in the VPN tests. Needs strongSwan (scripts/test.sh installs it); fails loudly without it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::netns::Netns;

pub const CHARON: &str = "/usr/lib/ipsec/charon";

pub struct Charon {
    child: Child,
    pub vici: PathBuf,
}

impl Charon {
    /// Starts charon inside `ns` with its own /run, configured by `conf` (strongswan.conf).
    pub fn start(ns: &Netns, conf: &Path, vici: PathBuf, log: &Path) -> Charon {
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

    pub fn swanctl(&self, args: &[&str]) -> String {
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

    pub fn load(&self, swanctl_conf: &Path) {
        self.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &swanctl_conf.display().to_string(),
        ]);
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The customer's `strongswan.conf`: what this machine needs to run a charon at all (the plugins, with the
/// userspace data path because this kernel has no ESP; a vici socket and a log of its own), plus the download's
/// `strongswan.conf` snippet included as the customer installs it. No timing of the test's own: dead-peer
/// detection and retries are exactly what the download sets.
/// The customer's premises on `node`'s outside segment, as the VPN tests lay them out: the device's public address
/// 198.51.100.7 and its LAN host 192.168.10.10, the "Internet" (the load balancer range 203.0.113.0/24) through
/// the node.
pub async fn premises_behind(node: &appdb_testkit::pods::sandbox::Node, name: &str) -> Netns {
    let premises = Netns::new(name);
    node.attach_outside(&premises.name, "100.64.0.1/24", "100.64.0.2/24")
        .await
        .expect("the outside segment");
    premises.add_address("198.51.100.7/32");
    premises.add_address("192.168.10.10/32");
    premises.exec(&[
        "ip",
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "100.64.0.1",
        "src",
        "198.51.100.7",
    ]);
    super::netns::run(&[
        "ip",
        "-n",
        &node.netns,
        "route",
        "add",
        "198.51.100.7/32",
        "via",
        "100.64.0.2",
    ]);
    premises
}

pub fn customer_strongswan_conf(vici: &Path, download: &Path) -> String {
    format!(
        "charon {{\n    load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey kdf gcm aes sha1 sha2 hmac gmp kernel-libipsec kernel-netlink socket-default vici updown\n    filelog {{\n        stderr {{\n            default = 1\n            ike = 2\n        }}\n    }}\n    plugins {{\n        vici {{\n            socket = unix://{}\n        }}\n    }}\n}}\ninclude {}\n",
        vici.display(),
        download.display()
    )
}

/// Whether tunnel `tunnel` of the `acme-seattle` connection has its IKE SA established and its CHILD SA installed,
/// as the device sees it.
pub fn established(customer: &Charon, tunnel: u8) -> bool {
    let sas = customer.swanctl(&["--list-sas"]);
    sas.lines()
        .any(|l| l.contains(&format!("acme-seattle-tunnel{tunnel}:")) && l.contains("ESTABLISHED"))
        && sas
            .lines()
            .any(|l| l.contains(&format!("acme-seattle-tunnel{tunnel}:")) && l.contains("INSTALLED"))
}

/// The tunnel whose CHILD_SA has sent packets from the customer's side (the one carrying the traffic).
pub fn carrying_tunnel(customer: &Charon) -> Option<u8> {
    let sas = customer.swanctl(&["--list-sas"]);
    let mut current = None;
    for line in sas.lines() {
        if let Some(n) = ["1", "2"]
            .iter()
            .find(|n| line.starts_with(&format!("acme-seattle-tunnel{n}:")))
        {
            current = n.parse::<u8>().ok();
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("out ") && trimmed.contains(" packets") {
            let packets: u64 = trimmed
                .split(',')
                .find(|f| f.contains("packets"))
                .and_then(|f| f.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            if packets > 0 {
                return current;
            }
        }
    }
    None
}

pub fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) -> Duration {
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
