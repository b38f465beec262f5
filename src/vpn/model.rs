//! The canonical description of one VPN connection. Every file the gateway or the customer gets is rendered from
//! this one value, so they cannot disagree.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::api::vpn_connection::{StartupAction, TunnelOptions};

/// A pre-shared key that passed [`validate_psk`](crate::vpn::psk::validate_psk): the only way to make one is
/// [`Psk::new`], so no key that could end a quoted `secret = "…"` line, or start a new section, reaches a rendered file,
/// wherever it came from (the customer's Secret, the generated one edited by hand, a test). Its `Debug` never shows
/// the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(String);

impl Psk {
    pub fn new(value: impl Into<String>) -> Result<Psk, crate::vpn::psk::PskError> {
        let value = value.into();
        crate::vpn::psk::validate_psk(&value)?;
        Ok(Psk(value))
    }

    /// The key itself, for the files that must carry it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// Default proposals: AES-256-GCM or AES-256/SHA-256, DH 19 (ECP-256) or 14 (MODP-2048).
pub const DEFAULT_IKE_PROPOSALS: &[&str] = &["aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"];
pub const DEFAULT_ESP_PROPOSALS: &[&str] = &["aes256gcm16-ecp256", "aes256-sha256-modp2048"];
pub const IKE_LIFETIME_SECONDS: u32 = 28_800;
pub const ESP_LIFETIME_SECONDS: u32 = 3_600;
pub const REKEY_MARGIN_SECONDS: u32 = 270;
pub const DPD_DELAY_SECONDS: u32 = 10;
pub const DEFAULT_DPD_TIMEOUT_SECONDS: u32 = 30;
/// Inside the tunnel: 1500 minus IPsec/UDP/IP overhead, as AWS recommends.
pub const TUNNEL_MTU: u32 = 1436;
pub const TCP_MSS: u32 = 1379;

/// One algorithm of a proposal, in the words the vendors' files use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Algorithms {
    /// AES-128-CBC, AES-256-CBC, AES-128-GCM-16, AES-256-GCM-16.
    pub encryption: String,
    /// SHA1, SHA2-256, SHA2-384, SHA2-512; `None` for AEAD ciphers in ESP.
    pub integrity: Option<String>,
    /// Diffie-Hellman group number (PFS group for ESP).
    pub dh_group: Option<u32>,
}

/// Why a proposal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error(
        "proposal {proposal}: {token} is not an allowed algorithm (allowed: AES128/256 CBC or GCM-16, SHA1/SHA2-256/384/512, DH groups 2, 5, 14-24)"
    )]
    Unsupported { proposal: String, token: String },
    #[error("proposal {0} has no encryption algorithm")]
    NoEncryption(String),
}

fn dh_group(token: &str) -> Option<u32> {
    Some(match token {
        "modp1024" => 2,
        "modp1536" => 5,
        "modp2048" => 14,
        "modp3072" => 15,
        "modp4096" => 16,
        "modp6144" => 17,
        "modp8192" => 18,
        "ecp256" => 19,
        "ecp384" => 20,
        "ecp521" => 21,
        "modp1024s160" => 22,
        "modp2048s224" => 23,
        "modp2048s256" => 24,
        _ => return None,
    })
}

/// Parses a strongSwan proposal (`aes256gcm16-prfsha256-ecp256`) into vendor-neutral algorithm names.
pub fn parse_proposal(proposal: &str) -> Result<Algorithms, ProposalError> {
    let mut encryption = None;
    let mut integrity = None;
    let mut group = None;
    for token in proposal.split('-') {
        let unsupported = || ProposalError::Unsupported {
            proposal: proposal.into(),
            token: token.into(),
        };
        match token {
            "aes128" => encryption = Some("AES-128-CBC"),
            "aes256" => encryption = Some("AES-256-CBC"),
            "aes128gcm16" => encryption = Some("AES-128-GCM-16"),
            "aes256gcm16" => encryption = Some("AES-256-GCM-16"),
            "sha1" | "prfsha1" => integrity = Some("SHA1"),
            "sha256" | "prfsha256" => integrity = Some("SHA2-256"),
            "sha384" | "prfsha384" => integrity = Some("SHA2-384"),
            "sha512" | "prfsha512" => integrity = Some("SHA2-512"),
            other => group = Some(dh_group(other).ok_or_else(unsupported)?),
        }
    }
    Ok(Algorithms {
        encryption: encryption
            .ok_or_else(|| ProposalError::NoEncryption(proposal.into()))?
            .into(),
        integrity: integrity.map(str::to_owned),
        dh_group: group,
    })
}

/// Who starts a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// The customer's device initiates; the platform waits (`start_action = trap`-free `none`).
    Customer,
    /// The platform initiates as well.
    Both,
}

/// One of the two tunnels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// 1 or 2.
    pub number: u8,
    /// The platform side's public address for this tunnel (its Service's external address).
    pub platform_address: Ipv4Addr,
    pub psk: Psk,
    pub ike_proposals: Vec<String>,
    pub esp_proposals: Vec<String>,
    pub dpd_timeout_seconds: u32,
    pub initiator: Initiator,
}

/// The whole connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// `<namespace>-<name>`: names connections in every rendered file.
    pub name: String,
    pub description: Option<String>,
    /// The network's /26, the platform side of the traffic selectors.
    pub platform_cidr: Ipv4Net,
    pub pinghost: Ipv4Addr,
    pub customer_cidrs: Vec<Ipv4Net>,
    pub customer_gateway: Ipv4Addr,
    pub tunnels: [Tunnel; 2],
}

impl Tunnel {
    /// Builds a tunnel from the spec's options (or defaults), checking the proposals.
    pub fn new(
        number: u8,
        platform_address: Ipv4Addr,
        psk: Psk,
        options: Option<&TunnelOptions>,
    ) -> Result<Tunnel, ProposalError> {
        let or_default = |given: Option<&Vec<crate::api::vpn_connection::Proposal>>, default: &[&str]| -> Vec<String> {
            match given {
                Some(list) if !list.is_empty() => list.iter().map(|p| p.0.clone()).collect(),
                _ => default.iter().map(|s| s.to_string()).collect(),
            }
        };
        let ike_proposals = or_default(options.map(|o| &o.ike_proposals), DEFAULT_IKE_PROPOSALS);
        let esp_proposals = or_default(options.map(|o| &o.esp_proposals), DEFAULT_ESP_PROPOSALS);
        for p in ike_proposals.iter().chain(&esp_proposals) {
            parse_proposal(p)?;
        }
        Ok(Tunnel {
            number,
            platform_address,
            psk,
            ike_proposals,
            esp_proposals,
            dpd_timeout_seconds: options
                .and_then(|o| o.dpd_timeout_seconds)
                .map(|t| t.max(30) as u32)
                .unwrap_or(DEFAULT_DPD_TIMEOUT_SECONDS),
            initiator: match options.and_then(|o| o.startup_action) {
                Some(StartupAction::Start) => Initiator::Both,
                _ => Initiator::Customer,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_parse_into_vendor_names() {
        assert_eq!(
            parse_proposal("aes256gcm16-prfsha256-ecp256").unwrap(),
            Algorithms {
                encryption: "AES-256-GCM-16".into(),
                integrity: Some("SHA2-256".into()),
                dh_group: Some(19)
            }
        );
        assert_eq!(parse_proposal("aes256-sha256-modp2048").unwrap().dh_group, Some(14));
        assert_eq!(parse_proposal("aes256gcm16").unwrap().integrity, None);
        assert!(matches!(
            parse_proposal("3des-md5-modp768"),
            Err(ProposalError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_proposal("sha256-modp2048"),
            Err(ProposalError::NoEncryption(_))
        ));
    }

    #[test]
    fn psk_debug_is_redacted() {
        assert_eq!(format!("{:?}", Psk::new("secretvalue1").unwrap()), "Psk(<redacted>)");
        // A key that would break out of `secret = "…"` in swanctl.conf (the injected section) cannot be made.
        for hostile in [
            "abc\"\n}\nconnections {",
            "key with space",
            "tab\tkey12345",
            "0xdeadbeef",
        ] {
            assert!(Psk::new(hostile).is_err(), "{hostile:?}");
        }
    }

    #[test]
    fn tunnel_defaults_and_options() {
        let t = Tunnel::new(
            1,
            Ipv4Addr::new(203, 0, 113, 1),
            Psk::new("k".repeat(32)).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(t.ike_proposals, DEFAULT_IKE_PROPOSALS);
        assert_eq!((t.dpd_timeout_seconds, t.initiator), (30, Initiator::Customer));
        let options = TunnelOptions {
            ike_proposals: vec![crate::api::vpn_connection::Proposal("aes128-sha1-modp2048".into())],
            dpd_timeout_seconds: Some(45),
            startup_action: Some(StartupAction::Start),
            ..Default::default()
        };
        let t = Tunnel::new(
            2,
            Ipv4Addr::new(203, 0, 113, 2),
            Psk::new("k".repeat(32)).unwrap(),
            Some(&options),
        )
        .unwrap();
        assert_eq!(t.ike_proposals, ["aes128-sha1-modp2048"]);
        assert_eq!((t.dpd_timeout_seconds, t.initiator), (45, Initiator::Both));
        let bad = TunnelOptions {
            esp_proposals: vec![crate::api::vpn_connection::Proposal("des-md5".into())],
            ..Default::default()
        };
        assert!(Tunnel::new(1, Ipv4Addr::LOCALHOST, Psk::new("k".repeat(32)).unwrap(), Some(&bad)).is_err());
    }
}
