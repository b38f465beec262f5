//! appdb-operator: per-customer application databases, private networks, site-to-site VPNs and database migrations
//! on Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod controllers;
pub mod crdgen;
pub mod database;
pub mod image_policy;
pub mod ipam;
pub mod manager;
pub mod metrics;
pub mod migration;
pub mod mysql;
pub mod names;
pub mod netpol;
pub mod placement;
pub mod plugin;
pub mod report;
pub mod secret;
pub mod telemetry;
pub mod vpn;
pub mod workload;
