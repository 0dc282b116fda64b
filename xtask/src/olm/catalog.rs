//! The file-based catalog: one `olm.package`, one `olm.channel` per channel, one `olm.bundle`
//! per release and `olm.deprecations`; and its test variant, whose bundles carry every manifest
//! inline (`olm.bundle.object`, `image: ""`) so that OLM installs them with no unpack Job.

use base64::Engine;
use serde_json::{Value, json};

use super::{Inputs, bundle_manifests, csv::csv_name, plan::Release};

/// The catalog file, relative to `catalog/`.
pub fn catalog_file(package: &str) -> String {
    format!("{package}/catalog.yaml")
}

fn bundle_image(inputs: &Inputs, release: &Release) -> String {
    let digest = crate::images::bundle_digest(inputs, release).unwrap_or_else(|e| {
        panic!(
            "building the bundle image of {} to learn its digest: {e}",
            release.version
        )
    });
    format!("{}@{digest}", inputs.plan.images.bundle)
}

/// JSON as Go's `encoding/json` writes an object it decoded from YAML: keys sorted, compact,
/// and `<`, `>`, `&`, U+2028 and U+2029 escaped. `olm.bundle.object` holds exactly this.
/// Numbers follow Go too: a float with no fraction is written as an integer (`10`, not `10.0`).
pub fn go_json(value: &Value) -> String {
    serde_json::to_string(&go_numbers(value.clone()))
        .expect("JSON values serialize")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn go_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(go_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, go_numbers(v))).collect()),
        other => other,
    }
}

/// The `olm.csv.metadata` of `csv`: operator-registry's `CSVMetadata`, the CSV's annotations,
/// labels and the parts of its spec the console shows, as Go writes that struct (fields it omits
/// when empty are left out, `apiServiceDefinitions` is always there).
pub fn csv_metadata(csv: &Value) -> Value {
    let spec = &csv["spec"];
    let mut metadata = serde_json::Map::new();
    let mut put = |key: &str, value: &Value, omit_empty: bool| {
        let empty = match value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !(omit_empty && empty) {
            metadata.insert(key.to_owned(), go_numbers(value.clone()));
        }
    };
    put("annotations", &csv["metadata"]["annotations"], true);
    let api_services = match &spec["apiservicedefinitions"] {
        Value::Null => json!({}),
        defined => defined.clone(),
    };
    put("apiServiceDefinitions", &api_services, false);
    put(
        "crdDescriptions",
        &omit_empty(&spec["customresourcedefinitions"]),
        false,
    );
    put("description", &spec["description"], true);
    put("displayName", &spec["displayName"], true);
    put("installModes", &spec["installModes"], true);
    put("keywords", &spec["keywords"], true);
    put("labels", &csv["metadata"]["labels"], true);
    put("links", &spec["links"], true);
    put("maintainers", &spec["maintainers"], true);
    put("maturity", &spec["maturity"], true);
    put("minKubeVersion", &spec["minKubeVersion"], true);
    put("nativeAPIs", &spec["nativeAPIs"], true);
    put("provider", &spec["provider"], true);
    Value::Object(metadata)
}

/// `value` as Go writes operator-framework/api's CRD descriptions: every list, and every
/// `displayName` and `description`, is `omitempty`.
fn omit_empty(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::String(s) => {
                        !(s.is_empty() && matches!(key.as_str(), "displayName" | "description"))
                    }
                    _ => true,
                })
                .map(|(k, v)| (k.clone(), omit_empty(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(omit_empty).collect()),
        other => other.clone(),
    }
}

/// The properties of a release's `olm.bundle`, from its `manifests`, in the order `opm render`
/// writes them: sorted by type and value, with the inlined objects last.
pub fn properties(
    inputs: &Inputs,
    release: &Release,
    manifests: &[(String, Value)],
    inline: bool,
) -> Vec<Value> {
    let mut properties: Vec<(String, Value)> = vec![(
        "olm.package".to_owned(),
        json!({"packageName": inputs.plan.package, "version": release.version.to_string()}),
    )];
    let crds = manifests
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m["kind"] == "CustomResourceDefinition");
    for crd in crds {
        let served = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["served"] == true);
        for version in served {
            properties.push((
                "olm.gvk".to_owned(),
                json!({"group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"], "version": version["name"]}),
            ));
        }
    }
    let key = |(kind, value): &(String, Value)| (kind.clone(), go_json(value));
    properties.sort_by_key(key);
    let mut objects: Vec<(String, Value)> = Vec::new();
    if inline {
        for (_, manifest) in manifests {
            let data = base64::engine::general_purpose::STANDARD.encode(go_json(manifest));
            objects.push(("olm.bundle.object".to_owned(), json!({"data": data})));
        }
        objects.sort_by_key(key);
    } else if let Some((_, csv)) = manifests
        .iter()
        .find(|(_, m)| m["kind"] == "ClusterServiceVersion")
    {
        // What OLM and the console read of the CSV without unpacking the bundle image: what
        // `opm render --migrate-level=bundle-object-to-csv-metadata` writes for a bundle image.
        objects.push(("olm.csv.metadata".to_owned(), csv_metadata(csv)));
    }
    properties
        .into_iter()
        .chain(objects)
        .map(|(kind, value)| json!({"type": kind, "value": value}))
        .collect()
}

/// The images of a release, as `opm render` lists them: its CSV's `relatedImages`, then the
/// bundle image without a name, sorted by image.
fn related_images(manifests: &[(String, Value)], bundle_image: &str) -> Vec<Value> {
    let csv = manifests
        .iter()
        .map(|(_, m)| m)
        .find(|m| m["kind"] == "ClusterServiceVersion");
    let mut images: Vec<(String, String)> = csv
        .and_then(|csv| csv["spec"]["relatedImages"].as_array())
        .into_iter()
        .flatten()
        .map(|i| {
            let text = |field: &str| i[field].as_str().unwrap_or_default().to_owned();
            (text("name"), text("image"))
        })
        .collect();
    if !bundle_image.is_empty() {
        images.push((String::new(), bundle_image.to_owned()));
    }
    images.sort_by(|a, b| a.1.cmp(&b.1));
    images
        .into_iter()
        .map(|(name, image)| json!({"name": name, "image": image}))
        .collect()
}

/// `release`'s `olm.bundle`, from its bundle's manifests (for a released release, the committed
/// ones); `inline` makes the test variant.
pub fn bundle(inputs: &Inputs, release: &Release, inline: bool) -> Value {
    let image = if inline {
        String::new()
    } else {
        bundle_image(inputs, release)
    };
    let manifests = bundle_manifests(inputs, release);
    json!({
        "schema": "olm.bundle",
        "name": csv_name(&inputs.plan.package, &release.version),
        "package": inputs.plan.package,
        "image": image,
        "properties": properties(inputs, release, &manifests, inline),
        "relatedImages": related_images(&manifests, &image),
    })
}

/// Every blob of the catalog, in file order; `inline` makes the test variant.
pub fn blobs(inputs: &Inputs, inline: bool) -> Vec<Value> {
    let plan = &inputs.plan;
    let icon = base64::engine::general_purpose::STANDARD.encode(&inputs.icon);
    let newest = plan.releases.last().expect("the plan has a release");
    let mut blobs = vec![json!({
        "schema": "olm.package",
        "name": plan.package,
        "defaultChannel": plan.default_channel,
        "icon": {"base64data": icon, "mediatype": "image/svg+xml"},
        "description": inputs.descriptions[&newest.description],
    })];
    for channel in &plan.channels {
        let entries: Vec<Value> = plan
            .releases
            .iter()
            .filter(|r| r.channels.contains(channel))
            .map(|r| {
                let mut entry = json!({"name": csv_name(&plan.package, &r.version)});
                if let Some(replaces) = &r.replaces {
                    entry["replaces"] = json!(csv_name(&plan.package, replaces));
                }
                if !r.skips.is_empty() {
                    entry["skips"] = r.skips.iter().map(|v| csv_name(&plan.package, v)).collect();
                }
                if let Some(range) = r.skip_range_in(channel) {
                    entry["skipRange"] = json!(range);
                }
                entry
            })
            .collect();
        blobs.push(json!({
            "schema": "olm.channel",
            "name": channel,
            "package": plan.package,
            "entries": entries,
        }));
    }
    for release in &plan.releases {
        blobs.push(bundle(inputs, release, inline));
    }
    let deprecations: Vec<Value> = plan
        .releases
        .iter()
        .flat_map(|r| &r.deprecations)
        .map(|d| {
            json!({
                "reference": {"schema": "olm.bundle", "name": csv_name(&plan.package, &d.bundle)},
                "message": d.message,
            })
        })
        .collect();
    if !deprecations.is_empty() {
        blobs.push(json!({
            "schema": "olm.deprecations",
            "package": plan.package,
            "entries": deprecations,
        }));
    }
    blobs
}

/// Blobs as one YAML stream.
pub fn to_yaml(blobs: &[Value]) -> String {
    blobs
        .iter()
        .map(|b| serde_saphyr::to_string(b).expect("JSON values serialize to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The files under `catalog/`: the catalog itself and the Dockerfile that serves it.
pub fn files(inputs: &Inputs) -> Vec<(String, String)> {
    let package = &inputs.plan.package;
    // No `RUN opm serve --cache-only` pre-builds a cache: its files differ between two builds of
    // the same catalog (pogreb's), which would make the image unreproducible, and opm builds the
    // cache of a catalog this small at startup in well under a second.
    let dockerfile = format!(
        "# The catalog image: opm serving the file-based catalog beside this file. Without a\n\
         # pre-built cache (opm builds it when it starts), so two builds give the same image.\n\
         FROM quay.io/operator-framework/opm:v1.73.0\n\
         ENTRYPOINT [\"/bin/opm\"]\n\
         CMD [\"serve\", \"/configs\"]\n\
         ADD {package} /configs/{package}\n\
         LABEL operators.operatorframework.io.index.configs.v1=/configs\n"
    );
    vec![
        (catalog_file(package), to_yaml(&blobs(inputs, false))),
        ("catalog.Dockerfile".to_owned(), dockerfile),
        // opm reads every other file under catalog/ as catalog objects.
        (
            ".indexignore".to_owned(),
            "# Not catalog objects: opm skips these.\ncatalog.Dockerfile\ngraph.svg\n".to_owned(),
        ),
    ]
}
