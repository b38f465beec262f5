//! Pieces of the pod specs the operator builds for its own workloads (database servers, migration and rotation
//! Jobs): one hardened container security context and one way to take a value from a Secret.

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, SeccompProfile, SecretKeySelector, SecurityContext,
};

/// An environment variable read from a Secret's key (never a literal: passwords stay out of pod specs).
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// A container that runs as `uid`, without privileges, capabilities or a writable root, under the runtime's
/// default seccomp profile: what the `restricted` Pod Security profile asks.
pub fn hardened_container_security(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}
