//! The superuser Secret `<cluster>-superuser`.

use k8s_openapi::api::core::v1::Secret;

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    controller::sql_target::{BindingData, binding_entries},
    facts::cluster::{MAINTENANCE_DATABASE, Names, SUPERUSER},
};

/// The superuser Secret, in the `kubernetes.io/basic-auth` shape, with the entries of a
/// servicebinding.io binding (`type`, `provider`, `host`, `port`, `database`, `uri`) so that
/// `status.binding.name` can name it.
pub fn desired_superuser_secret(cluster: &PostgresCluster, password: &str, ca: Option<&str>) -> Secret {
    let name = name_of(cluster);
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or("default");
    let entries = binding_entries(&BindingData {
        cluster: name,
        namespace,
        username: SUPERUSER,
        password,
        database: MAINTENANCE_DATABASE,
        ca,
        client: None,
    });
    Secret {
        metadata: meta(cluster, Names(name).superuser_secret()),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        data: Some(entries),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{cluster, spec};

    #[test]
    fn basic_auth_with_the_binding_entries() {
        let secret = super::desired_superuser_secret(&cluster(spec(json!({}))), "s3cret", None);
        assert_eq!(secret.metadata.name.as_deref(), Some("db-superuser"));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let data = secret.data.unwrap();
        let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(get("username"), "postgres");
        assert_eq!(get("password"), "s3cret");
        assert_eq!(get("host"), "db-rw.shop.svc");
        assert_eq!(
            get("uri"),
            "postgresql://postgres:s3cret@db-rw.shop.svc:5432/postgres"
        );
    }
}
