//! The associative lists of built-in kinds (`x-kubernetes-list-type: map` with their `x-kubernetes-list-map-keys`),
//! for the check a real server makes when it builds a server-side apply's typed object: a key repeated in such a
//! list is refused (`duplicate entries for key [name="X"]`). Covers the lists of pod templates, Services, RBAC-free
//! kinds the operator and the chart write; lists not named here are atomic.
//!
//! Server-side apply and strategic merge patch merge these lists item by item, and field ownership is per item.
//! `keyed` turns each such list into a map from the item's key (`k:{"name":"c"}`, as FieldsV1 writes it) to the
//! item, so that the object-merging and ownership code works on items as on fields; `unkeyed` turns the maps back
//! into lists, in the order of the existing list, then of the applied one.

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

/// The FieldsV1 key of an item: `k:{"name":"c"}`, `k:{"containerPort":80,"protocol":"TCP"}`.
fn item_key(item: &Value, keys: &[&str]) -> String {
    let fields: serde_json::Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), key_value(item, k))).collect();
    format!("k:{}", Value::Object(fields))
}

/// Whether a path segment is an item key made by `keyed`.
pub fn is_item_key(segment: &str) -> bool {
    segment.starts_with("k:{")
}

/// `k:{"name":"c"}` → `[name="c"]`, as a server names an item in messages.
pub fn item_key_display(segment: &str) -> String {
    let fields: serde_json::Map<String, Value> =
        serde_json::from_str(segment.trim_start_matches("k:")).unwrap_or_default();
    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", parts.join(","))
}

/// The list under `field` as a map by item key, if it is an associative list whose items all carry their keys
/// once (a list that breaks the rule stays atomic, so nothing is lost).
fn as_map(field: &str, items: &[Value]) -> Option<serde_json::Map<String, Value>> {
    // An empty associative list is an empty map: applying `env: []` claims no item and removes none of others'.
    let keys = keys(field, items)?;
    let mut map = serde_json::Map::new();
    for item in items {
        if !item.is_object() || keys.iter().any(|k| *k != "protocol" && item.get(*k).is_none()) {
            return None;
        }
        if map.insert(item_key(item, keys), keyed(item)).is_some() {
            return None;
        }
    }
    Some(map)
}

/// `value` with its associative lists as maps by item key.
pub fn keyed(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(field, child)| {
                    let child = match child {
                        Value::Array(items) => as_map(field, items).map(Value::Object).unwrap_or_else(|| child.clone()),
                        other => keyed(other),
                    };
                    (field.clone(), child)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `keyed` undone: maps by item key become lists again, ordered as in the first hint that has the item (the
/// existing object, then the applied configuration), then the rest. Items marked `$patch: delete` (strategic merge
/// patch) are dropped.
pub fn unkeyed(value: &Value, hints: &[Option<&Value>]) -> Value {
    match value {
        Value::Object(map) if map.is_empty() && hints.iter().any(|h| matches!(h, Some(Value::Array(_)))) => {
            Value::Array(Vec::new())
        }
        Value::Object(map) if !map.is_empty() && map.keys().all(|k| is_item_key(k)) => {
            let mut order: Vec<String> = Vec::new();
            let mut item_hints: std::collections::BTreeMap<String, Vec<Option<&Value>>> = Default::default();
            // The key fields, as the map's own keys name them (`k:{"containerPort":500,"protocol":"UDP"}`).
            let first: serde_json::Map<String, Value> = map
                .keys()
                .next()
                .and_then(|k| serde_json::from_str(k.trim_start_matches("k:")).ok())
                .unwrap_or_default();
            let key_fields: Vec<&str> = first.keys().map(String::as_str).collect();
            for hint in hints {
                if let Some(Value::Array(items)) = hint {
                    for item in items {
                        let key = item_key(item, &key_fields);
                        if map.contains_key(&key) && !order.contains(&key) {
                            order.push(key.clone());
                        }
                        item_hints.entry(key).or_default().push(Some(item));
                    }
                }
            }
            for key in map.keys() {
                if !order.contains(key) {
                    order.push(key.clone());
                }
            }
            Value::Array(
                order
                    .iter()
                    .filter_map(|key| {
                        let item = map.get(key)?;
                        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                            return None;
                        }
                        let hints = item_hints.get(key).cloned().unwrap_or_default();
                        Some(unkeyed(item, &hints))
                    })
                    .collect(),
            )
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(field, child)| {
                    let hints: Vec<Option<&Value>> = hints.iter().map(|h| h.and_then(|h| h.get(field))).collect();
                    (field.clone(), unkeyed(child, &hints))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn associative_lists_become_maps_by_key_and_come_back_in_order() {
        let pod = json!({"spec": {"containers": [
            {"name": "b", "env": [{"name": "Z", "value": "1"}, {"name": "A", "value": "2"}],
             "ports": [{"name": "z", "containerPort": 80}, {"name": "a", "containerPort": 500, "protocol": "UDP"}],
             "volumeMounts": [{"name": "z", "mountPath": "/z"}, {"name": "a", "mountPath": "/a"}]},
            {"name": "a", "image": "x"}], "tolerations": [{"key": "t"}]}});
        let k = keyed(&pod);
        assert_eq!(
            k["spec"]["containers"]["k:{\"name\":\"b\"}"]["env"]["k:{\"name\":\"Z\"}"]["value"],
            "1"
        );
        assert_eq!(
            k["spec"]["containers"]["k:{\"name\":\"b\"}"]["ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
            json!({"name": "z", "containerPort": 80})
        );
        assert!(k["spec"]["tolerations"].is_array(), "atomic lists stay lists");
        // Items carrying other fields named like keys elsewhere (a port's or a mount's `name`) keep their order.
        assert_eq!(unkeyed(&k, &[Some(&pod)]), pod, "order and content come back");
        assert_eq!(item_key_display("k:{\"name\":\"b\"}"), "[name=\"b\"]");
        // Without a key, or with a repeated one, the list stays atomic.
        let odd = json!({"env": [{"value": "1"}], "volumes": [{"name": "v"}, {"name": "v"}]});
        assert_eq!(keyed(&odd), odd);
    }

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
