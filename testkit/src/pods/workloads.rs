//! What the StatefulSet, Deployment and Job controllers decide, as pure functions of the workload and the pods it
//! owns: the next pod to create or delete, and the workload's status computed from the pods as they really are.
//! [`super::kubelet::PodKubelet`] carries the decisions out against the test API server.
//!
//! Simplifications, each said where it matters: a Deployment owns its pods directly (no ReplicaSet objects), and
//! rolls one pod at a time (`maxSurge` 1, `maxUnavailable` 0 for RollingUpdate).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// The hash a controller labels its pods with, of the pod template (FNV-1a of its JSON, 10 hex digits).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// Whether the pod's status says Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `owner` controls `pod`.
pub fn owned_by(pod: &Pod, owner_uid: &str) -> bool {
    pod.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

fn pod_from_template(
    template: &PodTemplateSpec,
    name: String,
    namespace: String,
    extra_labels: BTreeMap<String, String>,
    owner: OwnerReference,
) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(name);
    metadata.namespace = Some(namespace);
    metadata.labels.get_or_insert_with(BTreeMap::new).extend(extra_labels);
    metadata.owner_references = Some(vec![owner]);
    Pod {
        metadata,
        spec: template.spec.clone(),
        status: None,
    }
}

/// One step a controller takes now.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Create(Box<Pod>),
    Delete(String),
    Nothing,
}

/// A controller's decision: at most one pod step, and the status to report.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub step: Step,
    pub status: Value,
}

/// StatefulSet, `OrderedReady`: pod `i` is created only when pods `0..i` run and are Ready; pods beyond
/// `replicas` go highest first; a changed template rolls the highest outdated pod first, once all are Ready. Each
/// pod gets its claims (`<template>-<pod>`) and its stable hostname.
pub fn statefulset(sts: &StatefulSet, pods: &[Pod]) -> Decision {
    let name = sts.name_any();
    let namespace = sts.namespace().unwrap_or_default();
    let spec = &sts.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let revision = format!("{name}-{}", template_hash(&spec.template));
    let by_ordinal: BTreeMap<usize, &Pod> = pods
        .iter()
        .filter_map(|p| {
            let ordinal = p.name_any().strip_prefix(&format!("{name}-"))?.parse().ok()?;
            Some((ordinal, p))
        })
        .collect();
    let pod_revision = |p: &Pod| -> Option<String> { p.labels().get("controller-revision-hash").cloned() };
    let ready = by_ordinal.values().filter(|p| is_ready(p)).count();
    let updated = by_ordinal
        .values()
        .filter(|p| pod_revision(p).as_deref() == Some(revision.as_str()))
        .count();
    let status = json!({"status": {
        "observedGeneration": sts.metadata.generation,
        "replicas": by_ordinal.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": updated,
        "updatedReplicas": updated,
        "currentRevision": revision,
        "updateRevision": revision,
    }});
    let terminating = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    // Scale down first, highest ordinal first.
    if let Some((_, p)) = by_ordinal.iter().rev().find(|(i, _)| **i >= replicas) {
        let step = if terminating(p) {
            Step::Nothing
        } else {
            Step::Delete(p.name_any())
        };
        return Decision { step, status };
    }
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            None => {
                let pod_name = format!("{name}-{i}");
                let mut pod = pod_from_template(
                    &spec.template,
                    pod_name.clone(),
                    namespace,
                    BTreeMap::from([
                        ("controller-revision-hash".to_owned(), revision.clone()),
                        ("statefulset.kubernetes.io/pod-name".to_owned(), pod_name.clone()),
                        ("apps.kubernetes.io/pod-index".to_owned(), i.to_string()),
                    ]),
                    controller_ref(sts),
                );
                if let Some(pod_spec) = pod.spec.as_mut() {
                    pod_spec.hostname = Some(pod_name.clone());
                    pod_spec.subdomain = spec.service_name.clone();
                    for claim in spec.volume_claim_templates.iter().flatten() {
                        let claim_name = claim.metadata.name.clone().unwrap_or_default();
                        pod_spec.volumes.get_or_insert_with(Vec::new).push(Volume {
                            name: claim_name.clone(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: format!("{claim_name}-{pod_name}"),
                                read_only: None,
                            }),
                            ..Default::default()
                        });
                    }
                }
                return Decision {
                    step: Step::Create(Box::new(pod)),
                    status,
                };
            }
            Some(p) if !is_ready(p) || terminating(p) => {
                return Decision {
                    step: Step::Nothing,
                    status,
                };
            }
            Some(_) => {}
        }
    }
    // All there and Ready: roll the highest outdated pod.
    let step = match by_ordinal
        .iter()
        .rev()
        .find(|(_, p)| pod_revision(p).as_deref() != Some(revision.as_str()))
    {
        Some((_, p)) => Step::Delete(p.name_any()),
        None => Step::Nothing,
    };
    Decision { step, status }
}

/// A Deployment's pods: `Recreate` deletes every outdated pod and creates new ones only when none of them is
/// left (`old_pods_stopping` says whether the kubelet is still stopping one); `RollingUpdate` adds one new pod,
/// then deletes one outdated pod once the new ones are Ready. `suffix` makes the random part of a new pod's name.
pub fn deployment(deployment: &Deployment, pods: &[Pod], old_pods_stopping: bool, suffix: &str) -> Decision {
    let spec = deployment.spec.clone();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let hash = template_hash(&spec.template);
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let (current, outdated): (Vec<&Pod>, Vec<&Pod>) = live
        .iter()
        .partition(|p| p.labels().get("pod-template-hash") == Some(&hash));
    let ready_current = current.iter().filter(|p| is_ready(p)).count();
    let ready_all = live.iter().filter(|p| is_ready(p)).count();
    let available = ready_all >= replicas;
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": live.len(),
        "updatedReplicas": current.len(),
        "readyReplicas": ready_all,
        "availableReplicas": ready_all,
        "unavailableReplicas": replicas.saturating_sub(ready_all),
        "conditions": [
            {"type": "Available", "status": if available { "True" } else { "False" },
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
            {"type": "Progressing", "status": "True",
             "reason": if outdated.is_empty() && ready_current >= replicas { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }},
        ],
    }});
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let new_pod = || {
        let name = format!("{}-{hash}-{suffix}", deployment.name_any());
        Step::Create(Box::new(pod_from_template(
            &spec.template,
            name,
            deployment.namespace().unwrap_or_default(),
            BTreeMap::from([("pod-template-hash".to_owned(), hash.clone())]),
            controller_ref(deployment),
        )))
    };
    let step = if recreate {
        if let Some(old) = outdated.first() {
            Step::Delete(old.name_any())
        } else if old_pods_stopping {
            Step::Nothing
        } else if current.len() < replicas {
            new_pod()
        } else if current.len() > replicas {
            Step::Delete(current[current.len() - 1].name_any())
        } else {
            Step::Nothing
        }
    } else if current.len() < replicas && current.len() == ready_current {
        new_pod()
    } else if !outdated.is_empty() && ready_current >= replicas.min(current.len()) && ready_current > 0 {
        Step::Delete(outdated[0].name_any())
    } else if outdated.is_empty() && current.len() > replicas {
        Step::Delete(current[current.len() - 1].name_any())
    } else {
        Step::Nothing
    };
    Decision { step, status }
}

/// A Job: one pod at a time (`parallelism` 1, `completions` 1); a failed pod is replaced until `backoffLimit`
/// (default 6) pods have failed; the conditions `Complete` or `Failed` end it.
pub fn job(job: &Job, pods: &[Pod], suffix: &str, now: &str) -> Decision {
    let spec = job.spec.as_ref().cloned().unwrap_or_default();
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0) as usize;
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count();
    let active = pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none())
        .count();
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        });
    let condition = if succeeded >= 1 {
        Some(("Complete", "Completed", "the Job's pod succeeded".to_owned()))
    } else if failed > backoff_limit {
        Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_owned(),
        ))
    } else {
        None
    };
    let mut status = json!({"status": {
        "active": active,
        "succeeded": succeeded,
        "failed": failed,
        "startTime": job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| json!(t)).unwrap_or(json!(now)),
    }});
    if let Some((kind, reason, message)) = &condition {
        let mut conditions = vec![
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": now, "lastProbeTime": now}),
        ];
        // Kubernetes 1.31+ first sets the criterion, then the terminal condition; clients wait for the latter.
        let criterion = if *kind == "Complete" {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        conditions.insert(
            0,
            json!({"type": criterion, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": now, "lastProbeTime": now}),
        );
        status["status"]["conditions"] = json!(conditions);
        if *kind == "Complete" {
            status["status"]["completionTime"] = json!(now);
        }
    }
    let step = if finished || condition.is_some() || active > 0 {
        Step::Nothing
    } else {
        let name = format!("{}-{suffix}", job.name_any());
        let uid = job.uid().unwrap_or_default();
        Step::Create(Box::new(pod_from_template(
            &spec.template,
            name,
            job.namespace().unwrap_or_default(),
            BTreeMap::from([
                ("job-name".to_owned(), job.name_any()),
                ("batch.kubernetes.io/job-name".to_owned(), job.name_any()),
                ("controller-uid".to_owned(), uid.clone()),
                ("batch.kubernetes.io/controller-uid".to_owned(), uid),
            ]),
            controller_ref(job),
        )))
    };
    // A finished Job keeps the status it has (its conditions carry their first transition time).
    let status = if finished { Value::Null } else { status };
    Decision { step, status }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: Value, ready: bool, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn sts(replicas: i32, image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "acme", "uid": "u-sts", "generation": 2},
            "spec": {"replicas": replicas, "serviceName": "db-headless", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_statefulset_starts_its_pods_in_order_with_their_claims() {
        let set = sts(2, "mysql:8.4");
        let first = statefulset(&set, &[]);
        let Step::Create(p) = &first.step else {
            panic!("{first:?}")
        };
        assert_eq!(p.name_any(), "db-0");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("db-headless"));
        let claim = spec.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.claim_name, "data-db-0");
        assert_eq!(p.owner_references()[0].uid, "u-sts");
        let revision = p.labels()["controller-revision-hash"].clone();
        // db-1 waits until db-0 is Ready.
        let starting = pod("db-0", json!({"controller-revision-hash": revision}), false, "Running");
        assert_eq!(statefulset(&set, std::slice::from_ref(&starting)).step, Step::Nothing);
        let ready = pod("db-0", json!({"controller-revision-hash": revision}), true, "Running");
        let next = statefulset(&set, std::slice::from_ref(&ready));
        assert!(matches!(&next.step, Step::Create(p) if p.name_any() == "db-1"));
        assert_eq!(next.status["status"]["readyReplicas"], 1);
        assert_eq!(next.status["status"]["observedGeneration"], 2);
    }

    #[test]
    fn a_statefulset_rolls_its_highest_outdated_pod_once_all_are_ready() {
        let old = sts(2, "mysql:8.4");
        let Step::Create(p) = statefulset(&old, &[]).step else {
            panic!()
        };
        let old_revision = p.labels()["controller-revision-hash"].clone();
        let pods = [
            pod(
                "db-0",
                json!({"controller-revision-hash": old_revision}),
                true,
                "Running",
            ),
            pod(
                "db-1",
                json!({"controller-revision-hash": old_revision}),
                true,
                "Running",
            ),
        ];
        let new = sts(2, "mysql:9.1");
        assert_eq!(statefulset(&new, &pods).step, Step::Delete("db-1".into()));
        assert_eq!(
            statefulset(&sts(1, "mysql:8.4"), &pods).step,
            Step::Delete("db-1".into())
        );
    }

    fn deployment_of(image: &str, strategy: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "gw", "namespace": "acme", "uid": "u-d", "generation": 3},
            "spec": {"replicas": 1, "strategy": {"type": strategy}, "selector": {"matchLabels": {"app": "gw"}},
                "template": {"metadata": {"labels": {"app": "gw"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn recreate_stops_the_old_pod_before_the_new_one_starts() {
        let v1 = deployment_of("gw:1", "Recreate");
        let Step::Create(p) = deployment(&v1, &[], false, "abcde").step else {
            panic!()
        };
        let hash = p.labels()["pod-template-hash"].clone();
        assert_eq!(p.name_any(), format!("gw-{hash}-abcde"));
        let running = pod(&p.name_any(), json!({"pod-template-hash": hash}), true, "Running");
        let v2 = deployment_of("gw:2", "Recreate");
        assert_eq!(
            deployment(&v2, std::slice::from_ref(&running), false, "fghij").step,
            Step::Delete(p.name_any())
        );
        // Deleted, but its containers are still stopping: nothing new yet.
        assert_eq!(deployment(&v2, &[], true, "fghij").step, Step::Nothing);
        assert!(matches!(deployment(&v2, &[], false, "fghij").step, Step::Create(_)));
        let decision = deployment(&v1, std::slice::from_ref(&running), false, "x");
        assert_eq!(decision.status["status"]["updatedReplicas"], 1);
        assert_eq!(decision.status["status"]["availableReplicas"], 1);
        assert_eq!(decision.status["status"]["observedGeneration"], 3);
    }

    #[test]
    fn a_rolling_update_removes_the_old_pod_only_once_the_new_one_is_ready() {
        let v1 = deployment_of("gw:1", "RollingUpdate");
        let Step::Create(p) = deployment(&v1, &[], false, "a").step else {
            panic!()
        };
        let old = pod(
            &p.name_any(),
            json!({"pod-template-hash": p.labels()["pod-template-hash"]}),
            true,
            "Running",
        );
        let v2 = deployment_of("gw:2", "RollingUpdate");
        let Step::Create(new) = deployment(&v2, std::slice::from_ref(&old), false, "b").step else {
            panic!()
        };
        let hash2 = new.labels()["pod-template-hash"].clone();
        let starting = pod(&new.name_any(), json!({"pod-template-hash": hash2}), false, "Running");
        assert_eq!(
            deployment(&v2, &[old.clone(), starting], false, "c").step,
            Step::Nothing
        );
        let ready = pod(&new.name_any(), json!({"pod-template-hash": hash2}), true, "Running");
        assert_eq!(
            deployment(&v2, &[old.clone(), ready], false, "c").step,
            Step::Delete(old.name_any())
        );
    }

    #[test]
    fn a_job_retries_failed_pods_until_its_backoff_limit() {
        let job_of = |limit: i32| -> Job {
            serde_json::from_value(json!({
                "metadata": {"name": "rotate", "namespace": "acme", "uid": "u-j"},
                "spec": {"backoffLimit": limit, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}
            }))
            .unwrap()
        };
        let now = "2026-12-03T00:00:00Z";
        let j = job_of(1);
        let Step::Create(p) = job(&j, &[], "aaaaa", now).step else {
            panic!()
        };
        assert_eq!(p.labels()["job-name"], "rotate");
        let failed = pod("rotate-aaaaa", json!({}), false, "Failed");
        assert!(matches!(
            job(&j, std::slice::from_ref(&failed), "bbbbb", now).step,
            Step::Create(_)
        ));
        let twice = [failed.clone(), pod("rotate-bbbbb", json!({}), false, "Failed")];
        let gave_up = job(&j, &twice, "ccccc", now);
        assert_eq!(gave_up.step, Step::Nothing);
        assert_eq!(gave_up.status["status"]["conditions"][1]["type"], "Failed");
        let done = job(
            &j,
            &[failed, pod("rotate-bbbbb", json!({}), false, "Succeeded")],
            "d",
            now,
        );
        assert_eq!(done.status["status"]["conditions"][1]["type"], "Complete");
        assert_eq!(done.status["status"]["succeeded"], 1);
    }
}
