//! The customer the scale test and the scale benchmark create by the hundred, and what both read back: one
//! definition, so that the figures in docs/performance.md and the properties CI checks are about the same objects.

use serde_json::{Value, json};

/// Customer `i`: namespace `customer-<i>` with an admin Secret, a PrivateNetwork `prod` with an automatic range, an
/// AppDatabase `db` and a VpnConnection `office` on it.
pub fn customer(i: usize) -> Vec<Value> {
    let ns = namespace(i);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin", "namespace": ns},
            "stringData": {"password": format!("Customer-Passw0rd-{i}")}}),
        json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork",
            "metadata": {"name": "prod", "namespace": ns}, "spec": {}}),
        json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "AppDatabase", "metadata": {"name": "db", "namespace": ns},
            "spec": {"network": "prod",
                "admin": {"username": "admin", "passwordSecretRef": {"name": "admin", "key": "password"}},
                "storage": {"size": "1Gi"}}}),
        json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "VpnConnection",
            "metadata": {"name": "office", "namespace": ns},
            "spec": {"network": "prod", "customerCidrs": [format!("192.168.{}.0/24", i % 250)],
                "customerGatewayAddress": "93.184.216.34"}}),
    ]
}

/// Customer `i`'s readdress migration: a new PrivateNetwork `next` and a DatabaseMigration `move` of `db` onto it.
pub fn migration(i: usize) -> Vec<Value> {
    let ns = namespace(i);
    vec![
        json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork",
            "metadata": {"name": "next", "namespace": ns}, "spec": {}}),
        json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "DatabaseMigration",
            "metadata": {"name": "move", "namespace": ns},
            "spec": {"database": "db", "targetNetwork": "next", "strategy": "Readdress"}}),
    ]
}

/// Customer `i`'s namespace.
pub fn namespace(i: usize) -> String {
    format!("customer-{i}")
}

/// Objects as one multi-document manifest for `kubectl apply -f -` (JSON is YAML).
pub fn manifest(objects: impl IntoIterator<Item = Value>) -> String {
    objects.into_iter().map(|o| format!("{o}\n---\n")).collect()
}

/// Whether an object's `Ready` condition is `True`.
pub fn is_ready(object: &Value) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The operator's reconciles so far, summed over its controllers, from the text of its `/metrics`.
pub fn reconciles_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("appdb_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_summed_over_controllers_and_other_series_are_ignored() {
        let metrics = "# TYPE appdb_reconciles_total counter\n\
            appdb_reconciles_total{controller=\"privatenetwork\"} 12\n\
            appdb_reconciles_total{controller=\"appdatabase\"} 30\n\
            appdb_reconcile_errors_total{controller=\"appdatabase\"} 4\n";
        assert_eq!(reconciles_total(metrics), 42);
        assert_eq!(reconciles_total(""), 0);
    }

    #[test]
    fn readiness_is_the_ready_condition_only() {
        let ready = json!({"status": {"conditions": [{"type": "Reconciling", "status": "False"},
            {"type": "Ready", "status": "True"}]}});
        let not_yet = json!({"status": {"conditions": [{"type": "Ready", "status": "False"},
            {"type": "Reconciling", "status": "True"}]}});
        assert!(is_ready(&ready));
        assert!(!is_ready(&not_yet));
        assert!(!is_ready(&json!({})));
    }

    #[test]
    fn every_customer_lives_in_its_own_namespace_and_the_manifest_keeps_every_object() {
        for object in customer(7).into_iter().skip(1).chain(migration(7)) {
            assert_eq!(object["metadata"]["namespace"], "customer-7");
        }
        let text = manifest(customer(7));
        assert_eq!(text.matches("\n---\n").count(), 5);
        assert!(text.contains("\"192.168.7.0/24\""));
    }
}
