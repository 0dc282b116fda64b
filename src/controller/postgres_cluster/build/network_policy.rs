//! The NetworkPolicy `<cluster>`, when `spec.networkPolicy.enabled` asks for one.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    facts::{
        cluster::{METRICS_PORT, Names, POSTGRES_PORT, STATUS_PORT, selector},
        operator,
    },
};

fn ports(numbers: &[u16]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        numbers
            .iter()
            .map(|n| NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(*n))),
                protocol: Some("TCP".to_owned()),
                ..NetworkPolicyPort::default()
            })
            .collect(),
    )
}

fn labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..LabelSelector::default()
    })
}

/// The NetworkPolicy of `cluster`, or `None` when it asks for none. Ingress to its pods is
/// admitted only:
/// - from its own pods, on every port (replication, base backups, `pg_rewind`);
/// - from the operator's pods in `operator_namespace`, to PostgreSQL and the instance manager;
/// - from `allowedClients`, to PostgreSQL;
/// - from anywhere, to `/metrics` (which lets in only a token that may read it).
pub fn desired_network_policy(cluster: &PostgresCluster, operator_namespace: &str) -> Option<NetworkPolicy> {
    let wanted = cluster.spec.network_policy.as_ref().filter(|p| p.enabled)?;
    let name = name_of(cluster);
    let own = LabelSelector {
        match_labels: Some(selector(name)),
        ..LabelSelector::default()
    };
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(own.clone()),
                ..NetworkPolicyPeer::default()
            }]),
            ports: None,
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: labels(&[("kubernetes.io/metadata.name", operator_namespace)]),
                pod_selector: labels(&[("app.kubernetes.io/name", operator::NAME)]),
                ..NetworkPolicyPeer::default()
            }]),
            ports: ports(&[POSTGRES_PORT, STATUS_PORT]),
        },
        NetworkPolicyIngressRule {
            from: None,
            ports: ports(&[METRICS_PORT]),
        },
    ];
    if let Some(clients) = wanted.allowed_clients.as_ref().filter(|c| !c.is_empty()) {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(clients.clone()),
            ports: ports(&[POSTGRES_PORT]),
        });
    }
    Some(NetworkPolicy {
        metadata: meta(cluster, Names(name).workload()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn none_unless_enabled() {
        assert!(super::desired_network_policy(&cluster(spec(json!({}))), "ops").is_none());
        let off = cluster(spec(json!({"networkPolicy": {"enabled": false}})));
        assert!(super::desired_network_policy(&off, "ops").is_none());
    }

    #[test]
    fn admits_the_operator_the_cluster_and_the_listed_clients_only() {
        let c = cluster(spec(
            json!({"networkPolicy": {"enabled": true, "allowedClients": [
                {"podSelector": {"matchLabels": {"app": "web"}}},
                {"namespaceSelector": {"matchLabels": {"team": "data"}}},
            ]}}),
        ));
        let policy = super::desired_network_policy(&c, "ops").unwrap();
        assert_eq!(policy.metadata.name.as_deref(), Some("db"));
        assert_eq!(
            serde_json::to_value(policy.spec).unwrap(),
            json!({
                "podSelector": {"matchLabels": {"tusk.dev/cluster": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"tusk.dev/cluster": "db"}}}]},
                    {
                        "from": [{
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tusk-operator"}},
                        }],
                        "ports": [{"port": 5432, "protocol": "TCP"}, {"port": 8000, "protocol": "TCP"}],
                    },
                    {"ports": [{"port": 8443, "protocol": "TCP"}]},
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "web"}}},
                            {"namespaceSelector": {"matchLabels": {"team": "data"}}},
                        ],
                        "ports": [{"port": 5432, "protocol": "TCP"}],
                    },
                ],
            })
        );
    }
}
