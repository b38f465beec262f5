//! The Kubernetes client every part of the binary uses: the usual configuration (KUBECONFIG, else in-cluster) and a
//! User-Agent naming the program and the part of it, so API server audit logs and request metrics tell the
//! operator's traffic from a migration Job's or a user's `kubectl appdb`.

use kube::{Client, Config};

/// `appdb-operator/<version> (<component>)`.
pub fn user_agent(component: &str) -> String {
    format!("appdb-operator/{} ({component})", env!("CARGO_PKG_VERSION"))
}

/// A client from an already inferred configuration.
pub fn from_config(mut config: Config, component: &str) -> Result<Client, kube::Error> {
    if let Ok(value) = user_agent(component).parse() {
        config.headers.push((http::header::USER_AGENT, value));
    }
    Client::try_from(config)
}

/// A client from KUBECONFIG or the in-cluster configuration.
pub async fn infer(component: &str) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    from_config(config, component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_program_version_and_part() {
        let agent = user_agent("controller");
        assert!(agent.starts_with("appdb-operator/"), "{agent}");
        assert!(agent.ends_with(" (controller)"), "{agent}");
        assert!(agent.parse::<http::HeaderValue>().is_ok());
    }
}
