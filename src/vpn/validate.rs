//! Validation of the customer's side of a VPN connection (pure): what CEL cannot check at admission.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// IANA special-purpose IPv4 blocks that can never be a customer's public gateway (RFC 6890 and successors).
const SPECIAL_PURPOSE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// Documentation ranges (RFC 5737): refused unless the operator runs with the test-only override.
const DOCUMENTATION: &[&str] = &["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];

fn nets(list: &'static [&'static str]) -> impl Iterator<Item = Ipv4Net> {
    list.iter().map(|s| s.parse().expect("valid constant"))
}

/// Why a VPN connection's customer side is refused. Each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerSideError {
    #[error("customer CIDR {0} is not an IPv4 CIDR")]
    Unparsable(String),
    #[error("customer CIDR {given} is not canonical: write {canonical}")]
    NotCanonical { given: String, canonical: Ipv4Net },
    #[error("customer CIDR {0} is not inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")]
    NotPrivate(Ipv4Net),
    #[error("customer CIDR {customer} overlaps the network's own range {network}")]
    OverlapsNetwork { customer: Ipv4Net, network: Ipv4Net },
    #[error("customer CIDRs {0} and {1} overlap")]
    OverlapEachOther(Ipv4Net, Ipv4Net),
    #[error("customer CIDR {customer} overlaps {reserved}, which the platform uses itself")]
    OverlapsReserved { customer: Ipv4Net, reserved: Ipv4Net },
    #[error("customer gateway {0} is not an IPv4 address")]
    GatewayUnparsable(String),
    #[error("customer gateway {address} is in the special-purpose block {block}; it must be a public unicast address")]
    GatewayNotPublic { address: Ipv4Addr, block: Ipv4Net },
    #[error("customer gateway {address} is in the documentation block {block}; use the device's real public address")]
    GatewayDocumentation { address: Ipv4Addr, block: Ipv4Net },
}

impl CustomerSideError {
    pub fn reason(&self) -> &'static str {
        match self {
            CustomerSideError::Unparsable(_)
            | CustomerSideError::NotCanonical { .. }
            | CustomerSideError::NotPrivate(_) => "InvalidCustomerCidr",
            CustomerSideError::OverlapsNetwork { .. }
            | CustomerSideError::OverlapEachOther(..)
            | CustomerSideError::OverlapsReserved { .. } => "CustomerCidrOverlap",
            CustomerSideError::GatewayUnparsable(_)
            | CustomerSideError::GatewayNotPublic { .. }
            | CustomerSideError::GatewayDocumentation { .. } => "InvalidCustomerGateway",
        }
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(b) || b.contains(a)
}

/// Parses and checks the customer's ranges against the network's /26, each other and the platform's ranges.
pub fn customer_cidrs(
    given: &[String],
    network: Ipv4Net,
    reserved: &[Ipv4Net],
) -> Result<Vec<Ipv4Net>, CustomerSideError> {
    let mut parsed: Vec<Ipv4Net> = Vec::new();
    for text in given {
        let net: Ipv4Net = text.parse().map_err(|_| CustomerSideError::Unparsable(text.clone()))?;
        if net.trunc() != net {
            return Err(CustomerSideError::NotCanonical {
                given: text.clone(),
                canonical: net.trunc(),
            });
        }
        if !nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]).any(|p| p.contains(&net)) {
            return Err(CustomerSideError::NotPrivate(net));
        }
        if overlaps(&net, &network) {
            return Err(CustomerSideError::OverlapsNetwork { customer: net, network });
        }
        if let Some(other) = parsed.iter().find(|o| overlaps(o, &net)) {
            return Err(CustomerSideError::OverlapEachOther(*other, net));
        }
        if let Some(r) = reserved.iter().find(|r| overlaps(r, &net)) {
            return Err(CustomerSideError::OverlapsReserved {
                customer: net,
                reserved: *r,
            });
        }
        parsed.push(net);
    }
    Ok(parsed)
}

/// Checks the customer's public gateway address. `allow_documentation` is the test-only override.
pub fn customer_gateway(text: &str, allow_documentation: bool) -> Result<Ipv4Addr, CustomerSideError> {
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| CustomerSideError::GatewayUnparsable(text.to_owned()))?;
    if let Some(block) = nets(SPECIAL_PURPOSE).find(|b| b.contains(&address)) {
        return Err(CustomerSideError::GatewayNotPublic { address, block });
    }
    if !allow_documentation && let Some(block) = nets(DOCUMENTATION).find(|b| b.contains(&address)) {
        return Err(CustomerSideError::GatewayDocumentation { address, block });
    }
    Ok(address)
}

/// The Pod Security Admission label that decides which pods a namespace admits.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// The gateway pods need `NET_ADMIN` as root (XFRM or the TUN device), which only the `privileged` Pod Security
/// level admits. A namespace enforcing `baseline` or `restricted` would refuse every gateway pod, and the
/// Deployment would only say so in a ReplicaSet's events: say it on the VpnConnection instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "namespace {namespace} enforces the {level:?} Pod Security level, which refuses the VPN gateway pods (they need NET_ADMIN as root); the platform labels namespaces that may run VPN gateways {POD_SECURITY_ENFORCE}=privileged (docs/vpn.md, \"Pod Security\")"
)]
pub struct PodSecurityForbidsGateway {
    pub namespace: String,
    pub level: String,
}

impl PodSecurityForbidsGateway {
    pub fn reason(&self) -> &'static str {
        "PodSecurityForbidsGateway"
    }
}

/// Whether a namespace with this `enforce` label admits the gateway pods. No label: the cluster's default level
/// applies, which the operator cannot read; it is `privileged` unless the platform configured otherwise.
pub fn gateway_admitted(namespace: &str, enforce: Option<&str>) -> Result<(), PodSecurityForbidsGateway> {
    match enforce.map(str::trim) {
        None | Some("privileged") => Ok(()),
        Some(level) => Err(PodSecurityForbidsGateway {
            namespace: namespace.to_owned(),
            level: level.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_privileged_namespace_admits_the_gateways() {
        assert_eq!(gateway_admitted("acme", None), Ok(()));
        assert_eq!(gateway_admitted("acme", Some("privileged")), Ok(()));
        for level in ["baseline", "restricted"] {
            let e = gateway_admitted("acme", Some(level)).unwrap_err();
            assert_eq!(e.reason(), "PodSecurityForbidsGateway");
            let message = e.to_string();
            assert!(
                message.contains(&format!("enforces the \"{level}\" Pod Security level")),
                "{message}"
            );
            assert!(
                message.contains("pod-security.kubernetes.io/enforce=privileged"),
                "{message}"
            );
        }
    }
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn customer_cidr_cases() {
        let network = net("10.20.30.64/26");
        let reserved = [net("10.244.0.0/16")];
        let check = |list: &[&str]| {
            customer_cidrs(
                &list.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                network,
                &reserved,
            )
        };
        assert_eq!(
            check(&["192.168.10.0/24", "172.20.0.0/16"]),
            Ok(vec![net("192.168.10.0/24"), net("172.20.0.0/16")])
        );
        assert_eq!(check(&["192.168.10.1/24"]).unwrap_err().reason(), "InvalidCustomerCidr");
        assert_eq!(
            check(&["8.8.8.0/24"]).unwrap_err(),
            CustomerSideError::NotPrivate(net("8.8.8.0/24"))
        );
        assert_eq!(check(&["10.20.0.0/16"]).unwrap_err().reason(), "CustomerCidrOverlap");
        assert_eq!(
            check(&["192.168.0.0/16", "192.168.10.0/24"]).unwrap_err(),
            CustomerSideError::OverlapEachOther(net("192.168.0.0/16"), net("192.168.10.0/24"))
        );
        assert_eq!(check(&["10.244.5.0/24"]).unwrap_err().reason(), "CustomerCidrOverlap");
        assert_eq!(
            check(&["nonsense"]).unwrap_err(),
            CustomerSideError::Unparsable("nonsense".into())
        );
    }

    #[test]
    fn gateway_cases() {
        assert_eq!(
            customer_gateway("93.184.216.34", false),
            Ok(Ipv4Addr::new(93, 184, 216, 34))
        );
        for bad in [
            "10.1.1.1",
            "100.64.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "192.0.0.5",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
        ] {
            assert_eq!(
                customer_gateway(bad, true).unwrap_err().reason(),
                "InvalidCustomerGateway",
                "{bad}"
            );
        }
        assert!(matches!(
            customer_gateway("198.51.100.7", false),
            Err(CustomerSideError::GatewayDocumentation { .. })
        ));
        assert_eq!(
            customer_gateway("198.51.100.7", true),
            Ok(Ipv4Addr::new(198, 51, 100, 7))
        );
        assert!(customer_gateway("host.example", false).is_err());
    }
}
