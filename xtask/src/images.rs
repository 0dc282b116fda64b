//! `cargo xtask images`: Tusk's images as OCI image layouts, built with no container engine.
//!
//! Each image is read from the file an engine builds it from, so that labels, user, entrypoint
//! and paths have one source: the `Containerfile` (the operator), `bundle/<version>/bundle.Dockerfile`
//! (one bundle image per release) and `catalog/catalog.Dockerfile` (the catalog). Their last
//! stage is interpreted: `ARG` defaults, `LABEL`, `ENV`, `COPY` and `ADD` of files in the build
//! context, `USER`, `WORKDIR`, `ENTRYPOINT` and `CMD` (JSON form). Where an engine would take
//! something from elsewhere, this build differs, and says so in [`Image::differences`]:
//! - **No base image is pulled** (`FROM`). The operator image holds the static binary and its
//!   licence, not `ubi-micro`'s files; the catalog image holds an `opm` binary built from the
//!   same operator-registry version as the `opm` base image names, at `/bin/opm`.
//! - **`COPY --from=<stage>`** takes the file given for that stage's path (the operator's static
//!   binary for `/out/tusk-operator`).
//! - **`RUN` is not run.** The catalog's one `RUN` pre-builds `opm serve`'s cache; without it,
//!   `opm serve` builds the cache when it starts.
//!
//! Builds are reproducible: every file and directory has the time [`Sources::epoch`] (from
//! `SOURCE_DATE_EPOCH`, or the last commit's time; a bundle image's, its release's date, so the
//! catalog can reference it by a digest known before it is built), owner 0:0 and mode 0644 or 0755, tar
//! entries are in path order, gzip headers carry no name or time, and the JSON is canonical
//! (ocidir writes it so). Two builds of the same commit give the same digests.
//!
//! The layouts go to `<out>/<repository>/` (such as `tusk-operator-bundle`), one per image
//! repository, each image tagged as the plan names it (`org.opencontainers.image.ref.name`).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use ocidir::{
    OciDir,
    cap_std::{ambient_authority, fs::Dir},
    oci_spec::image::{
        Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os,
        PlatformBuilder, RootFsBuilder,
    },
};

use crate::olm::Inputs;

/// The file an engine builds the operator image from.
pub const CONTAINERFILE: &str = "Containerfile";
/// The path in the operator's build stage that holds the static binary.
pub const BINARY_IN_BUILD_STAGE: &str = "/out/tusk-operator";

/// What the images are made of besides the repository.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The operator's static binary (`tusk-operator`, built for `x86_64-unknown-linux-musl`).
    pub binary: PathBuf,
    /// The `opm` binary of the catalog image, standing for its `opm` base image.
    pub opm: PathBuf,
    /// The time of every file and of the images, in seconds since the epoch.
    pub epoch: i64,
}

/// One image built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Where an engine would push it: `<repository>:<tag>`.
    pub reference: String,
    /// The OCI layout it is in.
    pub layout: PathBuf,
    /// The digest of its manifest, `sha256:…`.
    pub digest: String,
    /// How it differs from what an engine builds from the same file.
    pub differences: Vec<String>,
}

/// The last stage of a Containerfile, as this build reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stage {
    /// The base image (`FROM`).
    pub from: String,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// `ENV`s, as `NAME=value`.
    pub env: Vec<String>,
    /// Files by their absolute path in the image: mode and where they come from.
    pub files: BTreeMap<String, (u32, Source)>,
    /// `USER`.
    pub user: Option<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// Instructions not carried out (`RUN`).
    pub not_run: Vec<String>,
}

/// Where a file of an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file in the build context.
    Context(PathBuf),
    /// A path of another build stage.
    Stage(String, String),
}

/// A file of an image: its absolute path, its mode and where it comes from.
type ImageFile = (String, (u32, Source));

/// Reads the last stage of Containerfile `text`, whose build context is `context`, with
/// `args` overriding `ARG` defaults.
pub fn read_stage(text: &str, context: &Path, args: &BTreeMap<String, String>) -> Result<Stage, String> {
    let mut stage = Stage::default();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut global_args: BTreeMap<String, String> = BTreeMap::new();
    let mut in_stage = false;
    let lines = logical_lines(text);
    let is_from = |line: &str| {
        line.split_whitespace()
            .next()
            .is_some_and(|i| i.eq_ignore_ascii_case("FROM"))
    };
    let first_from = lines.iter().position(|(_, l)| is_from(l));
    let last_from = lines.iter().rposition(|(_, l)| is_from(l));
    for (index, (number, line)) in lines.iter().enumerate() {
        // The global ARGs, then the last stage: the earlier stages build what it copies.
        if first_from.is_some_and(|first| index >= first) && last_from.is_some_and(|last| index < last) {
            continue;
        }
        let at = |message: String| format!("line {number}: {message}");
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let expand = |word: &str, vars: &BTreeMap<String, String>| -> Result<String, String> {
            expand_vars(word, vars).map_err(at)
        };
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                let from = expand(rest.split_whitespace().next().unwrap_or_default(), &global_args)?;
                stage = Stage {
                    from,
                    ..Stage::default()
                };
                vars = BTreeMap::new();
                in_stage = true;
            }
            "ARG" => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                let value = args
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| default.trim_matches('"').to_owned());
                if in_stage {
                    // A global ARG's value is used when the stage names it without a default.
                    let value = if default.is_empty() {
                        global_args.get(name).cloned().unwrap_or(value)
                    } else {
                        value
                    };
                    vars.insert(name.to_owned(), value);
                } else {
                    global_args.insert(name.to_owned(), value);
                }
            }
            "LABEL" | "ENV" => {
                let words =
                    shlex::split(rest).ok_or_else(|| at(format!("{instruction}: unbalanced quotes")))?;
                for word in words {
                    let (key, value) = word
                        .split_once('=')
                        .ok_or_else(|| at(format!("{instruction} {word}: expected key=value")))?;
                    let value = expand(value, &vars)?;
                    if instruction.eq_ignore_ascii_case("LABEL") {
                        stage.labels.insert(key.to_owned(), value);
                    } else {
                        stage.env.push(format!("{key}={value}"));
                        vars.insert(key.to_owned(), value);
                    }
                }
            }
            "COPY" | "ADD" => {
                let mut words: Vec<String> = shlex::split(rest)
                    .ok_or_else(|| at(format!("{instruction}: unbalanced quotes")))?
                    .iter()
                    .map(|w| expand(w, &vars))
                    .collect::<Result<_, _>>()?;
                let from = match words.first() {
                    Some(flag) if flag.starts_with("--from=") => {
                        Some(words.remove(0)["--from=".len()..].to_owned())
                    }
                    Some(flag) if flag.starts_with("--") => {
                        return Err(at(format!("{instruction} {flag}: only --from is understood")));
                    }
                    _ => None,
                };
                let [sources @ .., destination] = words.as_slice() else {
                    return Err(at(format!("{instruction} needs a source and a destination")));
                };
                if sources.is_empty() {
                    return Err(at(format!("{instruction} needs a source and a destination")));
                }
                for source in sources {
                    match &from {
                        Some(other) => {
                            let target = into(destination, source, sources.len() > 1);
                            stage
                                .files
                                .insert(target, (0o755, Source::Stage(other.clone(), source.clone())));
                        }
                        None => {
                            copy_from_context(&mut stage, context, source, destination, sources.len() > 1)
                                .map_err(at)?
                        }
                    }
                }
            }
            "USER" => stage.user = Some(expand(rest, &vars)?),
            "WORKDIR" => stage.workdir = Some(expand(rest, &vars)?),
            "ENTRYPOINT" | "CMD" => {
                let exec: Vec<String> = serde_json::from_str(rest)
                    .map_err(|e| at(format!("{instruction} must be in JSON form (exec form): {e}")))?;
                if instruction.eq_ignore_ascii_case("ENTRYPOINT") {
                    stage.entrypoint = Some(exec);
                } else {
                    stage.cmd = Some(exec);
                }
            }
            "RUN" => stage.not_run.push(line.clone()),
            "SHELL" => {}
            other => return Err(at(format!("{other}: not an instruction this build understands"))),
        }
    }
    if !in_stage {
        return Err("no FROM".to_owned());
    }
    Ok(stage)
}

/// The file's lines with `\` continuations joined and comments and blank lines left out, each
/// with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (start, mut joined) = current.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
                current = Some((start, joined));
            }
            None => {
                joined.push_str(trimmed);
                lines.push((start, joined));
            }
        }
    }
    if let Some(last) = current {
        lines.push(last);
    }
    lines
}

/// `word` with `${NAME}` and `$NAME` replaced by `vars`; an unknown name is an error.
fn expand_vars(word: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let pattern = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
        .expect("a valid pattern");
    let mut unknown = None;
    let expanded = pattern.replace_all(word, |c: &regex::Captures<'_>| {
        let name = c.get(1).or_else(|| c.get(2)).expect("one group matched").as_str();
        vars.get(name).cloned().unwrap_or_else(|| {
            unknown.get_or_insert_with(|| name.to_owned());
            String::new()
        })
    });
    match unknown {
        Some(name) => Err(format!("${name} is not an ARG or ENV of the stage")),
        None => Ok(expanded.into_owned()),
    }
}

/// Where `source` lands given `destination`: inside it when it is a directory (ends with `/`, or
/// several sources go there), at it otherwise.
fn into(destination: &str, source: &str, several: bool) -> String {
    if destination.ends_with('/') || several {
        let name = source.trim_end_matches('/').rsplit('/').next().unwrap_or(source);
        format!("{}/{name}", destination.trim_end_matches('/'))
    } else {
        destination.to_owned()
    }
}

/// Adds `source` from `context` at `destination`: a file, or a directory's contents.
fn copy_from_context(
    stage: &mut Stage,
    context: &Path,
    source: &str,
    destination: &str,
    several: bool,
) -> Result<(), String> {
    let path = context.join(source);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{source}: {e}"))?;
    if meta.is_dir() {
        let base = destination.trim_end_matches('/');
        for file in files_below(&path)? {
            let relative = file.strip_prefix(&path).expect("below the directory");
            let target = format!("{base}/{}", relative.display());
            stage
                .files
                .insert(target, (mode_of(&file)?, Source::Context(file)));
        }
    } else {
        let target = into(destination, source, several);
        stage
            .files
            .insert(target, (mode_of(&path)?, Source::Context(path)));
    }
    Ok(())
}

/// 0755 for a file any execute bit is set on, 0644 otherwise: what a checkout gives whatever the
/// umask.
fn mode_of(path: &Path) -> Result<u32, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    Ok(if mode & 0o111 == 0 { 0o644 } else { 0o755 })
}

/// Every file below `dir`, in path order.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()).map_err(|e| format!("{}: {e}", dir.display())))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_below(&entry)?);
        } else {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Builds every image of `inputs`'s plan from the repository at `root` into `out`.
pub fn build(root: &Path, inputs: &Inputs, sources: &Sources, out: &Path) -> Result<Vec<Image>, String> {
    let images = &inputs.plan.images;
    let open = inputs
        .plan
        .releases
        .last()
        .ok_or("the plan has no release")?
        .version
        .to_string();
    let mut built = Vec::new();
    let stage_files = BTreeMap::from([(BINARY_IN_BUILD_STAGE.to_owned(), sources.binary.clone())]);

    let text = read(root, CONTAINERFILE)?;
    let args = BTreeMap::from([("VERSION".to_owned(), open.clone())]);
    let stage = read_stage(&text, root, &args).map_err(|e| format!("{CONTAINERFILE} {e}"))?;
    built.push(write_image(
        out,
        &format!("{}:{open}", images.operator),
        &stage,
        &[],
        &stage_files,
        sources.epoch,
        vec![format!(
            "no base image: {} is not pulled, the image holds only the files the Containerfile adds",
            stage.from
        )],
    )?);

    for release in &inputs.plan.releases {
        built.push(bundle_image(inputs, release, out)?);
    }

    built.push(catalog_image(inputs, &sources.opm, sources.epoch, out)?);
    Ok(built)
}

/// `release`'s bundle image, written into the layouts under `out`: built from its bundle's files
/// as the generator makes them (for a released release, the committed ones), laid out in a
/// scratch build context, with the release's date ([`crate::olm::plan::Release::date`]) as the
/// time of every file. So its digest depends on nothing but the bundle, and the catalog can
/// reference it by that digest.
pub fn bundle_image(
    inputs: &Inputs,
    release: &crate::olm::plan::Release,
    out: &Path,
) -> Result<Image, String> {
    let scratch = build_context(crate::olm::bundle_files(inputs, release))?;
    let context = scratch.path();
    let file = format!("bundle/{}/bundle.Dockerfile", release.version);
    let text =
        std::fs::read_to_string(context.join("bundle.Dockerfile")).map_err(|e| format!("{file}: {e}"))?;
    let stage = read_stage(&text, context, &BTreeMap::new()).map_err(|e| format!("{file} {e}"))?;
    write_image(
        out,
        &format!("{}:v{}", inputs.plan.images.bundle, release.version),
        &stage,
        &[],
        &BTreeMap::new(),
        release.epoch()?,
        Vec::new(),
    )
}

/// The catalog image, written into the layouts under `out`: built from the catalog's files as
/// the generator makes them from `inputs` (the same as committed, when `cargo xtask check`
/// passes), laid out in a scratch build context, with `opm` standing for its base image's.
pub fn catalog_image(inputs: &Inputs, opm: &Path, epoch: i64, out: &Path) -> Result<Image, String> {
    let scratch = build_context(crate::olm::catalog::files(inputs))?;
    let context = scratch.path();
    let file = "catalog/catalog.Dockerfile";
    let text =
        std::fs::read_to_string(context.join("catalog.Dockerfile")).map_err(|e| format!("{file}: {e}"))?;
    let stage = read_stage(&text, context, &BTreeMap::new()).map_err(|e| format!("{file} {e}"))?;
    let mut differences = vec![format!(
        "no base image: instead of {}, an opm built from the same operator-registry module at /bin/opm",
        stage.from
    )];
    differences.extend(stage.not_run.iter().map(|run| format!("not run: {run}")));
    let open = inputs.plan.releases.last().ok_or("the plan has no release")?;
    write_image(
        out,
        &format!("{}:{}", inputs.plan.images.catalog, open.version),
        &stage,
        &[("/bin/opm".to_owned(), (0o755, Source::Context(opm.to_path_buf())))],
        &BTreeMap::new(),
        epoch,
        differences,
    )
}

/// A scratch build context holding `files` (paths relative to it, and their contents).
fn build_context(files: Vec<(String, String)>) -> Result<tempfile::TempDir, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch build context: {e}"))?;
    for (path, contents) in files {
        let file = scratch.path().join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, contents).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(scratch)
}

/// The digest of `release`'s bundle image ([`bundle_image`], built into a scratch directory).
pub fn bundle_digest(inputs: &Inputs, release: &crate::olm::plan::Release) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch image layout: {e}"))?;
    Ok(bundle_image(inputs, release, scratch.path())?.digest)
}

fn read(root: &Path, path: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: {e}"))
}

/// Writes the image of `stage` (on `base`'s files, a layer of their own) as `reference` into
/// the layout of its repository under `out`.
fn write_image(
    out: &Path,
    reference: &str,
    stage: &Stage,
    base: &[ImageFile],
    stage_files: &BTreeMap<String, PathBuf>,
    epoch: i64,
    differences: Vec<String>,
) -> Result<Image, String> {
    let (repository, tag) = reference
        .rsplit_once(':')
        .ok_or_else(|| format!("{reference}: no tag"))?;
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let layout = out.join(name);
    std::fs::create_dir_all(&layout).map_err(|e| format!("{}: {e}", layout.display()))?;
    let oci_err = |e: ocidir::Error| format!("{}: {e}", layout.display());
    let dir = Dir::open_ambient_dir(&layout, ambient_authority())
        .map_err(|e| format!("{}: {e}", layout.display()))?;
    let oci = OciDir::ensure(dir).map_err(oci_err)?;
    let created = k8s_openapi::jiff::Timestamp::from_second(epoch)
        .map_err(|e| format!("the epoch {epoch}: {e}"))?
        .to_string();
    let mut config_builder = ConfigBuilder::default()
        .labels(
            stage
                .labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .env(stage.env.clone());
    if let Some(user) = &stage.user {
        config_builder = config_builder.user(user.clone());
    }
    if let Some(workdir) = &stage.workdir {
        config_builder = config_builder.working_dir(workdir.clone());
    }
    if let Some(entrypoint) = &stage.entrypoint {
        config_builder = config_builder.entrypoint(entrypoint.clone());
    }
    if let Some(cmd) = &stage.cmd {
        config_builder = config_builder.cmd(cmd.clone());
    }
    let spec_err = |e: ocidir::oci_spec::OciSpecError| format!("{reference}: {e}");
    let mut config: ImageConfiguration = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .created(created.clone())
        .config(config_builder.build().map_err(spec_err)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(Vec::<String>::new())
                .build()
                .map_err(spec_err)?,
        )
        .build()
        .map_err(spec_err)?;
    let mut manifest = oci
        .new_empty_manifest()
        .map_err(oci_err)?
        .build()
        .map_err(spec_err)?;
    let layers: Vec<(&str, Vec<ImageFile>)> = [
        ("the base image's files", base.to_vec()),
        (
            "the files the Containerfile adds",
            stage.files.iter().map(|(p, f)| (p.clone(), f.clone())).collect(),
        ),
    ]
    .into_iter()
    .filter(|(_, files)| !files.is_empty())
    .collect();
    for (description, files) in layers {
        let mut tar = tar::Builder::new(
            oci.create_gzip_layer(Some(flate2::Compression::default()))
                .map_err(oci_err)?,
        );
        tar.mode(tar::HeaderMode::Deterministic);
        let mut dirs = std::collections::BTreeSet::new();
        let mut sorted = files;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, (mode, source)) in sorted {
            let relative = path.trim_start_matches('/');
            // Parents first, each once.
            let mut parent = String::new();
            for part in relative
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |(_, p)| p)
            {
                parent = if parent.is_empty() {
                    (*part).to_owned()
                } else {
                    format!("{parent}/{part}")
                };
                if dirs.insert(parent.clone()) {
                    let mut header = header(tar::EntryType::Directory, 0o755, 0, epoch);
                    tar.append_data(&mut header, format!("{parent}/"), std::io::empty())
                        .map_err(|e| format!("{reference}: {e}"))?;
                }
            }
            let local = match &source {
                Source::Context(file) => file.clone(),
                Source::Stage(stage_name, stage_path) => {
                    stage_files.get(stage_path).cloned().ok_or_else(|| {
                        format!("{reference}: no file is given for {stage_path} of stage {stage_name}")
                    })?
                }
            };
            let data = std::fs::read(&local).map_err(|e| format!("{}: {e}", local.display()))?;
            let mut header = header(tar::EntryType::Regular, mode, data.len() as u64, epoch);
            tar.append_data(&mut header, relative, data.as_slice())
                .map_err(|e| format!("{reference}: {e}"))?;
        }
        let mut writer = tar.into_inner().map_err(|e| format!("{reference}: {e}"))?;
        writer.flush().map_err(|e| format!("{reference}: {e}"))?;
        let layer = writer.complete().map_err(oci_err)?;
        let history = HistoryBuilder::default()
            .created(created.clone())
            .created_by(format!("cargo xtask images: {description}"))
            .build()
            .map_err(spec_err)?;
        oci.push_layer_with_history(&mut manifest, &mut config, layer, Some(history));
    }
    let platform = PlatformBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .build()
        .map_err(spec_err)?;
    let descriptor = oci
        .insert_manifest_and_config(manifest, config, Some(tag), platform)
        .map_err(oci_err)?;
    Ok(Image {
        reference: reference.to_owned(),
        layout,
        digest: descriptor.digest().to_string(),
        differences,
    })
}

/// Where `image` goes in the registry `prefix` (a host and an optional path, such as
/// `quay.io/me` or `127.0.0.1:5000`): `<prefix>/<repository name>:<tag>`.
pub fn pushed_reference(image: &Image, prefix: &str) -> String {
    let (repository, tag) = image.reference.rsplit_once(':').expect("built with a tag");
    let name = repository.rsplit('/').next().unwrap_or(repository);
    format!("{}/{name}:{tag}", prefix.trim_end_matches('/'))
}

/// Pushes `images` to the registry `prefix` (see [`pushed_reference`]) with oci-client: every
/// blob, then the manifest byte for byte, so that each image keeps its digest there. Over plain
/// HTTP when `plain_http` (a registry on loopback); anonymously, or as `REGISTRY_USERNAME` with
/// `REGISTRY_PASSWORD` when they are set. Returns each reference pushed, by digest
/// (`<prefix>/<name>@sha256:…`).
pub async fn push(images: &[Image], prefix: &str, plain_http: bool) -> Result<Vec<String>, String> {
    let mut pushed = Vec::new();
    for image in images {
        pushed.push(push_as(image, &pushed_reference(image, prefix), plain_http).await?);
    }
    Ok(pushed)
}

/// A registry client, over plain HTTP when `plain_http`, and its credentials:
/// `REGISTRY_USERNAME` with `REGISTRY_PASSWORD` when they are set, else anonymous.
pub fn registry_client(plain_http: bool) -> (oci_client::Client, oci_client::secrets::RegistryAuth) {
    use oci_client::{
        Client,
        client::{ClientConfig, ClientProtocol},
        secrets::RegistryAuth,
    };
    let client = Client::new(ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    });
    let auth = match (
        std::env::var("REGISTRY_USERNAME"),
        std::env::var("REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    };
    (client, auth)
}

/// Pushes `image` as `target` (`<registry>/<path>:<tag>`), every blob and then the manifest byte
/// for byte; returns the reference by digest, `<registry>/<path>@sha256:…`.
pub async fn push_as(image: &Image, target: &str, plain_http: bool) -> Result<String, String> {
    use oci_client::{Reference, RegistryOperation};
    let (client, auth) = registry_client(plain_http);
    let reference: Reference = target.parse().map_err(|e| format!("{target}: {e}"))?;
    let failed =
        |what: &str, e: oci_client::errors::OciDistributionError| format!("{target}: pushing {what}: {e}");
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| failed("(authenticating)", e))?;
    let blob = |digest: &str| -> Result<Vec<u8>, String> {
        let path = image
            .layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let manifest = blob(&image.digest)?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| format!("{target}: its manifest: {e}"))?;
    let layers = parsed["layers"].as_array().cloned().unwrap_or_default();
    for descriptor in std::iter::once(&parsed["config"]).chain(layers.iter()) {
        let digest = descriptor["digest"]
            .as_str()
            .ok_or_else(|| format!("{target}: a descriptor without a digest"))?;
        client
            .push_blob(&reference, blob(digest)?, digest)
            .await
            .map_err(|e| failed(digest, e))?;
    }
    client
        .push_manifest_raw(
            &reference,
            manifest,
            http::HeaderValue::from_static(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE),
        )
        .await
        .map_err(|e| failed("the manifest", e))?;
    let (repository, _) = target.rsplit_once(':').expect("a tag");
    Ok(format!("{repository}@{}", image.digest))
}

/// A tar header of owner 0:0 with `mode`, `size` and time `epoch`.
fn header(kind: tar::EntryType, mode: u32, size: u64, epoch: i64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(epoch).unwrap_or(0));
    header
}

/// The time builds take for their files: `SOURCE_DATE_EPOCH` when set, else the last commit's.
pub fn source_date_epoch(root: &Path) -> Result<i64, String> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .parse()
            .map_err(|e| format!("SOURCE_DATE_EPOCH {value:?}: {e}; expected seconds since 1970"));
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git log: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("the last commit's time: {e}; set SOURCE_DATE_EPOCH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_reads_labels_args_copies_user_and_exec_forms() {
        let context = tempfile::tempdir().unwrap();
        std::fs::write(context.path().join("LICENSE"), "text").unwrap();
        std::fs::create_dir_all(context.path().join("manifests/sub")).unwrap();
        std::fs::write(context.path().join("manifests/a.yaml"), "a").unwrap();
        std::fs::write(context.path().join("manifests/sub/b.yaml"), "b").unwrap();
        let text = r#"
ARG BASE=example/base:1
FROM example/build AS build
RUN make
FROM ${BASE}
ARG VERSION=1.0.0
# a comment
LABEL name="tusk" \
      version="${VERSION}" summary="two words"
COPY LICENSE /licenses/LICENSE
COPY manifests /manifests/
COPY --from=build /out/bin /usr/local/bin/bin
USER 65532:0
ENTRYPOINT ["/usr/local/bin/bin"]
CMD ["run"]
"#;
        let args = BTreeMap::from([("VERSION".to_owned(), "2.0.0".to_owned())]);
        let stage = read_stage(text, context.path(), &args).unwrap();
        assert_eq!(stage.from, "example/base:1");
        assert_eq!(stage.labels["version"], "2.0.0");
        assert_eq!(stage.labels["summary"], "two words");
        assert_eq!(stage.user.as_deref(), Some("65532:0"));
        assert_eq!(stage.entrypoint, Some(vec!["/usr/local/bin/bin".to_owned()]));
        assert_eq!(stage.cmd, Some(vec!["run".to_owned()]));
        assert!(
            stage.not_run.is_empty(),
            "the build stage's RUN is not the last stage's"
        );
        let paths: Vec<&str> = stage.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/licenses/LICENSE",
                "/manifests/a.yaml",
                "/manifests/sub/b.yaml",
                "/usr/local/bin/bin"
            ]
        );
        assert_eq!(
            stage.files["/usr/local/bin/bin"].1,
            Source::Stage("build".to_owned(), "/out/bin".to_owned())
        );
    }

    #[test]
    fn a_stage_refuses_what_it_cannot_build_naming_the_line() {
        let context = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("FROM a\nCOPY missing /x", "line 2: missing: No such file"),
            ("FROM a\nCMD run", "line 2: CMD must be in JSON form"),
            (
                "FROM a\nLABEL v=${NOPE}",
                "line 2: $NOPE is not an ARG or ENV of the stage",
            ),
            (
                "FROM a\nCOPY --chown=1 a /a",
                "line 2: COPY --chown=1: only --from is understood",
            ),
            (
                "FROM a\nHEALTHCHECK NONE",
                "line 2: HEALTHCHECK: not an instruction",
            ),
            ("LABEL a=b", "no FROM"),
        ] {
            let error = read_stage(text, context.path(), &BTreeMap::new()).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
