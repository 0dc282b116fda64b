//! HTTPS to the operator's servers (the client is `tusk_testenv::https`), and the tokens that
//! read `/metrics`.

pub use tusk_testenv::https::{client, get};

/// A token of ServiceAccount `namespace/name`, bound to `role` as a ClusterRole of its name.
pub async fn token_for(
    plane: &tusk_testenv::ControlPlane,
    namespace: &str,
    name: &str,
    role: &k8s_openapi::api::rbac::v1::ClusterRole,
) -> String {
    let kubeconfig = plane
        .service_account_kubeconfig(namespace, name, role)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"]["token"].as_str().unwrap().to_owned()
}

/// A token that may read the operator's `/metrics`: a ServiceAccount bound to the bundle's
/// metrics-reader ClusterRole, made once per test binary.
pub async fn metrics_reader_token() -> &'static str {
    static TOKEN: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TOKEN
        .get_or_init(|| async {
            let plane = super::apiserver::plane_with_crds().await;
            let role = tusk::rbac::metrics_reader_role("metrics-reader");
            token_for(plane, "monitoring", "metrics-reader", &role).await
        })
        .await
}
