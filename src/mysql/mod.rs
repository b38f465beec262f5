//! Rules and talk of the MySQL / MariaDB servers the operator runs.

/// The port every database server listens on, its Service serves, the NetworkPolicies open and the VPN gateways
/// relay; also the tunnel's default local port.
pub const PORT: u16 = 3306;

pub mod admin;
pub mod dialect;
pub mod engine;
pub mod migrate;
pub mod password;
