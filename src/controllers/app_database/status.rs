//! Build the status (pure).

use std::net::Ipv4Addr;

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

pub fn build_status(
    db: &AppDatabase,
    phase: &Phase,
    host: String,
    dns: &Dns,
    password_revision: Option<String>,
    servers: Servers,
    now: jiff::Timestamp,
) -> AppDatabaseStatus {
    let generation = db.metadata.generation;
    let previous = db.status.clone().unwrap_or_default();
    let c = |t: &str, s: ConditionStatus, r: &str, m: &str| condition(t, s, r, m, generation, now);
    let (state, mut conditions, endpoint, network) = match phase {
        Phase::Invalid(why) => {
            let message = why.to_string();
            let (reconciling, stalled) = if why.is_transient() {
                (ConditionStatus::True, ConditionStatus::False)
            } else {
                (ConditionStatus::False, ConditionStatus::True)
            };
            (
                state::PENDING,
                vec![
                    c(READY, ConditionStatus::False, why.reason(), &message),
                    c(RECONCILING, reconciling, why.reason(), &message),
                    c(STALLED, stalled, why.reason(), &message),
                ],
                previous.endpoint.clone(),
                previous.network.clone(),
            )
        }
        Phase::Creating { network } => (
            state::CREATING,
            vec![
                c(
                    READY,
                    ConditionStatus::False,
                    "Creating",
                    "waiting for the database server to accept queries",
                ),
                c(
                    RECONCILING,
                    ConditionStatus::True,
                    "Creating",
                    "waiting for the database server to accept queries",
                ),
                c(STALLED, ConditionStatus::False, "Creating", ""),
            ],
            None,
            Some(network.clone()),
        ),
        Phase::Ready {
            network,
            address,
            rotating,
            migrating,
        } => {
            let endpoint = Endpoint {
                host: host.clone(),
                address: Some(address.to_string()),
                port: MYSQL_PORT.into(),
            };
            let reconciling = if *rotating {
                c(
                    RECONCILING,
                    ConditionStatus::True,
                    "RotatingPassword",
                    "setting the admin password to the Secret's new value",
                )
            } else {
                c(RECONCILING, ConditionStatus::False, reason::UP_TO_DATE, "")
            };
            (
                if *migrating {
                    state::MIGRATION_IN_PROGRESS
                } else {
                    state::READY_TO_USE
                },
                vec![
                    c(
                        READY,
                        ConditionStatus::True,
                        "ReadyToUse",
                        &format!("{host}:{MYSQL_PORT}; VPN clients: {address}:{MYSQL_PORT}"),
                    ),
                    reconciling,
                    c(STALLED, ConditionStatus::False, reason::UP_TO_DATE, ""),
                ],
                Some(endpoint),
                Some(network.clone()),
            )
        }
    };
    match dns {
        Dns::NotRequested => {}
        Dns::Published(name) => conditions.push(c(DNS_PUBLISHED, ConditionStatus::True, "Published", &format!("{name} published as a DNSEndpoint"))),
        Dns::CrdMissing => conditions.push(c(
            DNS_PUBLISHED,
            ConditionStatus::False,
            "ExternalDnsMissing",
            "spec.dns.hostname is set but the ExternalDNS DNSEndpoint CRD (dnsendpoints.externaldns.k8s.io) is not installed",
        )),
        Dns::Waiting => conditions.push(c(DNS_PUBLISHED, ConditionStatus::False, "WaitingForAddress", "published once the database is ready")),
        Dns::Refused(refusal) => conditions.push(c(DNS_PUBLISHED, ConditionStatus::False, refusal.reason(), &refusal.to_string())),
    }
    AppDatabaseStatus {
        endpoint,
        network,
        admin_password_revision: password_revision,
        server: servers.server,
        retired_server: servers.retired,
        common: CommonStatus {
            observed_generation: generation,
            state: Some(state.to_owned()),
            conditions: merge_conditions(&previous.common.conditions, conditions),
        },
    }
}
