//! A container's `securityContext` as a container runtime (containerd, runc) applies it, as pure decisions: the
//! user, the capability sets and `no_new_privs`. [`super::sandbox`] enforces them with `setpriv`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

/// The capabilities containerd and Docker give a container that asks for nothing (`oci.DefaultSpec`).
pub const RUNTIME_DEFAULT: [&str; 14] = [
    "chown",
    "dac_override",
    "fsetid",
    "fowner",
    "mknod",
    "net_raw",
    "setgid",
    "setuid",
    "setfcap",
    "setpcap",
    "net_bind_service",
    "sys_chroot",
    "kill",
    "audit_write",
];

/// What the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub uid: u32,
    pub gid: u32,
    /// The bounding set (lower case, no `cap_` prefix). A root process holds all of them; a non-root process holds
    /// none (containerd gives no ambient or inheritable capabilities), whatever `add` says.
    pub capabilities: BTreeSet<String>,
    pub no_new_privs: bool,
    pub read_only_root: bool,
}

/// Why a container may not start (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("container has runAsNonRoot and image will run as root")]
    RootRefused,
    #[error("privileged containers are not supported by the pod runner")]
    Privileged,
}

fn normalise(cap: &str) -> String {
    let lower = cap.to_ascii_lowercase();
    lower.strip_prefix("cap_").unwrap_or(&lower).to_owned()
}

/// The container's privileges from its own and the pod's security context (the container's fields win).
/// `image_user` is the user the image runs as when nothing says otherwise (0 for every image in the table).
pub fn privileges(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    image_user: u32,
) -> Result<Privileges, SecurityError> {
    if container.and_then(|c| c.privileged) == Some(true) {
        return Err(SecurityError::Privileged);
    }
    let uid = container
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user))
        .map(|u| u as u32)
        .unwrap_or(image_user);
    let gid = container
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group))
        .map(|g| g as u32)
        .unwrap_or(if uid == image_user { 0 } else { uid });
    let non_root = container
        .and_then(|c| c.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err(SecurityError::RootRefused);
    }
    let mut capabilities: BTreeSet<String> = RUNTIME_DEFAULT.iter().map(|c| (*c).to_owned()).collect();
    if let Some(caps) = container.and_then(|c| c.capabilities.as_ref()) {
        for drop in caps.drop.iter().flatten() {
            if drop.eq_ignore_ascii_case("ALL") {
                capabilities.clear();
            } else {
                capabilities.remove(&normalise(drop));
            }
        }
        for add in caps.add.iter().flatten() {
            capabilities.insert(normalise(add));
        }
    }
    Ok(Privileges {
        uid,
        gid,
        capabilities,
        // Kubernetes' default is to allow escalation.
        no_new_privs: container.and_then(|c| c.allow_privilege_escalation) == Some(false),
        read_only_root: container.and_then(|c| c.read_only_root_filesystem) == Some(true),
    })
}

/// `setpriv` arguments that give a process these privileges (before `--` and the program).
pub fn setpriv_args(p: &Privileges) -> Vec<String> {
    let caps: Vec<String> = p.capabilities.iter().map(|c| format!(",+{c}")).collect();
    let set = format!("-all{}", caps.concat());
    let mut args = vec![format!("--bounding-set={set}")];
    if p.uid == 0 {
        args.push(format!("--inh-caps={set}"));
    } else {
        args.extend([
            format!("--reuid={}", p.uid),
            format!("--regid={}", p.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
        ]);
    }
    if p.no_new_privs {
        args.push("--no-new-privs".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sc(v: serde_json::Value) -> SecurityContext {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn drop_all_then_add() {
        let c = sc(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}));
        let p = privileges(None, Some(&c), 0).unwrap();
        assert_eq!(p.capabilities, BTreeSet::from(["net_admin".to_owned()]));
        assert_eq!(p.uid, 0);
        assert_eq!(
            setpriv_args(&p),
            ["--bounding-set=-all,+net_admin", "--inh-caps=-all,+net_admin"]
        );
    }

    #[test]
    fn the_runtime_default_without_a_context() {
        let p = privileges(None, None, 0).unwrap();
        assert!(p.capabilities.contains("net_bind_service") && !p.capabilities.contains("net_admin"));
        assert!(!p.no_new_privs);
    }

    #[test]
    fn non_root_users_and_their_refusals() {
        let pod: PodSecurityContext = serde_json::from_value(json!({"runAsUser": 999, "runAsNonRoot": true})).unwrap();
        let c = sc(json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}));
        let p = privileges(Some(&pod), Some(&c), 0).unwrap();
        assert_eq!((p.uid, p.gid), (999, 999));
        assert_eq!(
            setpriv_args(&p),
            [
                "--bounding-set=-all",
                "--reuid=999",
                "--regid=999",
                "--clear-groups",
                "--inh-caps=-all",
                "--no-new-privs"
            ]
        );
        let root = sc(json!({"runAsNonRoot": true}));
        assert_eq!(privileges(None, Some(&root), 0), Err(SecurityError::RootRefused));
        let privileged = sc(json!({"privileged": true}));
        assert_eq!(privileges(None, Some(&privileged), 0), Err(SecurityError::Privileged));
    }
}
