//! Rules and talk of the MySQL / MariaDB servers the operator runs.

pub mod admin;
pub mod dialect;
pub mod engine;
pub mod migrate;
pub mod password;
