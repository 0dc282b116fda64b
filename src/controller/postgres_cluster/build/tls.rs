//! TLS: which mode a cluster runs in, and the Secrets `<cluster>-ca` (the cluster's CA, the
//! operator's alone) and `<cluster>-tls` (what every pod mounts, [`crate::facts::cluster::tls`]).
//!
//! A cluster with no `spec.tls` runs with `mode: Operator`: TLS is on unless the user turns it
//! off with `mode: Disabled`.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::{PostgresCluster, TlsMode},
    facts::cluster::{Names, tls},
    pki::KeyedCert,
};

/// The mode `cluster` runs in: `spec.tls.mode`, or `Operator` without `spec.tls`.
pub fn tls_mode(cluster: &PostgresCluster) -> TlsMode {
    cluster.spec.tls.as_ref().map_or(TlsMode::Operator, |t| t.mode)
}

/// What the pods of a cluster with TLS mount, PEM by key of [`tls::KEYS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The cluster's CA.
    pub ca: KeyedCert,
    /// The server certificate and key, and the CA that signed it.
    pub server: KeyedCert,
    /// The CA clients verify the server with (the cluster's CA, or the user's).
    pub server_ca: String,
    /// The replication role's client certificate.
    pub replication: KeyedCert,
}

fn bytes(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// `<cluster>-ca`: the CA certificate and key.
pub fn desired_ca_secret(cluster: &PostgresCluster, material: &TlsMaterial) -> Secret {
    Secret {
        metadata: meta(cluster, Names(name_of(cluster)).ca_secret()),
        type_: Some("Opaque".to_owned()),
        data: Some(bytes(&[
            (tls::CA, &material.ca.cert),
            (tls::CA_KEY, &material.ca.key),
        ])),
        ..Secret::default()
    }
}

/// `<cluster>-tls`: the server certificate in the `kubernetes.io/tls` shape, its CA, the CA of
/// client certificates, and the replication role's certificate.
pub fn desired_tls_secret(cluster: &PostgresCluster, material: &TlsMaterial) -> Secret {
    Secret {
        metadata: meta(cluster, Names(name_of(cluster)).tls_secret()),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(bytes(&[
            (tls::SERVER_CERT, &material.server.cert),
            (tls::SERVER_KEY, &material.server.key),
            (tls::CA, &material.server_ca),
            (tls::CLIENT_CA, &material.ca.cert),
            (tls::REPLICATION_CERT, &material.replication.cert),
            (tls::REPLICATION_KEY, &material.replication.key),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{cluster, spec};
    use super::*;

    #[test]
    fn tls_is_on_unless_disabled() {
        assert_eq!(tls_mode(&cluster(spec(json!({})))), TlsMode::Operator);
        assert_eq!(
            tls_mode(&cluster(spec(json!({"tls": {"mode": "Disabled"}})))),
            TlsMode::Disabled
        );
        assert_eq!(
            tls_mode(&cluster(spec(
                json!({"tls": {"mode": "Provided", "secretName": "mine"}})
            ))),
            TlsMode::Provided
        );
    }
}
