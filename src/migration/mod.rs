//! DatabaseMigration decisions (pure): when a migration may start, what keeps it from starting, and what the
//! customer should be warned about. The controller that carries migrations out builds on this. [`report`] is what
//! the engine tells the controller.

pub mod report;

use jiff::{
    Timestamp, Zoned,
    civil::DateTime,
    tz::{AmbiguousOffset, TimeZone},
};

/// Why `spec.scheduledAt` (with `spec.timeZone`) cannot be used. Each has its own status reason, so that a person
/// sees at once whether the text, the zone or the clock change is the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("scheduledAt {0:?} is not an RFC 3339 date and time")]
    Unparsable(String),
    #[error(
        "scheduledAt {0:?} has no time zone offset; write Z or ±hh:mm (for example 2026-12-05T22:00:00+01:00), or name the zone in timeZone (for example Europe/Amsterdam)"
    )]
    NoOffset(String),
    #[error(
        "scheduledAt {0:?} is a valid date and time but outside the supported range (years 0001 to 9999, before 9999-12-30)"
    )]
    OutOfRange(String),
    #[error(
        "timeZone {0:?} is not a time zone of the IANA database (for example Europe/Amsterdam, America/New_York, UTC)"
    )]
    UnknownTimeZone(String),
    #[error(
        "scheduledAt {local} does not exist in {zone}: the clocks jump from {before} to {after} over that time; pick a time outside the gap"
    )]
    Nonexistent {
        local: String,
        zone: String,
        before: String,
        after: String,
    },
    #[error(
        "scheduledAt {local} happens twice in {zone} (the clocks go back from {before} to {after}); add the offset you mean: {local}{before} for the first, {local}{after} for the second"
    )]
    Ambiguous {
        local: String,
        zone: String,
        before: String,
        after: String,
    },
    #[error("scheduledAt {given:?} has an offset that {zone} does not use at that time (it uses {actual})")]
    OffsetNotInZone {
        given: String,
        zone: String,
        actual: String,
    },
}

impl ScheduleError {
    /// The status condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::Unparsable(_) | ScheduleError::NoOffset(_) | ScheduleError::OutOfRange(_) => {
                "InvalidSchedule"
            }
            ScheduleError::UnknownTimeZone(_) => "UnknownTimeZone",
            ScheduleError::Nonexistent { .. } => "NonexistentLocalTime",
            ScheduleError::Ambiguous { .. } => "AmbiguousLocalTime",
            ScheduleError::OffsetNotInZone { .. } => "OffsetNotInTimeZone",
        }
    }
}

/// The instant a migration starts, and (when the customer named a zone) the same instant on that zone's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub at: Timestamp,
    pub zoned: Option<Zoned>,
}

impl Schedule {
    /// For `status.scheduledFor`: always UTC.
    pub fn utc(&self) -> String {
        self.at.to_string()
    }

    /// For `status.scheduledForLocal`: RFC 9557, the zone's offset at that instant and the zone's name.
    pub fn local(&self) -> Option<String> {
        self.zoned.as_ref().map(Zoned::to_string)
    }
}

/// An offset as RFC 3339 writes it (`+02:00`; jiff's own display shortens it to `+02`).
fn rfc3339_offset(offset: jiff::tz::Offset) -> String {
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Splits a trailing `Z` or `±hh:mm` off; `None` when the text has no offset.
fn split_offset(text: &str) -> Option<(&str, &str)> {
    if let Some(civil) = text.strip_suffix(['Z', 'z']) {
        return Some((civil, &text[civil.len()..]));
    }
    // `get`, not indexing: a multi-byte character near the end must not panic.
    let at = text.len().checked_sub(6)?;
    let tail = text.get(at..)?;
    let bytes = tail.as_bytes();
    ((bytes[0] == b'+' || bytes[0] == b'-') && bytes[3] == b':').then(|| (&text[..at], tail))
}

/// The civil date and time of `text` (without offset), telling "not a date" from "a date no instant can hold".
fn civil(text: &str, original: &str) -> Result<DateTime, ScheduleError> {
    match text.parse::<DateTime>() {
        Ok(dt) => Ok(dt),
        Err(_) => Err(ScheduleError::Unparsable(original.to_owned())),
    }
}

/// The instant `scheduled_at` names. Without `time_zone` an offset is required (a local time alone means nothing);
/// with it, a local time is read on that zone's clock, and a time the clock skips or repeats is refused with the
/// reason rather than silently moved.
pub fn parse_schedule(scheduled_at: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
    let text = scheduled_at.trim();
    let zone = match time_zone.map(str::trim) {
        None => None,
        Some(name) => Some(TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))?),
    };
    let zone_name = time_zone.map(str::trim).unwrap_or_default();
    match (split_offset(text), zone) {
        (None, None) => {
            civil(text, scheduled_at)?;
            Err(ScheduleError::NoOffset(scheduled_at.to_owned()))
        }
        (Some((local, _)), None) => {
            let at = text.parse::<Timestamp>().map_err(|_| {
                // A well-formed date and time that no instant can hold (jiff's range, like most, ends just before
                // year 10000): say that, not "not a date".
                match civil(local, scheduled_at) {
                    Ok(_) => ScheduleError::OutOfRange(scheduled_at.to_owned()),
                    Err(e) => e,
                }
            })?;
            Ok(Schedule { at, zoned: None })
        }
        (None, Some(tz)) => {
            let dt = civil(text, scheduled_at)?;
            let ambiguous = tz.to_ambiguous_zoned(dt);
            match ambiguous.offset() {
                AmbiguousOffset::Unambiguous { .. } => {
                    let zoned = ambiguous
                        .unambiguous()
                        .map_err(|_| ScheduleError::OutOfRange(scheduled_at.to_owned()))?;
                    Ok(Schedule {
                        at: zoned.timestamp(),
                        zoned: Some(zoned),
                    })
                }
                AmbiguousOffset::Gap { before, after } => Err(ScheduleError::Nonexistent {
                    local: text.to_owned(),
                    zone: zone_name.to_owned(),
                    before: rfc3339_offset(before),
                    after: rfc3339_offset(after),
                }),
                AmbiguousOffset::Fold { before, after } => Err(ScheduleError::Ambiguous {
                    local: text.to_owned(),
                    zone: zone_name.to_owned(),
                    before: rfc3339_offset(before),
                    after: rfc3339_offset(after),
                }),
            }
        }
        (Some((local, _)), Some(tz)) => {
            let at = text
                .parse::<Timestamp>()
                .map_err(|_| match civil(local, scheduled_at) {
                    Ok(_) => ScheduleError::OutOfRange(scheduled_at.to_owned()),
                    Err(e) => e,
                })?;
            // The offset must be one the zone's clock shows at that instant: it is how the repeated hour is told
            // apart, and a mismatch is almost always a typo in one of the two fields. `Z` claims no local offset
            // (RFC 9557): it names the instant in UTC, and the zone only says how to show it.
            let zoned = at.to_zoned(tz);
            let written = civil(local, scheduled_at)?;
            let utc = text.ends_with(['Z', 'z']);
            if !utc && zoned.datetime() != written {
                return Err(ScheduleError::OffsetNotInZone {
                    given: scheduled_at.to_owned(),
                    zone: zone_name.to_owned(),
                    actual: rfc3339_offset(zoned.offset()),
                });
            }
            Ok(Schedule { at, zoned: Some(zoned) })
        }
    }
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

    fn at(text: &str) -> Timestamp {
        parse_schedule(text, None).unwrap().at
    }

    #[test]
    fn schedules_need_an_offset_or_a_zone_and_mean_one_instant() {
        let amsterdam = at("2026-12-05T22:00:00+01:00");
        assert_eq!(amsterdam, at("2026-12-05T21:00:00Z"));
        assert_eq!(amsterdam, at("2026-12-05T16:00:00-05:00"));
        let zoned = parse_schedule("2026-12-05T22:00:00", Some("Europe/Amsterdam")).unwrap();
        assert_eq!(zoned.at, amsterdam);
        assert_eq!(zoned.utc(), "2026-12-05T21:00:00Z");
        assert_eq!(
            zoned.local().as_deref(),
            Some("2026-12-05T22:00:00+01:00[Europe/Amsterdam]")
        );
        assert_eq!(parse_schedule("2026-12-05T21:00:00Z", None).unwrap().local(), None);
        let without = parse_schedule("2026-12-05T22:00:00", None).unwrap_err();
        assert_eq!(without, ScheduleError::NoOffset("2026-12-05T22:00:00".into()));
        assert!(without.to_string().contains("timeZone"), "{without}");
        for bad in [
            "2026-13-05T22:00:00Z",
            "soon",
            "2026-12-05T22:00:00+01:0é",
            "é",
            "2026-02-30T10:00:00",
        ] {
            assert_eq!(
                parse_schedule(bad, None).unwrap_err().reason(),
                "InvalidSchedule",
                "{bad}"
            );
            assert!(parse_schedule(bad, Some("UTC")).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unknown_zone_is_named() {
        let e = parse_schedule("2026-12-05T22:00:00", Some("Europe/Amsterdan")).unwrap_err();
        assert_eq!(e.reason(), "UnknownTimeZone");
        assert!(e.to_string().contains("\"Europe/Amsterdan\""), "{e}");
    }

    /// The daylight-saving changes of 2026 in two zones on either side of the Atlantic: the spring gap and the
    /// autumn repeat are refused with their reason, the times next to them mean what the zone's clock says, and an
    /// offset picks one of the two repeated hours.
    #[test]
    fn daylight_saving_changes_in_two_zones() {
        struct Change {
            zone: &'static str,
            gap: &'static str,
            before_gap: (&'static str, &'static str),
            after_gap: (&'static str, &'static str),
            repeat: &'static str,
            offsets: (&'static str, &'static str),
        }
        let changes = [
            Change {
                zone: "Europe/Amsterdam",
                gap: "2026-03-29T02:30:00",
                before_gap: ("2026-03-29T01:59:59", "2026-03-29T00:59:59Z"),
                after_gap: ("2026-03-29T03:00:00", "2026-03-29T01:00:00Z"),
                repeat: "2026-10-25T02:30:00",
                offsets: ("+02:00", "+01:00"),
            },
            Change {
                zone: "America/New_York",
                gap: "2026-03-08T02:30:00",
                before_gap: ("2026-03-08T01:59:59", "2026-03-08T06:59:59Z"),
                after_gap: ("2026-03-08T03:00:00", "2026-03-08T07:00:00Z"),
                repeat: "2026-11-01T01:30:00",
                offsets: ("-04:00", "-05:00"),
            },
        ];
        for c in changes {
            let zone = Some(c.zone);
            let gap = parse_schedule(c.gap, zone).unwrap_err();
            assert_eq!(gap.reason(), "NonexistentLocalTime", "{}", c.zone);
            assert!(gap.to_string().contains("does not exist in"), "{gap}");
            for (local, utc) in [c.before_gap, c.after_gap] {
                assert_eq!(parse_schedule(local, zone).unwrap().utc(), utc, "{} {local}", c.zone);
            }

            let repeat = parse_schedule(c.repeat, zone).unwrap_err();
            assert_eq!(repeat.reason(), "AmbiguousLocalTime", "{}", c.zone);
            let message = repeat.to_string();
            // The message offers both readings, each of which is then accepted as written.
            let (first, second) = (
                format!("{}{}", c.repeat, c.offsets.0),
                format!("{}{}", c.repeat, c.offsets.1),
            );
            assert!(message.contains(&first) && message.contains(&second), "{message}");
            let first = parse_schedule(&first, zone).unwrap();
            let second = parse_schedule(&second, zone).unwrap();
            assert_eq!(second.at.as_second() - first.at.as_second(), 3600, "{}", c.zone);
            assert!(
                first
                    .local()
                    .unwrap()
                    .ends_with(&format!("{}[{}]", c.offsets.0, c.zone))
            );

            // An offset the zone does not use then is a mistake in one of the two fields; `Z` names the instant.
            let wrong = parse_schedule(&format!("{}+05:00", c.repeat), zone).unwrap_err();
            assert_eq!(wrong.reason(), "OffsetNotInTimeZone", "{}", c.zone);
            let utc = parse_schedule(&format!("{}Z", c.repeat), zone).unwrap();
            assert_eq!(utc.utc(), format!("{}Z", c.repeat));
        }
    }

    #[test]
    fn a_schedule_beyond_the_supported_range_says_so() {
        // Well formed, but no instant can hold it: not "not a date" (the year-9999 case).
        for text in ["9999-12-31T23:00:00+00:00", "9999-12-31T23:59:59Z"] {
            assert_eq!(
                parse_schedule(text, None),
                Err(ScheduleError::OutOfRange(text.into())),
                "{text}"
            );
            assert!(
                parse_schedule(text, None)
                    .unwrap_err()
                    .to_string()
                    .contains("outside the supported range")
            );
        }
        assert!(parse_schedule("9999-06-01T00:00:00Z", None).is_ok());
        assert!(matches!(
            parse_schedule("9999-02-30T00:00:00Z", None),
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
