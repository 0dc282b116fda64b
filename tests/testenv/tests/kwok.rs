//! The fake kubelet: kwok runs the pods of a plain Deployment on the fake Node and reports them
//! Ready, so the Deployment becomes Available; it also provisions and binds PVCs of the default
//! StorageClass. Later tests rely on both for Tusk's workloads.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use tusk_testenv::eventually;

#[tokio::test]
async fn kwok_makes_a_plain_deployment_available() {
    let plane = tusk_testenv::shared();
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("kwok").await.unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }))
    .unwrap();
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &deployment).await.unwrap();
    eventually(
        "the Deployment to be Available with 2 ready replicas",
        Duration::from_secs(90),
        async || {
            let status = api.get("web").await.unwrap().status.unwrap_or_default();
            let available = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True");
            if available && status.ready_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
    let pods = Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for pod in pods.items {
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.node_name.as_deref(),
            Some(tusk_testenv::control_plane::NODE_NAME)
        );
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        // kwok hands out addresses from its fake range; nothing ever dials them.
        assert!(status.pod_ip.unwrap_or_default().starts_with("10.244.0."));
    }
    // Nothing dials those addresses, nor any other outside loopback. (The scan does see the
    // components' loopback connections, so an empty answer means something.)
    let connections = plane.tcp_connections();
    assert!(
        connections
            .iter()
            .any(|c| c.component == "kube-apiserver" && c.loopback),
        "{connections:?}"
    );
    assert_eq!(plane.non_loopback_connections(), Vec::<String>::new());
    assert!(
        plane.pids().len() == 5,
        "every component is watched: {:?}",
        plane.pids()
    );
}

#[tokio::test]
async fn a_pvc_of_the_default_storage_class_is_bound() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let plane = tusk_testenv::shared();
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("pvc").await.unwrap();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    let api = Api::<PersistentVolumeClaim>::namespaced(client, &ns);
    api.create(&PostParams::default(), &claim).await.unwrap();
    eventually("the PVC to be Bound", Duration::from_secs(60), async || {
        let pvc = api.get("data").await.unwrap();
        assert_eq!(
            pvc.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some(tusk_testenv::control_plane::STORAGE_CLASS)
        );
        let phase = pvc.status.and_then(|s| s.phase);
        (phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
}
