//! The `PostgresUser` controller: a role in a cluster, converged over SQL, and a servicebinding.io
//! Secret for applications.
//!
//! Each reconcile reads the password (from the user's Secret, or the one Tusk generated into the
//! binding Secret), reads the role in one query, and sends only the statements that close the
//! gap ([`crate::sql::role::plan`]): nothing when the role is as specified. A role changed by
//! hand is brought back; a password changed in its Secret is set on the role. On delete, the
//! reclaim policy says whether the role is dropped (`Delete`, the default) or kept.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::controller::Action};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

use super::{
    Context, Error,
    apply::ensure,
    condition::condition,
    postgres_cluster::now_rfc3339,
    sql_target::{
        BindingData, binding_entries, binding_secret, cluster_gone, controlled_by, session, with_finalizer,
        write_status,
    },
};
use crate::{
    api::{
        common::{Binding, ConditionStatus, ReclaimPolicy},
        postgres_user::v1::{PostgresUser, PostgresUserStatus},
    },
    sql::{
        connections::SqlError,
        role::{self, RoleSpec},
        scram,
    },
};

/// How soon a user whose SQL failed is tried again.
const RETRY: Duration = Duration::from_secs(15);

/// The binding Secret's name.
pub fn binding_name(user: &PostgresUser) -> String {
    format!("{}-binding", user.name_any())
}

/// One reconcile of one user.
#[instrument(skip_all, fields(namespace = %user.namespace().unwrap_or_default(), name = %user.name_any()))]
pub async fn reconcile(user: Arc<PostgresUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        user,
        ctx,
        |user, ctx, namespace| async move { apply(&user, &ctx, &namespace).await },
        |user, ctx, namespace| async move { cleanup(&user, &ctx, &namespace).await },
    )
    .await
}

/// Why the role is not as specified, for the status.
struct Problem {
    reason: &'static str,
    message: String,
}

/// The password, and the `resourceVersion` of the Secret it came from.
async fn password(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<(String, Option<String>), Problem>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(source) = &user.spec.password_secret {
        let key = source.key.as_deref().unwrap_or("password");
        let Some(secret) = secrets
            .get_opt(&source.name)
            .await
            .map_err(Error::kube("reading the password Secret"))?
        else {
            return Ok(Err(Problem {
                reason: "PasswordSecretMissing",
                message: format!("spec.passwordSecret: Secret {} does not exist", source.name),
            }));
        };
        let version = secret.resource_version();
        return Ok(
            match secret
                .data
                .and_then(|mut d| d.remove(key))
                .map(|v| String::from_utf8(v.0))
            {
                Some(Ok(p)) if !p.is_empty() => Ok((p, version)),
                _ => Err(Problem {
                    reason: "PasswordSecretInvalid",
                    message: format!(
                        "spec.passwordSecret: Secret {} has no key {key} with a non-empty UTF-8 password",
                        source.name
                    ),
                }),
            },
        );
    }
    let name = binding_name(user);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(Error::kube("reading the binding Secret"))?;
    match existing {
        Some(secret) if !controlled_by(&secret, user) => Ok(Err(Problem {
            reason: "BindingSecretConflict",
            message: format!(
                "Secret {name} exists and is not this PostgresUser's; Tusk leaves it alone: rename or delete it"
            ),
        })),
        Some(secret) => {
            let version = secret.resource_version();
            let kept = secret
                .data
                .and_then(|mut d| d.remove("password"))
                .and_then(|p| String::from_utf8(p.0).ok())
                .filter(|p| !p.is_empty());
            Ok(Ok((kept.unwrap_or_else(super::password::generate), version)))
        }
        None => Ok(Ok((super::password::generate(), None))),
    }
}

fn digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

async fn converge(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
    password: &str,
) -> Result<usize, SqlError> {
    let spec = RoleSpec::of(user);
    let (endpoint, session) = session(ctx, namespace, &user.spec.cluster.name, "postgres").await?;
    let state = role::read(&session, &spec).await?;
    let key = (endpoint, spec.name.clone());
    let stored = state.as_ref().and_then(|s| s.verifier.clone());
    let known = ctx.verified.lock().expect("never poisoned").get(&key).cloned();
    let password_ok = match &stored {
        Some(v) if known.as_ref() == Some(&(v.clone(), digest(password))) => true,
        Some(v) if scram::matches(v, password) => {
            ctx.verified
                .lock()
                .expect("never poisoned")
                .insert(key.clone(), (v.clone(), digest(password)));
            true
        }
        _ => false,
    };
    let verifier = (!password_ok).then(|| scram::make(password));
    let statements = role::plan(&spec, state.as_ref(), verifier.as_deref());
    for statement in &statements {
        session.write(statement).await?;
    }
    if let Some(v) = verifier {
        ctx.verified
            .lock()
            .expect("never poisoned")
            .insert(key, (v, digest(password)));
    }
    Ok(statements.len())
}

async fn apply(user: &PostgresUser, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let role_name = role::role_name(user);
    let cluster = &user.spec.cluster.name;
    let mut binding = None;
    let mut version = None;
    let outcome = match password(user, ctx, namespace).await? {
        Err(problem) => Err(problem),
        Ok((password, source_version)) => match converge(user, ctx, namespace, &password).await {
            Ok(changes) => {
                if changes > 0 {
                    info!(role = %role_name, statements = changes, "role converged");
                }
                let database = user
                    .spec
                    .privileges
                    .iter()
                    .flatten()
                    .next()
                    .map_or("postgres", |p| p.database.as_str());
                let entries = binding_entries(&BindingData {
                    cluster,
                    namespace,
                    username: &role_name,
                    password: &password,
                    database,
                });
                let secret = binding_secret(user, &binding_name(user), cluster, entries);
                ensure(&ctx.client, &secret)
                    .await
                    .map_err(Error::kube("applying the binding Secret"))?;
                binding = Some(binding_name(user));
                version = if user.spec.password_secret.is_some() {
                    source_version
                } else {
                    None
                };
                Ok(())
            }
            Err(e) => Err(Problem {
                reason: match e {
                    SqlError::Endpoint(_) | SqlError::Connect { .. } | SqlError::Password(_) => {
                        "ClusterUnreachable"
                    }
                    SqlError::Statement { .. } => "SqlFailed",
                },
                message: e.to_string(),
            }),
        },
    };
    let previous = user.status.clone().unwrap_or_default();
    let conditions = previous.conditions.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let now = now_rfc3339();
    let (status, reason, message, requeue) = match &outcome {
        Ok(()) => (
            ConditionStatus::True,
            "Reconciled",
            format!("role {role_name} is as specified"),
            ctx.resync,
        ),
        Err(p) => (
            ConditionStatus::False,
            p.reason,
            p.message.clone(),
            RETRY.min(ctx.resync),
        ),
    };
    let status = PostgresUserStatus {
        conditions: Some(vec![condition(
            &conditions,
            generation,
            &now,
            "Ready",
            status,
            reason,
            message,
        )]),
        observed_generation: generation,
        binding: binding.map(|name| Binding { name }).or(previous.binding.clone()),
        role_name: Some(role_name),
        password_secret_version: version.or(if outcome.is_ok() {
            None
        } else {
            previous.password_secret_version.clone()
        }),
    };
    write_status(ctx, user, user.status.as_ref(), &status).await?;
    Ok(Action::requeue(requeue))
}

async fn cleanup(user: &PostgresUser, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    if user.spec.reclaim_policy == Some(ReclaimPolicy::Retain) {
        info!("reclaim policy Retain: the role stays");
        return Ok(Action::await_change());
    }
    let cluster = &user.spec.cluster.name;
    if cluster_gone(ctx, namespace, cluster).await? {
        return Ok(Action::await_change());
    }
    let role_name = role::role_name(user);
    let (endpoint, main) = session(ctx, namespace, cluster, "postgres").await?;
    let mut visited = Vec::new();
    let dropped = role::drop_role(
        &main,
        &role_name,
        |database| async move { session(ctx, namespace, cluster, &database).await.map(|(_, s)| s) },
        &mut visited,
    )
    .await;
    // Connections to other databases are closed again: an idle one would keep users from
    // dropping that database or copying it as a template.
    for database in visited.iter().filter(|d| *d != "postgres") {
        ctx.connections.forget(&endpoint, database);
    }
    dropped?;
    ctx.verified
        .lock()
        .expect("never poisoned")
        .remove(&(endpoint, role_name.clone()));
    info!(role = %role_name, "role dropped");
    Ok(Action::await_change())
}
