//! Where pods that report on themselves write (the VPN gateways' agent, the migration Job): a ConfigMap of their
//! owner's, with a deterministic name, one key per reporting pod (its name). Their Role may get and patch exactly
//! that ConfigMap (`resourceNames`), so an internet-facing gateway pod, if taken over, can falsify its own
//! connection's report and nothing else: it can no longer patch every pod of the namespace, which it could when the
//! reports were annotations on the pods themselves (whose names a Role cannot know in advance).
//!
//! The operator creates the ConfigMap without data (so its apply never owns or removes a report), reads the key of
//! the pod it trusts, and removes the keys of pods that are gone.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

/// A report target as the reporting pod is told it: `NAMESPACE/CONFIGMAP/POD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub configmap: String,
    pub pod: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [namespace, configmap, pod] if [namespace, configmap, pod].iter().all(|p| !p.is_empty()) => Ok(Target {
                namespace: (*namespace).to_owned(),
                configmap: (*configmap).to_owned(),
                pod: (*pod).to_owned(),
            }),
            _ => Err(format!(
                "report target {text:?} must be NAMESPACE/CONFIGMAP/POD, for example acme/seattle-gateway-report/seattle-tunnel1-7c9d-x2k4p"
            )),
        }
    }
}

/// The reporting pod's side: write its report under its own key, read it back.
pub struct Reporter {
    api: Api<ConfigMap>,
    target: Target,
}

impl Reporter {
    pub fn new(client: kube::Client, target: Target) -> Reporter {
        Reporter {
            api: Api::namespaced(client, &target.namespace),
            target,
        }
    }

    /// Replaces this pod's report (a merge patch of one key: other pods' keys are untouched).
    pub async fn write(&self, report: &str) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"data": {self.target.pod.as_str(): report}});
        self.api
            .patch(&self.target.configmap, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    /// This pod's report on record.
    pub async fn read(&self) -> Result<Option<String>, kube::Error> {
        let cm = self.api.get(&self.target.configmap).await?;
        Ok(report_of(Some(&cm), &self.target.pod).map(str::to_owned))
    }
}

/// The ConfigMap the operator creates: metadata only, so that its server-side apply owns no report.
pub fn configmap(metadata: ObjectMeta) -> ConfigMap {
    ConfigMap {
        metadata,
        ..Default::default()
    }
}

/// The report of `pod`, if it has written one.
pub fn report_of<'a>(reports: Option<&'a ConfigMap>, pod: &str) -> Option<&'a str> {
    reports?.data.as_ref()?.get(pod).map(String::as_str)
}

/// Keys of pods that no longer exist: the merge patch that removes them, or `None` when there are none (no write).
pub fn prune_patch(reports: Option<&ConfigMap>, live_pods: &[String]) -> Option<serde_json::Value> {
    let stale: BTreeMap<&str, serde_json::Value> = reports?
        .data
        .as_ref()?
        .keys()
        .filter(|key| !live_pods.contains(key))
        .map(|key| (key.as_str(), serde_json::Value::Null))
        .collect();
    (!stale.is_empty()).then(|| serde_json::json!({"data": stale}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn targets_name_namespace_configmap_and_pod() {
        let t: Target = "acme/seattle-gateway-report/seattle-tunnel1-abc".parse().unwrap();
        assert_eq!(t.namespace, "acme");
        assert_eq!(t.configmap, "seattle-gateway-report");
        assert_eq!(t.pod, "seattle-tunnel1-abc");
        for bad in ["acme/pod", "acme//pod", "a/b/c/d", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_pod_reads_its_own_key_and_gone_pods_are_pruned() {
        let cm = reports(&[("gw-a", "UP"), ("gw-b", "DOWN")]);
        assert_eq!(report_of(Some(&cm), "gw-a"), Some("UP"));
        assert_eq!(report_of(Some(&cm), "gw-c"), None);
        assert_eq!(report_of(None, "gw-a"), None);
        assert_eq!(
            prune_patch(Some(&cm), &["gw-a".into(), "gw-b".into()]),
            None,
            "no write when nothing is stale"
        );
        assert_eq!(
            prune_patch(Some(&cm), &["gw-b".into()]),
            Some(serde_json::json!({"data": {"gw-a": null}}))
        );
        assert_eq!(prune_patch(Some(&ConfigMap::default()), &[]), None);
    }
}
