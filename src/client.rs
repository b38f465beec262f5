//! The Kubernetes client every part of the binary uses: the usual configuration (KUBECONFIG, else in-cluster) and a
//! User-Agent naming the program and the part of it, so API server audit logs and request metrics tell the
//! operator's traffic from a migration Job's or a user's `kubectl appdb`.
//!
//! Proxies: kube takes `HTTPS_PROXY` from the environment but ignores `NO_PROXY`. Platforms that inject both into
//! every pod (a cluster-wide egress proxy) list the API server in `NO_PROXY`; kubectl and client-go honour that, and
//! so does this client, with Go's rules.

use kube::{Client, Config};

/// `appdb-operator/<version> (<component>)`.
pub fn user_agent(component: &str) -> String {
    format!("appdb-operator/{} ({component})", env!("CARGO_PKG_VERSION"))
}

/// A client from an already inferred configuration.
pub fn from_config(mut config: Config, component: &str) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some()
        && let Some(host) = config.cluster_url.host()
        && let Some(no_proxy) = ["NO_PROXY", "no_proxy"].iter().find_map(|v| std::env::var(v).ok())
        && no_proxy_excludes(&no_proxy, host, config.cluster_url.port_u16())
    {
        config.proxy_url = None;
    }
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

/// Whether a `NO_PROXY` list (Go's `httpproxy` rules) exempts `host`: `*`; an IP address or a CIDR containing it; a
/// domain that is the host or one of its parents (`example.com` and `.example.com` both cover `a.example.com`); each
/// optionally with a port that must then match.
pub fn no_proxy_excludes(no_proxy: &str, host: &str, port: Option<u16>) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let address: Option<std::net::IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                return address.is_some_and(|a| net.contains(&a));
            }
            if let Ok(ip) = entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            {
                return address == Some(ip);
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((name, p)) if !name.contains(':') => match p.parse::<u16>() {
                    Ok(p) => (name, Some(p)),
                    Err(_) => (entry, None),
                },
                _ => (entry, None),
            };
            if let Ok(ip) = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            {
                return address == Some(ip) && (entry_port.is_none() || entry_port == port);
            }
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            host == name || host.ends_with(&format!(".{name}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_follows_gos_rules() {
        let list = "localhost, .svc,cluster.local,10.96.0.0/12, 192.168.1.7,api.example.com:6443";
        for (host, port, exempt) in [
            ("10.96.0.1", Some(443), true),
            ("10.112.0.1", Some(443), false),
            ("192.168.1.7", Some(6443), true),
            ("kubernetes.default.svc", None, true),
            ("kubernetes.default.svc.cluster.local", None, true),
            ("localhost", None, true),
            ("api.example.com", Some(6443), true),
            ("api.example.com", Some(443), false),
            ("example.com", Some(6443), false),
            ("notsvc", None, false),
        ] {
            assert_eq!(no_proxy_excludes(list, host, port), exempt, "{host}:{port:?}");
        }
        assert!(no_proxy_excludes("*", "anything", None));
        assert!(!no_proxy_excludes("", "10.96.0.1", None));
    }

    #[test]
    fn user_agent_names_program_version_and_part() {
        let agent = user_agent("controller");
        assert!(agent.starts_with("appdb-operator/"), "{agent}");
        assert!(agent.ends_with(" (controller)"), "{agent}");
        assert!(agent.parse::<http::HeaderValue>().is_ok());
    }
}
