//! The certificates a cluster with TLS serves and streams with: read what is stored, keep what
//! is still good, and issue what is missing, about to expire, or no longer right ([`plan`]).
//!
//! The cluster's CA lives in `<cluster>-ca` and signs the replication role's client certificate,
//! and, with `mode: Operator`, the server certificate. With `mode: Provided` the server
//! certificate, its key and its CA come from the user's Secret, which must hold all three: Tusk's
//! sessions verify the server, and binding Secrets hand the CA to applications.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, ResourceExt};
use tracing::info;

use super::build::{TlsMaterial, certificate, tls_mode};
use crate::{
    api::postgres_cluster::v1::{IssuerRef, PostgresCluster, TlsMode},
    controller::{Context, Error, runtime::Problem},
    facts::cluster::{Names, REPLICATION_USER, tls},
    pki::{self, KeyedCert, Leaf, PkiError},
};

/// The Kubernetes cluster domain the server certificate's longest names end in.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Why TLS material could not be had.
#[derive(Debug)]
pub enum Refused {
    /// Something only the user can fix.
    Problem(Problem),
    /// Issuing failed.
    Pki(PkiError),
}

/// The UTF-8 text of `key` of `secret`.
pub fn text(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The certificate under `cert` and the key under `key` of `secret`, when it has both.
pub fn keyed(secret: Option<&Secret>, cert: &str, key: &str) -> Option<KeyedCert> {
    Some(KeyedCert {
        cert: text(secret, cert)?,
        key: text(secret, key)?,
    })
}

/// The server certificate, its key and its CA from the Secret `name` that `field` names (the
/// user's, or the one cert-manager writes), checked.
pub fn provided(field: &str, name: &str, secret: Option<&Secret>) -> Result<(KeyedCert, String), Problem> {
    let problem = |message: String| Problem::new("InvalidTLSSecret", message);
    let Some(secret) = secret else {
        return Err(problem(format!(
            "{field}: Secret {name} does not exist; create it with tls.crt, tls.key and ca.crt"
        )));
    };
    let get = |key: &str| {
        text(Some(secret), key).ok_or_else(|| {
            problem(format!(
                "{field}: Secret {name} has no UTF-8 data.{key}; it needs tls.crt, tls.key and ca.crt \
                 (Tusk verifies the server with ca.crt, and gives it to applications)"
            ))
        })
    };
    let (cert, key, ca) = (get(tls::SERVER_CERT)?, get(tls::SERVER_KEY)?, get(tls::CA)?);
    if let Err(e) = pki::inspect(&format!("Secret {name} data.tls.crt"), &cert) {
        return Err(problem(format!("{field}: {e}")));
    }
    {
        use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
        if PrivateKeyDer::from_pem_slice(key.as_bytes()).is_err() {
            return Err(problem(format!(
                "{field}: Secret {name} data.tls.key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)"
            )));
        }
    }
    if !pki::signed_by(&cert, &ca) {
        return Err(problem(format!(
            "{field}: Secret {name}: tls.crt is not signed by the certificate in ca.crt; ca.crt must \
             hold the CA that issued tls.crt"
        )));
    }
    Ok((KeyedCert { cert, key }, ca))
}

/// What is stored now, as [`plan`] reads it.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// The CA from `<cluster>-ca`.
    pub ca: Option<KeyedCert>,
    /// The server certificate from `<cluster>-tls`.
    pub server: Option<KeyedCert>,
    /// The replication certificate from `<cluster>-tls`.
    pub replication: Option<KeyedCert>,
}

/// The material a cluster should have: each stored certificate that is still good, a new one
/// for each that is not (with the reason, for the log). `provided` is the user's server
/// certificate and CA, with `mode: Provided`.
pub fn plan(
    names: &[String],
    (namespace, cluster): (&str, &str),
    stored: Stored,
    provided: Option<(KeyedCert, String)>,
    now: Timestamp,
    validity: k8s_openapi::jiff::SignedDuration,
) -> Result<(TlsMaterial, Vec<String>), PkiError> {
    let mut renewed = Vec::new();
    let ca = match stored.ca {
        Some(ca)
            if pki::inspect("the cluster's CA", &ca.cert).is_ok_and(|i| !pki::renewal_due(&i, now))
                && pki::signed_by(&ca.cert, &ca.cert) =>
        {
            ca
        }
        old => {
            renewed.push(if old.is_some() {
                "a new CA: the stored one is unreadable or expires soon".to_owned()
            } else {
                "a new CA".to_owned()
            });
            pki::new_authority(namespace, cluster, now)?
        }
    };
    let mut keep_or_issue = |what: &str, stored: Option<KeyedCert>, leaf: &Leaf| {
        let (cert, why) = pki::keep_or_issue(what, stored, &ca, leaf, now, validity)?;
        if let Some(why) = why {
            renewed.push(format!("issued the {what}: {why}"));
        }
        Ok::<_, PkiError>(cert)
    };
    let (server, server_ca) = match provided {
        Some((server, server_ca)) => (server, server_ca),
        None => (
            keep_or_issue("server certificate", stored.server, &Leaf::Server(names.to_vec()))?,
            ca.cert.clone(),
        ),
    };
    let replication = keep_or_issue(
        "replication certificate",
        stored.replication,
        &Leaf::Client(REPLICATION_USER.to_owned()),
    )?;
    Ok((
        TlsMaterial {
            ca,
            server,
            server_ca,
            replication,
        },
        renewed,
    ))
}

/// The TLS material `cluster` should have, or `None` with `mode: Disabled`.
pub async fn material(
    ctx: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Result<Option<TlsMaterial>, Refused>, Error> {
    let mode = tls_mode(cluster);
    if mode == TlsMode::Disabled {
        return Ok(Ok(None));
    }
    let name = cluster.name_any();
    let names = Names(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let get = async |secret: String| {
        ctx.known
            .read(&secrets, namespace, &secret)
            .await
            .map_err(Error::kube("reading a TLS Secret"))
    };
    // Tusk's own, made when they are not there: a watch of every Secret can tell they are not.
    let get_own = async |secret: String| {
        ctx.known
            .read_own(&secrets, namespace, &secret)
            .await
            .map_err(Error::kube("reading a TLS Secret"))
    };
    let ca = get_own(names.ca_secret()).await?;
    let own = get_own(names.tls_secret()).await?;
    let server_names = pki::server_names(
        namespace,
        &name,
        cluster.spec.instances.unwrap_or(1),
        CLUSTER_DOMAIN,
    );
    let tls_spec = cluster.spec.tls.as_ref();
    let provided = match (
        mode,
        tls_spec.and_then(|t| t.secret_name.clone()),
        tls_spec.and_then(|t| t.issuer_ref.as_ref()),
    ) {
        (TlsMode::Provided, Some(secret), _) => {
            let found = get(secret.clone()).await?;
            match provided("spec.tls.secretName", &secret, found.as_deref()) {
                Ok(p) => Some(p),
                Err(problem) => return Ok(Err(Refused::Problem(problem))),
            }
        }
        (TlsMode::CertManager, _, Some(issuer)) => {
            match from_cert_manager(ctx, cluster, &server_names, issuer, &secrets).await? {
                Ok(p) => Some(p),
                Err(problem) => return Ok(Err(Refused::Problem(problem))),
            }
        }
        _ => None,
    };
    let stored = Stored {
        ca: keyed(ca.as_deref(), tls::CA, tls::CA_KEY),
        server: keyed(own.as_deref(), tls::SERVER_CERT, tls::SERVER_KEY),
        replication: keyed(own.as_deref(), tls::REPLICATION_CERT, tls::REPLICATION_KEY),
    };
    match plan(
        &server_names,
        (namespace, &name),
        stored,
        provided,
        Timestamp::now(),
        ctx.config.certificate_validity,
    ) {
        Ok((material, renewed)) => {
            for why in renewed {
                info!(cluster = %name, "{why}");
            }
            Ok(Ok(Some(material)))
        }
        Err(e) => Ok(Err(Refused::Pki(e))),
    }
}

/// With `mode: CertManager`: keeps the cluster's `Certificate` as the spec says, and reads what
/// cert-manager stored for it. Until cert-manager has issued it, the cluster waits with its
/// word on why.
async fn from_cert_manager(
    ctx: &Context,
    cluster: &PostgresCluster,
    server_names: &[String],
    issuer: &IssuerRef,
    secrets: &Api<Secret>,
) -> Result<Result<(KeyedCert, String), Problem>, Error> {
    const FIELD: &str = "spec.tls.issuerRef";
    let desired = certificate::desired_certificate(cluster, server_names, issuer);
    match super::apply_alone(cluster, ctx, &desired, "applying the cert-manager Certificate").await {
        Ok(()) => {}
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 404 => {
            return Ok(Err(Problem::new(
                "CertManagerNotInstalled",
                format!(
                    "{FIELD}: tls.mode CertManager needs cert-manager, and this Kubernetes cluster does not serve \
                     its Certificate API (cert-manager.io/v1); install cert-manager, or choose tls.mode Operator \
                     or Provided"
                ),
            )));
        }
        Err(e) => return Err(e),
    }
    let name = cluster.name_any();
    let secret = Names(&name).server_certificate_secret();
    let namespace = cluster.namespace().unwrap_or_default();
    let found = ctx
        .known
        .read(secrets, &namespace, &secret)
        .await
        .map_err(Error::kube("reading the cert-manager Secret"))?;
    let Some(found) = found else {
        let why = Api::<certificate::Certificate>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&Names(&name).server_certificate())
            .await
            .map_err(Error::kube("reading the cert-manager Certificate"))?
            .and_then(|c| certificate::not_ready(&c))
            .unwrap_or_else(|| "no status yet".to_owned());
        return Ok(Err(Problem::new(
            "CertificateNotIssued",
            format!(
                "{FIELD}: cert-manager has not yet stored Certificate {} in Secret {secret}; the cluster starts \
                 once it has. cert-manager says: {why}",
                Names(&name).server_certificate()
            ),
        )));
    };
    Ok(provided(FIELD, &secret, Some(found.as_ref())))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::*;

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    const VALID: SignedDuration = pki::DEFAULT_CERT_VALIDITY;

    #[test]
    fn what_is_good_is_kept_and_only_what_is_due_is_renewed() {
        let names = pki::server_names("shop", "db", 1, CLUSTER_DOMAIN);
        let (first, renewed) = plan(&names, ("shop", "db"), Stored::default(), None, now(), VALID).unwrap();
        assert_eq!(renewed.len(), 3, "{renewed:?}");
        assert_eq!(first.server_ca, first.ca.cert);
        let stored = || Stored {
            ca: Some(first.ca.clone()),
            server: Some(first.server.clone()),
            replication: Some(first.replication.clone()),
        };
        let (again, renewed) = plan(&names, ("shop", "db"), stored(), None, now(), VALID).unwrap();
        assert_eq!(again, first);
        assert!(renewed.is_empty(), "{renewed:?}");
        // 61 of 90 days on: both leaves are renewed by the same CA.
        let later = now() + SignedDuration::from_hours(24 * 61);
        let (renewed_material, renewed) = plan(&names, ("shop", "db"), stored(), None, later, VALID).unwrap();
        assert_eq!(renewed_material.ca, first.ca);
        assert_ne!(renewed_material.server, first.server);
        assert_ne!(renewed_material.replication, first.replication);
        assert_eq!(renewed.len(), 2, "{renewed:?}");
        // A scale-up needs new names: only the server certificate changes.
        let more = pki::server_names("shop", "db", 2, CLUSTER_DOMAIN);
        let (grown, _) = plan(&more, ("shop", "db"), stored(), None, now(), VALID).unwrap();
        assert_ne!(grown.server, first.server);
        assert_eq!(grown.replication, first.replication);
    }

    #[test]
    fn a_provided_secret_must_hold_a_certificate_its_ca_signed() {
        let user_ca = pki::new_authority("shop", "theirs", now()).unwrap();
        let other_ca = pki::new_authority("shop", "other", now()).unwrap();
        let cert = pki::issue(&user_ca, &Leaf::Server(vec!["db.example".into()]), now(), VALID).unwrap();
        let secret = |entries: &[(&str, &str)]| -> Secret {
            serde_json::from_value(serde_json::json!({
                "data": entries.iter().map(|(k, v)| {
                    use base64::Engine;
                    ((*k).to_owned(), base64::engine::general_purpose::STANDARD.encode(v))
                }).collect::<std::collections::BTreeMap<_, _>>()
            }))
            .unwrap()
        };
        let good = secret(&[
            ("tls.crt", &cert.cert),
            ("tls.key", &cert.key),
            ("ca.crt", &user_ca.cert),
        ]);
        let (server, ca) = provided("spec.tls.secretName", "mine", Some(&good)).unwrap();
        assert_eq!((server, ca), (cert.clone(), user_ca.cert.clone()));
        let missing = provided("spec.tls.secretName", "mine", None).unwrap_err();
        assert_eq!(missing.reason, "InvalidTLSSecret");
        assert!(
            missing.message.contains("Secret mine does not exist"),
            "{}",
            missing.message
        );
        let no_ca = provided(
            "spec.tls.secretName",
            "mine",
            Some(&secret(&[("tls.crt", &cert.cert), ("tls.key", &cert.key)])),
        )
        .unwrap_err();
        assert!(
            no_ca.message.contains("has no UTF-8 data.ca.crt"),
            "{}",
            no_ca.message
        );
        let wrong_ca = secret(&[
            ("tls.crt", &cert.cert),
            ("tls.key", &cert.key),
            ("ca.crt", &other_ca.cert),
        ]);
        let wrong = provided("spec.tls.secretName", "mine", Some(&wrong_ca)).unwrap_err();
        assert!(
            wrong.message.contains("not signed by the certificate in ca.crt"),
            "{}",
            wrong.message
        );
        // The user's server certificate is used as it is; the replication one is the cluster CA's.
        let names = pki::server_names("shop", "db", 1, CLUSTER_DOMAIN);
        let (material, _) = plan(
            &names,
            ("shop", "db"),
            Stored::default(),
            Some((cert.clone(), user_ca.cert.clone())),
            now(),
            VALID,
        )
        .unwrap();
        assert_eq!(material.server, cert);
        assert_eq!(material.server_ca, user_ca.cert);
        assert!(pki::signed_by(&material.replication.cert, &material.ca.cert));
    }
}
