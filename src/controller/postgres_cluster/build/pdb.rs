//! The PodDisruptionBudget `<cluster>`.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    facts::cluster::{Names, selector},
};

/// At most one pod of the cluster down at a time for voluntary disruptions (drains).
pub fn desired_pdb(cluster: &PostgresCluster) -> PodDisruptionBudget {
    let name = name_of(cluster);
    PodDisruptionBudget {
        metadata: meta(cluster, Names(name).workload()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn one_pod_of_the_cluster_at_a_time() {
        let pdb = super::desired_pdb(&cluster(spec(json!({"instances": 3}))));
        assert_eq!(
            serde_json::to_value(pdb.spec).unwrap(),
            json!({"maxUnavailable": 1, "selector": {"matchLabels": {"tusk.dev/cluster": "db"}}})
        );
    }
}
