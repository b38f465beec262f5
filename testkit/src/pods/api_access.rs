//! The API server as pods reach it: `https://10.96.0.1:443` (the `default/kubernetes` Service) with a certificate
//! from the test cluster's own CA, as in-cluster clients expect (`KUBERNETES_SERVICE_HOST`, the service account's
//! `ca.crt` and `token`). The node terminates TLS on its address and relays each connection over TLS to the test
//! API server on this machine's loopback (which has a CA of its own); the Service's address is translated to the
//! node's by the pods' service rules ([`super::services`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::netns_socket;
use crate::apiserver::tls;

/// The `default/kubernetes` Service's address.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Where the node serves it.
pub const NODE_API_PORT: u16 = 6443;

/// What a pod's service account volume holds, and the relay serving it.
pub struct ApiAccess {
    pub ca_pem: String,
    pub token: String,
    relay: tokio::task::JoinHandle<()>,
}

impl Drop for ApiAccess {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl ApiAccess {
    /// Serves TLS on `node:6443` inside `node_netns`, relaying to `upstream` (the test API server, whose
    /// certificate `upstream_ca` signed).
    pub async fn start(
        node_netns: &str,
        node: Ipv4Addr,
        upstream: SocketAddr,
        upstream_ca: &[u8],
    ) -> Result<ApiAccess, String> {
        let certificates = tls::certificates(
            "appdb test cluster CA",
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[IpAddr::V4(KUBERNETES_SERVICE_IP), IpAddr::V4(node)],
        )
        .map_err(|e| format!("certificates: {e}"))?;
        let ca_pem = certificates.ca_pem.clone();
        let acceptor = tls::acceptor(&certificates)?;
        let connector = tls::connector(upstream_ca)?;
        let listener = netns_socket::listen_tcp(node_netns, SocketAddr::new(IpAddr::V4(node), NODE_API_PORT))
            .await
            .map_err(|e| format!("listening for pods' API requests: {e}"))?;
        let relay = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let connector = connector.clone();
                tokio::spawn(async move {
                    let Ok(mut from_pod) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let Ok(mut to_server) = connector.connect(tls::server_name(), plain).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut from_pod, &mut to_server).await;
                });
            }
        });
        Ok(ApiAccess {
            ca_pem,
            // Pods that automount their account's token get one from TokenRequest (the kubelet asks per pod); this
            // one is never accepted by the API server.
            token: "appdb-test-cluster-no-token".into(),
            relay,
        })
    }
}
