//! Validate: the range a network asks for, as a typed block.

use ipnet::Ipv4Net;

use crate::{
    api::PrivateNetwork,
    ipam::{BlockError, parse_block},
};

/// The range the customer chose, or `None` for automatic assignment. Admission refuses malformed ranges first; this
/// is the controller's own guard for objects admitted by an older CRD.
pub fn requested_block(network: &PrivateNetwork) -> Result<Option<Ipv4Net>, BlockError> {
    network.spec.cidr.as_deref().map(parse_block).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PrivateNetworkSpec;

    fn network(cidr: Option<&str>) -> PrivateNetwork {
        PrivateNetwork::new(
            "n",
            PrivateNetworkSpec {
                cidr: cidr.map(str::to_owned),
                description: None,
            },
        )
    }

    #[test]
    fn requested_block_cases() {
        assert_eq!(requested_block(&network(None)), Ok(None));
        assert_eq!(
            requested_block(&network(Some("10.0.0.64/26"))),
            Ok(Some("10.0.0.64/26".parse().unwrap()))
        );
        assert!(matches!(
            requested_block(&network(Some("10.0.0.0/25"))),
            Err(BlockError::NotA26(_))
        ));
        assert!(matches!(
            requested_block(&network(Some("10.0.0.1/26"))),
            Err(BlockError::NotAligned(..))
        ));
    }
}
