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

/// Applies `desired` unless `live` already matches it. Returns whether a write was made.
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<bool, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let desired_json = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
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

/// A step on one object that failed; the message names the object ("reading the admin Secret failed: ...").
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("reading {what} failed: {source}")]
    Read { what: &'static str, source: kube::Error },
    #[error("applying {what} failed: {source}")]
    Apply { what: &'static str, source: kube::Error },
}

impl StepError {
    /// Short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StepError::Read { .. } => "dereference",
            StepError::Apply { .. } => "apply",
        }
    }
}

/// `.map_err(read("the admin Secret"))`
pub fn read(what: &'static str) -> impl FnOnce(kube::Error) -> StepError {
    move |source| StepError::Read { what, source }
}

/// `.map_err(applying("the StatefulSet"))`
pub fn applying(what: &'static str) -> impl FnOnce(kube::Error) -> StepError {
    move |source| StepError::Apply { what, source }
}

/// Reads the live object and applies `desired` when it differs. Returns the live object as it was.
pub async fn apply_child<K>(api: &Api<K>, desired: &K, what: &'static str) -> Result<Option<K>, StepError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let live = api.get_opt(&desired.name_any()).await.map_err(read(what))?;
    apply_if_changed(api, desired, live.as_ref())
        .await
        .map_err(applying(what))?;
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
