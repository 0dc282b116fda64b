//! One release's bundle: `manifests/` (CSV, CRDs, metrics Service, the metrics-reader
//! ClusterRole, the operator's PodDisruptionBudget, ServiceMonitor, PrometheusRule),
//! `metadata/annotations.yaml`, the scorecard configuration and `bundle.Dockerfile`.

use serde_json::{Value, json};

use super::{
    DEPLOYMENT, Inputs, METRICS_PORT,
    crds::{file_name, release_crds},
    csv::csv,
    plan::Release,
};

use tusk::facts::operator::METRICS_PATH;
/// The Service in front of the operator's `/metrics`.
pub use tusk::facts::operator::METRICS_SERVICE;

/// The annotation conversion keeps what an older version cannot hold in; examples leave it out.
const CONVERSION_ANNOTATION: &str = "tusk.dev/conversion-data";

/// The `alm-examples` of `release`: each sample at every version the release serves, newest
/// first, converted by Tusk's own conversion. Fields an older version cannot hold are left out.
pub fn examples(inputs: &Inputs, release: &Release) -> Vec<Value> {
    let mut examples = Vec::new();
    for crd in &inputs.crds {
        let kind = &crd.spec.names.kind;
        let Some(sample) = inputs.samples.iter().find(|s| s["kind"] == json!(kind)) else {
            continue;
        };
        for version in release.crds[kind].served.iter().rev() {
            let mut example = tusk::api::convert_object(sample.clone(), &format!("tusk.dev/{version}"), 0)
                .expect("samples convert to every served version");
            if let Some(annotations) = example
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_object_mut)
            {
                annotations.remove(CONVERSION_ANNOTATION);
                if annotations.is_empty() {
                    example["metadata"]
                        .as_object_mut()
                        .expect("metadata is an object")
                        .remove("annotations");
                }
            }
            examples.push(example);
        }
    }
    examples
}

fn metrics_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": METRICS_SERVICE,
            "labels": {"app.kubernetes.io/name": DEPLOYMENT, "app.kubernetes.io/component": "metrics"},
        },
        "spec": {
            "selector": {"app.kubernetes.io/name": DEPLOYMENT},
            "ports": [{"name": "https", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        },
    })
}

/// Keeps one operator replica through voluntary disruptions (a node drain), so that the
/// conversion webhook always answers. `minAvailable: 1` of [`tusk::facts::operator::REPLICAS`]
/// still lets a drain evict the other.
fn disruption_budget() -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": DEPLOYMENT, "labels": {"app.kubernetes.io/name": DEPLOYMENT}},
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT}},
        },
    })
}

fn service_monitor() -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": DEPLOYMENT, "labels": {"app.kubernetes.io/name": DEPLOYMENT}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT, "app.kubernetes.io/component": "metrics"}},
            // `/metrics` is HTTPS and lets in a token that may `get` it: Prometheus sends its
            // ServiceAccount's, and the metrics-reader ClusterRole, bound to that account, grants
            // the right. The server certificate is the webhook's (OLM's CA, which Prometheus does
            // not hold), so the scrape authenticates the caller, not the server.
            "endpoints": [{
                "port": "https", "path": METRICS_PATH, "interval": "30s", "scheme": "https",
                "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "tlsConfig": {"insecureSkipVerify": true},
            }],
        },
    })
}

/// What a Prometheus (or anyone) needs to read the operator's `/metrics`: bind it to their
/// ServiceAccount.
fn metrics_reader_role() -> Value {
    serde_json::to_value(tusk::rbac::metrics_reader_role(&format!(
        "{DEPLOYMENT}-metrics-reader"
    )))
    .expect("a ClusterRole serializes")
}

fn prometheus_rule() -> Value {
    let alert = |name: &str, expr: &str, wait: &str, severity: &str, summary: &str, description: &str| {
        json!({
            "alert": name,
            "expr": expr,
            "for": wait,
            "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description},
        })
    };
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": DEPLOYMENT, "labels": {"app.kubernetes.io/name": DEPLOYMENT}},
        "spec": {"groups": [{
            "name": DEPLOYMENT,
            "rules": [
                alert(
                    "TuskOperatorDown",
                    &format!("absent(up{{service=\"{METRICS_SERVICE}\"}} == 1)"),
                    "10m",
                    "critical",
                    "The Tusk operator is not running",
                    "No Tusk operator has answered a metrics scrape for 10 minutes: PostgreSQL clusters keep running, but nothing reconciles them and old API versions cannot be converted.",
                ),
                alert(
                    "TuskReconcileErrors",
                    "sum by (kind) (rate(tusk_reconcile_errors_total[10m])) > 0",
                    "30m",
                    "warning",
                    "Tusk fails to reconcile {{ $labels.kind }} objects",
                    "Reconciles of {{ $labels.kind }} have failed for 30 minutes; the objects' Degraded condition says why.",
                ),
                alert(
                    "TuskReconcileSlow",
                    "histogram_quantile(0.99, sum by (kind, le) (rate(tusk_reconcile_duration_seconds_bucket[10m]))) > 10",
                    "30m",
                    "warning",
                    "Tusk reconciles of {{ $labels.kind }} are slow",
                    "The 99th percentile of {{ $labels.kind }} reconciles has been over 10 s for 30 minutes; the API server may be overloaded.",
                ),
                alert(
                    "TuskWalArchivingFailing",
                    "(tusk_instance_archive_last_failed_timestamp_seconds > on (namespace, pod) tusk_instance_archive_last_archived_timestamp_seconds) or (tusk_instance_archive_last_failed_timestamp_seconds unless on (namespace, pod) tusk_instance_archive_last_archived_timestamp_seconds)",
                    "5m",
                    "critical",
                    "WAL archiving fails on {{ $labels.namespace }}/{{ $labels.pod }}",
                    "The last WAL archive attempt failed and none succeeded since: point-in-time recovery stops at the last archived file, and PostgreSQL keeps every unarchived file, so pg_wal grows. The cluster's ContinuousArchiving condition says why.",
                ),
                alert(
                    "TuskWalArchivingLagging",
                    "(time() - tusk_instance_archive_last_archived_timestamp_seconds > 3600) and on (namespace, pod) (sum by (namespace, pod) (rate(tusk_instance_transactions_total{outcome=\"commit\"}[1h])) > 0)",
                    "15m",
                    "warning",
                    "No WAL archived from {{ $labels.namespace }}/{{ $labels.pod }} for an hour",
                    "Transactions commit, but no WAL file has been archived for an hour: archive_timeout should have closed a segment by now.",
                ),
                alert(
                    "TuskBackupOverdue",
                    "tusk_backup_schedule_overdue == 1",
                    "15m",
                    "warning",
                    "PostgresBackupSchedule {{ $labels.namespace }}/{{ $labels.schedule }} has no recent backup",
                    "A whole interval of the schedule passed without a completed backup (two run times since the last one): runs fail, were skipped, or nothing reconciles. The schedule's status and its PostgresBackups say why.",
                ),
                alert(
                    "TuskBackupFailed",
                    "tusk_instance_backup_last_succeeded == 0",
                    "1m",
                    "warning",
                    "The last base backup on {{ $labels.namespace }}/{{ $labels.pod }} failed",
                    "The PostgresBackup's status says why; the next scheduled run tries again.",
                ),
            ],
        }]},
    })
}

/// `release`'s manifests, each with its file name under `manifests/`, sorted by file name.
pub fn manifests(inputs: &Inputs, release: &Release) -> Vec<(String, Value)> {
    let crds = release_crds(&inputs.crds, release);
    let csv = csv(inputs, release, &crds, &examples(inputs, release));
    let mut manifests = vec![(format!("{}.clusterserviceversion.yaml", inputs.plan.package), csv)];
    for crd in &crds {
        manifests.push((file_name(crd), serde_json::to_value(crd).expect("CRDs serialize")));
    }
    manifests.push((format!("{METRICS_SERVICE}_v1_service.yaml"), metrics_service()));
    manifests.push((
        format!("{DEPLOYMENT}-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml"),
        metrics_reader_role(),
    ));
    if crds.iter().any(|c| c.spec.versions.len() > 1) {
        manifests.push((
            format!("{DEPLOYMENT}_policy_v1_poddisruptionbudget.yaml"),
            disruption_budget(),
        ));
    }
    manifests.push((
        format!("{DEPLOYMENT}_monitoring.coreos.com_v1_servicemonitor.yaml"),
        service_monitor(),
    ));
    manifests.push((
        format!("{DEPLOYMENT}_monitoring.coreos.com_v1_prometheusrule.yaml"),
        prometheus_rule(),
    ));
    manifests.sort_by(|a, b| a.0.cmp(&b.0));
    manifests
}

/// The bundle annotations of `release`, as `metadata/annotations.yaml` and the Dockerfile's
/// labels carry them.
pub fn annotations(inputs: &Inputs, release: &Release) -> Vec<(String, String)> {
    let plan = &inputs.plan;
    let mut annotations = vec![
        (
            "operators.operatorframework.io.bundle.mediatype.v1",
            "registry+v1".to_owned(),
        ),
        (
            "operators.operatorframework.io.bundle.manifests.v1",
            "manifests/".to_owned(),
        ),
        (
            "operators.operatorframework.io.bundle.metadata.v1",
            "metadata/".to_owned(),
        ),
        (
            "operators.operatorframework.io.bundle.package.v1",
            plan.package.clone(),
        ),
        (
            "operators.operatorframework.io.bundle.channels.v1",
            release.channels.join(","),
        ),
    ];
    if release.channels.contains(&plan.default_channel) {
        annotations.push((
            "operators.operatorframework.io.bundle.channel.default.v1",
            plan.default_channel.clone(),
        ));
    }
    annotations.extend([
        (
            "operators.operatorframework.io.test.mediatype.v1",
            "scorecard+v1".to_owned(),
        ),
        (
            "operators.operatorframework.io.test.config.v1",
            "tests/scorecard/".to_owned(),
        ),
        ("com.redhat.openshift.versions", plan.openshift_versions.clone()),
    ]);
    annotations.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("JSON values serialize to YAML")
}

fn scorecard() -> Value {
    let test = |name: &str, suite: &str| {
        json!({
            "entrypoint": ["scorecard-test", name],
            "image": "quay.io/operator-framework/scorecard-test:v1.42.2",
            "labels": {"suite": suite, "test": format!("{name}-test")},
        })
    };
    json!({
        "apiVersion": "scorecard.operatorframework.io/v1alpha3",
        "kind": "Configuration",
        "metadata": {"name": "config"},
        "stages": [{
            "parallel": true,
            "tests": [
                test("basic-check-spec", "basic"),
                test("olm-bundle-validation", "olm"),
                test("olm-crds-have-validation", "olm"),
                test("olm-spec-descriptors", "olm"),
                test("olm-status-descriptors", "olm"),
            ],
        }],
    })
}

/// Every file of `release`'s bundle, relative to `bundle/<version>/`.
pub fn files(inputs: &Inputs, release: &Release) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = manifests(inputs, release)
        .into_iter()
        .map(|(name, manifest)| (format!("manifests/{name}"), yaml(&manifest)))
        .collect();
    let annotations = annotations(inputs, release);
    let map: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    files.push((
        "metadata/annotations.yaml".to_owned(),
        yaml(&json!({"annotations": map})),
    ));
    files.push(("tests/scorecard/config.yaml".to_owned(), yaml(&scorecard())));
    let mut dockerfile = String::from("FROM scratch\n\n");
    for (key, value) in &annotations {
        dockerfile.push_str(&format!("LABEL {key}={value}\n"));
    }
    dockerfile.push_str(
        "LABEL com.redhat.delivery.operator.bundle=true\n\nCOPY manifests /manifests/\nCOPY metadata /metadata/\nCOPY tests/scorecard /tests/scorecard/\n",
    );
    files.push(("bundle.Dockerfile".to_owned(), dockerfile));
    files
}
