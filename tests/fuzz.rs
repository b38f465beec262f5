//! Property-based fuzzing (proptest) of everything that takes user input: CIDRs and addresses, the password and
//! PSK rules, the schedule, IKE/ESP proposals, the tunnel file, the VPN device files rendered with odd names and
//! descriptions, and the SQL literals of the migration engine. The ordinary suite runs each target with proptest's
//! default 256 cases; `PROPTEST_CASES=100000 cargo test --release --test fuzz` runs longer. Failures proptest
//! finds are kept in `proptest-regressions/` and replayed first on every run.

use std::net::Ipv4Addr;

use appdb_operator::{
    migration::parse_schedule,
    mysql::{
        admin::quote_literal,
        dialect::quote_identifier,
        migrate::render::{ValueKind, push_value},
        password::validate_admin_password,
    },
    plugin::tunnel::parse_config,
    vpn::{
        model::{Connection, Psk, Tunnel, parse_proposal},
        psk::validate_psk,
        render::{DEVICE_FORMATS, device},
        validate::{customer_cidrs, customer_gateway},
    },
};
use proptest::prelude::*;

/// Reads back a literal written by `push_value` for text (MySQL escapes), to check nothing is lost or injected.
fn unescape(literal: &[u8]) -> Option<Vec<u8>> {
    let inner = literal.strip_prefix(b"_binary").unwrap_or(literal);
    let inner = inner.strip_prefix(b"'")?.strip_suffix(b"'")?;
    let mut out = Vec::new();
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(match bytes.next()? {
                b'0' => 0,
                b'n' => b'\n',
                b'r' => b'\r',
                b'Z' => 0x1a,
                &other => other,
            }),
            // An unescaped quote would end the literal early: injection.
            b'\'' => return None,
            other => out.push(other),
        }
    }
    Some(out)
}

fn connection(name: String, description: Option<String>) -> Connection {
    let tunnel = |n: u8, last: u8| {
        Tunnel::new(
            n,
            Ipv4Addr::new(203, 0, 113, last),
            Psk::new("abcdefgh12345678").unwrap(),
            None,
        )
        .unwrap()
    };
    Connection {
        name,
        description,
        platform_cidr: "10.20.30.64/26".parse().unwrap(),
        pinghost: Ipv4Addr::new(10, 20, 30, 65),
        customer_cidrs: vec!["192.168.10.0/24".parse().unwrap()],
        customer_gateway: Ipv4Addr::new(93, 184, 216, 34),
        tunnels: [tunnel(1, 10), tunnel(2, 11)],
    }
}

proptest! {
    #[test]
    fn proposals_never_panic(text in ".{0,64}", shaped in "[a-z0-9]{1,12}(-[a-z0-9]{1,12}){0,3}") {
        for p in [text, shaped] {
            if let Ok(a) = parse_proposal(&p) {
                prop_assert!(!a.encryption.is_empty());
            }
        }
    }

    #[test]
    fn accepted_passwords_follow_the_rule(password in ".{0,40}") {
        if validate_admin_password(&password).is_ok() {
            prop_assert!(password.len() > 8);
            prop_assert!(password.chars().all(|c| c.is_ascii_graphic()));
            prop_assert!(!password.contains(['/', '"', '@', ' ']));
        }
    }

    #[test]
    fn psks_never_panic(key in ".{0,80}") {
        let _ = validate_psk(&key);
    }

    #[test]
    fn accepted_schedules_are_one_instant(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?", junk in ".{0,40}") {
        for s in [text, junk] {
            if let Ok(t) = parse_schedule(&s, None) {
                prop_assert_eq!(t.utc().parse::<jiff::Timestamp>().unwrap(), t.at);
            }
            for zone in ["Europe/Amsterdam", "America/New_York", "Asia/Kolkata"] {
                if let Ok(t) = parse_schedule(&s, Some(zone)) {
                    // The local reading names the same instant.
                    let local = t.local().expect("a zone gives a local time");
                    prop_assert_eq!(local.parse::<jiff::Zoned>().unwrap().timestamp(), t.at);
                }
            }
        }
    }

    #[test]
    fn gateways_are_public_when_accepted(a in any::<u8>(), b in any::<u8>(), c in any::<u8>(), d in any::<u8>(), junk in ".{0,20}") {
        let text = format!("{a}.{b}.{c}.{d}");
        if let Ok(ip) = customer_gateway(&text, false) {
            prop_assert!(!ip.is_private() && !ip.is_loopback() && !ip.is_link_local() && !ip.is_multicast() && !ip.is_documentation());
        }
        let _ = customer_gateway(&junk, false);
    }

    #[test]
    fn accepted_customer_ranges_avoid_the_network_and_the_platform(
        ranges in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 8u8..=32), 0..4),
        junk in proptest::collection::vec(".{0,20}", 0..3),
    ) {
        let network = "10.20.30.64/26".parse().unwrap();
        let reserved = ["10.96.0.0/12".parse().unwrap()];
        let given: Vec<String> = ranges.iter().map(|(a, b, c, p)| format!("{a}.{b}.{c}.0/{p}")).collect();
        if let Ok(nets) = customer_cidrs(&given, network, &reserved) {
            for n in &nets {
                prop_assert!(!n.contains(&network) && !network.contains(n));
                prop_assert!(!reserved.iter().any(|r: &ipnet::Ipv4Net| r.contains(n) || n.contains(r)));
            }
        }
        let _ = customer_cidrs(&junk, network, &reserved);
    }

    #[test]
    fn tunnel_files_never_panic(text in ".{0,200}") {
        let _ = parse_config(&text);
    }

    /// Names and descriptions cannot add lines to, or crash, any device file.
    #[test]
    fn device_files_keep_their_shape_whatever_the_description(
        name in "[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?",
        description in "\\PC{0,60}|[\\n\\r\"'{}#;\\\\]{0,20}",
    ) {
        let plain = connection(name.clone(), Some("x".into()));
        let odd = connection(name, Some(description));
        for (key, _) in DEVICE_FORMATS {
            let a = device(&plain, key).unwrap();
            let b = device(&odd, key).unwrap();
            prop_assert_eq!(a.lines().count(), b.lines().count(), "{}", key);
        }
    }

    /// Every value the migration engine writes reads back as exactly the bytes it read, and never ends its literal.
    #[test]
    fn sql_literals_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64), binary in any::<bool>()) {
        let mut out = Vec::new();
        push_value(&mut out, if binary { ValueKind::Binary } else { ValueKind::Text }, Some(&bytes));
        prop_assert_eq!(unescape(&out), Some(bytes));
    }

    #[test]
    fn numbers_are_never_spliced_unless_number_shaped(text in ".{0,20}") {
        let mut out = Vec::new();
        push_value(&mut out, ValueKind::Number, Some(text.as_bytes()));
        let spliced = !out.starts_with(b"'");
        if spliced {
            prop_assert!(text.bytes().all(|b| b"0123456789+-.eE".contains(&b)));
        }
    }

    #[test]
    fn identifiers_and_literals_cannot_be_escaped(name in ".{0,40}") {
        let id = quote_identifier(&name);
        let inner = &id[1..id.len() - 1];
        prop_assert_eq!(inner.replace("``", "`"), name.clone());
        prop_assert!(!inner.replace("``", "").contains('`'));
        let lit = quote_literal(&name);
        let inner = &lit[1..lit.len() - 1];
        prop_assert!(!inner.replace("''", "").replace("\\\\", "").contains('\''));
    }
}
