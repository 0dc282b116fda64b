//! The `PostgresDatabase` controller: a database in a cluster with its owner and extensions,
//! converged over SQL ([`crate::sql::database`]). On delete, the reclaim policy says whether the
//! database is dropped (`Delete`) or kept (`Retain`, the default).

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::{info, instrument};

use super::{
    Context, Error,
    condition::condition,
    postgres_cluster::now_rfc3339,
    sql_target::{cluster_gone, session, with_finalizer, write_status},
};
use crate::{
    api::{
        common::{ConditionStatus, ReclaimPolicy},
        postgres_database::v1::{PostgresDatabase, PostgresDatabaseStatus},
    },
    sql::{
        connections::SqlError,
        database::{self, DatabaseSpec},
    },
};

/// How soon a database whose SQL failed, or whose owner is missing, is tried again.
const RETRY: Duration = Duration::from_secs(15);

/// One reconcile of one database.
#[instrument(skip_all, fields(namespace = %db.namespace().unwrap_or_default(), name = %db.name_any()))]
pub async fn reconcile(db: Arc<PostgresDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        db,
        ctx,
        |db, ctx, namespace| async move { apply(&db, &ctx, &namespace).await },
        |db, ctx, namespace| async move { cleanup(&db, &ctx, &namespace).await },
    )
    .await
}

/// Converges the database; `Err` is a reason and message for the status.
async fn converge(
    db: &PostgresDatabase,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<usize, (&'static str, String)>, SqlError> {
    let spec = DatabaseSpec::of(db);
    let cluster = &db.spec.cluster.name;
    let (_, main) = session(ctx, namespace, cluster, "postgres").await?;
    let (state, owner_exists) = database::read(&main, &spec).await?;
    if !owner_exists {
        return Ok(Err((
            "OwnerMissing",
            format!(
                "spec.owner: role {} does not exist in the cluster; create it with a PostgresUser",
                spec.owner
            ),
        )));
    }
    if let Some(mismatch) = state
        .as_ref()
        .and_then(|s| database::immutable_mismatch(&spec, s))
    {
        return Ok(Err(("Immutable", mismatch)));
    }
    let mut statements = database::plan(&spec, state.as_ref());
    for statement in &statements {
        main.write(statement).await?;
    }
    if !spec.extensions.is_empty() {
        let (_, inside) = session(ctx, namespace, cluster, &spec.name).await?;
        let have = database::read_extensions(&inside).await?;
        let more = database::plan_extensions(&spec, &have);
        for statement in &more {
            inside.write(statement).await?;
        }
        statements.extend(more);
    }
    Ok(Ok(statements.len()))
}

async fn apply(db: &PostgresDatabase, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = database::database_name(db);
    let (status, reason, message, requeue) = match converge(db, ctx, namespace).await {
        Ok(Ok(changes)) => {
            if changes > 0 {
                info!(database = %name, statements = changes, "database converged");
            }
            (
                ConditionStatus::True,
                "Reconciled",
                format!("database {name} is as specified"),
                ctx.resync,
            )
        }
        Ok(Err((reason, message))) => (ConditionStatus::False, reason, message, RETRY.min(ctx.resync)),
        Err(e) => {
            let reason = match e {
                SqlError::Statement { .. } => "SqlFailed",
                _ => "ClusterUnreachable",
            };
            (
                ConditionStatus::False,
                reason,
                e.to_string(),
                RETRY.min(ctx.resync),
            )
        }
    };
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = db.metadata.generation;
    let status = PostgresDatabaseStatus {
        conditions: Some(vec![condition(
            &previous,
            generation,
            &now_rfc3339(),
            "Ready",
            status,
            reason,
            message,
        )]),
        observed_generation: generation,
    };
    write_status(ctx, db, db.status.as_ref(), &status).await?;
    Ok(Action::requeue(requeue))
}

async fn cleanup(db: &PostgresDatabase, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    // Absent means Retain: a database holds user data.
    if db.spec.reclaim_policy != Some(ReclaimPolicy::Delete) {
        info!("reclaim policy Retain: the database stays");
        return Ok(Action::await_change());
    }
    let cluster = &db.spec.cluster.name;
    if cluster_gone(ctx, namespace, cluster).await? {
        return Ok(Action::await_change());
    }
    let name = database::database_name(db);
    let (endpoint, main) = session(ctx, namespace, cluster, "postgres").await?;
    ctx.connections.forget(&endpoint, &name);
    database::drop_database(&main, &name).await?;
    info!(database = %name, "database dropped");
    Ok(Action::await_change())
}
