//! `<cluster>-server`: the cert-manager `Certificate` of a cluster with `tls.mode: CertManager`,
//! and the few fields of cert-manager's API Tusk writes and reads.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::{IssuerRef, PostgresCluster},
    facts::cluster::{CLUSTER_LABEL, Names},
};

/// cert-manager's `Certificate` (`cert-manager.io/v1`), the fields Tusk sets.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    namespaced,
    schema = "disabled",
    status = "CertificateStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The Secret cert-manager stores `tls.crt`, `tls.key` and `ca.crt` in.
    pub secret_name: String,
    /// Labels cert-manager puts on that Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// The names the certificate is for.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// What the key may be used for.
    #[serde(default)]
    pub usages: Vec<String>,
    /// The key: its algorithm, and a new one at each renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PrivateKey>,
    /// Who issues it.
    pub issuer_ref: CertManagerIssuerRef,
}

/// `spec.secretTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretTemplate {
    /// Labels on the Secret.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `spec.privateKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKey {
    /// `ECDSA`, `RSA` or `Ed25519`.
    pub algorithm: String,
    /// Bits for RSA, the curve's size for ECDSA.
    pub size: u32,
    /// `Always`: a new key at every issuance.
    pub rotation_policy: String,
}

/// `spec.issuerRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertManagerIssuerRef {
    /// The issuer's name.
    pub name: String,
    /// `Issuer`, `ClusterIssuer`, or an external issuer's kind.
    pub kind: String,
    /// The issuer's API group.
    pub group: String,
}

/// `status`, the part Tusk reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `Ready` and `Issuing`.
    #[serde(default)]
    pub conditions: Vec<CertificateCondition>,
    /// When the certificate stored now expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// One condition of a `Certificate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateCondition {
    /// `Ready` or `Issuing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// cert-manager's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// cert-manager's message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The issuer kind when `issuerRef.kind` is not given.
pub const DEFAULT_ISSUER_KIND: &str = "Issuer";
/// The issuer group when `issuerRef.group` is not given.
pub const DEFAULT_ISSUER_GROUP: &str = "cert-manager.io";

/// The `Certificate` for `cluster`'s server, for `names`, from `issuer`: stored by cert-manager
/// in `<cluster>-server-cert`, labelled with the cluster so that the operator sees each renewal.
pub fn desired_certificate(cluster: &PostgresCluster, names: &[String], issuer: &IssuerRef) -> Certificate {
    let name = name_of(cluster);
    let names_of = Names(name);
    Certificate {
        metadata: meta(cluster, names_of.server_certificate()),
        spec: CertificateSpec {
            secret_name: names_of.server_certificate_secret(),
            secret_template: Some(SecretTemplate {
                labels: BTreeMap::from([(CLUSTER_LABEL.to_owned(), name.to_owned())]),
            }),
            dns_names: names.to_vec(),
            usages: ["server auth", "digital signature", "key encipherment"]
                .map(str::to_owned)
                .to_vec(),
            private_key: Some(PrivateKey {
                algorithm: "ECDSA".to_owned(),
                size: 256,
                rotation_policy: "Always".to_owned(),
            }),
            issuer_ref: CertManagerIssuerRef {
                name: issuer.name.clone(),
                kind: issuer
                    .kind
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ISSUER_KIND.to_owned()),
                group: issuer
                    .group
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ISSUER_GROUP.to_owned()),
            },
        },
        status: None,
    }
}

/// cert-manager's word on why `certificate` is not ready, if it said one.
pub fn not_ready(certificate: &Certificate) -> Option<String> {
    let ready = certificate
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status != "True")?;
    Some(format!(
        "{}: {}",
        ready.reason.as_deref().unwrap_or("NotReady"),
        ready.message.as_deref().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{cluster, spec};
    use super::*;

    #[test]
    fn the_certificate_names_the_issuer_the_names_and_a_labelled_secret() {
        let db = cluster(spec(json!({
            "tls": {"mode": "CertManager", "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
        })));
        let issuer = db.spec.tls.as_ref().unwrap().issuer_ref.clone().unwrap();
        let names = vec!["db-rw".to_owned(), "db-rw.shop.svc".to_owned()];
        let certificate = desired_certificate(&db, &names, &issuer);
        let value = serde_json::to_value(&certificate).unwrap();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1");
        assert_eq!(value["kind"], "Certificate");
        assert_eq!(value["metadata"]["name"], "db-server");
        assert_eq!(value["metadata"]["ownerReferences"][0]["kind"], "PostgresCluster");
        assert_eq!(
            value["spec"],
            json!({
                "secretName": "db-server-cert",
                "secretTemplate": {"labels": {"tusk.dev/cluster": "db"}},
                "dnsNames": ["db-rw", "db-rw.shop.svc"],
                "usages": ["server auth", "digital signature", "key encipherment"],
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            })
        );
        let defaulted = desired_certificate(
            &db,
            &names,
            &IssuerRef {
                name: "ns-ca".into(),
                kind: None,
                group: None,
            },
        );
        assert_eq!(defaulted.spec.issuer_ref.kind, "Issuer");
    }

    #[test]
    fn not_ready_quotes_cert_manager() {
        let mut certificate = Certificate::new("db-server", CertificateSpec::default());
        assert_eq!(not_ready(&certificate), None);
        certificate.status = Some(CertificateStatus {
            conditions: vec![CertificateCondition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: Some("DoesNotExist".into()),
                message: Some("Issuing certificate as Secret does not exist".into()),
            }],
            not_after: None,
        });
        assert_eq!(
            not_ready(&certificate).as_deref(),
            Some("DoesNotExist: Issuing certificate as Secret does not exist")
        );
    }
}
