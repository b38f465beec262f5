//! DatabaseMigration validate and decide (pure): the spec's own checks, what a migration that has not started shows
//! and when it looks again, what a copy under way shows, and which databases keep a source network alive. Whether
//! a migration may start at all is `crate::migration::decide`, shared with `kubectl appdb`.

use std::time::Duration;

use kube::ResourceExt;

use super::copy;
use crate::{
    api::{
        AppDatabase, DatabaseMigration, DatabaseMigrationStatus,
        database_migration::{CopyPhase, MigrationStrategy, state},
    },
    migration::{Decision, Schedule, parse_schedule},
};

/// The spec's own checks (pure): the schedule parses in its time zone, and a named target image comes from where
/// the platform allows. A refusal is `(reason, message)` for a Stalled condition.
pub(super) fn validate_spec(
    m: &DatabaseMigration,
    allowed_images: &[String],
) -> Result<Option<Schedule>, (&'static str, String)> {
    let scheduled = m
        .spec
        .scheduled_at
        .as_deref()
        .map(|at| parse_schedule(at, m.spec.time_zone.as_deref()))
        .transpose()
        .map_err(|e| (e.reason(), e.to_string()))?;
    if let Some(image) = m.spec.target.as_ref().and_then(|t| t.image.as_deref())
        && let Err(e) = crate::image_policy::check(image, allowed_images)
    {
        return Err(("ImageNotAllowed", format!("target.image: {e}")));
    }
    Ok(scheduled)
}

/// What a migration that has not started shows, and when it looks again.
#[derive(Debug, PartialEq)]
pub(super) struct NotStarted {
    pub state: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub look_again_in: Duration,
}

/// The status of a migration that has not started, for `decision` (pure). Starting records the source network, the
/// start time and, for a copy, the new server's name; it comes back soon to take the first step.
pub(super) fn before_start(
    m: &DatabaseMigration,
    decision: Decision,
    source_network: Option<String>,
    status: &mut DatabaseMigrationStatus,
    now: jiff::Timestamp,
) -> NotStarted {
    let database = &m.spec.database;
    let copying = m.spec.effective_strategy() != MigrationStrategy::Readdress;
    match decision {
        Decision::Start if copying => {
            let server = crate::database::copy_server_name(database, &m.uid().unwrap_or_default());
            let message = format!("creating the new server {server} for AppDatabase {database}");
            status.source_network = source_network;
            status.copy = Some(crate::api::database_migration::CopyStatus {
                server,
                ..Default::default()
            });
            status.phase_times.insert("Preparing".into(), now.to_string());
            NotStarted {
                state: state::PREPARING,
                reason: "Preparing",
                message,
                look_again_in: Duration::from_secs(2),
            }
        }
        Decision::Start => {
            status.source_network = source_network;
            status.phase_times.insert("MigrationInProgress".into(), now.to_string());
            NotStarted {
                state: state::MIGRATION_IN_PROGRESS,
                reason: "MigrationInProgress",
                message: format!("moving AppDatabase {database} to {}", m.spec.target_network),
                look_again_in: Duration::from_secs(2),
            }
        }
        Decision::WaitUntil(at) => NotStarted {
            state: state::SCHEDULED,
            reason: "Scheduled",
            message: format!("scheduled for {at} (UTC); every precondition is met"),
            // At most a minute: the preconditions are checked again meanwhile.
            look_again_in: Duration::from_secs((at - now).get_seconds().clamp(1, 60) as u64),
        },
        Decision::Blocked { unmet, overdue } => {
            let listed = unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            NotStarted {
                state: state::SCHEDULED,
                reason: unmet.first().map_or("Blocked", |first| first.reason()),
                message: if overdue {
                    format!("{listed} (the scheduled time has passed; the migration starts once this is fixed)")
                } else {
                    listed
                },
                look_again_in: Duration::from_secs(10),
            }
        }
    }
}

/// The databases other than `moved` that live on `network`, by name. Pure.
pub(super) fn still_on(databases: &[AppDatabase], network: &str, moved: &str) -> Vec<String> {
    let mut names: Vec<String> = databases
        .iter()
        .filter(|d| d.name_any() != moved && d.metadata.deletion_timestamp.is_none() && d.current_network() == network)
        .map(|d| d.name_any())
        .collect();
    names.sort();
    names
}

/// What a copy under way shows (pure): "Preparing" while the source still takes writes, "Migration In Progress"
/// once the engine has fenced it, with the last phase, rows copied and replication lag.
pub(super) fn copying(folded: &copy::Folded) -> (&'static str, &'static str, String) {
    let phase = folded.copy.phase.map_or("starting", CopyPhase::as_str);
    let mut message = format!("copying to {}: phase {phase}", folded.copy.server);
    if let Some(rows) = folded.copy.rows {
        message.push_str(&format!(", {rows} rows copied"));
    }
    if let Some(lag) = folded.copy.lag_seconds {
        message.push_str(&format!(", replication lag {lag}s"));
    }
    if folded.fenced {
        (state::MIGRATION_IN_PROGRESS, "MigrationInProgress", message)
    } else {
        (state::PREPARING, "Copying", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{AppDatabase, database_migration::CopyPhase},
        migration::Unmet,
    };

    #[test]
    fn a_source_is_deleted_only_when_no_other_database_lives_there() {
        let db = |name: &str, network: &str, moved_to: Option<&str>| {
            let mut d: AppDatabase = serde_json::from_value(serde_json::json!({
                "apiVersion": "appdb.dev/v1alpha1", "kind": "AppDatabase",
                "metadata": {"name": name, "namespace": "acme"},
                "spec": {"network": network, "admin": {"username": "a", "passwordSecretRef": {"name": "s", "key": "k"}},
                         "storage": {"size": "1Gi"}}
            }))
            .unwrap();
            if let Some(to) = moved_to {
                d.status = Some(serde_json::from_value(serde_json::json!({"network": to})).unwrap());
            }
            d
        };
        let all = [
            db("orders", "prod", Some("prod-2026")),
            db("billing", "prod", None),
            db("moved-in", "old", Some("prod")),
            db("moved-out", "prod", Some("elsewhere")),
        ];
        assert_eq!(still_on(&all, "prod", "orders"), ["billing", "moved-in"]);
        assert!(still_on(&all[..1], "prod", "orders").is_empty());
        assert!(still_on(&all, "old", "orders").is_empty());
    }

    fn migration(strategy: MigrationStrategy) -> DatabaseMigration {
        let mut m = DatabaseMigration::new(
            "to-prod-2026",
            crate::api::DatabaseMigrationSpec {
                database: "orders".into(),
                target_network: "prod-2026".into(),
                scheduled_at: None,
                time_zone: None,
                strategy: Some(strategy),
                target: None,
                delete_source_network: true,
            },
        );
        m.metadata.uid = Some("0f6a1c2e-uid".into());
        m
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("time")
    }

    #[test]
    fn starting_a_copy_names_its_server_and_records_where_it_started() {
        let m = migration(MigrationStrategy::Replicate);
        let mut status = DatabaseMigrationStatus::default();
        let next = before_start(&m, Decision::Start, Some("prod".into()), &mut status, at(100));
        assert_eq!((next.state, next.reason), (state::PREPARING, "Preparing"));
        let server = status.copy.as_ref().expect("copy").server.clone();
        assert_eq!(server, crate::database::copy_server_name("orders", "0f6a1c2e-uid"));
        assert!(next.message.contains(&server), "{}", next.message);
        assert_eq!(status.source_network.as_deref(), Some("prod"));
        assert_eq!(status.phase_times.get("Preparing"), Some(&at(100).to_string()));
    }

    #[test]
    fn starting_a_readdress_is_in_progress_at_once_without_a_copy() {
        let m = migration(MigrationStrategy::Readdress);
        let mut status = DatabaseMigrationStatus::default();
        let next = before_start(&m, Decision::Start, Some("prod".into()), &mut status, at(100));
        assert_eq!(next.state, state::MIGRATION_IN_PROGRESS);
        assert_eq!(next.message, "moving AppDatabase orders to prod-2026");
        assert_eq!(status.copy, None);
        assert!(status.phase_times.contains_key("MigrationInProgress"));
    }

    #[test]
    fn waiting_for_the_schedule_looks_again_within_a_minute_and_changes_nothing() {
        let m = migration(MigrationStrategy::Readdress);
        let mut status = DatabaseMigrationStatus::default();
        let far = before_start(&m, Decision::WaitUntil(at(10_000)), None, &mut status, at(100));
        assert_eq!((far.state, far.reason), (state::SCHEDULED, "Scheduled"));
        assert_eq!(far.look_again_in, Duration::from_secs(60));
        let near = before_start(&m, Decision::WaitUntil(at(103)), None, &mut status, at(100));
        assert_eq!(near.look_again_in, Duration::from_secs(3));
        let past = before_start(&m, Decision::WaitUntil(at(90)), None, &mut status, at(100));
        assert_eq!(past.look_again_in, Duration::from_secs(1));
        assert_eq!(status, DatabaseMigrationStatus::default());
    }

    #[test]
    fn a_blocked_start_names_every_unmet_precondition_and_the_first_as_reason() {
        let m = migration(MigrationStrategy::Readdress);
        let mut status = DatabaseMigrationStatus::default();
        let unmet = vec![
            Unmet::DatabaseNotReady("orders".into()),
            Unmet::TargetNotFound("prod-2026".into()),
        ];
        let on_time = before_start(
            &m,
            Decision::Blocked {
                unmet: unmet.clone(),
                overdue: false,
            },
            None,
            &mut status,
            at(100),
        );
        assert_eq!((on_time.state, on_time.reason), (state::SCHEDULED, "DatabaseNotReady"));
        for each in &unmet {
            assert!(on_time.message.contains(&each.to_string()), "{}", on_time.message);
        }
        assert!(!on_time.message.contains("has passed"));
        let overdue = before_start(
            &m,
            Decision::Blocked { unmet, overdue: true },
            None,
            &mut status,
            at(100),
        );
        assert!(
            overdue.message.contains("the scheduled time has passed"),
            "{}",
            overdue.message
        );
        assert_eq!(status, DatabaseMigrationStatus::default());
    }

    #[test]
    fn a_copy_is_preparing_until_the_source_is_fenced_and_says_how_far_it_got() {
        let mut folded = copy::Folded {
            copy: crate::api::database_migration::CopyStatus {
                server: "orders-4f1a2b".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            copying(&folded),
            (
                state::PREPARING,
                "Copying",
                "copying to orders-4f1a2b: phase starting".into()
            )
        );
        folded.copy.phase = Some(CopyPhase::Snapshot);
        folded.copy.rows = Some(1200);
        folded.copy.lag_seconds = Some(3);
        let (preparing, _, message) = copying(&folded);
        assert_eq!(preparing, state::PREPARING);
        assert_eq!(
            message,
            format!(
                "copying to orders-4f1a2b: phase {}, 1200 rows copied, replication lag 3s",
                CopyPhase::Snapshot.as_str()
            )
        );
        folded.fenced = true;
        let (fenced, reason, _) = copying(&folded);
        assert_eq!((fenced, reason), (state::MIGRATION_IN_PROGRESS, "MigrationInProgress"));
    }

    #[test]
    fn the_spec_is_refused_for_a_bad_schedule_or_an_image_from_elsewhere() {
        let allowed = vec!["registry.example/mysql".to_owned()];
        let mut m = migration(MigrationStrategy::Replicate);
        assert_eq!(validate_spec(&m, &allowed), Ok(None));
        m.spec.scheduled_at = Some("2026-12-24T02:00:00Z".into());
        let scheduled = validate_spec(&m, &allowed).expect("a valid schedule");
        assert_eq!(scheduled.map(|s| s.at), Some("2026-12-24T02:00:00Z".parse().unwrap()));
        m.spec.scheduled_at = Some("next tuesday".into());
        let (reason, message) = validate_spec(&m, &allowed).expect_err("unparsable");
        assert_eq!(reason, "InvalidSchedule");
        assert!(message.contains("next tuesday"), "{message}");
        m.spec.scheduled_at = None;
        m.spec.target = Some(crate::api::database_migration::MigrationTarget {
            image: Some("docker.io/someone/mysql:9.7".into()),
            ..Default::default()
        });
        let (reason, message) = validate_spec(&m, &allowed).expect_err("not allowed");
        assert_eq!(reason, "ImageNotAllowed");
        assert!(message.starts_with("target.image: "), "{message}");
        m.spec.target.as_mut().unwrap().image = Some("registry.example/mysql:9.7".into());
        assert_eq!(validate_spec(&m, &allowed), Ok(None));
    }
}
