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

pub fn customer_strongswan_conf(vici: &Path) -> String {
    // The customer's own charon: ours for the test, with the userspace data path.
    format!(
        "charon {{\n    load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey kdf gcm aes sha1 sha2 hmac gmp kernel-libipsec kernel-netlink socket-default vici updown\n    retransmit_tries = 3\n    retransmit_timeout = 2.0\n    retransmit_base = 1.5\n    filelog {{\n        stderr {{\n            default = 1\n            ike = 2\n        }}\n    }}\n    plugins {{\n        vici {{\n            socket = unix://{}\n        }}\n    }}\n}}\n",
        vici.display()
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
