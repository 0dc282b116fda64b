//! The ClusterServiceVersion of one release: everything OperatorHub, the OpenShift console and
//! OLM read about Tusk.

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tusk::{
    facts::operator::{self, env},
    rbac::{LEADER_ELECTION_RULES, OPERATOR_RULES, Rule},
};

use super::{
    DEPLOYMENT, Inputs, METRICS_PORT, PROJECT_URL, STATUS_PORT, WEBHOOK_PORT,
    descriptors::{spec_descriptors, status_descriptors},
    plan::Release,
};

/// The CSV's name for `version`: `<package>.v<version>`.
pub fn csv_name(package: &str, version: &semver::Version) -> String {
    format!("{package}.v{version}")
}

/// The operator image of `release`.
pub fn operator_image(inputs: &Inputs, release: &Release) -> String {
    match &release.operator_digest {
        Some(digest) => format!("{}@{digest}", inputs.plan.images.operator),
        None => format!("{}:{}", inputs.plan.images.operator, release.version),
    }
}

/// The image PostgreSQL pods copy the instance manager from under `release`: the operator image
/// of the release that last changed the instance manager ([`Inputs::instance_manager`], from
/// [`operator::INSTANCE_MANAGER`], which `Plan::load` checks is a release of the plan), or
/// `release`'s own image when it is older than that (a release never runs a later instance
/// manager).
pub fn instance_manager_image(inputs: &Inputs, release: &Release) -> String {
    let version = (&inputs.instance_manager).min(&release.version);
    match inputs.plan.release(version) {
        Some(carrier) => operator_image(inputs, carrier),
        None => format!("{}:{version}", inputs.plan.images.operator),
    }
}
/// The PostgreSQL images a cluster may run by default, one per major of the catalog, named as
/// `relatedImages` names them.
pub fn postgres_images(inputs: &Inputs) -> Vec<(String, String)> {
    inputs
        .postgres_images
        .references()
        .into_iter()
        .map(|(major, image)| (format!("postgres-{major}"), image))
        .collect()
}

fn rules(rules: &[Rule]) -> Value {
    rules
        .iter()
        .map(|r| json!({"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs}))
        .collect()
}

fn words(kind: &str) -> String {
    let mut out = String::new();
    for (i, c) in kind.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The children a kind's controller creates, for the console's resource view.
fn resources(kind: &str) -> Value {
    match kind {
        "PostgresCluster" => json!([
            {"kind": "StatefulSet", "name": "", "version": "v1"},
            {"kind": "Service", "name": "", "version": "v1"},
            {"kind": "Secret", "name": "", "version": "v1"},
            {"kind": "ConfigMap", "name": "", "version": "v1"},
            {"kind": "ServiceAccount", "name": "", "version": "v1"},
            {"kind": "PodDisruptionBudget", "name": "", "version": "v1"},
        ]),
        _ => json!([]),
    }
}

fn owned(crds: &[CustomResourceDefinition]) -> Value {
    let mut owned = Vec::new();
    for crd in crds {
        let kind = &crd.spec.names.kind;
        for version in crd.spec.versions.iter().rev() {
            let description = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.description.clone())
                .unwrap_or_default();
            owned.push(json!({
                "name": crd.metadata.name,
                "version": version.name,
                "kind": kind,
                "displayName": words(kind),
                "description": description,
                "resources": resources(kind),
                "specDescriptors": spec_descriptors(kind, &version.name),
                "statusDescriptors": status_descriptors(kind, &version.name),
            }));
        }
    }
    Value::Array(owned)
}

fn deployment(inputs: &Inputs, release: &Release, webhook: bool) -> Value {
    let image = operator_image(inputs, release);
    let mut args = vec!["run".to_owned(), "--log-format=json".to_owned()];
    if !webhook {
        args.push("--no-webhook".to_owned());
    }
    let mut ports = vec![
        json!({"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"}),
        json!({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}),
    ];
    if webhook {
        ports.push(json!({"name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"}));
    }
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let labels = json!({"app.kubernetes.io/name": DEPLOYMENT});
    json!({
        "name": DEPLOYMENT,
        "label": labels,
        "spec": {
            // Every replica serves conversion (one leads the controllers). A new replica
            // comes up and is ready, serving the current certificate, before an old one
            // stops, and an old one stops unready after a delay (`--shutdown-delay`): the
            // webhook answers throughout an upgrade.
            "replicas": if webhook { operator::REPLICAS } else { 1 },
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"kubectl.kubernetes.io/default-container": "manager"},
                },
                "spec": {
                    "serviceAccountName": DEPLOYMENT,
                    // On different nodes where there are several, on one node where there is
                    // one.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels},
                    }],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": labels}},
                    }]}},
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "manager",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [operator::BINARY_PATH],
                        "args": args,
                        "env": [
                            {"name": env::POD_NAMESPACE, "valueFrom": field("metadata.namespace")},
                            {"name": env::POD_NAME, "valueFrom": field("metadata.name")},
                            {"name": env::INSTANCE_MANAGER_IMAGE, "value": instance_manager_image(inputs, release)},
                            {"name": env::POSTGRES_IMAGES, "value": inputs.postgres_images.flag_value()},
                            {"name": env::STATUS_LISTEN, "value": format!("0.0.0.0:{STATUS_PORT}")},
                            {"name": env::METRICS_LISTEN, "value": format!("0.0.0.0:{METRICS_PORT}")},
                            {"name": env::WEBHOOK_LISTEN, "value": format!("0.0.0.0:{WEBHOOK_PORT}")},
                            {"name": "HTTP_PROXY", "value": ""},
                            {"name": "HTTPS_PROXY", "value": ""},
                            {"name": "NO_PROXY", "value": ""},
                        ],
                        "ports": ports,
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "status"},
                            "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3,
                        },
                        // Ready once the webhook serves the certificate on disk, unready
                        // from SIGTERM on.
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "status"},
                            "periodSeconds": 2, "failureThreshold": 1,
                        },
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"cpu": "1", "memory": "256Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    })
}

/// The conversion webhook, for every CRD that serves more than one version.
fn webhook_definitions(crds: &[CustomResourceDefinition]) -> Vec<Value> {
    let converted: Vec<&str> = crds
        .iter()
        .filter(|c| c.spec.versions.len() > 1)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    if converted.is_empty() {
        return vec![];
    }
    vec![json!({
        "type": "ConversionWebhook",
        "generateName": "cpostgres.tusk.dev",
        "deploymentName": DEPLOYMENT,
        "containerPort": operator::WEBHOOK_SERVICE_PORT,
        "targetPort": WEBHOOK_PORT,
        "webhookPath": operator::CONVERT_PATH,
        "conversionCRDs": converted,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": 10,
    })]
}

/// `release`'s CSV.
pub fn csv(
    inputs: &Inputs,
    release: &Release,
    crds: &[CustomResourceDefinition],
    examples: &[Value],
) -> Value {
    let plan = &inputs.plan;
    let image = operator_image(inputs, release);
    let webhooks = webhook_definitions(crds);
    let mut annotations = json!({
        "alm-examples": serde_json::to_string_pretty(examples).expect("examples serialize"),
        "capabilities": release.capabilities,
        "categories": "Database",
        "certified": "false",
        "containerImage": image,
        // The release's day from the plan, not the time of the build: two builds of a release
        // write the same CSV.
        "createdAt": format!("{}T00:00:00Z", release.date),
        "description": "PostgreSQL clusters, users, databases and backups, with API upgrades that never lose a field.",
        "repository": PROJECT_URL,
        "support": "Tusk",
        "operatorframework.io/suggested-namespace": operator::NAMESPACE,
        "operators.openshift.io/valid-subscription": "[\"No subscription required: Tusk is open source (Apache-2.0)\"]",
        // Answered for what this build does, and `cargo xtask validate` checks each "true":
        // `disconnected` below, from the images; TLS is rustls with ring, not a FIPS-validated
        // module; the operator and the PostgreSQL pods use the cluster proxy OLM injects; the
        // webhook and /metrics follow the cluster's TLS security profile; it needs no cloud
        // credentials.
        "features.operators.openshift.io/disconnected": "false",
        "features.operators.openshift.io/fips-compliant": "false",
        "features.operators.openshift.io/proxy-aware": "true",
        "features.operators.openshift.io/tls-profiles": "true",
        "features.operators.openshift.io/token-auth-aws": "false",
        "features.operators.openshift.io/token-auth-azure": "false",
        "features.operators.openshift.io/token-auth-gcp": "false",
        "features.operators.openshift.io/cnf": "false",
        "features.operators.openshift.io/cni": "false",
        "features.operators.openshift.io/csi": "false",
    });
    if let Some(range) = &release.skip_range {
        annotations["olm.skipRange"] = json!(range);
    }
    let mut related = vec![json!({"name": operator::NAME, "image": image})];
    let instance_manager = instance_manager_image(inputs, release);
    if instance_manager != image {
        related.push(json!({"name": "instance-manager", "image": instance_manager}));
    }
    related.extend(
        postgres_images(inputs)
            .into_iter()
            .map(|(name, image)| json!({"name": name, "image": image})),
    );
    let icon = base64::engine::general_purpose::STANDARD.encode(&inputs.icon);
    let mut spec = json!({
        "displayName": plan.display_name,
        "description": inputs.descriptions[&release.description],
        "version": release.version.to_string(),
        "minKubeVersion": plan.min_kube_version,
        "maturity": release.maturity,
        "provider": {"name": "Tusk", "url": PROJECT_URL},
        "maintainers": [{"name": "Tusk maintainers", "email": "maintainers@tusk.dev"}],
        "links": [
            {"name": "Source", "url": PROJECT_URL},
            {"name": "Documentation", "url": format!("{PROJECT_URL}#readme")},
        ],
        "keywords": ["postgresql", "postgres", "database", "sql", "operator", "backup"],
        "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
        "installModes": [
            {"type": "OwnNamespace", "supported": false},
            {"type": "SingleNamespace", "supported": false},
            {"type": "MultiNamespace", "supported": false},
            {"type": "AllNamespaces", "supported": true},
        ],
        "install": {
            "strategy": "deployment",
            "spec": {
                "deployments": [deployment(inputs, release, !webhooks.is_empty())],
                "clusterPermissions": [{"serviceAccountName": DEPLOYMENT, "rules": rules(OPERATOR_RULES)}],
                "permissions": [{"serviceAccountName": DEPLOYMENT, "rules": rules(LEADER_ELECTION_RULES)}],
            },
        },
        "customresourcedefinitions": {"owned": owned(crds)},
        "relatedImages": related,
    });
    if !webhooks.is_empty() {
        spec["webhookdefinitions"] = Value::Array(webhooks);
    }
    if let Some(replaces) = &release.replaces {
        spec["replaces"] = json!(csv_name(&plan.package, replaces));
    }
    if !release.skips.is_empty() {
        spec["skips"] = release.skips.iter().map(|v| csv_name(&plan.package, v)).collect();
    }
    let mut csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": csv_name(&plan.package, &release.version),
            "annotations": annotations,
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/os.linux": "supported",
            },
        },
        "spec": spec,
    });
    // A cluster without internet access can mirror the release only when every image it runs is
    // pinned by digest (and listed in `relatedImages`, which it is by construction).
    let pinned = image_references(&csv).iter().all(|r| r.pinned());
    csv["metadata"]["annotations"]["features.operators.openshift.io/disconnected"] =
        json!(pinned.to_string());
    csv
}

/// One image reference in a CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// Where it is, as a field path.
    pub field: String,
    /// The reference (a `{major}` template for `TUSK_POSTGRES_IMAGE`).
    pub image: String,
    /// Whether the operator's pods run it (so a mirror needs it in `relatedImages`); the
    /// `containerImage` annotation and `relatedImages` themselves only name images.
    pub runs: bool,
}

impl ImageReference {
    /// By digest, whatever tag it also names.
    pub fn pinned(&self) -> bool {
        self.image
            .split_once('@')
            .is_some_and(|(_, digest)| tusk::facts::postgres_images::is_digest(digest))
    }
}

/// Every image `csv` references: its Deployments' containers, the images the operator is told
/// to deploy (the instance manager's and PostgreSQL's, from their environment variables),
/// `relatedImages` and the `containerImage` annotation.
pub fn image_references(csv: &Value) -> Vec<ImageReference> {
    let mut found = Vec::new();
    let mut add = |field: String, image: &str, runs: bool| {
        found.push(ImageReference {
            field,
            image: image.to_owned(),
            runs,
        })
    };
    if let Some(image) = csv["metadata"]["annotations"]["containerImage"].as_str() {
        add("metadata.annotations.containerImage".to_owned(), image, false);
    }
    let deployments = csv["spec"]["install"]["spec"]["deployments"].as_array();
    for (d, deployment) in deployments.into_iter().flatten().enumerate() {
        let pod = &deployment["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for (c, container) in pod[list].as_array().into_iter().flatten().enumerate() {
                let at = format!("spec.install.spec.deployments[{d}].spec.template.spec.{list}[{c}]");
                if let Some(image) = container["image"].as_str() {
                    add(format!("{at}.image"), image, true);
                }
                for (e, var) in container["env"].as_array().into_iter().flatten().enumerate() {
                    let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) else {
                        continue;
                    };
                    let field = format!("{at}.env[{e}] ({name})");
                    if name == env::INSTANCE_MANAGER_IMAGE || name == env::POSTGRES_IMAGE {
                        add(field, value, true);
                    } else if name == env::POSTGRES_IMAGES {
                        let images = tusk::facts::postgres_images::parse_flag(value).unwrap_or_default();
                        for image in images.values() {
                            add(field.clone(), image, true);
                        }
                    }
                }
            }
        }
    }
    for (i, related) in csv["spec"]["relatedImages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(image) = related["image"].as_str() {
            add(format!("spec.relatedImages[{i}].image"), image, false);
        }
    }
    found
}
