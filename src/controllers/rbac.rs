//! The identity of pods that report on themselves (VPN gateways, migration Jobs): a ServiceAccount allowed to read
//! and annotate pods of its namespace, nothing else.

use k8s_openapi::{
    api::{
        core::v1::ServiceAccount,
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// ServiceAccount, Role and RoleBinding, all with `metadata` (name, namespace, labels, owner).
pub fn pod_reporter(metadata: ObjectMeta) -> (ServiceAccount, Role, RoleBinding) {
    let name = metadata.name.clone().unwrap_or_default();
    let sa = ServiceAccount {
        metadata: metadata.clone(),
        // The token is mounted explicitly by the pods that need it.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: metadata.namespace.clone(),
            api_group: None,
        }]),
        metadata,
    };
    (sa, role, binding)
}
