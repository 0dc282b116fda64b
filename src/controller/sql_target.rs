//! What the SQL controllers share: a session on a cluster's primary, and the servicebinding.io
//! Secret they give applications.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    api::postgres_cluster::v1::TlsMode,
    controller::postgres_cluster::build::tls_mode,
    facts::cluster::{COMPONENT_LABEL, Names, PASSWORD_KEY, POSTGRES_PORT, labels, tls},
    sql::{
        connections::{Credentials, Session, SqlError},
        endpoint::{Endpoint, Endpoints},
    },
};

/// A session on `database` of the primary of `namespace`/`cluster`, as the superuser, whose
/// password (and, with TLS, the CA its certificate must chain to) is read when a new connection
/// is made.
pub async fn session(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    database: &str,
) -> Result<(Endpoint, Arc<Session>), SqlError> {
    let endpoint = ctx.endpoints.endpoint(namespace, cluster)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = Names(cluster).superuser_secret();
    let credentials = || async move {
        let secret = ctx
            .known
            .read(&secrets, namespace, &name)
            .await
            .map_err(|e| SqlError::Password(format!("reading Secret {name}: {e}")))?
            .ok_or_else(|| SqlError::Password(format!("Secret {name} does not exist yet")))?;
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get(PASSWORD_KEY))
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .ok_or_else(|| SqlError::Password(format!("Secret {name} has no UTF-8 data.password")))?;
        let ca = server_ca(ctx, namespace, cluster).await?;
        Ok(Credentials {
            password,
            ca: ca.map(String::into_bytes),
        })
    };
    let session = ctx.connections.get(&endpoint, database, credentials).await?;
    Ok((endpoint, session))
}

/// The CA clients verify `cluster`'s server certificate with (`ca.crt` of `<cluster>-tls`), or
/// `None` when the cluster runs with `spec.tls.mode: Disabled`. A cluster with TLS whose Secret
/// is not there yet is an error: nothing connects to it without verifying it.
pub async fn server_ca(ctx: &Context, namespace: &str, cluster: &str) -> Result<Option<String>, SqlError> {
    let found = find_cluster(ctx, namespace, cluster)
        .await
        .map_err(|e| SqlError::Tls(format!("reading PostgresCluster {cluster}: {e}")))?
        .ok_or_else(|| SqlError::Tls(format!("PostgresCluster {cluster} does not exist")))?;
    if tls_mode(&found) == TlsMode::Disabled {
        return Ok(None);
    }
    let name = Names(cluster).tls_secret();
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let secret = ctx
        .known
        .read(&secrets, namespace, &name)
        .await
        .map_err(|e| SqlError::Tls(format!("reading Secret {name}: {e}")))?
        .ok_or_else(|| SqlError::Tls(format!("Secret {name} does not exist yet")))?;
    crate::controller::postgres_cluster::tls::text(Some(secret.as_ref()), tls::CA)
        .map(Some)
        .ok_or_else(|| SqlError::Tls(format!("Secret {name} has no UTF-8 data.{}", tls::CA)))
}

/// True when the cluster is gone or being deleted: its roles and databases go with it, so a
/// deleted `PostgresUser` or `PostgresDatabase` has nothing left to drop.
pub async fn cluster_gone(ctx: &Context, namespace: &str, cluster: &str) -> Result<bool, Error> {
    let found = find_cluster(ctx, namespace, cluster)
        .await
        .map_err(Error::kube("reading the PostgresCluster"))?;
    Ok(found.is_none_or(|c| c.metadata.deletion_timestamp.is_some()))
}

/// The `PostgresCluster` named `cluster`: as the cluster controller's watch last saw it, or read
/// from the apiserver until that watch has listed.
async fn find_cluster(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<Arc<PostgresCluster>>, kube::Error> {
    if let Some(found) = ctx.known.cluster(namespace, cluster) {
        return Ok(found);
    }
    let clusters: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(clusters.get_opt(cluster).await?.map(Arc::new))
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
    /// The CA the server's certificate chains to, PEM, when the cluster has TLS.
    pub ca: Option<&'a str>,
    /// The role's client certificate, when it logs in with one.
    pub client: Option<&'a crate::pki::KeyedCert>,
}

/// The entries of a servicebinding.io Secret of type `servicebinding.io/postgresql`: `type`,
/// `provider`, `host`, `port`, `database`, `username`, `password`, `uri` and `jdbc-url`. The host
/// is the cluster's `-rw` Service, which applications in the cluster reach. With TLS, the URLs
/// say `sslmode=verify-full`, `ca.crt` holds the CA, and `sslmode` and `sslrootcert` (the name of
/// the CA's entry, as Spring Cloud Bindings reads it) say how to use it. A role with a client
/// certificate also gets `tls.crt`, `tls.key`, `sslcert` and `sslkey`.
pub fn binding_entries(data: &BindingData<'_>) -> BTreeMap<String, ByteString> {
    let service = Endpoints::InCluster
        .endpoint(data.namespace, data.cluster)
        .expect("the in-cluster endpoint always exists");
    let query = if data.ca.is_some() {
        "?sslmode=verify-full"
    } else {
        ""
    };
    let uri = format!(
        "postgresql://{}:{}@{}:{}/{}{query}",
        uri_part(data.username),
        uri_part(data.password),
        service.host,
        service.port,
        uri_part(data.database)
    );
    let jdbc = format!(
        "jdbc:postgresql://{}:{}/{}{query}",
        service.host,
        service.port,
        uri_part(data.database)
    );
    let entry = |k: &str, v: &str| (k.to_owned(), ByteString(v.as_bytes().to_vec()));
    let mut entries = BTreeMap::from([
        entry("type", "postgresql"),
        entry("provider", "tusk"),
        entry("host", &service.host),
        entry("port", &POSTGRES_PORT.to_string()),
        entry("database", data.database),
        entry("username", data.username),
        entry("password", data.password),
        entry("uri", &uri),
        entry("jdbc-url", &jdbc),
    ]);
    if let Some(ca) = data.ca {
        entries.extend([
            entry(tls::CA, ca),
            entry("sslmode", "verify-full"),
            entry("sslrootcert", tls::CA),
        ]);
    }
    if let Some(client) = data.client {
        entries.extend([
            entry(tls::SERVER_CERT, &client.cert),
            entry(tls::SERVER_KEY, &client.key),
            entry("sslcert", tls::SERVER_CERT),
            entry("sslkey", tls::SERVER_KEY),
        ]);
    }
    entries
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
            ca: None,
            client: None,
        });
        let get = |k: &str| String::from_utf8(entries[k].0.clone()).unwrap();
        assert_eq!(
            get("uri"),
            "postgresql://app%20user:p%40ss%3Aw%2Frd@db-rw.shop.svc:5432/orders"
        );
        assert_eq!(get("host"), "db-rw.shop.svc");
        assert_eq!(get("type"), "postgresql");
        assert_eq!(get("password"), "p@ss:w/rd");
        assert_eq!(get("jdbc-url"), "jdbc:postgresql://db-rw.shop.svc:5432/orders");
        assert!(!entries.contains_key("ca.crt"));
    }

    #[test]
    fn with_tls_the_urls_verify_the_server_and_the_ca_comes_along() {
        let entries = binding_entries(&BindingData {
            cluster: "db",
            namespace: "shop",
            username: "app",
            password: "pw",
            database: "orders",
            ca: Some("-----BEGIN CERTIFICATE-----\n"),
            client: None,
        });
        let get = |k: &str| String::from_utf8(entries[k].0.clone()).unwrap();
        assert_eq!(
            get("uri"),
            "postgresql://app:pw@db-rw.shop.svc:5432/orders?sslmode=verify-full"
        );
        assert_eq!(
            get("jdbc-url"),
            "jdbc:postgresql://db-rw.shop.svc:5432/orders?sslmode=verify-full"
        );
        assert_eq!(get("ca.crt"), "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(get("sslmode"), "verify-full");
        assert_eq!(get("sslrootcert"), "ca.crt");
    }
}
