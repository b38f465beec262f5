//! Admission checks for custom resources: the CRD's structural OpenAPI schema and its CEL rules
//! (`x-kubernetes-validations`), with messages shaped like the API server's.
//!
//! Structural keywords checked: type, nullable, required, properties (unknown fields are errors, as with
//! `fieldValidation=Strict`), additionalProperties, items, enum, pattern, min/maxLength, min/maxItems,
//! minimum/maximum, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields. Formats are not checked.
//! CEL rules are evaluated by `kube-cel`, including transition rules (`oldSelf`) on update.

use kube_cel::{CompiledSchema, Validator, compile_schema};
use regex::Regex;
use serde_json::Value;

/// One field that failed admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, for example `spec.cidr`.
    pub field: String,
    /// What is wrong, as a person reads it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A CRD version's schema, compiled once, checking objects many times.
pub struct SchemaValidator {
    schema: Value,
    compiled: CompiledSchema,
    cel: Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaValidator").finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Compiles `openAPIV3Schema`. CEL rules that do not compile are reported by [`Self::compile_errors`].
    pub fn new(schema: Value) -> Self {
        let compiled = compile_schema(&schema);
        Self {
            schema,
            compiled,
            cel: Validator::new(),
        }
    }

    /// Messages of CEL rules that failed to compile (a real API server refuses such a CRD).
    pub fn compile_errors(&self) -> Vec<String> {
        self.compiled
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// Every reason `object` would be refused; empty when it is admitted. `old` is the stored object on update.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        structural(&self.schema, object, "", &mut errors, true);
        if !errors.is_empty() {
            // CEL rules assume a well-typed object; the API server skips them too when the schema fails.
            return errors;
        }
        if let Err(cel_errors) = self.cel.validate_compiled(&self.compiled, object, old) {
            for e in cel_errors.into_vec() {
                errors.push(FieldError {
                    field: e.field_path.clone(),
                    message: e.message.clone(),
                });
            }
        }
        errors
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn structural(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>, root: bool) {
    let mut err = |message: String| {
        errors.push(FieldError {
            field: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        if !schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) && !root {
            err("Invalid value: \"null\": field must not be null".into());
        }
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            err(format!(
                "Invalid value: \"{}\": must be an integer or a string",
                type_name(value)
            ));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            err(format!(
                "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        err(format!(
            "Unsupported value: {value}: supported values: {}",
            list.join(", ")
        ));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                err(format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                err(format!(
                    "Invalid value: \"{s}\": {path} in body should be at least {min} chars long"
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => err(format!(
                        "Invalid value: \"{s}\": {path} in body should match '{pattern}'"
                    )),
                    Ok(_) => {}
                    Err(e) => err(format!("schema pattern {pattern:?} does not compile: {e}")),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                err(format!(
                    "Invalid value: {n}: {path} in body should be less than or equal to {max}"
                ));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                err(format!(
                    "Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                err(format!("Too many: {}: must have at most {max} items", items.len()));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                err(format!(
                    "Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        Value::Object(map) => {
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        errors.push(FieldError {
                            field: join(path, key),
                            message: "Required value".into(),
                        });
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                // apiVersion, kind and metadata are checked by the API server itself, not by the CRD schema.
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_path = join(path, key);
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    structural(child_schema, child, &child_path, errors, false);
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    structural(additional, child, &child_path, errors, false);
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    errors.push(FieldError {
                        field: child_path,
                        message: "field not declared in schema".into(),
                    });
                }
            }
        }
        _ => {}
    }
}
