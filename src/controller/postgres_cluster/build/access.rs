//! The Role and RoleBinding `<cluster>-primary` that let the cluster's pods (its ServiceAccount)
//! read and renew the primary's Lease, and nothing else: the Lease is how the primary keeps the
//! right to take writes (see `instance::lease`).

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::{meta, name_of};
use crate::{api::postgres_cluster::v1::PostgresCluster, facts::cluster::Names};

/// What the pods may do: get and update the one Lease `<cluster>-primary`.
pub fn desired_role(cluster: &PostgresCluster) -> Role {
    let names = Names(name_of(cluster));
    Role {
        metadata: meta(cluster, names.primary_lease()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
            resources: Some(vec!["leases".to_owned()]),
            resource_names: Some(vec![names.primary_lease()]),
            verbs: vec!["get".to_owned(), "update".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

/// Grants [`desired_role`] to the pods' ServiceAccount.
pub fn desired_role_binding(cluster: &PostgresCluster) -> RoleBinding {
    let names = Names(name_of(cluster));
    RoleBinding {
        metadata: meta(cluster, names.primary_lease()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: names.primary_lease(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names.workload(),
            namespace: cluster.metadata.namespace.clone(),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn the_pods_may_read_and_renew_their_own_lease_only() {
        let c = cluster(spec(json!({})));
        let role = super::desired_role(&c);
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["db-primary".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "update"]);
        let binding = super::desired_role_binding(&c);
        assert_eq!(binding.role_ref.name, "db-primary");
        assert_eq!(binding.subjects.unwrap()[0].name, "db");
    }
}
