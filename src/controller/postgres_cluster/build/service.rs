//! The Services `<cluster>-rw`, `<cluster>-ro` and the headless `<cluster>-pods`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{meta, name_of};
use crate::{
    api::postgres_cluster::v1::PostgresCluster,
    facts::cluster::{Names, POSTGRES_PORT, POSTGRES_PORT_NAME, Role, role_selector, selector},
};

fn service(
    cluster: &PostgresCluster,
    name: String,
    selector: BTreeMap<String, String>,
    headless: bool,
) -> Service {
    Service {
        metadata: meta(cluster, name),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(POSTGRES_PORT_NAME.to_owned()),
                port: i32::from(POSTGRES_PORT),
                target_port: Some(IntOrString::String(POSTGRES_PORT_NAME.to_owned())),
                ..ServicePort::default()
            }]),
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `-rw` (the primary), `-ro` (the replicas) and the headless `-pods` (every pod, ready or not,
/// for replication and the StatefulSet's DNS names).
pub fn desired_services(cluster: &PostgresCluster) -> [Service; 3] {
    let name = name_of(cluster);
    let names = Names(name);
    [
        service(
            cluster,
            names.rw_service(),
            role_selector(name, Role::Primary),
            false,
        ),
        service(
            cluster,
            names.ro_service(),
            role_selector(name, Role::Replica),
            false,
        ),
        service(cluster, names.pods_service(), selector(name), true),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::controller::postgres_cluster::build::tests::{cluster, spec};

    #[test]
    fn rw_selects_the_primary_ro_the_replicas_pods_every_pod() {
        let [rw, ro, pods] = super::desired_services(&cluster(spec(json!({}))));
        let port = json!([{"name": "postgres", "port": 5432, "targetPort": "postgres"}]);
        assert_eq!(rw.metadata.name.as_deref(), Some("db-rw"));
        assert_eq!(
            serde_json::to_value(rw.spec).unwrap(),
            json!({"selector": {"tusk.dev/cluster": "db", "tusk.dev/role": "primary"}, "ports": port})
        );
        assert_eq!(ro.metadata.name.as_deref(), Some("db-ro"));
        assert_eq!(
            serde_json::to_value(ro.spec).unwrap(),
            json!({"selector": {"tusk.dev/cluster": "db", "tusk.dev/role": "replica"}, "ports": port})
        );
        assert_eq!(pods.metadata.name.as_deref(), Some("db-pods"));
        assert_eq!(
            serde_json::to_value(pods.spec).unwrap(),
            json!({"selector": {"tusk.dev/cluster": "db"}, "ports": port, "clusterIP": "None", "publishNotReadyAddresses": true})
        );
    }
}
