//! The associative lists of built-in kinds (`x-kubernetes-list-type: map` with their `x-kubernetes-list-map-keys`),
//! for the check a real server makes when it builds a server-side apply's typed object: a key repeated in such a
//! list is refused (`duplicate entries for key [name="X"]`). Covers the lists of pod templates, Services, RBAC-free
//! kinds the operator and the chart write; lists not named here are atomic.

use serde_json::Value;

/// The keys of the associative list held by `field` (given the list's items, where the keys depend on the parent:
/// a Service's ports are keyed by port and protocol, a container's by containerPort and protocol).
fn keys(field: &str, items: &[Value]) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "volumeDevices"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" if items.iter().any(|i| i.get("port").is_some()) => &["port", "protocol"],
        "ports" => &["containerPort", "protocol"],
        "conditions" => &["type"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        _ => return None,
    })
}

fn key_value(item: &Value, key: &str) -> Value {
    match (item.get(key), key) {
        (Some(v), _) => v.clone(),
        // The defaulted protocol, as a real server keys it.
        (None, "protocol") => Value::String("TCP".into()),
        (None, _) => Value::Null,
    }
}

fn render_key(item: &Value, keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", key_value(item, k)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first duplicate key in an associative list under `value`, as a real server reports it:
/// `.spec.template.spec.containers[name="operator"].env: duplicate entries for key [name="APPDB_POOL"]`.
pub fn first_duplicate(value: &Value) -> Option<String> {
    walk(value, "")
}

fn walk(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(map) => {
            for (field, child) in map {
                let here = format!("{path}.{field}");
                if let Value::Array(items) = child
                    && let Some(keys) = keys(field, items)
                {
                    let mut seen = std::collections::BTreeSet::new();
                    for item in items {
                        let key = render_key(item, keys);
                        if !seen.insert(key.clone()) {
                            return Some(format!("{here}: duplicate entries for key [{key}]"));
                        }
                    }
                    for item in items {
                        if let Some(found) = walk(item, &format!("{here}[{}]", render_key(item, keys))) {
                            return Some(found);
                        }
                    }
                    continue;
                }
                if let Some(found) = walk(child, &here) {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_repeated_env_name_is_found_with_a_servers_path() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [{"name": "operator", "env": [
            {"name": "APPDB_POOL", "value": "a"}, {"name": "RUST_LOG"}, {"name": "APPDB_POOL", "value": "a"}]}]}}}});
        assert_eq!(
            first_duplicate(&deployment).as_deref(),
            Some(
                ".spec.template.spec.containers[name=\"operator\"].env: duplicate entries for key [name=\"APPDB_POOL\"]"
            )
        );
    }

    #[test]
    fn ports_differ_by_protocol_and_atomic_lists_may_repeat() {
        let ok = json!({"spec": {"ports": [{"port": 500, "protocol": "UDP"}, {"port": 500}],
            "tolerations": [{"key": "a"}, {"key": "a"}]}});
        assert_eq!(first_duplicate(&ok), None);
        let twice = json!({"spec": {"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}});
        assert_eq!(
            first_duplicate(&twice).as_deref(),
            Some(".spec.ports: duplicate entries for key [port=80,protocol=\"TCP\"]")
        );
    }
}
