//! Where the pods the operator creates run: the platform's node selector, tolerations and affinity (Helm
//! `workloads.*`, which default to the operator's own placement), added to every database, VPN gateway and Job pod.
//!
//! A platform that keeps tenants on dedicated, tainted nodes would otherwise see the operator schedule there and its
//! databases stay Pending (or land on the control plane's neighbours).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity, PodTemplateSpec, Toleration};
use serde::Deserialize;

/// The placement from `--workload-placement` (JSON, the pod spec's own field names).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadPlacement {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

/// `--workload-placement` values: a JSON object, refused at start-up with serde's own account of what is wrong.
pub fn parse(text: &str) -> Result<WorkloadPlacement, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(WorkloadPlacement::default());
    }
    serde_json::from_str(text)
        .map_err(|e| format!("not a placement (JSON with nodeSelector, tolerations, affinity, priorityClassName): {e}"))
}

impl WorkloadPlacement {
    /// Adds the placement to a pod template. What the template already says wins where both speak (a gateway's
    /// own anti-affinity to its other tunnel is kept next to the platform's terms; a node selector key the template
    /// sets is not overridden).
    pub fn place(&self, template: &mut PodTemplateSpec) {
        let Some(spec) = template.spec.as_mut() else {
            return;
        };
        if !self.node_selector.is_empty() {
            let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.node_selector {
                selector.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !self.tolerations.is_empty() {
            let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
            for t in &self.tolerations {
                if !tolerations.contains(t) {
                    tolerations.push(t.clone());
                }
            }
        }
        if let Some(platform) = &self.affinity {
            let own = spec.affinity.get_or_insert_with(Affinity::default);
            if own.node_affinity.is_none() {
                own.node_affinity = platform.node_affinity.clone();
            }
            if own.pod_affinity.is_none() {
                own.pod_affinity = platform.pod_affinity.clone();
            }
            if let Some(extra) = &platform.pod_anti_affinity {
                let anti = own.pod_anti_affinity.get_or_insert_with(PodAntiAffinity::default);
                if let Some(terms) = &extra.required_during_scheduling_ignored_during_execution {
                    anti.required_during_scheduling_ignored_during_execution
                        .get_or_insert_with(Vec::new)
                        .extend(terms.iter().cloned());
                }
                if let Some(terms) = &extra.preferred_during_scheduling_ignored_during_execution {
                    anti.preferred_during_scheduling_ignored_during_execution
                        .get_or_insert_with(Vec::new)
                        .extend(terms.iter().cloned());
                }
            }
        }
        if spec.priority_class_name.is_none() {
            spec.priority_class_name = self.priority_class_name.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodAffinityTerm, PodSpec, WeightedPodAffinityTerm};
    use serde_json::json;

    use super::*;

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(serde_json::from_value::<PodSpec>(spec).expect("pod spec")),
        }
    }

    #[test]
    fn empty_placement_changes_nothing() {
        let mut t = template(json!({"containers": [{"name": "c"}]}));
        let before = t.clone();
        parse("").expect("empty").place(&mut t);
        parse("{}").expect("empty object").place(&mut t);
        assert_eq!(t, before);
    }

    #[test]
    fn the_platform_terms_join_what_the_pod_says() {
        let placement = parse(
            &json!({
                "nodeSelector": {"pool": "tenants", "zone": "a"},
                "tolerations": [{"key": "tenants", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}]}},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 10, "podAffinityTerm": {"topologyKey": "zone"}}]}
                },
                "priorityClassName": "tenant-workloads"
            })
            .to_string(),
        )
        .expect("placement");
        let mut gateway = template(json!({
            "containers": [{"name": "charon"}],
            "nodeSelector": {"zone": "b"},
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}}
        }));
        placement.place(&mut gateway);
        placement.place(&mut gateway);
        let spec = gateway.spec.expect("spec");
        assert_eq!(
            spec.node_selector.expect("selector"),
            BTreeMap::from([("pool".into(), "tenants".into()), ("zone".into(), "b".into())]),
            "the pod's own key wins"
        );
        assert_eq!(
            spec.tolerations.expect("tolerations").len(),
            1,
            "placing twice adds nothing"
        );
        let affinity = spec.affinity.expect("affinity");
        assert!(affinity.node_affinity.is_some());
        let preferred: Vec<_> = affinity
            .pod_anti_affinity
            .expect("anti-affinity")
            .preferred_during_scheduling_ignored_during_execution
            .expect("preferred")
            .into_iter()
            .map(
                |WeightedPodAffinityTerm {
                     weight,
                     pod_affinity_term: PodAffinityTerm { topology_key, .. },
                 }| { (weight, topology_key) },
            )
            .collect();
        assert_eq!(
            preferred[0],
            (100, "kubernetes.io/hostname".into()),
            "the gateway's own term stays first"
        );
        assert!(preferred.contains(&(10, "zone".into())));
        assert_eq!(spec.priority_class_name.as_deref(), Some("tenant-workloads"));
    }

    #[test]
    fn a_typo_is_refused_with_its_field() {
        let e = parse(r#"{"nodeSelectors": {"a": "b"}}"#).expect_err("unknown field");
        assert!(e.contains("nodeSelectors"), "{e}");
        let e = parse(r#"{"tolerations": {"key": "x"}}"#).expect_err("not a list");
        assert!(e.contains("tolerations") || e.contains("sequence"), "{e}");
    }
}
