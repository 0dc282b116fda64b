//! The `PostgresUser` controller: a role in a cluster, converged over SQL, and a servicebinding.io
//! Secret for applications. observe → build → apply → status:
//!
//! - *observe* reads the password (from the user's Secret, or the one Tusk generated into the
//!   binding Secret) and the role, in one query;
//! - *build* plans only the statements that close the gap ([`crate::sql::role::plan`]) and the
//!   binding Secret;
//! - *apply* sends them (nothing when the role is as specified) and applies the Secret;
//! - *status* ([`desired_status`], pure) is written only when it changed.
//!
//! A role changed by hand is brought back; a password changed in its Secret is set on the role. On
//! delete, the reclaim policy says whether the role is dropped (`Delete`, the default) or kept.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::controller::Action};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

use super::{
    Context, Error, Problem,
    apply::ensure,
    condition::{condition, now_rfc3339, reason_when},
    runtime::{Happened, record, record_problem, with_finalizer, write_status},
    sql_target::{
        BindingData, binding_entries, binding_secret, cluster_gone, controlled_by, server_ca, session,
    },
};
use crate::{
    api::{
        common::{Binding, ConditionStatus, ReclaimPolicy},
        postgres_user::v1::{PostgresUser, PostgresUserStatus},
    },
    controller::postgres_cluster::tls::keyed,
    facts::cluster::{
        CLIENT_CERTIFICATE_GROUP, MAINTENANCE_DATABASE, Names, PASSWORD_KEY,
        binding_secret as binding_secret_name, tls,
    },
    pki::{self, KeyedCert, Leaf},
    sql::{
        connections::SqlError,
        role::{self, RoleSpec},
        scram,
    },
};

/// The finalizer that lets Tusk drop a role or database before its object goes.
pub const FINALIZER: &str = "tusk.dev/sql";

/// The binding Secret's name.
pub fn binding_name(user: &PostgresUser) -> String {
    binding_secret_name(&user.name_any())
}

/// One reconcile of one user.
#[instrument(skip_all, fields(namespace = %user.namespace().unwrap_or_default(), name = %user.name_any()))]
pub async fn reconcile(user: Arc<PostgresUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    with_finalizer(
        FINALIZER,
        user,
        ctx,
        |user, ctx, namespace| async move { apply(&user, &ctx, &namespace).await },
        |user, ctx, namespace| async move { cleanup(&user, &ctx, &namespace).await },
    )
    .await
}

/// The password, and the `resourceVersion` of the user's own Secret it came from (none when
/// Tusk generated it).
struct Password {
    value: String,
    source_version: Option<String>,
    /// The `resourceVersion` of the binding Secret it was kept from: the binding Secret is
    /// applied only over that version, so a password rotated there meanwhile is never
    /// overwritten with the one read before (the apply fails, and the retry reads it again).
    binding_version: Option<String>,
}

/// Observes the password.
async fn password(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Password, Problem>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(source) = &user.spec.password_secret {
        let key = source.key.as_deref().unwrap_or(PASSWORD_KEY);
        let Some(secret) = ctx
            .known
            .read(&secrets, namespace, &source.name)
            .await
            .map_err(Error::kube("reading the password Secret"))?
        else {
            return Ok(Err(Problem::new(
                "PasswordSecretMissing",
                format!("spec.passwordSecret: Secret {} does not exist", source.name),
            )));
        };
        let version = secret.resource_version();
        return Ok(
            match secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8(v.0.clone()))
            {
                Some(Ok(value)) if !value.is_empty() => Ok(Password {
                    value,
                    source_version: version,
                    binding_version: None,
                }),
                _ => Err(Problem::new(
                    "PasswordSecretInvalid",
                    format!(
                        "spec.passwordSecret: Secret {} has no key {key} with a non-empty UTF-8 password",
                        source.name
                    ),
                )),
            },
        );
    }
    let name = binding_name(user);
    let existing = ctx
        .known
        .read(&secrets, namespace, &name)
        .await
        .map_err(Error::kube("reading the binding Secret"))?;
    let generated = |value: String, binding_version: Option<String>| {
        Ok(Ok(Password {
            value,
            source_version: None,
            binding_version,
        }))
    };
    match existing {
        Some(secret) if !controlled_by(&secret, user) => Ok(Err(Problem::new(
            "BindingSecretConflict",
            format!(
                "Secret {name} exists and is not this PostgresUser's; Tusk leaves it alone: rename or delete it"
            ),
        ))),
        Some(secret) => {
            let kept = secret
                .data
                .as_ref()
                .and_then(|d| d.get(PASSWORD_KEY))
                .and_then(|p| String::from_utf8(p.0.clone()).ok())
                .filter(|p| !p.is_empty());
            generated(
                kept.unwrap_or_else(crate::password::generate),
                secret.resource_version(),
            )
        }
        None => generated(crate::password::generate(), None),
    }
}

fn digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

/// What converging the role did.
struct Converged {
    /// The role did not exist.
    created: bool,
    /// Statements sent.
    statements: usize,
}

/// Observes the role, plans the statements that close the gap, and sends them.
async fn converge(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
    password: &str,
) -> Result<Converged, SqlError> {
    let spec = RoleSpec::of(user);
    let (endpoint, session) = session(ctx, namespace, &user.spec.cluster.name, MAINTENANCE_DATABASE).await?;
    let state = role::read(&session, &spec).await?;
    if spec.member_of.contains(CLIENT_CERTIFICATE_GROUP) {
        // The group pg_hba.conf sends to certificate authentication; made once per cluster.
        let exists = session
            .read(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                &[&CLIENT_CERTIFICATE_GROUP],
            )
            .await?
            .first()
            .is_some_and(|r| r.get::<_, bool>(0));
        if !exists {
            session
                .write(&format!("CREATE ROLE {CLIENT_CERTIFICATE_GROUP} NOLOGIN"))
                .await?;
        }
    }
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
    Ok(Converged {
        created: state.is_none(),
        statements: statements.len(),
    })
}

/// What the last reconcile of a user found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The role is as specified; the binding Secret exists; the password came from the user's
    /// Secret at this `resourceVersion`, if it came from there.
    Converged {
        /// `resourceVersion` of the user's password Secret.
        source_version: Option<String>,
    },
    /// The role is not as specified.
    Failed(Problem),
}

/// The status `user` should have after `observed`; `now` is an RFC 3339 time for conditions that
/// change.
pub fn desired_status(user: &PostgresUser, observed: &Observed, now: &str) -> PostgresUserStatus {
    let role_name = role::role_name(user);
    let previous = user.status.clone().unwrap_or_default();
    let conditions = previous.conditions.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let (status, reason, message) = match observed {
        Observed::Converged { .. } => (
            ConditionStatus::True,
            "Reconciled".into(),
            format!("role {role_name} is as specified"),
        ),
        Observed::Failed(p) => (ConditionStatus::False, p.reason.clone(), p.message.clone()),
    };
    let (binding, version) = match observed {
        Observed::Converged { source_version } => (
            Some(Binding {
                name: binding_name(user),
            }),
            source_version.clone(),
        ),
        Observed::Failed(_) => (previous.binding.clone(), previous.password_secret_version.clone()),
    };
    PostgresUserStatus {
        conditions: Some(vec![condition(
            &conditions,
            generation,
            now,
            "Ready",
            status,
            &reason,
            message,
        )]),
        observed_generation: generation,
        binding,
        role_name: Some(role_name),
        password_secret_version: version,
    }
}

async fn apply(user: &PostgresUser, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let (observed, failure) = match observe_and_apply(user, ctx, namespace).await? {
        Ok(source_version) => (Observed::Converged { source_version }, None),
        Err(e) => (Observed::Failed(e.problem()), Some(e)),
    };
    let status = desired_status(user, &observed, &now_rfc3339());
    write_status(ctx, user, user.status.as_ref(), &status).await?;
    match failure {
        // The status says what is wrong; the one backoff decides when to look again.
        Some(e) => {
            let conditions = user.status.as_ref().and_then(|s| s.conditions.as_deref());
            let told = reason_when(conditions, "Ready", ConditionStatus::False);
            record_problem(ctx, user, told, &e.problem()).await;
            Err(e)
        }
        None => Ok(Action::requeue(ctx.resync)),
    }
}

/// Converges the role and applies the binding Secret. `Ok(Err(..))` is a failure for the status
/// (and a retry); `Err` an apiserver failure.
async fn observe_and_apply(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Option<String>, Error>, Error> {
    let role_name = role::role_name(user);
    let cluster = &user.spec.cluster.name;
    let password = match password(user, ctx, namespace).await? {
        Ok(password) => password,
        Err(problem) => return Ok(Err(Error::Reported(problem))),
    };
    let converged = match converge(user, ctx, namespace, &password.value).await {
        Ok(converged) => converged,
        Err(e) => return Ok(Err(Error::Sql(e))),
    };
    if converged.statements > 0 {
        info!(role = %role_name, statements = converged.statements, "role converged");
        let spec_unchanged =
            user.status.as_ref().and_then(|s| s.observed_generation) == user.metadata.generation;
        let happened = if converged.created {
            Happened::Created(format!("created role {role_name}"))
        } else if spec_unchanged
            && password.source_version
                == user
                    .status
                    .as_ref()
                    .and_then(|s| s.password_secret_version.clone())
        {
            Happened::DriftRepaired(format!(
                "role {role_name} was changed outside Tusk; put back as the spec says"
            ))
        } else {
            Happened::Changed(format!("updated role {role_name}"))
        };
        record(ctx, user, happened).await;
    }
    let database = user
        .spec
        .privileges
        .iter()
        .flatten()
        .next()
        .map_or(MAINTENANCE_DATABASE, |p| p.database.as_str());
    let ca = match server_ca(ctx, namespace, cluster).await {
        Ok(ca) => ca,
        Err(e) => return Ok(Err(Error::Sql(e))),
    };
    let client = match (user.spec.client_certificate == Some(true), &ca) {
        (false, _) => None,
        (true, None) => {
            return Ok(Err(Error::Reported(Problem::new(
                "ClientCertificateWithoutTLS",
                format!(
                    "spec.clientCertificate: PostgresCluster {cluster} runs with spec.tls.mode Disabled; \
                     client certificates need TLS: enable it or drop spec.clientCertificate"
                ),
            ))));
        }
        (true, Some(_)) => match client_certificate(user, ctx, namespace, &role_name).await? {
            Ok(cert) => Some(cert),
            Err(problem) => return Ok(Err(Error::Reported(problem))),
        },
    };
    let entries = binding_entries(&BindingData {
        cluster,
        namespace,
        username: &role_name,
        password: &password.value,
        database,
        ca: ca.as_deref(),
        client: client.as_ref(),
    });
    let mut secret = binding_secret(user, &binding_name(user), cluster, entries);
    secret.metadata.resource_version = password.binding_version.clone();
    ensure(&ctx.client, &ctx.known, &secret)
        .await
        .map_err(Error::kube("applying the binding Secret"))?;
    Ok(Ok(password.source_version))
}

/// The role's client certificate: the one in its binding Secret while it is still good (the
/// cluster's CA signs it, for this role, with more than a third of its lifetime left), a new one
/// from the cluster's CA otherwise.
async fn client_certificate(
    user: &PostgresUser,
    ctx: &Context,
    namespace: &str,
    role: &str,
) -> Result<Result<KeyedCert, Problem>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let cluster = &user.spec.cluster.name;
    let ca_secret = ctx
        .known
        .read(&secrets, namespace, &Names(cluster).ca_secret())
        .await
        .map_err(Error::kube("reading the cluster's CA"))?;
    let Some(authority) = keyed(ca_secret.as_deref(), tls::CA, tls::CA_KEY) else {
        return Ok(Err(Problem::new(
            crate::controller::runtime::CLUSTER_UNREACHABLE,
            format!(
                "Secret {} has no CA yet; the cluster's controller makes it",
                Names(cluster).ca_secret()
            ),
        )));
    };
    let binding = ctx
        .known
        .read(&secrets, namespace, &binding_name(user))
        .await
        .map_err(Error::kube("reading the binding Secret"))?;
    let stored = keyed(binding.as_deref(), tls::SERVER_CERT, tls::SERVER_KEY);
    let (cert, why) = pki::keep_or_issue(
        "client certificate",
        stored,
        &authority,
        &Leaf::Client(role.to_owned()),
        k8s_openapi::jiff::Timestamp::now(),
        ctx.config.certificate_validity,
    )
    .map_err(|e| Error::Reported(Problem::new("CertificateNotIssued", e.to_string())))?;
    if let Some(why) = why {
        info!(%role, "issued a client certificate: {why}");
    }
    Ok(Ok(cert))
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
    let (endpoint, main) = session(ctx, namespace, cluster, MAINTENANCE_DATABASE).await?;
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
    for database in visited.iter().filter(|d| *d != MAINTENANCE_DATABASE) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(status: Option<serde_json::Value>) -> PostgresUser {
        let mut u: PostgresUser = serde_json::from_value(json!({
            "apiVersion": "tusk.dev/v1", "kind": "PostgresUser",
            "metadata": {"name": "app", "namespace": "shop", "uid": "u", "generation": 2},
            "spec": {"cluster": {"name": "db"}, "passwordSecret": {"name": "mine"}},
        }))
        .unwrap();
        u.status = status.map(|s| serde_json::from_value(s).unwrap());
        u
    }

    #[test]
    fn converged_names_the_binding_and_the_secrets_version() {
        let s = desired_status(
            &user(None),
            &Observed::Converged {
                source_version: Some("42".into()),
            },
            "t",
        );
        let ready = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::True, "Reconciled")
        );
        assert_eq!(s.binding.unwrap().name, "app-binding");
        assert_eq!(s.password_secret_version.as_deref(), Some("42"));
        assert_eq!(
            (s.role_name.as_deref(), s.observed_generation),
            (Some("app"), Some(2))
        );
    }

    #[test]
    fn a_failure_keeps_what_the_last_success_found() {
        let before = desired_status(
            &user(None),
            &Observed::Converged {
                source_version: Some("42".into()),
            },
            "t1",
        );
        let after = desired_status(
            &user(Some(serde_json::to_value(&before).unwrap())),
            &Observed::Failed(Problem::new("ClusterUnreachable", "connecting: refused")),
            "t2",
        );
        let ready = &after.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "ClusterUnreachable")
        );
        assert_eq!(ready.last_transition_time, "t2");
        assert_eq!(after.binding, before.binding);
        assert_eq!(after.password_secret_version.as_deref(), Some("42"));
    }
}
