//! The API server as pods reach it: `https://10.96.0.1:443` (the `default/kubernetes` Service) with a certificate
//! from the test cluster's own CA, as in-cluster clients expect (`KUBERNETES_SERVICE_HOST`, the service account's
//! `ca.crt` and `token`). The node terminates TLS on its address and relays each connection to the test API
//! server (plain HTTP on this machine's loopback); the Service's address is translated to the node's by the pods'
//! service rules ([`super::services`]).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

use super::netns_socket;

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

fn certificates(node: Ipv4Addr) -> Result<(String, CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "appdb test cluster CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut server = rcgen::CertificateParams::new(vec![
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])?;
    for ip in [KUBERNETES_SERVICE_IP, node] {
        server.subject_alt_names.push(rcgen::SanType::IpAddress(IpAddr::V4(ip)));
    }
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let cert = server.signed_by(&key, &issuer)?;
    Ok((
        ca_cert.pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

impl ApiAccess {
    /// Serves TLS on `node:6443` inside `node_netns`, relaying to `upstream` (the test API server).
    pub async fn start(node_netns: &str, node: Ipv4Addr, upstream: SocketAddr) -> Result<ApiAccess, String> {
        let (ca_pem, cert, key) = certificates(node).map_err(|e| format!("certificates: {e}"))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| e.to_string())?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = netns_socket::listen_tcp(node_netns, SocketAddr::new(IpAddr::V4(node), NODE_API_PORT))
            .await
            .map_err(|e| format!("listening for pods' API requests: {e}"))?;
        let relay = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(ApiAccess {
            ca_pem,
            // The test API server authenticates nobody; the token only has to be there, as in-cluster clients read it.
            token: "appdb-test-cluster-service-account-token".into(),
            relay,
        })
    }
}
