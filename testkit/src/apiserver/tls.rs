//! HTTPS for the test API server, as every real one serves: kubectl sends a kubeconfig's bearer token only over TLS,
//! so without it nobody could be anyone but `system:anonymous`. A CA made per server signs a certificate for
//! `127.0.0.1` / `localhost`; the kubeconfig carries the CA, and [`super::TestApiServer::admin_config`] trusts it.

use std::{net::IpAddr, sync::Arc};

use tokio_rustls::{
    TlsAcceptor, TlsConnector,
    rustls::{
        ClientConfig, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    },
};

/// A CA and a server certificate signed by it.
pub struct Certificates {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

/// A new CA (named `ca_name`) and a server certificate for the given names and addresses.
pub fn certificates(ca_name: &str, dns: &[&str], ips: &[IpAddr]) -> Result<Certificates, rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut server = rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    for ip in ips {
        server.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
    }
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// Accepts TLS with the certificate (HTTP/1.1 only: kubectl's port-forward and watches need nothing more).
pub fn acceptor(certs: &Certificates) -> Result<TlsAcceptor, String> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![certs.cert.clone()], certs.key.clone_key())
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connects with TLS to a server whose certificate the CA (`ca_der`) signed.
pub fn connector(ca_der: &[u8]) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| e.to_string())?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name the test API server's certificate is checked against by in-process TLS clients.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}
