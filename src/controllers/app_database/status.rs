//! Build the status (pure).

use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::{
    api::{
        AppDatabase, AppDatabaseStatus,
        app_database::{Endpoint, state},
        common::CommonStatus,
        conditions::{ConditionStatus, READY, RECONCILING, STALLED, condition, merge_conditions, reason},
    },
    mysql::PORT as MYSQL_PORT,
};

use super::validate::Invalid;

/// Condition telling whether the DNS name of `spec.dns.hostname` is published.
pub const DNS_PUBLISHED: &str = "DnsPublished";

/// Where a database stands after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Cannot be created as it stands.
    Invalid(Invalid),
    /// Objects applied; the server is starting.
    Creating { network: String },
    /// The server answers queries. `rotating`: the admin password is being changed to a new Secret value.
    /// `migrating`: a DatabaseMigration is moving the database.
    Ready {
        network: String,
        address: Ipv4Addr,
        rotating: bool,
        migrating: bool,
    },
}

/// Whether the DNS record is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dns {
    NotRequested,
    Published(String),
    /// ExternalDNS's DNSEndpoint CRD is not installed: nothing to publish to.
    CrdMissing,
    /// Waiting for the address (database not ready yet).
    Waiting,
    /// The name may not be published by this database (not under the namespace's domains, or held by another).
    Refused(super::dns::DnsRefusal),
}

/// Which servers the status records (see `AppDatabaseStatus::server`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Servers {
    pub server: Option<crate::api::app_database::ServerStatus>,
    pub retired: Option<crate::api::app_database::RetiredServer>,
}

impl Servers {
    /// What the status says now.
    pub fn recorded(db: &AppDatabase) -> Servers {
        Servers {
            server: db.status.as_ref().and_then(|s| s.server.clone()),
            retired: db.status.as_ref().and_then(|s| s.retired_server.clone()),
        }
    }
}

/// The status a reconcile leaves: what the phase and the DNS record show, the servers, and conditions merged with the
/// previous ones so that `lastTransitionTime` moves only when a status does.
pub fn build_status(
    db: &AppDatabase,
    phase: &Phase,
    host: String,
    dns: &Dns,
    password_revision: Option<String>,
    servers: Servers,
    now: jiff::Timestamp,
) -> AppDatabaseStatus {
    let stamp = Stamp {
        generation: db.metadata.generation,
        now,
    };
    let previous = db.status.clone().unwrap_or_default();
    let mut shown = match phase {
        Phase::Invalid(why) => invalid(why, &previous, stamp),
        Phase::Creating { network } => creating(network, stamp),
        Phase::Ready {
            network,
            address,
            rotating,
            migrating,
        } => ready(network, *address, &host, *rotating, *migrating, stamp),
    };
    shown.conditions.extend(dns_published(dns, stamp));
    AppDatabaseStatus {
        endpoint: shown.endpoint,
        network: shown.network,
        admin_password_revision: password_revision,
        server: servers.server,
        retired_server: servers.retired,
        common: CommonStatus {
            observed_generation: db.metadata.generation,
            state: Some(shown.state.to_owned()),
            conditions: merge_conditions(&previous.common.conditions, shown.conditions),
        },
    }
}

/// What every condition of one status write shares: the generation it describes and when it was written.
#[derive(Clone, Copy)]
struct Stamp {
    generation: Option<i64>,
    now: jiff::Timestamp,
}

impl Stamp {
    fn condition(self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> Condition {
        condition(type_, status, reason, message, self.generation, self.now)
    }
}

/// What a phase shows: the state text, the kstatus conditions, where the database is reached and on which network.
struct Shown {
    state: &'static str,
    conditions: Vec<Condition>,
    endpoint: Option<Endpoint>,
    network: Option<String>,
}

/// An invalid database keeps the endpoint and network it had: the server, if any, still runs there. A transient
/// reason (something it waits for) is `Reconciling`; one that takes a person is `Stalled`.
fn invalid(why: &Invalid, previous: &AppDatabaseStatus, stamp: Stamp) -> Shown {
    let message = why.to_string();
    let transient = why.is_transient();
    Shown {
        state: state::PENDING,
        conditions: vec![
            stamp.condition(READY, ConditionStatus::False, why.reason(), &message),
            stamp.condition(RECONCILING, transient.into(), why.reason(), &message),
            stamp.condition(STALLED, (!transient).into(), why.reason(), &message),
        ],
        endpoint: previous.endpoint.clone(),
        network: previous.network.clone(),
    }
}

fn creating(network: &str, stamp: Stamp) -> Shown {
    const WAITING: &str = "waiting for the database server to accept queries";
    Shown {
        state: state::CREATING,
        conditions: vec![
            stamp.condition(READY, ConditionStatus::False, "Creating", WAITING),
            stamp.condition(RECONCILING, ConditionStatus::True, "Creating", WAITING),
            stamp.condition(STALLED, ConditionStatus::False, "Creating", ""),
        ],
        endpoint: None,
        network: Some(network.to_owned()),
    }
}

fn ready(network: &str, address: Ipv4Addr, host: &str, rotating: bool, migrating: bool, stamp: Stamp) -> Shown {
    let reconciling = if rotating {
        stamp.condition(
            RECONCILING,
            ConditionStatus::True,
            "RotatingPassword",
            "setting the admin password to the Secret's new value",
        )
    } else {
        stamp.condition(RECONCILING, ConditionStatus::False, reason::UP_TO_DATE, "")
    };
    Shown {
        state: if migrating {
            state::MIGRATION_IN_PROGRESS
        } else {
            state::READY_TO_USE
        },
        conditions: vec![
            stamp.condition(
                READY,
                ConditionStatus::True,
                "ReadyToUse",
                &format!("{host}:{MYSQL_PORT}; VPN clients: {address}:{MYSQL_PORT}"),
            ),
            reconciling,
            stamp.condition(STALLED, ConditionStatus::False, reason::UP_TO_DATE, ""),
        ],
        endpoint: Some(Endpoint {
            host: host.to_owned(),
            address: Some(address.to_string()),
            port: MYSQL_PORT.into(),
        }),
        network: Some(network.to_owned()),
    }
}

/// The `DnsPublished` condition, when `spec.dns` asks for a record.
fn dns_published(dns: &Dns, stamp: Stamp) -> Option<Condition> {
    let (status, reason, message) = match dns {
        Dns::NotRequested => return None,
        Dns::Published(name) => (
            ConditionStatus::True,
            "Published",
            format!("{name} published as a DNSEndpoint"),
        ),
        Dns::CrdMissing => (
            ConditionStatus::False,
            "ExternalDnsMissing",
            format!(
                "spec.dns.hostname is set but the ExternalDNS DNSEndpoint CRD ({}) is not installed",
                super::DNS_CRD
            ),
        ),
        Dns::Waiting => (
            ConditionStatus::False,
            "WaitingForAddress",
            "published once the database is ready".to_owned(),
        ),
        Dns::Refused(refusal) => (ConditionStatus::False, refusal.reason(), refusal.to_string()),
    };
    Some(stamp.condition(DNS_PUBLISHED, status, reason, &message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::find;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("time")
    }

    fn status_of(db: &AppDatabase, phase: Phase, dns: Dns, now: jiff::Timestamp) -> AppDatabaseStatus {
        build_status(
            db,
            &phase,
            "orders.acme.svc.cluster.local".into(),
            &dns,
            None,
            Servers::default(),
            now,
        )
    }

    fn ready(migrating: bool) -> Phase {
        Phase::Ready {
            network: "prod".into(),
            address: Ipv4Addr::new(10, 20, 30, 74),
            rotating: false,
            migrating,
        }
    }

    fn holds(status: &AppDatabaseStatus, type_: &str) -> String {
        find(&status.common.conditions, type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
            .status
            .clone()
    }

    #[test]
    fn a_waiting_database_is_reconciling_and_a_refused_one_stalled() {
        let db = super::super::tests::db();
        let waiting = status_of(
            &db,
            Phase::Invalid(Invalid::NetworkNotReady("prod".into(), "allocating".into())),
            Dns::NotRequested,
            at(10),
        );
        assert_eq!(waiting.common.state.as_deref(), Some(state::PENDING));
        assert_eq!(
            (
                holds(&waiting, READY),
                holds(&waiting, RECONCILING),
                holds(&waiting, STALLED)
            ),
            ("False".into(), "True".into(), "False".into())
        );
        let refused = status_of(
            &db,
            Phase::Invalid(Invalid::SecretNotFound("orders-admin".into())),
            Dns::NotRequested,
            at(10),
        );
        assert_eq!(
            (
                holds(&refused, READY),
                holds(&refused, RECONCILING),
                holds(&refused, STALLED)
            ),
            ("False".into(), "False".into(), "True".into())
        );
        let stalled = find(&refused.common.conditions, STALLED).expect("Stalled");
        assert_eq!(stalled.reason, "SecretNotFound");
        assert!(stalled.message.contains("orders-admin"), "{}", stalled.message);
    }

    #[test]
    fn an_invalid_database_keeps_the_endpoint_it_had() {
        let mut db = super::super::tests::db();
        db.status = Some(status_of(&db, ready(false), Dns::NotRequested, at(10)));
        let invalid = status_of(
            &db,
            Phase::Invalid(Invalid::SecretNotFound("orders-admin".into())),
            Dns::NotRequested,
            at(20),
        );
        let endpoint = invalid.endpoint.expect("the endpoint it had");
        assert_eq!(endpoint.address.as_deref(), Some("10.20.30.74"));
        assert_eq!(invalid.network.as_deref(), Some("prod"));
    }

    #[test]
    fn a_ready_database_shows_its_endpoint_and_whether_it_migrates() {
        let mut db = super::super::tests::db();
        db.metadata.generation = Some(3);
        let ready_to_use = status_of(&db, ready(false), Dns::NotRequested, at(10));
        assert_eq!(ready_to_use.common.state.as_deref(), Some(state::READY_TO_USE));
        assert_eq!(ready_to_use.common.observed_generation, Some(3));
        assert_eq!(holds(&ready_to_use, READY), "True");
        let endpoint = ready_to_use.endpoint.as_ref().expect("endpoint");
        assert_eq!(
            (endpoint.address.as_deref(), endpoint.port),
            (Some("10.20.30.74"), i32::from(MYSQL_PORT))
        );
        assert!(
            ready_to_use
                .common
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        let migrating = status_of(&db, ready(true), Dns::NotRequested, at(10));
        assert_eq!(migrating.common.state.as_deref(), Some(state::MIGRATION_IN_PROGRESS));
        assert_eq!(holds(&migrating, READY), "True");
    }

    #[test]
    fn transition_times_move_only_when_a_status_does() {
        let mut db = super::super::tests::db();
        db.status = Some(status_of(&db, ready(false), Dns::NotRequested, at(10)));
        let again = status_of(&db, ready(true), Dns::NotRequested, at(20));
        let ready_condition = find(&again.common.conditions, READY).expect("Ready");
        assert_eq!(ready_condition.last_transition_time.0, at(10));
        db.status = Some(again);
        let creating = status_of(
            &db,
            Phase::Creating { network: "prod".into() },
            Dns::NotRequested,
            at(30),
        );
        let ready_condition = find(&creating.common.conditions, READY).expect("Ready");
        assert_eq!(ready_condition.last_transition_time.0, at(30));
        assert_eq!(creating.endpoint, None);
    }

    #[test]
    fn the_dns_condition_is_there_only_when_a_record_is_asked_for() {
        let db = super::super::tests::db();
        let none = status_of(&db, ready(false), Dns::NotRequested, at(10));
        assert!(find(&none.common.conditions, DNS_PUBLISHED).is_none());
        let missing = status_of(&db, ready(false), Dns::CrdMissing, at(10));
        let condition = find(&missing.common.conditions, DNS_PUBLISHED).expect("DnsPublished");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "ExternalDnsMissing")
        );
        assert!(condition.message.contains("dnsendpoints.externaldns.k8s.io"));
        let published = status_of(&db, ready(false), Dns::Published("orders.acme.example".into()), at(10));
        let condition = find(&published.common.conditions, DNS_PUBLISHED).expect("DnsPublished");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "Published")
        );
    }
}
