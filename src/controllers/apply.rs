//! The one way the operator writes objects it owns: server-side apply with one field manager, skipped when the
//! live object already says everything the desired object says (so a steady-state reconcile writes nothing).

use std::fmt::Debug;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::names::FIELD_MANAGER;

/// Writes `status` as `object`'s status: server-side apply of the status subresource with the one field manager
/// (forced: the operator owns status). Callers compare first, so an unchanged status is never written.
pub async fn apply_status<K>(client: &kube::Client, object: &K, status: &impl Serialize) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// True when every field of `desired` has the same value in `live`: objects key by key, lists element by element
/// (same length). Fields the server adds (defaults, metadata) do not count as differences.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => {
                v.is_null() || v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|o| o.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        (d, l) => d == l,
    }
}

/// The owner that controls `object` (the owner reference with `controller: true`), by UID.
fn controller_uid<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// An object that holds a name the operator wants for one of its own, without being controlled by the owner it is
/// wanted for: a customer's pre-seeded Secret or Service, or another object's child. Writing it would adopt it
/// (keeping the customer's fields, using the customer's password); the operator refuses instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name} already exists and is not managed for this object; delete or rename it")]
pub struct NameInUse {
    pub kind: String,
    pub name: String,
}

/// `Err` when `live` exists and is not controlled by the owner `desired` names. Pure.
pub fn check_owned<K: Resource>(kind: &str, desired: &K, live: Option<&K>) -> Result<(), NameInUse> {
    let Some(live) = live else { return Ok(()) };
    let owned = match controller_uid(desired) {
        Some(wanted) => controller_uid(live) == Some(wanted),
        // Shared children (a namespace's isolation policies, owned by every network in it) have owners but no
        // controller: the live object must carry at least one of them.
        None => {
            let uids = |o: &K| -> Vec<String> {
                o.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .map(|r| r.uid.clone())
                    .collect()
            };
            let wanted = uids(desired);
            wanted.is_empty() || uids(live).iter().any(|u| wanted.contains(u))
        }
    };
    match owned {
        true => Ok(()),
        false => Err(NameInUse {
            kind: kind.to_owned(),
            name: live.name_any(),
        }),
    }
}

/// Applies `desired` unless `live` already matches it. Returns whether a write was made. Refuses (never writes) when
/// `live` is not controlled by `desired`'s owner: see [`NameInUse`].
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<bool, PatchError>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let desired_json = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    let kind = desired_json.get("kind").and_then(Value::as_str).unwrap_or("object");
    check_owned(kind, desired, live)?;
    if let Some(live) = live {
        let live_json = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
        if is_subset(&desired_json, &live_json) {
            return Ok(false);
        }
    }
    api.patch(
        &desired.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(true)
}

/// Why [`apply_if_changed`] did not apply.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(transparent)]
    NameInUse(#[from] NameInUse),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

// One error per step of a reconcile. The pure steps have their own (validation's reasons, the block and schedule
// errors) and build cannot fail; the two steps that talk to the API server are these, and writing status is each
// controller's `Error::Status`.

/// The dereference step failed: an object the reconcile depends on could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} failed: {source}")]
pub struct ReadError {
    pub what: &'static str,
    #[source]
    pub source: kube::Error,
}

/// The apply step failed on one child; reading the live child to compare with it is part of the step.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading {what} failed: {source}")]
    Read { what: &'static str, source: kube::Error },
    #[error("applying {what} failed: {source}")]
    Write { what: &'static str, source: kube::Error },
    /// Not a failure to retry quickly: the owner reports it as `NameInUse` until the object goes.
    #[error(transparent)]
    NameInUse(#[from] NameInUse),
}

impl ApplyError {
    /// Short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApplyError::Read { .. } | ApplyError::Write { .. } => "apply",
            ApplyError::NameInUse(_) => "name_in_use",
        }
    }
}

/// `.map_err(read("the admin Secret"))`: a read of the dereference step.
pub fn read(what: &'static str) -> impl FnOnce(kube::Error) -> ReadError {
    move |source| ReadError { what, source }
}

/// `.map_err(applying("the StatefulSet"))`
pub fn applying(what: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError::Write { what, source }
}

/// `.map_err(reading_child("the gateway Deployment"))`: a read of a child the apply step compares or acts on.
pub fn reading_child(what: &'static str) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| ApplyError::Read { what, source }
}

/// Reads the live object and applies `desired` when it differs. Returns the live object as it was.
pub async fn apply_child<K>(api: &Api<K>, desired: &K, what: &'static str) -> Result<Option<K>, ApplyError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let live = api.get_opt(&desired.name_any()).await.map_err(reading_child(what))?;
    apply_if_changed(api, desired, live.as_ref())
        .await
        .map_err(applied(what))?;
    Ok(live)
}

/// Creates an object that is made once and never rewritten (a generated password, a Job). `Some` with the created
/// object, `None` when it exists already (another reconcile or operator process made it first).
pub async fn create_once<K>(api: &Api<K>, object: &K, what: &'static str) -> Result<Option<K>, ApplyError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    match api.create(&kube::api::PostParams::default(), object).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(applying(what)(e)),
    }
}

/// `.map_err(applied("the StatefulSet"))` for [`apply_if_changed`]: a name in use stays that, not an API failure.
pub fn applied(what: &'static str) -> impl FnOnce(PatchError) -> ApplyError {
    move |e| match e {
        PatchError::NameInUse(n) => n.into(),
        PatchError::Kube(source) => ApplyError::Write { what, source },
    }
}

/// Reads an object the operator creates once and never rewrites (a generated password or key), refusing one that is
/// not controlled by `owner`: a pre-seeded Secret with the generated name must never be taken as the operator's.
pub async fn get_owned<K>(
    api: &Api<K>,
    name: &str,
    owner_uid: &str,
    what: &'static str,
) -> Result<Option<K>, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let live = api.get_opt(name).await.map_err(reading_child(what))?;
    if let Some(object) = &live
        && controller_uid(object) != Some(owner_uid)
    {
        return Err(NameInUse {
            kind: K::kind(&()).into_owned(),
            name: name.to_owned(),
        }
        .into());
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, controller: Option<&str>) -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "ownerReferences": controller.map(|uid| vec![json!({
                    "apiVersion": "appdb.example.com/v1alpha1", "kind": "AppDatabase", "name": "db",
                    "uid": uid, "controller": true
                })]),
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_the_owners_own_objects_are_written() {
        let desired = secret("db-root", Some("uid-1"));
        assert_eq!(check_owned("Secret", &desired, None), Ok(()));
        assert_eq!(
            check_owned("Secret", &desired, Some(&secret("db-root", Some("uid-1")))),
            Ok(())
        );
        // A customer's pre-seeded Secret (no owner) and another object's child are both refused, by name.
        let refused = check_owned("Secret", &desired, Some(&secret("db-root", None))).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Secret db-root already exists and is not managed for this object; delete or rename it"
        );
        assert!(check_owned("Secret", &desired, Some(&secret("db-root", Some("uid-2")))).is_err());
    }

    #[test]
    fn subset_ignores_server_added_fields() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 1}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}}, "spec": {"ports": [{"port": 1, "protocol": "TCP"}]}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_sees_changed_and_missing_values() {
        let desired = json!({"spec": {"ports": [{"port": 1}], "x": "a"}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 2}], "x": "a"}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 1}, {"port": 2}], "x": "a"}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"ports": [{"port": 1}]}})));
        assert!(is_subset(&json!({"a": null, "b": []}), &json!({})));
    }

    #[test]
    fn each_step_error_names_its_object_and_its_step() {
        let gone = || kube::Error::SerdeError(serde_json::from_str::<u8>("not a number").unwrap_err());
        let read_failed = read("the admin Secret")(gone());
        assert!(
            read_failed.to_string().starts_with("reading the admin Secret failed: "),
            "{read_failed}"
        );
        let child = reading_child("a gateway Deployment")(gone());
        assert!(
            child.to_string().starts_with("reading a gateway Deployment failed: "),
            "{child}"
        );
        assert_eq!(child.metric_label(), "apply");
        let write = applying("the StatefulSet")(gone());
        assert!(
            write.to_string().starts_with("applying the StatefulSet failed: "),
            "{write}"
        );
        let in_use = applied("the root Secret")(PatchError::NameInUse(NameInUse {
            kind: "Secret".into(),
            name: "orders-root".into(),
        }));
        assert!(matches!(in_use, ApplyError::NameInUse(_)));
        assert_eq!(in_use.metric_label(), "name_in_use");
    }
}
