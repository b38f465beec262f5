//! DatabaseMigration status (pure): the state and the kstatus conditions a step's outcome gives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{
    DatabaseMigration, DatabaseMigrationStatus,
    common::CommonStatus,
    conditions::{ConditionStatus, READY, RECONCILING, STALLED, condition, merge_conditions, reason},
    database_migration::state,
};

use super::PREMISES_ACCESS;

/// Where a step leaves the migration, in kstatus's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Finished: `Ready`.
    Done,
    /// Under way, or waiting for its time or for something that will come: `Reconciling`.
    Running,
    /// A person must act: `Stalled`.
    Stalled,
}

/// What a step says of the migration: its state (see [`state`]), how it stands, why, and the premises warning
/// (the target network has no VPN connection yet) where the step checked it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Outcome<'a> {
    pub state: &'a str,
    pub progress: Progress,
    pub reason: &'a str,
    pub message: &'a str,
    pub warning: Option<String>,
}

impl<'a> Outcome<'a> {
    fn new(state: &'a str, progress: Progress, reason: &'a str, message: &'a str) -> Self {
        Outcome {
            state,
            progress,
            reason,
            message,
            warning: None,
        }
    }

    pub fn done(state: &'a str, reason: &'a str, message: &'a str) -> Self {
        Outcome::new(state, Progress::Done, reason, message)
    }

    pub fn running(state: &'a str, reason: &'a str, message: &'a str) -> Self {
        Outcome::new(state, Progress::Running, reason, message)
    }

    pub fn stalled(state: &'a str, reason: &'a str, message: &'a str) -> Self {
        Outcome::new(state, Progress::Stalled, reason, message)
    }

    pub fn warning(self, warning: Option<String>) -> Self {
        Outcome { warning, ..self }
    }
}

/// The conditions of `outcome`: `Ready`, `Reconciling` and `Stalled`, and `PremisesAccess` until the migration
/// completes.
fn conditions(outcome: &Outcome<'_>, generation: Option<i64>, now: jiff::Timestamp) -> Vec<Condition> {
    let _on = |yes: bool| {
        if yes {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    let (why, message) = (outcome.reason, outcome.message);
    let stalled = outcome.progress == Progress::Stalled;
    let mut conditions = vec![
        condition(
            READY,
            (outcome.progress == Progress::Done).into(),
            why,
            message,
            generation,
            now,
        ),
        condition(
            RECONCILING,
            (outcome.progress == Progress::Running).into(),
            why,
            message,
            generation,
            now,
        ),
        condition(
            STALLED,
            stalled.into(),
            if stalled { why } else { reason::UP_TO_DATE },
            if stalled { message } else { "" },
            generation,
            now,
        ),
    ];
    if outcome.state != state::COMPLETED {
        conditions.push(match &outcome.warning {
            Some(w) => condition(
                PREMISES_ACCESS,
                ConditionStatus::False,
                "TargetHasNoVpn",
                w,
                generation,
                now,
            ),
            None => condition(
                PREMISES_ACCESS,
                ConditionStatus::True,
                "Kept",
                "premises keep their access",
                generation,
                now,
            ),
        });
    }
    conditions
}

/// Records `outcome` in `status`: the state, the generation it answers, the conditions merged with the last
/// written ones (a condition keeps its transition time while its status stays).
pub(super) fn record(
    m: &DatabaseMigration,
    status: &mut DatabaseMigrationStatus,
    outcome: &Outcome<'_>,
    now: jiff::Timestamp,
) {
    let generation = m.metadata.generation;
    let previous = m
        .status
        .as_ref()
        .map(|s| s.common.conditions.as_slice())
        .unwrap_or_default();
    status.common = CommonStatus {
        observed_generation: generation,
        state: Some(outcome.state.into()),
        conditions: merge_conditions(previous, conditions(outcome, generation, now)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::is_true;

    fn migration() -> DatabaseMigration {
        let mut m = DatabaseMigration::new(
            "move",
            serde_json::from_value(serde_json::json!({"database": "orders", "targetNetwork": "new-net"})).unwrap(),
        );
        m.metadata.generation = Some(3);
        m
    }

    #[test]
    fn each_progress_sets_exactly_one_kstatus_condition() {
        let m = migration();
        let now = jiff::Timestamp::UNIX_EPOCH;
        for (outcome, expected) in [
            (Outcome::done(state::COMPLETED, "Completed", "moved"), READY),
            (Outcome::running(state::PREPARING, "Copying", "copying"), RECONCILING),
            (Outcome::stalled(state::FAILED, "DatabaseNotFound", "gone"), STALLED),
        ] {
            let mut status = DatabaseMigrationStatus::default();
            record(&m, &mut status, &outcome, now);
            assert_eq!(status.common.state.as_deref(), Some(outcome.state));
            assert_eq!(status.common.observed_generation, Some(3));
            let set: Vec<&str> = [READY, RECONCILING, STALLED]
                .into_iter()
                .filter(|t| is_true(&status.common.conditions, t))
                .collect();
            assert_eq!(set, [expected], "{outcome:?}");
            let stalled = status.common.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
            if expected == STALLED {
                assert_eq!(
                    (stalled.reason.as_str(), stalled.message.as_str()),
                    (outcome.reason, outcome.message)
                );
            } else {
                assert_eq!(
                    (stalled.reason.as_str(), stalled.message.as_str()),
                    (reason::UP_TO_DATE, "")
                );
            }
        }
    }

    #[test]
    fn premises_access_is_said_until_the_migration_completes() {
        let m = migration();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let premises = |outcome: Outcome<'_>| {
            let mut status = DatabaseMigrationStatus::default();
            record(&m, &mut status, &outcome, now);
            status
                .common
                .conditions
                .iter()
                .find(|c| c.type_ == PREMISES_ACCESS)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let warned = Outcome::running(state::SCHEDULED, "Scheduled", "at 22:00").warning(Some("no VPN".into()));
        assert_eq!(premises(warned), Some(("False".into(), "TargetHasNoVpn".into())));
        let kept = Outcome::running(state::SCHEDULED, "Scheduled", "at 22:00");
        assert_eq!(premises(kept), Some(("True".into(), "Kept".into())));
        assert_eq!(premises(Outcome::done(state::COMPLETED, "Completed", "moved")), None);
    }
}
