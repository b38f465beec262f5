//! A container's environment, command and arguments as the kubelet makes them: `env` in order (each value may use
//! `$(VAR)` of the variables before it), `envFrom` first, `valueFrom` of fields, Secrets and ConfigMaps, and `$(VAR)`
//! expansion of `command` and `args` with the result. A missing Secret, ConfigMap or key that is not `optional`
//! keeps the container from starting (`CreateContainerConfigError`, with the kubelet's message).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The Secrets and ConfigMaps of the pod's namespace, by name (Secret values decoded).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why a container cannot be configured: the pod's `waiting` reason is `CreateContainerConfigError`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        key: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("unsupported fieldRef {0}")]
    UnsupportedField(String),
}

/// Expands `$(NAME)` with `vars`; `$$` is a literal `$`; a reference to an unknown name stays as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` path.
pub fn field(pod: &Pod, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |map: Option<&BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        _ => {
            return keyed(meta.labels.as_ref(), "metadata.labels['")
                .or_else(|| keyed(meta.annotations.as_ref(), "metadata.annotations['"))
                .ok_or_else(|| ConfigError::UnsupportedField(path.to_owned()));
        }
    };
    Ok(value.unwrap_or_default())
}

/// The container's environment, in the order a process sees it.
pub fn environment(pod: &Pod, container: &Container, sources: &Sources) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, name: String, value: String| {
        if !vars.contains_key(&name) {
            order.push(name.clone());
        }
        vars.insert(name, value);
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(expand(v, &vars)),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field(pod, &f.field_path)?)
                } else if let Some(s) = &from.secret_key_ref {
                    let data = sources.secrets.get(&s.name).map(|d| {
                        d.iter()
                            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                            .collect()
                    });
                    key_of(data, &s.name, &s.key, s.optional, "Secret", &namespace)?
                } else if let Some(c) = &from.config_map_key_ref {
                    let data = sources.config_maps.get(&c.name).cloned();
                    key_of(data, &c.name, &c.key, c.optional, "ConfigMap", &namespace)?
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut vars, e.name.clone(), value);
        }
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let value = vars[&name].clone();
            (name, value)
        })
        .collect())
}

/// One key of a Secret's or ConfigMap's data (`None`: absent and `optional`).
fn key_of(
    data: Option<BTreeMap<String, String>>,
    name: &str,
    key: &str,
    optional: Option<bool>,
    kind: &'static str,
    namespace: &str,
) -> Result<Option<String>, ConfigError> {
    let optional = optional == Some(true);
    match data {
        Some(mut d) => match d.remove(key) {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(ConfigError::KeyNotFound {
                key: key.to_owned(),
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
        },
        None if optional => Ok(None),
        None if kind == "Secret" => Err(ConfigError::SecretNotFound(name.to_owned())),
        None => Err(ConfigError::ConfigMapNotFound(name.to_owned())),
    }
}

/// `command` and `args` expanded with the environment; `None` parts come from the image (its entrypoint and
/// default arguments), as the kubelet leaves them to the runtime.
pub fn command_line(container: &Container, env: &[(String, String)]) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let expand_all = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|items| items.iter().map(|s| expand(s, &vars)).collect())
    };
    (expand_all(&container.command), expand_all(&container.args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "orders-0", "namespace": "acme", "uid": "u-1", "labels": {"app": "orders"}},
            "spec": {"containers": containers, "serviceAccountName": "default"},
            "status": {"podIP": "10.244.0.7"}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        Sources {
            secrets: [(
                "orders-root".to_owned(),
                [("password".to_owned(), b"s3cret".to_vec())].into(),
            )]
            .into(),
            config_maps: [(
                "orders-config".to_owned(),
                [("MODE".to_owned(), "strict".to_owned())].into(),
            )]
            .into(),
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars: BTreeMap<String, String> = [("A".to_owned(), "1".to_owned())].into();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$A $", &vars), "$A $");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn env_in_order_with_references_and_sources() {
        let p = pod(json!([{
            "name": "mysql", "image": "mysql:8.4",
            "envFrom": [{"configMapRef": {"name": "orders-config"}, "prefix": "CFG_"}],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "orders-root", "key": "password"}}},
                {"name": "WHERE", "value": "$(POD)@$(IP) $(LATER)"},
                {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "LATER", "value": "late"}
            ],
            "command": ["run", "--at=$(WHERE)"], "args": ["$(CFG_MODE)", "$$(PW)"]
        }]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = environment(&p, c, &sources()).unwrap();
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["CFG_MODE", "POD", "IP", "APP", "PW", "WHERE", "LATER"]);
        let get = |n: &str| env.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("WHERE"), "orders-0@10.244.0.7 $(LATER)");
        assert_eq!(get("PW"), "s3cret");
        assert_eq!(get("APP"), "orders");
        let (command, args) = command_line(c, &env);
        assert_eq!(command.unwrap(), ["run", "--at=orders-0@10.244.0.7 $(LATER)"]);
        assert_eq!(args.unwrap(), ["strict", "$(PW)"]);
    }

    #[test]
    fn missing_sources_keep_the_container_from_starting() {
        let p = pod(json!([{"name": "c", "image": "mysql",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "orders-root", "key": "other"}}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            environment(&p, c, &sources()).unwrap_err().to_string(),
            "couldn't find key other in Secret acme/orders-root"
        );
        let p = pod(json!([{"name": "c", "image": "mysql", "envFrom": [{"secretRef": {"name": "absent"}}]}]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            environment(&p, c, &sources()).unwrap_err(),
            ConfigError::SecretNotFound("absent".into())
        );
    }
}
