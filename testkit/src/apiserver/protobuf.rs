//! Protobuf request bodies, as kubectl sends them for built-in kinds from its generator commands (`kubectl create
//! namespace|secret|configmap|serviceaccount|role|rolebinding|…`) and `kubectl auth can-i`: the `k8s\0` envelope
//! around a `runtime.Unknown` (type meta, raw object), the object decoded by the field numbers of Kubernetes'
//! `generated.proto` into the JSON a client would have sent. Kinds no generator sends are refused with 415, naming
//! the kind.

use base64::Engine;
use serde_json::{Map, Value};

/// How one field is read.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
    MapStr,
    MapBytes,
}

#[derive(Clone, Copy)]
struct Field(u32, &'static str, Kind);

use Kind::*;

const OBJECT_META: &[Field] = &[
    Field(1, "name", Str),
    Field(2, "generateName", Str),
    Field(3, "namespace", Str),
    Field(5, "uid", Str),
    Field(6, "resourceVersion", Str),
    Field(7, "generation", Int),
    Field(11, "labels", MapStr),
    Field(12, "annotations", MapStr),
    Field(14, "finalizers", RepeatedStr),
];
const NAMESPACE_SPEC: &[Field] = &[Field(1, "finalizers", RepeatedStr)];
const NAMESPACE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "spec", Msg(NAMESPACE_SPEC)),
];
const SECRET: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "data", MapBytes),
    Field(3, "type", Str),
    Field(4, "stringData", MapStr),
    Field(5, "immutable", Bool),
];
const CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "data", MapStr),
    Field(3, "binaryData", MapBytes),
    Field(4, "immutable", Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(4, "automountServiceAccountToken", Bool),
];
const POLICY_RULE: &[Field] = &[
    Field(1, "verbs", RepeatedStr),
    Field(2, "apiGroups", RepeatedStr),
    Field(3, "resources", RepeatedStr),
    Field(4, "resourceNames", RepeatedStr),
    Field(5, "nonResourceURLs", RepeatedStr),
];
const ROLE: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "rules", RepeatedMsg(POLICY_RULE)),
];
const SUBJECT: &[Field] = &[
    Field(1, "kind", Str),
    Field(2, "apiGroup", Str),
    Field(3, "name", Str),
    Field(4, "namespace", Str),
];
const ROLE_REF: &[Field] = &[Field(1, "apiGroup", Str), Field(2, "kind", Str), Field(3, "name", Str)];
const ROLE_BINDING: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "subjects", RepeatedMsg(SUBJECT)),
    Field(3, "roleRef", Msg(ROLE_REF)),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    Field(1, "namespace", Str),
    Field(2, "verb", Str),
    Field(3, "group", Str),
    Field(4, "version", Str),
    Field(5, "resource", Str),
    Field(6, "subresource", Str),
    Field(7, "name", Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[Field(1, "path", Str), Field(2, "verb", Str)];
const SELF_SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    Field(1, "resourceAttributes", Msg(RESOURCE_ATTRIBUTES)),
    Field(2, "nonResourceAttributes", Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    Field(1, "metadata", Msg(OBJECT_META)),
    Field(2, "spec", Msg(SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
];

fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        _ => return None,
    })
}

/// A wire-format value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// The fields of one message, in order.
fn fields(data: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let key = varint(data, &mut at)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        match key & 7 {
            0 => out.push((number, Wire::Varint(varint(data, &mut at)?))),
            2 => {
                let len = usize::try_from(varint(data, &mut at)?).map_err(|_| "length out of range")?;
                let bytes = data.get(at..at + len).ok_or("truncated field")?;
                at += len;
                out.push((number, Wire::Bytes(bytes)));
            }
            1 => at += 8,
            5 => at += 4,
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".into())
}

/// A message as JSON; empty strings, zero numbers and empty messages are left out, as Kubernetes' JSON omits them.
fn message(data: &[u8], schema: &'static [Field]) -> Result<Value, String> {
    let mut out = Map::new();
    for (number, value) in fields(data)? {
        let Some(Field(_, name, kind)) = schema.iter().find(|f| f.0 == number).copied() else {
            continue;
        };
        match (kind, value) {
            (Str, Wire::Bytes(b)) => {
                let s = text(b)?;
                if !s.is_empty() {
                    out.insert(name.into(), s.into());
                }
            }
            (Int, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name.into(), (v as i64).into());
                }
            }
            (Bool, Wire::Varint(v)) => {
                out.insert(name.into(), (v != 0).into());
            }
            (Msg(inner), Wire::Bytes(b)) => {
                let m = message(b, inner)?;
                if m.as_object().is_some_and(|o| !o.is_empty()) {
                    out.insert(name.into(), m);
                }
            }
            (RepeatedStr, Wire::Bytes(b)) => {
                let list = out.entry(name).or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(items) = list {
                    items.push(text(b)?.into());
                }
            }
            (RepeatedMsg(inner), Wire::Bytes(b)) => {
                let m = message(b, inner)?;
                let list = out.entry(name).or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(items) = list {
                    items.push(m);
                }
            }
            (MapStr | MapBytes, Wire::Bytes(b)) => {
                let mut key = String::new();
                let mut entry_value = Value::String(String::new());
                for (n, w) in fields(b)? {
                    match (n, w) {
                        (1, Wire::Bytes(k)) => key = text(k)?,
                        (2, Wire::Bytes(v)) if matches!(kind, MapStr) => entry_value = text(v)?.into(),
                        (2, Wire::Bytes(v)) => entry_value = base64::engine::general_purpose::STANDARD.encode(v).into(),
                        _ => {}
                    }
                }
                let map = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(key, entry_value);
                }
            }
            _ => return Err(format!("field {name} has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

/// A protobuf request body as the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or("the body lacks the protobuf envelope (k8s\\0)")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (number, value) in fields(unknown)? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in fields(type_meta)? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema = schema(&api_version, &kind)
        .ok_or_else(|| format!("protobuf bodies of {api_version} {kind} are not understood by the test API server"))?;
    let mut object = message(raw, schema)?;
    object["apiVersion"] = api_version.into();
    object["kind"] = kind.into();
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kubectl 1.33 sent for `kubectl create namespace foo2` and `kubectl create rolebinding rb -n default
    /// --clusterrole=view --user=alice` (captured with `-v=9`).
    const NAMESPACE_BODY: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1c\x0a\x14\x0a\x04foo2\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

    #[test]
    fn kubectls_namespace_body_is_the_namespace() {
        let object = decode(NAMESPACE_BODY).expect("decoded");
        assert_eq!(
            object,
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo2"}})
        );
    }

    #[test]
    fn kubectls_rolebinding_body_is_the_binding() {
        let mut body = b"k8s\x00\x0a\x2b\x0a\x1crbac.authorization.k8s.io/v1\x12\x0bRoleBinding\x12\x77".to_vec();
        body.extend_from_slice(b"\x0a\x19\x0a\x02rb\x12\x00\x1a\x07default\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00");
        body.extend_from_slice(b"\x12\x2a\x0a\x04User\x12\x19rbac.authorization.k8s.io\x1a\x05alice\x22\x00");
        body.extend_from_slice(
            b"\x1a\x2e\x0a\x19rbac.authorization.k8s.io\x12\x0bClusterRole\x1a\x04view\x1a\x00\x22\x00",
        );
        let object = decode(&body).expect("decoded");
        assert_eq!(
            object["metadata"],
            serde_json::json!({"name": "rb", "namespace": "default"})
        );
        assert_eq!(
            object["subjects"],
            serde_json::json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}])
        );
        assert_eq!(
            object["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})
        );
    }

    #[test]
    fn maps_bytes_and_unknown_kinds() {
        // Secret{metadata{name: s}, data{"k": [0xff, 0x00]}, type: Opaque}
        let secret = b"\x0a\x03\x0a\x01s\x12\x07\x0a\x01k\x12\x02\xff\x00\x1a\x06Opaque";
        let mut body = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12".to_vec();
        body.push(secret.len() as u8);
        body.extend_from_slice(secret);
        let object = decode(&body).expect("decoded");
        assert_eq!(object["data"]["k"], "/wA=");
        assert_eq!(object["type"], "Opaque");
        let pod = b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00";
        assert!(decode(pod).expect_err("not understood").contains("v1 Pod"));
        assert!(decode(b"{}").is_err());
    }
}
