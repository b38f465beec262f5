//! The Pod Security Standards (`baseline` and `restricted`, version `latest` as of Kubernetes 1.33), as the Pod
//! Security admission controller evaluates a pod spec: pure, so that tests can hold every pod template the operator
//! builds to the level of the namespace it runs in. Messages follow the admission controller's
//! (`allowPrivilegeEscalation != false (container "x" must set securityContext.allowPrivilegeEscalation=false)`).
//! Windows-only and AppArmor/SELinux options the operator never sets are checked only for presence.

use serde_json::Value;

/// A Pod Security level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

/// Capabilities `baseline` allows to be added.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect()
}

fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// What keeps `spec` (a PodSpec as JSON) from `level`; empty when it passes.
pub fn violations(spec: &Value, level: Level) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    // Baseline.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[field] == true {
            out.push(format!("host namespaces ({field}=true)"));
        }
    }
    for c in containers(spec) {
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            out.push(format!(
                "privileged (container \"{}\" must not set securityContext.privileged=true)",
                name(c)
            ));
        }
        let added: Vec<&str> = strings(&sc["capabilities"]["add"])
            .into_iter()
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .collect();
        if !added.is_empty() {
            out.push(format!(
                "non-default capabilities (container \"{}\" must not include {} in securityContext.capabilities.add)",
                name(c),
                added.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                out.push(format!(
                    "hostPort (container \"{}\" uses hostPort {})",
                    name(c),
                    port["hostPort"]
                ));
            }
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            out.push(format!("procMount (container \"{}\" must not set procMount)", name(c)));
        }
        if sc["seccompProfile"]["type"] == "Unconfined" {
            out.push(format!(
                "seccompProfile (container \"{}\" must not set type to \"Unconfined\")",
                name(c)
            ));
        }
    }
    if spec["securityContext"]["seccompProfile"]["type"] == "Unconfined" {
        out.push("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".into());
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if volume.get("hostPath").is_some() {
            out.push(format!("hostPath volumes (volume \"{}\")", name(volume)));
        }
    }
    for sysctl in spec["securityContext"]["sysctls"].as_array().into_iter().flatten() {
        let n = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&n) {
            out.push(format!("forbidden sysctls ({n})"));
        }
    }
    if level == Level::Baseline {
        return out;
    }
    // Restricted.
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let kind = volume
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| *k != "name")
            .cloned()
            .unwrap_or_default();
        if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
            out.push(format!(
                "restricted volume types (volume \"{}\" uses restricted volume type \"{kind}\")",
                name(volume)
            ));
        }
    }
    let pod_sc = &spec["securityContext"];
    for c in containers(spec) {
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            out.push(format!(
                "allowPrivilegeEscalation != false (container \"{}\" must set securityContext.allowPrivilegeEscalation=false)",
                name(c)
            ));
        }
        let drops = strings(&sc["capabilities"]["drop"]);
        if !drops.contains(&"ALL") {
            out.push(format!(
                "unrestricted capabilities (container \"{}\" must set securityContext.capabilities.drop=[\"ALL\"])",
                name(c)
            ));
        }
        let added: Vec<&str> = strings(&sc["capabilities"]["add"])
            .into_iter()
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        if !added.is_empty() {
            out.push(format!(
                "unrestricted capabilities (container \"{}\" must not include {} in securityContext.capabilities.add)",
                name(c),
                added.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        let non_root = sc["runAsNonRoot"].as_bool().or(pod_sc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            out.push(format!(
                "runAsNonRoot != true (pod or container \"{}\" must set securityContext.runAsNonRoot=true)",
                name(c)
            ));
        }
        let user = sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64());
        if user == Some(0) {
            out.push(format!(
                "runAsUser=0 (container \"{}\" must not set runAsUser=0)",
                name(c)
            ));
        }
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!(
                "seccompProfile (pod or container \"{}\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                name(c)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn restricted_container() -> Value {
        json!({"name": "main", "securityContext": {"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}})
    }

    #[test]
    fn a_hardened_pod_passes_restricted_and_each_gap_is_named() {
        let pod = json!({"containers": [restricted_container()], "volumes": [{"name": "d", "emptyDir": {}}]});
        assert!(violations(&pod, Level::Restricted).is_empty());
        let mut loose = pod.clone();
        loose["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true.into();
        loose["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]);
        loose["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]);
        let found = violations(&loose, Level::Restricted);
        for expected in [
            "allowPrivilegeEscalation != false",
            "must not include \"NET_ADMIN\"",
            "hostPath volumes",
        ] {
            assert!(found.iter().any(|f| f.contains(expected)), "{expected}: {found:?}");
        }
    }

    #[test]
    fn net_admin_and_host_networking_are_beyond_baseline_but_net_bind_service_is_not() {
        let mut gateway = json!({"containers": [restricted_container()]});
        gateway["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_BIND_SERVICE"]);
        assert!(violations(&gateway, Level::Restricted).is_empty());
        gateway["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN", "NET_BIND_SERVICE"]);
        gateway["hostNetwork"] = true.into();
        let found = violations(&gateway, Level::Baseline);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(violations(&gateway, Level::Privileged).is_empty());
    }

    #[test]
    fn root_and_missing_seccomp_fail_restricted_only() {
        let pod = json!({"securityContext": {"runAsUser": 0},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
        assert!(violations(&pod, Level::Baseline).is_empty());
        let found = violations(&pod, Level::Restricted);
        assert!(found.iter().any(|f| f.contains("runAsNonRoot")), "{found:?}");
        assert!(found.iter().any(|f| f.contains("runAsUser=0")), "{found:?}");
        assert!(found.iter().any(|f| f.contains("seccompProfile")), "{found:?}");
    }
}
