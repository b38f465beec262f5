//! `DatabaseMigration`: move an AppDatabase to another PrivateNetwork at a scheduled time.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::CommonStatus;

/// Desired migration of a database to another network.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "appdb.dev",
    version = "v1alpha1",
    kind = "DatabaseMigration",
    namespaced,
    shortname = "dbmig",
    category = "appdb",
    status = "DatabaseMigrationStatus",
    doc = "Moves an AppDatabase to another PrivateNetwork (same namespace) at a scheduled time. During the move both \
           networks show \"Migration In Progress\"; afterwards the database has its address in the new network, which \
           becomes Production, and (by default) the previous network and its VPN connections are deleted.",
    validation = Rule::new("!has(self.spec.target) || !has(self.spec.strategy) || self.spec.strategy != 'Readdress'").message("a target server (version, image or storage) needs a copying strategy: Replicate or DumpRestore"),
    validation = Rule::new("!has(self.spec.scheduledAt) || has(self.spec.timeZone) || self.spec.scheduledAt.matches('(Z|[+-][0-9]{2}:[0-9]{2})$')").message("scheduledAt without an offset needs timeZone (an IANA name such as Europe/Amsterdam), or write the offset: 2026-12-05T22:00:00+01:00"),
    validation = Rule::new("!has(self.spec.timeZone) || has(self.spec.scheduledAt)").message("timeZone applies to scheduledAt, which is not set"),
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.database"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetNetwork"),
    printcolumn(name = "Scheduled", type_ = "string", json_path = ".spec.scheduledAt"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.timeZone", priority = 1),
    printcolumn(name = "Starts (UTC)", type_ = "string", json_path = ".status.scheduledFor", priority = 1),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "size(self.metadata.name) <= 54 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    ).message("a DatabaseMigration's name must be at most 54 characters of lowercase letters, digits and '-' (no dots): its Jobs are named <name>-copy and <name>-rollback")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationSpec {
    /// Name of the AppDatabase (same namespace) to move. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("database is immutable: create another DatabaseMigration"))]
    pub database: String,

    /// Name of the PrivateNetwork (same namespace) to move the database to. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("targetNetwork is immutable: create another DatabaseMigration"))]
    pub target_network: String,

    /// When to start. Either an RFC 3339 time with an offset, in any zone (`2026-12-05T22:00:00+01:00`), or a local
    /// time (`2026-12-05T22:00:00`) on the clock of `timeZone`. With both an offset and `timeZone`, the offset must be
    /// the zone's at that time (that is how the repeated hour of a daylight-saving change is told apart). Omitted: as
    /// soon as the target network is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 40))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?$') && int(self.substring(5, 7)) >= 1 && int(self.substring(5, 7)) <= 12 && int(self.substring(8, 10)) >= 1 && int(self.substring(8, 10)) <= 31 && int(self.substring(11, 13)) <= 23 && int(self.substring(14, 16)) <= 59 && int(self.substring(17, 19)) <= 60"
    ).message("scheduledAt must be an RFC 3339 date and time, for example 2026-12-05T22:00:00+01:00, or a local time such as 2026-12-05T22:00:00 with timeZone"))]
    pub scheduled_at: Option<String>,

    /// The IANA time zone `scheduledAt` is read in, for example `Europe/Amsterdam`. A local time that the zone's
    /// clock skips (`NonexistentLocalTime`) or shows twice (`AmbiguousLocalTime`) is refused, never moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: Option<String>,

    /// How to move: `Readdress` (the data stays where it is; only the network address changes), `Replicate`
    /// (copy by replication, seconds of write outage) or `DumpRestore` (copy by dump and load, read-only
    /// throughout). Omitted: chosen by what changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<MigrationStrategy>,

    /// The new server, for the copying strategies: fields given here replace the database's current ones
    /// (another version or image, another storage size or class). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable: create another DatabaseMigration"))]
    pub target: Option<MigrationTarget>,

    /// Delete the source PrivateNetwork and its VpnConnections once the migration has completed (default true).
    /// Set it to false when those objects are managed by a GitOps tool: remove them from git instead.
    #[serde(default = "default_true")]
    pub delete_source_network: bool,
}

fn default_true() -> bool {
    true
}

/// The server a copying migration creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationTarget {
    /// Server version, for example `11.4` (same engine as the database). Omitted: the database's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[0-9]+(\.[0-9]+){0,2}$"))]
    pub version: Option<String>,
    /// Container image to run instead of the engine's official image for `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// Storage of the new server. Omitted: the same as now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<super::app_database::Storage>,
}

/// How a migration moves the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MigrationStrategy {
    /// Keep the data and the server; move the database's address into the target network.
    Readdress,
    /// Copy the data by native replication and switch over with seconds of write outage.
    Replicate,
    /// Copy the data by dump and load with the source read-only throughout.
    DumpRestore,
}

/// Observed state of a migration, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationStatus {
    /// The PrivateNetwork the database lived on when the migration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_network: Option<String>,
    /// The start time in UTC, as the operator understood `spec.scheduledAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// The same instant on the clock of `spec.timeZone`, with the offset in force then and the zone's name
    /// (RFC 9557, for example `2026-12-05T22:00:00+01:00[Europe/Amsterdam]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for_local: Option<String>,
    /// When each phase started, by phase name (RFC 3339).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub phase_times: std::collections::BTreeMap<String, String>,
    /// Progress of the copy (strategies Replicate and DumpRestore), as the migration Job reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyStatus>,
    /// Measured interruption for clients, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// Observed generation, state ("Scheduled", "Preparing", "Migration In Progress", "Completed", "Failed",
    /// "RolledBack") and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

/// What the copying engine has reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyStatus {
    /// The new server's StatefulSet.
    pub server: String,
    /// The engine's last finished phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CopyPhase>,
    /// Rows copied by the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes of SQL the snapshot loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Replication lag when last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}

impl CopyStatus {
    /// The new server has taken over: from `promote` on, the database's Service leads to it.
    pub fn promoted(&self) -> bool {
        matches!(
            self.phase,
            Some(CopyPhase::Promote | CopyPhase::Switch | CopyPhase::Release | CopyPhase::Done)
        )
    }
}

// The engine's documentation (`crate::mysql::migrate`) says what each phase does; its reports
// (`crate::migration::report`) carry these words across the process boundary, and this status shows the last.
/// The copy engine's last finished phase: prepare, snapshot, replicate, verify, fence, catch-up, promote, switch,
/// release, then done, or rolled-back (undone before the switch), or error. The order depends on the strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CopyPhase {
    Prepare,
    Snapshot,
    Replicate,
    Verify,
    Fence,
    CatchUp,
    Promote,
    Switch,
    Release,
    /// Finished: the target is the database.
    Done,
    /// Undone before the switch: the source takes writes again.
    RolledBack,
    /// The engine stopped with an error it could not roll back from (the source could not be reached).
    Error,
    /// A phase this operator does not know (a newer engine image): shown, never acted on.
    #[serde(other)]
    Unknown,
}

impl CopyPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            CopyPhase::Prepare => "prepare",
            CopyPhase::Snapshot => "snapshot",
            CopyPhase::Replicate => "replicate",
            CopyPhase::Verify => "verify",
            CopyPhase::Fence => "fence",
            CopyPhase::CatchUp => "catch-up",
            CopyPhase::Promote => "promote",
            CopyPhase::Switch => "switch",
            CopyPhase::Release => "release",
            CopyPhase::Done => "done",
            CopyPhase::RolledBack => "rolled-back",
            CopyPhase::Error => "error",
            CopyPhase::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for CopyPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What others read of a migration, from its status (the migration controller writes it; the AppDatabase and
/// PrivateNetwork controllers act on it).
impl DatabaseMigration {
    /// The state its status shows (see [`state`]), once it has one.
    pub fn state(&self) -> Option<&str> {
        self.status.as_ref()?.common.state.as_deref()
    }

    /// Under way: preparing (copying while the source takes writes) or in progress.
    pub fn in_flight(&self) -> bool {
        matches!(self.state(), Some(state::PREPARING | state::MIGRATION_IN_PROGRESS))
    }

    /// Under way for the AppDatabase named `database` (of the migration's namespace).
    pub fn in_flight_for(&self, database: &str) -> bool {
        self.spec.database == database && self.in_flight()
    }

    /// "Migration In Progress": the database's address and endpoint are moving.
    pub fn in_progress(&self) -> bool {
        self.state() == Some(state::MIGRATION_IN_PROGRESS)
    }

    /// In progress, and `network` is the one it moves the database from or to: both say "Migration In Progress".
    pub fn in_progress_on(&self, network: &str) -> bool {
        self.in_progress()
            && (self.spec.target_network == network
                || self.status.as_ref().and_then(|s| s.source_network.as_deref()) == Some(network))
    }
}

impl DatabaseMigrationSpec {
    /// The strategy in effect: as given, else `Readdress` unless a new server is asked for.
    pub fn effective_strategy(&self) -> MigrationStrategy {
        self.strategy.unwrap_or(if self.target.is_some() {
            MigrationStrategy::Replicate
        } else {
            MigrationStrategy::Readdress
        })
    }
}

/// The human states of a DatabaseMigration.
pub mod state {
    pub const SCHEDULED: &str = "Scheduled";
    pub const PREPARING: &str = "Preparing";
    pub const MIGRATION_IN_PROGRESS: &str = "Migration In Progress";
    pub const COMPLETED: &str = "Completed";
    pub const FAILED: &str = "Failed";
    pub const ROLLED_BACK: &str = "RolledBack";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(database: &str, state: Option<&str>) -> DatabaseMigration {
        let mut m = DatabaseMigration::new(
            "move",
            serde_json::from_value(serde_json::json!({"database": database, "targetNetwork": "new-net"})).unwrap(),
        );
        m.status = Some(DatabaseMigrationStatus {
            source_network: Some("old-net".into()),
            common: CommonStatus {
                state: state.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        });
        m
    }

    #[test]
    fn readers_say_what_the_status_says() {
        let preparing = migration("orders", Some(state::PREPARING));
        assert!(preparing.in_flight_for("orders") && !preparing.in_flight_for("billing"));
        assert!(!preparing.in_progress() && !preparing.in_progress_on("new-net"));

        let moving = migration("orders", Some(state::MIGRATION_IN_PROGRESS));
        assert!(moving.in_flight_for("orders") && moving.in_progress());
        assert!(moving.in_progress_on("new-net") && moving.in_progress_on("old-net"));
        assert!(!moving.in_progress_on("other-net"));

        for done in [state::SCHEDULED, state::COMPLETED, state::FAILED, state::ROLLED_BACK] {
            let m = migration("orders", Some(done));
            assert!(!m.in_flight() && !m.in_progress_on("old-net"), "{done}");
            assert_eq!(m.state(), Some(done));
        }
        let fresh = DatabaseMigration::new("move", migration("orders", None).spec);
        assert_eq!(fresh.state(), None);
        assert!(!fresh.in_flight());
    }
}
