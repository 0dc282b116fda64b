//! Each cluster's own certificate authority and the certificates it issues: pure functions from
//! PEM and a clock to PEM, so that the controller decides and the tests check without a server.
//!
//! - The **CA** (`<cluster>-ca`, never mounted into a pod) signs everything else. It is valid for
//!   [`CA_VALIDITY`] and renewed like any other certificate; a new CA re-issues what it signed.
//! - The **server certificate** names every way clients reach the cluster: `-rw`, `-ro`, the
//!   headless `-pods` Service and each pod in it, each short and qualified
//!   ([`server_names`]).
//! - **Client certificates** carry a role name as their common name; PostgreSQL's `cert`
//!   authentication logs the client in as that role. The replication role uses one.
//!
//! A certificate is renewed once less than a third of its lifetime is left ([`renewal_due`]),
//! when it lacks a name it must carry, or when the CA no longer signs it.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::facts::cluster::Names;

/// How long a new CA is valid.
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365 * 5);
/// How long a new server or client certificate is valid unless the operator is told otherwise.
pub const DEFAULT_CERT_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 90);
/// Certificates start this long before they are issued, so that a clock a little behind still
/// accepts them.
const BACKDATE: SignedDuration = SignedDuration::from_mins(5);

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to build or sign.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// A validity period is out of X.509's range.
    #[error("a certificate cannot be valid until {0}")]
    Time(String),
    /// A stored PEM does not parse.
    #[error("{what} is not a PEM X.509 certificate: {reason}")]
    Parse {
        /// Which certificate.
        what: String,
        /// What the parser said.
        reason: String,
    },
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedCert {
    /// The certificate.
    pub cert: String,
    /// Its PKCS#8 private key.
    pub key: String,
}

/// What a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// A server certificate with these DNS names.
    Server(Vec<String>),
    /// A client certificate that logs in as this role.
    Client(String),
}

fn validity(
    params: &mut CertificateParams,
    now: Timestamp,
    valid_for: SignedDuration,
) -> Result<(), PkiError> {
    let out_of_range = || PkiError::Time(format!("{now} plus {valid_for:#}"));
    let at = |t: Timestamp| {
        x509_parser::time::ASN1Time::from_timestamp(t.as_second())
            .map(|a| a.to_datetime())
            .map_err(|_| out_of_range())
    };
    let start = now.checked_sub(BACKDATE).map_err(|_| out_of_range())?;
    let end = now.checked_add(valid_for).map_err(|_| out_of_range())?;
    params.not_before = at(start)?;
    params.not_after = at(end)?;
    Ok(())
}

/// A new self-signed CA for cluster `cluster` of `namespace`, valid for [`CA_VALIDITY`] from `now`.
pub fn new_authority(namespace: &str, cluster: &str, now: Timestamp) -> Result<KeyedCert, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster}.{namespace} CA"));
    params.distinguished_name.push(DnType::OrganizationName, "Tusk");
    validity(&mut params, now, CA_VALIDITY)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new certificate for `leaf`, signed by `authority`, valid for `valid_for` from `now`.
pub fn issue(
    authority: &KeyedCert,
    leaf: &Leaf,
    now: Timestamp,
    valid_for: SignedDuration,
) -> Result<KeyedCert, PkiError> {
    let ca_key = KeyPair::from_pem(&authority.key)?;
    let issuer = Issuer::from_ca_cert_pem(&authority.cert, ca_key)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    match leaf {
        Leaf::Server(names) => {
            params.subject_alt_names = names
                .iter()
                .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
                .collect::<Result<_, rcgen::Error>>()?;
            if let Some(first) = names.first() {
                params.distinguished_name.push(DnType::CommonName, first.clone());
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Leaf::Client(role) => {
            params.distinguished_name.push(DnType::CommonName, role.clone());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    validity(&mut params, now, valid_for)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyedCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Every name a cluster's server certificate carries: the `-rw` and `-ro` Services and the
/// headless `-pods` Service, each as `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
/// `<svc>.<ns>.svc.<domain>`, and every pod (`<pod>.<cluster>-pods…`) the same way, for
/// `instances` pods.
pub fn server_names(namespace: &str, cluster: &str, instances: i32, domain: &str) -> Vec<String> {
    let names = Names(cluster);
    let qualified = |host: String| {
        vec![
            host.clone(),
            format!("{host}.{namespace}"),
            format!("{host}.{namespace}.svc"),
            format!("{host}.{namespace}.svc.{domain}"),
        ]
    };
    let mut all = Vec::new();
    for service in [names.rw_service(), names.ro_service(), names.pods_service()] {
        all.extend(qualified(service));
    }
    for ordinal in 0..instances.max(1) {
        all.extend(qualified(format!(
            "{}.{}",
            names.pod(ordinal),
            names.pods_service()
        )));
    }
    all
}

/// What Tusk reads back from a stored certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// Its DNS names.
    pub dns_names: Vec<String>,
    /// Its subject's common name.
    pub common_name: Option<String>,
}

fn parse_pem(what: &str, pem: &str) -> Result<Vec<u8>, PkiError> {
    let error = |reason: String| PkiError::Parse {
        what: what.to_owned(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| error(e.to_string()))?;
    Ok(pem.contents)
}

/// The validity, names and common name of the first certificate in `pem`.
pub fn inspect(what: &str, pem: &str) -> Result<Inspected, PkiError> {
    let der = parse_pem(what, pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let time =
        |t: x509_parser::time::ASN1Time| Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::MIN);
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(Inspected {
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        dns_names,
        common_name,
    })
}

/// True when `cert` (PEM) carries a signature of `authority` (PEM) that verifies.
pub fn signed_by(cert: &str, authority: &str) -> bool {
    use sha2::{Digest, Sha256};
    // The same certificate is checked against the same CA on every reconcile of its cluster, and
    // a signature check is public-key arithmetic: one that held is remembered by a digest of
    // both texts (at most VERIFIED_MAX of them, 16 bytes each; forgotten all at once when full).
    const VERIFIED_MAX: usize = 16_384;
    static VERIFIED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<[u8; 16]>>> =
        std::sync::LazyLock::new(Default::default);
    let digest: [u8; 32] = Sha256::new()
        .chain_update((cert.len() as u64).to_le_bytes())
        .chain_update(cert)
        .chain_update(authority)
        .finalize()
        .into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let verified = || VERIFIED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if verified().contains(&id) {
        return true;
    }
    let signed = verify_signed_by(cert, authority);
    if signed {
        let mut verified = verified();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(id);
    }
    signed
}

fn verify_signed_by(cert: &str, authority: &str) -> bool {
    let (Ok(cert), Ok(ca)) = (parse_pem("certificate", cert), parse_pem("CA", authority)) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&cert),
        x509_parser::parse_x509_certificate(&ca),
    ) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// True once less than a third of the certificate's lifetime is left at `now`, or it is not
/// valid yet.
pub fn renewal_due(cert: &Inspected, now: Timestamp) -> bool {
    let lifetime = cert.not_after.duration_since(cert.not_before);
    let left = cert.not_after.duration_since(now);
    now < cert.not_before || left < lifetime / 3
}

/// Why a stored certificate must be replaced, or `None` when it may stay: it does not parse, the
/// CA does not sign it, it lacks one of `names` (a server's), it is for another role (a client's),
/// or its renewal is due.
pub fn replace_because(
    what: &str,
    cert: &KeyedCert,
    authority: &KeyedCert,
    leaf: &Leaf,
    now: Timestamp,
) -> Option<String> {
    let inspected = match inspect(what, &cert.cert) {
        Ok(i) => i,
        Err(e) => return Some(e.to_string()),
    };
    if KeyPair::from_pem(&cert.key).is_err() {
        return Some(format!("{what}: the private key does not parse"));
    }
    if !signed_by(&cert.cert, &authority.cert) {
        return Some(format!("{what} is not signed by the cluster's CA"));
    }
    match leaf {
        Leaf::Server(names) => {
            if let Some(missing) = names.iter().find(|n| !inspected.dns_names.contains(n)) {
                return Some(format!("{what} does not name {missing}"));
            }
        }
        Leaf::Client(role) => {
            if inspected.common_name.as_deref() != Some(role.as_str()) {
                return Some(format!("{what} is not for role {role}"));
            }
        }
    }
    renewal_due(&inspected, now).then(|| {
        format!(
            "{what} expires at {}, with less than a third of its lifetime left",
            inspected.not_after
        )
    })
}

/// `stored` while it may stay ([`replace_because`]), else a new certificate for `leaf` from
/// `authority`, valid for `valid_for`, with the reason it was issued.
pub fn keep_or_issue(
    what: &str,
    stored: Option<KeyedCert>,
    authority: &KeyedCert,
    leaf: &Leaf,
    now: Timestamp,
    valid_for: SignedDuration,
) -> Result<(KeyedCert, Option<String>), PkiError> {
    let why = match &stored {
        Some(cert) => replace_because(what, cert, authority, leaf, now),
        None => Some(format!("no {what} yet")),
    };
    match (why, stored) {
        (None, Some(cert)) => Ok((cert, None)),
        (why, _) => Ok((issue(authority, leaf, now, valid_for)?, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_server_certificate_names_every_service_and_pod() {
        let names = server_names("shop", "db", 2, "cluster.local");
        for expected in [
            "db-rw",
            "db-rw.shop.svc",
            "db-ro.shop.svc.cluster.local",
            "db-pods.shop",
            "db-0.db-pods.shop.svc",
            "db-1.db-pods.shop.svc.cluster.local",
        ] {
            assert!(
                names.contains(&expected.to_owned()),
                "{expected} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.starts_with("db-2.")));
        assert_eq!(names.len(), 4 * 5);
    }

    #[test]
    fn issued_certificates_read_back_and_verify_against_their_ca_only() {
        let ca = new_authority("shop", "db", now()).unwrap();
        let other = new_authority("shop", "other", now()).unwrap();
        let names = server_names("shop", "db", 1, "cluster.local");
        let server = issue(&ca, &Leaf::Server(names.clone()), now(), DEFAULT_CERT_VALIDITY).unwrap();
        let seen = inspect("server", &server.cert).unwrap();
        assert_eq!(seen.dns_names, names);
        assert_eq!(seen.not_after, now() + DEFAULT_CERT_VALIDITY);
        assert_eq!(seen.not_before, now() - BACKDATE);
        assert!(signed_by(&server.cert, &ca.cert));
        assert!(!signed_by(&server.cert, &other.cert));
        let client = issue(
            &ca,
            &Leaf::Client("tusk_replication".into()),
            now(),
            DEFAULT_CERT_VALIDITY,
        )
        .unwrap();
        assert_eq!(
            inspect("client", &client.cert).unwrap().common_name.as_deref(),
            Some("tusk_replication")
        );
        let ca_seen = inspect("ca", &ca.cert).unwrap();
        assert_eq!(ca_seen.not_after, now() + CA_VALIDITY);
    }

    #[test]
    fn a_certificate_is_replaced_for_each_reason_and_only_then() {
        let ca = new_authority("shop", "db", now()).unwrap();
        let names = server_names("shop", "db", 1, "cluster.local");
        let leaf = Leaf::Server(names.clone());
        let server = issue(&ca, &leaf, now(), DEFAULT_CERT_VALIDITY).unwrap();
        assert_eq!(replace_because("server", &server, &ca, &leaf, now()), None);
        // Two thirds of 90 days later it is still fine; a moment after, it is renewed.
        let at = now() + SignedDuration::from_hours(24 * 59);
        assert_eq!(replace_because("server", &server, &ca, &leaf, at), None);
        let late = now() + SignedDuration::from_hours(24 * 61);
        let why = replace_because("server", &server, &ca, &leaf, late).unwrap();
        assert!(why.contains("less than a third"), "{why}");
        // A third instance needs names the certificate lacks.
        let grown = Leaf::Server(server_names("shop", "db", 3, "cluster.local"));
        let why = replace_because("server", &server, &ca, &grown, now()).unwrap();
        assert_eq!(why, "server does not name db-1.db-pods");
        // A new CA does not sign it.
        let new_ca = new_authority("shop", "db", now()).unwrap();
        let why = replace_because("server", &server, &new_ca, &leaf, now()).unwrap();
        assert_eq!(why, "server is not signed by the cluster's CA");
        let broken = KeyedCert {
            cert: "junk".into(),
            key: server.key.clone(),
        };
        assert!(replace_because("server", &broken, &ca, &leaf, now()).is_some());
        let client = Leaf::Client("tusk_replication".into());
        let why = replace_because("server", &server, &ca, &client, now()).unwrap();
        assert_eq!(why, "server is not for role tusk_replication");
    }
}
