//! HTTP surface: discovery, OpenAPI v3 (what kubectl needs for server-side field validation), CRUD, patches,
//! server-side apply, watch and Table output.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    ApiError, ServerState,
    auth::{self, Attributes, UserInfo},
    resources::{ResourceType, json_path},
    ssa::ManagedFields,
    store::{Store, WatchEvent, now},
};

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
            axum::routing::get(super::portforward::handle).post(super::portforward::handle),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{pod}/log",
            axum::routing::get(super::logs::handle),
        )
        .fallback(handle)
        .with_state(state)
}

fn json_response(code: StatusCode, value: &impl serde::Serialize) -> Response {
    // serde_json::to_vec, not Value's Display: the latter goes through fmt::Write a fragment at a time.
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

type Query = HashMap<String, String>;

fn query(uri: &Uri) -> Query {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let write = method != Method::GET;
    if write {
        state.writes.fetch_add(1, Ordering::Relaxed);
    }
    {
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default();
        let mut by_agent = state.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match by_agent.get_mut(agent) {
            Some(counts) => counts,
            None => by_agent.entry(agent.to_owned()).or_default(),
        };
        if write {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    let user = match authenticate(&state, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let path = uri.path().trim_end_matches('/').to_owned();
    let q = query(&uri);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        ["version"] => Ok(json_response(
            StatusCode::OK,
            &json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-appdb-testkit", "gitCommit": "", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "none", "compiler": "none", "platform": "linux/amd64"}),
        )),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        )),
        ["apis"] => Ok(json_response(StatusCode::OK, &api_group_list(&state))),
        ["api", "v1"] => Ok(json_response(StatusCode::OK, &resource_list(&state, "", "v1"))),
        ["apis", group] => group_doc(&state, group),
        ["apis", group, version] => {
            let list = resource_list(&state, group, version);
            if list["resources"].as_array().is_some_and(|r| r.is_empty()) {
                Err(ApiError::not_found_path(&path))
            } else {
                Ok(json_response(StatusCode::OK, &list))
            }
        }
        ["openapi", "v3"] => Ok(json_response(StatusCode::OK, &openapi_index(&state))),
        ["openapi", "v3", rest @ ..] => openapi_document(&state, rest),
        ["openapi", "v2"] => Err(ApiError::not_found_path(&path)),
        ["api", "v1", rest @ ..] => {
            faulty_resource_request(&state, &user, "", "v1", rest, &method, q, &headers, body).await
        }
        ["apis", group, version, rest @ ..] => {
            faulty_resource_request(&state, &user, group, version, rest, &method, q, &headers, body).await
        }
        _ => Err(ApiError::not_found_path(&path)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn store(state: &ServerState) -> std::sync::MutexGuard<'_, Store> {
    state.store.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request's user: its bearer token's (401 for an unknown one), then impersonation.
pub(crate) fn authenticate(state: &ServerState, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let requester = state
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .authenticate(headers)?;
    auth::impersonate(&store(state), requester, headers)
}

/// Authentication and RBAC of a pod subresource served by its own route (`log`, `portforward`).
pub(crate) fn authorize_pod_subresource(
    state: &ServerState,
    headers: &HeaderMap,
    method: &Method,
    namespace: &str,
    pod: &str,
    subresource: &str,
) -> Result<(), ApiError> {
    let user = authenticate(state, headers)?;
    let attrs = Attributes {
        verb: Attributes::verb_for(method, true, false, subresource).into(),
        group: String::new(),
        resource: "pods".into(),
        subresource: subresource.into(),
        namespace: Some(namespace.into()),
        name: Some(pod.into()),
    };
    authorize(state, &user, &attrs)
}

/// RBAC for one request; counted in the audit when allowed.
pub(crate) fn authorize(state: &ServerState, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
    auth::allowed(&store(state), user, attrs).map_err(|_| attrs.forbidden(user))?;
    let key = (
        user.name.clone(),
        attrs.verb.clone(),
        attrs.group.clone(),
        attrs.full_resource(),
        attrs.namespace.is_some(),
    );
    *state
        .audit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
    Ok(())
}

// ---- discovery -----------------------------------------------------------------------------------------------

fn group_versions(state: &ServerState) -> Vec<(String, Vec<String>)> {
    let s = store(state);
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in s.types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) => {
                if !versions.contains(&t.version) {
                    versions.push(t.version.clone());
                }
            }
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    groups
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

fn api_group_list(state: &ServerState) -> Value {
    let groups: Vec<Value> = group_versions(state).iter().map(|(g, v)| group_json(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn group_doc(state: &ServerState, group: &str) -> Result<Response, ApiError> {
    group_versions(state)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, v)| {
            let mut doc = group_json(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            json_response(StatusCode::OK, &doc)
        })
        .ok_or_else(|| ApiError::not_found_path(&format!("/apis/{group}")))
}

fn resource_list(state: &ServerState, group: &str, version: &str) -> Value {
    let s = store(state);
    let resources: Vec<Value> = s
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(ResourceType::discovery_entries)
        .collect();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

// ---- OpenAPI v3 ----------------------------------------------------------------------------------------------

fn openapi_index(state: &ServerState) -> Value {
    let generation = store(state).discovery_generation;
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={generation:016X}")}),
    );
    for (g, versions) in group_versions(state) {
        for v in versions {
            paths.insert(
                format!("apis/{g}/{v}"),
                json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={generation:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// Per group-version: the object paths with their PATCH operation marked with the group-version-kind and the
/// `fieldValidation` parameter, which is what makes kubectl rely on server-side field validation; plus the CRD
/// schemas as components, for `kubectl explain`.
fn openapi_document(state: &ServerState, rest: &[&str]) -> Result<Response, ApiError> {
    let (group, version) = match rest {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => {
            return Err(ApiError::not_found_path(&format!("/openapi/v3/{}", rest.join("/"))));
        }
    };
    let s = store(state);
    let types: Vec<&ResourceType> = s
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return Err(ApiError::not_found_path(&format!("/openapi/v3/{}", rest.join("/"))));
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for t in types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let reversed_group: Vec<&str> = if t.group.is_empty() {
            vec!["io", "k8s", "api", "core"]
        } else {
            t.group.split('.').rev().collect()
        };
        let schema_name = format!("{}.{}.{}", reversed_group.join("."), t.version, t.kind);
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "requestBody": {"content": {"application/json": {"schema": reference}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
            })
        };
        let object_path = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        paths.insert(
            object_path,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(collection, json!({"post": op("post"), "get": op("list")}));
        let mut schema = t
            .validator
            .as_ref()
            .map(|_| ())
            .and_then(|_| crd_schema(&s, t))
            .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": schemas}}),
    ))
}

fn crd_schema(s: &Store, t: &ResourceType) -> Option<Value> {
    let crd_type = s.find_type("apiextensions.k8s.io", "customresourcedefinitions")?;
    let crd = s.get(&crd_type, "", &format!("{}.{}", t.plural, t.group))?;
    let versions = crd.object().pointer("/spec/versions")?.as_array()?;
    let v = versions
        .iter()
        .find(|v| v["name"].as_str() == Some(t.version.as_str()))?;
    let mut schema = v.pointer("/schema/openAPIV3Schema")?.clone();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert(
            "metadata".into(),
            json!({"type": "object", "description": "Standard object's metadata."}),
        );
    }
    Some(schema)
}

// ---- resources -----------------------------------------------------------------------------------------------

struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn resolve(state: &ServerState, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let s = store(state);
    let not_found = || ApiError::not_found_path(&format!("/{}", rest.join("/")));
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && let Some(rt) = s.find_type_version(group, version, rest[2]).filter(|t| t.namespaced)
    {
        if rest.len() > 5 {
            return Err(not_found());
        }
        return Ok(Target {
            rt,
            namespace: Some(rest[1].to_owned()),
            name: rest.get(3).map(|s| s.to_string()),
            subresource: rest.get(4).map(|s| s.to_string()),
        });
    }
    let rt = rest
        .first()
        .and_then(|p| s.find_type_version(group, version, p))
        .ok_or_else(not_found)?;
    if rest.len() > 3 || (rt.namespaced && rest.len() > 1) {
        return Err(not_found());
    }
    Ok(Target {
        rt,
        namespace: None,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("protobuf") {
        return super::protobuf::decode(body).map_err(|e| {
            let mut error = ApiError::unsupported_media_type(ct);
            error.message = format!("{}: {e}", error.message);
            error
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    if ct.contains("yaml") {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(&format!("cannot parse YAML body: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(&format!("cannot parse JSON body: {e}")))
    }
}

fn manager_of(q: &Query, headers: &HeaderMap) -> String {
    q.get("fieldManager").cloned().unwrap_or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
            .unwrap_or_else(|| "unknown".into())
    })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// `Accept: application/json;as=PartialObjectMetadata(List);g=meta.k8s.io;v=v1`: metadata only, as a real API server
/// answers it (clients that only need to know an object changed never receive, say, a Secret's values).
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// An object as `PartialObjectMetadata`.
fn metadata_only(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

/// A resource request with the configured faults applied around it.
#[allow(clippy::too_many_arguments)]
async fn faulty_resource_request(
    state: &Arc<ServerState>,
    user: &UserInfo,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    mut q: Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let write = *method != Method::GET;
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let faults = state.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let d = faults.decide(write, watch, &state.fault_counts);
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    if d.conflict {
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: "Operation cannot be fulfilled: the object has been modified; please apply your changes to the \
                      latest version and try again (injected fault)"
                .into(),
            details: None,
        });
    }
    if d.error_before {
        return Err(ApiError {
            code: 500,
            reason: "InternalError",
            message: "Internal error occurred: injected fault".into(),
            details: None,
        });
    }
    if let Some(seconds) = d.watch_seconds {
        q.insert("timeoutSeconds".into(), seconds.to_string());
    }
    let response = resource_request(state, user, group, version, rest, method, &q, headers, body).await?;
    if d.error_after && response.status().is_success() {
        return Err(ApiError {
            code: 500,
            reason: "InternalError",
            message: "Internal error occurred: injected fault after the write took effect".into(),
            details: None,
        });
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    state: &Arc<ServerState>,
    user: &UserInfo,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = resolve(state, group, version, rest)?;
    let rt = target.rt.clone();
    let ns = if rt.namespaced {
        target.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let subresource_name = target.subresource.clone().unwrap_or_default();
    let attrs = Attributes {
        verb: Attributes::verb_for(method, target.name.is_some(), watching, &subresource_name).into(),
        group: rt.group.clone(),
        resource: rt.plural.clone(),
        subresource: subresource_name.clone(),
        namespace: target.namespace.clone().filter(|_| rt.namespaced),
        name: target.name.clone(),
    };
    authorize(state, user, &attrs)?;
    // A server-side apply that creates its object needs `create` as well, as a real server checks it.
    if *method == Method::PATCH
        && subresource_name.is_empty()
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/apply-patch"))
        && let Some(name) = &target.name
        && store(state).get(&rt, &ns, name).is_none()
    {
        authorize(
            state,
            user,
            &Attributes {
                verb: "create".into(),
                ..attrs.clone()
            },
        )?;
    }
    if rt.group == "rbac.authorization.k8s.io"
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && subresource_name.is_empty()
    {
        refuse_escalation(
            state,
            user,
            &rt,
            attrs.namespace.as_deref(),
            target.name.as_deref(),
            headers,
            &body,
        )?;
    }
    if rt.plural == "serviceaccounts" && subresource_name == "token" && *method == Method::POST {
        return token_request(state, &ns, target.name.as_deref().unwrap_or_default());
    }
    let strict = q.get("fieldValidation").map(String::as_str) == Some("Strict");
    let dry_run = q.contains_key("dryRun");
    if rt.create_only {
        return match (method, &target.name) {
            (&Method::POST, None) => self_subject_access_review(state, user, parse_body(headers, &body)?),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if let Some(sub) = &target.subresource
        && (sub != "status" || !rt.status_subresource)
    {
        return Err(ApiError::not_found_path(&format!("/{}", rest.join("/"))));
    }
    let subresource = target.subresource.clone().unwrap_or_default();
    match (method.clone(), target.name.clone()) {
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(
                    state,
                    &rt,
                    target.namespace.as_deref(),
                    q,
                    wants_table(headers),
                    wants_metadata(headers),
                );
            }
            list(
                state,
                &rt,
                target.namespace.as_deref(),
                q,
                wants_table(headers),
                wants_metadata(headers),
            )
        }
        (Method::GET, Some(name)) => {
            let s = store(state);
            let obj = s
                .get(&rt, &ns, &name)
                .map(Store::render)
                .ok_or_else(|| ApiError::not_found(&rt, &name))?;
            if wants_table(headers) {
                return Ok(json_response(StatusCode::OK, &table(&rt, &[obj], &s.rv.to_string())));
            }
            if wants_metadata(headers) {
                return Ok(json_response(StatusCode::OK, &metadata_only(&obj)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::POST, None) => {
            let obj = parse_body(headers, &body)?;
            let mut s = store(state);
            if dry_run {
                return Ok(json_response(StatusCode::CREATED, &obj));
            }
            let created = s.create(&rt, &ns, obj, &manager_of(q, headers), strict)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body(headers, &body)?;
            let mut s = store(state);
            let updated = s.update(
                &rt,
                &ns,
                &name,
                obj,
                &subresource,
                Some(&manager_of(q, headers)),
                strict,
                None,
            )?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        (Method::PATCH, Some(name)) => patch(state, &rt, &ns, &name, &subresource, q, headers, &body, strict),
        (Method::DELETE, Some(name)) => {
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).unwrap_or(json!({}))
            };
            let orphan = q.get("propagationPolicy").map(String::as_str) == Some("Orphan")
                || opts["propagationPolicy"].as_str() == Some("Orphan")
                || opts["orphanDependents"].as_bool() == Some(true);
            let mut s = store(state);
            if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
                let current_uid = s.get(&rt, &ns, &name).and_then(|o| {
                    o.object()
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                if current_uid.as_deref().is_some_and(|c| c != uid) {
                    return Err(ApiError::conflict(
                        &rt,
                        &name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            current_uid.unwrap_or_default()
                        ),
                    ));
                }
            }
            let deleted = s.delete(&rt, &ns, &name, orphan)?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch(
    state: &ServerState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    subresource: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    strict: bool,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let manager = manager_of(q, headers);
    let mut s = store(state);
    let existing = s
        .get(rt, ns, name)
        .map(|st| (st.object().clone(), st.managed().clone()));
    if ct.starts_with("application/apply-patch") {
        if !q.contains_key("fieldManager") {
            return Err(ApiError::bad_request(
                "PATCH with apply-patch requires the fieldManager query parameter",
            ));
        }
        let config = parse_body(headers, body)?;
        // Building the typed object of an apply refuses repeated keys in associative lists (built-in kinds; a
        // custom resource's lists are atomic unless its schema says otherwise).
        if rt.validator.is_none()
            && let Some(duplicate) = super::lists::first_duplicate(&config)
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "failed to create typed patch object ({}{name}; {}, Kind={}): {duplicate}",
                    if ns.is_empty() { String::new() } else { format!("{ns}/") },
                    rt.api_version(),
                    rt.kind
                ),
                None,
            ));
        }
        let force = q.get("force").is_some_and(|f| f == "true");
        let time = now();
        return match existing {
            None => {
                if !subresource.is_empty() {
                    return Err(ApiError::not_found(rt, name));
                }
                let mut managed = ManagedFields::default();
                managed.keyed_lists = rt.validator.is_none();
                let mut obj = managed
                    .apply(&json!({}), &config, &manager, force, "", &rt.api_version(), &time)
                    .map_err(|c| conflict_error(rt, name, c))?;
                obj["metadata"]["name"] = json!(name);
                let created = s.create_with(rt, ns, &mut obj, &manager, strict, managed, true)?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            Some((old, mut managed)) => {
                let mut config = config;
                if let Some(rv) = config.pointer("/metadata/resourceVersion").cloned() {
                    // Apply may carry a resourceVersion precondition; the merge below must not copy it as data.
                    if rv.as_str() != old.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                        return Err(ApiError::conflict(
                            rt,
                            name,
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ));
                    }
                    if let Some(m) = config["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
                let scoped = if subresource == "status" {
                    json!({"status": config.get("status").cloned().unwrap_or(json!({}))})
                } else {
                    let mut c = config.clone();
                    if rt.status_subresource
                        && let Some(m) = c.as_object_mut()
                    {
                        m.remove("status");
                    }
                    c
                };
                let merged = managed
                    .apply(&old, &scoped, &manager, force, subresource, &rt.api_version(), &time)
                    .map_err(|c| conflict_error(rt, name, c))?;
                let updated = s.update(rt, ns, name, merged, subresource, None, strict, Some(managed))?;
                Ok(json_response(StatusCode::OK, &updated))
            }
        };
    }
    let Some((old, _)) = existing else {
        return Err(ApiError::not_found(rt, name));
    };
    let patch_body = parse_body(headers, body)?;
    let patch_sets_rv = patch_body.pointer("/metadata/resourceVersion").is_some();
    let mut patched = old.clone();
    if ct.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch = serde_json::from_value(patch_body)
            .map_err(|e| ApiError::bad_request(&format!("invalid JSON patch: {e}")))?;
        for op in ops.0 {
            // As in Kubernetes, `test` of null passes when the path does not exist.
            if let json_patch::PatchOperation::Test(t) = &op
                && t.value.is_null()
                && patched.pointer(t.path.as_str()).is_none()
            {
                continue;
            }
            json_patch::patch(&mut patched, &[op]).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                    None,
                )
            })?;
        }
    } else if ct.starts_with("application/strategic-merge-patch+json") && rt.validator.is_none() {
        // Strategic merge patch on a built-in kind: associative lists merge item by item (`$patch: delete` drops
        // an item); everything else as a JSON merge patch.
        let mut keyed = super::lists::keyed(&patched);
        json_patch::merge(&mut keyed, &super::lists::keyed(&patch_body));
        patched = super::lists::unkeyed(&keyed, &[Some(&old), Some(&patch_body)]);
    } else if ct.starts_with("application/merge-patch+json") || ct.starts_with("application/strategic-merge-patch+json")
    {
        // A custom resource takes no strategic merge patch on a real server either; served as a merge patch.
        json_patch::merge(&mut patched, &patch_body);
    } else {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
        && !patch_sets_rv
        && !ct.starts_with("application/json-patch+json")
    {
        // A patch without a resourceVersion is unconditional.
        m.remove("resourceVersion");
    }
    let updated = s.update(rt, ns, name, patched, subresource, Some(&manager), strict, None)?;
    Ok(json_response(StatusCode::OK, &updated))
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: Vec<super::ssa::Conflict>) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\": {}", c.manager, c.path))
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.path}))
        .collect();
    let mut e = ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            lines.join("\n")
        ),
        Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes})),
    );
    e.message = e.message.replace('\n', "; ");
    e
}

fn self_subject_access_review(state: &ServerState, user: &UserInfo, review: Value) -> Result<Response, ApiError> {
    let attrs = review.pointer("/spec/resourceAttributes").cloned().unwrap_or(json!({}));
    let field = |k: &str| attrs[k].as_str().unwrap_or_default().to_owned();
    let namespace = field("namespace");
    let name = field("name");
    let asked = Attributes {
        verb: field("verb"),
        group: field("group"),
        resource: field("resource"),
        subresource: field("subresource"),
        namespace: (!namespace.is_empty()).then_some(namespace),
        name: (!name.is_empty()).then_some(name),
    };
    let mut out = review;
    out["status"] = match auth::allowed(&store(state), user, &asked) {
        Ok(origin) => json!({"allowed": true, "reason": format!("RBAC: allowed by {origin}")}),
        Err(_) => json!({"allowed": false}),
    };
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    out["kind"] = json!("SelfSubjectAccessReview");
    Ok(json_response(StatusCode::CREATED, &out))
}

/// TokenRequest (`serviceaccounts/<name>/token`), as the kubelet asks for each pod: a token for the service account,
/// which must exist (`default` always does, as a real cluster's controller makes it in every namespace).
fn token_request(state: &ServerState, namespace: &str, name: &str) -> Result<Response, ApiError> {
    if name != "default" {
        let s = store(state);
        let rt = s
            .find_type_version("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::not_found_path("serviceaccounts"))?;
        if s.get(&rt, namespace, name).is_none() {
            return Err(ApiError::not_found(&rt, name));
        }
    }
    let token = state
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .mint(UserInfo::service_account(namespace, name));
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"audiences": [], "expirationSeconds": 3600},
            "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}),
    ))
}

/// RBAC's escalation prevention on writes of Roles, ClusterRoles and their bindings: nobody grants permissions they
/// do not hold themselves, unless they may `escalate` (roles) or `bind` (bindings).
fn refuse_escalation(
    state: &ServerState,
    user: &UserInfo,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), ApiError> {
    let Ok(object) = parse_body(headers, body) else {
        return Ok(());
    };
    let name = name
        .or(object["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let s = store(state);
    let (role, bypass_verb, bypass_resource) = match rt.plural.as_str() {
        "roles" | "clusterroles" => (object.clone(), "escalate", rt.plural.clone()),
        "rolebindings" | "clusterrolebindings" => {
            if object.get("roleRef").is_none() {
                return Ok(());
            }
            let role_plural = if object["roleRef"]["kind"] == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let Some(role) = auth::referenced_role(&s, &object, namespace) else {
                return Ok(());
            };
            (role, "bind", role_plural.to_owned())
        }
        _ => return Ok(()),
    };
    let bypass = Attributes {
        verb: bypass_verb.into(),
        group: "rbac.authorization.k8s.io".into(),
        resource: bypass_resource,
        subresource: String::new(),
        namespace: namespace.map(str::to_owned),
        name: role["metadata"]["name"].as_str().map(str::to_owned),
    };
    match auth::escalation(&s, user, &role, namespace, &bypass) {
        None => {
            // Granting a permission uses it: the audit counts what the writer needed to hold.
            drop(s);
            let mut audit = state.audit.lock().unwrap_or_else(|e| e.into_inner());
            for held in auth::expand(&role, namespace) {
                let key = (
                    user.name.clone(),
                    held.verb.clone(),
                    held.group.clone(),
                    held.full_resource(),
                    held.namespace.is_some(),
                );
                *audit.entry(key).or_default() += 1;
            }
            Ok(())
        }
        Some(missing) => Err(ApiError::forbidden(
            rt,
            &name,
            &format!(
                "user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held: {missing}",
                user.name, user.groups
            ),
        )),
    }
}

// ---- list, selectors, tables ---------------------------------------------------------------------------------

/// A parsed label selector requirement.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, ApiError> {
    let set = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_owned())
            .collect()
    };
    split_top_level(s)
        .into_iter()
        .map(|part| {
            if let Some((k, v)) = part.split_once(" notin ") {
                Ok(Requirement::NotIn(k.trim().into(), set(v)))
            } else if let Some((k, v)) = part.split_once(" in ") {
                Ok(Requirement::In(k.trim().into(), set(v)))
            } else if let Some((k, v)) = part.split_once("!=") {
                Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some(k) = part.strip_prefix('!') {
                Ok(Requirement::NotExists(k.trim().into()))
            } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                Ok(Requirement::Exists(part))
            } else {
                Err(ApiError::bad_request(&format!("unable to parse requirement: {part}")))
            }
        })
        .collect()
}

fn label_matches(obj: &Value, reqs: &[Requirement]) -> bool {
    let label = |k: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
        Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
        Requirement::Exists(k) => label(k).is_some(),
        Requirement::NotExists(k) => label(k).is_none(),
    })
}

fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, ApiError> {
    split_top_level(s)
        .into_iter()
        .map(|part| {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(&format!("invalid field selector: {part}")));
            };
            match k.trim() {
                "metadata.name" | "metadata.namespace" => Ok((k.trim().to_owned(), eq, v.trim().to_owned())),
                other => Err(ApiError::bad_request(&format!("field label not supported: {other}"))),
            }
        })
        .collect()
}

fn field_matches(obj: &Value, reqs: &[(String, bool, String)]) -> bool {
    reqs.iter().all(|(k, eq, v)| {
        let actual = match k.as_str() {
            "metadata.name" => obj.pointer("/metadata/name"),
            _ => obj.pointer("/metadata/namespace"),
        }
        .and_then(Value::as_str)
        .unwrap_or("");
        (actual == v) == *eq
    })
}

struct Filter {
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

impl Filter {
    fn from_query(q: &Query) -> Result<Self, ApiError> {
        Ok(Filter {
            labels: q
                .get("labelSelector")
                .map(|s| parse_label_selector(s))
                .transpose()?
                .unwrap_or_default(),
            fields: q
                .get("fieldSelector")
                .map(|s| parse_field_selector(s))
                .transpose()?
                .unwrap_or_default(),
        })
    }
    fn matches(&self, obj: &Value) -> bool {
        label_matches(obj, &self.labels) && field_matches(obj, &self.fields)
    }
}

fn list(
    state: &ServerState,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    as_table: bool,
    as_metadata: bool,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let s = store(state);
    let ns_filter = if rt.namespaced { ns } else { None };
    // Shared renderings: the lock is held only to collect them, serializing happens after.
    let items: Vec<Arc<Value>> = s
        .objects
        .get(&(rt.group.clone(), rt.plural.clone()))
        .map(|m| {
            m.iter()
                .filter(|((n, _), st)| ns_filter.is_none_or(|ns| ns == n) && filter.matches(st.object()))
                .map(|(_, st)| st.rendered().clone())
                .collect()
        })
        .unwrap_or_default();
    let rv = s.rv.to_string();
    drop(s);
    if as_table {
        let items: Vec<Value> = items.iter().map(|i| (**i).clone()).collect();
        return Ok(json_response(StatusCode::OK, &table(rt, &items, &rv)));
    }
    if as_metadata {
        let items: Vec<Value> = items.iter().map(|i| metadata_only(i)).collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": rv}, "items": items}),
        ));
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ListBody {
        kind: String,
        api_version: String,
        metadata: Value,
        items: Vec<Arc<Value>>,
    }
    Ok(json_response(
        StatusCode::OK,
        &ListBody {
            kind: format!("{}List", rt.kind),
            api_version: rt.api_version(),
            metadata: json!({"resourceVersion": rv}),
            items,
        },
    ))
}

fn age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now() - t).get_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(rt: &ResourceType, items: &[Value], rv: &str) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    for column in &rt.printer_columns {
        let ty = if column.ty == "date" {
            "string"
        } else {
            column.ty.as_str()
        };
        columns.push(
            json!({"name": column.name, "type": ty, "format": "", "description": "", "priority": column.priority}),
        );
    }
    if rt.printer_columns.is_empty() {
        columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for column in &rt.printer_columns {
                let v = json_path(obj, &column.json_path);
                cells.push(match (column.ty.as_str(), v) {
                    ("date", v) => json!(age(v.and_then(Value::as_str))),
                    (_, Some(Value::String(s))) => json!(s),
                    (_, Some(Value::Null)) | (_, None) => json!("<none>"),
                    (_, Some(other)) => other.clone(),
                });
            }
            if rt.printer_columns.is_empty() {
                cells.push(json!(age(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str))));
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows})
}

// ---- watch ---------------------------------------------------------------------------------------------------

fn watch(
    state: &Arc<ServerState>,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    as_table: bool,
    as_metadata: bool,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let ns_filter = if rt.namespaced { ns.map(str::to_owned) } else { None };
    let (group, plural) = (rt.group.clone(), rt.plural.clone());
    let matches_type = move |e: &WatchEvent| {
        e.group == group && e.plural == plural && ns_filter.as_deref().is_none_or(|n| n == e.namespace)
    };

    let s = store(state);
    let receiver = s.events.subscribe();
    let mut initial: Vec<WatchLine> = Vec::new();
    let current_rv = s.rv;
    let mut expired = false;
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => {
            if let Some(objects) = s.objects.get(&(rt.group.clone(), rt.plural.clone())) {
                for ((obj_ns, _), st) in objects {
                    let in_ns = !rt.namespaced || ns.is_none_or(|n| n == obj_ns);
                    if in_ns && filter.matches(st.object()) {
                        initial.push(WatchLine::new("ADDED", st.rendered().clone()));
                    }
                }
            }
        }
        Some(rv) => {
            let from: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(&format!("invalid resourceVersion {rv:?}")))?;
            if from + 1 < s.oldest_resumable {
                let gone = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", s.oldest_resumable),
                    None,
                );
                initial.push(WatchLine::new("ERROR", Arc::new(gone.to_status())));
                expired = true;
            } else {
                // The history is in resource-version order: skip what the client has seen without scanning it.
                let first_unseen = s.history.partition_point(|e| e.rv <= from);
                for e in s.history.range(first_unseen..).filter(|e| matches_type(e)) {
                    if filter.matches(&e.object) {
                        initial.push(WatchLine::from_event(e));
                    }
                }
            }
        }
    }
    drop(s);

    let rt_for_table = rt.clone();
    let encode = move |line: WatchLine| -> Bytes {
        let plain = || {
            let mut bytes =
                serde_json::to_vec(&json!({"type": line.kind, "object": &*line.object})).unwrap_or_default();
            bytes.push(b'\n');
            Bytes::from(bytes)
        };
        if as_metadata && line.kind != "ERROR" && line.kind != "BOOKMARK" {
            let object = metadata_only(&line.object);
            let mut bytes = serde_json::to_vec(&json!({"type": line.kind, "object": object})).unwrap_or_default();
            bytes.push(b'\n');
            return Bytes::from(bytes);
        }
        if as_table && line.kind != "ERROR" && line.kind != "BOOKMARK" {
            let rv = line
                .object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let object = table(&rt_for_table, std::slice::from_ref(&*line.object), &rv);
            let mut bytes = serde_json::to_vec(&json!({"type": line.kind, "object": object})).unwrap_or_default();
            bytes.push(b'\n');
            return Bytes::from(bytes);
        }
        match &line.encoded {
            // Every watcher of the event shares one encoding.
            Some(once) => once.get_or_init(plain).clone(),
            None => plain(),
        }
    };
    let kind_for_bookmark = (rt.api_version(), rt.kind.clone());
    let stream = async_stream_events(
        receiver,
        initial,
        current_rv,
        expired,
        matches_type,
        filter,
        bookmarks,
        kind_for_bookmark,
        timeout,
        encode,
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

/// One line of a watch stream before encoding.
struct WatchLine {
    kind: String,
    object: Arc<Value>,
    /// The event's shared encoding, for lines that come from a stored event.
    encoded: Option<Arc<std::sync::OnceLock<Bytes>>>,
}

impl WatchLine {
    fn new(kind: &str, object: Arc<Value>) -> Self {
        Self {
            kind: kind.to_owned(),
            object,
            encoded: None,
        }
    }

    fn from_event(e: &WatchEvent) -> Self {
        Self {
            kind: e.kind.to_owned(),
            object: e.object.clone(),
            encoded: Some(e.encoded.clone()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn async_stream_events(
    receiver: tokio::sync::broadcast::Receiver<WatchEvent>,
    initial: Vec<WatchLine>,
    start_rv: u64,
    expired: bool,
    matches_type: impl Fn(&WatchEvent) -> bool + Send + 'static,
    filter: Filter,
    bookmarks: bool,
    (api_version, kind): (String, String),
    timeout: u64,
    encode: impl Fn(WatchLine) -> Bytes + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let initial_stream = futures::stream::iter(initial);
    let live = if expired {
        futures::stream::empty().boxed()
    } else {
        let events = tokio_stream::wrappers::BroadcastStream::new(receiver)
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(move |r| {
                let out = match r {
                    Ok(e) if e.rv > start_rv && matches_type(&e) && filter.matches(&e.object) => {
                        Some(WatchLine::from_event(&e))
                    }
                    _ => None,
                };
                futures::future::ready(out)
            });
        let ticks = if bookmarks {
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            ))
            .map(|_| WatchLine::new("BOOKMARK", Arc::new(Value::Null)))
            .boxed()
        } else {
            futures::stream::pending().boxed()
        };
        futures::stream::select(events, ticks).boxed()
    };
    let mut last_rv = start_rv;
    initial_stream
        .chain(live)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)))
        .map(move |line| {
            if line.kind == "BOOKMARK" {
                // A bookmark carries an object of the watched kind holding only the resource version.
                let marker = json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": last_rv.to_string()}});
                return Ok(encode(WatchLine::new("BOOKMARK", Arc::new(marker))));
            }
            if let Some(rv) = line
                .object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
            {
                last_rv = rv;
            }
            Ok(encode(line))
        })
}
