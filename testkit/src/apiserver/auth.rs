//! Who is asking and what they may do, as a real API server decides it: bearer tokens (the kubeconfig's, or minted
//! by TokenRequest for service accounts), impersonation (`kubectl --as`, `--as-group`), and RBAC from the Roles,
//! ClusterRoles and bindings stored in the server. Members of `system:masters` may do everything (the tests' own
//! kubeconfig is one). Every authorised resource request is counted per user, verb and resource for audits.
//!
//! Not implemented: client certificates (the server speaks plain HTTP on loopback), ClusterRole aggregation, the
//! default ClusterRoles of a real cluster (only what tests apply exists, plus system:basic-user's self-reviews),
//! `impersonate` of uids and extras.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method};
use serde_json::Value;

use super::{ApiError, store::Store};

/// The authenticated (or impersonated) user of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }

    /// A service account's user: `system:serviceaccount:<ns>:<name>` in the service-account groups.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::new(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &["system:serviceaccounts", &format!("system:serviceaccounts:{namespace}")],
        )
    }

    fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// (namespace, name) when this is a service account.
    fn as_service_account(&self) -> Option<(&str, &str)> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        rest.split_once(':')
    }
}

/// What a request does, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// `None` at the cluster scope.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The verb of an HTTP request on a resource path. The streaming subresources need `create` whatever the method
    /// (a WebSocket upgrade is a GET: API servers since 1.30 check `create` for it too).
    pub fn verb_for(method: &Method, has_name: bool, watch: bool, subresource: &str) -> &'static str {
        if matches!(subresource, "portforward" | "exec" | "attach" | "token") {
            return "create";
        }
        match *method {
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if has_name => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if has_name => "delete",
            Method::DELETE => "deletecollection",
            _ => "unknown",
        }
    }

    /// A real server's 403 message for these attributes.
    pub fn forbidden(&self, user: &UserInfo) -> ApiError {
        let qualified = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let subject = match &self.name {
            Some(name) => format!("{qualified} \"{name}\""),
            None => qualified,
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let details = serde_json::json!({"name": self.name.clone().unwrap_or_default(), "group": self.group, "kind": self.resource});
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                user.name,
                self.verb,
                self.full_resource(),
                self.group
            ),
            details: Some(details),
        }
    }
}

/// Bearer tokens the server accepts.
#[derive(Default)]
pub struct Tokens {
    by_token: HashMap<String, UserInfo>,
    minted: u64,
}

impl Tokens {
    pub fn insert(&mut self, token: &str, user: UserInfo) {
        self.by_token.insert(token.into(), user);
    }

    /// A new token for `user` (TokenRequest; a test's kubeconfig for a person).
    pub fn mint(&mut self, user: UserInfo) -> String {
        self.minted += 1;
        let token = format!("testkit-token-{}-{:016x}", self.minted, rand::random::<u64>());
        self.by_token.insert(token.clone(), user);
        token
    }

    /// The user of a request: its bearer token's, then impersonation (checked with `allowed`). A request without a
    /// token is `system:anonymous`; an unknown token is refused with 401, as a real server does.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(UserInfo {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        self.by_token.get(token).cloned().ok_or_else(|| ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        })
    }
}

/// Applies `Impersonate-User` / `Impersonate-Group`: the requester needs `impersonate` on each, and the request then
/// runs as the impersonated user (with `system:authenticated`; a service account also gets its groups).
pub fn impersonate(store: &Store, requester: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(name) = headers.get("Impersonate-User").and_then(|v| v.to_str().ok()) else {
        if headers.contains_key("Impersonate-Group") {
            return Err(ApiError::bad_request(
                "requested [Impersonate-Group] without impersonating a user",
            ));
        }
        return Ok(requester);
    };
    let groups: Vec<&str> = headers
        .get_all("Impersonate-Group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut impersonated = match UserInfo::new(name, &[]).as_service_account() {
        Some((ns, sa)) => {
            let check = Attributes {
                verb: "impersonate".into(),
                group: String::new(),
                resource: "serviceaccounts".into(),
                subresource: String::new(),
                namespace: Some(ns.into()),
                name: Some(sa.into()),
            };
            allowed(store, &requester, &check).map_err(|_| check.forbidden(&requester))?;
            UserInfo::service_account(ns, sa)
        }
        None => {
            let check = Attributes {
                verb: "impersonate".into(),
                group: String::new(),
                resource: "users".into(),
                subresource: String::new(),
                namespace: None,
                name: Some(name.into()),
            };
            allowed(store, &requester, &check).map_err(|_| check.forbidden(&requester))?;
            UserInfo::new(name, &[])
        }
    };
    for group in groups {
        let check = Attributes {
            verb: "impersonate".into(),
            group: String::new(),
            resource: "groups".into(),
            subresource: String::new(),
            namespace: None,
            name: Some(group.into()),
        };
        allowed(store, &requester, &check).map_err(|_| check.forbidden(&requester))?;
        if !impersonated.groups.iter().any(|g| g == group) {
            impersonated.groups.push(group.into());
        }
    }
    Ok(impersonated)
}

/// RBAC's decision: `Ok` with the rule's origin, or `Err` with why not.
pub fn allowed(store: &Store, user: &UserInfo, attrs: &Attributes) -> Result<String, String> {
    if user.is_master() {
        return Ok(format!("{MASTERS} may do everything"));
    }
    // A real cluster's default ClusterRole system:basic-user, bound to every authenticated user: asking what one
    // may do is always allowed.
    if attrs.verb == "create"
        && attrs.group == "authorization.k8s.io"
        && matches!(
            attrs.resource.as_str(),
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        )
        && user.groups.iter().any(|g| g == AUTHENTICATED)
    {
        return Ok("the default ClusterRole system:basic-user".into());
    }
    for (origin, rule) in rules_for(store, user, attrs.namespace.as_deref()) {
        if rule_matches(&rule, attrs) {
            return Ok(origin);
        }
    }
    Err("no RBAC rule allows it".into())
}

/// The rules of the role a binding refers to (`roleRef`), as a value with `rules`, or `None` when it does not exist.
pub fn referenced_role(store: &Store, binding: &Value, namespace: Option<&str>) -> Option<Value> {
    let name = binding["roleRef"]["name"].as_str()?;
    match (binding["roleRef"]["kind"].as_str()?, namespace) {
        ("Role", Some(ns)) => lookup(store, "roles", ns, name).cloned(),
        ("ClusterRole", _) => lookup(store, "clusterroles", "", name).cloned(),
        _ => None,
    }
}

/// Every rule that applies to `user` in `namespace` (`None`: only cluster-wide ones), with where it comes from.
/// Reads the stored objects in place (it runs for every request of a user outside `system:masters`) and copies only
/// the rules that apply.
pub fn rules_for(store: &Store, user: &UserInfo, namespace: Option<&str>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let rules_of =
        |role: Option<&Value>| -> Vec<Value> { role.and_then(|r| r["rules"].as_array()).cloned().unwrap_or_default() };
    for (_, binding) in stored(store, "clusterrolebindings") {
        if binding["roleRef"]["kind"] == "ClusterRole" && binds(binding, user, None) {
            let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
            for rule in rules_of(lookup(store, "clusterroles", "", role)) {
                out.push((format!("ClusterRoleBinding {}", name(binding)), rule));
            }
        }
    }
    if let Some(ns) = namespace {
        for ((binding_ns, _), binding) in stored(store, "rolebindings") {
            if binding_ns != ns || !binds(binding, user, Some(ns)) {
                continue;
            }
            let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let rules = match binding["roleRef"]["kind"].as_str() {
                Some("Role") => rules_of(lookup(store, "roles", ns, role)),
                Some("ClusterRole") => rules_of(lookup(store, "clusterroles", "", role)),
                _ => Vec::new(),
            };
            for rule in rules {
                out.push((format!("RoleBinding {ns}/{}", name(binding)), rule));
            }
        }
    }
    out
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The stored objects of an RBAC kind, by (namespace, name), read in place.
fn stored<'a>(store: &'a Store, plural: &str) -> impl Iterator<Item = (&'a (String, String), &'a Value)> {
    store
        .objects
        .get(&("rbac.authorization.k8s.io".to_owned(), plural.to_owned()))
        .into_iter()
        .flat_map(|objects| objects.iter().map(|(key, o)| (key, o.object())))
}

/// One stored RBAC object (`namespace` empty for cluster-scoped kinds).
fn lookup<'a>(store: &'a Store, plural: &str, namespace: &str, name: &str) -> Option<&'a Value> {
    store
        .objects
        .get(&("rbac.authorization.k8s.io".to_owned(), plural.to_owned()))?
        .get(&(namespace.to_owned(), name.to_owned()))
        .map(|o| o.object())
}

/// Whether one of the binding's subjects is `user`. A ServiceAccount subject without a namespace means the
/// RoleBinding's own.
fn binds(binding: &Value, user: &UserInfo, binding_namespace: Option<&str>) -> bool {
    binding["subjects"].as_array().into_iter().flatten().any(|s| {
        let subject = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("User") => subject == user.name,
            Some("Group") => user.groups.iter().any(|g| g == subject),
            Some("ServiceAccount") => {
                let ns = s["namespace"].as_str().or(binding_namespace).unwrap_or_default();
                user.name == format!("system:serviceaccount:{ns}:{subject}")
            }
            _ => false,
        }
    })
}

/// Whether an RBAC rule covers the attributes: verb, API group, `resource` or `resource/subresource` (or `*`,
/// `*/subresource`), and resource names (a rule with names never covers a request without one: list, create).
pub fn rule_matches(rule: &Value, attrs: &Attributes) -> bool {
    let has = |field: &str, wanted: &str| {
        rule[field]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i == "*" || i == wanted))
    };
    if !has("verbs", &attrs.verb) || !has("apiGroups", &attrs.group) {
        return false;
    }
    let full = attrs.full_resource();
    let resource_ok = rule["resources"].as_array().is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|r| {
            r == "*" || r == full || (!attrs.subresource.is_empty() && r == format!("*/{}", attrs.subresource))
        })
    });
    if !resource_ok {
        return false;
    }
    match rule["resourceNames"].as_array().filter(|n| !n.is_empty()) {
        None => true,
        Some(names) => attrs
            .name
            .as_ref()
            .is_some_and(|n| names.iter().any(|x| x == n.as_str())),
    }
}

/// RBAC's escalation check: writing a Role or ClusterRole (`bypass` = `escalate` on it), or a binding to one
/// (`bypass` = `bind` on the role), is allowed only when every permission in `role["rules"]` is one the writer holds
/// in that scope. Returns the first permission the writer lacks.
pub fn escalation(
    store: &Store,
    user: &UserInfo,
    role: &Value,
    namespace: Option<&str>,
    bypass: &Attributes,
) -> Option<String> {
    if user.is_master() || allowed(store, user, bypass).is_ok() {
        return None;
    }
    for wanted in expand(role, namespace) {
        if allowed(store, user, &wanted).is_err() {
            return Some(format!(
                "{} on {} in API group \"{}\"",
                wanted.verb,
                wanted.full_resource(),
                wanted.group
            ));
        }
    }
    None
}

/// Every permission a role's rules grant, one per verb, group, resource and name.
pub fn expand(role: &Value, namespace: Option<&str>) -> Vec<Attributes> {
    let strings = |rule: &Value, field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names = strings(rule, "resourceNames");
        let each_name: Vec<Option<String>> = if names.is_empty() {
            vec![None]
        } else {
            names.iter().cloned().map(Some).collect()
        };
        for verb in strings(rule, "verbs") {
            for group in strings(rule, "apiGroups") {
                for resource in strings(rule, "resources") {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_owned(), s.to_owned()),
                        None => (resource.clone(), String::new()),
                    };
                    for name in &each_name {
                        out.push(Attributes {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            subresource: subresource.clone(),
                            namespace: namespace.map(str::to_owned),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: Option<&str>, name: Option<&str>) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_matches(&rule, &attrs("get", "", "pods", "", Some("a"), Some("p"))));
        assert!(rule_matches(
            &rule,
            &attrs("get", "", "pods", "log", Some("a"), Some("p"))
        ));
        assert!(!rule_matches(
            &rule,
            &attrs("get", "", "pods", "status", Some("a"), Some("p"))
        ));
        assert!(!rule_matches(
            &rule,
            &attrs("delete", "", "pods", "", Some("a"), Some("p"))
        ));
        assert!(!rule_matches(
            &rule,
            &attrs("get", "apps", "pods", "", Some("a"), Some("p"))
        ));
        let star = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_matches(
            &star,
            &attrs("patch", "apps", "deployments", "status", None, Some("d"))
        ));
        assert!(!rule_matches(
            &star,
            &attrs("patch", "apps", "deployments", "", None, Some("d"))
        ));
        let named =
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"], "resourceNames": ["s"]});
        assert!(rule_matches(
            &named,
            &attrs("get", "", "secrets", "", Some("a"), Some("s"))
        ));
        assert!(!rule_matches(
            &named,
            &attrs("get", "", "secrets", "", Some("a"), Some("t"))
        ));
        assert!(!rule_matches(
            &named,
            &attrs("list", "", "secrets", "", Some("a"), None)
        ));
    }

    #[test]
    fn the_verbs_of_http_requests() {
        assert_eq!(Attributes::verb_for(&Method::GET, false, true, ""), "watch");
        assert_eq!(Attributes::verb_for(&Method::GET, false, false, ""), "list");
        assert_eq!(Attributes::verb_for(&Method::GET, true, false, ""), "get");
        assert_eq!(Attributes::verb_for(&Method::GET, true, false, "portforward"), "create");
        assert_eq!(
            Attributes::verb_for(&Method::DELETE, false, false, ""),
            "deletecollection"
        );
        assert_eq!(Attributes::verb_for(&Method::PATCH, true, false, "status"), "patch");
    }

    #[test]
    fn forbidden_messages_read_as_a_real_servers() {
        let user = UserInfo::service_account("appdb-system", "appdb-operator");
        let e = attrs("list", "", "secrets", "", Some("acme"), None).forbidden(&user);
        assert_eq!(
            e.message,
            "secrets is forbidden: User \"system:serviceaccount:appdb-system:appdb-operator\" cannot list resource \"secrets\" in API group \"\" in the namespace \"acme\""
        );
        let e = attrs("create", "", "pods", "portforward", Some("acme"), Some("db-0")).forbidden(&user);
        assert!(e.message.starts_with("pods \"db-0\" is forbidden:"), "{}", e.message);
        assert!(
            e.message.contains("cannot create resource \"pods/portforward\""),
            "{}",
            e.message
        );
        let e = attrs("get", "appdb.dev", "privatenetworks", "", None, None).forbidden(&user);
        assert!(
            e.message.starts_with("privatenetworks.appdb.dev is forbidden"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("at the cluster scope"), "{}", e.message);
    }
}
