//! DatabaseMigration decisions (pure): when a migration may start, what keeps it from starting, and what the
//! customer should be warned about. The controller that carries migrations out builds on this.

use jiff::Timestamp;

/// Why `spec.scheduledAt` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("scheduledAt {0:?} is not an RFC 3339 date and time")]
    Unparsable(String),
    #[error("scheduledAt {0:?} has no time zone offset; write Z or ±hh:mm, for example 2026-12-05T22:00:00+01:00")]
    NoOffset(String),
    #[error(
        "scheduledAt {0:?} is a valid date and time but outside the supported range (years 0001 to 9999, before 9999-12-30)"
    )]
    OutOfRange(String),
}

/// The instant `scheduled_at` names, in any time zone (the offset is required: a local time alone is ambiguous).
pub fn parse_schedule(scheduled_at: &str) -> Result<Timestamp, ScheduleError> {
    let text = scheduled_at.trim();
    let has_offset = text.ends_with('Z') || text.ends_with('z') || {
        // `get`, not indexing: a multi-byte character near the end must not panic.
        let tail = text.get(text.len().saturating_sub(6)..).unwrap_or("");
        tail.len() == 6 && (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':'
    };
    if !has_offset {
        return Err(ScheduleError::NoOffset(scheduled_at.to_owned()));
    }
    text.parse::<Timestamp>().map_err(|_| {
        // The text may be a well-formed date and time that no instant can hold (jiff's range, like most, ends just
        // before year 10000): say that, not "not a date".
        let without_offset = text.trim_end_matches(['Z', 'z']);
        let without_offset = if without_offset.len() == text.len() {
            text.get(..text.len().saturating_sub(6)).unwrap_or("")
        } else {
            without_offset
        };
        if without_offset.parse::<jiff::civil::DateTime>().is_ok() {
            ScheduleError::OutOfRange(scheduled_at.to_owned())
        } else {
            ScheduleError::Unparsable(scheduled_at.to_owned())
        }
    })
}

/// What the migration controller observed about the objects a migration involves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The database, if it exists: is it "Ready To Use", and on which network does it live now.
    pub database: Option<(bool, String)>,
    pub target_network: String,
    /// Whether the target network exists and has its range.
    pub target: Option<bool>,
    /// Other migrations of the same database that have started and not finished.
    pub others_in_flight: Vec<String>,
    /// VpnConnections on the source and on the target network.
    pub source_vpns: usize,
    pub target_vpns: usize,
    /// The migration copies the data to a new server, so staying on the same network is allowed.
    pub copies: bool,
    /// The target network's `type` is Production: another database lives there (the seeds offer "Migrate Database
    /// Here" only on a Test network).
    pub target_is_production: bool,
}

/// A reason the migration cannot start now. While there is time, these are conditions, not failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("AppDatabase {0} does not exist in this namespace")]
    DatabaseNotFound(String),
    #[error("AppDatabase {0} is not Ready To Use")]
    DatabaseNotReady(String),
    #[error("PrivateNetwork {0} does not exist in this namespace")]
    TargetNotFound(String),
    #[error("PrivateNetwork {0} has no range yet")]
    TargetNotReady(String),
    #[error("the database already lives on {0}")]
    TargetIsSource(String),
    #[error("DatabaseMigration {0} of the same database is in progress")]
    OtherMigrationInFlight(String),
    #[error(
        "PrivateNetwork {0} is a Production network (another database lives there); a database moves only to a Test network"
    )]
    TargetInUse(String),
}

impl Unmet {
    pub fn reason(&self) -> &'static str {
        match self {
            Unmet::DatabaseNotFound(_) => "DatabaseNotFound",
            Unmet::DatabaseNotReady(_) => "DatabaseNotReady",
            Unmet::TargetNotFound(_) => "TargetNetworkNotFound",
            Unmet::TargetNotReady(_) => "TargetNetworkNotReady",
            Unmet::TargetIsSource(_) => "TargetIsSource",
            Unmet::OtherMigrationInFlight(_) => "OtherMigrationInFlight",
            Unmet::TargetInUse(_) => "TargetNetworkInUse",
        }
    }
}

/// Every unmet precondition, in the order a person would fix them.
pub fn unmet(database: &str, observed: &Observed) -> Vec<Unmet> {
    let mut out = Vec::new();
    match &observed.database {
        None => out.push(Unmet::DatabaseNotFound(database.to_owned())),
        Some((ready, network)) => {
            if !ready {
                out.push(Unmet::DatabaseNotReady(database.to_owned()));
            }
            if *network == observed.target_network && !observed.copies {
                out.push(Unmet::TargetIsSource(network.clone()));
            }
        }
    }
    match observed.target {
        None => out.push(Unmet::TargetNotFound(observed.target_network.clone())),
        Some(false) => out.push(Unmet::TargetNotReady(observed.target_network.clone())),
        Some(true) => {}
    }
    // Staying on its own network (a copy to a new server) is the one move into a Production network.
    let stays = observed
        .database
        .as_ref()
        .is_some_and(|(_, network)| *network == observed.target_network);
    if observed.target_is_production && !stays {
        out.push(Unmet::TargetInUse(observed.target_network.clone()));
    }
    out.extend(
        observed
            .others_in_flight
            .iter()
            .cloned()
            .map(Unmet::OtherMigrationInFlight),
    );
    out
}

/// The customer would lose access from premises: the source network has VPN connections and the target has none.
pub fn loses_premises_access(observed: &Observed) -> bool {
    observed.source_vpns > 0 && observed.target_vpns == 0
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Preconditions are met; start.
    Start,
    /// Wait until the scheduled time (re-check preconditions meanwhile).
    WaitUntil(Timestamp),
    /// Something must change first; `overdue` when the scheduled time has passed meanwhile.
    Blocked { unmet: Vec<Unmet>, overdue: bool },
}

/// Whether a migration scheduled for `scheduled` (or as soon as possible) starts now.
pub fn decide(database: &str, scheduled: Option<Timestamp>, observed: &Observed, now: Timestamp) -> Decision {
    let blocking = unmet(database, observed);
    let due = scheduled.is_none_or(|t| t <= now);
    match (blocking.is_empty(), due) {
        (true, true) => Decision::Start,
        (_, false) if scheduled.is_some() => {
            if blocking.is_empty() {
                Decision::WaitUntil(scheduled.expect("checked"))
            } else {
                Decision::Blocked {
                    unmet: blocking,
                    overdue: false,
                }
            }
        }
        _ => Decision::Blocked {
            unmet: blocking,
            overdue: scheduled.is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_may_stay_on_its_network() {
        let mut o = ready_world();
        o.database = Some((true, o.target_network.clone()));
        assert!(matches!(unmet("orders", &o)[..], [Unmet::TargetIsSource(_)]));
        o.copies = true;
        assert!(unmet("orders", &o).is_empty());
    }

    fn ready_world() -> Observed {
        Observed {
            database: Some((true, "prod".into())),
            target_network: "prod-2026".into(),
            target: Some(true),
            others_in_flight: vec![],
            source_vpns: 1,
            target_vpns: 1,
            copies: false,
            target_is_production: false,
        }
    }

    #[test]
    fn schedules_need_an_offset_and_mean_one_instant() {
        let amsterdam = parse_schedule("2026-12-05T22:00:00+01:00").unwrap();
        let utc = parse_schedule("2026-12-05T21:00:00Z").unwrap();
        let new_york = parse_schedule("2026-12-05T16:00:00-05:00").unwrap();
        assert_eq!(amsterdam, utc);
        assert_eq!(new_york, utc);
        assert_eq!(
            parse_schedule("2026-12-05T22:00:00"),
            Err(ScheduleError::NoOffset("2026-12-05T22:00:00".into()))
        );
        assert!(matches!(
            parse_schedule("2026-13-05T22:00:00Z"),
            Err(ScheduleError::Unparsable(_))
        ));
        assert!(matches!(parse_schedule("soon"), Err(ScheduleError::NoOffset(_))));
        assert!(parse_schedule("2026-12-05T22:00:00+01:0é").is_err());
        assert!(parse_schedule("é").is_err());
    }

    #[test]
    fn a_schedule_beyond_the_supported_range_says_so() {
        // Well formed, but no instant can hold it: not "not a date" (the year-9999 case).
        for text in ["9999-12-31T23:00:00+00:00", "9999-12-31T23:59:59Z"] {
            assert_eq!(
                parse_schedule(text),
                Err(ScheduleError::OutOfRange(text.into())),
                "{text}"
            );
            assert!(
                parse_schedule(text)
                    .unwrap_err()
                    .to_string()
                    .contains("outside the supported range")
            );
        }
        assert!(parse_schedule("9999-06-01T00:00:00Z").is_ok());
        assert!(matches!(
            parse_schedule("9999-02-30T00:00:00Z"),
            Err(ScheduleError::Unparsable(_))
        ));
    }

    #[test]
    fn a_target_where_another_database_lives_is_refused() {
        let mut w = ready_world();
        w.target_is_production = true;
        let unmet = unmet("orders", &w);
        assert_eq!(
            unmet.iter().map(Unmet::reason).collect::<Vec<_>>(),
            ["TargetNetworkInUse"]
        );
        assert!(unmet[0].to_string().contains("only to a Test network"));
        // A copy to a new server on the database's own network stays allowed.
        w.copies = true;
        w.target_network = "prod-2025".into();
        w.database = Some((true, "prod-2025".into()));
        assert!(super::unmet("orders", &w).is_empty());
    }

    #[test]
    fn every_unmet_precondition_is_named() {
        let mut w = ready_world();
        assert!(unmet("orders", &w).is_empty());
        w.database = None;
        assert_eq!(unmet("orders", &w)[0].reason(), "DatabaseNotFound");
        w.database = Some((false, "prod-2026".into()));
        let reasons: Vec<_> = unmet("orders", &w).iter().map(Unmet::reason).collect();
        assert_eq!(reasons, ["DatabaseNotReady", "TargetIsSource"]);
        let mut w = ready_world();
        w.target = None;
        assert_eq!(unmet("orders", &w)[0].reason(), "TargetNetworkNotFound");
        w.target = Some(false);
        assert_eq!(unmet("orders", &w)[0].reason(), "TargetNetworkNotReady");
        let mut w = ready_world();
        w.others_in_flight = vec!["earlier".into()];
        assert_eq!(
            unmet("orders", &w),
            vec![Unmet::OtherMigrationInFlight("earlier".into())]
        );
    }

    #[test]
    fn premises_access_warning() {
        let mut w = ready_world();
        assert!(!loses_premises_access(&w));
        w.target_vpns = 0;
        assert!(loses_premises_access(&w));
        w.source_vpns = 0;
        assert!(!loses_premises_access(&w));
    }

    #[test]
    fn decisions_over_time() {
        let at = |s: &str| parse_schedule(s).unwrap();
        let w = ready_world();
        let start = at("2026-12-05T21:00:00Z");
        assert_eq!(
            decide("orders", Some(start), &w, at("2026-12-05T20:59:59Z")),
            Decision::WaitUntil(start)
        );
        assert_eq!(decide("orders", Some(start), &w, start), Decision::Start);
        assert_eq!(decide("orders", None, &w, start), Decision::Start);
        let mut blocked = w.clone();
        blocked.target = Some(false);
        assert!(matches!(
            decide("orders", Some(start), &blocked, at("2026-12-05T20:00:00Z")),
            Decision::Blocked { overdue: false, .. }
        ));
        assert!(matches!(
            decide("orders", Some(start), &blocked, at("2026-12-05T22:00:00Z")),
            Decision::Blocked { overdue: true, .. }
        ));
        assert!(matches!(
            decide("orders", None, &blocked, start),
            Decision::Blocked { overdue: false, .. }
        ));
    }
}
