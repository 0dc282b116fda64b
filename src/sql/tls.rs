//! TLS for every Tusk client of PostgreSQL (the operator's sessions, and an instance's sessions on
//! the primary): rustls through `tokio-postgres-rustls`, trusting only the cluster's CA and
//! checking the server's name (libpq's `verify-full`).
//!
//! The name checked is the one the server certificate was issued for. Where the address dialled
//! is not that name (a loopback address standing for a Service outside a cluster), the address
//! is dialled and the name checked, as libpq's `hostaddr` with `host` does.

use std::net::IpAddr;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connector that trusts only the certificates in `ca_pem`.
pub fn connector(ca_pem: &[u8]) -> Result<MakeRustlsConnect, String> {
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca.crt holds a certificate rustls refuses: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err("ca.crt holds no certificate".to_owned());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The CA cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The server did not answer, refused the handshake, or refused the login.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects with `config` to `host`:`port`. With `ca`, over TLS that trusts only `ca` and checks
/// that the certificate names `server_name` (libpq's `verify-full`); without, in plaintext. The
/// connection runs on a task of its own.
pub async fn connect(
    mut config: tokio_postgres::Config,
    host: &str,
    port: u16,
    server_name: &str,
    ca: Option<&[u8]>,
) -> Result<tokio_postgres::Client, ConnectError> {
    let closed = |e: tokio_postgres::Error| tracing::debug!(error = %e, "a PostgreSQL connection closed");
    let client = match ca {
        Some(ca) => {
            target(&mut config, host, port, server_name);
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config.connect(connector(ca).map_err(ConnectError::Tls)?).await?;
            tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
            client
        }
        None => {
            config.host(host).port(port);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move { connection.await.unwrap_or_else(closed) });
            client
        }
    };
    Ok(client)
}

/// Sets where `config` connects and which name its server must prove: `host` when it is a name,
/// or `server_name` checked while `host` (an address) is dialled.
fn target(config: &mut tokio_postgres::Config, host: &str, port: u16, server_name: &str) {
    match host.parse::<IpAddr>() {
        Ok(address) => config.host(server_name).hostaddr(address),
        Err(_) => config.host(host),
    };
    config.port(port);
}

/// The libpq connection parameters for the same: `host` (and `hostaddr` when `host` is an
/// address), to which a caller adds `sslmode=verify-full` and the files.
pub fn libpq_target(host: &str, server_name: &str) -> Vec<(&'static str, String)> {
    match host.parse::<IpAddr>() {
        Ok(_) => vec![("host", server_name.to_owned()), ("hostaddr", host.to_owned())],
        Err(_) => vec![("host", host.to_owned())],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_is_dialled_and_the_name_checked() {
        assert_eq!(
            super::libpq_target("127.0.10.250", "db-rw"),
            vec![
                ("host", "db-rw".to_owned()),
                ("hostaddr", "127.0.10.250".to_owned())
            ]
        );
        assert_eq!(
            super::libpq_target("db-rw", "db-rw"),
            vec![("host", "db-rw".to_owned())]
        );
        let mut config = tokio_postgres::Config::new();
        super::target(&mut config, "127.0.0.1", 6000, "db-rw.shop.svc");
        assert_eq!(config.get_hosts().len(), 1);
        assert_eq!(
            config.get_hostaddrs(),
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(config.get_ports(), [6000]);
    }

    #[test]
    fn a_connector_needs_a_certificate() {
        assert_eq!(
            super::connector(b"").err().as_deref(),
            Some("ca.crt holds no certificate")
        );
    }
}
