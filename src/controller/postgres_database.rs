//! The `PostgresDatabase` controller: a database in a cluster with its owner and extensions,
//! converged over SQL ([`crate::sql::database`]). observe (the database, its owner, its
//! extensions) → build (the statements that close the gap, pure) → apply (send them) → status
//! ([`desired_status`], pure). On delete, the reclaim policy says whether the database is dropped
//! (`Delete`) or kept (`Retain`, the default).

use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};
use tracing::{info, instrument};

use super::{
    Context, Error, Problem,
    condition::{condition, now_rfc3339, reason_when},
    postgres_user::FINALIZER,
    runtime::{Happened, record, record_problem, with_finalizer, write_status},
    sql_target::{cluster_gone, session},
};
use crate::{
    api::{
        common::{ConditionStatus, ReclaimPolicy},
        postgres_database::v1::{PostgresDatabase, PostgresDatabaseStatus},
    },
    facts::cluster::MAINTENANCE_DATABASE,
    sql::database::{self, DatabaseSpec},
};

/// One reconcile of one database.
#[instrument(skip_all, fields(namespace = %db.namespace().unwrap_or_default(), name = %db.name_any()))]
pub async fn reconcile(db: Arc<PostgresDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        FINALIZER,
        db,
        ctx,
        |db, ctx, namespace| async move { apply(&db, &ctx, &namespace).await },
        |db, ctx, namespace| async move { cleanup(&db, &ctx, &namespace).await },
    )
    .await
}

/// What converging the database did.
struct Converged {
    created: bool,
    statements: usize,
}

/// Observes the database, plans what closes the gap and sends it.
async fn converge(db: &PostgresDatabase, ctx: &Context, namespace: &str) -> Result<Converged, Error> {
    let spec = DatabaseSpec::of(db);
    let cluster = &db.spec.cluster.name;
    let (_, main) = session(ctx, namespace, cluster, MAINTENANCE_DATABASE).await?;
    let (state, owner_exists) = database::read(&main, &spec).await?;
    if !owner_exists {
        return Err(Error::Reported(Problem::new(
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
        return Err(Error::Reported(Problem::new("Immutable", mismatch)));
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
    Ok(Converged {
        created: state.is_none(),
        statements: statements.len(),
    })
}

/// The status `db` should have: Ready, or the problem that keeps it from being so.
pub fn desired_status(db: &PostgresDatabase, problem: Option<&Problem>, now: &str) -> PostgresDatabaseStatus {
    let name = database::database_name(db);
    let (status, reason, message) = match problem {
        None => (
            ConditionStatus::True,
            "Reconciled".into(),
            format!("database {name} is as specified"),
        ),
        Some(p) => (ConditionStatus::False, p.reason.clone(), p.message.clone()),
    };
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = db.metadata.generation;
    PostgresDatabaseStatus {
        conditions: Some(vec![condition(
            &previous, generation, now, "Ready", status, &reason, message,
        )]),
        observed_generation: generation,
    }
}

async fn apply(db: &PostgresDatabase, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = database::database_name(db);
    let outcome = converge(db, ctx, namespace).await;
    let problem = outcome.as_ref().err().map(Error::problem);
    let status = desired_status(db, problem.as_ref(), &now_rfc3339());
    write_status(ctx, db, db.status.as_ref(), &status).await?;
    match outcome {
        Ok(Converged { statements: 0, .. }) => Ok(Action::requeue(ctx.resync)),
        Ok(Converged { created, statements }) => {
            info!(database = %name, statements, "database converged");
            let spec_unchanged =
                db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation;
            let happened = if created {
                Happened::Created(format!("created database {name}"))
            } else if spec_unchanged {
                Happened::DriftRepaired(format!(
                    "database {name} was changed outside Tusk; put back as the spec says"
                ))
            } else {
                Happened::Changed(format!("updated database {name}"))
            };
            record(ctx, db, happened).await;
            Ok(Action::requeue(ctx.resync))
        }
        // The status says what is wrong; the one backoff decides when to look again.
        Err(e) => {
            let conditions = db.status.as_ref().and_then(|s| s.conditions.as_deref());
            let told = reason_when(conditions, "Ready", ConditionStatus::False);
            record_problem(ctx, db, told, &e.problem()).await;
            Err(e)
        }
    }
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
    let (endpoint, main) = session(ctx, namespace, cluster, MAINTENANCE_DATABASE).await?;
    ctx.connections.forget(&endpoint, &name);
    database::drop_database(&main, &name).await?;
    info!(database = %name, "database dropped");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ready_or_the_problem() {
        let db: PostgresDatabase = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresDatabase",
            "metadata": {"name": "shop", "namespace": "apps", "generation": 3},
            "spec": {"cluster": {"name": "db"}, "owner": "app"},
        }))
        .unwrap();
        let ok = desired_status(&db, None, "t");
        let ready = &ok.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("Reconciled", "database shop is as specified")
        );
        assert_eq!(ok.observed_generation, Some(3));
        let missing = Problem::new(
            "OwnerMissing",
            "spec.owner: role app does not exist in the cluster",
        );
        let failed = desired_status(&db, Some(&missing), "t");
        let ready = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "OwnerMissing")
        );
    }
}
