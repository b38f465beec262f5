//! Validate (pure): the network and the admin Secret an AppDatabase refers to, and its address in the network.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Secret;

use crate::{
    api::{AppDatabase, PrivateNetwork, conditions},
    mysql::password::{PasswordError, validate_admin_password},
};

/// Offsets inside a /26 that databases get: .0 is the network, .1 the pinghost, .2–.9 stay free for gateways,
/// .63 is the broadcast address.
pub const FIRST_DATABASE_OFFSET: u32 = 10;
pub const LAST_DATABASE_OFFSET: u32 = 62;

/// Why an AppDatabase cannot be created as it stands. Each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("PrivateNetwork {0} does not exist in this namespace")]
    NetworkNotFound(String),
    #[error("PrivateNetwork {0} is not ready yet: {1}")]
    NetworkNotReady(String, String),
    #[error("Secret {0} (admin.passwordSecretRef) does not exist in this namespace")]
    SecretNotFound(String),
    #[error("Secret {0} has no key {1} (admin.passwordSecretRef.key)")]
    SecretKeyNotFound(String, String),
    #[error("the admin password in Secret {secret} is refused: {error}")]
    InvalidPassword { secret: String, error: PasswordError },
    #[error("PrivateNetwork {0} has no free address left for another database")]
    NoAddressLeft(String),
    #[error("{0}")]
    NameInUse(crate::controllers::apply::NameInUse),
    #[error("spec.image: {0}")]
    ImageNotAllowed(crate::image_policy::ImageNotAllowed),
}

impl Invalid {
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::NetworkNotFound(_) => "NetworkNotFound",
            Invalid::NetworkNotReady(..) => "NetworkNotReady",
            Invalid::SecretNotFound(_) => "SecretNotFound",
            Invalid::SecretKeyNotFound(..) => "SecretKeyNotFound",
            Invalid::InvalidPassword { .. } => "InvalidPassword",
            Invalid::NoAddressLeft(_) => "NoAddressLeft",
            Invalid::NameInUse(_) => "NameInUse",
            Invalid::ImageNotAllowed(_) => "ImageNotAllowed",
        }
    }

    /// Whether it clears without anyone changing anything (the network becoming ready).
    pub fn is_transient(&self) -> bool {
        matches!(self, Invalid::NetworkNotReady(..))
    }
}

/// The checked inputs of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    pub network: String,
    pub block: Ipv4Net,
    /// `resourceVersion` of the admin password Secret.
    pub secret_revision: String,
}

/// The network the database lives on: where a migration moved it, else where it was created.
pub fn current_network(db: &AppDatabase) -> String {
    db.current_network().to_owned()
}

pub fn validate(db: &AppDatabase, network: Option<&PrivateNetwork>, secret: Option<&Secret>) -> Result<Valid, Invalid> {
    validate_on(db, &current_network(db), network, secret)
}

/// Like [`validate`], for the database placed on `network_name` (a migration moves it there).
pub fn validate_on(
    db: &AppDatabase,
    network_name: &str,
    network: Option<&PrivateNetwork>,
    secret: Option<&Secret>,
) -> Result<Valid, Invalid> {
    let network_name = network_name.to_owned();
    let network = network.ok_or_else(|| Invalid::NetworkNotFound(network_name.clone()))?;
    let status = network.status.as_ref();
    let block = match network.ready_block() {
        Some(block) => block,
        None => {
            let why = status
                .and_then(|s| conditions::find(&s.common.conditions, conditions::READY))
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "it has no range yet".into());
            return Err(Invalid::NetworkNotReady(network_name, why));
        }
    };
    let secret_ref = &db.spec.admin.password_secret_ref;
    let secret = secret.ok_or_else(|| Invalid::SecretNotFound(secret_ref.name.clone()))?;
    let value = crate::secret::value(secret, &secret_ref.key)
        .ok_or_else(|| Invalid::SecretKeyNotFound(secret_ref.name.clone(), secret_ref.key.clone()))?;
    validate_admin_password(&value).map_err(|error| Invalid::InvalidPassword {
        secret: secret_ref.name.clone(),
        error,
    })?;
    Ok(Valid {
        network: network_name,
        block,
        secret_revision: secret.metadata.resource_version.clone().unwrap_or_default(),
    })
}

/// The database's address in `block`: its current one when it is still inside the block and not taken by another
/// database, else the lowest free one. `None` when the block is full.
pub fn assign_address(
    block: Ipv4Net,
    current: Option<Ipv4Addr>,
    taken_by_others: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let base = u32::from(block.network());
    let usable = |a: Ipv4Addr| {
        let offset = u32::from(a).wrapping_sub(base);
        block.contains(&a) && (FIRST_DATABASE_OFFSET..=LAST_DATABASE_OFFSET).contains(&offset)
    };
    if let Some(addr) = current.filter(|a| usable(*a) && !taken_by_others.contains(a)) {
        return Some(addr);
    }
    (FIRST_DATABASE_OFFSET..=LAST_DATABASE_OFFSET)
        .map(|o| Ipv4Addr::from(base + o))
        .find(|a| !taken_by_others.contains(a))
}

/// One database on a network, as address planning sees it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    /// Creation time (RFC 3339 sorts correctly as text) and name order the databases deterministically.
    pub created: String,
    /// The address in its status, if any (set once it was Ready To Use).
    pub address: Option<Ipv4Addr>,
}

/// Addresses of every database on a network: recorded addresses are kept (the oldest database wins a collision),
/// the others get the lowest free addresses in creation order. Deterministic, so every reconcile of every database
/// computes the same plan without coordination.
pub fn plan_addresses(block: Ipv4Net, tenants: &[Tenant]) -> std::collections::BTreeMap<String, Ipv4Addr> {
    let mut ordered: Vec<&Tenant> = tenants.iter().collect();
    ordered.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    let mut taken = BTreeSet::new();
    let mut plan = std::collections::BTreeMap::new();
    for t in &ordered {
        if let Some(addr) = t.address
            && assign_address(block, Some(addr), &taken) == Some(addr)
        {
            taken.insert(addr);
            plan.insert(t.name.clone(), addr);
        }
    }
    for t in ordered {
        if plan.contains_key(&t.name) {
            continue;
        }
        if let Some(addr) = assign_address(block, None, &taken) {
            taken.insert(addr);
            plan.insert(t.name.clone(), addr);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AppDatabaseSpec, PrivateNetworkSpec, PrivateNetworkStatus,
        app_database::{AdminCredentials, DeletionPolicy, Engine, Storage},
        common::{CommonStatus, SecretKeyRef},
        conditions::{ConditionStatus, condition},
    };
    use k8s_openapi::ByteString;

    fn db() -> AppDatabase {
        AppDatabase::new(
            "orders",
            AppDatabaseSpec {
                network: "prod".into(),
                engine: Engine::MySQL,
                version: None,
                image: None,
                admin: AdminCredentials {
                    username: "acme_admin".into(),
                    password_secret_ref: SecretKeyRef {
                        name: "orders-admin".into(),
                        key: "password".into(),
                    },
                },
                storage: Storage {
                    size: "1Gi".into(),
                    storage_class_name: None,
                },
                resources: None,
                dns: None,
                deletion_policy: DeletionPolicy::Retain,
                tunnel: None,
            },
        )
    }

    fn network(ready: bool) -> PrivateNetwork {
        let mut n = PrivateNetwork::new("prod", PrivateNetworkSpec::default());
        let status = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        n.status = Some(PrivateNetworkStatus {
            cidr: ready.then(|| "10.20.30.64/26".into()),
            common: CommonStatus {
                conditions: vec![condition(
                    "Ready",
                    status,
                    "X",
                    if ready { "" } else { "claiming a range" },
                    None,
                    jiff::Timestamp::UNIX_EPOCH,
                )],
                ..Default::default()
            },
            ..Default::default()
        });
        n
    }

    fn secret(key: &str, value: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.resource_version = Some("42".into());
        s.data = Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into());
        s
    }

    #[test]
    fn every_reason() {
        let d = db();
        assert_eq!(validate(&d, None, None).unwrap_err().reason(), "NetworkNotFound");
        let not_ready = validate(&d, Some(&network(false)), None).unwrap_err();
        assert_eq!(not_ready.reason(), "NetworkNotReady");
        assert!(not_ready.to_string().contains("claiming a range") && not_ready.is_transient());
        assert_eq!(
            validate(&d, Some(&network(true)), None).unwrap_err().reason(),
            "SecretNotFound"
        );
        assert_eq!(
            validate(&d, Some(&network(true)), Some(&secret("other", "whatever123")))
                .unwrap_err()
                .reason(),
            "SecretKeyNotFound"
        );
        let bad = validate(&d, Some(&network(true)), Some(&secret("password", "short"))).unwrap_err();
        assert_eq!(bad.reason(), "InvalidPassword");
        assert!(
            !bad.to_string().contains("short"),
            "the message never shows the password: {bad}"
        );
        let ok = validate(&d, Some(&network(true)), Some(&secret("password", "long-enough-1"))).unwrap();
        assert_eq!(
            ok,
            Valid {
                network: "prod".into(),
                block: "10.20.30.64/26".parse().unwrap(),
                secret_revision: "42".into()
            }
        );
    }

    #[test]
    fn address_plan_is_deterministic_and_keeps_recorded_addresses() {
        let block: Ipv4Net = "10.20.30.64/26".parse().unwrap();
        let t = |name: &str, created: &str, address: Option<&str>| Tenant {
            name: name.into(),
            created: created.into(),
            address: address.map(|a| a.parse().unwrap()),
        };
        let tenants = [
            t("b", "2026-01-02", None),
            t("a", "2026-01-01", None),
            t("old", "2025-01-01", Some("10.20.30.74")),
        ];
        let plan = plan_addresses(block, &tenants);
        assert_eq!(plan["old"].to_string(), "10.20.30.74");
        assert_eq!(plan["a"].to_string(), "10.20.30.75");
        assert_eq!(plan["b"].to_string(), "10.20.30.76");
        let mut reversed = tenants.to_vec();
        reversed.reverse();
        assert_eq!(plan_addresses(block, &reversed), plan, "order of input does not matter");
        // Two recorded on the same address (after a migration): the older keeps it.
        let clash = [
            t("x", "2026-01-01", Some("10.20.30.80")),
            t("y", "2026-02-01", Some("10.20.30.80")),
        ];
        let plan = plan_addresses(block, &clash);
        assert_eq!(plan["x"].to_string(), "10.20.30.80");
        assert_eq!(plan["y"].to_string(), "10.20.30.74");
    }

    #[test]
    fn current_network_follows_a_migration() {
        let mut d = db();
        assert_eq!(current_network(&d), "prod");
        d.status = Some(crate::api::AppDatabaseStatus {
            network: Some("prod-2026".into()),
            ..Default::default()
        });
        assert_eq!(current_network(&d), "prod-2026");
    }

    #[test]
    fn addresses_are_stable_unique_and_inside_the_block() {
        let block: Ipv4Net = "10.20.30.64/26".parse().unwrap();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(assign_address(block, None, &BTreeSet::new()), Some(a("10.20.30.74")));
        assert_eq!(
            assign_address(block, Some(a("10.20.30.80")), &BTreeSet::new()),
            Some(a("10.20.30.80")),
            "stable"
        );
        let taken: BTreeSet<_> = [a("10.20.30.74"), a("10.20.30.80")].into();
        assert_eq!(
            assign_address(block, Some(a("10.20.30.80")), &taken),
            Some(a("10.20.30.75")),
            "collision moves"
        );
        assert_eq!(
            assign_address(block, Some(a("10.0.0.80")), &BTreeSet::new()),
            Some(a("10.20.30.74")),
            "other block"
        );
        let full: BTreeSet<_> = (74..=126).map(|o| a(&format!("10.20.30.{o}"))).collect();
        assert_eq!(assign_address(block, None, &full), None);
    }
}
