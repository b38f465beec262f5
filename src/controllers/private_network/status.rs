//! Build the status (pure): what the network's status says, given what the reconcile found.

use ipnet::Ipv4Net;

use crate::{
    api::{
        PrivateNetwork, PrivateNetworkStatus,
        common::CommonStatus,
        conditions::{ConditionStatus, READY, RECONCILING, STALLED, condition, merge_conditions, reason},
        private_network::NetworkType,
    },
    ipam::pinghost,
};

/// The human states of a PrivateNetwork.
pub mod state {
    pub const PENDING: &str = "Pending";
    pub const READY: &str = "Ready";
    pub const FAILED: &str = "Failed";
    pub const MIGRATION_IN_PROGRESS: &str = "Migration In Progress";
}

/// What keeps a network from its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Needs a change from a person (another range, a larger pool): `Stalled=True`.
    Stalled { reason: &'static str, message: String },
    /// Being worked on: `Reconciling=True`.
    InProgress { reason: &'static str, message: String },
}

/// The status for `network` after a reconcile that found `allocation` and whether a database lives on it.
pub fn build_status(
    network: &PrivateNetwork,
    allocation: &Result<Ipv4Net, Problem>,
    hosts_database: bool,
    migrating: bool,
    now: jiff::Timestamp,
) -> PrivateNetworkStatus {
    let generation = network.metadata.generation;
    let previous = network
        .status
        .as_ref()
        .map(|s| s.common.conditions.clone())
        .unwrap_or_default();
    let c = |t: &str, s: ConditionStatus, r: &str, m: &str| condition(t, s, r, m, generation, now);
    let (state, conditions, block) = match allocation {
        Ok(block) => {
            let message = format!("holds {block}; pinghost {}", pinghost(*block));
            (
                state::READY,
                vec![
                    c(READY, ConditionStatus::True, reason::ALLOCATED, &message),
                    c(RECONCILING, ConditionStatus::False, reason::UP_TO_DATE, ""),
                    c(STALLED, ConditionStatus::False, reason::UP_TO_DATE, ""),
                ],
                Some(*block),
            )
        }
        Err(Problem::Stalled { reason, message }) => (
            state::FAILED,
            vec![
                c(READY, ConditionStatus::False, reason, message),
                c(RECONCILING, ConditionStatus::False, reason, message),
                c(STALLED, ConditionStatus::True, reason, message),
            ],
            None,
        ),
        Err(Problem::InProgress { reason, message }) => (
            state::PENDING,
            vec![
                c(READY, ConditionStatus::False, reason, message),
                c(RECONCILING, ConditionStatus::True, reason, message),
                c(STALLED, ConditionStatus::False, reason, message),
            ],
            None,
        ),
    };
    PrivateNetworkStatus {
        // A range once held stays recorded while the network cannot hold it (its lock lost, a claim contended): the
        // record is what the next reconcile claims again, and what its databases and VPNs still use. Clearing it
        // would let the network drift to the next free range.
        cidr: block
            .map(|b| b.to_string())
            .or_else(|| network.status.as_ref().and_then(|s| s.cidr.clone())),
        network_type: Some(if hosts_database {
            NetworkType::Production
        } else {
            NetworkType::Test
        }),
        pinghost: block.map(|b| pinghost(b).to_string()),
        common: CommonStatus {
            observed_generation: generation,
            state: Some(
                if migrating && block.is_some() {
                    state::MIGRATION_IN_PROGRESS
                } else {
                    state
                }
                .to_owned(),
            ),
            conditions: merge_conditions(&previous, conditions),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PrivateNetworkSpec, conditions::find};

    fn network() -> PrivateNetwork {
        let mut n = PrivateNetwork::new("prod", PrivateNetworkSpec::default());
        n.metadata.generation = Some(3);
        n
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn allocated_network_is_ready_with_pinghost() {
        let s = build_status(&network(), &Ok("10.20.30.64/26".parse().unwrap()), false, false, at(1));
        assert_eq!(s.cidr.as_deref(), Some("10.20.30.64/26"));
        assert_eq!(s.pinghost.as_deref(), Some("10.20.30.65"));
        assert_eq!(s.network_type, Some(NetworkType::Test));
        assert_eq!(s.common.state.as_deref(), Some("Ready"));
        assert_eq!(s.common.observed_generation, Some(3));
        assert_eq!(find(&s.common.conditions, READY).unwrap().status, "True");
        assert_eq!(find(&s.common.conditions, STALLED).unwrap().status, "False");
        assert_eq!(find(&s.common.conditions, READY).unwrap().observed_generation, Some(3));
    }

    #[test]
    fn database_makes_it_production() {
        let s = build_status(&network(), &Ok("10.20.30.64/26".parse().unwrap()), true, false, at(1));
        assert_eq!(s.network_type, Some(NetworkType::Production));
    }

    #[test]
    fn stalled_network_says_why() {
        let problem = Problem::Stalled {
            reason: reason::CIDR_CONFLICT,
            message: "held by acme/other".into(),
        };
        let s = build_status(&network(), &Err(problem), false, false, at(1));
        assert_eq!(s.cidr, None);
        assert_eq!(s.common.state.as_deref(), Some("Failed"));
        let stalled = find(&s.common.conditions, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "CidrConflict")
        );
        assert_eq!(find(&s.common.conditions, READY).unwrap().message, "held by acme/other");
    }

    #[test]
    fn a_network_that_loses_its_lock_keeps_its_recorded_range() {
        let mut n = network();
        n.status = Some(build_status(
            &n,
            &Ok("10.0.5.64/26".parse().unwrap()),
            true,
            false,
            at(1),
        ));
        let lost = Problem::Stalled {
            reason: reason::ALLOCATION_LOST,
            message: "lost".into(),
        };
        let s = build_status(&n, &Err(lost), true, false, at(2));
        // Kept, so that the next reconcile claims the same range again instead of the next free one.
        assert_eq!(s.cidr.as_deref(), Some("10.0.5.64/26"));
        assert_eq!(find(&s.common.conditions, READY).unwrap().status, "False");
        assert_eq!(s.pinghost, None);
    }

    #[test]
    fn in_progress_network_is_reconciling() {
        let problem = Problem::InProgress {
            reason: reason::ALLOCATING,
            message: "claiming".into(),
        };
        let s = build_status(&network(), &Err(problem), false, false, at(1));
        assert_eq!(s.common.state.as_deref(), Some("Pending"));
        assert_eq!(find(&s.common.conditions, RECONCILING).unwrap().status, "True");
    }

    #[test]
    fn same_outcome_builds_equal_status_so_nothing_is_written() {
        let mut n = network();
        let first = build_status(&n, &Ok("10.0.0.0/26".parse().unwrap()), false, false, at(1));
        n.status = Some(first.clone());
        let second = build_status(&n, &Ok("10.0.0.0/26".parse().unwrap()), false, false, at(99));
        assert_eq!(first, second);
    }
}
