//! VpnConnection status (pure): a tunnel's state as far as the operator can trust its gateway's report, the status
//! a reconcile's outcome gives, and the Event a change of it is worth.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;

use super::build;
use crate::{
    api::{
        VpnConnection, VpnConnectionStatus,
        common::CommonStatus,
        conditions::{ConditionStatus, READY, RECONCILING, STALLED, condition, merge_conditions, reason},
        vpn_connection::{TunnelState, TunnelStatus},
    },
    controllers::events::EventType,
    names::LABEL_TUNNEL,
};

/// The human states of a VpnConnection.
pub mod state {
    pub const PENDING: &str = "Pending";
    pub const AVAILABLE: &str = "Available";
}

/// Input that keeps the connection from being built: a condition reason and message (never a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub reason: &'static str,
    pub message: String,
    /// Resolves itself (an address to be given, a network to get its range): retried soon, `Reconciling`.
    /// Otherwise a person must act: `Stalled`, looked at again after a while.
    pub transient: bool,
}

impl Problem {
    pub fn stalled(reason: &'static str, message: impl ToString) -> Problem {
        Problem {
            reason,
            message: message.to_string(),
            transient: false,
        }
    }

    pub fn waiting(reason: &'static str, message: impl ToString) -> Problem {
        Problem {
            transient: true,
            ..Problem::stalled(reason, message)
        }
    }

    /// When to look again.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(if self.transient { 10 } else { 300 })
    }
}

/// Whether container `name` of `pod` reports ready; `None` before the kubelet reported it.
fn container_ready(pod: &Pod, name: &str) -> Option<bool> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.ready)
}

/// The tunnel's state as far as the operator can trust it. The gateway's own report counts only while its pod
/// runs, is not being deleted, and its containers are ready: charon loaded with its IKE sockets, and the agent
/// having confirmed the report within its readiness window. Otherwise the report may be minutes old (a dead
/// node, a stopped agent), and the status says why instead of repeating it.
pub(super) fn tunnel_status(
    outside: Option<Ipv4Addr>,
    pods: &[Pod],
    reports: Option<&ConfigMap>,
    tunnel: u8,
    previous: Option<&TunnelStatus>,
) -> TunnelStatus {
    let of_tunnel: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get(LABEL_TUNNEL).map(String::as_str) == Some(&tunnel.to_string()))
        .collect();
    // During a rollout the old pod terminates while the new one starts: the new one speaks for the tunnel.
    let pod = of_tunnel
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .or(of_tunnel.first())
        .copied();
    let reported = pod
        .and_then(|p| crate::report::report_of(reports, &p.name_any()))
        .and_then(|a| serde_json::from_str::<crate::vpn::state::Report>(a).ok());
    let down = |why: &str| (TunnelState::Down, None, Some(why.to_owned()));
    let (state, since, message) = match (pod, reported) {
        (None, _) => down("the gateway pod is not running"),
        (Some(p), _) if p.metadata.deletion_timestamp.is_some() => down("the gateway pod is terminating"),
        (Some(p), _) if p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") => {
            down("the gateway pod is not running yet")
        }
        (Some(p), _) if container_ready(p, "charon") == Some(false) => {
            down("charon is not ready: its configuration is not loaded or it has no IKE socket")
        }
        (Some(p), _) if container_ready(p, "agent") == Some(false) => (
            TunnelState::Unknown,
            None,
            Some(format!(
                "the gateway has not confirmed its tunnel's state for {} s",
                build::AGENT_REPORT_MAX_AGE_SECONDS
            )),
        ),
        (Some(_), None) => (
            TunnelState::Unknown,
            None,
            Some("waiting for the gateway to report".to_owned()),
        ),
        (Some(_), Some(r)) => (r.state, Some(r.since), Some(r.message)),
    };
    let last_change = match previous {
        Some(p) if p.state == state => p.last_change.clone(),
        _ => since.or_else(|| Some(jiff::Timestamp::now().to_string())),
    };
    TunnelStatus {
        outside_address: outside.map(|a| a.to_string()),
        state,
        last_change,
        message,
    }
}

/// The status a reconcile's outcome gives: the tunnels, the download and the relayed addresses stay as they were
/// when this reconcile did not learn them anew.
pub(super) fn build_status(
    vpn: &VpnConnection,
    outcome: Result<(), &Problem>,
    tunnels: Vec<TunnelStatus>,
    config_secret: Option<String>,
    relayed_addresses: Option<Vec<String>>,
    now: jiff::Timestamp,
) -> VpnConnectionStatus {
    let generation = vpn.metadata.generation;
    let c = |t: &str, s: ConditionStatus, r: &str, m: &str| condition(t, s, r, m, generation, now);
    let (state, conds) = match outcome {
        Ok(()) => (
            state::AVAILABLE,
            vec![
                c(
                    READY,
                    ConditionStatus::True,
                    "Available",
                    "both gateways are configured; download the device configuration from status.configSecret",
                ),
                c(RECONCILING, ConditionStatus::False, reason::UP_TO_DATE, ""),
                c(STALLED, ConditionStatus::False, reason::UP_TO_DATE, ""),
            ],
        ),
        Err(p) => (
            state::PENDING,
            vec![
                c(READY, ConditionStatus::False, p.reason, &p.message),
                c(RECONCILING, p.transient.into(), p.reason, &p.message),
                c(STALLED, (!p.transient).into(), p.reason, &p.message),
            ],
        ),
    };
    let previous = vpn.status.clone().unwrap_or_default();
    VpnConnectionStatus {
        tunnels: if tunnels.is_empty() {
            previous.tunnels.clone()
        } else {
            tunnels
        },
        config_secret: config_secret.or(previous.config_secret.clone()),
        relayed_addresses: relayed_addresses.unwrap_or_else(|| previous.relayed_addresses.clone()),
        common: CommonStatus {
            observed_generation: generation,
            state: Some(state.into()),
            conditions: merge_conditions(&previous.common.conditions, conds),
        },
    }
}

/// The Event a new status is worth: a change of state, or of a tunnel's state.
pub(super) fn event(
    previous: &VpnConnectionStatus,
    status: &VpnConnectionStatus,
    outcome: Result<(), &Problem>,
) -> Option<(EventType, String, String)> {
    let changed = previous.common.state != status.common.state
        || previous
            .tunnels
            .iter()
            .map(|t| t.state)
            .ne(status.tunnels.iter().map(|t| t.state));
    if !changed {
        return None;
    }
    Some(match outcome {
        Ok(()) => (
            EventType::Normal,
            "Available".to_owned(),
            format!(
                "tunnels: {}",
                status
                    .tunnels
                    .iter()
                    .map(|t| format!("{:?}", t.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(p) => (
            if p.transient {
                EventType::Normal
            } else {
                EventType::Warning
            },
            p.reason.to_owned(),
            p.message.clone(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::is_true;

    fn vpn() -> VpnConnection {
        let mut vpn = VpnConnection::new(
            "seattle",
            serde_json::from_value(serde_json::json!({
                "network": "acme-net",
                "customerGatewayAddress": "198.51.100.7",
                "customerCidrs": ["192.168.10.0/24"],
            }))
            .unwrap(),
        );
        vpn.metadata.generation = Some(2);
        vpn
    }

    fn tunnel(state: TunnelState) -> TunnelStatus {
        TunnelStatus {
            outside_address: Some("203.0.113.10".into()),
            state,
            last_change: None,
            message: None,
        }
    }

    #[test]
    fn a_problem_is_stalled_or_reconciling_and_keeps_what_was_known() {
        let mut vpn = vpn();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let available = build_status(
            &vpn,
            Ok(()),
            vec![tunnel(TunnelState::Up), tunnel(TunnelState::Up)],
            Some("seattle-device-config".into()),
            Some(vec!["10.20.30.74".into()]),
            now,
        );
        assert_eq!(available.common.state.as_deref(), Some(state::AVAILABLE));
        assert!(is_true(&available.common.conditions, READY));
        assert_eq!(available.common.observed_generation, Some(2));
        vpn.status = Some(available.clone());

        let stalled = Problem::stalled("InvalidPsk", "tunnel 1: too short");
        let status = build_status(&vpn, Err(&stalled), Vec::new(), None, None, now);
        assert_eq!(status.common.state.as_deref(), Some(state::PENDING));
        assert!(is_true(&status.common.conditions, STALLED) && !is_true(&status.common.conditions, RECONCILING));
        // What this reconcile did not learn anew stays as it was.
        assert_eq!(status.tunnels, available.tunnels);
        assert_eq!(status.config_secret, available.config_secret);
        assert_eq!(status.relayed_addresses, available.relayed_addresses);
        assert_eq!(stalled.retry_after(), Duration::from_secs(300));

        let waiting = Problem::waiting("RollingOut", "tunnel 2 follows");
        let status = build_status(&vpn, Err(&waiting), Vec::new(), None, None, now);
        assert!(is_true(&status.common.conditions, RECONCILING) && !is_true(&status.common.conditions, STALLED));
        assert_eq!(waiting.retry_after(), Duration::from_secs(10));
    }

    #[test]
    fn an_event_marks_a_change_of_state_or_of_a_tunnel_and_a_stall_is_a_warning() {
        let vpn = vpn();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let up = build_status(&vpn, Ok(()), vec![tunnel(TunnelState::Up)], None, None, now);
        let down = build_status(&vpn, Ok(()), vec![tunnel(TunnelState::Down)], None, None, now);
        assert_eq!(event(&up, &up, Ok(())), None);
        let (type_, reason, note) = event(&up, &down, Ok(())).expect("a tunnel went down");
        assert_eq!(
            (type_, reason.as_str(), note.as_str()),
            (EventType::Normal, "Available", "tunnels: Down")
        );
        let problem = Problem::stalled("InvalidProposal", "no such algorithm");
        let stalled = build_status(&vpn, Err(&problem), Vec::new(), None, None, now);
        let (type_, reason, _) = event(&up, &stalled, Err(&problem)).expect("a new state");
        assert_eq!((type_, reason.as_str()), (EventType::Warning, "InvalidProposal"));
    }
}
