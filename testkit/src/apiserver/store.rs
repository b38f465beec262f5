//! The in-memory object store: objects, resource versions, watch history, finalizers and garbage collection.
//! Every operation runs under one lock, so each write is atomic and resource versions are totally ordered.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use serde_json::{Value, json};

use super::{
    ApiError,
    resources::{ResourceType, builtin_types, types_from_crd},
    ssa::ManagedFields,
};

/// How many past events a watch can resume from; older resource versions get `410 Gone`.
pub const HISTORY_LIMIT: usize = 200_000;

#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub kind: &'static str,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub object: Arc<Value>,
    /// The event as a watch line (`{"type":…,"object":…}`), encoded once for every watcher that receives it.
    pub encoded: Arc<std::sync::OnceLock<axum::body::Bytes>>,
}

/// An object as stored, its field ownership, and the two rendered together as clients read it. The rendering is
/// kept (and shared with watch events) because every list, get and watch serves it: rebuilding it per read made
/// the server, not the operator, the bottleneck of the 1,000-customer benchmark.
pub struct Stored {
    object: Value,
    managed: ManagedFields,
    rendered: Arc<Value>,
}

impl Stored {
    pub fn new(object: Value, managed: ManagedFields) -> Self {
        let mut rendered = object.clone();
        let fields = managed.render();
        if fields.as_array().is_some_and(|a| !a.is_empty()) {
            rendered["metadata"]["managedFields"] = fields;
        }
        Self {
            object,
            managed,
            rendered: Arc::new(rendered),
        }
    }

    pub fn object(&self) -> &Value {
        &self.object
    }

    pub fn managed(&self) -> &ManagedFields {
        &self.managed
    }

    /// The object as clients see it: with its managed fields rendered.
    pub fn rendered(&self) -> &Arc<Value> {
        &self.rendered
    }

    /// Changes the stored object (or its field ownership) and renders it again.
    fn modify(&mut self, change: impl FnOnce(&mut Value, &mut ManagedFields)) {
        let (mut object, mut managed) = (std::mem::take(&mut self.object), std::mem::take(&mut self.managed));
        change(&mut object, &mut managed);
        *self = Stored::new(object, managed);
    }
}

/// `(group, plural)`: the store is version-agnostic, as every kind here has one stored version.
pub type TypeKey = (String, String);
/// `(namespace, name)`; namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

pub struct Store {
    pub rv: u64,
    pub types: Vec<ResourceType>,
    /// Bumped whenever the set of types changes, so that clients' discovery caches are invalidated.
    pub discovery_generation: u64,
    pub objects: BTreeMap<TypeKey, BTreeMap<ObjectKey, Stored>>,
    pub history: VecDeque<WatchEvent>,
    /// Watches may resume from any resource version ≥ this.
    pub oldest_resumable: u64,
    pub events: tokio::sync::broadcast::Sender<WatchEvent>,
    /// ClusterIPs handed out so far.
    pub services_allocated: u64,
    /// Indexes kept beside `objects` so that removing an object costs what it leaves behind, not the store's size.
    index: Index,
}

/// What garbage collection and namespace termination look up on every removal.
#[derive(Default)]
struct Index {
    /// The uid of every stored object.
    live_uids: HashSet<String>,
    /// Owner uid → the objects that name it in their owner references.
    dependents: HashMap<String, BTreeSet<(TypeKey, ObjectKey)>>,
    /// Namespace → how many objects it holds.
    namespace_sizes: HashMap<String, usize>,
}

impl Index {
    fn insert(&mut self, tk: &TypeKey, ok: &ObjectKey, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.live_uids.insert(uid.to_owned());
        }
        for owner in owner_uids(obj) {
            self.dependents
                .entry(owner.to_owned())
                .or_default()
                .insert((tk.clone(), ok.clone()));
        }
        *self.namespace_sizes.entry(ok.0.clone()).or_default() += 1;
    }

    fn remove(&mut self, tk: &TypeKey, ok: &ObjectKey, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.live_uids.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(&(tk.clone(), ok.clone()));
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        if let Some(size) = self.namespace_sizes.get_mut(&ok.0) {
            *size -= 1;
            if *size == 0 {
                self.namespace_sizes.remove(&ok.0);
            }
        }
    }

    fn has_live_owner(&self, obj: &Value) -> bool {
        owner_uids(obj).any(|uid| self.live_uids.contains(uid))
    }
}

pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn type_key(rt: &ResourceType) -> TypeKey {
    (rt.group.clone(), rt.plural.clone())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Everything of an object except metadata and status: a change here bumps `metadata.generation`.
fn generation_relevant(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// The object without the fields the server maintains, to decide whether a write changed anything.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    v
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = tokio::sync::broadcast::channel(65_536);
        let mut store = Store {
            rv: 1,
            types: builtin_types(),
            discovery_generation: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_resumable: 1,
            events,
            services_allocated: 0,
            index: Index::default(),
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let ns_type = store.find_type("", "namespaces").expect("namespaces is built in");
            store
                .create(
                    &ns_type,
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    "testkit",
                    false,
                )
                .expect("initial namespace");
        }
        store
    }

    pub fn find_type(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    pub fn find_type_version(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Stored> {
        self.objects
            .get(&type_key(rt))
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
    }

    /// Objects of a type, in one namespace or (ns = None) all.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .get(&type_key(rt))
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, s)| &s.object)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The object as clients see it: with its managed fields rendered.
    pub fn render(stored: &Stored) -> Value {
        (*stored.rendered).clone()
    }

    fn emit(&mut self, kind: &'static str, rt: &ResourceType, ns: &str, object: impl Into<Arc<Value>>) {
        let event = WatchEvent {
            rv: self.rv,
            kind,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: ns.to_owned(),
            object: object.into(),
            encoded: Arc::default(),
        };
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_resumable = dropped.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Forgets the watch history, as etcd compaction does: older resource versions now answer `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_resumable = self.rv;
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".to_owned()))
            .and_then(|m| m.get(&(String::new(), ns.to_owned())))
            .is_some_and(|s| s.object.pointer("/metadata/deletionTimestamp").is_none())
    }

    fn validate(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>, strict: bool) -> Result<(), ApiError> {
        // Custom resources: their CRD's schema and CEL rules. Built-in kinds: the Kubernetes schemas, where
        // installed (`builtin_schemas`; the tests require them, see `validates_builtin_kinds`).
        let check = |obj: &Value| -> Option<Vec<crate::schema::FieldError>> {
            match &rt.validator {
                Some(validator) => Some(validator.validate(obj, old)),
                None => crate::builtin_schemas::shared()
                    .ok()?
                    .validate(&rt.api_version(), &rt.kind, obj),
            }
        };
        let Some(mut errors) = check(obj) else {
            return Ok(());
        };
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        if !strict {
            let (unknown, rest): (Vec<_>, Vec<_>) = errors
                .into_iter()
                .partition(|e| e.message == "field not declared in schema");
            for e in unknown {
                prune(obj, &e.field);
            }
            errors = if rest.is_empty() {
                check(obj).unwrap_or_default()
            } else {
                rest
            };
        }
        if errors.is_empty() {
            return Ok(());
        }
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": "FieldValueInvalid", "message": e.message, "field": e.field}))
            .collect();
        let detail: Vec<String> = errors
            .iter()
            .map(|e| {
                if e.message.starts_with("Invalid value")
                    || e.message.starts_with("Required value")
                    || e.message.starts_with("Unsupported value")
                    || e.message.starts_with("Too ")
                    || e.message == "field not declared in schema"
                {
                    e.to_string()
                } else {
                    let ty = crate::schema::FieldError {
                        field: e.field.clone(),
                        message: format!("Invalid value: \"object\": {}", e.message),
                    };
                    ty.to_string()
                }
            })
            .collect();
        let message = if detail.len() == 1 {
            format!("{} \"{}\" is invalid: {}", rt.qualified_kind(), name, detail[0])
        } else {
            format!(
                "{} \"{}\" is invalid: [{}]",
                rt.qualified_kind(),
                name,
                detail.join(", ")
            )
        };
        Err(ApiError::invalid(rt, &name, message, causes))
    }

    /// Creates an object. `manager` records an Update-operation ownership unless `apply` (the caller records it).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        manager: &str,
        strict: bool,
    ) -> Result<Value, ApiError> {
        let managed = ManagedFields::default();
        self.create_with(rt, ns, &mut obj, manager, strict, managed, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        obj: &mut Value,
        manager: &str,
        strict: bool,
        mut managed: ManagedFields,
        applied: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON or YAML object"));
        }
        // Built-in kinds merge their associative lists by key; a custom resource's lists are atomic.
        managed.keyed_lists = rt.validator.is_none();
        check_type_fields(rt, obj)?;
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        let mut name = meta_str(obj, "name").unwrap_or_default().to_owned();
        if name.is_empty() {
            match meta_str(obj, "generateName") {
                Some(prefix) => {
                    name = format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
                    obj["metadata"]["name"] = json!(name);
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        format!(
                            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            rt.qualified_kind()
                        ),
                        vec![],
                    ));
                }
            }
        }
        if rt.namespaced {
            if let Some(body_ns) = meta_str(obj, "namespace")
                && body_ns != ns
            {
                return Err(ApiError::bad_request(&format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::not_found_ns(ns));
            }
            obj["metadata"]["namespace"] = json!(ns);
        }
        if self.get(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            // As in Kubernetes, create cannot set status where status is a subresource.
            m.remove("status");
        }
        self.validate(rt, obj, None, strict)?;
        fold_string_data(rt, obj);
        let time = now();
        if !applied {
            managed.record_update(&json!({}), obj, manager, "", &rt.api_version(), &time);
        }
        let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
        let new_types = if is_crd {
            Some(types_from_crd(obj).map_err(|m| {
                ApiError::invalid(
                    rt,
                    &name,
                    format!("CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {m}"),
                    vec![],
                )
            })?)
        } else {
            None
        };
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(time));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if rt.group.is_empty() && rt.plural == "namespaces" {
            obj["status"] = json!({"phase": "Active"});
        }
        if rt.group.is_empty() && rt.plural == "services" {
            // As the real API server does, allocate a ClusterIP (from 10.96.0.0/12) unless the Service is headless.
            // 10.96.0.1 (`default/kubernetes`) and 10.96.0.10 (`kube-system/kube-dns`) are kept for the cluster's
            // own Services, as kubeadm and kind do.
            let requested = obj.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
            if requested.is_empty() && obj.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName") {
                self.services_allocated += 1;
                while matches!(self.services_allocated, 1 | 10) {
                    self.services_allocated += 1;
                }
                let n = self.services_allocated;
                let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        if let Some(types) = new_types {
            self.register_crd_types(obj, types);
        }
        let owned_by_the_dead = has_owners(obj) && !self.index.has_live_owner(obj);
        let stored = Stored::new(obj.clone(), managed);
        let rendered = stored.rendered().clone();
        let key = (ns.to_owned(), name.clone());
        self.index.insert(&type_key(rt), &key, obj);
        self.objects.entry(type_key(rt)).or_default().insert(key, stored);
        self.emit("ADDED", rt, ns, rendered.clone());
        if owned_by_the_dead {
            // As the garbage collector does (asynchronously in Kubernetes): every owner is already gone.
            let _ = self.delete(rt, ns, &name, false);
        }
        Ok((*rendered).clone())
    }

    fn register_crd_types(&mut self, crd: &mut Value, types: Vec<ResourceType>) {
        if let Some(first) = types.first() {
            let (group, plural) = (first.group.clone(), first.plural.clone());
            self.types.retain(|t| !(t.group == group && t.plural == plural));
        }
        self.types.extend(types);
        self.discovery_generation += 1;
        let time = now();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time},
            ],
        });
    }

    /// Replaces an object (PUT, patches, apply). `subresource` is "" or "status".
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut incoming: Value,
        subresource: &str,
        manager: Option<&str>,
        strict: bool,
        managed_override: Option<ManagedFields>,
    ) -> Result<Value, ApiError> {
        let Some(current) = self.get(rt, ns, name) else {
            return Err(ApiError::not_found(rt, name));
        };
        let old = current.object.clone();
        let mut managed = managed_override.unwrap_or_else(|| current.managed.clone());
        if !incoming.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON or YAML object"));
        }
        check_type_fields(rt, &incoming)?;
        if let Some(rv) = incoming.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(body_name) = meta_str(&incoming, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(&format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut new = if subresource == "status" {
            let mut n = old.clone();
            match incoming.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        } else {
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => incoming["status"] = s.clone(),
                    None => {
                        if let Some(m) = incoming.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            // Server-maintained metadata comes from the stored object; the client may change the rest.
            let mut meta = incoming
                .get("metadata")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            for key in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "deletionGracePeriodSeconds",
            ] {
                match old["metadata"].get(key) {
                    Some(v) => meta[key] = v.clone(),
                    None => {
                        if let Some(m) = meta.as_object_mut() {
                            m.remove(key);
                        }
                    }
                }
            }
            incoming["metadata"] = meta;
            incoming
        };
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
            m.insert("resourceVersion".into(), old["metadata"]["resourceVersion"].clone());
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let before: BTreeSet<String> = finalizers(&old).into_iter().collect();
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::forbidden(
                    rt,
                    name,
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        self.validate(rt, &mut new, Some(&old), strict)?;
        fold_string_data(rt, &mut new);
        let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
        if is_crd && subresource.is_empty() {
            let types = types_from_crd(&new).map_err(|m| {
                ApiError::invalid(
                    rt,
                    name,
                    format!("CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {m}"),
                    vec![],
                )
            })?;
            self.register_crd_types(&mut new, types);
        }
        if generation_relevant(&old) != generation_relevant(&new) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if let Some(manager) = manager {
            managed.record_update(&old, &new, manager, subresource, &rt.api_version(), &now());
        }
        if comparable(&old) == comparable(&new) {
            // No change: no new resource version, no event, as in Kubernetes.
            let stored = self
                .objects
                .get_mut(&type_key(rt))
                .and_then(|m| m.get_mut(&(ns.to_owned(), name.to_owned())))
                .expect("present");
            stored.modify(|_, m| *m = managed);
            return Ok(Store::render(stored));
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv);
        let finalizing = new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty();
        let key = (ns.to_owned(), name.to_owned());
        self.index.remove(&type_key(rt), &key, &old);
        self.index.insert(&type_key(rt), &key, &new);
        let stored = Stored::new(new, managed);
        let rendered = stored.rendered().clone();
        self.objects.entry(type_key(rt)).or_default().insert(key, stored);
        self.emit("MODIFIED", rt, ns, rendered.clone());
        if finalizing {
            self.remove(rt, ns, name);
        }
        Ok((*rendered).clone())
    }

    /// Deletes an object: marks it when finalizers hold it, else removes it and collects its dependents.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, orphan: bool) -> Result<Value, ApiError> {
        let Some(current) = self.get(rt, ns, name) else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut obj = current.object.clone();
        let rendered_current = Store::render(current);
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if orphan && let Some(uid) = meta_str(&obj, "uid").map(str::to_owned) {
            self.orphan_dependents(&uid);
        }
        if is_namespace {
            return Ok(self.delete_namespace(name));
        }
        if !finalizers(&obj).is_empty() {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let rv = self.next_rv();
                obj["metadata"]["resourceVersion"] = json!(rv);
                let stored = self
                    .objects
                    .get_mut(&type_key(rt))
                    .and_then(|m| m.get_mut(&(ns.to_owned(), name.to_owned())))
                    .expect("present");
                stored.modify(|o, _| *o = obj);
                let rendered = stored.rendered().clone();
                self.emit("MODIFIED", rt, ns, rendered.clone());
                return Ok((*rendered).clone());
            }
            return Ok(rendered_current);
        }
        Ok(self.remove(rt, ns, name).unwrap_or(obj))
    }

    /// Removes an object for good, then what it leaves behind: dependents (garbage collection), a CRD's objects,
    /// a terminating namespace that became empty.
    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        let key = (ns.to_owned(), name.to_owned());
        let stored = self.objects.get_mut(&type_key(rt))?.remove(&key)?;
        self.index.remove(&type_key(rt), &key, &stored.object);
        let rv = self.next_rv();
        let mut obj = Store::render(&stored);
        obj["metadata"]["resourceVersion"] = json!(rv);
        self.emit("DELETED", rt, ns, obj.clone());
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.remove_crd_types(&obj);
        }
        if let Some(uid) = meta_str(&obj, "uid") {
            self.collect_garbage(uid);
        }
        if !ns.is_empty() {
            self.finish_namespace_if_empty(ns);
        }
        Some(obj)
    }

    fn remove_crd_types(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_owned();
        let Some(rt) = self.find_type(&group, &plural) else {
            return;
        };
        let keys: Vec<ObjectKey> = self
            .objects
            .get(&type_key(&rt))
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in keys {
            let key = (ns.clone(), name);
            if let Some(stored) = self.objects.get_mut(&type_key(&rt)).and_then(|m| m.remove(&key)) {
                self.index.remove(&type_key(&rt), &key, &stored.object);
                self.rv += 1;
                let mut obj = Store::render(&stored);
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.emit("DELETED", &rt, &ns, obj);
            }
        }
        self.types.retain(|t| !(t.group == group && t.plural == plural));
        self.discovery_generation += 1;
    }

    fn orphan_dependents(&mut self, owner_uid: &str) {
        let changed = self.index.dependents.get(owner_uid).cloned().unwrap_or_default();
        for ((group, plural), (ns, name)) in changed {
            let Some(rt) = self.find_type(&group, &plural) else {
                continue;
            };
            let Some(stored) = self.get(&rt, &ns, &name) else {
                continue;
            };
            let mut obj = stored.object.clone();
            if let Some(refs) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
            }
            let _ = self.update(&rt, &ns, &name, obj, "", Some("garbage-collector"), false, None);
        }
    }

    /// Background cascading deletion: once `removed_uid` is gone, each of its dependents whose owners are all gone
    /// is deleted (and their dependents in turn, through `remove`).
    fn collect_garbage(&mut self, removed_uid: &str) {
        let dependents = self.index.dependents.get(removed_uid).cloned().unwrap_or_default();
        for ((group, plural), (ns, name)) in dependents {
            let Some(rt) = self.find_type(&group, &plural) else {
                continue;
            };
            let orphaned = self.get(&rt, &ns, &name).is_some_and(|s| {
                !self.index.has_live_owner(&s.object) && s.object.pointer("/metadata/deletionTimestamp").is_none()
            });
            if orphaned {
                let _ = self.delete(&rt, &ns, &name, false);
            }
        }
    }

    fn delete_namespace(&mut self, name: &str) -> Value {
        let ns_type = self.find_type("", "namespaces").expect("built in");
        let key = (String::new(), name.to_owned());
        if let Some(stored) = self.objects.get_mut(&type_key(&ns_type)).and_then(|m| m.get_mut(&key))
            && stored.object.pointer("/metadata/deletionTimestamp").is_none()
        {
            self.rv += 1;
            let rv = self.rv.to_string();
            stored.modify(|o, _| {
                o["metadata"]["deletionTimestamp"] = json!(now());
                o["status"] = json!({"phase": "Terminating"});
                o["metadata"]["resourceVersion"] = json!(rv);
            });
            let rendered = stored.rendered().clone();
            self.emit("MODIFIED", &ns_type, "", rendered);
        }
        let contents: Vec<(TypeKey, String)> = self
            .objects
            .iter()
            .flat_map(|(tk, m)| {
                m.keys()
                    .filter(|(n, _)| n == name)
                    .map(move |(_, obj)| (tk.clone(), obj.clone()))
            })
            .collect();
        for ((group, plural), obj_name) in contents {
            if let Some(rt) = self.find_type(&group, &plural) {
                let _ = self.delete(&rt, name, &obj_name, false);
            }
        }
        self.finish_namespace_if_empty(name);
        self.get(&ns_type, "", name)
            .map(Store::render)
            .unwrap_or_else(|| json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
    }

    fn finish_namespace_if_empty(&mut self, ns: &str) {
        let ns_type = self.find_type("", "namespaces").expect("built in");
        let terminating = self
            .get(&ns_type, "", ns)
            .is_some_and(|s| s.object.pointer("/metadata/deletionTimestamp").is_some());
        if !terminating {
            return;
        }
        let empty = !self.index.namespace_sizes.contains_key(ns);
        if empty {
            self.remove(&ns_type, "", ns);
        }
    }
}

/// The uids of an object's owners.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn has_owners(obj: &Value) -> bool {
    owner_uids(obj).next().is_some()
}

/// As the real API server does, a Secret's `stringData` is written into `data` (base64) and never stored.
fn fold_string_data(rt: &ResourceType, obj: &mut Value) {
    use base64::Engine;
    if !(rt.group.is_empty() && rt.plural == "secrets") {
        return;
    }
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Some(entries) = string_data.as_object() {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in entries {
            let text = v.as_str().unwrap_or_default();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
        }
    }
}

fn check_type_fields(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(&format!(
            "the kind of the object ({kind}) does not match the resource ({})",
            rt.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != rt.api_version()
    {
        return Err(ApiError::bad_request(&format!(
            "the apiVersion of the object ({av}) does not match the resource ({})",
            rt.api_version()
        )));
    }
    Ok(())
}

/// Removes the field at a dotted path (`spec.foo`, `spec.items[2].bar`), as pruning of unknown fields does.
fn prune(obj: &mut Value, field: &str) {
    let mut parts: Vec<String> = Vec::new();
    for seg in field.split('.') {
        match seg.split_once('[') {
            Some((name, rest)) => {
                parts.push(name.to_owned());
                for idx in rest.split('[') {
                    parts.push(format!("[{}", idx.trim_end_matches(']')));
                }
            }
            None => parts.push(seg.to_owned()),
        }
    }
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut current = obj;
    for p in parents {
        let next = if let Some(i) = p.strip_prefix('[') {
            i.parse::<usize>().ok().and_then(|i| current.get_mut(i))
        } else {
            current.get_mut(p.as_str())
        };
        match next {
            Some(n) => current = n,
            None => return,
        }
    }
    if let Some(m) = current.as_object_mut() {
        m.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(store: &mut Store, ns: &str, name: &str, owners: &[&Value]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}))
            .collect();
        let rt = store.find_type("", "configmaps").expect("built in");
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        if !refs.is_empty() {
            obj["metadata"]["ownerReferences"] = json!(refs);
        }
        store.create(&rt, ns, obj, "test", true).expect("created")
    }

    fn exists(store: &Store, ns: &str, name: &str) -> bool {
        let rt = store.find_type("", "configmaps").expect("built in");
        store.get(&rt, ns, name).is_some()
    }

    fn namespace(store: &mut Store, name: &str) {
        let rt = store.find_type("", "namespaces").expect("built in");
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        store.create(&rt, "", obj, "test", true).expect("created");
    }

    #[test]
    fn deleting_an_owner_cascades_to_dependents_with_no_other_owner() {
        let mut store = Store::new();
        namespace(&mut store, "a");
        let root = config_map(&mut store, "a", "root", &[]);
        let other = config_map(&mut store, "a", "other", &[]);
        let child = config_map(&mut store, "a", "child", &[&root]);
        config_map(&mut store, "a", "grandchild", &[&child]);
        config_map(&mut store, "a", "shared", &[&root, &other]);
        let rt = store.find_type("", "configmaps").expect("built in");

        store.delete(&rt, "a", "root", false).expect("deleted");
        assert!(!exists(&store, "a", "child"));
        assert!(!exists(&store, "a", "grandchild"));
        assert!(exists(&store, "a", "shared"), "one owner is still there");

        store.delete(&rt, "a", "other", false).expect("deleted");
        assert!(!exists(&store, "a", "shared"));
    }

    #[test]
    fn an_object_whose_owners_are_all_gone_is_collected_when_created() {
        let mut store = Store::new();
        namespace(&mut store, "a");
        let owner = config_map(&mut store, "a", "owner", &[]);
        let rt = store.find_type("", "configmaps").expect("built in");
        store.delete(&rt, "a", "owner", false).expect("deleted");
        config_map(&mut store, "a", "late", &[&owner]);
        assert!(!exists(&store, "a", "late"));
    }

    #[test]
    fn orphaning_keeps_dependents_and_drops_the_reference() {
        let mut store = Store::new();
        namespace(&mut store, "a");
        let owner = config_map(&mut store, "a", "owner", &[]);
        config_map(&mut store, "a", "kept", &[&owner]);
        let rt = store.find_type("", "configmaps").expect("built in");
        store.delete(&rt, "a", "owner", true).expect("deleted");
        let kept = store.get(&rt, "a", "kept").expect("kept");
        assert!(kept.object.pointer("/metadata/ownerReferences/0").is_none());
    }

    #[test]
    fn a_terminating_namespace_goes_when_its_last_object_goes() {
        let mut store = Store::new();
        namespace(&mut store, "a");
        let cm = store.find_type("", "configmaps").expect("built in");
        let obj =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["test/hold"]}});
        store.create(&cm, "a", obj, "test", true).expect("created");
        let ns = store.find_type("", "namespaces").expect("built in");
        store.delete(&ns, "", "a", false).expect("deleting");
        assert!(store.get(&ns, "", "a").is_some(), "held by the finalizer");

        let mut released = store.get(&cm, "a", "held").expect("held").object.clone();
        released["metadata"]["finalizers"] = json!([]);
        store
            .update(&cm, "a", "held", released, "", Some("test"), false, None)
            .expect("updated");
        assert!(store.get(&cm, "a", "held").is_none());
        assert!(store.get(&ns, "", "a").is_none());
    }
}
