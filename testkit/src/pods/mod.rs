//! The pod runner: pods the operator creates started as real processes, under their own spec (issue #18).
//!
//! Built so far, each with its own tests:
//! - [`images`]: which local program stands in for which image (unknown images wait with `ErrImagePull`);
//! - [`env`]: environment, `$(VAR)` expansion of command and arguments, Secrets and ConfigMaps as the kubelet does;
//! - [`security`]: user, capabilities and `no_new_privs` from the security contexts, as containerd applies them;
//! - [`sandbox`]: a node's pod network (a bridge in a namespace of its own), a pod's network namespace and
//!   address, and a container as PID 1 of its own PID namespace with those privileges, stopped with SIGTERM, grace
//!   period, SIGKILL.
//!
//! Not yet: volumes, probes, the controllers that make pods from StatefulSets, Deployments and Jobs, status
//! reported to the test API server, Services, DNS and NetworkPolicy (testkit/README.md keeps the table).

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
