//! The CustomResourceDefinitions as Tusk installs them: every version merged into one CRD per
//! kind, with conversion through Tusk's webhook wherever a kind serves more than one version.

use k8s_openapi::{
    ByteString,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceConversion, CustomResourceDefinition, ServiceReference, WebhookClientConfig,
        WebhookConversion,
    },
};

use crate::{
    api,
    facts::operator::{self, CONVERT_PATH},
};

/// Where the committed CRDs live, relative to the repository root.
pub const CRD_DIR: &str = "config/crd";

/// Where the apiserver sends ConversionReviews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEndpoint {
    /// A Service in the cluster (what a plain install and OLM use).
    Service {
        /// Service name.
        name: String,
        /// Service namespace.
        namespace: String,
        /// Service port.
        port: i32,
    },
    /// A URL the apiserver dials directly (what tests on loopback use).
    Url(String),
}

/// How the apiserver reaches the conversion webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversionWebhook {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// PEM bundle of the CA that signed the webhook's serving certificate; when absent the
    /// installer (OLM, or a CA injector) fills it in.
    pub ca_bundle: Option<Vec<u8>>,
}

/// Every Tusk CRD, converting through `webhook` where a kind serves more than one version.
pub fn crds(webhook: &ConversionWebhook) -> Vec<CustomResourceDefinition> {
    let mut crds = api::crds();
    for crd in &mut crds {
        if crd.spec.versions.len() > 1 {
            crd.spec.conversion = Some(conversion(webhook));
        }
    }
    crds
}

/// Conversion of a multi-version CRD through `webhook`.
pub fn conversion(webhook: &ConversionWebhook) -> CustomResourceConversion {
    let (service, url) = match &webhook.endpoint {
        WebhookEndpoint::Service {
            name,
            namespace,
            port,
        } => (
            Some(ServiceReference {
                name: name.clone(),
                namespace: namespace.clone(),
                path: Some(CONVERT_PATH.to_owned()),
                port: Some(*port),
            }),
            None,
        ),
        WebhookEndpoint::Url(url) => (None, Some(url.clone())),
    };
    CustomResourceConversion {
        strategy: "Webhook".to_owned(),
        webhook: Some(WebhookConversion {
            client_config: Some(WebhookClientConfig {
                ca_bundle: webhook.ca_bundle.clone().map(ByteString),
                service,
                url,
            }),
            conversion_review_versions: vec!["v1".to_owned()],
        }),
    }
}

impl ConversionWebhook {
    /// The webhook of a plain install, behind [`operator::WEBHOOK_SERVICE`], with `caBundle` left
    /// to the installer.
    pub fn default_service() -> Self {
        Self {
            endpoint: WebhookEndpoint::Service {
                name: operator::WEBHOOK_SERVICE.to_owned(),
                namespace: operator::NAMESPACE.to_owned(),
                port: i32::from(operator::WEBHOOK_SERVICE_PORT),
            },
            ca_bundle: None,
        }
    }
}

/// The committed CRD files: for each kind, its file name under [`CRD_DIR`] and its YAML, for the
/// webhook of a plain install.
pub fn committed_files() -> Vec<(String, String)> {
    crds(&ConversionWebhook::default_service())
        .into_iter()
        .map(|crd| {
            let name = format!(
                "{}.yaml",
                crd.metadata.name.as_deref().expect("derived CRDs are named")
            );
            (name, to_yaml(std::slice::from_ref(&crd)))
        })
        .collect()
}

/// Renders CRDs as one multi-document YAML stream.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> String {
    crds.iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("CRDs serialize to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
