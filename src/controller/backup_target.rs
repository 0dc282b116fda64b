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
        store::{Encryption, S3Config, Secret as StoreSecret, StoreConfig},
    },
};

/// The key of the access key id in a target's credentials Secret.
pub const ACCESS_KEY_ID: &str = "ACCESS_KEY_ID";
/// The key of the secret access key in a target's credentials Secret.
pub const SECRET_ACCESS_KEY: &str = "SECRET_ACCESS_KEY";

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
        .s3
        .as_ref()
        .and_then(|s| s.path.as_deref())
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
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
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
    let Some(s3) = &target.s3 else {
        let Some(volume) = &target.volume else {
            return Err(Problem::new(
                "BackupTargetInvalid",
                format!("{field}: set exactly one of volume or s3"),
            ));
        };
        // The claim's directory in the pod is the target directory itself.
        return Ok(StoreConfig {
            url: format!("pvc://{}/{root}", volume.claim_name),
            s3: None,
            directory: Some(".".into()),
            root,
        });
    };
    let (access_key_id, secret_access_key, ca_bundle) = match secrets {
        Secrets::Mounted { ca_volume } => (
            StoreSecret::File(ACCESS_KEY_ID.into()),
            StoreSecret::File(SECRET_ACCESS_KEY.into()),
            s3.ca_bundle
                .as_ref()
                .map(|ca| StoreSecret::File(format!("../{ca_volume}/{}", ca.key).into())),
        ),
        Secrets::Inline {
            access_key_id,
            secret_access_key,
            ca_bundle,
        } => (
            StoreSecret::Inline(access_key_id),
            StoreSecret::Inline(secret_access_key),
            ca_bundle.map(StoreSecret::Inline),
        ),
    };
    let encryption = s3.server_side_encryption.as_ref().map(|sse| match sse.type_ {
        SseType::Aes256 => Encryption::S3,
        SseType::AwsKms => Encryption::Kms(sse.kms_key_id.clone().unwrap_or_default()),
    });
    Ok(StoreConfig {
        url: format!("s3://{}/{root}", s3.bucket),
        s3: Some(S3Config {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id,
            secret_access_key,
            ca_bundle,
            encryption,
        }),
        directory: None,
        root,
    })
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

/// Reads key `key` of Secret `name`, for a message about `field`.
pub async fn secret_value(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Result<String, Problem>, Error> {
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
    let value = secret
        .data
        .and_then(|mut d| d.remove(key))
        .and_then(|v| String::from_utf8(v.0).ok());
    Ok(value.ok_or_else(|| {
        Problem::new(
            "BackupCredentialsMissing",
            format!("{field}: Secret {name} has no UTF-8 key {key}"),
        )
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
    let Some(s3) = &target.s3 else {
        return Ok(store_config(
            target,
            cluster,
            Secrets::Mounted { ca_volume: "" },
            field,
        ));
    };
    let credentials = format!("{field}.s3.credentialsSecret");
    let access_key_id = match secret_value(
        ctx,
        namespace,
        &s3.credentials_secret,
        ACCESS_KEY_ID,
        &credentials,
    )
    .await?
    {
        Ok(v) => v,
        Err(p) => return Ok(Err(p)),
    };
    let secret_access_key = match secret_value(
        ctx,
        namespace,
        &s3.credentials_secret,
        SECRET_ACCESS_KEY,
        &credentials,
    )
    .await?
    {
        Ok(v) => v,
        Err(p) => return Ok(Err(p)),
    };
    let ca_bundle = match &s3.ca_bundle {
        None => None,
        Some(ca) => {
            match secret_value(ctx, namespace, &ca.name, &ca.key, &format!("{field}.s3.caBundle")).await? {
                Ok(v) => Some(v),
                Err(p) => return Ok(Err(p)),
            }
        }
    };
    Ok(store_config(
        target,
        cluster,
        Secrets::Inline {
            access_key_id,
            secret_access_key,
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
        }
    }

    #[test]
    fn only_the_clusters_own_claim_can_receive_a_backup() {
        let volume = |claim: &str| BackupTarget {
            volume: Some(crate::api::common::VolumeTarget {
                claim_name: claim.into(),
            }),
            s3: None,
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
}
