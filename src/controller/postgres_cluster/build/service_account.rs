//! The ServiceAccount `<cluster>` the PostgreSQL pods run as.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{meta, name_of};
use crate::{api::postgres_cluster::v1::PostgresCluster, facts::cluster::Names};

/// The account the PostgreSQL pods run as; it mounts no token, since nothing in the pod talks to
/// the apiserver.
pub fn desired_service_account(cluster: &PostgresCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster, Names(name_of(cluster)).workload()),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn named_after_the_cluster_without_a_token() {
        let account = super::desired_service_account(&cluster(spec(json!({}))));
        assert_eq!(account.metadata.name.as_deref(), Some("db"));
        assert_eq!(account.automount_service_account_token, Some(false));
    }
}
