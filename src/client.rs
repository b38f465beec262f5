//! The Kubernetes client every part of the binary uses: the usual configuration (KUBECONFIG, else in-cluster) and a
//! User-Agent naming the program and the part of it, so API server audit logs and request metrics tell the
//! operator's traffic from a migration Job's or a user's `kubectl appdb`.
//!
//! Proxies: kube takes `HTTPS_PROXY` from the environment but ignores `NO_PROXY`. Platforms that inject both into
//! every pod (a cluster-wide egress proxy) list the API server in `NO_PROXY`; kubectl and client-go honour that, and
//! so does this client, with Go's rules.

use std::time::Duration;

use kube::{Client, Config};

/// `appdb-operator/<version> (<component>)`.
pub fn user_agent(component: &str) -> String {
    format!("appdb-operator/{} ({component})", env!("CARGO_PKG_VERSION"))
}

/// A client from an already inferred configuration.
pub fn from_config(config: Config, component: &str) -> Result<Client, kube::Error> {
    Client::try_from(prepare(config, component))
}

/// A client for people: each request waits at most `timeout` for the server's answer (its status line and headers;
/// a watch or port-forward then streams on without limit), and a failure below HTTP names the server and the
/// cause, as kubectl's messages do, instead of hyper's `client error (Connect)`.
pub fn interactive(config: Config, component: &str, timeout: Option<Duration>) -> Result<Client, kube::Error> {
    let mut config = prepare(config, component);
    if timeout.is_some() {
        // The request timeout covers connecting too; kube's own connect timeout would otherwise race it at 30 s
        // and report a bare "deadline has elapsed".
        config.connect_timeout = None;
    }
    let server = config.cluster_url.to_string().trim_end_matches('/').to_owned();
    let explain = move |e: BoxError| -> BoxError {
        let cause = if e.is::<tower::timeout::error::Elapsed>() {
            match timeout {
                Some(t) => format!("no answer within {} (--request-timeout)", humantime(t)),
                None => "no answer".to_owned(),
            }
        } else {
            root_cause(e.as_ref())
        };
        Box::new(Unreachable {
            server: server.clone(),
            cause,
        })
    };
    let builder = kube::client::ClientBuilder::try_from(config)?;
    let client = match timeout {
        Some(t) => builder
            .with_layer(&tower::ServiceBuilder::new().map_err(explain).timeout(t))
            .build(),
        None => builder.with_layer(&tower::util::MapErrLayer::new(explain)).build(),
    };
    Ok(client)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request that got no HTTP answer: which server, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API server at {server}: {cause}")]
pub struct Unreachable {
    pub server: String,
    pub cause: String,
}

/// The innermost cause of an error: what went wrong (`Connection refused (os error 111)`, `invalid peer
/// certificate: UnknownIssuer`), without the wrappers' words (`client error (Connect)`, `tcp connect error`).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// `30s`, `2m`, `1m30s`: how kubectl writes durations.
fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60, d.subsec_millis()) {
        (0, s, 0) => format!("{s}s"),
        (0, 0, ms) => format!("{ms}ms"),
        (0, s, ms) => format!("{s}.{ms:03}s"),
        (m, 0, _) => format!("{m}m"),
        (m, s, _) => format!("{m}m{s}s"),
    }
}

/// kubectl's `--request-timeout`: `0` for none, a number of seconds, or a Go duration (`500ms`, `30s`, `2m`,
/// `1h`, `1m30s`).
pub fn parse_request_timeout(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "invalid --request-timeout {text:?}: write 0 (no timeout), a number of seconds, or a duration such as 30s, 2m or 1m30s"
        )
    };
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok((seconds > 0).then(|| Duration::from_secs(seconds)));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        total += unit
            .checked_mul(u32::try_from(value).map_err(|_| invalid())?)
            .ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok((!total.is_zero()).then_some(total))
}

/// The configuration every client shares: `NO_PROXY` honoured, a User-Agent naming the component.
fn prepare(mut config: Config, component: &str) -> Config {
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
    config
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
    fn request_timeouts_are_read_as_kubectl_reads_them() {
        for (text, expected) in [
            ("0", None),
            ("0s", None),
            ("5", Some(Duration::from_secs(5))),
            ("30s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1h", Some(Duration::from_secs(3600))),
        ] {
            assert_eq!(parse_request_timeout(text), Ok(expected), "{text}");
        }
        for bad in ["", "soon", "5x", "s", "-1", "1.5s", "99999999999999999999h"] {
            let e = parse_request_timeout(bad).unwrap_err();
            assert!(e.contains("invalid --request-timeout"), "{bad}: {e}");
        }
        assert_eq!(humantime(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.500s");
    }

    #[test]
    fn the_root_cause_is_what_went_wrong() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Connect(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Client(#[source] Connect);
        let e = Client(Connect(inner));
        assert_eq!(root_cause(&e), "Connection refused (os error 111)");
    }

    #[test]
    fn user_agent_names_program_version_and_part() {
        let agent = user_agent("controller");
        assert!(agent.starts_with("appdb-operator/"), "{agent}");
        assert!(agent.ends_with(" (controller)"), "{agent}");
        assert!(agent.parse::<http::HeaderValue>().is_ok());
    }
}
