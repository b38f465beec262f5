//! Condition types, reasons and the helper that keeps `lastTransitionTime` honest.
//!
//! kstatus (Flux, `kubectl wait`) reads `Ready`, `Reconciling` and `Stalled`; Argo CD health checks read the same.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, apimachinery::pkg::apis::meta::v1::Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Condition reasons (CamelCase), as platform engineers and health checks match on them.
pub mod reason {
    /// The network holds its range.
    pub const ALLOCATED: &str = "Allocated";
    /// Looking for, or claiming, a range.
    pub const ALLOCATING: &str = "Allocating";
    /// The chosen range is held by another network.
    pub const CIDR_CONFLICT: &str = "CidrConflict";
    /// The chosen range lies outside the operator's pool.
    pub const OUTSIDE_POOL: &str = "OutsidePool";
    /// The chosen range overlaps a range the platform reserves for itself.
    pub const RESERVED: &str = "Reserved";
    /// The range the network had (`status.cidr`) lost its lock and was claimed by another network meanwhile; the network
    /// is never given another range silently.
    pub const ALLOCATION_LOST: &str = "AllocationLost";
    /// No free /26 is left in the pool.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// The spec cannot be used as written (admission normally refuses this first).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Nothing is in progress.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// The object is being deleted.
    pub const DELETING: &str = "Deleting";
}

/// Status of a condition, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Builds a condition observed now for `generation`.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Puts `new` into `conditions`, keeping the previous `lastTransitionTime` when the status did not flip, as the
/// Kubernetes API conventions require. Returns the merged list sorted by type so that equal states serialise equally
/// (no write when nothing changed).
pub fn merge_conditions(previous: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    let mut merged: Vec<Condition> = new
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is there with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let old = vec![condition(
            READY,
            ConditionStatus::False,
            "Waiting",
            "a",
            Some(1),
            at(10),
        )];
        let new = vec![condition(
            READY,
            ConditionStatus::False,
            "StillWaiting",
            "b",
            Some(2),
            at(20),
        )];
        let merged = merge_conditions(&old, new);
        assert_eq!(merged[0].last_transition_time, Time(at(10)));
        assert_eq!(merged[0].reason, "StillWaiting");
        assert_eq!(merged[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let old = vec![condition(
            READY,
            ConditionStatus::False,
            "Waiting",
            "a",
            Some(1),
            at(10),
        )];
        let new = vec![condition(READY, ConditionStatus::True, "Ready", "b", Some(1), at(20))];
        assert_eq!(merge_conditions(&old, new)[0].last_transition_time, Time(at(20)));
    }

    #[test]
    fn merged_conditions_are_sorted_by_type() {
        let new = vec![
            condition(STALLED, ConditionStatus::False, "A", "", None, at(1)),
            condition(READY, ConditionStatus::True, "A", "", None, at(1)),
            condition(RECONCILING, ConditionStatus::False, "A", "", None, at(1)),
        ];
        let types: Vec<_> = merge_conditions(&[], new).into_iter().map(|c| c.type_).collect();
        assert_eq!(types, [READY, RECONCILING, STALLED]);
    }
}
