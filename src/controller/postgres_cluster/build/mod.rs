//! The desired children of a `PostgresCluster`: pure functions from the cluster (and the one
//! value read from the cluster, the superuser password) to typed Kubernetes objects, one file per
//! child kind, each unit-tested with plain values.
//!
//! The workload is a StatefulSet, not Pods plus PVCs managed one by one. A StatefulSet gives Tusk
//! stable pod names (`<cluster>-0` is the first primary), one PVC per pod from a template, the PVC
//! retention policy that `storage.reclaimPolicy` maps onto (`persistentVolumeClaimRetentionPolicy`,
//! GA since Kubernetes 1.32), ordered start-up, and rolling updates driven by the pod template
//! hash, all from the kube-controller-manager. Pods plus PVCs (CloudNativePG's choice) would let
//! Tusk pick which pod to restart first during a switchover; when failover arrives, the rollout
//! can switch to `updateStrategy: OnDelete` and keep the StatefulSet.

mod access;
mod bootstrap;
pub mod certificate;
mod config_map;
mod network_policy;
mod pdb;
mod secret;
mod service;
mod service_account;
mod statefulset;
mod tls;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::Resource;

pub use self::{
    access::{desired_role, desired_role_binding},
    bootstrap::desired_bootstrap,
    config_map::{config_hash, desired_config},
    pdb::desired_pdb,
    secret::desired_superuser_secret,
    service::desired_services,
    service_account::desired_service_account,
    statefulset::{desired_statefulset, postgres_image},
    tls::{TlsMaterial, desired_ca_secret, desired_tls_secret, tls_mode},
};
use crate::{
    api::{
        postgres_cluster::v1::PostgresCluster, postgres_database::v1::PostgresDatabase,
        postgres_user::v1::PostgresUser,
    },
    controller::backup_target::ResolvedRecovery,
    facts::{
        cluster::{DEFAULT_POSTGRES_UID, labels},
        operator,
    },
};

/// What the builders need besides the cluster.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The image an init container copies the instance manager from
    /// ([`operator::DEFAULT_INSTANCE_MANAGER_IMAGE`] unless the operator is told another).
    pub instance_manager_image: String,
    /// The PostgreSQL image of each major, for clusters that name none: `--postgres-images`,
    /// then the built-in catalog ([`crate::facts::postgres_images::BUILT_IN`]) unless
    /// [`Self::postgres_image`] is given.
    pub postgres_images: std::collections::BTreeMap<i32, String>,
    /// `--postgres-image`: the image of the majors [`Self::postgres_images`] does not name, with
    /// `{major}` replaced by the version.
    pub postgres_image: Option<String>,
    /// The user (and group, and `fsGroup`) PostgreSQL pods run as: the image's `postgres` user.
    /// `None` leaves it to the platform, as OpenShift's `restricted-v2` SCC assigns one.
    pub postgres_uid: Option<i64>,
    /// The proxy variables to set in PostgreSQL pods, in [`operator::env::PROXY`]'s order: the
    /// ones the operator runs with. A change of proxy is a change of the pod template, rolled out
    /// like any other.
    pub proxy: Vec<(String, String)>,
    /// How long the certificates the operator issues (server, replication) are valid; each is
    /// renewed once less than a third of that is left.
    pub certificate_validity: k8s_openapi::jiff::SignedDuration,
    /// The operator's own namespace: a cluster's NetworkPolicy admits the operator's pods there.
    pub operator_namespace: String,
}

impl BuildConfig {
    /// The default images from `--postgres-images` (`flag`) and `--postgres-image` (`template`):
    /// the flag's majors, then the template if given, else the built-in catalog's. Errors name
    /// the flag and say what it takes.
    pub fn postgres_images_from(
        flag: Option<&str>,
        template: Option<String>,
    ) -> Result<(std::collections::BTreeMap<i32, String>, Option<String>), String> {
        let mut images = crate::facts::postgres_images::parse_flag(flag.unwrap_or_default())
            .map_err(|e| format!("--postgres-images ({}): {e}", operator::env::POSTGRES_IMAGES))?;
        if template.is_none() {
            for (major, image) in crate::facts::postgres_images::BUILT_IN.references() {
                images.entry(major).or_insert(image);
            }
        }
        Ok((images, template))
    }

    /// The proxy variables among `lookup`'s (the operator's environment) that are set and not
    /// empty.
    pub fn proxy_from(lookup: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        operator::env::PROXY
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), lookup(name).filter(|v| !v.is_empty())?)))
            .collect()
    }
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            instance_manager_image: operator::DEFAULT_INSTANCE_MANAGER_IMAGE.to_owned(),
            postgres_images: crate::facts::postgres_images::BUILT_IN.references(),
            postgres_image: None,
            postgres_uid: Some(DEFAULT_POSTGRES_UID),
            proxy: Vec::new(),
            certificate_validity: crate::pki::DEFAULT_CERT_VALIDITY,
            operator_namespace: operator::NAMESPACE.to_owned(),
        }
    }
}

/// Every child a cluster should have.
#[derive(Clone, Debug)]
pub struct Children {
    /// The superuser Secret.
    pub superuser: Secret,
    /// `<cluster>-ca` and `<cluster>-tls`, unless TLS is disabled.
    pub tls: Option<(Secret, Secret)>,
    /// The PostgreSQL configuration.
    pub config: ConfigMap,
    /// The account the pods run as.
    pub service_account: ServiceAccount,
    /// What the pods may do with the primary's Lease, and the grant to their account.
    pub access: (Role, RoleBinding),
    /// The workload.
    pub statefulset: StatefulSet,
    /// `-rw`, `-ro` and the headless `-pods`.
    pub services: [Service; 3],
    /// Keeps voluntary disruptions to one pod at a time.
    pub pdb: PodDisruptionBudget,
    /// The NetworkPolicy `spec.networkPolicy` asks for, if any.
    pub network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
    /// The application role and database `spec.bootstrap.initdb` asks for, as a `PostgresUser`
    /// and a `PostgresDatabase` the SQL controllers converge like any other.
    pub bootstrap: Option<(PostgresUser, PostgresDatabase)>,
}

/// Builds every child of `cluster`; `password` is the superuser's password.
/// `recovery` is what a restored cluster restores from, resolved from its `spec.bootstrap`;
/// `tls` the certificates it serves, unless TLS is disabled.
pub fn children(
    cluster: &PostgresCluster,
    password: &str,
    config: &BuildConfig,
    recovery: Option<&ResolvedRecovery>,
    tls: Option<&TlsMaterial>,
    tls_profile: &crate::tls_profile::Profile,
) -> Children {
    let mut configmap = desired_config(cluster, recovery);
    configmap.data.get_or_insert_default().insert(
        crate::facts::cluster::TLS_PROFILE_FILE.to_owned(),
        tls_profile.to_json(),
    );
    let hash = config_hash(&configmap);
    Children {
        superuser: desired_superuser_secret(cluster, password, tls.map(|m| m.server_ca.as_str())),
        tls: tls.map(|m| (desired_ca_secret(cluster, m), desired_tls_secret(cluster, m))),
        statefulset: desired_statefulset(cluster, config, &hash, recovery),
        config: configmap,
        service_account: desired_service_account(cluster),
        access: (desired_role(cluster), desired_role_binding(cluster)),
        services: desired_services(cluster),
        pdb: desired_pdb(cluster),
        network_policy: network_policy::desired_network_policy(cluster, &config.operator_namespace),
        bootstrap: desired_bootstrap(cluster),
    }
}

fn name_of(cluster: &PostgresCluster) -> &str {
    cluster
        .metadata
        .name
        .as_deref()
        .expect("a stored object has a name")
}

/// The metadata of the child `name`: in the cluster's namespace, with its labels, owned by it.
fn meta(cluster: &PostgresCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(labels(name_of(cluster))),
        owner_references: Some(vec![
            cluster
                .controller_owner_ref(&())
                .expect("a stored object has a name and uid"),
        ]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A stored cluster with `spec`.
    pub fn cluster(spec: Value) -> PostgresCluster {
        serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    /// The smallest valid spec, with `extra` merged in.
    pub fn spec(extra: Value) -> Value {
        let mut spec = json!({"postgres": {"version": 17}, "storage": {"data": {"size": "1Gi"}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    }

    /// The children of `c` with the default build settings, no TLS material and Intermediate.
    fn defaults(c: &PostgresCluster) -> Children {
        children(
            c,
            "pw",
            &BuildConfig::default(),
            None,
            None,
            &crate::tls_profile::Profile::intermediate(),
        )
    }

    #[test]
    fn every_child_is_labelled_and_owned_by_the_cluster() {
        let c = cluster(spec(json!({"bootstrap": {"initdb": {"database": "app"}}})));
        let children = defaults(&c);
        let (user, database) = children.bootstrap.clone().unwrap();
        let metas = [
            &children.superuser.metadata,
            &children.config.metadata,
            &children.service_account.metadata,
            &children.access.0.metadata,
            &children.access.1.metadata,
            &children.statefulset.metadata,
            &children.services[0].metadata,
            &children.services[1].metadata,
            &children.services[2].metadata,
            &children.pdb.metadata,
            &user.metadata,
            &database.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("shop"), "{meta:?}");
            assert_eq!(meta.labels.as_ref(), Some(&labels("db")));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
        }
    }

    #[test]
    fn every_child_kind_is_in_the_registry() {
        use crate::facts::kinds::CLUSTER_CHILDREN;
        let c = cluster(spec(json!({"bootstrap": {"initdb": {"database": "app"}}})));
        let children = defaults(&c);
        let (user, database) = children.bootstrap.unwrap();
        let kinds = [
            serde_json::to_value(&children.superuser).unwrap()["kind"].clone(),
            serde_json::to_value(&children.config).unwrap()["kind"].clone(),
            serde_json::to_value(&children.service_account).unwrap()["kind"].clone(),
            serde_json::to_value(&children.access.0).unwrap()["kind"].clone(),
            serde_json::to_value(&children.access.1).unwrap()["kind"].clone(),
            serde_json::to_value(&children.statefulset).unwrap()["kind"].clone(),
            serde_json::to_value(&children.services[0]).unwrap()["kind"].clone(),
            serde_json::to_value(&children.pdb).unwrap()["kind"].clone(),
            serde_json::to_value(&user).unwrap()["kind"].clone(),
            serde_json::to_value(&database).unwrap()["kind"].clone(),
        ];
        for kind in kinds {
            assert!(
                CLUSTER_CHILDREN.iter().any(|k| k.kind == kind),
                "{kind} is built but not in facts::kinds::CLUSTER_CHILDREN"
            );
        }
    }
}
