//! The pod runner: pods the operator creates started as real processes, under their own spec (issue #18).
//!
//! - [`images`], [`pod`]: which program stands in for which image, and one Pod started from its spec;
//! - [`env`], [`volumes`], [`security`]: environment, volumes and security context as the kubelet and containerd
//!   make them;
//! - [`sandbox`], [`netns_socket`]: nodes, pod network namespaces, containers as PID 1, sockets inside namespaces;
//! - [`kubelet`], [`workloads`]: the kubelet and the StatefulSet, Deployment and Job controllers against the test
//!   API server;
//! - [`services`], [`policy`], [`api_access`]: kube-proxy's Services, NetworkPolicy and the API server as pods
//!   reach them.
//!
//! testkit/README.md keeps the table of what the runner does and does not do.

pub mod api_access;
pub mod env;
pub mod images;
pub mod kubelet;
pub mod netns_socket;
pub mod pod;
pub mod policy;
pub mod sandbox;
pub mod security;
pub mod services;
pub mod volumes;
pub mod workloads;
