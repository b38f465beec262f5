//! Server-side apply: a faithful simplification of field ownership.
//!
//! Each (manager, operation, subresource) owns a set of leaf paths. Objects are merged key by key. In built-in
//! kinds, the associative lists (`lists`: containers, env, ports, volumes, volumeMounts, conditions, …) are merged
//! item by item, keyed as FieldsV1 keys them (`k:{"name":"c"}`), with ownership per item field; other lists are
//! atomic (a list is one leaf, owned whole), as are scalars and empty objects. Tracked fields: everything except
//! `apiVersion`, `kind` and `metadata`, plus `metadata.labels.*`, `metadata.annotations.*`, `metadata.finalizers`
//! and `metadata.ownerReferences`. Apply conflicts when another manager owns a path the config sets to a different
//! value; with `force` the path moves to the applier. Paths the applier owned before and left out of its new config
//! are removed unless another manager still owns them. Updates and patches take ownership of the paths they change.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type FieldPath = Vec<String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: Operation,
    subresource: String,
    api_version: String,
    time: String,
    fields: BTreeSet<FieldPath>,
}

/// Ownership of one object's fields.
#[derive(Clone, Debug, Default)]
pub struct ManagedFields {
    entries: Vec<Entry>,
    /// Merge associative lists by key (built-in kinds); custom resources' lists are atomic.
    pub keyed_lists: bool,
}

/// A path another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

fn tracked(path: &[String]) -> bool {
    match path.first().map(String::as_str) {
        None | Some("apiVersion") | Some("kind") => false,
        Some("metadata") => matches!(
            path.get(1).map(String::as_str),
            Some("labels") | Some("annotations") | Some("finalizers") | Some("ownerReferences")
        ),
        Some(_) => true,
    }
}

/// Leaf paths of `value` that ownership tracks.
pub fn leaf_paths(value: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if tracked(prefix) {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = &mut *value;
    for k in parents {
        match current.get_mut(k) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
    // A map left empty by the removal goes too, as with the API server (the applier owned it through its fields).
    if parents.len() > 1 && get_path(value, parents).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty())) {
        remove_path(value, parents);
    }
}

/// Merges `config` into `target`: objects key by key, everything else replaced.
pub fn deep_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

/// Leaf paths whose value differs between `old` and `new` (added, changed or removed).
pub fn changed_paths(old: &Value, new: &Value) -> BTreeSet<FieldPath> {
    let old_paths = leaf_paths(old);
    let new_paths = leaf_paths(new);
    old_paths
        .union(&new_paths)
        .filter(|p| get_path(old, p) != get_path(new, p))
        .cloned()
        .collect()
}

fn path_string(path: &[String]) -> String {
    path.iter()
        .map(|p| {
            if super::lists::is_item_key(p) {
                super::lists::item_key_display(p)
            } else {
                format!(".{p}")
            }
        })
        .collect()
}

impl ManagedFields {
    fn entry_mut(
        &mut self,
        manager: &str,
        operation: Operation,
        subresource: &str,
        api_version: &str,
        time: &str,
    ) -> &mut Entry {
        let index = match self
            .entries
            .iter()
            .position(|e| e.manager == manager && e.operation == operation && e.subresource == subresource)
        {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    manager: manager.into(),
                    operation,
                    subresource: subresource.into(),
                    api_version: api_version.into(),
                    time: time.into(),
                    fields: BTreeSet::new(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.time = time.into();
        entry.api_version = api_version.into();
        entry
    }

    fn disown_elsewhere(
        &mut self,
        manager: &str,
        operation: Operation,
        subresource: &str,
        paths: &BTreeSet<FieldPath>,
    ) {
        for e in &mut self.entries {
            if e.manager == manager && e.operation == operation && e.subresource == subresource {
                continue;
            }
            e.fields
                .retain(|f| !paths.iter().any(|p| f.starts_with(p) || p.starts_with(f)));
        }
        self.entries
            .retain(|e| !e.fields.is_empty() || e.operation == Operation::Apply);
    }

    /// Records that `manager` changed `old` into `new` by an update or patch.
    pub fn record_update(
        &mut self,
        old: &Value,
        new: &Value,
        manager: &str,
        subresource: &str,
        api_version: &str,
        time: &str,
    ) {
        let (old, new) = if self.keyed_lists {
            (super::lists::keyed(old), super::lists::keyed(new))
        } else {
            (old.clone(), new.clone())
        };
        let changed = changed_paths(&old, &new);
        if changed.is_empty() {
            return;
        }
        let present: BTreeSet<FieldPath> = changed
            .iter()
            .filter(|p| get_path(&new, p).is_some())
            .cloned()
            .collect();
        self.disown_elsewhere(manager, Operation::Update, subresource, &changed);
        let entry = self.entry_mut(manager, Operation::Update, subresource, api_version, time);
        entry.fields.retain(|f| !changed.contains(f));
        entry.fields.extend(present);
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Server-side applies `config` by `manager` onto `existing`; returns the new object or the conflicts.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        existing: &Value,
        config: &Value,
        manager: &str,
        force: bool,
        subresource: &str,
        api_version: &str,
        time: &str,
    ) -> Result<Value, Vec<Conflict>> {
        if self.keyed_lists {
            let (keyed_existing, keyed_config) = (super::lists::keyed(existing), super::lists::keyed(config));
            let merged = self.apply_paths(
                &keyed_existing,
                &keyed_config,
                manager,
                force,
                subresource,
                api_version,
                time,
            )?;
            return Ok(super::lists::unkeyed(&merged, &[Some(existing), Some(config)]));
        }
        self.apply_paths(existing, config, manager, force, subresource, api_version, time)
    }

    /// The apply itself, over leaf paths (item keys being path segments when lists were keyed).
    #[allow(clippy::too_many_arguments)]
    fn apply_paths(
        &mut self,
        existing: &Value,
        config: &Value,
        manager: &str,
        force: bool,
        subresource: &str,
        api_version: &str,
        time: &str,
    ) -> Result<Value, Vec<Conflict>> {
        let applied = leaf_paths(config);
        let mut conflicts = Vec::new();
        for e in &self.entries {
            if e.manager == manager {
                continue;
            }
            for path in e.fields.iter().filter(|f| applied.contains(*f)) {
                if get_path(existing, path) != get_path(config, path) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        path: path_string(path),
                    });
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        let previously: BTreeSet<FieldPath> = self
            .entries
            .iter()
            .find(|e| e.manager == manager && e.operation == Operation::Apply && e.subresource == subresource)
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut result = existing.clone();
        for dropped in previously.difference(&applied) {
            let owned_by_others = self.entries.iter().any(|e| {
                !(e.manager == manager && e.operation == Operation::Apply && e.subresource == subresource)
                    && e.fields.contains(dropped)
            });
            if !owned_by_others {
                remove_path(&mut result, dropped);
            }
        }
        let mut config_body = config.clone();
        if let Some(meta) = config_body.get_mut("metadata").and_then(Value::as_object_mut) {
            let keep: Map<String, Value> = meta
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            *meta = keep;
        }
        deep_merge(&mut result, &config_body);
        // Updates and patches by the applier itself are subsumed by its apply. An empty map in the config (an
        // empty associative list, `env: []`) claims nothing beneath it.
        let claiming: BTreeSet<FieldPath> = applied
            .iter()
            .filter(|p| !get_path(config, p).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)))
            .cloned()
            .collect();
        self.disown_elsewhere(manager, Operation::Apply, subresource, &claiming);
        let entry = self.entry_mut(manager, Operation::Apply, subresource, api_version, time);
        entry.fields = applied;
        Ok(result)
    }

    /// `metadata.managedFields` as Kubernetes renders it (FieldsV1).
    pub fn render(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    let mut fields = Map::new();
                    for path in &e.fields {
                        let mut node = &mut fields;
                        for key in path {
                            let segment = if super::lists::is_item_key(key) {
                                key.clone()
                            } else {
                                format!("f:{key}")
                            };
                            node = node
                                .entry(segment)
                                .or_insert_with(|| Value::Object(Map::new()))
                                .as_object_mut()
                                .expect("inserted as object");
                        }
                    }
                    let mut m = json!({
                        "manager": e.manager,
                        "operation": match e.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields,
                    });
                    if !e.subresource.is_empty() {
                        m["subresource"] = json!(e.subresource);
                    }
                    m
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let mut mf = ManagedFields::default();
        let obj = mf
            .apply(&json!({}), &json!({"spec": {"holder": "a"}}), "a", false, "", "v1", T)
            .unwrap();
        let err = mf
            .apply(&obj, &json!({"spec": {"holder": "b"}}), "b", false, "", "v1", T)
            .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "a".into(),
                path: ".spec.holder".into()
            }]
        );
        let forced = mf
            .apply(&obj, &json!({"spec": {"holder": "b"}}), "b", true, "", "v1", T)
            .unwrap();
        assert_eq!(forced["spec"]["holder"], "b");
    }

    #[test]
    fn same_value_is_shared_without_conflict() {
        let mut mf = ManagedFields::default();
        let obj = mf
            .apply(&json!({}), &json!({"spec": {"x": 1}}), "a", false, "", "v1", T)
            .unwrap();
        assert!(
            mf.apply(&obj, &json!({"spec": {"x": 1}}), "b", false, "", "v1", T)
                .is_ok()
        );
    }

    #[test]
    fn a_map_whose_fields_are_all_left_out_goes_too() {
        let mut fm = ManagedFields::default();
        let first = json!({"status": {"state": "x", "retired": {"name": "a", "until": "t"}}});
        let obj = fm.apply(&json!({}), &first, "op", false, "status", "v1", "t").unwrap();
        let obj = fm
            .apply(
                &obj,
                &json!({"status": {"state": "x"}}),
                "op",
                false,
                "status",
                "v1",
                "t",
            )
            .unwrap();
        assert_eq!(obj, json!({"status": {"state": "x"}}));
    }

    #[test]
    fn fields_left_out_of_a_new_apply_are_removed() {
        let mut mf = ManagedFields::default();
        let obj = mf
            .apply(&json!({}), &json!({"spec": {"x": 1, "y": 2}}), "a", false, "", "v1", T)
            .unwrap();
        let obj = mf
            .apply(&obj, &json!({"spec": {"x": 1}}), "a", false, "", "v1", T)
            .unwrap();
        assert_eq!(obj, json!({"spec": {"x": 1}}));
    }

    #[test]
    fn an_update_takes_ownership_so_the_field_survives_the_appliers_removal() {
        let mut mf = ManagedFields::default();
        let obj = mf
            .apply(&json!({}), &json!({"spec": {"x": 1}}), "a", false, "", "v1", T)
            .unwrap();
        let updated = json!({"spec": {"x": 5}});
        mf.record_update(&obj, &updated, "kubectl-edit", "", "v1", T);
        let err = mf
            .apply(&updated, &json!({"spec": {"x": 1}}), "a", false, "", "v1", T)
            .unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
        let obj = mf
            .apply(&updated, &json!({"spec": {}}), "a", false, "", "v1", T)
            .unwrap();
        assert_eq!(obj["spec"]["x"], 5);
    }

    #[test]
    fn two_managers_own_different_items_of_one_list_and_fields_of_one_item() {
        let mut mf = ManagedFields {
            keyed_lists: true,
            ..Default::default()
        };
        let deployment = |env: Value| json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "env": env}]}}}});
        let obj = mf
            .apply(
                &json!({}),
                &deployment(json!([{"name": "A", "value": "1"}])),
                "chart",
                false,
                "",
                "apps/v1",
                T,
            )
            .unwrap();
        // Another manager adds its own variable to the same container: merged, not replacing the list.
        let sidecar = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}});
        let obj = mf.apply(&obj, &sidecar, "injector", false, "", "apps/v1", T).unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["image"], "a:1");
        // Changing the other's item conflicts, named as a server names it.
        let err = mf
            .apply(
                &obj,
                &deployment(json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])),
                "chart",
                false,
                "",
                "apps/v1",
                T,
            )
            .unwrap_err();
        assert_eq!(err[0].manager, "injector");
        assert_eq!(
            err[0].path,
            ".spec.template.spec.containers[name=\"app\"].env[name=\"B\"].value"
        );
        // The chart dropping its variable removes only its own item.
        let obj = mf
            .apply(&obj, &deployment(json!([])), "chart", false, "", "apps/v1", T)
            .unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}])
        );
        let rendered = mf.render();
        let injector = rendered
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == "injector")
            .unwrap();
        assert!(
            injector["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:env"]
                ["k:{\"name\":\"B\"}"]
                .is_object(),
            "{injector}"
        );
    }

    #[test]
    fn render_uses_fields_v1() {
        let mut mf = ManagedFields::default();
        mf.apply(
            &json!({}),
            &json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": [1]}}),
            "m",
            false,
            "",
            "v1",
            T,
        )
        .unwrap();
        let r = mf.render();
        assert_eq!(
            r[0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:x": {}}})
        );
        assert_eq!(r[0]["operation"], "Apply");
    }
}
