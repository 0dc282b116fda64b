//! Types shared by several kinds and versions of the Tusk API.
//!
//! A type lives here only when its shape is identical in every version that uses it, so sharing
//! it can never hide a schema difference between versions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 label: what Kubernetes allows for the name of a Service, and so for a cluster.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Kubernetes resource quantity without sign, as used for storage sizes (`10Gi`, `500M`).
pub const STORAGE_QUANTITY_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// Longest storage quantity accepted. The bound also lets kube-apiserver's CEL cost estimator
/// price the messages that quote a size.
pub const MAX_QUANTITY_LENGTH: u32 = 64;

/// A container image reference pinned by tag, digest, or both.
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}@sha256:[a-f0-9]{64})$";

/// A five-field cron expression (minute hour day-of-month month day-of-week) or a macro such as
/// `@daily`.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9*/,-]+ [0-9*/,-]+ [0-9*/,?LW-]+ [0-9A-Za-z*/,-]+ [0-9A-Za-z*/,?L#-]+)$";

/// A retention period: a positive number followed by `d` (days), `w` (weeks) or `m` (months).
pub const RETENTION_PATTERN: &str = r"^[1-9][0-9]*[dwm]$";

/// The lowest PostgreSQL major version Tusk runs.
pub const MIN_POSTGRES_MAJOR: i32 = 15;
/// The highest PostgreSQL major version Tusk runs.
pub const MAX_POSTGRES_MAJOR: i32 = 18;
/// The most instances (one primary plus replicas) a cluster may have.
pub const MAX_INSTANCES: i32 = 10;

/// One observation of the object's state, in the shape of Kubernetes `metav1.Condition`.
///
/// Times are kept as the RFC 3339 text the writer sent, so converting between API versions
/// never rewrites them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition in CamelCase, for example `Ready`.
    #[schemars(length(min = 1, max = 316))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
    ))]
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When the condition last changed from one status to another, in RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// A machine-readable reason for the last transition, in CamelCase.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// A human-readable message about the last transition; may be empty.
    #[schemars(length(max = 32768))]
    pub message: String,
}

/// The status of a [`Condition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Tusk cannot tell yet.
    Unknown,
}

/// The Secret that carries connection details, following the servicebinding.io specification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// Name of the binding Secret in the object's namespace.
    pub name: String,
}

/// A reference to a `PostgresCluster` in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterReference {
    /// Name of the `PostgresCluster`, in the same namespace as this object.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
}

/// What happens to data when the object that owns it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the data after the object is deleted.
    Retain,
    /// Delete the data together with the object.
    Delete,
}

/// How a backup copies the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackupMethod {
    /// A physical copy of the whole cluster with `pg_basebackup`; can seed a new cluster.
    Basebackup,
    /// A logical dump of every database with `pg_dump`; portable across major versions.
    Dump,
}

/// Where backups are written. Set exactly one of `volume`, `s3`, `azure` or `gcs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.volume), has(self.s3), has(self.azure), has(self.gcs)].filter(x, x).size() == 1",
    "message": "backup target: set exactly one of volume, s3, azure or gcs"
}]))]
#[serde(deny_unknown_fields)]
pub struct BackupTarget {
    /// Write backups to a PersistentVolumeClaim in the cluster's namespace, mounted in every pod
    /// of the cluster (so ReadWriteMany when it has more than one instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeTarget>,
    /// Write backups to an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// Write backups to an Azure Blob Storage container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureTarget>,
    /// Write backups to a Google Cloud Storage bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsTarget>,
}

/// What every object-store target has: a Secret with credentials, an optional CA bundle and a
/// prefix. `field` is the target's key in `BackupTarget` (`s3`, `azure`, `gcs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectTarget<'a> {
    /// `s3`, `azure` or `gcs`.
    pub field: &'static str,
    /// The credentials Secret.
    pub credentials_secret: &'a str,
    /// The CA bundle.
    pub ca_bundle: Option<&'a SecretKeySelector>,
    /// The key prefix.
    pub path: Option<&'a str>,
}

impl BackupTarget {
    /// The object store this target names, if it names one (not a volume).
    pub fn object(&self) -> Option<ObjectTarget<'_>> {
        if let Some(s3) = &self.s3 {
            return Some(ObjectTarget {
                field: "s3",
                credentials_secret: &s3.credentials_secret,
                ca_bundle: s3.ca_bundle.as_ref(),
                path: s3.path.as_deref(),
            });
        }
        if let Some(azure) = &self.azure {
            return Some(ObjectTarget {
                field: "azure",
                credentials_secret: &azure.credentials_secret,
                ca_bundle: azure.ca_bundle.as_ref(),
                path: azure.path.as_deref(),
            });
        }
        self.gcs.as_ref().map(|gcs| ObjectTarget {
            field: "gcs",
            credentials_secret: &gcs.credentials_secret,
            ca_bundle: gcs.ca_bundle.as_ref(),
            path: gcs.path.as_deref(),
        })
    }
}

/// An Azure Blob Storage container that receives backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct AzureTarget {
    /// The storage account.
    #[schemars(length(min = 3, max = 24), regex(pattern = r"^[a-z0-9]+$"))]
    pub storage_account: String,
    /// The container.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9](-?[a-z0-9])*$"))]
    pub container: String,
    /// Blob name prefix inside the container; backups of one cluster go below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// The account's blob endpoint, for clouds other than Azure's public one or for an emulator,
    /// such as `https://azurite.example:10000/devstoreaccount1`. The default is
    /// `https://<storageAccount>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
    /// Secret in the cluster's namespace with key `AZURE_STORAGE_KEY` (the account's shared
    /// key) or `AZURE_STORAGE_SAS_TOKEN` (a SAS token); the shared key wins when both are there.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// A Secret key holding PEM certificates to trust for `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeySelector>,
}

/// A Google Cloud Storage bucket that receives backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct GcsTarget {
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 222),
        regex(pattern = r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Object name prefix inside the bucket; backups of one cluster go below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Secret in the cluster's namespace with key `SERVICE_ACCOUNT_JSON`: a service account's
    /// JSON key, as `gcloud iam service-accounts keys create` writes it.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// A Secret key holding PEM certificates to trust, for a private endpoint the key's
    /// `gcs_base_url` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeySelector>,
}

/// A PersistentVolumeClaim that receives backups and WAL, below `<cluster>/`. Every pod of the
/// cluster whose `spec.backup.target` names it mounts it; a `PostgresBackup` can name only that
/// claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct VolumeTarget {
    /// Name of an existing PersistentVolumeClaim in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// An S3-compatible bucket that receives backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix inside the bucket; backups of one cluster go below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Endpoint URL for stores other than AWS, for example `https://minio.example:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub region: Option<String>,
    /// Secret in the cluster's namespace with keys `ACCESS_KEY_ID` and `SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// A Secret key holding PEM certificates to trust for `endpoint`, for stores with a
    /// self-signed or private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeySelector>,
    /// Server-side encryption of everything Tusk writes: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS,
    /// with `kmsKeyId`). The store's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Server-side encryption in an S3 store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.type == 'aws:kms' ? has(self.kmsKeyId) : !has(self.kmsKeyId)",
    "message": "serverSideEncryption.kmsKeyId is required with type aws:kms and not allowed with AES256"
}]))]
#[serde(deny_unknown_fields)]
pub struct ServerSideEncryption {
    /// `AES256` (SSE-S3, the store's own keys) or `aws:kms` (SSE-KMS).
    #[serde(rename = "type")]
    pub type_: SseType,
    /// The KMS key id or ARN, with `aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

/// Which server-side encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SseType {
    /// SSE-S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// Size and class of one persistent volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
    "message": "storageClassName is immutable: a volume cannot move to another storage class; create a new cluster instead"
}, {
    "rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
    "messageExpression": "'size may grow but never shrink: it is ' + oldSelf.size + ', so allowed values are ' + oldSelf.size + ' or more'"
}]))]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Requested size, a Kubernetes quantity such as `10Gi`. It may grow but never shrink.
    #[schemars(regex(pattern = STORAGE_QUANTITY_PATTERN), length(max = MAX_QUANTITY_LENGTH))]
    pub size: String,
    /// StorageClass for the volume; the cluster default when omitted. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// Where backups go and how long they stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfiguration {
    /// Where backups are written.
    pub target: BackupTarget,
    /// How long backups are kept, for example `30d`, `8w` or `6m`. Older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RETENTION_PATTERN))]
    pub retention: Option<String>,
    /// The longest time a written transaction waits before its WAL segment is archived, which
    /// bounds the data at risk when the volumes are lost: PostgreSQL's `archive_timeout`, such as
    /// `5min` (the default), `60s` or `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = ARCHIVE_TIMEOUT_PATTERN))]
    pub archive_timeout: Option<String>,
    /// How base backups are compressed: `zstd` (the default: about a twentieth of the size on
    /// typical data, for the CPU of zstd's fastest level) or `none` (a plain tar, written as
    /// fast as `pg_basebackup` reads, for stores where space is cheaper than CPU). WAL files are
    /// always compressed. A change applies to the next backup; earlier ones restore as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<BackupCompression>,
}

/// How base backups are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupCompression {
    /// zstd, its fastest regular level, with a checksum in every frame: `base.tar.zst`.
    #[default]
    Zstd,
    /// None: `base.tar`.
    None,
}

/// An `archive_timeout`: a number and a unit PostgreSQL reads (`s`, `min` or `h`).
pub const ARCHIVE_TIMEOUT_PATTERN: &str = r"^[1-9][0-9]{0,5}(s|min|h)$";

/// CEL rules for a PostgreSQL identifier (a role or database name) that users choose: not a
/// reserved name, and not in the `pg_` namespace PostgreSQL keeps for itself.
pub fn identifier_rules(field: &str, reserved: &[&str]) -> serde_json::Value {
    let list = reserved
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(", ");
    serde_json::json!([
        {
            "rule": "!self.startsWith('pg_')",
            "message": format!("{field} may not start with pg_: PostgreSQL reserves that prefix for system roles and objects"),
        },
        {
            "rule": format!("!(self in [{list}])"),
            "message": format!("{field} may not be one of {}: Tusk or PostgreSQL use these", reserved.join(", ")),
        },
    ])
}

/// Role names a `PostgresUser` may not take.
pub const RESERVED_ROLES: &[&str] = &[
    "postgres",
    "public",
    "none",
    "current_user",
    "session_user",
    "current_role",
    "tusk_replication",
];

/// Database names a `PostgresDatabase` may not take.
pub const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];
