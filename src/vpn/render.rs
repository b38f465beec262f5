//! Every configuration file of a connection, rendered from the canonical [`Connection`]: the gateway's strongSwan
//! files (one gateway per tunnel) and the customer's device downloads (Generic, strongSwan, Libreswan, Cisco IOS,
//! Juniper SRX, Fortinet FortiGate, MikroTik RouterOS).

use std::fmt::Write;

use super::model::{
    Algorithms, Connection, DPD_DELAY_SECONDS, ESP_LIFETIME_SECONDS, IKE_LIFETIME_SECONDS, Initiator,
    REKEY_MARGIN_SECONDS, TCP_MSS, TUNNEL_MTU, Tunnel, parse_proposal,
};

/// Where ESP runs on the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPath {
    /// The node kernel's XFRM (default).
    Kernel,
    /// strongSwan's userspace ESP over a TUN device (`kernel-libipsec`), for nodes without kernel ESP.
    Userspace,
}

/// How a gateway is reached from the Internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Its own `LoadBalancer` Service; the load balancer's address is the outside address (default).
    LoadBalancer,
    /// The pod uses its node's network; the node's address (the pod's `status.hostIP`) is the outside address, so
    /// nodes need public addresses. The two gateways then run on different nodes.
    HostNetwork,
}

/// Stands for the outside address in a gateway's files when only the pod learns it (host networking); the pod's
/// start script replaces it with its node's address.
pub const OUTSIDE_ADDRESS_PLACEHOLDER: &str = "${APPDB_OUTSIDE_ADDRESS}";

/// The device formats of the customer's download, as (Secret key, title).
pub const DEVICE_FORMATS: &[(&str, &str)] = &[
    ("generic.txt", "Generic (every parameter, per tunnel)"),
    ("strongswan-swanctl.conf", "strongSwan (swanctl.conf)"),
    (
        "strongswan.conf",
        "strongSwan (strongswan.conf snippet: dead-peer timing, beside swanctl.conf)",
    ),
    ("libreswan.conf", "Libreswan (ipsec.conf and ipsec.secrets)"),
    ("cisco-ios.txt", "Cisco IOS / IOS XE (IKEv2, route-based)"),
    ("juniper-srx.txt", "Juniper SRX (Junos set commands)"),
    ("fortigate.txt", "Fortinet FortiGate (FortiOS CLI)"),
    ("mikrotik.rsc", "MikroTik RouterOS (v7 script)"),
];

fn algorithms(proposals: &[String]) -> Vec<Algorithms> {
    // Proposals were checked when the model was built.
    proposals.iter().filter_map(|p| parse_proposal(p).ok()).collect()
}

fn joined<T: ToString>(items: impl IntoIterator<Item = T>, sep: &str) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(sep)
}

fn customer_ts(conn: &Connection) -> String {
    joined(&conn.customer_cidrs, ",")
}

/// IKEv2 dead-peer detection is retransmission: after `DPD_DELAY_SECONDS` without traffic a DPD request goes out
/// and is retransmitted `tries` times (timeouts of 2 s growing ×1.5). charon declares the peer dead once the
/// timeout after the *last* retransmit expires, so `tries + 1` timeouts must fit in what the DPD timeout leaves after
/// the interval: with the default 30 s, 3 retransmits, 2 + 3 + 4.5 + 6.75 = 16.25 s, dead after at most 26.25 s.
pub fn retransmit_tries(dpd_timeout_seconds: u32) -> u32 {
    let budget = f64::from(dpd_timeout_seconds.saturating_sub(DPD_DELAY_SECONDS).max(2));
    let (mut total, mut wait, mut timeouts) = (0.0, RETRANSMIT_TIMEOUT, 0u32);
    while total + wait <= budget && timeouts < 11 {
        total += wait;
        wait *= RETRANSMIT_BASE;
        timeouts += 1;
    }
    timeouts.saturating_sub(1)
}

/// The first retransmit timeout and its growth, the same on both sides.
pub const RETRANSMIT_TIMEOUT: f64 = 2.0;
pub const RETRANSMIT_BASE: f64 = 1.5;

/// Seconds until a side that stopped answering is declared dead: the DPD interval plus every retransmit's timeout.
pub fn dead_peer_seconds(dpd_timeout_seconds: u32) -> f64 {
    let tries = retransmit_tries(dpd_timeout_seconds);
    f64::from(DPD_DELAY_SECONDS)
        + (0..=tries)
            .map(|k| RETRANSMIT_TIMEOUT * RETRANSMIT_BASE.powi(k as i32))
            .sum::<f64>()
}

/// The `charon { … }` retransmit settings, shared by the gateway's and the customer's `strongswan.conf`.
fn retransmit_settings(tunnels: &[&Tunnel]) -> String {
    // One charon serves both tunnels on the customer's side: the shorter timeout wins, so neither detects late.
    let timeout = tunnels
        .iter()
        .map(|t| t.dpd_timeout_seconds)
        .min()
        .unwrap_or(super::model::DEFAULT_DPD_TIMEOUT_SECONDS);
    format!(
        "\x20   retransmit_tries = {}\n\x20   retransmit_timeout = {RETRANSMIT_TIMEOUT:.1}\n\x20   retransmit_base = {RETRANSMIT_BASE:.1}\n",
        retransmit_tries(timeout)
    )
}

/// Plugins charon loads: exactly these (no `bypass-lan`, which would bypass the tunnel for local subnets).
/// `kernel-libipsec`, when used, is listed before `kernel-netlink` so that it, not the kernel, installs the SAs.
const PLUGINS_BEFORE_KERNEL: &str = "random nonce openssl pem pkcs1 pkcs8 x509 pubkey kdf gcm aes sha1 sha2 hmac gmp";
const PLUGINS_AFTER_KERNEL: &str = "kernel-netlink socket-default vici updown";

/// `strongswan.conf` of a gateway pod.
pub fn gateway_strongswan_conf(tunnel: &Tunnel, datapath: DataPath, vici_socket: &str) -> String {
    let userspace = datapath == DataPath::Userspace;
    format!(
        "# Written by appdb-operator.\n\
         charon {{\n\
         \x20   load = {PLUGINS_BEFORE_KERNEL}{libipsec_plugin} {PLUGINS_AFTER_KERNEL}\n\
         \x20   filelog {{\n\
         \x20       stderr {{\n\
         \x20           default = 1\n\
         \x20           ike = 2\n\
         \x20       }}\n\
         \x20   }}\n\
         {retransmits}\
         \x20   plugins {{\n\
         \x20       vici {{\n\
         \x20           socket = unix://{vici_socket}\n\
         \x20       }}\n\
         \x20       bypass-lan {{\n\
         \x20           load = no\n\
         \x20       }}\n\
         \x20       kernel-libipsec {{\n\
         \x20           load = {libipsec}\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        retransmits = retransmit_settings(&[tunnel]),
        libipsec = if userspace { "yes" } else { "no" },
        libipsec_plugin = if userspace { " kernel-libipsec" } else { "" },
    )
}

/// One end's view of a tunnel, for rendering its swanctl connection.
struct Ends {
    local_id: String,
    remote_addr: String,
    remote_id: String,
    local_ts: String,
    remote_ts: String,
}

/// What one side does to keep a tunnel up.
#[derive(Clone, Copy)]
struct Keepalive {
    /// Initiate when the configuration is loaded.
    start: bool,
    /// Re-initiate a tunnel that died (DPD) or was closed by the peer (DELETE), and never give up retrying.
    persistent: bool,
}

/// The customer's device keeps its tunnels up by itself: it starts them, restarts them after dead-peer detection
/// or the peer's DELETE (a gateway that stopped or rolled), and retries forever, so a gateway that comes back after
/// any outage finds the device knocking within one retransmit timeout.
const CUSTOMER_SIDE: Keepalive = Keepalive {
    start: true,
    persistent: true,
};

fn swanctl_connection(out: &mut String, name: &str, ends: &Ends, t: &Tunnel, keep: Keepalive) {
    let _ = write!(
        out,
        "    {name} {{\n\
         \x20       version = 2\n\
         \x20       local_addrs = %any\n\
         \x20       remote_addrs = {remote_addr}\n\
         \x20       proposals = {ike}\n\
         \x20       encap = yes\n\
         \x20       mobike = no\n\
         \x20       dpd_delay = {DPD_DELAY_SECONDS}s\n\
         \x20       rekey_time = {ike_rekey}s\n\
         \x20       keyingtries = {keyingtries}\n\
         \x20       local {{\n\
         \x20           auth = psk\n\
         \x20           id = {local_id}\n\
         \x20       }}\n\
         \x20       remote {{\n\
         \x20           auth = psk\n\
         \x20           id = {remote_id}\n\
         \x20       }}\n\
         \x20       children {{\n\
         \x20           {name} {{\n\
         \x20               local_ts = {local_ts}\n\
         \x20               remote_ts = {remote_ts}\n\
         \x20               esp_proposals = {esp}\n\
         \x20               rekey_time = {esp_rekey}s\n\
         \x20               life_time = {ESP_LIFETIME_SECONDS}s\n\
         \x20               dpd_action = {dpd_action}\n\
         \x20               close_action = {close_action}\n\
         \x20               start_action = {start_action}\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20   }}\n",
        ike = t.ike_proposals.join(","),
        esp = t.esp_proposals.join(","),
        ike_rekey = IKE_LIFETIME_SECONDS - REKEY_MARGIN_SECONDS,
        esp_rekey = ESP_LIFETIME_SECONDS - REKEY_MARGIN_SECONDS,
        start_action = if keep.start { "start" } else { "none" },
        dpd_action = if keep.persistent { "restart" } else { "clear" },
        close_action = if keep.persistent { "start" } else { "none" },
        // 0: retry forever.
        keyingtries = if keep.persistent { 0 } else { 1 },
        local_id = ends.local_id,
        remote_addr = ends.remote_addr,
        remote_id = ends.remote_id,
        local_ts = ends.local_ts,
        remote_ts = ends.remote_ts,
    );
}

fn swanctl_secret(out: &mut String, name: &str, id_a: &str, id_b: &str, psk: &str) {
    let _ = write!(
        out,
        "    ike-{name} {{\n\
         \x20       id-1 = {id_a}\n\
         \x20       id-2 = {id_b}\n\
         \x20       secret = \"{psk}\"\n\
         \x20   }}\n"
    );
}

fn tunnel_name(conn: &Connection, t: &Tunnel) -> String {
    format!("{}-tunnel{}", conn.name, t.number)
}

/// `swanctl.conf` of a gateway whose outside address only the pod knows: [`OUTSIDE_ADDRESS_PLACEHOLDER`] stands for
/// it (the connection's platform address for that tunnel is ignored).
pub fn gateway_swanctl_template(conn: &Connection, number: u8) -> String {
    let mut c = conn.clone();
    let t = &mut c.tunnels[usize::from(number.clamp(1, 2) - 1)];
    // An address that cannot occur otherwise in the file, replaced as a whole token.
    t.platform_address = std::net::Ipv4Addr::new(0, 0, 0, 0);
    gateway_swanctl(&c, number).replace("0.0.0.0", OUTSIDE_ADDRESS_PLACEHOLDER)
}

/// `swanctl.conf` of the gateway pod serving tunnel `number` (1 or 2).
pub fn gateway_swanctl(conn: &Connection, number: u8) -> String {
    let t = &conn.tunnels[usize::from(number.clamp(1, 2) - 1)];
    let name = tunnel_name(conn, t);
    let mut out = format!(
        "# Written by appdb-operator for {}, tunnel {}.\nconnections {{\n",
        conn.name, t.number
    );
    let ends = Ends {
        local_id: t.platform_address.to_string(),
        remote_addr: conn.customer_gateway.to_string(),
        remote_id: conn.customer_gateway.to_string(),
        local_ts: conn.platform_cidr.to_string(),
        remote_ts: customer_ts(conn),
    };
    // By default the customer's device initiates and the gateway waits (a device behind NAT cannot be reached);
    // with `startupAction: start` the gateway also starts the tunnel and keeps it up as the device does.
    let both = t.initiator == Initiator::Both;
    let keep = Keepalive {
        start: both,
        persistent: both,
    };
    swanctl_connection(&mut out, &name, &ends, t, keep);
    out.push_str("}\nsecrets {\n");
    swanctl_secret(
        &mut out,
        &name,
        &t.platform_address.to_string(),
        &conn.customer_gateway.to_string(),
        t.psk.expose(),
    );
    out.push_str("}\n");
    out
}

/// The customer's strongSwan configuration: both tunnels, initiated from premises.
pub fn customer_swanctl(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (strongSwan, swanctl.conf).\n# Configure both tunnels: maintenance never takes both down at once.\nconnections {{\n",
        conn.name
    );
    for t in &conn.tunnels {
        let ends = Ends {
            local_id: conn.customer_gateway.to_string(),
            remote_addr: t.platform_address.to_string(),
            remote_id: t.platform_address.to_string(),
            local_ts: customer_ts(conn),
            remote_ts: conn.platform_cidr.to_string(),
        };
        swanctl_connection(&mut out, &tunnel_name(conn, t), &ends, t, CUSTOMER_SIDE);
    }
    out.push_str("}\nsecrets {\n");
    for t in &conn.tunnels {
        swanctl_secret(
            &mut out,
            &tunnel_name(conn, t),
            &conn.customer_gateway.to_string(),
            &t.platform_address.to_string(),
            t.psk.expose(),
        );
    }
    out.push_str("}\n");
    out
}

/// The customer's `strongswan.conf` snippet (`/etc/strongswan.d/appdb-vpn.conf`): the retransmit timing that makes
/// dead-peer detection take the DPD timeout the gateway uses, rather than strongSwan's default of 165 s. It applies
/// to every connection of that charon; the key names are strongSwan's own.
pub fn customer_strongswan_conf(conn: &Connection) -> String {
    let tunnels: Vec<&Tunnel> = conn.tunnels.iter().collect();
    let timeout = tunnels.iter().map(|t| t.dpd_timeout_seconds).min().unwrap_or_default();
    format!(
        "# appdb-operator VPN configuration for {} (strongSwan, strongswan.conf).\n\
         # Install as /etc/strongswan.d/appdb-vpn.conf beside the swanctl.conf, then restart charon.\n\
         # A silent peer is declared dead after at most {:.0} s (DPD timeout {timeout} s), and the tunnel restarted.\n\
         charon {{\n{}}}\n",
        conn.name,
        dead_peer_seconds(timeout),
        retransmit_settings(&tunnels)
    )
}

/// The Generic file: every parameter, per tunnel, as `key: value` lines.
pub fn generic(conn: &Connection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# appdb-operator VPN configuration: Generic");
    let _ = writeln!(out, "Connection: {}", conn.name);
    if let Some(d) = &conn.description {
        let _ = writeln!(out, "Description: {}", d.replace(['\n', '\r'], " "));
    }
    let _ = writeln!(out, "Platform network: {}", conn.platform_cidr);
    let _ = writeln!(out, "Pinghost: {}", conn.pinghost);
    let _ = writeln!(out, "Customer networks: {}", joined(&conn.customer_cidrs, ", "));
    let _ = writeln!(out, "Customer gateway: {}", conn.customer_gateway);
    for t in &conn.tunnels {
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let _ = writeln!(out, "\n[Tunnel {}]", t.number);
        let _ = writeln!(out, "Platform outside address: {}", t.platform_address);
        let _ = writeln!(out, "Customer outside address: {}", conn.customer_gateway);
        let _ = writeln!(out, "IKE version: 2");
        let _ = writeln!(out, "Authentication: pre-shared key");
        let _ = writeln!(out, "Pre-shared key: {}", t.psk.expose());
        let _ = writeln!(out, "Local identity: {}", conn.customer_gateway);
        let _ = writeln!(out, "Remote identity: {}", t.platform_address);
        let _ = writeln!(out, "IKE proposals: {}", t.ike_proposals.join(", "));
        let _ = writeln!(
            out,
            "IKE encryption: {}",
            joined(ike.iter().map(|a| a.encryption.clone()), ", ")
        );
        let _ = writeln!(
            out,
            "IKE integrity: {}",
            joined(
                ike.iter().map(|a| a.integrity.clone().unwrap_or_else(|| "none".into())),
                ", "
            )
        );
        let _ = writeln!(
            out,
            "IKE DH groups: {}",
            joined(ike.iter().filter_map(|a| a.dh_group), ", ")
        );
        let _ = writeln!(out, "IKE lifetime seconds: {IKE_LIFETIME_SECONDS}");
        let _ = writeln!(
            out,
            "IPsec protocol: ESP, tunnel mode, UDP-encapsulated (NAT-T, port 4500)"
        );
        let _ = writeln!(out, "IPsec proposals: {}", t.esp_proposals.join(", "));
        let _ = writeln!(
            out,
            "IPsec encryption: {}",
            joined(esp.iter().map(|a| a.encryption.clone()), ", ")
        );
        let _ = writeln!(
            out,
            "IPsec integrity: {}",
            joined(
                esp.iter().map(|a| a.integrity.clone().unwrap_or_else(|| "none".into())),
                ", "
            )
        );
        let _ = writeln!(
            out,
            "IPsec PFS groups: {}",
            joined(esp.iter().filter_map(|a| a.dh_group), ", ")
        );
        let _ = writeln!(out, "IPsec lifetime seconds: {ESP_LIFETIME_SECONDS}");
        let _ = writeln!(out, "Rekey margin seconds: {REKEY_MARGIN_SECONDS}");
        let _ = writeln!(out, "DPD interval seconds: {DPD_DELAY_SECONDS}");
        let _ = writeln!(out, "DPD timeout seconds: {}", t.dpd_timeout_seconds);
        let _ = writeln!(out, "DPD action: restart");
        let _ = writeln!(
            out,
            "DPD retransmits: {} (first after {RETRANSMIT_TIMEOUT:.0} s, each wait x{RETRANSMIT_BASE}; peer dead after {:.2} s)",
            retransmit_tries(t.dpd_timeout_seconds),
            dead_peer_seconds(t.dpd_timeout_seconds)
        );
        let _ = writeln!(out, "When the platform closes the tunnel: initiate it again");
        let _ = writeln!(out, "Retries: unlimited (the tunnel is kept up)");
        let _ = writeln!(
            out,
            "Initiator: {}",
            match t.initiator {
                Initiator::Customer => "customer",
                Initiator::Both => "customer and platform",
            }
        );
        let _ = writeln!(out, "Tunnel MTU: {TUNNEL_MTU}");
        let _ = writeln!(out, "TCP MSS: {TCP_MSS}");
        let _ = writeln!(out, "Route: {} via tunnel {}", conn.platform_cidr, t.number);
    }
    out
}

fn libreswan_alg(a: &Algorithms, ike: bool) -> String {
    let enc = match a.encryption.as_str() {
        "AES-128-GCM-16" => "aes_gcm128",
        "AES-256-GCM-16" => "aes_gcm256",
        "AES-128-CBC" => "aes128",
        _ => "aes256",
    };
    let integ = a.integrity.as_deref().map(|i| match i {
        "SHA1" => "sha1",
        "SHA2-384" => "sha2_384",
        "SHA2-512" => "sha2_512",
        _ => "sha2_256",
    });
    let mut s = enc.to_owned();
    if let Some(i) = integ {
        s.push('-');
        s.push_str(i);
    }
    if ike && let Some(g) = a.dh_group {
        let _ = write!(s, ";dh{g}");
    }
    s
}

/// Libreswan: one `conn` per tunnel and the matching secrets lines.
pub fn libreswan(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (Libreswan).\n# /etc/ipsec.d/appdb.conf\n",
        conn.name
    );
    for t in &conn.tunnels {
        let ike = algorithms(&t.ike_proposals)
            .iter()
            .map(|a| libreswan_alg(a, true))
            .collect::<Vec<_>>()
            .join(",");
        let esp = algorithms(&t.esp_proposals)
            .iter()
            .map(|a| libreswan_alg(a, false))
            .collect::<Vec<_>>()
            .join(",");
        let _ = write!(
            out,
            "conn {name}\n    ikev2=insist\n    authby=secret\n    left=%defaultroute\n    leftid={cgw}\n    leftsubnets={{{local}}}\n    right={remote}\n    rightid={remote}\n    rightsubnet={platform}\n    ike={ike}\n    esp={esp}\n    pfs=yes\n    ikelifetime={IKE_LIFETIME_SECONDS}s\n    salifetime={ESP_LIFETIME_SECONDS}s\n    encapsulation=yes\n    dpddelay={DPD_DELAY_SECONDS}\n    dpdtimeout={dpd}\n    dpdaction=restart\n    retransmit-timeout={retransmit}s\n    keyingtries=%forever\n    auto=start\n\n",
            name = tunnel_name(conn, t),
            cgw = conn.customer_gateway,
            local = joined(&conn.customer_cidrs, " "),
            remote = t.platform_address,
            platform = conn.platform_cidr,
            dpd = t.dpd_timeout_seconds,
            // IKEv2 liveness in Libreswan fails when an exchange's retransmits exceed this.
            retransmit = t.dpd_timeout_seconds.saturating_sub(DPD_DELAY_SECONDS),
        );
    }
    out.push_str("# /etc/ipsec.d/appdb.secrets\n");
    for t in &conn.tunnels {
        let _ = writeln!(
            out,
            "{} {} : PSK \"{}\"",
            conn.customer_gateway,
            t.platform_address,
            t.psk.expose()
        );
    }
    out
}

fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// A device's DPD settings derived from the tunnel's DPD timeout: probes every [`DPD_DELAY_SECONDS`] when idle, and
/// the peer is dead after `retries` unanswered retries `retry_seconds` apart, so that
/// `DPD_DELAY_SECONDS + retries × retry_seconds` is the DPD timeout (never less than one retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceDpd {
    pub retries: u32,
    pub retry_seconds: u32,
}

/// DPD for devices whose retries come every `retry_seconds` (Juniper, FortiGate, MikroTik: the DPD interval).
pub fn device_dpd_every(timeout: u32, retry_seconds: u32) -> DeviceDpd {
    DeviceDpd {
        retries: (timeout.saturating_sub(DPD_DELAY_SECONDS) / retry_seconds).clamp(1, 10),
        retry_seconds,
    }
}

/// DPD for devices with a fixed number of retries and a settable retry interval (Cisco IOS: 5 retries).
pub fn device_dpd_spread(timeout: u32, retries: u32) -> DeviceDpd {
    DeviceDpd {
        retries,
        retry_seconds: (timeout.saturating_sub(DPD_DELAY_SECONDS) / retries).max(2),
    }
}

fn aes_bits(a: &Algorithms) -> u32 {
    if a.encryption.contains("128") { 128 } else { 256 }
}

fn is_aead(a: &Algorithms) -> bool {
    a.encryption.contains("GCM")
}

/// The ESP proposals a device with a single PFS group per tunnel can offer: those with the first proposal's group.
fn esp_with_first_group(esp: &[Algorithms]) -> Vec<Algorithms> {
    let group = esp.first().and_then(|a| a.dh_group);
    esp.iter().filter(|a| a.dh_group == group).cloned().collect()
}

/// Cisco IOS / IOS XE: IKEv2 with a static virtual tunnel interface per tunnel. One IKEv2 proposal per gateway
/// proposal (RFC 7296 §3.3 forbids AEAD and non-AEAD transforms in one proposal), one transform set per ESP
/// proposal sharing the profile's single PFS group. A VTI proposes 0.0.0.0/0 selectors; the gateway narrows them
/// to the customer's networks and the platform range (RFC 7296 §2.9), and the route below sends only the platform
/// range into the tunnel.
pub fn cisco_ios(conn: &Connection) -> String {
    let mut out = format!(
        "! appdb-operator VPN configuration for {} (Cisco IOS / IOS XE, IKEv2).\n! Replace <outside-interface> with your Internet-facing interface.\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-{}-t{}", conn.name, t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = esp_with_first_group(&algorithms(&t.esp_proposals));
        let hash = |i: &str| i.to_lowercase().replace("sha2-", "sha");
        let mut proposals = Vec::new();
        for (i, a) in ike.iter().enumerate() {
            let name = format!("{n}-{}", i + 1);
            let _ = writeln!(out, "crypto ikev2 proposal {name}");
            if is_aead(a) {
                let _ = writeln!(out, " encryption aes-gcm-{}", aes_bits(a));
                let _ = writeln!(out, " prf {}", hash(a.integrity.as_deref().unwrap_or("SHA2-256")));
            } else {
                let _ = writeln!(out, " encryption aes-cbc-{}", aes_bits(a));
                let _ = writeln!(out, " integrity {}", hash(a.integrity.as_deref().unwrap_or("SHA2-256")));
            }
            if let Some(g) = a.dh_group {
                let _ = writeln!(out, " group {g}");
            }
            proposals.push(name);
        }
        let _ = writeln!(out, "crypto ikev2 policy {n}");
        for p in &proposals {
            let _ = writeln!(out, " proposal {p}");
        }
        let _ = writeln!(
            out,
            "crypto ikev2 keyring {n}\n peer {n}\n  address {}\n  pre-shared-key {}",
            t.platform_address,
            t.psk.expose()
        );
        let dpd = device_dpd_spread(t.dpd_timeout_seconds, 5);
        let _ = writeln!(
            out,
            "crypto ikev2 profile {n}\n match identity remote address {} 255.255.255.255\n identity local address {}\n authentication remote pre-share\n authentication local pre-share\n keyring local {n}\n lifetime {IKE_LIFETIME_SECONDS}\n dpd {DPD_DELAY_SECONDS} {} periodic",
            t.platform_address, conn.customer_gateway, dpd.retry_seconds
        );
        let mut sets = Vec::new();
        for (i, a) in esp.iter().enumerate() {
            let name = format!("{n}-{}", i + 1);
            let transform = if is_aead(a) {
                format!("esp-gcm {}", aes_bits(a))
            } else {
                // IOS names HMAC-SHA1 `esp-sha-hmac`.
                let hmac = match a.integrity.as_deref() {
                    Some("SHA1") => "sha".to_owned(),
                    other => hash(other.unwrap_or("SHA2-256")),
                };
                format!("esp-aes {} esp-{hmac}-hmac", aes_bits(a))
            };
            let _ = writeln!(out, "crypto ipsec transform-set {name} {transform}\n mode tunnel");
            sets.push(name);
        }
        let _ = writeln!(
            out,
            "crypto ipsec profile {n}\n set transform-set {}\n set ikev2-profile {n}\n set security-association lifetime seconds {ESP_LIFETIME_SECONDS}",
            sets.join(" ")
        );
        if let Some(g) = esp.first().and_then(|a| a.dh_group) {
            let _ = writeln!(out, " set pfs group{g}");
        }
        let _ = writeln!(
            out,
            "interface Tunnel{}\n ip unnumbered <outside-interface>\n ip mtu {TUNNEL_MTU}\n ip tcp adjust-mss {TCP_MSS}\n tunnel source <outside-interface>\n tunnel mode ipsec ipv4\n tunnel destination {}\n tunnel protection ipsec profile {n}",
            t.number, t.platform_address
        );
        let _ = writeln!(
            out,
            "ip route {} {} Tunnel{} {}\n!",
            conn.platform_cidr.network(),
            netmask(conn.platform_cidr.prefix_len()),
            t.number,
            t.number * 10
        );
    }
    out
}

/// Junos keywords for an encryption algorithm.
fn junos_encryption(a: &Algorithms) -> String {
    format!("aes-{}-{}", aes_bits(a), if is_aead(a) { "gcm" } else { "cbc" })
}

/// Junos IKE `authentication-algorithm` (a hash) and IPsec `authentication-algorithm` (an HMAC) keywords.
fn junos_ike_hash(integrity: &str) -> &'static str {
    match integrity {
        "SHA1" => "sha1",
        "SHA2-384" => "sha-384",
        "SHA2-512" => "sha-512",
        _ => "sha-256",
    }
}
fn junos_esp_hmac(integrity: &str) -> &'static str {
    match integrity {
        "SHA1" => "hmac-sha1-96",
        "SHA2-384" => "hmac-sha-384",
        "SHA2-512" => "hmac-sha-512",
        _ => "hmac-sha-256-128",
    }
}

/// Juniper SRX: Junos `set` commands, route-based with an st0 unit per tunnel, one IKE and IPsec proposal per
/// gateway proposal, explicit traffic selectors (one per customer network, so the SRX proposes exactly what the
/// gateway accepts), and the zone and policies that let premises traffic into st0 and back.
pub fn juniper_srx(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (Juniper SRX).\n# Replace <external-interface> with your Internet-facing interface and <trust-zone> with the zone of your\n# premises networks.\n",
        conn.name
    );
    let zone = "appdb-vpn";
    for t in &conn.tunnels {
        let n = format!("appdb-{}-t{}", conn.name, t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let mut ike_names = Vec::new();
        for (i, a) in ike.iter().enumerate() {
            let p = format!("{n}-{}", i + 1);
            let _ = writeln!(
                out,
                "set security ike proposal {p} authentication-method pre-shared-keys"
            );
            let _ = writeln!(
                out,
                "set security ike proposal {p} dh-group group{}",
                a.dh_group.unwrap_or(19)
            );
            let _ = writeln!(
                out,
                "set security ike proposal {p} encryption-algorithm {}",
                junos_encryption(a)
            );
            // With AES-GCM the hash is IKE's PRF; Junos names both with authentication-algorithm.
            let _ = writeln!(
                out,
                "set security ike proposal {p} authentication-algorithm {}",
                junos_ike_hash(a.integrity.as_deref().unwrap_or("SHA2-256"))
            );
            let _ = writeln!(
                out,
                "set security ike proposal {p} lifetime-seconds {IKE_LIFETIME_SECONDS}"
            );
            ike_names.push(p);
        }
        let _ = writeln!(out, "set security ike policy {n} proposals [ {} ]", ike_names.join(" "));
        let _ = writeln!(
            out,
            "set security ike policy {n} pre-shared-key ascii-text \"{}\"",
            t.psk.expose()
        );
        let _ = writeln!(out, "set security ike gateway {n} ike-policy {n}");
        let _ = writeln!(out, "set security ike gateway {n} address {}", t.platform_address);
        let dpd = device_dpd_every(t.dpd_timeout_seconds, DPD_DELAY_SECONDS);
        let _ = writeln!(
            out,
            "set security ike gateway {n} dead-peer-detection probe-idle-tunnel interval {} threshold {}",
            dpd.retry_seconds, dpd.retries
        );
        let _ = writeln!(
            out,
            "set security ike gateway {n} local-identity inet {}",
            conn.customer_gateway
        );
        let _ = writeln!(
            out,
            "set security ike gateway {n} remote-identity inet {}",
            t.platform_address
        );
        let _ = writeln!(
            out,
            "set security ike gateway {n} external-interface <external-interface>"
        );
        let _ = writeln!(out, "set security ike gateway {n} version v2-only");
        // Junos has one PFS group per IPsec policy: the proposals sharing the first one's group.
        let mut esp_names = Vec::new();
        for (i, a) in esp_with_first_group(&esp).iter().enumerate() {
            let p = format!("{n}-{}", i + 1);
            let _ = writeln!(out, "set security ipsec proposal {p} protocol esp");
            let _ = writeln!(
                out,
                "set security ipsec proposal {p} encryption-algorithm {}",
                junos_encryption(a)
            );
            if !is_aead(a) {
                let _ = writeln!(
                    out,
                    "set security ipsec proposal {p} authentication-algorithm {}",
                    junos_esp_hmac(a.integrity.as_deref().unwrap_or("SHA2-256"))
                );
            }
            let _ = writeln!(
                out,
                "set security ipsec proposal {p} lifetime-seconds {ESP_LIFETIME_SECONDS}"
            );
            esp_names.push(p);
        }
        if let Some(g) = esp.first().and_then(|a| a.dh_group) {
            let _ = writeln!(
                out,
                "set security ipsec policy {n} perfect-forward-secrecy keys group{g}"
            );
        }
        let _ = writeln!(
            out,
            "set security ipsec policy {n} proposals [ {} ]",
            esp_names.join(" ")
        );
        let unit = format!("st0.{}", t.number);
        let _ = writeln!(out, "set interfaces st0 unit {} family inet mtu {TUNNEL_MTU}", t.number);
        let _ = writeln!(out, "set security zones security-zone {zone} interfaces {unit}");
        let _ = writeln!(out, "set security ipsec vpn {n} bind-interface {unit}");
        let _ = writeln!(out, "set security ipsec vpn {n} ike gateway {n}");
        let _ = writeln!(out, "set security ipsec vpn {n} ike ipsec-policy {n}");
        for (i, c) in conn.customer_cidrs.iter().enumerate() {
            let _ = writeln!(
                out,
                "set security ipsec vpn {n} traffic-selector ts{} local-ip {c} remote-ip {}",
                i + 1,
                conn.platform_cidr
            );
        }
        let _ = writeln!(out, "set security ipsec vpn {n} establish-tunnels immediately");
        let _ = writeln!(
            out,
            "set routing-options static route {} next-hop {unit} preference {}",
            conn.platform_cidr,
            t.number * 5
        );
    }
    let _ = writeln!(out, "set security flow tcp-mss ipsec-vpn mss {TCP_MSS}");
    let _ = writeln!(
        out,
        "set security zones security-zone {zone} host-inbound-traffic system-services ping"
    );
    let _ = writeln!(
        out,
        "set security address-book global address appdb-platform {}",
        conn.platform_cidr
    );
    for (i, c) in conn.customer_cidrs.iter().enumerate() {
        let _ = writeln!(
            out,
            "set security address-book global address appdb-premises-{} {c}",
            i + 1
        );
    }
    let premises: Vec<String> = (1..=conn.customer_cidrs.len())
        .map(|i| format!("appdb-premises-{i}"))
        .collect();
    let premises = format!("[ {} ]", premises.join(" "));
    for (from, to, source, destination) in [
        ("<trust-zone>", zone, premises.as_str(), "appdb-platform"),
        (zone, "<trust-zone>", "appdb-platform", premises.as_str()),
    ] {
        let rule = format!("set security policies from-zone {from} to-zone {to} policy appdb-vpn");
        let _ = writeln!(out, "{rule} match source-address {source}");
        let _ = writeln!(out, "{rule} match destination-address {destination}");
        let _ = writeln!(out, "{rule} match application any");
        let _ = writeln!(out, "{rule} then permit");
    }
    out
}

/// FortiOS keywords: phase 1 names the PRF after AES-GCM (`aes256gcm-prfsha256`), phase 2 AES-GCM takes no
/// integrity algorithm (`aes256gcm`), CBC names the HMAC in both (`aes256-sha256`).
fn fortios_proposal(a: &Algorithms, phase1: bool) -> String {
    let hash = match a.integrity.as_deref() {
        Some("SHA1") => "sha1",
        Some("SHA2-384") => "sha384",
        Some("SHA2-512") => "sha512",
        _ => "sha256",
    };
    match (is_aead(a), phase1) {
        (true, true) => format!("aes{}gcm-prf{hash}", aes_bits(a)),
        (true, false) => format!("aes{}gcm", aes_bits(a)),
        (false, _) => format!("aes{}-{hash}", aes_bits(a)),
    }
}

fn dh_groups(list: &[Algorithms]) -> String {
    let mut groups: Vec<u32> = Vec::new();
    for g in list.iter().filter_map(|a| a.dh_group) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    joined(groups, " ")
}

/// Fortinet FortiGate: route-based phase1/phase2 interfaces, a phase 2 selector for every customer network.
pub fn fortigate(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (FortiOS CLI).\n# Replace \"wan1\" with your Internet-facing interface.\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-t{}", t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let dpd = device_dpd_every(t.dpd_timeout_seconds, DPD_DELAY_SECONDS);
        let _ = writeln!(
            out,
            "config vpn ipsec phase1-interface\n    edit \"{n}\"\n        set interface \"wan1\"\n        set ike-version 2\n        set peertype any\n        set net-device disable"
        );
        let _ = writeln!(
            out,
            "        set proposal {}\n        set dhgrp {}\n        set remote-gw {}\n        set localid \"{}\"\n        set psksecret \"{}\"",
            joined(ike.iter().map(|a| fortios_proposal(a, true)), " "),
            dh_groups(&ike),
            t.platform_address,
            conn.customer_gateway,
            t.psk.expose()
        );
        let _ = writeln!(
            out,
            "        set keylife {IKE_LIFETIME_SECONDS}\n        set dpd on-idle\n        set dpd-retryinterval {}\n        set dpd-retrycount {}\n        set auto-negotiate enable\n        set nattraversal forced\n    next\nend",
            dpd.retry_seconds, dpd.retries
        );
        let _ = writeln!(out, "config vpn ipsec phase2-interface");
        for (i, c) in conn.customer_cidrs.iter().enumerate() {
            let _ = writeln!(
                out,
                "    edit \"{n}-{}\"\n        set phase1name \"{n}\"\n        set proposal {}\n        set pfs enable\n        set dhgrp {}\n        set keylifeseconds {ESP_LIFETIME_SECONDS}\n        set auto-negotiate enable\n        set src-subnet {} {}\n        set dst-subnet {} {}\n    next",
                i + 1,
                joined(esp.iter().map(|a| fortios_proposal(a, false)), " "),
                dh_groups(&esp),
                c.network(),
                netmask(c.prefix_len()),
                conn.platform_cidr.network(),
                netmask(conn.platform_cidr.prefix_len())
            );
        }
        let _ = writeln!(out, "end");
        let _ = writeln!(
            out,
            "config system interface\n    edit \"{n}\"\n        set mtu-override enable\n        set mtu {TUNNEL_MTU}\n        set tcp-mss {TCP_MSS}\n    next\nend"
        );
        let _ = writeln!(
            out,
            "config router static\n    edit 0\n        set dst {} {}\n        set device \"{n}\"\n        set priority {}\n    next\nend",
            conn.platform_cidr.network(),
            netmask(conn.platform_cidr.prefix_len()),
            t.number * 10
        );
    }
    out
}

/// RouterOS keywords: a profile names CBC `aes-256`, a proposal `aes-256-cbc`; both name GCM `aes-256-gcm`.
fn routeros_encryption(a: &Algorithms, in_proposal: bool) -> String {
    let mode = match (is_aead(a), in_proposal) {
        (true, _) => "-gcm",
        (false, true) => "-cbc",
        (false, false) => "",
    };
    format!("aes-{}{mode}", aes_bits(a))
}
fn routeros_hash(integrity: Option<&str>) -> &'static str {
    match integrity {
        Some("SHA1") => "sha1",
        Some("SHA2-384") => "sha384",
        Some("SHA2-512") => "sha512",
        _ => "sha256",
    }
}
fn routeros_group(group: Option<u32>) -> &'static str {
    match group {
        Some(2) => "modp1024",
        Some(5) => "modp1536",
        Some(14) => "modp2048",
        Some(15) => "modp3072",
        Some(16) => "modp4096",
        Some(20) => "ecp384",
        Some(21) => "ecp521",
        _ => "ecp256",
    }
}

/// MikroTik RouterOS v7 script. A profile offers every combination of its algorithms, so it names exactly one of
/// the gateway's IKE proposals: the first in CBC mode with an HMAC (every RouterOS v7 release has those), else the
/// first. The IPsec proposal likewise names the first ESP proposal.
pub fn mikrotik(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (MikroTik RouterOS v7).\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-t{}", t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let Some(profile) = ike.iter().find(|a| !is_aead(a)).or(ike.first()) else {
            continue;
        };
        let dpd = device_dpd_every(t.dpd_timeout_seconds, DPD_DELAY_SECONDS);
        let _ = writeln!(
            out,
            "/ip ipsec profile add name={n} enc-algorithm={} hash-algorithm={} dh-group={} lifetime={}h nat-traversal=yes dpd-interval={}s dpd-maximum-failures={}",
            routeros_encryption(profile, false),
            routeros_hash(profile.integrity.as_deref()),
            routeros_group(profile.dh_group),
            IKE_LIFETIME_SECONDS / 3600,
            dpd.retry_seconds,
            dpd.retries
        );
        let _ = writeln!(
            out,
            "/ip ipsec peer add name={n} address={}/32 profile={n} exchange-mode=ike2",
            t.platform_address
        );
        let _ = writeln!(
            out,
            "/ip ipsec identity add peer={n} auth-method=pre-shared-key secret=\"{}\" my-id=address:{} remote-id=address:{}",
            t.psk.expose(),
            conn.customer_gateway,
            t.platform_address
        );
        let Some(first_esp) = esp.first() else {
            continue;
        };
        let auth = if is_aead(first_esp) {
            "null"
        } else {
            routeros_hash(first_esp.integrity.as_deref())
        };
        let _ = writeln!(
            out,
            "/ip ipsec proposal add name={n} enc-algorithms={} auth-algorithms={auth} pfs-group={} lifetime={}h",
            routeros_encryption(first_esp, true),
            first_esp.dh_group.map_or("none", |g| routeros_group(Some(g))),
            ESP_LIFETIME_SECONDS / 3600
        );
        for c in &conn.customer_cidrs {
            let _ = writeln!(
                out,
                "/ip ipsec policy add peer={n} src-address={c} dst-address={} tunnel=yes proposal={n}",
                conn.platform_cidr
            );
        }
    }
    let _ = writeln!(
        out,
        "/ip firewall mangle add chain=forward protocol=tcp tcp-flags=syn dst-address={} action=change-mss new-mss={TCP_MSS}",
        conn.platform_cidr
    );
    out
}

/// The customer's download for one device format key of [`DEVICE_FORMATS`].
pub fn device(conn: &Connection, key: &str) -> Option<String> {
    Some(match key {
        "generic.txt" => generic(conn),
        "strongswan-swanctl.conf" => customer_swanctl(conn),
        "strongswan.conf" => customer_strongswan_conf(conn),
        "libreswan.conf" => libreswan(conn),
        "cisco-ios.txt" => cisco_ios(conn),
        "juniper-srx.txt" => juniper_srx(conn),
        "fortigate.txt" => fortigate(conn),
        "mikrotik.rsc" => mikrotik(conn),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::Ipv4Addr};

    use super::*;
    use crate::vpn::model::{Psk, Tunnel};

    fn connection() -> Connection {
        let t = |n: u8, addr: Ipv4Addr, psk: &str| Tunnel::new(n, addr, Psk::new(psk).unwrap(), None).unwrap();
        Connection {
            name: "acme-seattle".into(),
            description: Some("Seattle\noffice".into()),
            platform_cidr: "10.20.30.64/26".parse().unwrap(),
            pinghost: Ipv4Addr::new(10, 20, 30, 65),
            customer_cidrs: vec!["192.168.10.0/24".parse().unwrap(), "172.20.0.0/16".parse().unwrap()],
            customer_gateway: Ipv4Addr::new(93, 184, 216, 34),
            tunnels: [
                t(1, Ipv4Addr::new(203, 0, 113, 11), "Tunnel1Key_abcdefghijklmnopqrstu"),
                t(2, Ipv4Addr::new(203, 0, 113, 12), "Tunnel2Key.abcdefghijklmnopqrstu"),
            ],
        }
    }

    /// Parses swanctl.conf's nested `name { key = value }` syntax into dotted keys.
    fn parse_swanctl(text: &str) -> BTreeMap<String, String> {
        let mut path: Vec<String> = Vec::new();
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if let Some(section) = line.strip_suffix('{') {
                path.push(section.trim().to_owned());
            } else if line == "}" {
                assert!(path.pop().is_some(), "unbalanced braces");
            } else {
                let (k, v) = line
                    .split_once(" = ")
                    .unwrap_or_else(|| panic!("not key = value: {line}"));
                out.insert(format!("{}.{k}", path.join(".")), v.trim_matches('"').to_owned());
            }
        }
        assert!(path.is_empty(), "unbalanced braces");
        out
    }

    /// Parses the Generic file into (section, key) → value.
    fn parse_generic(text: &str) -> BTreeMap<(String, String), String> {
        let mut section = String::new();
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_owned();
            } else if let Some((k, v)) = line.split_once(": ") {
                out.insert((section.clone(), k.to_owned()), v.to_owned());
            }
        }
        out
    }

    #[test]
    fn generic_lists_exactly_what_each_gateway_uses() {
        let conn = connection();
        let generic = parse_generic(&generic(&conn));
        for n in [1u8, 2] {
            let gw = parse_swanctl(&gateway_swanctl(&conn, n));
            let c = format!("connections.acme-seattle-tunnel{n}");
            let s = format!("Tunnel {n}");
            let g = |k: &str| {
                generic
                    .get(&(s.clone(), k.to_owned()))
                    .cloned()
                    .unwrap_or_else(|| panic!("Generic lacks {k}"))
            };
            assert_eq!(g("Platform outside address"), gw[&format!("{c}.local.id")]);
            assert_eq!(g("Customer outside address"), gw[&format!("{c}.remote_addrs")]);
            assert_eq!(
                g("Pre-shared key"),
                gw[&format!("secrets.ike-acme-seattle-tunnel{n}.secret")]
            );
            assert_eq!(g("IKE proposals").replace(", ", ","), gw[&format!("{c}.proposals")]);
            assert_eq!(
                g("IPsec proposals").replace(", ", ","),
                gw[&format!("{c}.children.acme-seattle-tunnel{n}.esp_proposals")]
            );
            assert_eq!(format!("{}s", g("DPD interval seconds")), gw[&format!("{c}.dpd_delay")]);
            assert_eq!(
                format!("{}s", g("IPsec lifetime seconds")),
                gw[&format!("{c}.children.acme-seattle-tunnel{n}.life_time")]
            );
            let ike_rekey: u32 =
                g("IKE lifetime seconds").parse::<u32>().unwrap() - g("Rekey margin seconds").parse::<u32>().unwrap();
            assert_eq!(format!("{ike_rekey}s"), gw[&format!("{c}.rekey_time")]);
        }
        let top = |k: &str| generic[&(String::new(), k.to_owned())].clone();
        let gw = parse_swanctl(&gateway_swanctl(&conn, 1));
        assert_eq!(
            top("Platform network"),
            gw["connections.acme-seattle-tunnel1.children.acme-seattle-tunnel1.local_ts"]
        );
        assert_eq!(
            top("Customer networks").replace(", ", ","),
            gw["connections.acme-seattle-tunnel1.children.acme-seattle-tunnel1.remote_ts"]
        );
        assert_eq!(top("Pinghost"), "10.20.30.65");
        assert_eq!(
            top("Description"),
            "Seattle office",
            "line breaks in descriptions cannot break the file"
        );
    }

    #[test]
    fn customer_swanctl_mirrors_both_gateways() {
        let conn = connection();
        let customer = parse_swanctl(&customer_swanctl(&conn));
        for n in [1u8, 2] {
            let gw = parse_swanctl(&gateway_swanctl(&conn, n));
            let c = format!("connections.acme-seattle-tunnel{n}");
            let child = format!("{c}.children.acme-seattle-tunnel{n}");
            assert_eq!(customer[&format!("{c}.remote_addrs")], gw[&format!("{c}.local.id")]);
            assert_eq!(customer[&format!("{c}.local.id")], gw[&format!("{c}.remote.id")]);
            assert_eq!(
                customer[&format!("{child}.local_ts")],
                gw[&format!("{child}.remote_ts")]
            );
            assert_eq!(
                customer[&format!("{child}.remote_ts")],
                gw[&format!("{child}.local_ts")]
            );
            assert_eq!(customer[&format!("{c}.proposals")], gw[&format!("{c}.proposals")]);
            assert_eq!(
                customer[&format!("secrets.ike-acme-seattle-tunnel{n}.secret")],
                gw[&format!("secrets.ike-acme-seattle-tunnel{n}.secret")]
            );
            assert_eq!(customer[&format!("{child}.start_action")], "start", "premises initiate");
            assert_eq!(
                gw[&format!("{child}.start_action")],
                "none",
                "the platform waits by default"
            );
            assert_eq!(gw[&format!("{c}.encap")], "yes", "Services carry UDP only");
        }
    }

    #[test]
    fn every_device_format_names_both_tunnels_and_keys() {
        let conn = connection();
        assert!(DEVICE_FORMATS.len() >= 7);
        for (key, _) in DEVICE_FORMATS.iter().filter(|(k, _)| *k != "strongswan.conf") {
            let text = device(&conn, key).unwrap_or_else(|| panic!("{key} not rendered"));
            for t in &conn.tunnels {
                assert!(
                    text.contains(&t.platform_address.to_string()),
                    "{key} lacks tunnel {}'s address",
                    t.number
                );
                assert!(text.contains(t.psk.expose()), "{key} lacks tunnel {}'s key", t.number);
            }
            assert!(text.contains("10.20.30.64"), "{key} lacks the platform network");
        }
        assert!(device(&conn, "unknown").is_none());
    }

    #[test]
    fn gateway_strongswan_conf_selects_the_data_path() {
        let t = &connection().tunnels[0];
        let kernel = gateway_strongswan_conf(t, DataPath::Kernel, "/run/charon.vici");
        assert!(kernel.contains("kernel-libipsec {\n            load = no"));
        let user = gateway_strongswan_conf(t, DataPath::Userspace, "/run/charon.vici");
        assert!(
            user.contains("kernel-libipsec {\n            load = yes")
                && user.contains("bypass-lan {\n            load = no")
        );
        assert!(user.contains("socket = unix:///run/charon.vici"));
        assert!(user.contains(" kernel-libipsec kernel-netlink") && !kernel.contains("kernel-libipsec kernel-netlink"));
    }

    #[test]
    fn template_equals_the_rendering_once_the_pod_fills_in_its_address() {
        let conn = connection();
        for n in [1u8, 2] {
            let template = gateway_swanctl_template(&conn, n);
            assert!(template.contains(OUTSIDE_ADDRESS_PLACEHOLDER));
            let address = conn.tunnels[usize::from(n) - 1].platform_address.to_string();
            assert_eq!(
                template.replace(OUTSIDE_ADDRESS_PLACEHOLDER, &address),
                gateway_swanctl(&conn, n)
            );
        }
    }

    #[test]
    fn retransmits_span_the_dpd_timeout() {
        // 10 s interval, then timeouts of 2, 3, 4.5 and 6.75 s: the 4th timeout follows the 3rd retransmit.
        assert_eq!(retransmit_tries(30), 3);
        assert_eq!(dead_peer_seconds(30), 26.25);
        for timeout in [30, 31, 45, 60, 90, 120, 300] {
            let dead = dead_peer_seconds(timeout);
            assert!(dead <= f64::from(timeout), "{timeout}: dead after {dead}");
            assert!(dead > f64::from(timeout) / 2.0, "{timeout}: dead after only {dead}");
        }
        assert!(retransmit_tries(120) > retransmit_tries(30));
        assert_eq!(retransmit_tries(5), 0, "one timeout, no retransmit");
    }

    #[test]
    fn the_customer_keeps_its_tunnels_up_and_the_gateway_waits_unless_asked() {
        let mut conn = connection();
        let customer = parse_swanctl(&customer_swanctl(&conn));
        let snippet = customer_strongswan_conf(&conn);
        assert!(snippet.contains("retransmit_tries = 3") && snippet.contains("retransmit_timeout = 2.0"));
        assert!(snippet.contains("at most 26 s"), "{snippet}");
        let gateway = parse_swanctl(&gateway_swanctl(&conn, 1));
        for n in [1, 2] {
            let c = format!("connections.acme-seattle-tunnel{n}");
            let child = format!("{c}.children.acme-seattle-tunnel{n}");
            assert_eq!(customer[&format!("{c}.keyingtries")], "0", "retry forever");
            assert_eq!(customer[&format!("{child}.dpd_action")], "restart");
            assert_eq!(
                customer[&format!("{child}.close_action")],
                "start",
                "re-initiate after a DELETE"
            );
        }
        let child = "connections.acme-seattle-tunnel1.children.acme-seattle-tunnel1";
        assert_eq!(gateway[&format!("{child}.dpd_action")], "clear");
        assert_eq!(gateway[&format!("{child}.close_action")], "none");
        conn.tunnels[0].initiator = Initiator::Both;
        let gateway = parse_swanctl(&gateway_swanctl(&conn, 1));
        assert_eq!(gateway[&format!("{child}.start_action")], "start");
        assert_eq!(gateway[&format!("{child}.dpd_action")], "restart");
        assert_eq!(gateway["connections.acme-seattle-tunnel1.keyingtries"], "0");
    }

    #[test]
    fn device_dpd_adds_up_to_the_timeout() {
        assert_eq!(
            device_dpd_spread(30, 5),
            DeviceDpd {
                retries: 5,
                retry_seconds: 4
            }
        );
        assert_eq!(
            device_dpd_every(30, 10),
            DeviceDpd {
                retries: 2,
                retry_seconds: 10
            }
        );
        assert_eq!(device_dpd_every(300, 10).retries, 10, "devices allow at most 10");
        assert_eq!(device_dpd_every(30, 30).retries, 1);
    }
}
