//! The OLM generator and `cargo xtask validate`, checked three ways: what is committed is what
//! the generator makes (and released bundles stay frozen); operator-framework's own tools (opm
//! and the operator-framework/api validators) accept every bundle and the catalog; and copies
//! broken by hand, each in a different way, are refused by `validate` with the file and field
//! named, and by opm too where opm checks the same thing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Value, json};
use tusk_testenv::Toolchain;
use xtask::olm::{
    self, Inputs,
    validate::{Finding, Level, validate},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the committed `bundle/` and `catalog/`, the lock of the released bundles, and OLM
/// v1's installer RBAC.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in [olm::BUNDLE_DIR, olm::CATALOG_DIR] {
        copy_dir(&root().join(sub), &dir.path().join(sub));
    }
    for file in [olm::frozen::LOCK_FILE, olm::installer::FILE] {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(file), to).unwrap();
    }
    dir
}

/// A copy of everything the generator reads and writes: `config/`, `bundle/`, `catalog/` and the
/// operator's `Cargo.toml`.
fn copy_inputs() -> tempfile::TempDir {
    let dir = copy();
    copy_dir(&root().join("config"), &dir.path().join("config"));
    let manifest = olm::plan::OPERATOR_MANIFEST;
    std::fs::copy(root().join(manifest), dir.path().join(manifest)).unwrap();
    dir
}

fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.level == Level::Error).collect()
}

const CSV_100: &str = "bundle/1.0.0/manifests/tusk-operator.clusterserviceversion.yaml";
/// The open release's CSV.
const CSV_110: &str = "bundle/1.1.0/manifests/tusk-operator.clusterserviceversion.yaml";
const CLUSTERS_100: &str = "bundle/1.0.0/manifests/tusk.dev_postgresclusters.yaml";
const CLUSTERS_110: &str = "bundle/1.1.0/manifests/tusk.dev_postgresclusters.yaml";
const CATALOG: &str = "catalog/tusk-operator/catalog.yaml";

fn edit_yaml(root: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    let path = root.join(file);
    let mut value: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_saphyr::to_string(&value).unwrap()).unwrap();
}

fn edit_catalog(root: &Path, edit: impl FnOnce(&mut Vec<Value>)) {
    let path = root.join(CATALOG);
    let mut blobs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut blobs);
    std::fs::write(&path, olm::catalog::to_yaml(&blobs)).unwrap();
}

fn channel<'a>(blobs: &'a mut [Value], name: &str) -> &'a mut Value {
    blobs
        .iter_mut()
        .find(|b| b["schema"] == "olm.channel" && b["name"] == name)
        .unwrap()
}

fn entry<'a>(channel: &'a mut Value, version: &str) -> &'a mut Value {
    let name = format!("tusk-operator.v{version}");
    channel["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["name"] == name.as_str())
        .unwrap()
}

fn annotation(csv: &mut Value, key: &str, value: &str) {
    csv["metadata"]["annotations"][key] = json!(value);
}

/// One way to break a copy, and the error `validate` must report for it.
struct Breakage {
    name: &'static str,
    breaks: fn(&Path),
    file: &'static str,
    field: &'static str,
    message: &'static str,
    /// opm refuses the broken catalog too.
    opm_refuses: bool,
}

/// `spec.versions[v1]`'s `spec` schema of `crd`.
fn v1_spec(crd: &mut Value) -> &mut Value {
    let versions = crd["spec"]["versions"].as_array_mut().unwrap();
    let v1 = versions.iter_mut().find(|v| v["name"] == "v1").unwrap();
    &mut v1["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

fn breakages() -> Vec<Breakage> {
    vec![
        Breakage {
            name: "a bound tightened, which OLM v1's CRD upgrade-safety preflight refuses",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_110, |crd| {
                    v1_spec(crd)["properties"]["instances"]["maximum"] = json!(5)
                })
            },
            file: CLUSTERS_110,
            field: "spec.versions[v1].schema.^.spec.instances",
            message: "OLM v1 refuses the upgrade from tusk-operator.v1.0.0 to tusk-operator.v1.1.0: maximum: lowered from 10 to 5",
            opm_refuses: false,
        },
        Breakage {
            name: "a field removed from a version both releases serve",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_110, |crd| {
                    v1_spec(crd)["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("instances");
                })
            },
            file: CLUSTERS_110,
            field: "spec.versions[v1].schema.^.spec.instances",
            message: "OLM v1 refuses the upgrade from tusk-operator.v1.0.0 to tusk-operator.v1.1.0: existing field removal",
            opm_refuses: false,
        },
        Breakage {
            name: "a default changed",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_110, |crd| {
                    v1_spec(crd)["properties"]["instances"]["default"] = json!(3)
                })
            },
            file: CLUSTERS_110,
            field: "spec.versions[v1].schema.^.spec.instances",
            message: "default: changed from 1 to 3",
            opm_refuses: false,
        },
        Breakage {
            name: "a missing owned CRD",
            breaks: |r| {
                std::fs::remove_file(r.join("bundle/1.0.0/manifests/tusk.dev_postgresusers.yaml")).unwrap()
            },
            file: CSV_100,
            field: "spec.customresourcedefinitions.owned[",
            message: "owned CRD postgresusers.tusk.dev v1 PostgresUser not found in the bundle's manifests",
            opm_refuses: false,
        },
        Breakage {
            name: "a dropped stored version",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_100, |crd| {
                    crd["spec"]["versions"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|v| v["name"] != "v1beta1");
                })
            },
            file: CLUSTERS_100,
            field: "spec.versions",
            message: "drops postgresclusters.tusk.dev v1beta1, which objects may still be stored in after upgrading from tusk-operator.v0.2.0",
            opm_refuses: false,
        },
        Breakage {
            name: "two channel heads",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    let head = entry(channel(blobs, "candidate"), "1.0.0");
                    let map = head.as_object_mut().unwrap();
                    map.remove("replaces");
                    map.remove("skipRange");
                })
            },
            file: CATALOG,
            field: ".entries",
            message: "multiple channel heads found in graph",
            opm_refuses: true,
        },
        Breakage {
            name: "a bad skipRange",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    entry(channel(blobs, "stable"), "1.0.0")["skipRange"] = json!(">=0.1 <1.0.0");
                })
            },
            file: CATALOG,
            field: ".entries[0].skipRange",
            message: "\">=0.1\" is not a comparator and a semantic version",
            opm_refuses: true,
        },
        Breakage {
            name: "an unknown category",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    annotation(csv, "categories", "Database,Databases")
                })
            },
            file: CSV_100,
            field: "metadata.annotations.categories",
            message: "\"Databases\" is not in the set of standard categories",
            opm_refuses: false,
        },
        Breakage {
            name: "an unknown capability level",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    annotation(csv, "capabilities", "Fully Automatic")
                })
            },
            file: CSV_100,
            field: "metadata.annotations.capabilities",
            message: "\"Fully Automatic\" is not a valid capabilities level",
            opm_refuses: false,
        },
        Breakage {
            name: "a replaced CSV that does not exist",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    entry(channel(blobs, "fast"), "0.2.0")["replaces"] = json!("tusk-operator.v0.0.9");
                })
            },
            file: CATALOG,
            field: ".entries[1].replaces",
            message: "tusk-operator.v0.0.9 is replaced but is not a bundle in the catalog",
            opm_refuses: false,
        },
        Breakage {
            name: "a cycle",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    entry(channel(blobs, "candidate"), "0.1.0")["replaces"] = json!("tusk-operator.v1.1.0");
                })
            },
            file: CATALOG,
            field: ".entries",
            message: "no channel head found in graph",
            opm_refuses: true,
        },
        Breakage {
            name: "a bundle in no channel",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    for name in ["candidate", "fast"] {
                        let c = channel(blobs, name);
                        c["entries"]
                            .as_array_mut()
                            .unwrap()
                            .retain(|e| e["name"] != "tusk-operator.v0.1.0");
                    }
                })
            },
            file: CATALOG,
            field: "olm.channel",
            message: "bundle tusk-operator.v0.1.0 is not in any channel",
            opm_refuses: true,
        },
        Breakage {
            name: "a conversion webhook with a namespaced install mode",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["spec"]["installModes"][0]["supported"] = json!(true);
                })
            },
            file: CSV_100,
            field: "spec.installModes",
            message: "only AllNamespaces InstallModeType is supported when conversionCRDs is present",
            opm_refuses: false,
        },
        Breakage {
            name: "a multi-version CRD with no conversion webhook",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["spec"].as_object_mut().unwrap().remove("webhookdefinitions");
                })
            },
            file: CLUSTERS_100,
            field: "spec.conversion",
            message: "no ConversionWebhook in the CSV lists it in conversionCRDs",
            opm_refuses: false,
        },
        Breakage {
            name: "alm-examples that are not JSON",
            breaks: |r| edit_yaml(r, CSV_100, |csv| annotation(csv, "alm-examples", "[{\"kind\": ")),
            file: CSV_100,
            field: "metadata.annotations.alm-examples",
            message: "invalid example",
            opm_refuses: false,
        },
        Breakage {
            name: "an example of an API the bundle does not provide",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    let mut examples: Vec<Value> = serde_json::from_str(
                        csv["metadata"]["annotations"]["alm-examples"].as_str().unwrap(),
                    )
                    .unwrap();
                    examples[0]["apiVersion"] = json!("tusk.dev/v2");
                    annotation(csv, "alm-examples", &serde_json::to_string(&examples).unwrap());
                })
            },
            file: CSV_100,
            field: "metadata.annotations.alm-examples[0]",
            message: "example tusk.dev/v2 PostgresCluster must have a provided API",
            opm_refuses: false,
        },
        Breakage {
            name: "a newer CRD that refuses an older release's example",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_100, |crd| {
                    let v1alpha1 = crd["spec"]["versions"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|v| v["name"] == "v1alpha1")
                        .unwrap();
                    v1alpha1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]["maximum"] =
                        json!(2);
                })
            },
            file: CLUSTERS_100,
            field: "spec.versions[v1alpha1].schema",
            message: "tusk-operator.v1.0.0 refuses tusk-operator.v0.2.0's alm-examples",
            opm_refuses: false,
        },
        Breakage {
            name: "an API Kubernetes removed",
            breaks: |r| {
                edit_yaml(r, CLUSTERS_100, |crd| {
                    crd["apiVersion"] = json!("apiextensions.k8s.io/v1beta1")
                })
            },
            file: CLUSTERS_100,
            field: "apiVersion",
            message: "apiextensions.k8s.io/v1beta1 CustomResourceDefinition was removed in Kubernetes 1.22",
            opm_refuses: false,
        },
        Breakage {
            name: "a maintainer without an email",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["spec"]["maintainers"][0]["email"] = json!("")
                })
            },
            file: CSV_100,
            field: "spec.maintainers[0]",
            message: "should contain both name and email",
            opm_refuses: false,
        },
        Breakage {
            name: "an icon of a type OperatorHub cannot show",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["spec"]["icon"][0]["mediatype"] = json!("image/bmp")
                })
            },
            file: CSV_100,
            field: "spec.icon[0].mediatype",
            message: "image/bmp is not one of image/gif, image/jpeg, image/png, image/svg+xml",
            opm_refuses: false,
        },
        Breakage {
            name: "a minKubeVersion that is not a version",
            breaks: |r| edit_yaml(r, CSV_100, |csv| csv["spec"]["minKubeVersion"] = json!("1.33")),
            file: CSV_100,
            field: "spec.minKubeVersion",
            message: "\"1.33\" has an invalid value",
            opm_refuses: false,
        },
        Breakage {
            name: "a manifest of a kind OLM does not install",
            breaks: |r| {
                std::fs::write(
                    r.join("bundle/1.0.0/manifests/extra_deployment.yaml"),
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: extra\n",
                )
                .unwrap()
            },
            file: "bundle/1.0.0/manifests/extra_deployment.yaml",
            field: "kind",
            message: "Deployment is not a kind OLM installs from a bundle",
            opm_refuses: false,
        },
        Breakage {
            name: "a default channel that does not exist",
            breaks: |r| edit_catalog(r, |blobs| blobs[0]["defaultChannel"] = json!("lts")),
            file: CATALOG,
            field: "[0].defaultChannel",
            message: "default channel \"lts\" not found in channels",
            opm_refuses: true,
        },
        Breakage {
            name: "a descriptor for a field the version does not have",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["spec"]["customresourcedefinitions"]["owned"][0]["specDescriptors"][0]["path"] =
                        json!("replicaz");
                })
            },
            file: CSV_100,
            field: "spec.customresourcedefinitions.owned[0].specDescriptors[0].path",
            message: "\"replicaz\" is not a field of postgresclusters.tusk.dev v1alpha1 spec",
            opm_refuses: false,
        },
        Breakage {
            name: "a catalog entry that leaves out a served version",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    let bundle = blobs
                        .iter_mut()
                        .find(|b| b["name"] == "tusk-operator.v1.0.0")
                        .unwrap();
                    bundle["properties"].as_array_mut().unwrap().retain(|p| {
                        !(p["type"] == "olm.gvk"
                            && p["value"]["kind"] == "PostgresUser"
                            && p["value"]["version"] == "v1alpha1")
                    });
                })
            },
            file: CATALOG,
            field: ".properties",
            message: "no olm.gvk for tusk.dev/v1alpha1 PostgresUser",
            opm_refuses: false,
        },
        Breakage {
            name: "a deprecation of a bundle that does not exist",
            breaks: |r| {
                edit_catalog(r, |blobs| {
                    let deprecations = blobs
                        .iter_mut()
                        .find(|b| b["schema"] == "olm.deprecations")
                        .unwrap();
                    deprecations["entries"][0]["reference"]["name"] = json!("tusk-operator.v0.0.1");
                })
            },
            file: CATALOG,
            field: ".entries[0].reference.name",
            message: "cannot deprecate bundle \"tusk-operator.v0.0.1\": bundle not found",
            opm_refuses: true,
        },
        Breakage {
            name: "an OpenShift feature left unanswered",
            breaks: |r| {
                edit_yaml(r, CSV_100, |csv| {
                    csv["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .remove("features.operators.openshift.io/fips-compliant");
                })
            },
            file: CSV_100,
            field: "metadata.annotations.features.operators.openshift.io/fips-compliant",
            message: "missing",
            opm_refuses: false,
        },
        Breakage {
            name: "a release that says disconnected while it runs images by tag",
            breaks: |r| {
                edit_yaml(r, CSV_110, |csv| {
                    annotation(csv, "features.operators.openshift.io/disconnected", "true")
                })
            },
            file: CSV_110,
            field: "spec.install.spec.deployments[0].spec.template.spec.containers[0].image",
            message: "by tag only, in a release that says features.operators.openshift.io/disconnected: \"true\"",
            opm_refuses: false,
        },
        Breakage {
            name: "a bundle over the size limit",
            breaks: |r| {
                let mut noise = vec![0u8; 1_200_000];
                let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
                for byte in &mut noise {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *byte = state as u8;
                }
                std::fs::write(r.join("bundle/1.0.0/metadata/noise.bin"), noise).unwrap();
            },
            file: "bundle/1.0.0",
            field: "-",
            message: "maximum bundle compressed size with gzip size exceeded",
            opm_refuses: false,
        },
    ]
}

/// No errors; the only warnings are the upgrades into the open release that OLM v1's CRD
/// upgrade-safety preflight leaves to an administrator, because that release changes CEL rules.
#[test]
fn the_committed_bundles_and_catalog_validate_cleanly() {
    let findings = validate(&root());
    let unexpected: Vec<_> = findings
        .iter()
        .filter(|f| {
            !(f.level == Level::Warning
                && f.file.starts_with("bundle/1.1.0/")
                && f.message
                    .starts_with("OLM v1's CRD upgrade-safety preflight refuses the upgrade from ")
                && f.message
                    .contains(" to tusk-operator.v1.1.0 unless an administrator approves it")
                && f.message
                    .ends_with("unhandled changes found (x-kubernetes-validations)"))
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(
        !findings.is_empty(),
        "1.1.0 changes CEL rules, which OLM v1 leaves to an administrator"
    );
}

#[test]
fn validate_catches_each_way_of_breaking_a_copy() {
    let toolchain = Toolchain::get().unwrap();
    let breakages = breakages();
    assert!(breakages.len() >= 15);
    let mut missed = Vec::new();
    for breakage in &breakages {
        let dir = copy();
        assert!(
            errors(&validate(dir.path())).is_empty(),
            "the unbroken copy is clean"
        );
        (breakage.breaks)(dir.path());
        let findings = validate(dir.path());
        let hit = errors(&findings).into_iter().any(|f| {
            f.file == breakage.file
                && f.field.contains(breakage.field)
                && f.message.contains(breakage.message)
        });
        if !hit {
            missed.push(format!(
                "{}: expected an error in {} at {} saying {:?}; got:\n  {}",
                breakage.name,
                breakage.file,
                breakage.field,
                breakage.message,
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
        if breakage.opm_refuses {
            let opm = Command::new(toolchain.bin("opm"))
                .arg("validate")
                .arg(dir.path().join(olm::CATALOG_DIR))
                .output()
                .unwrap();
            if opm.status.success() {
                missed.push(format!("{}: opm validate accepted it", breakage.name));
            }
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

#[test]
fn regenerating_matches_what_is_committed_and_released_bundles_are_frozen() {
    let inputs = Inputs::load(&root()).unwrap();
    let files = olm::generate(&inputs);
    let sync = olm::sync(&root(), &files, true).unwrap();
    assert!(
        sync.changed.is_empty() && sync.stale.is_empty(),
        "run `cargo xtask generate`: {sync:?}"
    );
    for released in ["bundle/0.1.0/", "bundle/1.0.0/"] {
        assert!(files.iter().any(|f| f.frozen && f.path.starts_with(released)));
    }
    assert!(
        !files
            .iter()
            .any(|f| f.frozen && f.path.starts_with("bundle/1.1.0/"))
    );

    // An unreleased bundle is rewritten; a released one is never, whatever changed.
    let dir = copy();
    let open = dir.path().join(CSV_110);
    std::fs::write(&open, "edited by hand\n").unwrap();
    let sync = olm::sync(dir.path(), &files, false).unwrap();
    assert_eq!(sync.changed, vec![CSV_110.to_owned()]);
    assert_ne!(std::fs::read_to_string(&open).unwrap(), "edited by hand\n");

    let frozen = "bundle/0.1.0/manifests/tusk-operator.clusterserviceversion.yaml";
    let edited = std::fs::read_to_string(dir.path().join(frozen))
        .unwrap()
        .replace("maturity: alpha", "maturity: beta");
    std::fs::write(dir.path().join(frozen), &edited).unwrap();
    std::fs::write(
        dir.path().join("bundle/0.2.0/manifests/extra.yaml"),
        "kind: ConfigMap\n",
    )
    .unwrap();
    let error = olm::sync(dir.path(), &files, false).unwrap_err();
    assert!(
        error.contains(&format!(
            "{frozen}: released and frozen, but it differs from the bundle as released"
        )),
        "{error}"
    );
    assert!(
        error.contains("committed \"  maturity: beta\", released \"  maturity: alpha\""),
        "{error}"
    );
    assert!(error.contains("bundle/0.2.0/manifests/extra.yaml: in a released and frozen bundle, but not part of it as released"), "{error}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(frozen)).unwrap(),
        edited,
        "never rewritten"
    );
}

/// The Rust types gain a field after 1.0.0 was cut: the released 1.0.0 bundle stays byte for
/// byte what was cut, catalog entry included, and only the open 1.1.0 bundle's CRD gains it.
#[test]
fn a_field_added_to_the_types_reaches_only_the_open_release() {
    const FIELD: &str = "addedAfterOneZero";
    let inputs = Inputs::load(&root()).unwrap();
    let mut grown = inputs.clone();
    let clusters = grown
        .crds
        .iter_mut()
        .find(|c| c.spec.names.kind == "PostgresCluster")
        .unwrap();
    let v1 = clusters
        .spec
        .versions
        .iter_mut()
        .find(|v| v.name == "v1")
        .unwrap();
    let schema = v1.schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    let added = JSONSchemaProps {
        type_: Some("string".to_owned()),
        description: Some("A field the types gain after 1.0.0.".to_owned()),
        ..Default::default()
    };
    assert!(
        spec.properties
            .as_mut()
            .unwrap()
            .insert(FIELD.to_owned(), added)
            .is_none()
    );

    let files = olm::generate(&grown);
    // 1.0.0, released: every file exactly as committed, none added or removed.
    let released: Vec<&olm::File> = files
        .iter()
        .filter(|f| f.path.starts_with("bundle/1.0.0/"))
        .collect();
    let mut committed = Vec::new();
    walk(&root().join("bundle/1.0.0"), &mut committed);
    assert_eq!(released.len(), committed.len());
    for file in released {
        let on_disk = std::fs::read_to_string(root().join(&file.path)).unwrap();
        assert!(file.contents == on_disk, "{} changed", file.path);
    }
    let entry = |inputs: &Inputs, version: &str| {
        let release = inputs.plan.release(&version.parse().unwrap()).unwrap();
        olm::catalog::bundle(inputs, release, true)
    };
    assert_eq!(entry(&grown, "1.0.0"), entry(&inputs, "1.0.0"));
    assert_ne!(entry(&grown, "1.1.0"), entry(&inputs, "1.1.0"));

    // 1.1.0, open: its PostgresCluster CRD gains the field at v1.
    let crd_file = "bundle/1.1.0/manifests/tusk.dev_postgresclusters.yaml";
    let crd = files.iter().find(|f| f.path == crd_file).unwrap();
    let crd: Value = serde_saphyr::from_str(&crd.contents).unwrap();
    let v1 = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    assert_eq!(
        v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][FIELD]["type"],
        "string"
    );
    // What `cargo xtask check` would find: that CRD differs, and the catalog, which references
    // 1.1.0's bundle image by the digest that CRD changes; nothing frozen does.
    let sync = olm::sync(&root(), &files, true).unwrap();
    let catalog_file = format!(
        "{}/{}",
        olm::CATALOG_DIR,
        olm::catalog::catalog_file(&inputs.plan.package)
    );
    assert_eq!(sync.changed, vec![crd_file.to_owned(), catalog_file.clone()]);
    assert!(sync.stale.is_empty(), "{sync:?}");
    let bundles = |text: &str| -> Vec<(String, String)> {
        serde_saphyr::from_multiple::<Value>(text)
            .unwrap()
            .into_iter()
            .filter(|b| b["schema"] == "olm.bundle")
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_owned(),
                    b["image"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let now = bundles(&files.iter().find(|f| f.path == catalog_file).unwrap().contents);
    let before = bundles(&std::fs::read_to_string(root().join(&catalog_file)).unwrap());
    let moved: Vec<&String> = now
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|((name, _), _)| name)
        .collect();
    assert_eq!(moved, ["tusk-operator.v1.1.0"]);
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn a_released_bundle_changed_on_disk_is_refused_by_name() {
    let dir = copy_inputs();
    Inputs::load(dir.path()).unwrap();
    let changed = "bundle/0.1.0/manifests/tusk-operator.clusterserviceversion.yaml";
    let text = std::fs::read_to_string(dir.path().join(changed)).unwrap();
    std::fs::write(
        dir.path().join(changed),
        text.replace("maturity: alpha", "maturity: beta"),
    )
    .unwrap();
    let added = "bundle/0.2.0/manifests/extra.yaml";
    std::fs::write(dir.path().join(added), "kind: ConfigMap\n").unwrap();
    let removed = "bundle/0.2.0/metadata/annotations.yaml";
    std::fs::remove_file(dir.path().join(removed)).unwrap();
    let error = Inputs::load(dir.path()).unwrap_err();
    for expected in [
        format!("{changed}: released and frozen, but changed since 0.1.0 was cut"),
        format!("{added}: in a released and frozen bundle, but not part of it when 0.2.0 was cut"),
        format!("{removed}: released and frozen, but missing"),
    ] {
        assert!(error.contains(&expected), "expected {expected:?} in {error}");
    }
    assert_eq!(error.lines().count(), 3, "{error}");

    // Unreleasing a cut release is refused too: its bundle stays frozen.
    let dir = copy_inputs();
    let plan_file = dir.path().join(olm::plan::PLAN_FILE);
    let plan = std::fs::read_to_string(&plan_file).unwrap();
    let from = "  - version: 0.1.0\n    released: true\n";
    assert!(plan.contains(from));
    std::fs::write(&plan_file, plan.replacen(from, "  - version: 0.1.0\n", 1)).unwrap();
    let error = Inputs::load(dir.path()).unwrap_err();
    assert!(
        error.contains(
            "bundle/0.1.0/bundle.Dockerfile is locked, but the plan has no released release it belongs to"
        ),
        "{error}"
    );
}

#[test]
fn the_plan_refuses_bad_input_by_field() {
    let plan = std::fs::read_to_string(root().join(olm::plan::PLAN_FILE)).unwrap();
    let cases = [
        (
            "defaultChannel: stable",
            "defaultChannel: lts",
            "defaultChannel: \"lts\" is not in channels",
        ),
        (
            "    channels: [candidate, fast]\n    maturity: alpha",
            "    channels: [candidate, nightly]\n    maturity: alpha",
            "releases[0] (0.1.0).channels: \"nightly\" is not one of the plan's channels",
        ),
        (
            "skipRange: \">=0.1.0 <1.0.0\"",
            "skipRange: \">=0.1.0 <1.0\"",
            "releases[2] (1.0.0).skipRange: \">=0.1.0 <1.0\" is not a version range",
        ),
        (
            "    replaces: 0.1.0",
            "    replaces: 0.0.9",
            "releases[1] (0.2.0): 0.0.9 is replaced or skipped but is not a release in the plan",
        ),
        (
            "capabilities: Basic Install\n    crds:\n      PostgresCluster: { served: [v1alpha1], storage: v1alpha1 }",
            "capabilities: Basic Install\n    crds:\n      PostgresCluster: { served: [v1alpha1], storage: v1 }",
            "releases[0] (0.1.0).crds.PostgresCluster.storage: v1 is not served",
        ),
        (
            "PostgresUser: { served: [v1alpha1, v1], storage: v1, deprecated: [v1alpha1] }",
            "PostgresUser: { served: [v1alpha1, v2], storage: v1, deprecated: [v1alpha1] }",
            "releases[2] (1.0.0).crds.PostgresUser: v2 is not a version of PostgresUser; allowed: v1, v1alpha1",
        ),
        (
            "    maturity: beta",
            "    maturity: gamma",
            "releases[1] (0.2.0).maturity: \"gamma\" is not one of alpha, beta, stable",
        ),
        (
            "package: tusk-operator",
            "package: tusk-operator\nowner: me",
            "unknown field `owner`, expected one of",
        ),
        (
            "cutFrom: 90c776bac7d93404ffbac1e6243676ea466086a8",
            "cutFrom: 90c776b",
            "releases[2] (1.0.0).cutFrom: \"90c776b\" is not a commit: 40 lowercase hexadecimal digits",
        ),
        (
            "cutFrom: 90c776bac7d93404ffbac1e6243676ea466086a8",
            "cutFrom: 90C776BAC7D93404FFBAC1E6243676EA466086A8",
            "releases[2] (1.0.0).cutFrom: \"90C776BAC7D93404FFBAC1E6243676EA466086A8\" is not a commit",
        ),
        (
            "    cutFrom: 90c776bac7d93404ffbac1e6243676ea466086a8\n",
            "",
            "releases[2] (1.0.0).cutFrom: missing: a released release from 1.0.0 on records the commit it was cut from",
        ),
        (
            "  - version: 1.1.0\n",
            "  - version: 1.1.0\n    cutFrom: 90c776bac7d93404ffbac1e6243676ea466086a8\n",
            "releases[3] (1.1.0).cutFrom: set, but the release is not released",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(plan.contains(from), "the plan has {from:?}");
        let broken = plan.replacen(from, to, 1);
        let error = olm::plan::Plan::parse(&broken).unwrap_err();
        assert!(
            error.contains(expected),
            "{to:?}: expected {expected:?} in {error}"
        );
    }
    olm::plan::Plan::parse(&plan).unwrap();
}

#[test]
fn operator_framework_tools_accept_every_bundle_and_the_catalog() {
    let toolchain = Toolchain::get().unwrap();
    let opm = toolchain.bin("opm");
    let validator = toolchain.bin("bundle-validate");
    let inputs = Inputs::load(&root()).unwrap();

    let status = Command::new(&opm)
        .arg("validate")
        .arg(root().join(olm::CATALOG_DIR))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "opm validate catalog/: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // The test variant, with every manifest inlined.
    let inline = tempfile::tempdir().unwrap();
    let file = inline
        .path()
        .join(olm::catalog::catalog_file(&inputs.plan.package));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let blobs = olm::catalog::blobs(&inputs, true);
    std::fs::write(&file, olm::catalog::to_yaml(&blobs)).unwrap();
    // With the fixture package that requires Tusk beside it.
    let fixture = inline
        .path()
        .join(olm::catalog::catalog_file(olm::fixture::PACKAGE));
    std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
    std::fs::write(
        &fixture,
        olm::catalog::to_yaml(&olm::fixture::blobs(&inputs.plan.package, ">=1.0.0")),
    )
    .unwrap();
    let status = Command::new(&opm)
        .arg("validate")
        .arg(inline.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "opm validate of the inlined catalog: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    for release in &inputs.plan.releases {
        let dir = root().join(olm::BUNDLE_DIR).join(release.version.to_string());
        // operator-framework/api's validators, with operator-sdk's operatorframework suite:
        // nothing at all, not even a warning.
        let out = Command::new(&validator)
            .arg(&dir)
            .arg("--optional")
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "bundle-validate {}: {report}",
            dir.display()
        );

        // opm render of the directory gives the generator's inlined entry, property for property.
        let out = Command::new(&opm)
            .arg("render")
            .arg(&dir)
            .arg("-o")
            .arg("json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "opm render {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: Value = serde_json::from_slice(&out.stdout).unwrap();
        let generated = blobs.iter().find(|b| b["name"] == rendered["name"]).unwrap();
        assert_eq!(rendered["image"], json!(""));
        assert_eq!(rendered["image"], generated["image"]);
        assert_eq!(
            rendered["properties"].as_array().unwrap().len(),
            generated["properties"].as_array().unwrap().len()
        );
        for (r, g) in rendered["properties"]
            .as_array()
            .unwrap()
            .iter()
            .zip(generated["properties"].as_array().unwrap())
        {
            assert_eq!(r, g, "{}: opm render and the generator differ", release.version);
        }
        assert_eq!(rendered["relatedImages"], generated["relatedImages"]);
    }

    // The referee can fail: a broken copy is refused.
    let dir = copy();
    edit_yaml(dir.path(), CSV_100, |csv| {
        annotation(csv, "categories", "Databases")
    });
    let out = Command::new(&validator)
        .arg(dir.path().join("bundle/1.0.0"))
        .arg("--optional")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && report.contains("is not in the set of standard categories"),
        "{report}"
    );
}

/// `cargo xtask release` on a copy: the open release is cut from a commit and frozen, the next
/// one opens and replaces it, and the result regenerates and validates cleanly. A bundle of the
/// cut release changed afterwards is refused.
#[test]
fn cutting_a_release_freezes_it_and_opens_the_next() {
    let dir = copy_inputs();
    std::fs::copy(root().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let open = Inputs::load(dir.path())
        .unwrap()
        .plan
        .releases
        .last()
        .unwrap()
        .version
        .clone();
    let next = semver::Version::new(open.major, open.minor + 1, 0);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    // The operator image pushed from that commit: the cut CSV runs it by digest.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    olm::release::release(dir.path(), &open, commit, &next, "2027-01-15", Some(digest)).unwrap();
    let inputs = Inputs::load(dir.path()).unwrap();
    let files = olm::generate(&inputs);
    olm::sync(dir.path(), &files, false).unwrap();
    // Cut: locked by that generate, frozen from then on.
    let cut_dir = format!("bundle/{open}/");
    let files = olm::generate(&Inputs::load(dir.path()).unwrap());
    assert!(files.iter().any(|f| f.frozen && f.path.starts_with(&cut_dir)));
    let lock = std::fs::read_to_string(dir.path().join(olm::frozen::LOCK_FILE)).unwrap();
    assert!(lock.contains(&format!(
        "{cut_dir}manifests/tusk-operator.clusterserviceversion.yaml"
    )));
    let cut_csv: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.path().join(format!(
            "{cut_dir}manifests/tusk-operator.clusterserviceversion.yaml"
        )))
        .unwrap(),
    )
    .unwrap();
    let by_digest = format!("{}@{digest}", inputs.plan.images.operator);
    assert_eq!(
        cut_csv["metadata"]["annotations"]["createdAt"],
        "2027-01-15T00:00:00Z"
    );
    for reference in olm::csv::image_references(&cut_csv) {
        if reference.image.starts_with(&inputs.plan.images.operator) {
            assert_eq!(reference.image, by_digest, "{}", reference.field);
        }
    }
    // Opened: a bundle that replaces it, in the catalog.
    let csv = std::fs::read_to_string(dir.path().join(format!(
        "bundle/{next}/manifests/tusk-operator.clusterserviceversion.yaml"
    )))
    .unwrap();
    assert!(csv.contains(&format!("replaces: tusk-operator.v{open}")), "{csv}");
    let sync = olm::sync(dir.path(), &files, true).unwrap();
    assert!(sync.changed.is_empty() && sync.stale.is_empty(), "{sync:?}");
    let findings = validate(dir.path());
    assert!(errors(&findings).is_empty(), "{findings:#?}");
    // The cut release is the release now: a change to it is refused by name.
    let frozen = dir.path().join(format!(
        "{cut_dir}manifests/tusk-operator.clusterserviceversion.yaml"
    ));
    let edited = std::fs::read_to_string(&frozen)
        .unwrap()
        .replace("maturity: stable", "maturity: beta");
    std::fs::write(&frozen, edited).unwrap();
    let error = olm::sync(dir.path(), &files, false).unwrap_err();
    assert!(
        error.contains("released and frozen, but it differs from the bundle as released"),
        "{error}"
    );
    // Cutting it again is refused.
    let again = olm::release::release(
        dir.path(),
        &open,
        commit,
        &semver::Version::new(9, 0, 0),
        "2027-01-15",
        None,
    )
    .unwrap_err();
    assert!(again.contains("already released"), "{again}");
}
