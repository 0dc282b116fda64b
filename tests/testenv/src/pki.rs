//! Throwaway certificate authorities and the certificates tests need: serving certificates for
//! loopback, and client certificates for the apiserver.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, both PEM.
#[derive(Clone, Debug)]
pub struct KeyedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

/// A certificate authority that exists only for one test run.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ECDSA P-256 key generation");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signing a CA");
        Self { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A serving certificate for `127.0.0.1` and `localhost`.
    pub fn loopback_serving_cert(&self, common_name: &str) -> KeyedCert {
        self.serving_cert(common_name, &["127.0.0.1", "localhost"])
    }

    /// A serving certificate for `names`: IP addresses become IP SANs, the rest DNS SANs.
    pub fn serving_cert(&self, common_name: &str, names: &[&str]) -> KeyedCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a valid DNS name")),
            })
            .collect();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for user `user` in `groups` (the apiserver reads the common name as the
    /// user and each organization as a group).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> KeyedCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params.distinguished_name.push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> KeyedCert {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("ECDSA P-256 key generation");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a certificate");
        KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }
}

/// A fresh ECDSA P-256 key pair as (PKCS#8 private key, SubjectPublicKeyInfo public key), both PEM
/// (for service-account token signing).
pub fn key_pair_pem() -> (String, String) {
    let key = KeyPair::generate().expect("ECDSA P-256 key generation");
    (key.serialize_pem(), key.public_key_pem())
}
