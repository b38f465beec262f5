//! The gateway's forwarding of database traffic: connections from premises to a database's address in the
//! network are relayed to the database's stable Service. Replies return through the same pod and so the same
//! tunnel; nothing is routed from the cluster towards premises, and no kernel NAT or `ip_forward` is needed.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One `listen=target` rule, for example `10.20.30.74:3306=orders.acme.svc.cluster.local:3306`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub listen: SocketAddr,
    pub target: String,
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Rule, String> {
        let (listen, target) = s.split_once('=').ok_or_else(|| format!("{s:?} is not LISTEN=TARGET"))?;
        let listen = listen
            .parse()
            .map_err(|_| format!("{listen:?} is not an address:port"))?;
        if !target.contains(':') {
            return Err(format!("{target:?} is not host:port"));
        }
        Ok(Rule {
            listen,
            target: target.to_owned(),
        })
    }
}

/// Relays every connection accepted on `rule.listen` to `rule.target` until `shutdown`.
pub async fn forward(rule: Rule, shutdown: CancellationToken) -> std::io::Result<()> {
    // The charon container puts the database addresses on the pod's loopback when it starts; the agent starts
    // beside it and may be first, so a missing address is waited for (30 s) instead of failing the container.
    let mut waited = std::time::Duration::ZERO;
    let listener = loop {
        match TcpListener::bind(rule.listen).await {
            Ok(l) => break l,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable && waited < std::time::Duration::from_secs(30) =>
            {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                }
                waited += std::time::Duration::from_millis(250);
            }
            Err(e) => return Err(e),
        }
    };
    loop {
        let (mut inbound, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let target = rule.target.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&target).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                        debug!(%peer, %target, error = %e, "relay ended");
                    }
                }
                Err(e) => warn!(%peer, %target, error = %e, "cannot reach the database Service"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn rules_parse() {
        let r: Rule = "10.20.30.74:3306=orders.acme.svc:3306".parse().unwrap();
        assert_eq!(r.listen.to_string(), "10.20.30.74:3306");
        assert!("nonsense".parse::<Rule>().is_err());
        assert!("1.2.3.4:1=host".parse::<Rule>().is_err());
    }

    #[tokio::test]
    async fn relays_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let stop = CancellationToken::new();
        tokio::spawn(forward(
            Rule {
                listen,
                target: echo_addr.to_string(),
            },
            stop.clone(),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut client = TcpStream::connect(listen).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        stop.cancel();
    }
}
