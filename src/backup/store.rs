//! The object store backups go to, through `object_store`: S3 and S3-compatible stores (with
//! server-side encryption), Azure Blob Storage, Google Cloud Storage, or a directory. Every object
//! store takes a custom CA bundle, and honours the proxy environment variables (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `NO_PROXY`) as reqwest does by default.
//!
//! What a pod reads from its mounted configuration is a [`StoreConfig`] whose secrets are file
//! paths, read again at each use so a rotated Secret is picked up; what the operator sends with a
//! backup request is the same config with the secrets inline.

use std::{path::PathBuf, sync::Arc, time::Duration};

use object_store::{
    ClientOptions, ObjectStore, RetryConfig,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::MicrosoftAzureBuilder,
    gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem,
    path::Path,
};
use serde::{Deserialize, Serialize};

/// A value given inline or in a file (a key of a mounted Secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Secret {
    /// The value itself.
    Inline(String),
    /// A file whose contents (trailing newline removed) is the value.
    File(PathBuf),
}

impl Secret {
    /// The value, or `None` when it is a file that does not exist.
    fn read_if_there(&self, what: &str) -> Result<Option<String>, StoreError> {
        match self {
            Self::File(path) if !path.exists() => Ok(None),
            _ => self.read(what).map(Some),
        }
    }

    fn read(&self, what: &str) -> Result<String, StoreError> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| StoreError {
                    cause: Cause::Credentials,
                    message: format!("reading the {what} from {}: {e}", path.display()),
                }),
        }
    }
}

/// Server-side encryption the store applies to what Tusk writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Encryption {
    /// SSE-S3: the store's own keys (`AES256`).
    S3,
    /// SSE-KMS with this key id.
    Kms(String),
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The endpoint URL for stores other than AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// PEM certificates to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<Secret>,
    /// Server-side encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How Tusk signs in to an Azure storage account: its shared key, else a SAS token. Mounted
/// configs name both files and use the first that exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureConfig {
    /// The storage account.
    pub account: String,
    /// The container.
    pub container: String,
    /// The account's blob endpoint, when not Azure's public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The account's shared key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<Secret>,
    /// A SAS token (`sv=...&sig=...`, with or without a leading `?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<Secret>,
    /// PEM certificates to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<Secret>,
}

/// A Google Cloud Storage bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcsConfig {
    /// The bucket.
    pub bucket: String,
    /// A service account's JSON key.
    pub service_account_key: Secret,
    /// PEM certificates to trust besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<Secret>,
}

/// Where backups of one cluster live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfig {
    /// An S3-compatible bucket, or...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// ...an Azure Blob Storage container, or...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureConfig>,
    /// ...a Google Cloud Storage bucket, or...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsConfig>,
    /// ...a directory (a mounted volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// The prefix every object of this cluster is written below, such as `backups/db`.
    pub root: String,
    /// Where users see it, such as `s3://bucket/backups/db`, for messages and status.
    pub url: String,
}

impl StoreConfig {
    /// An S3 bucket with the credentials given inline, its objects below `root`.
    pub fn s3_inline(
        bucket: &str,
        endpoint: &str,
        access_key_id: &str,
        secret_access_key: &str,
        root: &str,
    ) -> Self {
        Self {
            s3: Some(S3Config {
                bucket: bucket.into(),
                endpoint: Some(endpoint.into()),
                region: None,
                access_key_id: Secret::Inline(access_key_id.into()),
                secret_access_key: Secret::Inline(secret_access_key.into()),
                ca_bundle: None,
                encryption: None,
            }),
            azure: None,
            gcs: None,
            directory: None,
            root: root.into(),
            url: format!("s3://{bucket}/{root}"),
        }
    }
}

/// What went wrong with the store, in the terms a user can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The credentials are missing or refused.
    Credentials,
    /// The bucket does not exist.
    NoBucket,
    /// The endpoint cannot be reached.
    Unreachable,
    /// The endpoint's TLS certificate is not signed by a CA the client trusts.
    Untrusted,
    /// The configuration is invalid.
    Config,
    /// Anything else.
    Other,
}

impl Cause {
    /// The condition reason for it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Credentials => "StoreCredentialsRefused",
            Self::NoBucket => "StoreBucketMissing",
            Self::Unreachable => "StoreUnreachable",
            Self::Untrusted => "StoreCertificateUntrusted",
            Self::Config => "StoreConfigInvalid",
            Self::Other => "StoreFailed",
        }
    }
}

/// A store failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// The kind of failure.
    pub cause: Cause,
    /// What happened, naming the store.
    pub message: String,
}

/// Classifies an `object_store` error for `url`.
pub fn classify(url: &str, error: &object_store::Error) -> StoreError {
    use object_store::Error as E;
    let text = format!("{error}");
    let chain = {
        let mut all = text.clone();
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            all.push_str(": ");
            all.push_str(&s.to_string());
            source = s.source();
        }
        all
    };
    let cause = if chain.contains("NoSuchBucket")
        || chain.contains("bucket does not exist")
        || chain.contains("ContainerNotFound")
    {
        Cause::NoBucket
    } else if matches!(error, E::Unauthenticated { .. } | E::PermissionDenied { .. })
        || chain.contains("InvalidAccessKeyId")
        || chain.contains("SignatureDoesNotMatch")
        || chain.contains("AccessDenied")
        || chain.contains("AuthenticationFailed")
        || chain.contains("AuthorizationFailure")
    {
        Cause::Credentials
    } else if chain.contains("UnknownIssuer") {
        // rustls: "invalid peer certificate: UnknownIssuer".
        Cause::Untrusted
    } else if chain.contains("error sending request")
        || chain.contains("onnection refused")
        || chain.contains("dns error")
        || chain.contains("timed out")
        || chain.contains("certificate")
        || chain.contains("tcp connect")
    {
        Cause::Unreachable
    } else {
        Cause::Other
    };
    let what = match cause {
        Cause::Credentials => "the store refused the credentials",
        Cause::NoBucket => "the bucket (or container) does not exist",
        Cause::Unreachable => "the store cannot be reached",
        Cause::Untrusted => {
            "the store's TLS certificate is not signed by a trusted CA (name the CA's certificate in caBundle)"
        }
        _ => "the store failed",
    };
    StoreError {
        cause,
        message: format!("{url}: {what}: {chain}"),
    }
}

/// An opened store: the client and the prefix of this cluster's objects.
#[derive(Clone, Debug)]
pub struct Store {
    /// The client.
    pub inner: Arc<dyn ObjectStore>,
    /// The cluster's prefix.
    pub root: Path,
    /// The user-facing URL of the prefix.
    pub url: String,
    /// Whether objects carry metadata (a directory's do not; gzip's own CRC still checks them).
    pub metadata: bool,
}

impl Store {
    /// The path of `relative` below the cluster's prefix.
    pub fn path(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self.root.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(relative.split('/').filter(|p| !p.is_empty()).map(str::to_owned));
        Path::from_iter(parts)
    }

    /// One request that fails as a wrong configuration would: an endpoint nothing answers on,
    /// refused credentials, a missing bucket. It lists the cluster's prefix.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.inner
            .list_with_delimiter(Some(&self.root))
            .await
            .map(drop)
            .map_err(|e| self.error(&e))
    }

    /// Classifies `error` for this store.
    pub fn error(&self, error: &object_store::Error) -> StoreError {
        classify(&self.url, error)
    }
}

/// How long one request may take before it is retried or fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request keeps retrying a store that fails (a 5xx, a reset, a refused connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// Two quick retries, within a second: the caller tries the whole operation again anyway
    /// (PostgreSQL calls `archive_command` again; the operator checks again at its next turn), and
    /// a status should say soon that the store fails.
    Brief,
    /// Ten retries with backoff, about a minute: a base backup streams once and cannot go back,
    /// so a part that still fails after these fails the backup. S3 documents a 500 or 503 as a
    /// reason to retry, and stores do answer so now and then under load.
    Steady,
}

impl Patience {
    fn retry(self) -> RetryConfig {
        match self {
            Self::Brief => RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            },
            Self::Steady => RetryConfig {
                max_retries: 10,
                retry_timeout: Duration::from_secs(120),
                ..RetryConfig::default()
            },
        }
    }
}

impl StoreConfig {
    /// Opens the store with [`Patience::Brief`]: reads the secrets and builds the client. Sends no
    /// request.
    pub fn open(&self) -> Result<Store, StoreError> {
        self.open_with(Patience::Brief)
    }

    /// Opens the store, retrying failed requests as `patience` says. Sends no request.
    pub fn open_with(&self, patience: Patience) -> Result<Store, StoreError> {
        let config = |message: String| StoreError {
            cause: Cause::Config,
            message: format!("{}: {message}", self.url),
        };
        let client =
            |ca_bundle: Option<&Secret>, endpoint: Option<&str>| -> Result<ClientOptions, StoreError> {
                let mut options = ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(Duration::from_secs(5));
                if let Some(ca) = ca_bundle {
                    let pem = ca.read("CA bundle")?;
                    let certificates = object_store::Certificate::from_pem_bundle(pem.as_bytes())
                        .map_err(|e| config(format!("the CA bundle is not PEM certificates: {e}")))?;
                    if certificates.is_empty() {
                        return Err(config("the CA bundle holds no certificate".into()));
                    }
                    for certificate in certificates {
                        options = options.with_root_certificate(certificate);
                    }
                }
                if endpoint.is_some_and(|e| e.starts_with("http://")) {
                    options = options.with_allow_http(true);
                }
                Ok(options)
            };
        let inner: Arc<dyn ObjectStore> = match (&self.s3, &self.azure, &self.gcs, &self.directory) {
            (Some(s3), None, None, None) => {
                let options = client(s3.ca_bundle.as_ref(), s3.endpoint.as_deref())?;
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_access_key_id(s3.access_key_id.read("access key id")?)
                    .with_secret_access_key(s3.secret_access_key.read("secret access key")?)
                    .with_client_options(options)
                    .with_retry(patience.retry());
                if let Some(endpoint) = s3.endpoint.clone() {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                match &s3.encryption {
                    None => {}
                    Some(Encryption::S3) => {
                        let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                            .parse()
                            .expect("object_store knows its own key");
                        builder = builder.with_config(key, "AES256");
                    }
                    Some(Encryption::Kms(key)) => builder = builder.with_sse_kms_encryption(key),
                }
                Arc::new(builder.build().map_err(|e| config(e.to_string()))?)
            }
            (None, Some(azure), None, None) => {
                let options = client(azure.ca_bundle.as_ref(), azure.endpoint.as_deref())?;
                let mut builder = MicrosoftAzureBuilder::new()
                    .with_account(&azure.account)
                    .with_container_name(&azure.container)
                    .with_client_options(options)
                    .with_retry(patience.retry());
                if let Some(endpoint) = &azure.endpoint {
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_owned());
                }
                let key = match &azure.access_key {
                    Some(key) => key.read_if_there("storage account key")?,
                    None => None,
                };
                let sas = match (&key, &azure.sas_token) {
                    (None, Some(sas)) => sas.read_if_there("SAS token")?,
                    _ => None,
                };
                builder = match (key, sas) {
                    (Some(key), _) => builder.with_access_key(key),
                    (None, Some(sas)) => builder.with_config(
                        object_store::azure::AzureConfigKey::SasKey,
                        sas.trim_start_matches('?'),
                    ),
                    (None, None) => {
                        return Err(StoreError {
                            cause: Cause::Credentials,
                            message: format!(
                                "{}: no credentials: the Secret has neither AZURE_STORAGE_KEY nor AZURE_STORAGE_SAS_TOKEN",
                                self.url
                            ),
                        });
                    }
                };
                Arc::new(builder.build().map_err(|e| config(e.to_string()))?)
            }
            (None, None, Some(gcs), None) => {
                let options = client(gcs.ca_bundle.as_ref(), None)?;
                let key = gcs.service_account_key.read("service account key")?;
                // A key whose `gcs_base_url` is plain HTTP (a private endpoint or an emulator).
                let http = serde_json::from_str::<serde_json::Value>(&key)
                    .ok()
                    .and_then(|k| k.get("gcs_base_url")?.as_str().map(|u| u.starts_with("http://")))
                    .unwrap_or(false);
                let builder = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&gcs.bucket)
                    .with_service_account_key(key)
                    .with_client_options(options.with_allow_http(http))
                    .with_retry(patience.retry());
                Arc::new(builder.build().map_err(|e| config(e.to_string()))?)
            }
            (None, None, None, Some(directory)) => Arc::new(
                LocalFileSystem::new_with_prefix(directory)
                    .map_err(|e| config(format!("{}: {e}", directory.display())))?,
            ),
            _ => return Err(config("set exactly one of s3, azure, gcs or directory".into())),
        };
        let root = Path::parse(&self.root).map_err(|e| config(format!("prefix {:?}: {e}", self.root)))?;
        Ok(Store {
            inner,
            root,
            url: self.url.clone(),
            metadata: self.directory.is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_below_the_root() {
        let store = StoreConfig {
            s3: None,
            azure: None,
            gcs: None,
            directory: Some(std::env::temp_dir()),
            root: "backups/db".into(),
            url: "file:///tmp/backups/db".into(),
        }
        .open()
        .unwrap();
        assert_eq!(store.path("wal/x.gz").as_ref(), "backups/db/wal/x.gz");
        assert_eq!(store.path("/base//b1/").as_ref(), "backups/db/base/b1");
    }

    #[test]
    fn a_config_names_one_store() {
        let error = StoreConfig {
            s3: None,
            azure: None,
            gcs: None,
            directory: None,
            root: "x".into(),
            url: "nowhere".into(),
        }
        .open()
        .unwrap_err();
        assert_eq!(error.cause, Cause::Config);
        assert!(error.message.contains("exactly one"), "{error}");
    }

    #[test]
    fn secrets_in_files_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "AKIA\n").unwrap();
        assert_eq!(Secret::File(dir.path().join("k")).read("key").unwrap(), "AKIA");
        let missing = Secret::File(dir.path().join("nope"))
            .read("access key id")
            .unwrap_err();
        assert_eq!(missing.cause, Cause::Credentials);
        assert!(missing.message.contains("access key id"), "{missing}");
    }
}
