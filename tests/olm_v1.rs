//! Tusk installed and upgraded by real OLM v1: operator-framework/operator-controller's
//! `catalogd` and `operator-controller` as local processes (`tusk_testenv::olmv1`), with
//! cert-manager's controllers and cainjector as their certificate provider. Tusk's bundle and
//! catalog images are built by the generator and pushed to a registry on loopback; a
//! `ClusterCatalog` names the catalog image, which catalogd pulls and serves; a
//! `ClusterExtension` installs Tusk's package as the installer ServiceAccount of
//! `config/olmv1/installer.yaml`, and nothing more (`PreflightPermissions` is on).
//!
//! OLM v1 renders the bundle itself: the operator's Deployment (kwok runs its pods), its
//! ServiceAccount and RBAC, the webhook Service, and a cert-manager Issuer and Certificate for it.
//! cainjector puts that certificate's CA into each CRD's conversion webhook. The real
//! `tusk-operator` then runs as a local process with the certificate cert-manager issued, and
//! the apiserver reaches its conversion webhook through the Service, tunnelled by the egress
//! proxy to loopback.

mod support;

use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::Api;
use serde_json::json;
use support::olm::{HEAD, NEXT, Written, push_images, repo, served, tusk_operator};
use tusk_testenv::{
    Wait,
    olm::{apply, operator::Mode},
    olmv1::{INSTALL, OlmV1Cluster},
    registry::Registry,
};
use xtask::olm::{Inputs, installer};

/// The ClusterCatalog of Tusk's catalog image.
const CATALOG: &str = "tusk-catalog";
/// The Secret cert-manager keeps the webhook's certificate in, as OLM v1 names it from the
/// operator's Deployment.
const WEBHOOK_CERT: &str = "tusk-operator-service-cert";

/// The certificate the server on loopback `port` presents (PEM), as `openssl s_client` sees it.
fn served_certificate(port: u16) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let end_marker = "-----END CERTIFICATE-----";
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find(end_marker)? + start + end_marker.len();
    Some(format!("{}\n", &text[start..end]))
}

/// `objects` as one YAML stream.
fn yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_saphyr::to_string(o).unwrap()))
        .collect()
}

/// A control plane with OLM v1 pulling from `registry`, and the installer's ServiceAccount and
/// ClusterRole from `config/olmv1/installer.yaml`, as generated from `inputs`.
async fn olm_v1(inputs: &Inputs, registry: &Registry) -> OlmV1Cluster {
    let env = OlmV1Cluster::start(tusk_operator(), &[&registry.host()], installer::NAMESPACE).await;
    apply(&env.plane, &installer::file(inputs)).expect("the installer's RBAC");
    env
}

/// [`olm_v1`] without the installer's RBAC.
async fn olm_v1_bare(registry: &Registry) -> OlmV1Cluster {
    OlmV1Cluster::start(tusk_operator(), &[&registry.host()], installer::NAMESPACE).await
}

/// Waits until every CRD of Tusk converts through the webhook Service OLM v1 made, trusting the
/// CA of the certificate cert-manager issued for it (put there by cainjector).
async fn conversion_through_cert_manager(env: &OlmV1Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    for name in &env.operator.crds {
        Wait::up_to(INSTALL)
            .until(
                &format!("{name} to convert through the Service with cert-manager's CA"),
                async || {
                    let ca = secrets
                        .get(WEBHOOK_CERT)
                        .await
                        .map_err(|e| format!("Secret {WEBHOOK_CERT}: {e}"))?
                        .data
                        .and_then(|mut d| d.remove("ca.crt"))
                        .ok_or("no ca.crt")?
                        .0;
                    let crd = crds.get(name).await.map_err(|e| e.to_string())?;
                    let conversion = crd.spec.conversion.clone();
                    let config = conversion
                        .as_ref()
                        .and_then(|c| c.webhook.as_ref()?.client_config.as_ref());
                    let service = config.and_then(|c| c.service.as_ref());
                    // cainjector adds a renewed CA to the bundle and keeps the one before it.
                    let holds = |bundle: &[u8]| bundle.windows(ca.len()).any(|w| w == ca.as_slice());
                    match (service, config.and_then(|c| c.ca_bundle.as_ref())) {
                        (Some(service), Some(bundle))
                            if service.namespace == env.namespace
                                && service.name == support::olm::SERVICE
                                && holds(&bundle.0) =>
                        {
                            Ok(())
                        }
                        _ => Err(format!(
                            "conversion {conversion:?}, annotations {:?}",
                            crd.metadata.annotations
                        )),
                    }
                },
            )
            .await
            .unwrap_or_else(|unmet| panic!("{unmet}\n{}", env.olm.cert_manager.log_tail(20)));
    }
}

/// The plan and a made-up [`NEXT`] that replaces the head and changes nothing a database sees: the
/// same CRDs and the same instance manager.
fn with_a_patch_release() -> Inputs {
    let mut inputs = Inputs::load(&repo()).unwrap();
    let mut next = inputs.plan.releases.last().unwrap().clone();
    assert_eq!(next.version.to_string(), HEAD);
    next.version = NEXT.parse().unwrap();
    next.replaces = Some(HEAD.parse().unwrap());
    next.skips.clear();
    next.skip_range = None;
    next.skip_range_channels = None;
    inputs.plan.releases.push(next);
    inputs
}

/// Install, upgrade and uninstall through OLM v1, as an administrator does them:
/// - the installer's ClusterRole with one rule fewer is refused by OLM v1's permission preflight,
///   which names the rule; with `config/olmv1/installer.yaml` exactly, the install proceeds;
/// - 1.0.0 pinned by version installs; its CRDs convert through the webhook Service with
///   cert-manager's CA, and objects written at every version it serves read back as predicted;
/// - moving the version to 1.1.0 is refused by OLM v1's CRD upgrade-safety preflight, because
///   1.1.0 changes CEL rules (crdify cannot judge those); `cargo xtask validate` warns with the
///   same reason, and 1.0.0 stays installed;
/// - the administrator approves (`crdUpgradeSafety.enforcement: None`), 1.1.0 installs, and every
///   object reads back at every version;
/// - 1.1.0's controllers bring a cluster of real PostgreSQL to Ready, and serve a renewed webhook
///   certificate with no restart;
/// - a made-up 1.2.0 that keeps the instance manager installs with the preflight on, and no
///   database restarts;
/// - deleting the ClusterExtension removes the operator's Deployment; the CRDs (annotated
///   `helm.sh/resource-policy: keep` from 1.1.0 on), every object and the database stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_upgrades_on_approval_and_uninstalls_keeping_every_object() {
    use std::{net::SocketAddr, time::Duration};
    use support::{
        apiserver::map_endpoint,
        local_cluster::{LocalCluster, POSTGRES_PORT, STATUS_PORT},
        olm::{postmaster, ready, sql_endpoints_in},
    };
    let registry = Registry::start().await.unwrap();
    let mut inputs = with_a_patch_release();
    let pushed = push_images(&mut inputs, &registry).await;
    let env = olm_v1_bare(&registry).await;
    let catalog = env.catalog(CATALOG, pushed.last().unwrap()).await;
    println!(
        "catalogd serves {}",
        catalog["status"]["resolvedSource"]["image"]["ref"]
    );

    let extend = async |version: &str, install: serde_json::Value| {
        env.extend(
            installer::EXTENSION,
            installer::SERVICE_ACCOUNT,
            json!({"version": version}),
            install,
        )
        .await
    };
    // With one rule fewer (cert-manager Certificates, which the webhook needs), the installer may
    // not install: OLM v1's permission preflight names what is missing, and nothing is applied.
    let mut short = installer::objects(&inputs);
    let role = short.iter_mut().find(|o| o["kind"] == "ClusterRole").unwrap();
    role["rules"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["resources"] != json!(["certificates"]));
    apply(&env.plane, &yaml(&short)).unwrap();
    extend("1.0.0", serde_json::Value::Null).await;
    let missing = env
        .progressing(
            installer::EXTENSION,
            "Retrying",
            "pre-authorization failed: service account requires the following permissions",
        )
        .await;
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains("APIGroups:[cert-manager.io] Resources:[certificates]"),
        "{message}"
    );
    println!(
        "OLM v1 with one rule fewer: {}",
        message.lines().last().unwrap().trim()
    );
    apply(&env.plane, &installer::file(&inputs)).unwrap();
    let extension = env.installed(installer::EXTENSION, "1.0.0").await;
    println!("OLM v1 installed {}", extension["status"]["install"]["bundle"]);
    conversion_through_cert_manager(&env).await;
    env.run_operator(Mode::Webhook).await;
    let written = Written::create(&env).await;
    let reads = written.check(&env, &served(&inputs, "1.0.0")).await;
    println!("1.0.0: {reads} reads as predicted");

    // The preflight refuses 1.1.0 for its changed CEL rules, and so does `cargo xtask validate`,
    // as a warning with the same reason.
    extend("1.1.0", serde_json::Value::Null).await;
    let reason = "validating upgrade for CRD \"postgresclusters.tusk.dev\": v1: ^.spec: unhandled: unhandled changes found";
    let refused = env.progressing(installer::EXTENSION, "Retrying", reason).await;
    println!(
        "OLM v1: {}",
        refused["message"].as_str().unwrap().lines().next().unwrap()
    );
    let warnings: Vec<String> = xtask::olm::validate::validate(&repo())
        .iter()
        .map(|f| f.to_string())
        .filter(|f| f.contains(reason) && f.contains("from tusk-operator.v1.0.0 to tusk-operator.v1.1.0"))
        .collect();
    assert!(
        !warnings.is_empty(),
        "cargo xtask validate does not warn: {reason}"
    );
    let still = serde_json::to_value(env.extensions().get(installer::EXTENSION).await.unwrap()).unwrap();
    assert_eq!(
        still["status"]["install"]["bundle"]["version"], "1.0.0",
        "{:#}",
        still["status"]
    );
    assert_eq!(
        tusk_testenv::olmv1::condition(&still, "Installed").map(|c| &c["status"]),
        Some(&json!("True")),
        "{:#}",
        still["status"]
    );

    // Approved, 1.1.0 installs, and every object reads back.
    extend(
        "1.1.0",
        json!({"preflight": {"crdUpgradeSafety": {"enforcement": "None"}}}),
    )
    .await;
    env.installed(installer::EXTENSION, "1.1.0").await;
    conversion_through_cert_manager(&env).await;
    let reads = written.check(&env, &served(&inputs, "1.1.0")).await;
    println!("1.1.0: {reads} reads as predicted");

    // 1.1.0's controllers bring a cluster of real PostgreSQL to Ready.
    env.run_operator(Mode::Run).await;
    const MAJOR: u32 = 18;
    let namespace = env.plane.namespace("databases").await.unwrap();
    let map = sql_endpoints_in(env.work_dir());
    let postgres =
        tusk_testenv::postgres::Postgres::get(MAJOR).unwrap_or_else(|e| panic!("PostgreSQL {MAJOR}: {e}"));
    let spec = json!({"postgres": {"version": MAJOR}, "instances": 1, "storage": {"data": {"size": "1Gi"}}});
    let mut cluster = LocalCluster::create(&env.plane, &namespace, "sample", spec, postgres).await;
    map_endpoint(
        &map,
        &namespace,
        "sample/sample-0",
        SocketAddr::new(cluster.ip(0), STATUS_PORT),
    );
    cluster.start(0).await;
    cluster.wait_ready(0, Duration::from_secs(180)).await;
    map_endpoint(
        &map,
        &namespace,
        "sample",
        SocketAddr::new(cluster.rw_address(), POSTGRES_PORT),
    );
    ready(&env, &namespace, "PostgresCluster", "sample").await;
    let db = cluster.connect(0).await.unwrap();
    let started = postmaster(&db).await;
    println!("1.1.0: PostgresCluster sample of real PostgreSQL {MAJOR} is Ready");

    // cert-manager renews the webhook's certificate: cainjector adds its CA to every CRD's
    // bundle, and the running operator serves it, read from the files the kubelet rewrote, with
    // no restart; every object still converts.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let certificate = async || {
        secrets.get(WEBHOOK_CERT).await.unwrap().data.unwrap()["tls.crt"]
            .0
            .clone()
    };
    let (first, processes) = (certificate().await, env.operator_started());
    tusk_testenv::cert_manager::renew(&env.client, &env.namespace, WEBHOOK_CERT)
        .await
        .unwrap();
    let renewed = Wait::up_to(INSTALL)
        .until("cert-manager to renew the webhook's certificate", async || {
            let renewed = certificate().await;
            if renewed == first {
                Err("not yet")
            } else {
                Ok(renewed)
            }
        })
        .await
        .unwrap();
    conversion_through_cert_manager(&env).await;
    let port = env
        .operator_webhook_port()
        .expect("the operator serves the webhook");
    Wait::up_to(Duration::from_secs(60))
        .until(
            "the operator to serve the renewed certificate",
            async || match served_certificate(port) {
                Some(served) if served.as_bytes() == renewed.as_slice() => Ok(()),
                other => Err(format!("it serves {other:?}")),
            },
        )
        .await
        .unwrap();
    let reads = written.check(&env, &served(&inputs, HEAD)).await;
    assert_eq!(
        env.operator_started(),
        processes,
        "the operator was restarted for the renewal"
    );
    println!("renewed: {reads} reads through the renewed certificate, served with no restart");

    // An upgrade that keeps the instance manager restarts no database: a connection held open
    // keeps working, and the postmaster keeps its PID and start time.
    db.batch_execute("CREATE TABLE held (at text NOT NULL); INSERT INTO held VALUES ('before')")
        .await
        .unwrap();
    extend(
        NEXT,
        json!({"preflight": {"crdUpgradeSafety": {"enforcement": "Strict"}}}),
    )
    .await;
    env.installed(installer::EXTENSION, NEXT).await;
    Wait::up_to(INSTALL)
        .until(
            &format!("{NEXT}'s operator to reconcile the cluster"),
            async || {
                let status = ready(&env, &namespace, "PostgresCluster", "sample").await;
                let outdated = status["instanceStatus"][0]["instanceManagerOutdated"].clone();
                if outdated == false {
                    Ok(())
                } else {
                    Err(format!("{status:#}"))
                }
            },
        )
        .await
        .unwrap();
    db.batch_execute("INSERT INTO held VALUES ('after')")
        .await
        .unwrap();
    assert_eq!(
        postmaster(&db).await,
        started,
        "PostgreSQL restarted in the upgrade to {NEXT}"
    );
    println!(
        "{NEXT}: installed with the preflight on; PostgreSQL kept its postmaster and the held connection"
    );

    // Uninstall: the operator goes; the CRDs, every object and the database stay.
    env.delete_extension(installer::EXTENSION).await;
    env.want(None).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), &env.namespace);
    Wait::up_to(INSTALL)
        .until(
            "the operator's Deployment to go with its ClusterExtension",
            async || match deployments.get_opt(support::olm::PACKAGE).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for name in &env.operator.crds {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} is gone after uninstall: {e}"));
        assert!(
            crd.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted"
        );
        assert!(
            crd.metadata.owner_references.unwrap_or_default().is_empty(),
            "{name} has an owner"
        );
    }
    let storage: support::olm::Versions = served(&inputs, "1.1.0")
        .into_iter()
        .map(|(kind, (_, storage))| (kind, (Vec::new(), storage)))
        .collect();
    let reads = written.check(&env, &storage).await;
    assert_eq!(
        db.query_one("SELECT count(*) FROM held", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    ready(&env, &namespace, "PostgresCluster", "sample").await;
    assert_eq!(
        postmaster(&db).await,
        started,
        "PostgreSQL kept running through the uninstall"
    );
    println!(
        "uninstalled: the CRDs and {reads} objects stay (read at their storage version), and PostgreSQL runs on"
    );
}

/// A release that drops a version objects are stored in: `cargo xtask validate` refuses the
/// catalog, and OLM v1's preflight refuses the upgrade with the same reason, leaving the installed
/// release and every object as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_refuses_an_upgrade_that_drops_a_stored_version() {
    use support::olm::{inputs_with_drop, validation_errors};
    let registry = Registry::start().await.unwrap();
    // 0.1.0 stores v1alpha1; the next release replaces it and serves v1alpha1 no more.
    let mut next = inputs_with_drop("0.1.0");
    let reason = "validating upgrade for CRD \"postgresclusters.tusk.dev\": storedVersionRemoval: stored versions removed : [v1alpha1]";
    let refused = validation_errors(&next);
    assert!(refused.iter().any(|f| f.contains(reason)), "{refused:#?}");

    let pushed = push_images(&mut next, &registry).await;
    let env = olm_v1(&next, &registry).await;
    env.catalog(CATALOG, pushed.last().unwrap()).await;
    env.extend(
        installer::EXTENSION,
        installer::SERVICE_ACCOUNT,
        json!({"version": "0.1.0"}),
        serde_json::Value::Null,
    )
    .await;
    env.installed(installer::EXTENSION, "0.1.0").await;
    let written = Written::create(&env).await;
    env.extend(
        installer::EXTENSION,
        installer::SERVICE_ACCOUNT,
        json!({"version": NEXT}),
        serde_json::Value::Null,
    )
    .await;
    let condition = env.progressing(installer::EXTENSION, "Retrying", reason).await;
    println!("OLM v1: {}", condition["message"]);
    let extension = serde_json::to_value(env.extensions().get(installer::EXTENSION).await.unwrap()).unwrap();
    assert_eq!(
        extension["status"]["install"]["bundle"]["version"], "0.1.0",
        "{:#}",
        extension["status"]
    );
    written.check(&env, &served(&next, "0.1.0")).await;
}
