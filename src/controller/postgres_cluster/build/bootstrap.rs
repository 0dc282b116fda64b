//! The `PostgresUser` `<cluster>-owner` and `PostgresDatabase` `<cluster>-database` that
//! `spec.bootstrap.initdb.database` asks for.

use super::{meta, name_of};
use crate::{
    api::{
        common::ClusterReference,
        postgres_cluster::v1::PostgresCluster,
        postgres_database::v1::{PostgresDatabase, PostgresDatabaseSpec},
        postgres_user::v1::{DatabasePrivilege, DatabasePrivileges, PostgresUser, PostgresUserSpec},
    },
    facts::cluster::Names,
};

/// The user and database for `spec.bootstrap.initdb.database` and its `owner` (the database's
/// name when absent). The user's binding Secret, `<cluster>-owner-binding`, is how applications
/// connect.
pub fn desired_bootstrap(cluster: &PostgresCluster) -> Option<(PostgresUser, PostgresDatabase)> {
    let initdb = cluster.spec.bootstrap.as_ref()?.initdb.as_ref()?;
    let database = initdb.database.clone()?;
    let owner = initdb.owner.clone().unwrap_or_else(|| database.clone());
    let name = name_of(cluster);
    let names = Names(name);
    let reference = ClusterReference {
        name: name.to_owned(),
    };
    let mut user = PostgresUser::new(
        &names.bootstrap_user(),
        PostgresUserSpec {
            cluster: reference.clone(),
            role_name: Some(owner.clone()),
            password_secret: None,
            login: None,
            createdb: None,
            createrole: None,
            inherit: None,
            connection_limit: None,
            valid_until: None,
            member_of: None,
            privileges: Some(vec![DatabasePrivileges {
                database: database.clone(),
                privileges: vec![DatabasePrivilege::Connect],
            }]),
            reclaim_policy: None,
            client_certificate: None,
        },
    );
    user.metadata = meta(cluster, names.bootstrap_user());
    let mut db = PostgresDatabase::new(
        &names.bootstrap_database(),
        PostgresDatabaseSpec {
            cluster: reference,
            database_name: Some(database),
            owner,
            extensions: None,
            encoding: None,
            locale: None,
            reclaim_policy: None,
        },
    );
    db.metadata = meta(cluster, names.bootstrap_database());
    Some((user, db))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn nothing_without_a_database() {
        assert!(super::desired_bootstrap(&cluster(spec(json!({})))).is_none());
        assert!(
            super::desired_bootstrap(&cluster(spec(json!({"bootstrap": {"initdb": {"locale": "C"}}}))))
                .is_none()
        );
    }

    #[test]
    fn the_owner_defaults_to_the_database() {
        let (user, db) = super::desired_bootstrap(&cluster(spec(
            json!({"bootstrap": {"initdb": {"database": "app"}}}),
        )))
        .unwrap();
        assert_eq!(user.metadata.name.as_deref(), Some("db-owner"));
        assert_eq!(
            serde_json::to_value(&user.spec).unwrap(),
            json!({"cluster": {"name": "db"}, "roleName": "app", "privileges": [{"database": "app", "privileges": ["CONNECT"]}]})
        );
        assert_eq!(db.metadata.name.as_deref(), Some("db-database"));
        assert_eq!(
            serde_json::to_value(&db.spec).unwrap(),
            json!({"cluster": {"name": "db"}, "databaseName": "app", "owner": "app"})
        );
        let (user, db) = super::desired_bootstrap(&cluster(spec(
            json!({"bootstrap": {"initdb": {"database": "app", "owner": "alice"}}}),
        )))
        .unwrap();
        assert_eq!(user.spec.role_name.as_deref(), Some("alice"));
        assert_eq!(db.spec.owner, "alice");
    }
}
