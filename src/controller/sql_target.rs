//! What the SQL controllers share: a session on a cluster's primary, and the servicebinding.io
//! Secret they give applications.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    facts::cluster::{COMPONENT_LABEL, Names, PASSWORD_KEY, POSTGRES_PORT, labels},
    sql::{
        connections::{Session, SqlError},
        endpoint::{Endpoint, Endpoints},
    },
};

/// A session on `database` of the primary of `namespace`/`cluster`, as the superuser, whose
/// password is read from the cluster's superuser Secret when a new connection is made.
pub async fn session(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    database: &str,
) -> Result<(Endpoint, Arc<Session>), SqlError> {
    let endpoint = ctx.endpoints.endpoint(namespace, cluster)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = Names(cluster).superuser_secret();
    let password = || async move {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|e| SqlError::Password(format!("reading Secret {name}: {e}")))?
            .ok_or_else(|| SqlError::Password(format!("Secret {name} does not exist yet")))?;
        secret
            .data
            .and_then(|mut d| d.remove(PASSWORD_KEY))
            .and_then(|p| String::from_utf8(p.0).ok())
            .ok_or_else(|| SqlError::Password(format!("Secret {name} has no UTF-8 data.password")))
    };
    let session = ctx.connections.get(&endpoint, database, password).await?;
    Ok((endpoint, session))
}

/// True when the cluster is gone or being deleted: its roles and databases go with it, so a
/// deleted `PostgresUser` or `PostgresDatabase` has nothing left to drop.
pub async fn cluster_gone(ctx: &Context, namespace: &str, cluster: &str) -> Result<bool, Error> {
    let clusters: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let found = clusters
        .get_opt(cluster)
        .await
        .map_err(Error::kube("reading the PostgresCluster"))?;
    Ok(found.is_none_or(|c| c.metadata.deletion_timestamp.is_some()))
}

/// Percent-encodes `value` for the user or password part of a URI (RFC 3986 unreserved kept).
fn uri_part(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a binding Secret says.
#[derive(Clone, Debug)]
pub struct BindingData<'a> {
    /// The cluster.
    pub cluster: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The role.
    pub username: &'a str,
    /// Its password.
    pub password: &'a str,
    /// The database applications connect to.
    pub database: &'a str,
}

/// The entries of a servicebinding.io Secret of type `servicebinding.io/postgresql`: `type`,
/// `provider`, `host`, `port`, `database`, `username`, `password`, and `uri`. The host is the
/// cluster's `-rw` Service, which applications in the cluster reach.
pub fn binding_entries(data: &BindingData<'_>) -> BTreeMap<String, ByteString> {
    let service = Endpoints::InCluster
        .endpoint(data.namespace, data.cluster)
        .expect("the in-cluster endpoint always exists");
    let uri = format!(
        "postgresql://{}:{}@{}:{}/{}",
        uri_part(data.username),
        uri_part(data.password),
        service.host,
        service.port,
        uri_part(data.database)
    );
    let entry = |k: &str, v: &str| (k.to_owned(), ByteString(v.as_bytes().to_vec()));
    BTreeMap::from([
        entry("type", "postgresql"),
        entry("provider", "tusk"),
        entry("host", &service.host),
        entry("port", &POSTGRES_PORT.to_string()),
        entry("database", data.database),
        entry("username", data.username),
        entry("password", data.password),
        entry("uri", &uri),
    ])
}

/// The binding Secret `name`, owned by `owner`.
pub fn binding_secret<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    cluster: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    let mut labels = labels(cluster);
    labels.insert(COMPONENT_LABEL.to_owned(), "binding".to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owner.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![
                owner
                    .controller_owner_ref(&())
                    .expect("a stored object has a uid"),
            ]),
            ..ObjectMeta::default()
        },
        type_: Some("servicebinding.io/postgresql".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// True when `secret` is controlled by `owner` (so Tusk may write it).
pub fn controlled_by<K: Resource<DynamicType = ()>>(secret: &Secret, owner: &K) -> bool {
    let uid = owner.meta().uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_escapes_what_a_uri_cannot_hold() {
        let entries = binding_entries(&BindingData {
            cluster: "db",
            namespace: "shop",
            username: "app user",
            password: "p@ss:w/rd",
            database: "orders",
        });
        let get = |k: &str| String::from_utf8(entries[k].0.clone()).unwrap();
        assert_eq!(
            get("uri"),
            "postgresql://app%20user:p%40ss%3Aw%2Frd@db-rw.shop.svc:5432/orders"
        );
        assert_eq!(get("host"), "db-rw.shop.svc");
        assert_eq!(get("type"), "postgresql");
        assert_eq!(get("password"), "p@ss:w/rd");
    }
}
