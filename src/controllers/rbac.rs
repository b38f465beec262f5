//! The identity of pods that report on themselves (VPN gateways, migration Jobs): a ServiceAccount allowed to read
//! and patch exactly one ConfigMap, their owner's report ConfigMap (`crate::report`), nothing else.

use k8s_openapi::{
    api::{
        core::v1::ServiceAccount,
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// ServiceAccount, Role and RoleBinding, all with `metadata` (name, namespace, labels, owner), allowed to get and
/// patch the ConfigMap `reports` and nothing else.
pub fn reporter(metadata: ObjectMeta, reports: &str) -> (ServiceAccount, Role, RoleBinding) {
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
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![reports.to_owned()]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reporter_may_touch_its_report_configmap_and_nothing_else() {
        let (sa, role, binding) = reporter(
            ObjectMeta {
                name: Some("seattle-gateway".into()),
                namespace: Some("acme".into()),
                ..Default::default()
            },
            "seattle-gateway-report",
        );
        assert_eq!(sa.automount_service_account_token, Some(false));
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources.as_deref(), Some(&["configmaps".to_owned()][..]));
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["seattle-gateway-report".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "patch"]);
        assert_eq!(binding.subjects.unwrap()[0].name, "seattle-gateway");
    }
}
