//! One file per `appdb-operator` subcommand: what it reads, what it runs, and its exit code. The arguments are
//! declared in `crate::cli`; `main.rs` only dispatches.

pub mod crds;
pub mod ipam;
pub mod migrate;
pub mod rotate_password;
pub mod run;
pub mod vpn_agent;
