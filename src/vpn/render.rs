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

/// IKEv2 dead-peer detection is retransmission: tries such that the retransmits (2 s, growing ×1.5) span about
/// the DPD timeout after the DPD interval.
pub fn retransmit_tries(dpd_timeout_seconds: u32) -> u32 {
    let budget = f64::from(dpd_timeout_seconds.saturating_sub(DPD_DELAY_SECONDS).max(2));
    let (mut total, mut wait, mut tries) = (0.0, 2.0, 0);
    while total + wait <= budget && tries < 10 {
        total += wait;
        wait *= 1.5;
        tries += 1;
    }
    tries.max(1)
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
         \x20   retransmit_tries = {tries}\n\
         \x20   retransmit_timeout = 2.0\n\
         \x20   retransmit_base = 1.5\n\
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
        tries = retransmit_tries(tunnel.dpd_timeout_seconds),
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

fn swanctl_connection(out: &mut String, name: &str, ends: &Ends, t: &Tunnel, start: bool) {
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
         \x20               dpd_action = restart\n\
         \x20               start_action = {start_action}\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20   }}\n",
        ike = t.ike_proposals.join(","),
        esp = t.esp_proposals.join(","),
        ike_rekey = IKE_LIFETIME_SECONDS - REKEY_MARGIN_SECONDS,
        esp_rekey = ESP_LIFETIME_SECONDS - REKEY_MARGIN_SECONDS,
        start_action = if start { "start" } else { "none" },
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
    swanctl_connection(&mut out, &name, &ends, t, t.initiator == Initiator::Both);
    out.push_str("}\nsecrets {\n");
    swanctl_secret(
        &mut out,
        &name,
        &t.platform_address.to_string(),
        &conn.customer_gateway.to_string(),
        &t.psk.0,
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
        swanctl_connection(&mut out, &tunnel_name(conn, t), &ends, t, true);
    }
    out.push_str("}\nsecrets {\n");
    for t in &conn.tunnels {
        swanctl_secret(
            &mut out,
            &tunnel_name(conn, t),
            &conn.customer_gateway.to_string(),
            &t.platform_address.to_string(),
            &t.psk.0,
        );
    }
    out.push_str("}\n");
    out
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
        let _ = writeln!(out, "Pre-shared key: {}", t.psk.0);
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
        let _ = writeln!(out, "Initiator: customer");
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
            "conn {name}\n    ikev2=insist\n    authby=secret\n    left=%defaultroute\n    leftid={cgw}\n    leftsubnets={{{local}}}\n    right={remote}\n    rightid={remote}\n    rightsubnet={platform}\n    ike={ike}\n    esp={esp}\n    pfs=yes\n    ikelifetime={IKE_LIFETIME_SECONDS}s\n    salifetime={ESP_LIFETIME_SECONDS}s\n    encapsulation=yes\n    dpddelay={DPD_DELAY_SECONDS}\n    dpdtimeout={dpd}\n    dpdaction=restart\n    auto=start\n\n",
            name = tunnel_name(conn, t),
            cgw = conn.customer_gateway,
            local = joined(&conn.customer_cidrs, " "),
            remote = t.platform_address,
            platform = conn.platform_cidr,
            dpd = t.dpd_timeout_seconds,
        );
    }
    out.push_str("# /etc/ipsec.d/appdb.secrets\n");
    for t in &conn.tunnels {
        let _ = writeln!(
            out,
            "{} {} : PSK \"{}\"",
            conn.customer_gateway, t.platform_address, t.psk.0
        );
    }
    out
}

fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// Cisco IOS / IOS XE: IKEv2 with a virtual tunnel interface per tunnel.
pub fn cisco_ios(conn: &Connection) -> String {
    let mut out = format!(
        "! appdb-operator VPN configuration for {} (Cisco IOS / IOS XE, IKEv2).\n! Replace <outside-interface> with your Internet-facing interface.\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-{}-t{}", conn.name, t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let _ = writeln!(out, "crypto ikev2 proposal {n}");
        for a in &ike {
            let enc = a
                .encryption
                .to_lowercase()
                .replace("aes-128-cbc", "aes-cbc-128")
                .replace("aes-256-cbc", "aes-cbc-256")
                .replace("aes-128-gcm-16", "aes-gcm-128")
                .replace("aes-256-gcm-16", "aes-gcm-256");
            let _ = writeln!(out, " encryption {enc}");
            if let Some(i) = &a.integrity {
                let i = i.to_lowercase().replace("sha2-", "sha");
                let keyword = if a.encryption.contains("GCM") {
                    "prf"
                } else {
                    "integrity"
                };
                let _ = writeln!(out, " {keyword} {i}");
            }
            if let Some(g) = a.dh_group {
                let _ = writeln!(out, " group {g}");
            }
        }
        let _ = writeln!(out, "crypto ikev2 policy {n}\n proposal {n}");
        let _ = writeln!(
            out,
            "crypto ikev2 keyring {n}\n peer {n}\n  address {}\n  pre-shared-key {}",
            t.platform_address, t.psk.0
        );
        let _ = writeln!(
            out,
            "crypto ikev2 profile {n}\n match identity remote address {} 255.255.255.255\n identity local address {}\n authentication remote pre-share\n authentication local pre-share\n keyring local {n}\n lifetime {IKE_LIFETIME_SECONDS}\n dpd {DPD_DELAY_SECONDS} 3 periodic",
            t.platform_address, conn.customer_gateway
        );
        let transform = match esp.first() {
            Some(a) if a.encryption.contains("GCM") => {
                format!("esp-gcm {}", if a.encryption.contains("128") { 128 } else { 256 })
            }
            Some(a) => format!(
                "esp-aes {} esp-{}-hmac",
                if a.encryption.contains("128") { 128 } else { 256 },
                a.integrity
                    .as_deref()
                    .unwrap_or("SHA2-256")
                    .to_lowercase()
                    .replace("sha2-", "sha")
            ),
            None => "esp-gcm 256".into(),
        };
        let _ = writeln!(out, "crypto ipsec transform-set {n} {transform}\n mode tunnel");
        let pfs = esp.first().and_then(|a| a.dh_group).unwrap_or(19);
        let _ = writeln!(
            out,
            "crypto ipsec profile {n}\n set transform-set {n}\n set pfs group{pfs}\n set ikev2-profile {n}\n set security-association lifetime seconds {ESP_LIFETIME_SECONDS}"
        );
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

/// Juniper SRX: Junos `set` commands, route-based with st0 units.
pub fn juniper_srx(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (Juniper SRX).\n# Replace <external-interface> with your Internet-facing interface.\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-{}-t{}", conn.name, t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let first_ike = ike.first().cloned().unwrap_or(Algorithms {
            encryption: "AES-256-GCM-16".into(),
            integrity: Some("SHA2-256".into()),
            dh_group: Some(19),
        });
        let enc = |a: &Algorithms| match a.encryption.as_str() {
            "AES-128-GCM-16" => "aes-128-gcm",
            "AES-256-GCM-16" => "aes-256-gcm",
            "AES-128-CBC" => "aes-128-cbc",
            _ => "aes-256-cbc",
        };
        let auth = |a: &Algorithms| match a.integrity.as_deref() {
            Some("SHA1") => "sha1",
            Some("SHA2-384") => "sha-384",
            _ => "sha-256",
        };
        let _ = writeln!(
            out,
            "set security ike proposal {n} authentication-method pre-shared-keys"
        );
        let _ = writeln!(
            out,
            "set security ike proposal {n} dh-group group{}",
            first_ike.dh_group.unwrap_or(19)
        );
        let _ = writeln!(
            out,
            "set security ike proposal {n} encryption-algorithm {}",
            enc(&first_ike)
        );
        if !first_ike.encryption.contains("GCM") {
            let _ = writeln!(
                out,
                "set security ike proposal {n} authentication-algorithm {}",
                auth(&first_ike)
            );
        }
        let _ = writeln!(
            out,
            "set security ike proposal {n} lifetime-seconds {IKE_LIFETIME_SECONDS}"
        );
        let _ = writeln!(out, "set security ike policy {n} proposals {n}");
        let _ = writeln!(
            out,
            "set security ike policy {n} pre-shared-key ascii-text \"{}\"",
            t.psk.0
        );
        let _ = writeln!(out, "set security ike gateway {n} ike-policy {n}");
        let _ = writeln!(out, "set security ike gateway {n} address {}", t.platform_address);
        let _ = writeln!(
            out,
            "set security ike gateway {n} dead-peer-detection interval {DPD_DELAY_SECONDS} threshold 3"
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
        let first_esp = esp.first().cloned().unwrap_or(Algorithms {
            encryption: "AES-256-GCM-16".into(),
            integrity: None,
            dh_group: Some(19),
        });
        let _ = writeln!(out, "set security ipsec proposal {n} protocol esp");
        let _ = writeln!(
            out,
            "set security ipsec proposal {n} encryption-algorithm {}",
            enc(&first_esp)
        );
        if !first_esp.encryption.contains("GCM") {
            let _ = writeln!(
                out,
                "set security ipsec proposal {n} authentication-algorithm hmac-{}-128",
                auth(&first_esp).replace("sha1", "sha1-96")
            );
        }
        let _ = writeln!(
            out,
            "set security ipsec proposal {n} lifetime-seconds {ESP_LIFETIME_SECONDS}"
        );
        let _ = writeln!(
            out,
            "set security ipsec policy {n} perfect-forward-secrecy keys group{}",
            first_esp.dh_group.unwrap_or(19)
        );
        let _ = writeln!(out, "set security ipsec policy {n} proposals {n}");
        let _ = writeln!(out, "set interfaces st0 unit {} family inet mtu {TUNNEL_MTU}", t.number);
        let _ = writeln!(out, "set security ipsec vpn {n} bind-interface st0.{}", t.number);
        let _ = writeln!(out, "set security ipsec vpn {n} ike gateway {n}");
        let _ = writeln!(out, "set security ipsec vpn {n} ike ipsec-policy {n}");
        let _ = writeln!(out, "set security ipsec vpn {n} establish-tunnels immediately");
        let _ = writeln!(out, "set security flow tcp-mss ipsec-vpn mss {TCP_MSS}");
        let _ = writeln!(
            out,
            "set routing-options static route {} next-hop st0.{}",
            conn.platform_cidr, t.number
        );
    }
    out
}

/// Fortinet FortiGate: route-based phase1/phase2 interfaces.
pub fn fortigate(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (FortiOS CLI).\n# Replace \"wan1\" with your Internet-facing interface.\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-t{}", t.number);
        let fmt = |a: &Algorithms| {
            let enc = match a.encryption.as_str() {
                "AES-128-GCM-16" => "aes128gcm",
                "AES-256-GCM-16" => "aes256gcm",
                "AES-128-CBC" => "aes128",
                _ => "aes256",
            };
            let integ = match a.integrity.as_deref() {
                Some("SHA1") => "sha1",
                Some("SHA2-384") => "sha384",
                Some("SHA2-512") => "sha512",
                _ => "sha256",
            };
            format!("{enc}-{integ}")
        };
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let groups = joined(
            ike.iter()
                .filter_map(|a| a.dh_group)
                .collect::<std::collections::BTreeSet<_>>(),
            " ",
        );
        let _ = writeln!(
            out,
            "config vpn ipsec phase1-interface\n    edit \"{n}\"\n        set interface \"wan1\"\n        set ike-version 2\n        set peertype any\n        set net-device disable"
        );
        let _ = writeln!(
            out,
            "        set proposal {}\n        set dhgrp {groups}\n        set remote-gw {}\n        set localid \"{}\"\n        set psksecret \"{}\"",
            joined(ike.iter().map(fmt), " "),
            t.platform_address,
            conn.customer_gateway,
            t.psk.0
        );
        let _ = writeln!(
            out,
            "        set keylife {IKE_LIFETIME_SECONDS}\n        set dpd on-idle\n        set dpd-retryinterval {DPD_DELAY_SECONDS}\n        set nattraversal forced\n    next\nend"
        );
        let pfs = joined(
            esp.iter()
                .filter_map(|a| a.dh_group)
                .collect::<std::collections::BTreeSet<_>>(),
            " ",
        );
        let _ = writeln!(
            out,
            "config vpn ipsec phase2-interface\n    edit \"{n}\"\n        set phase1name \"{n}\"\n        set proposal {}\n        set dhgrp {pfs}\n        set keylifeseconds {ESP_LIFETIME_SECONDS}",
            joined(esp.iter().map(fmt), " ")
        );
        let _ = writeln!(
            out,
            "        set src-subnet {} {}\n        set dst-subnet {} {}\n    next\nend",
            conn.customer_cidrs
                .first()
                .map(|c| c.network().to_string())
                .unwrap_or_default(),
            conn.customer_cidrs
                .first()
                .map(|c| netmask(c.prefix_len()).to_string())
                .unwrap_or_default(),
            conn.platform_cidr.network(),
            netmask(conn.platform_cidr.prefix_len())
        );
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

/// MikroTik RouterOS v7 script.
pub fn mikrotik(conn: &Connection) -> String {
    let mut out = format!(
        "# appdb-operator VPN configuration for {} (MikroTik RouterOS v7).\n",
        conn.name
    );
    for t in &conn.tunnels {
        let n = format!("appdb-t{}", t.number);
        let ike = algorithms(&t.ike_proposals);
        let esp = algorithms(&t.esp_proposals);
        let first = ike.first().cloned().unwrap_or(Algorithms {
            encryption: "AES-256-CBC".into(),
            integrity: Some("SHA2-256".into()),
            dh_group: Some(14),
        });
        let enc = |a: &Algorithms| match a.encryption.as_str() {
            "AES-128-GCM-16" => "aes-128-gcm",
            "AES-256-GCM-16" => "aes-256-gcm",
            "AES-128-CBC" => "aes-128",
            _ => "aes-256",
        };
        let hash = |a: &Algorithms| match a.integrity.as_deref() {
            Some("SHA1") => "sha1",
            Some("SHA2-384") => "sha384",
            Some("SHA2-512") => "sha512",
            _ => "sha256",
        };
        let group = |g: Option<u32>| match g {
            Some(14) => "modp2048",
            Some(15) => "modp3072",
            Some(20) => "ecp384",
            Some(21) => "ecp521",
            Some(2) => "modp1024",
            _ => "ecp256",
        };
        let _ = writeln!(
            out,
            "/ip ipsec profile add name={n} enc-algorithm={} hash-algorithm={} dh-group={} lifetime={}h nat-traversal=yes dpd-interval={DPD_DELAY_SECONDS}s dpd-maximum-failures=3",
            enc(&first).replace("-gcm", ""),
            hash(&first),
            group(first.dh_group),
            IKE_LIFETIME_SECONDS / 3600
        );
        let _ = writeln!(
            out,
            "/ip ipsec peer add name={n} address={}/32 profile={n} exchange-mode=ike2",
            t.platform_address
        );
        let _ = writeln!(
            out,
            "/ip ipsec identity add peer={n} auth-method=pre-shared-key secret=\"{}\" my-id=address:{} remote-id=address:{}",
            t.psk.0, conn.customer_gateway, t.platform_address
        );
        let first_esp = esp.first().cloned().unwrap_or(Algorithms {
            encryption: "AES-256-GCM-16".into(),
            integrity: None,
            dh_group: Some(19),
        });
        let auth = if first_esp.encryption.contains("GCM") {
            "null".to_owned()
        } else {
            hash(&first_esp).to_owned()
        };
        let _ = writeln!(
            out,
            "/ip ipsec proposal add name={n} enc-algorithms={} auth-algorithms={auth} pfs-group={} lifetime={}h",
            enc(&first_esp),
            group(first_esp.dh_group),
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
        let t = |n: u8, addr: Ipv4Addr, psk: &str| Tunnel::new(n, addr, Psk(psk.into()), None).unwrap();
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
        for (key, _) in DEVICE_FORMATS {
            let text = device(&conn, key).unwrap_or_else(|| panic!("{key} not rendered"));
            for t in &conn.tunnels {
                assert!(
                    text.contains(&t.platform_address.to_string()),
                    "{key} lacks tunnel {}'s address",
                    t.number
                );
                assert!(text.contains(&t.psk.0), "{key} lacks tunnel {}'s key", t.number);
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
        assert_eq!(retransmit_tries(30), 4);
        assert!(retransmit_tries(120) > retransmit_tries(30));
        assert_eq!(retransmit_tries(5), 1);
    }
}
