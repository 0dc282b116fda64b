//! The `PostgresCluster` controller: read, build, apply, status.

pub mod build;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, instrument};

use self::{
    build::{CLUSTER_LABEL, ROLE_LABEL, pod_name, superuser_secret_name},
    status::{Observed, Problem, desired_status},
};
use super::{Context, Error, apply::ensure};
use crate::api::postgres_cluster::v1::PostgresCluster;

/// One reconcile of one cluster.
#[instrument(skip_all, fields(namespace = %cluster.namespace().unwrap_or_default(), name = %cluster.name_any()))]
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or(Error::NotNamespaced)?;
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children; the StatefulSet's PVC
        // retention policy keeps or deletes the volumes.
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let mut observed = Observed::default();
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &namespace);

    if cluster.spec.paused == Some(true) {
        observed.primary = cluster.status.as_ref().and_then(|s| s.current_primary.clone());
    } else {
        match apply_children(&cluster, &ctx, &namespace).await {
            Ok(primary) => {
                observed.primary = primary;
                observed.binding = Some(superuser_secret_name(&name));
            }
            Err(Error::InvalidSecret { secret }) => {
                // Only the user can fix this, so there is no fast retry. The Secret may be the
                // user's own (not labelled as Tusk's, so not watched): look again at resync.
                observed.problem = Some(Problem {
                    reason: "InvalidSecret".to_owned(),
                    message: format!(
                        "Secret {secret}: data.password is not UTF-8; set a UTF-8 password, or delete \
                         the Secret to have a new one made"
                    ),
                });
            }
            Err(e) => return Err(e),
        }
    }
    observed.statefulset = statefulsets
        .get_opt(&name)
        .await
        .map_err(Error::kube("reading the StatefulSet"))?;

    // Status, written only when it changed.
    let now = now_rfc3339();
    let status = desired_status(&cluster, &observed, &now);
    if cluster.status.as_ref() != Some(&status) {
        Api::<PostgresCluster>::namespaced(client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map_err(Error::kube("writing the status"))?;
        info!(ready = ?status.ready_instances, "status updated");
    }
    Ok(Action::requeue(ctx.resync))
}

/// Reads the superuser password, builds every child and applies what differs; returns the
/// primary's pod once it exists.
async fn apply_children(
    cluster: &PostgresCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let name = cluster.name_any();
    let client = &ctx.client;
    // Read: the one value Tusk keeps from an earlier reconcile is the superuser password.
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let password = match secrets
        .get_opt(&superuser_secret_name(&name))
        .await
        .map_err(Error::kube("reading the superuser Secret"))?
        .and_then(|s| s.data?.remove("password"))
    {
        Some(existing) => String::from_utf8(existing.0).map_err(|_| Error::InvalidSecret {
            secret: superuser_secret_name(&name),
        })?,
        None => super::password::generate(),
    };
    // Build, then apply.
    let children = build::children(cluster, &password, &ctx.config);
    ensure(client, &children.superuser)
        .await
        .map_err(Error::kube("applying the superuser Secret"))?;
    ensure(client, &children.config)
        .await
        .map_err(Error::kube("applying the ConfigMap"))?;
    ensure(client, &children.service_account)
        .await
        .map_err(Error::kube("applying the ServiceAccount"))?;
    for service in &children.services {
        ensure(client, service)
            .await
            .map_err(Error::kube("applying a Service"))?;
    }
    ensure(client, &children.pdb)
        .await
        .map_err(Error::kube("applying the PodDisruptionBudget"))?;
    if let Some((user, database)) = &children.bootstrap {
        ensure(client, user)
            .await
            .map_err(Error::kube("applying the bootstrap PostgresUser"))?;
        ensure(client, database)
            .await
            .map_err(Error::kube("applying the bootstrap PostgresDatabase"))?;
    }
    ensure(client, &children.statefulset)
        .await
        .map_err(Error::kube("applying the StatefulSet"))?;
    label_roles(ctx, namespace, &name).await
}

/// Labels pod 0 `primary` and the others `replica`, so the `-rw` and `-ro` Services find them.
/// Returns the primary's name once its pod exists. (Failover, which moves the role, comes with
/// the data plane.)
async fn label_roles(ctx: &Context, namespace: &str, cluster: &str) -> Result<Option<String>, Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let primary = pod_name(cluster, 0);
    let list = pods
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}")))
        .await
        .map_err(Error::kube("listing the pods"))?;
    let mut found = None;
    for pod in list.items {
        let pod_name = pod.name_any();
        let role = if pod_name == primary { "primary" } else { "replica" };
        if pod_name == primary {
            found = Some(pod_name.clone());
        }
        if pod.labels().get(ROLE_LABEL).map(String::as_str) != Some(role) {
            pods.patch(
                &pod_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {ROLE_LABEL: role}}})),
            )
            .await
            .map_err(Error::kube("labelling a pod's role"))?;
        }
    }
    Ok(found)
}

/// The current time as RFC 3339 with seconds, as conditions carry it.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
