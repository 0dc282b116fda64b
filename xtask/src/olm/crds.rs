//! The CRDs of one release: the versions it serves, its storage version, its deprecations, and
//! conversion through the webhook wherever more than one version is served.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tusk::crd::{ConversionWebhook, WebhookEndpoint, conversion};

use super::plan::Release;

/// The Service OLM creates in front of a deployment with webhooks; the CRDs name it as a
/// placeholder, since the apiserver refuses `strategy: Webhook` without a client config, and OLM
/// overwrites it with the install namespace and its CA.
fn placeholder_webhook() -> ConversionWebhook {
    ConversionWebhook {
        endpoint: WebhookEndpoint::Service {
            name: tusk::facts::operator::WEBHOOK_SERVICE.to_owned(),
            namespace: tusk::facts::operator::NAMESPACE.to_owned(),
            port: i32::from(tusk::facts::operator::WEBHOOK_SERVICE_PORT),
        },
        ca_bundle: None,
    }
}

/// The CRDs `release` ships, cut from `all` (every version of every kind, as
/// [`tusk::api::crds`] makes them), in the same order.
pub fn release_crds(all: &[CustomResourceDefinition], release: &Release) -> Vec<CustomResourceDefinition> {
    let mut crds = all.to_vec();
    for crd in &mut crds {
        let plan = &release.crds[&crd.spec.names.kind];
        let kind = crd.spec.names.kind.clone();
        crd.spec.versions.retain(|v| plan.served.contains(&v.name));
        let current = plan.storage.clone();
        for version in &mut crd.spec.versions {
            version.storage = version.name == plan.storage;
            if plan.deprecated.contains(&version.name) {
                version.deprecated = Some(true);
                if let Some(description) = version
                    .schema
                    .as_mut()
                    .and_then(|s| s.open_api_v3_schema.as_mut())
                    .and_then(|s| s.description.as_mut())
                {
                    description.push_str(&format!(" Deprecated: use tusk.dev/{current}."));
                }
                version.deprecation_warning = Some(format!(
                    "tusk.dev/{} {kind} is deprecated; use tusk.dev/{current}",
                    version.name
                ));
            } else {
                version.deprecated = None;
                version.deprecation_warning = None;
            }
        }
        crd.spec.conversion = if crd.spec.versions.len() > 1 {
            Some(conversion(&placeholder_webhook()))
        } else {
            None
        };
        // OLM v1 makes its ClusterExtension the owner of every object it installs, so deleting
        // the extension would delete the CRDs and, with them, every cluster, user, database and
        // backup; an object with this annotation gets no owner and outlives the extension.
        crd.metadata
            .annotations
            .get_or_insert_default()
            .insert(KEEP_ANNOTATION.to_owned(), "keep".to_owned());
    }
    crds
}

/// The annotation that keeps an object OLM v1 installed when its ClusterExtension is deleted
/// (Helm's resource policy, which OLM v1 honours).
pub const KEEP_ANNOTATION: &str = "helm.sh/resource-policy";

/// The file name a CRD has in a bundle: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
