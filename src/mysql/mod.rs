//! Rules and talk of the MySQL / MariaDB servers the operator runs.

pub mod password;
