//! The controllers, one folder per kind: dereference → validate → build → apply → status. No controller imports
//! another: what they share is in `crate::database`, the API types' readers, and here (`apply`: the SSA step;
//! `runtime`: the wiring every controller uses; `events`, `rbac`). The registry is `crate::manager::controllers`.

pub mod app_database;
pub mod apply;
pub mod database_migration;
pub mod error;
pub mod events;
pub mod private_network;
pub mod rbac;
pub mod runtime;
pub mod vpn_connection;
