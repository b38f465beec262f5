//! Test infrastructure for appdb-operator. Never part of the shipped binary.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod builtin_schemas;
pub mod copying;
pub mod customers;
pub mod dbserver;
pub mod faulty;
pub mod kubelet;
pub mod pod_security;
pub mod pods;
pub mod relay;
pub mod schema;
