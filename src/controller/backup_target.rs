//! From a `BackupTarget` in the API to the store the instance manager opens: where a cluster's
//! objects go (`<path>/<cluster>/` in the bucket, `<cluster>/` in a claim), and where the
//! credentials come from (files of a mounted Secret in the pods, or read by the operator for one
//! backup request).
//!
//! A `volume` target is a PersistentVolumeClaim mounted in every pod of the cluster whose
//! `spec.backup.target` (or recovery source) names it. Paths in a store config are relative to
//! the target's directory in the pod (`--backup-target-dir`, `--recovery-source-dir`): the
//! credentials Secret's mount for S3, the claim's mount for a volume.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{Context, Error, Problem};
use crate::{
    api::common::{BackupTarget, SseType},
    backup::{
        restore::{RecoveryConfig, Target},
        store::{AzureConfig, Encryption, GcsConfig, S3Config, Secret as StoreSecret, StoreConfig},
    },
};

/// The key of the access key id in an S3 target's credentials Secret.
pub const ACCESS_KEY_ID: &str = "ACCESS_KEY_ID";
/// The key of the secret access key in an S3 target's credentials Secret.
pub const SECRET_ACCESS_KEY: &str = "SECRET_ACCESS_KEY";
/// The key of an Azure storage account's shared key in an Azure target's credentials Secret.
pub const AZURE_STORAGE_KEY: &str = "AZURE_STORAGE_KEY";
/// The key of a SAS token in an Azure target's credentials Secret.
pub const AZURE_STORAGE_SAS_TOKEN: &str = "AZURE_STORAGE_SAS_TOKEN";
/// The key of a service account's JSON key in a GCS target's credentials Secret.
pub const SERVICE_ACCOUNT_JSON: &str = "SERVICE_ACCOUNT_JSON";

/// Volume names (and so directory names, side by side) of the mounted Secrets.
pub mod volumes {
    /// The cluster's own target's credentials.
    pub const BACKUP_CREDENTIALS: &str = "backup-credentials";
    /// The cluster's own target's CA bundle.
    pub const BACKUP_CA: &str = "backup-ca";
    /// The recovery source's credentials.
    pub const RECOVERY_CREDENTIALS: &str = "recovery-credentials";
    /// The recovery source's CA bundle.
    pub const RECOVERY_CA: &str = "recovery-ca";
    /// The cluster's own target's claim.
    pub const BACKUP_VOLUME: &str = "backup-volume";
    /// The recovery source's claim, when it is not the cluster's own.
    pub const RECOVERY_VOLUME: &str = "recovery-volume";
}

/// Where the Secrets are mounted in a pod: `/etc/tusk/<volume>`.
pub fn mount_path(volume: &str) -> String {
    format!("/etc/tusk/{volume}")
}

/// Where a claim that receives backups is mounted in a pod: `/var/lib/tusk/<volume>`.
pub fn claim_mount_path(volume: &str) -> String {
    format!("/var/lib/tusk/{volume}")
}

/// The prefix of `cluster`'s objects in `target`.
pub fn root(target: &BackupTarget, cluster: &str) -> String {
    let path = target
        .object()
        .and_then(|o| o.path)
        .unwrap_or("")
        .trim_matches('/');
    if path.is_empty() {
        cluster.to_owned()
    } else {
        format!("{path}/{cluster}")
    }
}

/// Where the secrets of a store config come from.
pub enum Secrets<'a> {
    /// Files of the Secrets mounted as `credentials` and `ca` volumes (relative to the
    /// credentials mount; the CA mount is its sibling).
    Mounted {
        /// The CA volume's name.
        ca_volume: &'a str,
    },
    /// Values the operator read.
    Inline {
        /// The credentials Secret's keys.
        credentials: std::collections::BTreeMap<String, String>,
        /// The CA bundle.
        ca_bundle: Option<String>,
    },
}

/// The store config of `cluster`'s objects in `target`; `field` names the target in messages.
pub fn store_config(
    target: &BackupTarget,
    cluster: &str,
    secrets: Secrets<'_>,
    field: &str,
) -> Result<StoreConfig, Problem> {
    let root = root(target, cluster);
    let Some(object) = target.object() else {
        let Some(volume) = &target.volume else {
            return Err(Problem::new(
                "BackupTargetInvalid",
                format!("{field}: set exactly one of volume, s3, azure or gcs"),
            ));
        };
        // The claim's directory in the pod is the target directory itself.
        return Ok(StoreConfig {
            url: format!("pvc://{}/{root}", volume.claim_name),
            s3: None,
            azure: None,
            gcs: None,
            directory: Some(".".into()),
            root,
        });
    };
    // A key of the credentials Secret: a file of its mount, or the value read (`None` when the
    // Secret lacks it).
    let key = |key: &str| -> Option<StoreSecret> {
        match &secrets {
            Secrets::Mounted { .. } => Some(StoreSecret::File(key.into())),
            Secrets::Inline { credentials, .. } => credentials.get(key).cloned().map(StoreSecret::Inline),
        }
    };
    let required = |name: &str| {
        key(name).ok_or_else(|| {
            Problem::new(
                "BackupCredentialsMissing",
                format!(
                    "{field}.{}.credentialsSecret: Secret {} has no UTF-8 key {name}",
                    object.field, object.credentials_secret
                ),
            )
        })
    };
    let ca_bundle = match &secrets {
        Secrets::Mounted { ca_volume } => object
            .ca_bundle
            .map(|ca| StoreSecret::File(format!("../{ca_volume}/{}", ca.key).into())),
        Secrets::Inline { ca_bundle, .. } => ca_bundle.clone().map(StoreSecret::Inline),
    };
    let mut config = StoreConfig {
        url: String::new(),
        s3: None,
        azure: None,
        gcs: None,
        directory: None,
        root: root.clone(),
    };
    if let Some(s3) = &target.s3 {
        let encryption = s3.server_side_encryption.as_ref().map(|sse| match sse.type_ {
            SseType::Aes256 => Encryption::S3,
            SseType::AwsKms => Encryption::Kms(sse.kms_key_id.clone().unwrap_or_default()),
        });
        config.url = format!("s3://{}/{root}", s3.bucket);
        config.s3 = Some(S3Config {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id: required(ACCESS_KEY_ID)?,
            secret_access_key: required(SECRET_ACCESS_KEY)?,
            ca_bundle,
            encryption,
        });
    } else if let Some(azure) = &target.azure {
        let (access_key, sas_token) = (key(AZURE_STORAGE_KEY), key(AZURE_STORAGE_SAS_TOKEN));
        if access_key.is_none() && sas_token.is_none() {
            return Err(Problem::new(
                "BackupCredentialsMissing",
                format!(
                    "{field}.azure.credentialsSecret: Secret {} has neither key {AZURE_STORAGE_KEY} nor {AZURE_STORAGE_SAS_TOKEN}",
                    azure.credentials_secret
                ),
            ));
        }
        config.url = format!("azure://{}/{}/{root}", azure.storage_account, azure.container);
        config.azure = Some(AzureConfig {
            account: azure.storage_account.clone(),
            container: azure.container.clone(),
            endpoint: azure.endpoint.clone(),
            access_key,
            sas_token,
            ca_bundle,
        });
    } else if let Some(gcs) = &target.gcs {
        config.url = format!("gs://{}/{root}", gcs.bucket);
        config.gcs = Some(GcsConfig {
            bucket: gcs.bucket.clone(),
            service_account_key: required(SERVICE_ACCOUNT_JSON)?,
            ca_bundle,
        });
    }
    Ok(config)
}

/// Whether PersistentVolumeClaim `claim` exists in `namespace`. Permissions of an older release
/// (its bundle's RBAC has no PVC reads) cannot tell: then it counts as there, as that release
/// mounted it as named.
pub async fn claim_exists(ctx: &Context, namespace: &str, claim: &str) -> Result<bool, Error> {
    let found =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(claim)
            .await
            .map_err(Error::kube("reading the backup claim"));
    match found {
        Ok(found) => Ok(found.is_some()),
        Err(e) if e.forbidden() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Refuses a `volume` target the pods of `cluster` do not mount: they mount only the claim of
/// the cluster's own `spec.backup.target.volume`, so a backup or schedule that names another
/// claim could never be written. `field` names the target in the message.
pub fn unmounted_claim(
    target: &BackupTarget,
    cluster: &crate::api::postgres_cluster::v1::PostgresCluster,
    field: &str,
) -> Option<Problem> {
    let claim = &target.volume.as_ref()?.claim_name;
    let mounted = cluster
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.target.volume.as_ref())
        .map(|v| &v.claim_name);
    if mounted == Some(claim) {
        return None;
    }
    let name = kube::ResourceExt::name_any(cluster);
    let mounts = match mounted {
        Some(m) => format!("mount only claim {m}, from its spec.backup.target.volume"),
        None => "mount no claim: it has no spec.backup.target.volume".to_owned(),
    };
    Some(Problem::new(
        "BackupClaimNotMounted",
        format!(
            "{field}.volume.claimName: the pods of PostgresCluster {name} {mounts}, so they cannot \
             write to claim {claim}; name the cluster's claim, or set it as the cluster's \
             spec.backup.target"
        ),
    ))
}

/// What a restored cluster restores from, resolved from its `spec.bootstrap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRecovery {
    /// The source's store.
    pub target: BackupTarget,
    /// The source cluster's name (its prefix in the store).
    pub cluster: String,
    /// The backup to restore; the newest fitting the target when `None`.
    pub backup: Option<String>,
    /// Where replay stops.
    pub target_point: Target,
}

impl ResolvedRecovery {
    /// `recovery.json` for the pods.
    pub fn config(&self) -> Result<RecoveryConfig, Problem> {
        Ok(RecoveryConfig {
            store: store_config(
                &self.target,
                &self.cluster,
                Secrets::Mounted {
                    ca_volume: volumes::RECOVERY_CA,
                },
                "spec.bootstrap.recovery.source.target",
            )?,
            backup: self.backup.clone(),
            target: self.target_point.clone(),
        })
    }
}

/// The UTF-8 keys of Secret `name`, for a message about `field`.
async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<Result<std::collections::BTreeMap<String, String>, Problem>, Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube("reading a backup Secret"))?;
    let Some(secret) = secret else {
        return Ok(Err(Problem::new(
            "BackupCredentialsMissing",
            format!("{field}: Secret {name} does not exist in namespace {namespace}"),
        )));
    };
    Ok(Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
        .collect()))
}

/// Reads key `key` of Secret `name`, for a message about `field`.
pub async fn secret_value(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Result<String, Problem>, Error> {
    Ok(secret_data(ctx, namespace, name, field)
        .await?
        .and_then(|mut data| {
            data.remove(key).ok_or_else(|| {
                Problem::new(
                    "BackupCredentialsMissing",
                    format!("{field}: Secret {name} has no UTF-8 key {key}"),
                )
            })
        }))
}

/// The store config of `target` with its secrets read now, for one request to a pod.
pub async fn inline_store_config(
    ctx: &Context,
    namespace: &str,
    target: &BackupTarget,
    cluster: &str,
    field: &str,
) -> Result<Result<StoreConfig, Problem>, Error> {
    let Some(object) = target.object() else {
        return Ok(store_config(
            target,
            cluster,
            Secrets::Mounted { ca_volume: "" },
            field,
        ));
    };
    let field_of = |key: &str| format!("{field}.{}.{key}", object.field);
    let credentials = match secret_data(
        ctx,
        namespace,
        object.credentials_secret,
        &field_of("credentialsSecret"),
    )
    .await?
    {
        Ok(data) => data,
        Err(p) => return Ok(Err(p)),
    };
    let ca_bundle = match object.ca_bundle {
        None => None,
        Some(ca) => match secret_value(ctx, namespace, &ca.name, &ca.key, &field_of("caBundle")).await? {
            Ok(v) => Some(v),
            Err(p) => return Ok(Err(p)),
        },
    };
    Ok(store_config(
        target,
        cluster,
        Secrets::Inline {
            credentials,
            ca_bundle,
        },
        field,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{S3Target, SecretKeySelector, ServerSideEncryption};

    fn s3(path: Option<&str>) -> BackupTarget {
        BackupTarget {
            volume: None,
            s3: Some(S3Target {
                bucket: "backups".into(),
                path: path.map(str::to_owned),
                endpoint: Some("https://s3.example".into()),
                region: None,
                credentials_secret: "s3-creds".into(),
                ca_bundle: Some(SecretKeySelector {
                    name: "s3-ca".into(),
                    key: "ca.pem".into(),
                }),
                server_side_encryption: Some(ServerSideEncryption {
                    type_: SseType::AwsKms,
                    kms_key_id: Some("key-1".into()),
                }),
            }),
            azure: None,
            gcs: None,
        }
    }

    #[test]
    fn only_the_clusters_own_claim_can_receive_a_backup() {
        let volume = |claim: &str| BackupTarget {
            volume: Some(crate::api::common::VolumeTarget {
                claim_name: claim.into(),
            }),
            s3: None,
            azure: None,
            gcs: None,
        };
        let cluster = |target: Option<BackupTarget>| {
            let mut spec = serde_json::json!({
                "postgres": {"version": 17}, "instances": 1, "storage": {"data": {"size": "1Gi"}}
            });
            if let Some(t) = target {
                spec["backup"] = serde_json::json!({ "target": t });
            }
            crate::api::postgres_cluster::v1::PostgresCluster::new(
                "db",
                serde_json::from_value(spec).unwrap(),
            )
        };
        let own = cluster(Some(volume("backups")));
        assert_eq!(unmounted_claim(&volume("backups"), &own, "spec.target"), None);
        assert_eq!(unmounted_claim(&s3(None), &own, "spec.target"), None);
        let problem = unmounted_claim(&volume("other"), &own, "spec.target").unwrap();
        assert_eq!(problem.reason, "BackupClaimNotMounted");
        assert!(
            problem.message.starts_with("spec.target.volume.claimName: ")
                && problem.message.contains("mount only claim backups"),
            "{}",
            problem.message
        );
        let problem = unmounted_claim(&volume("backups"), &cluster(None), "spec.target").unwrap();
        assert!(
            problem.message.contains("has no spec.backup.target.volume"),
            "{}",
            problem.message
        );
        let problem = unmounted_claim(&volume("backups"), &cluster(Some(s3(None))), "spec.target").unwrap();
        assert!(
            problem.message.contains("has no spec.backup.target.volume"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn each_cluster_has_its_own_prefix() {
        assert_eq!(root(&s3(None), "db"), "db");
        assert_eq!(root(&s3(Some("/prod/pg/")), "db"), "prod/pg/db");
    }

    #[test]
    fn mounted_secrets_are_files_beside_each_other() {
        let config = store_config(
            &s3(Some("prod")),
            "db",
            Secrets::Mounted {
                ca_volume: volumes::BACKUP_CA,
            },
            "spec.backup.target",
        )
        .unwrap();
        assert_eq!(config.url, "s3://backups/prod/db");
        let s3 = config.s3.unwrap();
        assert_eq!(s3.access_key_id, StoreSecret::File("ACCESS_KEY_ID".into()));
        assert_eq!(
            s3.ca_bundle,
            Some(StoreSecret::File("../backup-ca/ca.pem".into()))
        );
        assert_eq!(s3.encryption, Some(Encryption::Kms("key-1".into())));
    }

    #[test]
    fn a_volume_target_is_the_claims_directory_with_a_prefix_per_cluster() {
        let target = BackupTarget {
            volume: Some(crate::api::common::VolumeTarget {
                claim_name: "pvc".into(),
            }),
            s3: None,
            azure: None,
            gcs: None,
        };
        let config = store_config(
            &target,
            "db",
            Secrets::Mounted { ca_volume: "" },
            "spec.backup.target",
        )
        .unwrap();
        assert_eq!(config.url, "pvc://pvc/db");
        assert_eq!(config.root, "db");
        assert_eq!(config.directory, Some(".".into()));
        assert_eq!(config.s3, None);
    }

    fn azure() -> BackupTarget {
        BackupTarget {
            volume: None,
            s3: None,
            azure: Some(crate::api::common::AzureTarget {
                storage_account: "acct".into(),
                container: "pg".into(),
                path: Some("prod".into()),
                endpoint: None,
                credentials_secret: "az".into(),
                ca_bundle: None,
            }),
            gcs: None,
        }
    }

    #[test]
    fn an_azure_target_names_both_credentials_when_mounted_and_the_one_there_when_read() {
        let mounted = store_config(
            &azure(),
            "db",
            Secrets::Mounted {
                ca_volume: volumes::BACKUP_CA,
            },
            "spec.backup.target",
        )
        .unwrap();
        assert_eq!(mounted.url, "azure://acct/pg/prod/db");
        let config = mounted.azure.unwrap();
        assert_eq!(
            config.access_key,
            Some(StoreSecret::File(AZURE_STORAGE_KEY.into()))
        );
        assert_eq!(
            config.sas_token,
            Some(StoreSecret::File(AZURE_STORAGE_SAS_TOKEN.into()))
        );
        let inline = |keys: &[(&str, &str)]| {
            store_config(
                &azure(),
                "db",
                Secrets::Inline {
                    credentials: keys
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ca_bundle: None,
                },
                "spec.target",
            )
        };
        let sas = inline(&[(AZURE_STORAGE_SAS_TOKEN, "sv=1&sig=x")])
            .unwrap()
            .azure
            .unwrap();
        assert_eq!(
            (sas.access_key, sas.sas_token),
            (None, Some(StoreSecret::Inline("sv=1&sig=x".into())))
        );
        let problem = inline(&[("OTHER", "x")]).unwrap_err();
        assert_eq!(problem.reason, "BackupCredentialsMissing");
        assert_eq!(
            problem.message,
            "spec.target.azure.credentialsSecret: Secret az has neither key AZURE_STORAGE_KEY nor AZURE_STORAGE_SAS_TOKEN"
        );
    }

    #[test]
    fn a_gcs_target_needs_the_service_account_key() {
        let target = BackupTarget {
            volume: None,
            s3: None,
            azure: None,
            gcs: Some(crate::api::common::GcsTarget {
                bucket: "pg-backups".into(),
                path: None,
                credentials_secret: "gcs".into(),
                ca_bundle: None,
            }),
        };
        let mounted = store_config(
            &target,
            "db",
            Secrets::Mounted { ca_volume: "" },
            "spec.backup.target",
        )
        .unwrap();
        assert_eq!(mounted.url, "gs://pg-backups/db");
        assert_eq!(
            mounted.gcs.unwrap().service_account_key,
            StoreSecret::File(SERVICE_ACCOUNT_JSON.into())
        );
        let problem = store_config(
            &target,
            "db",
            Secrets::Inline {
                credentials: Default::default(),
                ca_bundle: None,
            },
            "spec.backup.target",
        )
        .unwrap_err();
        assert_eq!(
            problem.message,
            "spec.backup.target.gcs.credentialsSecret: Secret gcs has no UTF-8 key SERVICE_ACCOUNT_JSON"
        );
    }
}
