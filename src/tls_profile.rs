//! The cluster's TLS security profile, which the operator's HTTPS servers (the conversion
//! webhook and `/metrics`) follow.
//!
//! On OpenShift the profile is `apiservers.config.openshift.io/cluster` `.spec.tlsSecurityProfile`:
//! `Old`, `Intermediate` (the default), `Modern`, or `Custom` with its own minimum version and
//! ciphers. [`follow`] watches that object and hands every change to a [`ProfiledTls`], which
//! builds the rustls configuration new handshakes get; the listener and open connections are
//! never touched, so a change needs no restart. Where the API does not exist (a cluster that is
//! not OpenShift) the servers use Intermediate.
//!
//! rustls speaks TLS 1.2 and 1.3 with AEAD ciphers only. So:
//! - a minimum of TLS 1.0 or 1.1 (`Old`, or a `Custom` one) means TLS 1.2, the lowest rustls
//!   has;
//! - ciphers rustls does not have (CBC, DHE, 3DES) are left out, and said so in the log;
//! - as in OpenShift's own Go servers, whose TLS 1.3 suites cannot be chosen, a profile that names
//!   no TLS 1.3 suite gets all of them.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};
use rustls::{
    CipherSuite, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion, crypto::CryptoProvider,
    server::ResolvesServerCert, version,
};
use serde_json::Value;
use tokio::sync::watch;

/// The group, version and kind of OpenShift's cluster-wide API server configuration.
pub const API_SERVER_GVK: (&str, &str, &str) = ("config.openshift.io", "v1", "APIServer");
/// Its plural, for RBAC.
pub const API_SERVER_PLURAL: &str = "apiservers";
/// The one object that holds the cluster's profile.
pub const API_SERVER_NAME: &str = "cluster";

/// A TLS version as the profile names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `VersionTLS10`.
    Tls10,
    /// `VersionTLS11`.
    Tls11,
    /// `VersionTLS12`.
    Tls12,
    /// `VersionTLS13`.
    Tls13,
}

impl TlsVersion {
    fn parse(text: &str) -> Result<Self, ProfileError> {
        match text {
            "VersionTLS10" => Ok(Self::Tls10),
            "VersionTLS11" => Ok(Self::Tls11),
            "VersionTLS12" => Ok(Self::Tls12),
            "VersionTLS13" => Ok(Self::Tls13),
            other => Err(ProfileError(format!(
                "spec.tlsSecurityProfile.custom.minTLSVersion is {other:?}; allowed: VersionTLS10, VersionTLS11, VersionTLS12, VersionTLS13"
            ))),
        }
    }

    /// The profile's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls10 => "VersionTLS10",
            Self::Tls11 => "VersionTLS11",
            Self::Tls12 => "VersionTLS12",
            Self::Tls13 => "VersionTLS13",
        }
    }
}

/// A profile that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(String);

/// A TLS security profile: its type, the lowest TLS version, and the ciphers (OpenSSL names for
/// TLS 1.2, IANA names for TLS 1.3, as OpenShift writes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `Old`, `Intermediate`, `Modern` or `Custom`.
    pub kind: String,
    /// The lowest version a client may use.
    pub min_version: TlsVersion,
    /// The ciphers allowed.
    pub ciphers: Vec<String>,
}

const TLS13_CIPHERS: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];
const INTERMEDIATE_TLS12_CIPHERS: [&str; 8] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
];
const OLD_EXTRA_CIPHERS: [&str; 18] = [
    "DHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "DHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA256",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn names(groups: &[&[&str]]) -> Vec<String> {
    groups
        .iter()
        .flat_map(|g| g.iter().map(|c| (*c).to_owned()))
        .collect()
}

impl Profile {
    /// `Old`: TLS 1.0 and up with every cipher OpenShift lists for it.
    pub fn old() -> Self {
        Self {
            kind: "Old".into(),
            min_version: TlsVersion::Tls10,
            ciphers: names(&[&TLS13_CIPHERS, &INTERMEDIATE_TLS12_CIPHERS, &OLD_EXTRA_CIPHERS]),
        }
    }

    /// `Intermediate`: TLS 1.2 and up with AEAD ciphers; OpenShift's default, and Tusk's where
    /// there is no profile to follow.
    pub fn intermediate() -> Self {
        Self {
            kind: "Intermediate".into(),
            min_version: TlsVersion::Tls12,
            ciphers: names(&[&TLS13_CIPHERS, &INTERMEDIATE_TLS12_CIPHERS]),
        }
    }

    /// `Modern`: TLS 1.3 only.
    pub fn modern() -> Self {
        Self {
            kind: "Modern".into(),
            min_version: TlsVersion::Tls13,
            ciphers: names(&[&TLS13_CIPHERS]),
        }
    }

    /// The profile an `APIServer` object sets: its `spec.tlsSecurityProfile`, Intermediate when
    /// that is absent or has no type (as OpenShift reads it).
    pub fn from_api_server(object: &Value) -> Result<Self, ProfileError> {
        let spec = &object["spec"]["tlsSecurityProfile"];
        match spec["type"].as_str().unwrap_or_default() {
            "" | "Intermediate" => Ok(Self::intermediate()),
            "Old" => Ok(Self::old()),
            "Modern" => Ok(Self::modern()),
            "Custom" => {
                let custom = &spec["custom"];
                let min_version = match custom["minTLSVersion"].as_str() {
                    Some(v) => TlsVersion::parse(v)?,
                    None => {
                        return Err(ProfileError(
                            "spec.tlsSecurityProfile.custom.minTLSVersion is missing; allowed: VersionTLS10, VersionTLS11, VersionTLS12, VersionTLS13".into(),
                        ));
                    }
                };
                let ciphers = custom["ciphers"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Self {
                    kind: "Custom".into(),
                    min_version,
                    ciphers,
                })
            }
            other => Err(ProfileError(format!(
                "spec.tlsSecurityProfile.type is {other:?}; allowed: Old, Intermediate, Modern, Custom"
            ))),
        }
    }

    /// The profile as the operator hands it to PostgreSQL pods (the `tls-profile.json` key of a
    /// cluster's ConfigMap): `{"type", "minTLSVersion", "ciphers"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "type": self.kind,
            "minTLSVersion": self.min_version.name(),
            "ciphers": self.ciphers,
        })
        .to_string()
    }

    /// A profile [`Self::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ProfileError(format!("not a TLS profile: {e}")))?;
        let custom = serde_json::json!({"spec": {"tlsSecurityProfile": {"type": "Custom", "custom": {
            "minTLSVersion": value["minTLSVersion"],
            "ciphers": value["ciphers"],
        }}}});
        let mut profile = Self::from_api_server(&custom)?;
        if let Some(kind) = value["type"].as_str() {
            kind.clone_into(&mut profile.kind);
        }
        Ok(profile)
    }

    /// PostgreSQL's settings for this profile: `ssl_min_protocol_version`, and `ssl_ciphers` (TLS
    /// 1.2 and older; OpenShift names them as OpenSSL does) with the ciphers OpenShift's profiles
    /// know. A name outside those is left out; without any, PostgreSQL's default list stays.
    pub fn postgres_settings(&self) -> String {
        let min = match self.min_version {
            TlsVersion::Tls10 => "TLSv1",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        };
        let mut conf = format!(
            "# The cluster's TLS security profile ({}), from the operator.\nssl_min_protocol_version = '{min}'\n",
            self.kind.replace(['\n', '\''], "")
        );
        let ciphers: Vec<&str> = self
            .ciphers
            .iter()
            .map(String::as_str)
            .filter(|c| INTERMEDIATE_TLS12_CIPHERS.contains(c) || OLD_EXTRA_CIPHERS.contains(c))
            .collect();
        if !ciphers.is_empty() {
            conf.push_str(&format!("ssl_ciphers = '{}'\n", ciphers.join(":")));
        }
        conf
    }

    /// The TLS versions rustls serves for this profile.
    pub fn versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&version::TLS13];
        if self.min_version >= TlsVersion::Tls13 {
            &TLS13_ONLY
        } else {
            rustls::ALL_VERSIONS
        }
    }

    /// The names of [`Self::versions`], such as `TLSv1_3`.
    pub fn version_names(&self) -> Vec<String> {
        self.versions()
            .iter()
            .map(|v| format!("{:?}", v.version))
            .collect()
    }

    /// The rustls cipher suites of `provider` this profile allows, and the ciphers it names that
    /// rustls does not have.
    pub fn suites(&self, provider: &CryptoProvider) -> (Vec<SupportedCipherSuite>, Vec<String>) {
        let mut wanted = Vec::new();
        let mut unknown = Vec::new();
        for name in &self.ciphers {
            match suite_of(name) {
                Some(suite) => wanted.push(suite),
                None => unknown.push(name.clone()),
            }
        }
        let names_tls13 = wanted.iter().any(|s| TLS13_SUITES.contains(s));
        let suites = provider
            .cipher_suites
            .iter()
            .filter(|s| {
                let suite = s.suite();
                if TLS13_SUITES.contains(&suite) {
                    !names_tls13 || wanted.contains(&suite)
                } else {
                    self.min_version < TlsVersion::Tls13 && wanted.contains(&suite)
                }
            })
            .copied()
            .collect();
        (suites, unknown)
    }

    /// The server configuration for this profile, with `resolver`'s certificate and `alpn`.
    pub fn server_config(
        &self,
        resolver: Arc<dyn ResolvesServerCert>,
        alpn: &[&[u8]],
    ) -> Result<ServerConfig, ProfileError> {
        let base = rustls::crypto::ring::default_provider();
        // Never empty: a profile that names no TLS 1.3 suite gets them all.
        let (suites, _) = self.suites(&base);
        let provider = CryptoProvider {
            cipher_suites: suites,
            ..base
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(self.versions())
            .map_err(|e| ProfileError(format!("the {} profile: {e}", self.kind)))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

const TLS13_SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The rustls suite of a cipher named as OpenShift does (OpenSSL's names for TLS 1.2, IANA's for
/// TLS 1.3, and IANA's for TLS 1.2 too, which Custom profiles sometimes use).
fn suite_of(name: &str) -> Option<CipherSuite> {
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => CipherSuite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => CipherSuite::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256" | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-RSA-AES128-GCM-SHA256" | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-ECDSA-AES256-GCM-SHA384" | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-RSA-AES256-GCM-SHA384" | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-ECDSA-CHACHA20-POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-RSA-CHACHA20-POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// A server's TLS configuration under the profile in force: new handshakes take
/// [`current`](Self::current); [`apply`](Self::apply) swaps it.
pub struct ProfiledTls {
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
    current: RwLock<(Profile, Arc<ServerConfig>)>,
}

impl std::fmt::Debug for ProfiledTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfiledTls")
            .field("profile", &self.profile())
            .finish_non_exhaustive()
    }
}

impl ProfiledTls {
    /// Serves `resolver`'s certificate under `profile`.
    pub fn new(
        profile: Profile,
        resolver: Arc<dyn ResolvesServerCert>,
        alpn: &[&[u8]],
    ) -> Result<Self, ProfileError> {
        let config = Arc::new(profile.server_config(resolver.clone(), alpn)?);
        Ok(Self {
            resolver,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            current: RwLock::new((profile, config)),
        })
    }

    /// The configuration a new handshake gets.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Serves `profile` from the next handshake on. Returns whether it changed anything; on
    /// error the profile in force stays.
    pub fn apply(&self, profile: &Profile) -> Result<bool, ProfileError> {
        if self.profile() == *profile {
            return Ok(false);
        }
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        let config = Arc::new(profile.server_config(self.resolver.clone(), &alpn)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (profile.clone(), config);
        Ok(true)
    }
}

/// Applies `profile` to every server, logging what changed and what could not be honoured.
pub fn apply_all(servers: &[Arc<ProfiledTls>], profile: &Profile, source: &str) {
    let (_, unknown) = profile.suites(&rustls::crypto::ring::default_provider());
    for server in servers {
        match server.apply(profile) {
            Ok(true) => {
                tracing::info!(
                    profile = %profile.kind,
                    min_version = profile.min_version.name(),
                    served_from = if profile.min_version < TlsVersion::Tls12 { "VersionTLS12" } else { profile.min_version.name() },
                    %source,
                    "TLS security profile applied"
                );
                if !unknown.is_empty() {
                    tracing::info!(ciphers = ?unknown, "ciphers the profile allows that rustls does not have are not offered");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, %source, "keeping the TLS profile in force"),
        }
    }
}

/// Follows the cluster's TLS security profile (`apiservers.config.openshift.io/cluster`) for
/// `servers` until the task is dropped. Without that API, or without the object, the servers use
/// Intermediate; the watch retries with backoff, so the API may appear later.
pub async fn follow(client: Client, servers: Vec<Arc<ProfiledTls>>, current: Arc<Current>) {
    let apply_all = |servers: &[Arc<ProfiledTls>], p: &Profile, source: &str| {
        apply_all(servers, p, source);
        current.set(p);
    };
    let (group, version, kind) = API_SERVER_GVK;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), API_SERVER_PLURAL);
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let config = watcher::Config::default().fields(&format!("metadata.name={API_SERVER_NAME}"));
    let stream = watcher::watcher(api, config);
    futures::pin_mut!(stream);
    let mut seen = false;
    let mut missing_logged = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                seen = true;
                missing_logged = false;
                let value = serde_json::to_value(&object).unwrap_or_default();
                match Profile::from_api_server(&value) {
                    Ok(profile) => apply_all(&servers, &profile, "apiservers.config.openshift.io/cluster"),
                    Err(e) => {
                        tracing::warn!(error = %e, "apiservers.config.openshift.io/cluster: keeping the TLS profile in force")
                    }
                }
            }
            Ok(watcher::Event::InitDone) if !seen => {
                apply_all(
                    &servers,
                    &Profile::intermediate(),
                    "no apiservers.config.openshift.io/cluster",
                );
            }
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => {
                seen = false;
                apply_all(
                    &servers,
                    &Profile::intermediate(),
                    "apiservers.config.openshift.io/cluster deleted",
                );
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) if status.code == 404 => {
                if !missing_logged {
                    tracing::info!("no apiservers.config.openshift.io API: the TLS profile is Intermediate");
                    missing_logged = true;
                }
                apply_all(
                    &servers,
                    &Profile::intermediate(),
                    "no apiservers.config.openshift.io API",
                );
                // The watcher retries on its own; wait before it does.
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "watching the TLS security profile");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}

/// The profile in force, for whoever hands it on (the operator, to PostgreSQL pods): Intermediate
/// until [`follow`] learns the cluster's.
#[derive(Debug)]
pub struct Current(watch::Sender<Profile>);

impl Default for Current {
    fn default() -> Self {
        Self(watch::Sender::new(Profile::intermediate()))
    }
}

impl Current {
    /// The profile in force.
    pub fn get(&self) -> Profile {
        self.0.borrow().clone()
    }

    /// Sees each change.
    pub fn subscribe(&self) -> watch::Receiver<Profile> {
        self.0.subscribe()
    }

    fn set(&self, profile: &Profile) {
        self.0.send_if_modified(|current| {
            let changed = current != profile;
            if changed {
                profile.clone_into(current);
            }
            changed
        });
    }
}

/// Follows the profile the operator writes to `file` (a cluster's `tls-profile.json`, mounted
/// from its ConfigMap) for `servers`, reading it every `every`, until the task is dropped. A file
/// that is missing or unreadable leaves the profile in force.
pub async fn follow_file(
    file: std::path::PathBuf,
    servers: Vec<Arc<ProfiledTls>>,
    every: std::time::Duration,
) {
    let mut last = String::new();
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && text != last
        {
            match Profile::from_json(&text) {
                Ok(profile) => apply_all(&servers, &profile, &file.display().to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, file = %file.display(), "keeping the TLS profile in force")
                }
            }
            last = text;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_profile_handed_to_pods_reads_back_the_same() {
        let custom = Profile::from_api_server(&api_server(json!({"type": "Custom", "custom": {
            "minTLSVersion": "VersionTLS13", "ciphers": ["TLS_AES_128_GCM_SHA256"],
        }})))
        .unwrap();
        for profile in [Profile::old(), Profile::intermediate(), Profile::modern(), custom] {
            assert_eq!(Profile::from_json(&profile.to_json()).unwrap(), profile);
        }
        let bad = Profile::from_json(r#"{"type": "Custom", "minTLSVersion": "VersionTLS14"}"#).unwrap_err();
        assert!(bad.to_string().contains("VersionTLS14"), "{bad}");
        assert!(Profile::from_json("not json").is_err());
    }

    #[test]
    fn postgres_gets_the_minimum_version_and_the_ciphers_it_knows() {
        let modern = Profile::modern().postgres_settings();
        assert!(
            modern.contains("ssl_min_protocol_version = 'TLSv1.3'\n"),
            "{modern}"
        );
        assert!(!modern.contains("ssl_ciphers"), "{modern}");
        let intermediate = Profile::intermediate().postgres_settings();
        assert!(
            intermediate.contains("ssl_min_protocol_version = 'TLSv1.2'\n"),
            "{intermediate}"
        );
        assert!(
            intermediate
                .contains("ssl_ciphers = 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"),
            "{intermediate}"
        );
        let custom = Profile {
            kind: "Custom'\nfsync = off".into(),
            min_version: TlsVersion::Tls12,
            ciphers: vec!["AES128-SHA".into(), "x' ; evil".into()],
        }
        .postgres_settings();
        assert_eq!(
            custom,
            "# The cluster's TLS security profile (Customfsync = off), from the operator.\n\
             ssl_min_protocol_version = 'TLSv1.2'\nssl_ciphers = 'AES128-SHA'\n"
        );
    }

    fn api_server(profile: Value) -> Value {
        json!({"apiVersion": "config.openshift.io/v1", "kind": "APIServer", "metadata": {"name": "cluster"}, "spec": {"tlsSecurityProfile": profile}})
    }

    fn suite_names(profile: &Profile) -> Vec<&'static str> {
        let (suites, _) = profile.suites(&rustls::crypto::ring::default_provider());
        suites.iter().filter_map(|s| s.suite().as_str()).collect()
    }

    #[test]
    fn the_named_profiles_map_to_what_rustls_has() {
        let modern = Profile::from_api_server(&api_server(json!({"type": "Modern", "modern": {}}))).unwrap();
        assert_eq!(modern, Profile::modern());
        assert_eq!(modern.version_names(), ["TLSv1_3"]);
        assert!(
            suite_names(&modern).iter().all(|s| s.starts_with("TLS13_")),
            "{:?}",
            suite_names(&modern)
        );

        let intermediate = Profile::from_api_server(&api_server(json!({"type": "Intermediate"}))).unwrap();
        assert_eq!(intermediate.version_names(), ["TLSv1_3", "TLSv1_2"]);
        let names = suite_names(&intermediate);
        assert_eq!(names.len(), 9, "{names:?}");
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
        // DHE is not in rustls: named by the profile, not offered.
        let (_, unknown) = intermediate.suites(&rustls::crypto::ring::default_provider());
        assert_eq!(
            unknown,
            ["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"]
        );

        let old = Profile::from_api_server(&api_server(json!({"type": "Old"}))).unwrap();
        assert_eq!(old.min_version, TlsVersion::Tls10);
        assert_eq!(suite_names(&old), suite_names(&intermediate));
    }

    #[test]
    fn no_profile_is_intermediate() {
        assert_eq!(
            Profile::from_api_server(&json!({"spec": {}})).unwrap(),
            Profile::intermediate()
        );
        assert_eq!(
            Profile::from_api_server(&api_server(json!({}))).unwrap(),
            Profile::intermediate()
        );
    }

    #[test]
    fn a_custom_profile_takes_its_ciphers_and_version() {
        let custom = Profile::from_api_server(&api_server(json!({"type": "Custom", "custom": {
            "minTLSVersion": "VersionTLS12",
            "ciphers": ["ECDHE-RSA-AES256-GCM-SHA384", "AES128-SHA"],
        }})))
        .unwrap();
        // No TLS 1.3 suite named: all of them, as OpenShift's Go servers do.
        assert_eq!(
            suite_names(&custom),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        let only_one_tls13 = Profile::from_api_server(&api_server(json!({"type": "Custom", "custom": {
            "minTLSVersion": "VersionTLS13",
            "ciphers": ["TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"],
        }})))
        .unwrap();
        assert_eq!(suite_names(&only_one_tls13), ["TLS13_AES_256_GCM_SHA384"]);
    }

    #[test]
    fn bad_profiles_name_the_field_and_what_is_allowed() {
        let e = Profile::from_api_server(&api_server(json!({"type": "Strict"}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.tlsSecurityProfile.type is \"Strict\"; allowed: Old, Intermediate, Modern, Custom"
        );
        let e = Profile::from_api_server(&api_server(
            json!({"type": "Custom", "custom": {"minTLSVersion": "TLS1.2"}}),
        ))
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "spec.tlsSecurityProfile.custom.minTLSVersion is \"TLS1.2\"; allowed: VersionTLS10"
            ),
            "{e}"
        );
        // Only a CBC cipher: the TLS 1.3 suites, which it does not name, are what is served.
        let cbc = Profile {
            kind: "Custom".into(),
            min_version: TlsVersion::Tls13,
            ciphers: vec!["AES128-SHA".into()],
        };
        assert_eq!(
            suite_names(&cbc).len(),
            3,
            "TLS 1.3 suites stay when none is named"
        );
        let resolver: Arc<dyn ResolvesServerCert> =
            Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
        assert!(cbc.server_config(resolver.clone(), &[]).is_ok());
        assert_eq!(
            cbc.suites(&rustls::crypto::ring::default_provider()).1,
            ["AES128-SHA"]
        );
        let unknown_tls13 = Profile {
            kind: "Custom".into(),
            min_version: TlsVersion::Tls13,
            ciphers: vec!["TLS_AES_128_CCM_SHA256".into(), "TLS_AES_256_GCM_SHA384".into()],
        };
        assert_eq!(suite_names(&unknown_tls13), ["TLS13_AES_256_GCM_SHA384"]);
        assert!(unknown_tls13.server_config(resolver, &[]).is_ok());
    }

    #[test]
    fn applying_swaps_the_configuration_for_new_handshakes() {
        let resolver: Arc<dyn ResolvesServerCert> =
            Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
        let tls = ProfiledTls::new(Profile::intermediate(), resolver, &[b"http/1.1"]).unwrap();
        let before = tls.current();
        assert!(!tls.apply(&Profile::intermediate()).unwrap());
        assert!(Arc::ptr_eq(&before, &tls.current()));
        assert!(tls.apply(&Profile::modern()).unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.current()));
        assert_eq!(tls.profile(), Profile::modern());
        assert_eq!(tls.current().alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
