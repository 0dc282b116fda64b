//! An HTTPS client for servers on loopback: a chosen TLS version, the CA to trust, and a bearer
//! token, so a test sees what a TLS profile lets in and what an authorizing endpoint answers whom.

use std::{net::SocketAddr, sync::Arc};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// A client that trusts `ca` (DER, or PEM certificates) and speaks only `versions` (TLS 1.2 and
/// 1.3 when empty).
pub fn client(ca: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if ca.starts_with(b"-----BEGIN") {
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a CA certificate");
        }
    } else {
        roots
            .add(CertificateDer::from(ca.to_vec()))
            .expect("a CA certificate");
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let builder = if versions.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(versions)
    };
    let mut config = builder
        .expect("ring has these versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// `GET path` (HTTP/1.0) on `address` over TLS with `connector` and `token` as a bearer token;
/// the status code and body. `Err` says why the connection or the handshake failed.
pub async fn get(
    connector: &TlsConnector,
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    get_from(
        connector,
        address,
        ServerName::IpAddress(address.ip().into()),
        path,
        token,
    )
    .await
}

/// [`get`], checking that the server's certificate names `server_name`.
pub async fn get_from(
    connector: &TlsConnector,
    address: SocketAddr,
    server_name: ServerName<'static>,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {address}: {e}"))?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n{authorization}\r\n").as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut response = Vec::new();
    // A server may close without close_notify once it has answered; what was read counts.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
