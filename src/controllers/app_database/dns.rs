//! Who may publish which DNS name (pure). A customer controls `spec.dns.hostname` completely, so without these rules
//! one customer could publish another's name (ExternalDNS would then point it at the wrong database, or flap).
//!
//! - A namespace may publish only names under its allowed domains: the platform's `appdb.dev/dns-domains` annotation
//!   on the Namespace (customers cannot edit Namespace objects), else the operator's `--dns-domains`. Neither: no
//!   name at all, so a platform that never thought about DNS is not open to hijacking.
//! - One name has one holder across the cluster. Holders rank by: already published (since when), then creation
//!   time, then namespace and name; every replica ranks the same store the same way. Refusals never say whose a name
//!   is.

use crate::api::{AppDatabase, conditions};

use super::status::DNS_PUBLISHED;

/// Why `spec.dns.hostname` is not published. The rest of the database is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsRefusal {
    #[error(
        "{hostname} is not under a DNS domain this namespace may use ({}); the platform sets them with the appdb.dev/dns-domains annotation on the namespace",
        domains.join(", ")
    )]
    NotAllowed { hostname: String, domains: Vec<String> },
    #[error(
        "no DNS domain is allowed for this namespace, so {hostname} is not published; the platform sets the appdb.dev/dns-domains annotation on the namespace, or the operator's --dns-domains"
    )]
    NoDomain { hostname: String },
    #[error("{hostname} is already published for another database; choose another name")]
    Conflict { hostname: String },
}

impl DnsRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            DnsRefusal::NotAllowed { .. } | DnsRefusal::NoDomain { .. } => "DnsNameNotAllowed",
            DnsRefusal::Conflict { .. } => "DnsNameConflict",
        }
    }
}

fn normalise(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The domains a namespace may publish under: its annotation (comma-separated) when present, else the operator's.
pub fn allowed_domains(annotation: Option<&str>, operator_default: &[String]) -> Vec<String> {
    let listed: Vec<String> = match annotation {
        Some(list) => list.split(',').map(normalise).collect(),
        None => operator_default.iter().map(|d| normalise(d)).collect(),
    };
    listed.into_iter().filter(|d| !d.is_empty()).collect()
}

/// Whether `hostname` is a domain in `domains` or a name under one (by whole labels: `evil-acme.com` is not under
/// `acme.com`).
pub fn is_allowed(hostname: &str, domains: &[String]) -> bool {
    let hostname = normalise(hostname);
    domains
        .iter()
        .any(|d| hostname == *d || hostname.ends_with(&format!(".{d}")))
}

fn hostname_of(db: &AppDatabase) -> Option<String> {
    db.spec.dns.as_ref().map(|d| normalise(&d.hostname))
}

/// When the database's name was published (the `DnsPublished=True` transition), if it is now.
fn published_since(db: &AppDatabase) -> Option<String> {
    let status = db.status.as_ref()?;
    conditions::find(&status.common.conditions, DNS_PUBLISHED)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.0.to_string())
}

/// The rank of a claim: lower wins.
fn rank(db: &AppDatabase) -> (bool, String, String, String) {
    let created = db
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let published = published_since(db);
    (
        published.is_none(),
        published.unwrap_or(created),
        db.metadata.namespace.clone().unwrap_or_default(),
        db.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `db` may publish its `spec.dns.hostname`, given the namespace's allowed domains and every database in the
/// cluster (`db` itself may be among them).
pub fn check<'a>(
    db: &AppDatabase,
    domains: &[String],
    all: impl IntoIterator<Item = &'a AppDatabase>,
) -> Result<(), DnsRefusal> {
    let Some(hostname) = hostname_of(db) else { return Ok(()) };
    if domains.is_empty() {
        return Err(DnsRefusal::NoDomain { hostname });
    }
    if !is_allowed(&hostname, domains) {
        return Err(DnsRefusal::NotAllowed {
            hostname,
            domains: domains.to_vec(),
        });
    }
    let me = (db.metadata.namespace.as_deref(), db.metadata.name.as_deref());
    let my_rank = rank(db);
    let beaten = all.into_iter().any(|other| {
        (other.metadata.namespace.as_deref(), other.metadata.name.as_deref()) != me
            && other.metadata.deletion_timestamp.is_none()
            && hostname_of(other).as_deref() == Some(hostname.as_str())
            && rank(other) < my_rank
    });
    if beaten {
        return Err(DnsRefusal::Conflict { hostname });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db(ns: &str, name: &str, hostname: &str, created: &str, published_at: Option<&str>) -> AppDatabase {
        let mut value = json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"network": "prod", "admin": {"username": "a", "passwordSecretRef": {"name": "s", "key": "k"}},
                     "storage": {"size": "1Gi"}, "dns": {"hostname": hostname}}
        });
        if let Some(at) = published_at {
            value["status"] = json!({"conditions": [{"type": "DnsPublished", "status": "True", "reason": "Published",
                "message": "", "lastTransitionTime": at}]});
        }
        serde_json::from_value(value).unwrap()
    }

    fn domains(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_namespace_annotation_replaces_the_operator_default() {
        let default = domains(&["db.example.com"]);
        assert_eq!(allowed_domains(None, &default), ["db.example.com"]);
        assert_eq!(
            allowed_domains(Some(" Acme.Example.com., b.example.org"), &default),
            ["acme.example.com", "b.example.org"]
        );
        // An empty annotation allows nothing, whatever the default.
        assert!(allowed_domains(Some(""), &default).is_empty());
    }

    #[test]
    fn names_must_lie_under_an_allowed_domain_by_whole_labels() {
        let acme = domains(&["acme.example.com"]);
        assert!(is_allowed("orders.acme.example.com", &acme));
        assert!(is_allowed("acme.example.com", &acme));
        assert!(is_allowed("ORDERS.Acme.Example.com.", &acme));
        assert!(!is_allowed("evil-acme.example.com", &acme));
        assert!(!is_allowed("orders.globex.example.com", &acme));
        assert!(!is_allowed("example.com", &acme));
    }

    #[test]
    fn a_namespace_without_a_domain_publishes_nothing() {
        let a = db(
            "acme",
            "orders",
            "orders.acme.example.com",
            "2026-01-01T00:00:00Z",
            None,
        );
        let refused = check(&a, &[], [&a]).unwrap_err();
        assert_eq!(refused.reason(), "DnsNameNotAllowed");
        assert!(refused.to_string().contains("appdb.dev/dns-domains"));
    }

    #[test]
    fn another_customers_name_is_refused_without_naming_the_customer() {
        // The hijack: acme asks for globex's name.
        let theirs = db(
            "globex",
            "billing",
            "billing.globex.example.com",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:01:00Z"),
        );
        let hijack = db(
            "acme",
            "orders",
            "billing.globex.example.com",
            "2025-01-01T00:00:00Z",
            None,
        );
        let refused = check(&hijack, &domains(&["acme.example.com"]), [&theirs, &hijack]).unwrap_err();
        assert_eq!(refused.reason(), "DnsNameNotAllowed");
        // Even with overlapping domains, the published holder keeps it, though the other database is older.
        let refused = check(&hijack, &domains(&["example.com"]), [&theirs, &hijack]).unwrap_err();
        assert_eq!(
            refused,
            DnsRefusal::Conflict {
                hostname: "billing.globex.example.com".into()
            }
        );
        assert!(!refused.to_string().contains("globex/") && !refused.to_string().contains("billing "));
        assert_eq!(
            check(&theirs, &domains(&["globex.example.com"]), [&theirs, &hijack]),
            Ok(())
        );
    }

    #[test]
    fn unpublished_claims_rank_by_creation_then_name_the_same_on_every_replica() {
        let first = db("a", "x", "shared.example.com", "2026-01-01T00:00:00Z", None);
        let second = db("b", "y", "Shared.example.com", "2026-01-02T00:00:00Z", None);
        let tie = db("c", "z", "shared.example.com", "2026-01-02T00:00:00Z", None);
        let all = [&first, &second, &tie];
        let d = domains(&["example.com"]);
        assert_eq!(check(&first, &d, all), Ok(()));
        assert_eq!(check(&second, &d, all).unwrap_err().reason(), "DnsNameConflict");
        assert_eq!(check(&tie, &d, all).unwrap_err().reason(), "DnsNameConflict");
        // A deleted holder no longer holds it.
        let mut gone = first.clone();
        gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-02-01T00:00:00Z".parse().unwrap(),
        ));
        assert_eq!(check(&second, &d, [&gone, &second, &tie]), Ok(()));
    }
}
