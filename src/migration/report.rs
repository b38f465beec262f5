//! What the migration engine (the `migrate` Job, another process) tells the operator: one [`PhaseReport`] per
//! phase it finishes, as JSON lines on stdout and, as a JSON array, under its pod's key of the migration's report
//! ConfigMap (`crate::report`). The engine writes these and the DatabaseMigration controller folds them into
//! status; this is the one definition both sides use. The phases themselves ([`CopyPhase`]) are part of the migration's status.

use serde::{Deserialize, Serialize};

pub use crate::api::database_migration::CopyPhase;

/// One finished phase of the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub phase: CopyPhase,
    pub start: String,
    pub end: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PhaseReport {
    /// A report of `phase` that started at `start` and ends now; the details are filled in by the caller.
    pub fn ended(phase: CopyPhase, start: jiff::Timestamp) -> PhaseReport {
        PhaseReport {
            phase,
            start: start.to_string(),
            end: jiff::Timestamp::now().to_string(),
            rows: None,
            bytes: None,
            lag_seconds: None,
            downtime_seconds: None,
            message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_travel_as_the_words_the_engine_documents() {
        let every = [
            CopyPhase::Prepare,
            CopyPhase::Snapshot,
            CopyPhase::Replicate,
            CopyPhase::Verify,
            CopyPhase::Fence,
            CopyPhase::CatchUp,
            CopyPhase::Promote,
            CopyPhase::Switch,
            CopyPhase::Release,
            CopyPhase::Done,
            CopyPhase::RolledBack,
            CopyPhase::Error,
        ];
        for phase in every {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
            assert_eq!(serde_json::from_str::<CopyPhase>(&json).unwrap(), phase);
        }
        assert_eq!(serde_json::to_string(&CopyPhase::CatchUp).unwrap(), "\"catch-up\"");
    }

    #[test]
    fn a_phase_from_a_newer_engine_does_not_hide_the_others() {
        let reports: Vec<PhaseReport> = serde_json::from_str(
            r#"[{"phase":"prepare","start":"s","end":"e"},{"phase":"warm-up","start":"s","end":"e"}]"#,
        )
        .unwrap();
        assert_eq!(reports[0].phase, CopyPhase::Prepare);
        assert_eq!(reports[1].phase, CopyPhase::Unknown);
    }
}
