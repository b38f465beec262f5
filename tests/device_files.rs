//! Every device file against the gateway it talks to: each file is parsed in its own vendor's syntax back into
//! what that device would propose (IKE and ESP: encryption, integrity or PRF, Diffie-Hellman group), and the
//! gateway's swanctl configuration must accept it. Keywords are checked against each vendor's documented values,
//! so a file cannot name an algorithm its device does not know. Pure: no daemon runs here (the strongSwan file is
//! run against a real gateway in tests/pod_gateway.rs).

use std::{collections::BTreeSet, net::Ipv4Addr};

use appdb_operator::{
    api::vpn_connection::{Proposal, TunnelOptions},
    vpn::{
        model::{Connection, Psk, Tunnel, parse_proposal},
        render::{DEVICE_FORMATS, device, gateway_swanctl},
    },
};

/// One proposal as IKEv2 negotiates it: (encryption, integrity or PRF, DH group). AEAD ESP has no integrity.
type Offer = (String, Option<String>, Option<u32>);

fn offer(strongswan: &str) -> Offer {
    let a = parse_proposal(strongswan).unwrap_or_else(|e| panic!("{strongswan}: {e}"));
    (a.encryption, a.integrity, a.dh_group)
}

fn connection(options: Option<TunnelOptions>) -> Connection {
    let tunnel = |n: u8, addr: Ipv4Addr, psk: &str| {
        Tunnel::new(n, addr, Psk::new(psk).unwrap(), options.as_ref()).expect("tunnel")
    };
    Connection {
        name: "acme-seattle".into(),
        description: Some("Seattle office".into()),
        platform_cidr: "10.20.30.64/26".parse().unwrap(),
        pinghost: Ipv4Addr::new(10, 20, 30, 65),
        customer_cidrs: vec!["192.168.10.0/24".parse().unwrap(), "172.20.0.0/16".parse().unwrap()],
        customer_gateway: Ipv4Addr::new(198, 51, 100, 7),
        tunnels: [
            tunnel(1, Ipv4Addr::new(203, 0, 113, 11), "Tunnel1.Key_0123456789abcdefghijk"),
            tunnel(2, Ipv4Addr::new(203, 0, 113, 12), "Tunnel2.Key_0123456789abcdefghijk"),
        ],
    }
}

/// What the gateway of tunnel `n` accepts, read from its swanctl.conf.
fn gateway_accepts(conn: &Connection, n: u8) -> (BTreeSet<Offer>, BTreeSet<Offer>) {
    let conf = gateway_swanctl(conn, n);
    let list = |key: &str| -> BTreeSet<Offer> {
        conf.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("gateway has no {key}"))
            .split(',')
            .map(|p| offer(p.trim()))
            .collect()
    };
    (list("proposals = "), list("esp_proposals = "))
}

/// What a device proposes for one tunnel, in the order it would send it.
#[derive(Debug, Default)]
struct Proposes {
    ike: Vec<Offer>,
    esp: Vec<Offer>,
}

fn integrity_name(keyword: &str) -> String {
    match keyword {
        "sha" | "sha1" | "sha-1" => "SHA1",
        "sha256" | "sha-256" | "sha2_256" => "SHA2-256",
        "sha384" | "sha-384" | "sha2_384" => "SHA2-384",
        "sha512" | "sha-512" | "sha2_512" => "SHA2-512",
        other => panic!("unknown hash keyword {other}"),
    }
    .into()
}

fn aes(bits: &str, gcm: bool) -> String {
    format!("AES-{bits}-{}", if gcm { "GCM-16" } else { "CBC" })
}

fn check_keyword(vendor: &str, allowed: &[&str], keyword: &str) {
    assert!(
        allowed.contains(&keyword),
        "{vendor}: `{keyword}` is not a keyword the device knows ({allowed:?})"
    );
}

/// The lines of `text` under the block that `header` opens (Cisco's indentation).
fn cisco_block<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "Cisco: no `{header}`");
    lines.take_while(|l| l.starts_with(' ')).map(str::trim).collect()
}

fn cisco(text: &str, n: u8) -> Proposes {
    let name = format!("appdb-acme-seattle-t{n}");
    let mut out = Proposes::default();
    let policy = cisco_block(text, &format!("crypto ikev2 policy {name}"));
    for line in policy {
        let proposal = line.strip_prefix("proposal ").expect("policy lists proposals");
        let block = cisco_block(text, &format!("crypto ikev2 proposal {proposal}"));
        let value = |key: &str| block.iter().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
        let encryption = value("encryption ").expect("encryption");
        check_keyword(
            "Cisco",
            &[
                "aes-cbc-128",
                "aes-cbc-192",
                "aes-cbc-256",
                "aes-gcm-128",
                "aes-gcm-256",
            ],
            &encryption,
        );
        let gcm = encryption.contains("gcm");
        // RFC 7296 §3.3: an AEAD proposal carries a PRF and no integrity; a CBC one an integrity algorithm.
        let hash = if gcm {
            assert!(
                value("integrity ").is_none(),
                "Cisco: AEAD and integrity in one proposal {proposal}"
            );
            value("prf ").expect("prf")
        } else {
            value("integrity ").expect("integrity")
        };
        check_keyword("Cisco", &["sha1", "sha256", "sha384", "sha512"], &hash);
        let group = value("group ").map(|g| g.parse::<u32>().expect("group number"));
        out.ike.push((
            aes(encryption.rsplit('-').next().unwrap(), gcm),
            Some(integrity_name(&hash)),
            group,
        ));
    }
    let profile = cisco_block(text, &format!("crypto ipsec profile {name}"));
    let pfs = profile
        .iter()
        .find_map(|l| l.strip_prefix("set pfs group"))
        .map(|g| g.parse::<u32>().expect("pfs group"));
    let sets = profile
        .iter()
        .find_map(|l| l.strip_prefix("set transform-set "))
        .expect("transform sets");
    for set in sets.split_whitespace() {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("crypto ipsec transform-set {set} ")))
            .expect("transform set");
        let words: Vec<&str> = line.split_whitespace().collect();
        let esp = match words.as_slice() {
            ["esp-gcm", bits] => (aes(bits, true), None, pfs),
            ["esp-aes", bits, hmac] => {
                check_keyword(
                    "Cisco",
                    &["esp-sha-hmac", "esp-sha256-hmac", "esp-sha384-hmac", "esp-sha512-hmac"],
                    hmac,
                );
                let hash = hmac.trim_start_matches("esp-").trim_end_matches("-hmac");
                (aes(bits, false), Some(integrity_name(hash)), pfs)
            }
            other => panic!("Cisco: transform set {other:?}"),
        };
        out.esp.push(esp);
    }
    out
}

fn junos(text: &str, n: u8) -> Proposes {
    let name = format!("appdb-acme-seattle-t{n}");
    let setting = |prefix: String| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    };
    let list = |prefix: String| -> Vec<String> {
        setting(prefix)
            .expect("proposal list")
            .trim_matches(|c| c == '[' || c == ']' || c == ' ')
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let encryption = |value: &str| {
        check_keyword(
            "Junos",
            &[
                "aes-128-cbc",
                "aes-192-cbc",
                "aes-256-cbc",
                "aes-128-gcm",
                "aes-256-gcm",
            ],
            value,
        );
        let parts: Vec<&str> = value.split('-').collect();
        aes(parts[1], parts[2] == "gcm")
    };
    let mut out = Proposes::default();
    for p in list(format!("set security ike policy {name} proposals ")) {
        let enc = setting(format!("set security ike proposal {p} encryption-algorithm ")).expect("encryption");
        let hash = setting(format!("set security ike proposal {p} authentication-algorithm ")).expect("hash");
        check_keyword("Junos", &["sha1", "sha-256", "sha-384", "sha-512"], &hash);
        let group = setting(format!("set security ike proposal {p} dh-group group")).map(|g| g.parse().unwrap());
        out.ike.push((encryption(&enc), Some(integrity_name(&hash)), group));
    }
    let pfs = setting(format!(
        "set security ipsec policy {name} perfect-forward-secrecy keys group"
    ))
    .map(|g| g.parse().unwrap());
    for p in list(format!("set security ipsec policy {name} proposals ")) {
        let enc = setting(format!("set security ipsec proposal {p} encryption-algorithm ")).expect("encryption");
        let hmac = setting(format!("set security ipsec proposal {p} authentication-algorithm "));
        let integrity = hmac.map(|h| {
            check_keyword(
                "Junos",
                &["hmac-sha1-96", "hmac-sha-256-128", "hmac-sha-384", "hmac-sha-512"],
                &h,
            );
            integrity_name(match h.as_str() {
                "hmac-sha1-96" => "sha1",
                "hmac-sha-256-128" => "sha256",
                "hmac-sha-384" => "sha384",
                _ => "sha512",
            })
        });
        assert!(
            !(enc.ends_with("gcm") && integrity.is_some()),
            "Junos: AES-GCM takes no authentication algorithm"
        );
        out.esp.push((encryption(&enc), integrity, pfs));
    }
    out
}

fn fortios(text: &str, n: u8) -> Proposes {
    let phase1 = text
        .split("config vpn ipsec phase1-interface")
        .nth(usize::from(n))
        .expect("phase 1 of the tunnel");
    let phase1 = phase1.split("\nend").next().unwrap();
    let set = |block: &str, key: &str| -> Vec<String> {
        block
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("set {key} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("FortiOS: no set {key}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let groups = |block: &str| -> Vec<u32> { set(block, "dhgrp").iter().map(|g| g.parse().unwrap()).collect() };
    let mut out = Proposes::default();
    // FortiOS offers every proposal with every listed group.
    for p in set(phase1, "proposal") {
        check_keyword(
            "FortiOS phase 1",
            &[
                "aes128-sha1",
                "aes128-sha256",
                "aes128-sha384",
                "aes128-sha512",
                "aes256-sha1",
                "aes256-sha256",
                "aes256-sha384",
                "aes256-sha512",
                "aes128gcm-prfsha1",
                "aes128gcm-prfsha256",
                "aes128gcm-prfsha384",
                "aes128gcm-prfsha512",
                "aes256gcm-prfsha1",
                "aes256gcm-prfsha256",
                "aes256gcm-prfsha384",
                "aes256gcm-prfsha512",
            ],
            &p,
        );
        let (enc, hash) = p.split_once('-').unwrap();
        let gcm = enc.ends_with("gcm");
        let bits = &enc[3..6];
        for g in groups(phase1) {
            out.ike.push((
                aes(bits, gcm),
                Some(integrity_name(hash.trim_start_matches("prf"))),
                Some(g),
            ));
        }
    }
    let phase2_all = text
        .split("config vpn ipsec phase2-interface")
        .nth(usize::from(n))
        .expect("phase 2");
    let phase2_all = phase2_all.split("\nend").next().unwrap();
    let phase2: Vec<&str> = phase2_all.split("    edit ").skip(1).collect();
    assert_eq!(
        phase2.len(),
        2,
        "FortiOS: a phase 2 selector for every customer network"
    );
    for (block, cidr) in phase2
        .iter()
        .zip(["192.168.10.0 255.255.255.0", "172.20.0.0 255.255.0.0"])
    {
        assert!(
            block.contains(&format!("set src-subnet {cidr}")),
            "FortiOS: no selector for {cidr}"
        );
    }
    for p in set(phase2[0], "proposal") {
        check_keyword(
            "FortiOS phase 2",
            &[
                "aes128gcm",
                "aes256gcm",
                "aes128-sha1",
                "aes128-sha256",
                "aes256-sha1",
                "aes256-sha256",
                "aes256-sha384",
                "aes256-sha512",
            ],
            &p,
        );
        let (enc, hash) = match p.split_once('-') {
            Some((e, h)) => (e.to_owned(), Some(integrity_name(h))),
            None => (p.clone(), None),
        };
        for g in groups(phase2[0]) {
            out.esp
                .push((aes(&enc[3..6], enc.ends_with("gcm")), hash.clone(), Some(g)));
        }
    }
    out
}

fn routeros(text: &str, n: u8) -> Proposes {
    let name = format!("appdb-t{n}");
    let line = |command: &str| -> Vec<(String, String)> {
        text.lines()
            .find(|l| l.starts_with(command) && l.contains(&format!(" name={name} ")))
            .unwrap_or_else(|| panic!("RouterOS: no {command}"))
            .split_whitespace()
            .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    };
    let get = |pairs: &[(String, String)], key: &str| pairs.iter().find(|(k, _)| k == key).expect(key).1.clone();
    let group = |g: &str| -> Option<u32> {
        Some(match g {
            "modp1024" => 2,
            "modp1536" => 5,
            "modp2048" => 14,
            "modp3072" => 15,
            "modp4096" => 16,
            "ecp256" => 19,
            "ecp384" => 20,
            "ecp521" => 21,
            "none" => return None,
            other => panic!("RouterOS: unknown group {other}"),
        })
    };
    let profile = line("/ip ipsec profile add");
    let enc = get(&profile, "enc-algorithm");
    check_keyword(
        "RouterOS profile",
        &["aes-128", "aes-192", "aes-256", "aes-128-gcm", "aes-256-gcm"],
        &enc,
    );
    let hash = get(&profile, "hash-algorithm");
    check_keyword("RouterOS profile", &["sha1", "sha256", "sha384", "sha512"], &hash);
    let ike = (
        aes(&enc[4..7], enc.ends_with("gcm")),
        Some(integrity_name(&hash)),
        group(&get(&profile, "dh-group")),
    );
    let proposal = line("/ip ipsec proposal add");
    let enc = get(&proposal, "enc-algorithms");
    check_keyword(
        "RouterOS proposal",
        &[
            "aes-128-cbc",
            "aes-192-cbc",
            "aes-256-cbc",
            "aes-128-gcm",
            "aes-256-gcm",
        ],
        &enc,
    );
    let auth = get(&proposal, "auth-algorithms");
    check_keyword("RouterOS proposal", &["null", "sha1", "sha256", "sha512"], &auth);
    let esp = (
        aes(&enc[4..7], enc.ends_with("gcm")),
        (auth != "null").then(|| integrity_name(&auth)),
        group(&get(&proposal, "pfs-group")),
    );
    Proposes {
        ike: vec![ike],
        esp: vec![esp],
    }
}

fn libreswan(text: &str, n: u8) -> Proposes {
    let conn = text
        .split("conn ")
        .find(|c| c.starts_with(&format!("acme-seattle-tunnel{n}\n")))
        .expect("Libreswan conn");
    let value = |key: &str| {
        conn.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("Libreswan: no {key}"))
            .to_owned()
    };
    let algorithm = |part: &str| -> (String, Option<String>) {
        let (enc, hash) = match part.split_once('-') {
            Some((e, h)) => (e, Some(h)),
            None => (part, None),
        };
        let encryption = match enc {
            "aes_gcm128" => aes("128", true),
            "aes_gcm256" => aes("256", true),
            "aes128" => aes("128", false),
            "aes256" => aes("256", false),
            other => panic!("Libreswan: unknown cipher {other}"),
        };
        (encryption, hash.map(integrity_name))
    };
    let mut out = Proposes::default();
    for p in value("ike").split(',') {
        let (alg, dh) = p.split_once(";dh").expect("group");
        let (enc, hash) = algorithm(alg);
        out.ike.push((enc, hash, Some(dh.parse().unwrap())));
    }
    // With pfs=yes Libreswan rekeys ESP with the IKE SA's group: the first IKE proposal's when it is chosen.
    assert_eq!(value("pfs"), "yes");
    let pfs = out.ike[0].2;
    for p in value("esp").split(',') {
        let (enc, hash) = algorithm(p);
        out.esp.push((enc, hash, pfs));
    }
    out
}

fn swanctl_device(text: &str, n: u8) -> Proposes {
    // The connection's text from its header on (its child, named alike, follows inside it).
    let (_, conn) = text
        .split_once(&format!("acme-seattle-tunnel{n} {{"))
        .expect("connection");
    let list = |key: &str| -> Vec<Offer> {
        conn.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .expect(key)
            .split(',')
            .map(|p| offer(p.trim()))
            .collect()
    };
    Proposes {
        ike: list("proposals = "),
        esp: list("esp_proposals = "),
    }
}

fn generic(text: &str, n: u8) -> Proposes {
    let section = text.split(&format!("[Tunnel {n}]")).nth(1).expect("tunnel section");
    let list = |key: &str| -> Vec<Offer> {
        section
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .expect(key)
            .split(", ")
            .map(offer)
            .collect()
    };
    Proposes {
        ike: list("IKE proposals: "),
        esp: list("IPsec proposals: "),
    }
}

/// Whether the gateway accepts what the device proposes: every proposal exactly where the device's syntax can
/// say exactly what the gateway has; at least its first (the one whose key exchange the device sends first)
/// where the syntax combines lists (FortiOS offers every proposal with every group).
fn assert_accepted(format: &str, conn: &Connection) {
    let text = device(conn, format).expect("rendered");
    for n in [1u8, 2] {
        let (ike, esp) = gateway_accepts(conn, n);
        let proposes = match format {
            "generic.txt" => generic(&text, n),
            "strongswan-swanctl.conf" => swanctl_device(&text, n),
            "libreswan.conf" => libreswan(&text, n),
            "cisco-ios.txt" => cisco(&text, n),
            "juniper-srx.txt" => junos(&text, n),
            "fortigate.txt" => fortios(&text, n),
            "mikrotik.rsc" => routeros(&text, n),
            other => panic!("no parser for {other}"),
        };
        assert!(
            !proposes.ike.is_empty() && !proposes.esp.is_empty(),
            "{format}: nothing proposed"
        );
        let exact = !matches!(format, "fortigate.txt" | "libreswan.conf");
        // The first CHILD_SA is made in IKE_AUTH without a key exchange: its group does not count there, but every
        // rekey uses it, so the group is compared too.
        for (what, offered, accepted) in [("IKE", &proposes.ike, &ike), ("ESP", &proposes.esp, &esp)] {
            if exact {
                for o in offered.iter() {
                    assert!(
                        accepted.contains(o),
                        "{format} tunnel {n}: the gateway refuses the {what} proposal {o:?} (it accepts {accepted:?})"
                    );
                }
            } else {
                assert!(
                    offered.iter().any(|o| accepted.contains(o)),
                    "{format} tunnel {n}: the gateway accepts none of the {what} proposals {offered:?} (it accepts {accepted:?})"
                );
                assert!(
                    accepted.contains(&offered[0]),
                    "{format} tunnel {n}: the first {what} proposal {:?} is refused",
                    offered[0]
                );
            }
        }
    }
}

#[test]
fn every_device_proposes_what_the_gateway_accepts_with_the_default_proposals() {
    let conn = connection(None);
    let devices: Vec<&str> = DEVICE_FORMATS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| *k != "strongswan.conf")
        .collect();
    assert_eq!(devices.len(), 7, "seven device formats");
    for format in devices {
        assert_accepted(format, &conn);
    }
}

#[test]
fn every_device_proposes_what_the_gateway_accepts_with_a_customers_own_proposals() {
    let proposals = |list: &[&str]| list.iter().map(|p| Proposal((*p).into())).collect();
    for (ike, esp) in [
        (&["aes128-sha1-modp2048"][..], &["aes128-sha1-modp2048"][..]),
        (
            &["aes256-sha512-ecp384", "aes128gcm16-prfsha384-ecp384"][..],
            &["aes256-sha512-ecp384"][..],
        ),
        (
            &["aes256gcm16-prfsha256-ecp256"][..],
            &["aes256gcm16-ecp256", "aes128gcm16-ecp256"][..],
        ),
    ] {
        let conn = connection(Some(TunnelOptions {
            ike_proposals: proposals(ike),
            esp_proposals: proposals(esp),
            ..Default::default()
        }));
        for (format, _) in DEVICE_FORMATS.iter().filter(|(k, _)| *k != "strongswan.conf") {
            assert_accepted(format, &conn);
        }
    }
}

#[test]
fn juniper_binds_its_tunnels_into_a_zone_with_policies_and_selectors() {
    let text = device(&connection(None), "juniper-srx.txt").unwrap();
    for n in [1, 2] {
        assert!(text.contains(&format!(
            "set security zones security-zone appdb-vpn interfaces st0.{n}"
        )));
        for (i, cidr) in ["192.168.10.0/24", "172.20.0.0/16"].iter().enumerate() {
            assert!(text.contains(&format!(
                "set security ipsec vpn appdb-acme-seattle-t{n} traffic-selector ts{} local-ip {cidr} remote-ip 10.20.30.64/26",
                i + 1
            )));
        }
    }
    for direction in [
        "from-zone <trust-zone> to-zone appdb-vpn",
        "from-zone appdb-vpn to-zone <trust-zone>",
    ] {
        assert!(
            text.contains(&format!(
                "set security policies {direction} policy appdb-vpn then permit"
            )),
            "{direction}"
        );
    }
}

/// Libreswan's own parser, `addconn --checkconfig` from the Debian package (extracted, not installed: installing
/// libreswan would remove strongSwan; scripts/test.sh extracts it to /opt/appdb-libreswan). addconn checks the
/// file's structure and keywords (not algorithm values: the consistency tests above do). The download is split
/// where its own comments say (the connections for /etc/ipsec.d, the secrets for ipsec.secrets) and included from
/// a minimal ipsec.conf, as a customer installs it.
#[test]
fn libreswan_accepts_its_file() {
    const ADDCONN: &str = "/opt/appdb-libreswan/usr/libexec/ipsec/addconn";
    assert!(
        std::path::Path::new(ADDCONN).exists(),
        "{ADDCONN} is required: scripts/test.sh extracts the libreswan package there"
    );
    let dir = tempfile::tempdir().unwrap();
    for conn in [
        connection(None),
        connection(Some(TunnelOptions {
            ike_proposals: vec![Proposal("aes128-sha1-modp2048".into())],
            esp_proposals: vec![Proposal("aes128-sha1-modp2048".into())],
            ..Default::default()
        })),
    ] {
        let text = device(&conn, "libreswan.conf").unwrap();
        let (conns, secrets) = text
            .split_once("# /etc/ipsec.d/appdb.secrets")
            .expect("the secrets part");
        assert!(secrets.contains(": PSK \""), "secrets lines");
        let included = dir.path().join("appdb.conf");
        std::fs::write(&included, conns).unwrap();
        let main = dir.path().join("ipsec.conf");
        std::fs::write(&main, format!("config setup\n\ninclude {}\n", included.display())).unwrap();
        let out = std::process::Command::new(ADDCONN)
            .args(["--checkconfig", "--config", &main.display().to_string()])
            .output()
            .expect("run addconn");
        assert!(
            out.status.success(),
            "addconn refuses the Libreswan file:\n{}{}\n{conns}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
