//! Validation of built-in kinds (Deployment, Pod, Role, NetworkPolicy, …) against the Kubernetes JSON schemas of
//! the oldest supported version (1.33), as the `kubernetes-validate` PyPI package ships them ("local-strict": no
//! field outside the schema). The test command installs the package; `APPDB_K8S_SCHEMAS` may name another folder
//! of the same layout.
//!
//! A real API server decodes built-in kinds into Go types and runs hand-written validation; the schemas say
//! nearly the same (types, enums, required fields, no unknown fields), not every rule (a Service's port range, a
//! label value's syntax). What this catches is what a typo or a wrong type in a rendered object would cause.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::Value;

use crate::schema::FieldError;

/// The schema folder of the version the project supports first.
const VERSION_DIR: &str = "v1.33.0-local-strict";

/// The shared schemas, loaded once per process; `Err` says why there are none (the package is not installed).
pub fn shared() -> Result<&'static BuiltinSchemas, &'static str> {
    static SHARED: OnceLock<Result<BuiltinSchemas, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| locate().and_then(|dir| BuiltinSchemas::load(&dir)))
        .as_ref()
        .map_err(String::as_str)
}

fn locate() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("APPDB_K8S_SCHEMAS") {
        return Ok(PathBuf::from(dir));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 to find kubernetes-validate: {e}"))?;
    if !out.status.success() {
        return Err(
            "the Kubernetes schemas are missing: pip install kubernetes-validate (scripts/test.sh installs the pinned version)"
                .into(),
        );
    }
    let package = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Path::new(&package).join("kubernetes-json-schema").join(VERSION_DIR))
}

/// Compiled validators per kind, built on first use.
pub struct BuiltinSchemas {
    dir: PathBuf,
    definitions: Value,
    compiled: Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>,
}

/// The schemas refer to `/api/_definitions.json#/$defs/…`; inlined, those become `#/$defs/…`.
fn inline_refs(text: &str) -> String {
    text.replace("/api/_definitions.json#", "#")
}

impl BuiltinSchemas {
    fn load(dir: &Path) -> Result<BuiltinSchemas, String> {
        let path = dir.join("_definitions.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let definitions: Value =
            serde_json::from_str(&inline_refs(&text)).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(BuiltinSchemas {
            dir: dir.to_owned(),
            definitions: definitions["$defs"].clone(),
            compiled: Mutex::default(),
        })
    }

    /// `deployment-apps-v1.json`, `pod-v1.json`, `role-rbac-v1.json`: the package's file of a kind.
    fn file_name(api_version: &str, kind: &str) -> String {
        let kind = kind.to_ascii_lowercase();
        match api_version.split_once('/') {
            Some((group, version)) => {
                let short = group.split('.').next().unwrap_or(group);
                format!("{kind}-{short}-{version}.json")
            }
            None => format!("{kind}-{api_version}.json"),
        }
    }

    fn validator(&self, api_version: &str, kind: &str) -> Option<Arc<jsonschema::Validator>> {
        let file = Self::file_name(api_version, kind);
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = compiled.get(&file) {
            return v.clone();
        }
        let validator = std::fs::read_to_string(self.dir.join(&file))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&inline_refs(&text)).ok())
            .and_then(|mut schema| {
                // Only the definitions this kind reaches: all of them (thousands) would make each compile take
                // about a second in a test build, while the API server waits for it.
                schema["$defs"] = reachable_definitions(&schema, &self.definitions);
                jsonschema::options().build(&schema).ok()
            })
            .map(Arc::new);
        compiled.insert(file, validator.clone());
        validator
    }

    /// The object's errors, or `None` when the kind has no schema here (custom resources, unknown kinds). Unknown
    /// fields come back as `field not declared in schema`, as the CRD validator says it, so that the caller prunes
    /// them or refuses them by `fieldValidation`.
    pub fn validate(&self, api_version: &str, kind: &str, object: &Value) -> Option<Vec<FieldError>> {
        let validator = self.validator(api_version, kind)?;
        let mut errors = Vec::new();
        for error in validator.iter_errors(object) {
            let at = field_path(&error.instance_path.to_string());
            match &error.kind {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        errors.push(FieldError {
                            field: if at.is_empty() {
                                name.clone()
                            } else {
                                format!("{at}.{name}")
                            },
                            message: "field not declared in schema".into(),
                        });
                    }
                }
                _ => errors.push(FieldError {
                    field: at,
                    message: error.to_string(),
                }),
            }
        }
        Some(errors)
    }
}

/// The definitions `schema` refers to (`#/$defs/NAME`), and theirs, transitively.
fn reachable_definitions(schema: &Value, definitions: &Value) -> Value {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("$ref", Value::String(r)) => {
                            if let Some(name) = r.strip_prefix("#/$defs/") {
                                out.push(name.to_owned());
                            }
                        }
                        _ => refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
            _ => {}
        }
    }
    let mut reached = serde_json::Map::new();
    let mut pending = Vec::new();
    refs(schema, &mut pending);
    while let Some(name) = pending.pop() {
        if reached.contains_key(&name) {
            continue;
        }
        let Some(definition) = definitions.get(&name) else {
            continue;
        };
        refs(definition, &mut pending);
        reached.insert(name, definition.clone());
    }
    Value::Object(reached)
}

/// `/spec/containers/0/ports/1/containerPort` → `spec.containers[0].ports[1].containerPort`, as the API server
/// names fields.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_names_follow_the_package() {
        assert_eq!(
            BuiltinSchemas::file_name("apps/v1", "Deployment"),
            "deployment-apps-v1.json"
        );
        assert_eq!(BuiltinSchemas::file_name("v1", "Pod"), "pod-v1.json");
        assert_eq!(
            BuiltinSchemas::file_name("rbac.authorization.k8s.io/v1", "RoleBinding"),
            "rolebinding-rbac-v1.json"
        );
        assert_eq!(
            field_path("/spec/containers/0/ports/1/containerPort"),
            "spec.containers[0].ports[1].containerPort"
        );
        assert_eq!(
            field_path("/metadata/labels/app.kubernetes.io~1name"),
            "metadata.labels.app.kubernetes.io/name"
        );
        assert_eq!(field_path(""), "");
    }

    #[test]
    fn a_deployment_with_wrong_types_and_unknown_fields_is_refused_field_by_field() {
        let schemas = shared().expect("kubernetes-validate is installed (scripts/test.sh installs it)");
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                    {"name": "c", "image": "i", "bogus": 1, "ports": [{"containerPort": "x"}]}]}}}});
        let errors = schemas
            .validate("apps/v1", "Deployment", &deployment)
            .expect("a schema");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.replicas"), "{errors:?}");
        assert!(
            fields.contains(&"spec.template.spec.containers[0].ports[0].containerPort"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.field == "spec.template.spec.containers[0].bogus"
                    && e.message == "field not declared in schema"),
            "{errors:?}"
        );
        let valid = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}});
        assert_eq!(schemas.validate("v1", "ConfigMap", &valid), Some(vec![]));
        assert_eq!(schemas.validate("appdb.dev/v1alpha1", "AppDatabase", &valid), None);
    }
}
