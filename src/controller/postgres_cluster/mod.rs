//! The `PostgresCluster` controller: observe → build → apply → status.
//!
//! - *observe* reads the one value Tusk keeps (the superuser password), the StatefulSet and the
//!   pods;
//! - *build* ([`build`]) makes every child from the spec, pure;
//! - *apply* sends a server-side apply only for a child that differs, and labels pod roles;
//! - *status* ([`status::desired_status`], pure) is written only when it changed.

pub mod build;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, instrument};

use self::{
    build::Children,
    status::{Observed, desired_status},
};
use super::{
    Context, Error, Problem,
    apply::{Outcome, ensure},
    condition::reason_when,
    runtime::{Happened, record, record_problem, write_status},
};
use crate::{
    api::{common::ConditionStatus, postgres_cluster::v1::PostgresCluster},
    facts::cluster::{CLUSTER_LABEL, Names, PASSWORD_KEY, ROLE_LABEL, Role},
};

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
    let mut observed = Observed::default();
    if cluster.spec.paused == Some(true) {
        observed.primary = cluster.status.as_ref().and_then(|s| s.current_primary.clone());
    } else {
        // Observe, build, apply.
        match superuser_password(&ctx, &namespace, &name).await? {
            Ok(password) => {
                let children = build::children(&cluster, &password, &ctx.config);
                apply_children(&cluster, &ctx, &children).await?;
                observed.primary = label_roles(&ctx, &namespace, &name).await?;
                observed.binding = Some(Names(&name).superuser_secret());
            }
            // Only the user can fix this, so there is no fast retry. The Secret may be the
            // user's own (not labelled as Tusk's, so not watched): look again at resync.
            Err(problem) => observed.problem = Some(problem),
        }
    }
    observed.statefulset = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(Error::kube("reading the StatefulSet"))?;

    // Status, written only when it changed.
    let status = desired_status(&cluster, &observed, &super::condition::now_rfc3339());
    if write_status(&ctx, cluster.as_ref(), cluster.status.as_ref(), &status).await? {
        info!(ready = ?status.ready_instances, "status updated");
    }
    if let Some(problem) = &observed.problem {
        let conditions = cluster.status.as_ref().and_then(|s| s.conditions.as_deref());
        let told = reason_when(conditions, "Degraded", ConditionStatus::True);
        record_problem(&ctx, cluster.as_ref(), told, problem).await;
    }
    Ok(Action::requeue(ctx.resync))
}

/// The superuser's password: the one in the Secret when it has one, a new one otherwise. A
/// password the instance manager would refuse is a problem for the status, never a pod that
/// crash-loops.
async fn superuser_password(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Result<String, Problem>, Error> {
    let secret = Names(cluster).superuser_secret();
    let existing = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&secret)
        .await
        .map_err(Error::kube("reading the superuser Secret"))?
        .and_then(|s| s.data?.remove(PASSWORD_KEY));
    let Some(existing) = existing else {
        return Ok(Ok(crate::password::generate()));
    };
    let Ok(password) = String::from_utf8(existing.0) else {
        return Ok(Err(Problem::new(
            "InvalidSecret",
            format!(
                "Secret {secret}: data.{PASSWORD_KEY} is not UTF-8; set a UTF-8 password, or delete the \
                 Secret to have a new one made"
            ),
        )));
    };
    if let Err(broken) = crate::password::check(&password) {
        return Ok(Err(Problem::new(
            "InvalidSecret",
            format!(
                "Secret {secret}: data.{PASSWORD_KEY} {broken}; set such a password, or delete the Secret \
                 to have a new one made"
            ),
        )));
    }
    Ok(Ok(password))
}

/// Applies every child that differs from what the cluster wants, and tells the user what changed.
async fn apply_children(cluster: &PostgresCluster, ctx: &Context, children: &Children) -> Result<(), Error> {
    apply(cluster, ctx, &children.superuser, "the superuser Secret").await?;
    apply(cluster, ctx, &children.config, "the ConfigMap").await?;
    apply(cluster, ctx, &children.service_account, "the ServiceAccount").await?;
    for service in &children.services {
        apply(cluster, ctx, service, "a Service").await?;
    }
    apply(cluster, ctx, &children.pdb, "the PodDisruptionBudget").await?;
    if let Some((user, database)) = &children.bootstrap {
        apply(cluster, ctx, user, "the bootstrap PostgresUser").await?;
        apply(cluster, ctx, database, "the bootstrap PostgresDatabase").await?;
    }
    apply(cluster, ctx, &children.statefulset, "the StatefulSet").await
}

/// Applies one child; a create or a change is an Event on the cluster. A change while the spec is
/// the one last reconciled means someone else changed the child: drift, repaired.
async fn apply<K>(
    cluster: &PostgresCluster,
    ctx: &Context,
    child: &K,
    what: &'static str,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let outcome = ensure(&ctx.client, child)
        .await
        .map_err(|source| Error::Kube { step: what, source })?;
    let child_name = format!(
        "{} {}",
        K::kind(&()),
        child.meta().name.as_deref().unwrap_or_default()
    );
    let spec_unchanged =
        cluster.status.as_ref().and_then(|s| s.observed_generation) == cluster.metadata.generation;
    let happened = match outcome {
        Outcome::Unchanged => return Ok(()),
        Outcome::Created => Happened::Created(format!("created {child_name}")),
        Outcome::Applied if spec_unchanged => Happened::DriftRepaired(format!(
            "{child_name} was changed outside Tusk; put back as the spec says"
        )),
        Outcome::Applied => Happened::Changed(format!("updated {child_name} to the new spec")),
    };
    record(ctx, cluster, happened).await;
    Ok(())
}

/// Labels pod 0 `primary` and the others `replica`, so the `-rw` and `-ro` Services find them.
/// Returns the primary's name once its pod exists. (Failover, which moves the role, is to come.)
async fn label_roles(ctx: &Context, namespace: &str, cluster: &str) -> Result<Option<String>, Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let primary = Names(cluster).first_primary();
    let list = pods
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}")))
        .await
        .map_err(Error::kube("listing the pods"))?;
    let mut found = None;
    for pod in list.items {
        let pod_name = pod.name_any();
        let role = if pod_name == primary {
            Role::Primary
        } else {
            Role::Replica
        };
        if role == Role::Primary {
            found = Some(pod_name.clone());
        }
        if pod.labels().get(ROLE_LABEL).map(String::as_str) != Some(role.label()) {
            pods.patch(
                &pod_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {ROLE_LABEL: role.label()}}})),
            )
            .await
            .map_err(Error::kube("labelling a pod's role"))?;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    //! The children of a set of clusters, against `build/testdata/children.json`: what the
    //! operator builds is what it built before, to the byte. A changed pod template restarts every
    //! database on an operator upgrade, so a difference here must be on purpose. To accept one,
    //! run the test with `TUSK_BLESS=1` and review the diff of the file.
    use serde_json::{Value, json};

    use super::build;

    fn specs() -> Vec<(Value, Option<i64>)> {
        let uid = Some(999);
        vec![
            (json!({}), uid),
            (
                json!({"instances": 3, "postgres": {"version": 16, "parameters": {"work_mem": "8MB", "x": "it's \\ odd"}}}),
                uid,
            ),
            (
                json!({"postgres": {"version": 17, "image": "registry.example/pg:17.2"}}),
                None,
            ),
            (
                json!({"storage": {"data": {"size": "5Gi", "storageClassName": "fast"}, "wal": {"size": "1Gi"}, "reclaimPolicy": "Delete"}}),
                uid,
            ),
            (
                json!({"storage": {"data": {"size": "5Gi"}, "reclaimPolicy": "Retain"}}),
                uid,
            ),
            (
                json!({"bootstrap": {"initdb": {"database": "app", "owner": "alice", "encoding": "LATIN1", "locale": "C", "dataChecksums": false}}}),
                uid,
            ),
            (
                json!({"bootstrap": {"initdb": {"database": "app", "dataChecksums": true}}}),
                uid,
            ),
            (
                json!({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}}),
                uid,
            ),
        ]
    }

    fn built() -> Value {
        let cases = specs().into_iter().map(|(extra, uid)| {
            let cluster = build::tests::cluster(build::tests::spec(extra.clone()));
            let config = build::BuildConfig {
                postgres_uid: uid,
                operator_image: "ghcr.io/tusk-operator/tusk-operator:1.0.0".into(),
                ..Default::default()
            };
            let c = build::children(&cluster, "pw", &config);
            json!({
                "spec": extra,
                "postgresUid": uid,
                "children": [
                    c.superuser, c.config, c.service_account, c.statefulset,
                    c.services[0], c.services[1], c.services[2], c.pdb,
                    c.bootstrap.as_ref().map(|b| &b.0), c.bootstrap.as_ref().map(|b| &b.1),
                ],
            })
        });
        Value::Array(cases.collect())
    }

    #[test]
    fn the_children_are_the_ones_built_before() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/controller/postgres_cluster/build/testdata/children.json");
        let now = built();
        if std::env::var_os("TUSK_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        }
        let before: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (now, before) in now.as_array().unwrap().iter().zip(before.as_array().unwrap()) {
            assert_eq!(now, before, "the children of spec {} changed", now["spec"]);
        }
        assert_eq!(now.as_array().unwrap().len(), before.as_array().unwrap().len());
    }
}
