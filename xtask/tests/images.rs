//! `cargo xtask images`: the operator, bundle and catalog images as OCI layouts, read back file
//! by file, and reproducible: two builds give the same digests, and another time gives others.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;
use xtask::{
    images::{Image, Sources, build},
    olm::Inputs,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Files standing for the operator's static binary and for opm: their bytes are what the
/// images must carry.
fn sources(dir: &Path, epoch: i64) -> Sources {
    std::fs::write(dir.join("tusk-operator"), b"\x7fELF the operator").unwrap();
    std::fs::write(dir.join("opm"), b"\x7fELF opm").unwrap();
    Sources {
        binary: dir.join("tusk-operator"),
        opm: dir.join("opm"),
        epoch,
    }
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// An image's config and its files (path: mode and bytes), every layer applied in order.
fn unpack(image: &Image) -> (Value, BTreeMap<String, (u32, Vec<u8>)>) {
    let manifest = json_blob(&image.layout, &image.digest);
    let config = json_blob(&image.layout, manifest["config"]["digest"].as_str().unwrap());
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let gz = blob(&image.layout, layer["digest"].as_str().unwrap());
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if header.entry_type().is_file() {
                files.insert(path, (header.mode().unwrap(), data));
            }
        }
    }
    (config, files)
}

fn found<'a>(images: &'a [Image], reference: &str) -> &'a Image {
    images
        .iter()
        .find(|i| i.reference == reference)
        .unwrap_or_else(|| panic!("no image {reference} in {images:#?}"))
}

/// Every file below `dir`, relative to it: its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every image of `inputs` built in `work` (from the stand-in binaries) and pushed to `registry`
/// under `tusk/`: the images, and each reference pushed by digest.
async fn build_and_push(
    registry: &tusk_testenv::registry::Registry,
    inputs: &Inputs,
    work: &Path,
) -> (Vec<Image>, Vec<String>) {
    let built = build(
        root(),
        inputs,
        &sources(work, 1_700_000_000),
        &work.join("images"),
    )
    .unwrap();
    let pushed = xtask::images::push(&built, &format!("{}/tusk", registry.host()), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", registry.log_tail(20)));
    (built, pushed)
}

#[test]
fn images_carry_what_their_containerfiles_add_and_two_builds_give_the_same_digests() {
    let inputs = Inputs::load(root()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let sources = sources(work.path(), 1_700_000_000);
    let first = build(root(), &inputs, &sources, &work.path().join("first")).unwrap();
    let again = build(root(), &inputs, &sources, &work.path().join("again")).unwrap();
    let digests = |images: &[Image]| -> Vec<(String, String)> {
        images
            .iter()
            .map(|i| (i.reference.clone(), i.digest.clone()))
            .collect()
    };
    assert_eq!(digests(&first), digests(&again), "two builds, the same digests");
    let later = build(
        root(),
        &inputs,
        &Sources {
            epoch: 1_700_000_001,
            ..sources.clone()
        },
        &work.path().join("later"),
    )
    .unwrap();
    let open = inputs.plan.releases.last().unwrap().version.to_string();
    let images = &inputs.plan.images;
    // The operator and the catalog take the build's time; a bundle takes its release's date, so
    // its digest is the one the committed catalog references it by, wherever it is built.
    let catalog: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(root().join("catalog/tusk-operator/catalog.yaml")).unwrap(),
    )
    .unwrap();
    for ((reference, a), (_, b)) in digests(&first).iter().zip(digests(&later)) {
        let Some(version) = reference.strip_prefix(&format!("{}:v", images.bundle)) else {
            assert_ne!(*a, b, "{reference}: another time, another digest");
            continue;
        };
        assert_eq!(*a, b, "{reference}: the release's date, whenever it is built");
        let entry = catalog
            .iter()
            .find(|b| b["schema"] == "olm.bundle" && b["name"] == format!("tusk-operator.v{version}"))
            .unwrap_or_else(|| panic!("no olm.bundle for {version}"));
        assert_eq!(
            entry["image"].as_str(),
            Some(format!("{}@{a}", images.bundle).as_str()),
            "the catalog references bundle {version} by the digest it builds to"
        );
    }
    assert_eq!(first.len(), inputs.plan.releases.len() + 2);

    // The operator: the static binary and the licence, as the Containerfile's last stage adds
    // them, its labels, user and entrypoint.
    let operator = found(&first, &format!("{}:{open}", images.operator));
    let (config, files) = unpack(operator);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["licenses/LICENSE", "usr/local/bin/tusk-operator"]
    );
    assert_eq!(
        files["usr/local/bin/tusk-operator"],
        (0o755, std::fs::read(&sources.binary).unwrap())
    );
    assert_eq!(
        files["licenses/LICENSE"].1,
        std::fs::read(root().join("LICENSE")).unwrap()
    );
    assert_eq!(config["config"]["User"], "65532:0");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tusk-operator"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["config"]["Labels"]["version"], open.as_str());
    for label in [
        "name",
        "vendor",
        "release",
        "summary",
        "description",
        "maintainer",
        "url",
    ] {
        assert!(
            config["config"]["Labels"][label].is_string(),
            "certification label {label}: {config:#}"
        );
    }
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    println!("{}: {}", operator.reference, operator.digest);

    // A bundle per release: its directory as committed, with the labels of its
    // metadata/annotations.yaml.
    for release in &inputs.plan.releases {
        let bundle = found(&first, &format!("{}:v{}", images.bundle, release.version));
        let (config, files) = unpack(bundle);
        assert_eq!(config["created"], format!("{}T00:00:00Z", release.date));
        let dir = root().join("bundle").join(release.version.to_string());
        let mut expected = BTreeMap::new();
        for part in ["manifests", "metadata", "tests/scorecard"] {
            for (path, data) in tree(&dir.join(part)) {
                expected.insert(format!("{part}/{path}"), data);
            }
        }
        let got: BTreeMap<String, Vec<u8>> = files.into_iter().map(|(p, (_, d))| (p, d)).collect();
        assert_eq!(got, expected, "{}", bundle.reference);
        let annotations: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join("metadata/annotations.yaml")).unwrap())
                .unwrap();
        for (key, value) in annotations["annotations"].as_object().unwrap() {
            assert_eq!(
                &config["config"]["Labels"][key], value,
                "{}: label {key}",
                bundle.reference
            );
        }
        println!("{}: {}", bundle.reference, bundle.digest);
    }

    // The catalog: the file-based catalog under /configs, opm at /bin/opm, opm serve's command.
    let catalog = found(&first, &format!("{}:{open}", images.catalog));
    let (config, files) = unpack(catalog);
    assert_eq!(files["bin/opm"], (0o755, std::fs::read(&sources.opm).unwrap()));
    assert_eq!(
        files["configs/tusk-operator/catalog.yaml"].1,
        std::fs::read(root().join("catalog/tusk-operator/catalog.yaml")).unwrap()
    );
    assert_eq!(
        config["config"]["Labels"]["operators.operatorframework.io.index.configs.v1"],
        "/configs"
    );
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/bin/opm"]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve", "/configs"]));
    // Nothing of the Containerfile is left undone: only the base image differs.
    assert_eq!(catalog.differences.len(), 1, "{:?}", catalog.differences);
    println!("{}: {}", catalog.reference, catalog.digest);
}

/// The images pushed to a real registry (distribution's, on loopback) keep their digests: each
/// manifest pulled by digest is the one built, byte for byte, and so is every blob it names.
#[tokio::test]
async fn pushed_images_resolve_in_a_registry_by_digest() {
    use oci_client::{Reference, secrets::RegistryAuth};
    let registry = tusk_testenv::registry::Registry::start().await.unwrap();
    let inputs = Inputs::load(root()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (built, pushed) = build_and_push(&registry, &inputs, work.path()).await;
    assert_eq!(pushed.len(), built.len());
    let (client, _) = xtask::images::registry_client(true);
    let pull_manifest = async |reference: &Reference| {
        client
            .pull_manifest_raw(
                reference,
                &RegistryAuth::Anonymous,
                &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
            )
            .await
            .unwrap_or_else(|e| panic!("{reference}: {e}"))
    };
    for (image, by_digest) in built.iter().zip(&pushed) {
        assert!(by_digest.ends_with(&format!("@{}", image.digest)), "{by_digest}");
        let reference: Reference = by_digest.parse().unwrap();
        let (body, digest) = pull_manifest(&reference).await;
        assert_eq!(digest, image.digest, "{by_digest}");
        assert_eq!(
            format!("sha256:{}", xtask::olm::frozen::sha256_hex(&body)),
            image.digest
        );
        assert_eq!(body.as_ref(), blob(&image.layout, &image.digest).as_slice());
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        let layers = manifest["layers"].as_array().unwrap().clone();
        for descriptor in std::iter::once(&manifest["config"]).chain(&layers) {
            let digest = descriptor["digest"].as_str().unwrap();
            let mut pulled = Vec::new();
            client
                .pull_blob(&reference, digest, &mut pulled)
                .await
                .unwrap_or_else(|e| panic!("{by_digest}: {digest}: {e}"));
            assert_eq!(pulled, blob(&image.layout, digest), "{by_digest}: {digest}");
        }
        // The tag names the same manifest.
        let tagged: Reference = xtask::images::pushed_reference(image, &format!("{}/tusk", registry.host()))
            .parse()
            .unwrap();
        let (_, digest) = pull_manifest(&tagged).await;
        assert_eq!(digest, image.digest, "{tagged}");
        println!("{by_digest}");
    }
}

/// Digests hold: with the operator image pushed and its digest recorded for the open release,
/// and every PostgreSQL image's digest read from the registry by `cargo xtask pin-postgres`, the
/// open release's CSV references every image by digest, each resolves in the registry, and the
/// CSV says `disconnected: "true"`; with one image by tag, it says `"false"`.
///
/// The registry holds no PostgreSQL image (this machine cannot reach docker.io): a bundle image
/// stands in for each `postgres:<version>` it serves, pushed under that name, so that the digest
/// `pin-postgres` records is one a registry really served.
#[tokio::test]
async fn a_release_with_every_image_pinned_by_digest_is_disconnected_and_resolves() {
    use oci_client::{Reference, secrets::RegistryAuth};
    use tusk::facts::postgres_images::{Catalog, FILE};
    let registry = tusk_testenv::registry::Registry::start().await.unwrap();
    let host = registry.host();
    let mut inputs = Inputs::load(root()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (built, pushed) = build_and_push(&registry, &inputs, work.path()).await;
    let open = inputs.plan.releases.last().unwrap().version.clone();
    let operator = built
        .iter()
        .position(|i| i.reference == format!("{}:{open}", inputs.plan.images.operator))
        .unwrap();
    let stand_in = built.iter().find(|i| i.reference.contains("-bundle:")).unwrap();

    // pin-postgres on a tree whose catalog names the local registry's repository.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("config")).unwrap();
    let catalog = &inputs.postgres_images;
    let repository = format!("{host}/library/postgres");
    let mut text = format!("# The catalog, in the local registry.\nrepository: {repository}\nimages:\n");
    for entry in &catalog.images {
        text.push_str(&format!(
            "  - major: {}\n    version: \"{}\"\n",
            entry.major, entry.version
        ));
        xtask::images::push_as(stand_in, &format!("{repository}:{}", entry.version), true)
            .await
            .unwrap();
    }
    std::fs::write(tree.path().join(FILE), &text).unwrap();
    let pinned = xtask::pin::pin_postgres(tree.path(), true).await.unwrap();
    assert_eq!(pinned.len(), catalog.images.len());
    for (_, reference, digest) in &pinned {
        assert_eq!(
            *digest, stand_in.digest,
            "{reference}: the digest the registry serves"
        );
    }
    assert!(
        xtask::pin::pin_postgres(tree.path(), true)
            .await
            .unwrap()
            .is_empty(),
        "pinned once"
    );
    let pinned_catalog = Catalog::parse(&std::fs::read_to_string(tree.path().join(FILE)).unwrap()).unwrap();
    assert!(pinned_catalog.pinned());

    // The open release, run from the local registry by digest.
    inputs.plan.images.operator = format!("{host}/tusk/tusk-operator");
    inputs.postgres_images = pinned_catalog.clone();
    let digest = pushed[operator].rsplit_once('@').unwrap().1.to_owned();
    inputs.plan.releases.last_mut().unwrap().operator_digest = Some(digest);
    let csv_of = |inputs: &Inputs| -> Value {
        let release = inputs.plan.releases.last().unwrap();
        xtask::olm::bundle_manifests(inputs, release)
            .into_iter()
            .find(|(name, _)| name.ends_with(".clusterserviceversion.yaml"))
            .unwrap()
            .1
    };
    let csv = csv_of(&inputs);
    let key = "features.operators.openshift.io/disconnected";
    assert_eq!(csv["metadata"]["annotations"][key], "true");
    let references = xtask::olm::csv::image_references(&csv);
    assert!(
        references
            .iter()
            .any(|r| r.field.contains("TUSK_POSTGRES_IMAGES"))
    );
    assert!(
        references
            .iter()
            .any(|r| r.field.contains("TUSK_INSTANCE_MANAGER_IMAGE"))
    );
    let (client, _) = xtask::images::registry_client(true);
    for reference in &references {
        assert!(reference.pinned(), "{reference:?}");
        let parsed: Reference = reference.image.parse().unwrap();
        let (_, digest) = client
            .pull_manifest_raw(
                &parsed,
                &RegistryAuth::Anonymous,
                &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", reference.field));
        assert_eq!(Some(digest.as_str()), parsed.digest(), "{}", reference.field);
    }

    // One PostgreSQL image by tag: the release is no longer disconnected.
    inputs.postgres_images.images[0].digest = None;
    assert_eq!(csv_of(&inputs)["metadata"]["annotations"][key], "false");
}

/// The catalog is what opm renders from the bundle images: a basic catalog template (the
/// package, channels and deprecations as generated, each bundle only its image reference by
/// digest) rendered by `opm alpha render-template basic` with the bundle images pulled from a
/// real registry (`--migrate-level=bundle-object-to-csv-metadata`, as catalogs for OpenShift
/// are rendered) is the generated catalog, object for object: every bundle's `olm.gvk`s,
/// `olm.package`, `olm.csv.metadata` (what the console shows without unpacking) and
/// `relatedImages`.
#[tokio::test]
async fn opm_renders_the_catalog_from_the_bundle_images() {
    let registry = tusk_testenv::registry::Registry::start().await.unwrap();
    let host = registry.host();
    let mut inputs = Inputs::load(root()).unwrap();
    inputs.plan.images.bundle = format!("{host}/tusk/tusk-operator-bundle");
    let work = tempfile::tempdir().unwrap();
    let mut bundles = Vec::new();
    for release in &inputs.plan.releases {
        bundles.push(xtask::images::bundle_image(&inputs, release, work.path()).unwrap());
    }
    xtask::images::push(&bundles, &format!("{host}/tusk"), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", registry.log_tail(20)));
    let generated = xtask::olm::catalog::blobs(&inputs, false);
    let entries: Vec<Value> = generated
        .iter()
        .map(|blob| match blob["schema"].as_str() {
            Some("olm.bundle") => serde_json::json!({"schema": "olm.bundle", "image": blob["image"]}),
            _ => blob.clone(),
        })
        .collect();
    let template = work.path().join("template.json");
    std::fs::write(
        &template,
        serde_json::to_vec(&serde_json::json!({"schema": "olm.template.basic", "entries": entries})).unwrap(),
    )
    .unwrap();
    // opm pulls with containers/image, which wants a signature policy: accept what the test
    // registry serves.
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".config/containers")).unwrap();
    std::fs::write(
        home.join(".config/containers/policy.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(tusk_testenv::Toolchain::get().unwrap().bin("opm"))
        .args(["alpha", "render-template", "basic"])
        .arg(&template)
        .args([
            "--use-http",
            "--migrate-level=bundle-object-to-csv-metadata",
            "-o",
            "json",
        ])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opm alpha render-template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let key = |blob: &Value| format!("{} {}", blob["schema"], blob["name"]);
    let by_key =
        |blobs: &[Value]| -> BTreeMap<String, Value> { blobs.iter().map(|b| (key(b), b.clone())).collect() };
    let (rendered, generated) = (by_key(&rendered), by_key(&generated));
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>()
    );
    for (name, blob) in &generated {
        assert_eq!(
            &rendered[name], blob,
            "{name}: opm renders it otherwise than the generator"
        );
    }
    let bundles_rendered = rendered.keys().filter(|k| k.contains("olm.bundle")).count();
    assert_eq!(bundles_rendered, inputs.plan.releases.len());
    println!("opm rendered {} objects, each as generated", rendered.len());
}
