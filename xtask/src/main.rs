//! `cargo xtask`: Tusk's generator and task runner.
//!
//! - `cargo xtask generate` writes `bundle/` and `catalog/` from the Rust types and
//!   `config/releases.yaml`; released bundles are frozen: read back and proven unchanged against
//!   `config/released-bundles.sha256`, which it extends when a release is cut.
//! - `cargo xtask validate` checks them as operator-framework's validators would, plus upgrade
//!   safety.
//! - `cargo xtask graph` writes the upgrade graph, `catalog/graph.svg`.
//! - `cargo xtask check` (CI) fails when anything generated differs from what is committed, when
//!   validation finds an error, or when the instance manager's sources changed although
//!   `INSTANCE_MANAGER` names a released release.
//! - `cargo xtask release <version>` cuts the open release and opens the next.
//! - `cargo xtask test` runs every test of the workspace, with a table of each binary's time.
//! - `cargo xtask bench-generate` prints how long generating everything takes.
//! - `cargo xtask crds` writes `config/crd/*.yaml` from the Rust types.
//! - `cargo xtask crds --check` fails when those files are not what the types generate.
//! - `cargo xtask bench-controller` measures the controller with many clusters.
//! - `cargo xtask bench-backup` measures base backups, restores and WAL archiving.
//! - `cargo xtask demo` runs Tusk on the local control plane with the samples in
//!   `config/samples`, until Ctrl-C.

mod bench;
mod bench_backup;
mod bench_users;
mod demo;
mod test;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use tusk::crd::{CRD_DIR, committed_files};
use xtask::olm::{self, Inputs, validate::Level};

/// Tusk's generator and task runner.
#[derive(Parser)]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write the CRDs under config/crd from the Rust types.
    Crds {
        /// Write nothing; fail if a file differs from what the types generate.
        #[arg(long)]
        check: bool,
    },
    /// Write bundle/ and catalog/ from the Rust types and config/releases.yaml.
    Generate {
        /// Write nothing; fail if a file differs from what would be generated.
        #[arg(long)]
        check: bool,
    },
    /// Check bundle/ and catalog/ as operator-framework's validators do, plus upgrade safety.
    Validate {
        /// The repository root to check (default: this repository).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Write the test variant of the catalog (every manifest inlined, no bundle images) to
    /// `<out>/<package>/catalog.yaml`, for `opm serve` in tests without a registry.
    InlineCatalog {
        /// The directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Also write the fixture package `tusk-fixture`, which requires Tusk >=1.0.0.
        #[arg(long)]
        with_fixture: bool,
    },
    /// Write the contribution to the community catalogs (OperatorHub.io and OpenShift's
    /// community operators): `<out>/operators/<package>/<version>/{manifests,metadata}` for every
    /// release and `<out>/operators/<package>/ci.yaml`. Point `--out` at a clone of the catalog
    /// repository.
    Operatorhub {
        /// The root of the catalog repository's clone.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the upgrade graph, catalog/graph.svg.
    Graph,
    /// Cut the open release `version`: mark it released, cut from this commit (`HEAD`, on a
    /// clean tree), open the next release in the plan, make the crate build it, and regenerate,
    /// which freezes the cut release's bundle.
    Release {
        /// The open release, such as 1.1.0.
        version: semver::Version,
        /// The release to open next (default: the next minor).
        #[arg(long)]
        next: Option<semver::Version>,
        /// The digest of the operator image built from this commit and pushed (`cargo xtask
        /// images --push` prints it): the cut release's CSV then runs the operator and its
        /// instance manager by digest.
        #[arg(long)]
        operator_digest: Option<String>,
    },
    /// Everything CI checks on generated files: CRDs, bundles, catalog and graph are what the
    /// generator makes, and validation finds no error.
    Check,
    /// Every test of the workspace (what `cargo test --workspace` runs), the slowest binaries
    /// first; each binary's output is printed whole when it ends, then a table of results and
    /// times.
    Test {
        /// Test binaries running at once. The end-to-end tests' waits are tuned for one at a
        /// time: with 3 on 2 cores, a backup test timed out.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Passed to every test binary, such as a test name filter or `--nocapture`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the operator image, one bundle image per release and the catalog image as OCI
    /// image layouts under `<out>/<repository>/`, with no container engine, reproducibly (see
    /// `xtask/src/images.rs`), and print each image's reference and digest.
    Images {
        /// Where the layouts go.
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
        /// The operator's static binary (default: built now for x86_64-unknown-linux-musl in
        /// release mode; `hack/musl.sh` installs what that needs).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// The `opm` binary of the catalog image (default: the one `hack/testbin.sh` built).
        #[arg(long)]
        opm: Option<PathBuf>,
        /// Then push every image to this registry and path, such as `quay.io/me`, as
        /// `<push>/<repository name>:<tag>` with the same digest (credentials from
        /// `REGISTRY_USERNAME` and `REGISTRY_PASSWORD`).
        #[arg(long)]
        push: Option<String>,
        /// Push over plain HTTP (a registry on loopback).
        #[arg(long, requires = "push")]
        plain_http: bool,
    },
    /// Read from the registry the digest of each PostgreSQL image of config/postgres-images.yaml
    /// that has none yet (`<repository>:<version>`; credentials from `REGISTRY_USERNAME` and
    /// `REGISTRY_PASSWORD`), and record it there; then `cargo xtask generate` pins the open
    /// release's CSV to it.
    PinPostgres {
        /// Read over plain HTTP (a registry on loopback).
        #[arg(long)]
        plain_http: bool,
    },
    /// Regenerate every bundle and the catalog in memory, and print how long it takes.
    BenchGenerate {
        /// How many rounds.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// Create many PostgresClusters at once on the local control plane and print the time to
    /// Ready, the operator's peak RSS, its API requests by verb and its steady-state writes.
    BenchController {
        /// How many clusters, comma-separated: each scale runs on a fresh control plane.
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize])]
        clusters: Vec<usize>,
        /// Instances per cluster.
        #[arg(long, default_value_t = 1)]
        instances: u32,
        /// How many clusters get their ConfigMap edited by hand, to time the repair.
        #[arg(long, default_value_t = 100)]
        drift: usize,
        /// How long to watch steady state, in seconds (the operator resyncs every half of it).
        #[arg(long, default_value_t = 60)]
        steady_seconds: u64,
        /// Stop waiting for every cluster to be Ready after this many seconds, and report.
        #[arg(long, default_value_t = 1800)]
        ready_timeout: u64,
        /// Then run the demo's cluster (three local pods with PostgreSQL) and measure its
        /// instance managers at rest for this many seconds; 0 skips it.
        #[arg(long, default_value_t = 60)]
        instance_idle: u64,
    },
    /// Reconcile many PostgresUser objects against one local PostgreSQL server and print the time
    /// taken and the SQL statements per object, converging and in steady state.
    BenchUsers {
        /// How many users.
        #[arg(long, default_value_t = 500)]
        users: usize,
        /// The operator's resync interval, in seconds.
        #[arg(long, default_value_t = 20)]
        resync: u64,
        /// How many resync periods of steady state to watch.
        #[arg(long, default_value_t = 3)]
        periods: u64,
    },
    /// Run Tusk on its embedded default: the local control plane, the CRDs, the operator and the
    /// sample objects, until Ctrl-C.
    Demo {
        /// Instead, with a release build, measure the instance managers at rest for this many
        /// seconds once everything is Ready, print it, and stop.
        #[arg(long)]
        idle_cost: Option<u64>,
    },
    /// Base backup, restore and WAL archiving against a real S3 store and PostgreSQL 18 at
    /// several database sizes (pgbench scales; 64 is about 1 GiB), beside pg_basebackup to disk.
    BenchBackup {
        /// pgbench scales, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [16u32, 64])]
        scales: Vec<u32>,
    },
    /// Failovers (asynchronous and synchronous `Required`) and switchovers under write load with
    /// the real operator and local PostgreSQL 18 pods: write pause min/median/max and
    /// acknowledged commits lost. Runs `bench_failover` of `tests/failover.rs`.
    BenchFailover {
        /// Rounds of each scenario.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
}

/// `cargo xtask bench-failover`: the benchmark lives beside the failover tests, whose local pods
/// and operator harness it uses; it prints its own table.
fn bench_failover(rounds: usize) -> Result<(), String> {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo_root())
        .args([
            "test",
            "--test",
            "failover",
            "bench_failover",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("TUSK_BENCH_ROUNDS", rounds.to_string())
        .status()
        .map_err(|e| format!("running cargo test: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the failover benchmark failed ({status})"))
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_owned()
}

fn crds(check: bool) -> Result<(), String> {
    let dir = repo_root().join(CRD_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut stale = Vec::new();
    for (name, yaml) in committed_files() {
        let path = dir.join(&name);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "out of date (run `cargo xtask crds`): {}",
            stale.join(", ")
        ))
    }
}

fn generate(check: bool) -> Result<(), String> {
    let root = repo_root();
    let inputs = Inputs::load(&root)?;
    let files = olm::generate(&inputs);
    let sync = olm::sync(&root, &files, check)?;
    if check {
        let mut problems: Vec<String> = sync.changed.iter().map(|f| format!("{f} differs")).collect();
        problems.extend(sync.stale.iter().map(|f| format!("{f} is not generated")));
        if !problems.is_empty() {
            return Err(format!(
                "generated files are out of date (run `cargo xtask generate`):\n  {}",
                problems.join("\n  ")
            ));
        }
    } else {
        for file in &sync.changed {
            println!("wrote {file}");
        }
        for file in &sync.stale {
            println!("removed {file}");
        }
    }
    Ok(())
}

fn validate(root: Option<PathBuf>) -> Result<(), String> {
    let root = root.unwrap_or_else(repo_root);
    let findings = olm::validate::validate(&root);
    for finding in &findings {
        println!("{finding}");
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    println!("validate: {errors} errors, {warnings} warnings");
    if errors > 0 {
        Err(format!("{errors} validation errors"))
    } else {
        Ok(())
    }
}

fn inline_catalog(out: &std::path::Path, with_fixture: bool) -> Result<(), String> {
    let inputs = Inputs::load(&repo_root())?;
    let mut packages = vec![(inputs.plan.package.clone(), olm::catalog::blobs(&inputs, true))];
    if with_fixture {
        packages.push((
            olm::fixture::PACKAGE.to_owned(),
            olm::fixture::blobs(&inputs.plan.package, ">=1.0.0"),
        ));
    }
    for (package, blobs) in packages {
        let path = out.join(olm::catalog::catalog_file(&package));
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        std::fs::write(&path, olm::catalog::to_yaml(&blobs))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn operatorhub(out: &Path) -> Result<(), String> {
    let inputs = Inputs::load(&repo_root())?;
    let files = olm::operatorhub::files(&inputs);
    for (path, contents) in &files {
        let path = out.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "wrote {} files under {}",
        files.len(),
        out.join("operators").join(&inputs.plan.package).display()
    );
    Ok(())
}

fn graph() -> Result<(), String> {
    let root = repo_root();
    let inputs = Inputs::load(&root)?;
    let path = root.join(olm::CATALOG_DIR).join("graph.svg");
    std::fs::write(&path, olm::graph::svg(&inputs.plan))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn bench_generate(rounds: u32) -> Result<(), String> {
    let root = repo_root();
    let mut load = std::time::Duration::ZERO;
    let mut build = std::time::Duration::ZERO;
    let mut files = 0;
    let mut bytes = 0;
    for _ in 0..rounds.max(1) {
        let start = std::time::Instant::now();
        let inputs = Inputs::load(&root)?;
        load += start.elapsed();
        let start = std::time::Instant::now();
        let generated = olm::generate(&inputs);
        build += start.elapsed();
        files = generated.len();
        bytes = generated.iter().map(|f| f.contents.len()).sum::<usize>();
    }
    let n = f64::from(rounds.max(1));
    println!("| step | mean per round |");
    println!("|---|---|");
    println!(
        "| read the plan, icon, descriptions, samples and released bundles | {:.1} ms |",
        load.as_secs_f64() * 1e3 / n
    );
    println!(
        "| generate {} releases: {files} files, {bytes} bytes | {:.1} ms |",
        Inputs::load(&root)?.plan.releases.len(),
        build.as_secs_f64() * 1e3 / n
    );
    println!(
        "| total | {:.1} ms (target: under 1000 ms) |",
        (load + build).as_secs_f64() * 1e3 / n
    );
    Ok(())
}

fn release(
    version: &semver::Version,
    next: Option<semver::Version>,
    operator_digest: Option<&str>,
) -> Result<(), String> {
    let root = repo_root();
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .map_err(|e| format!("running git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let dirty = git(&["status", "--porcelain"])?;
    if !dirty.is_empty() {
        return Err(format!(
            "the tree has uncommitted changes; a release is cut from a commit, so commit them first:\n{dirty}"
        ));
    }
    let commit = git(&["rev-parse", "HEAD"])?;
    let next = next.unwrap_or_else(|| semver::Version::new(version.major, version.minor + 1, 0));
    // The day of the cut (UTC) is the release's date: its CSV's createdAt and its bundle image's
    // file times.
    let day = k8s_openapi::jiff::Timestamp::now()
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    olm::release::release(&root, version, &commit, &next, &day, operator_digest)?;
    println!("{version}: released on {day}, cut from {commit}; {next} is open");
    if &olm::instance_manager::version()? == version {
        olm::instance_manager::lock(&root, version)?;
        println!(
            "{}: the instance manager of {version}, frozen in its image",
            olm::instance_manager::lock_file(version)
        );
    }
    generate(false)?;
    graph()?;
    println!("commit the result: it is the release of {version}");
    Ok(())
}

/// The target the operator image's binary is built for: static, so that it runs in any
/// PostgreSQL image that copies it out as the instance manager.
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

fn images(
    out: &Path,
    binary: Option<PathBuf>,
    opm: Option<PathBuf>,
    push: Option<&str>,
    plain_http: bool,
) -> Result<(), String> {
    let root = repo_root();
    let binary = match binary {
        Some(binary) => binary,
        None => {
            let status =
                std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .current_dir(&root)
                    .args([
                        "build",
                        "--release",
                        "--locked",
                        "--target",
                        STATIC_TARGET,
                        "--bin",
                        "tusk-operator",
                    ])
                    .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
                    .status()
                    .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "building tusk-operator for {STATIC_TARGET} failed ({status}); hack/musl.sh installs the target and musl-gcc"
                ));
            }
            root.join("target")
                .join(STATIC_TARGET)
                .join("release/tusk-operator")
        }
    };
    let opm = match opm {
        Some(opm) => opm,
        None => tusk_testenv::toolchain::Toolchain::get()
            .map_err(|e| format!("the opm of hack/testbin.sh: {e}"))?
            .bin("opm"),
    };
    let sources = xtask::images::Sources {
        binary,
        opm,
        epoch: xtask::images::source_date_epoch(&root)?,
    };
    let out = root.join(out);
    let built = xtask::images::build(&root, &Inputs::load(&root)?, &sources, &out)?;
    println!("| image | digest | layout |\n|---|---|---|");
    for image in &built {
        println!(
            "| {} | {} | {} |",
            image.reference,
            image.digest,
            image
                .layout
                .strip_prefix(&root)
                .unwrap_or(&image.layout)
                .display()
        );
    }
    for image in &built {
        for difference in &image.differences {
            println!("{}: {difference}", image.reference);
        }
    }
    if let Some(prefix) = push {
        let pushed = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime: {e}"))?
            .block_on(xtask::images::push(&built, prefix, plain_http))?;
        for reference in pushed {
            println!("pushed {reference}");
        }
    }
    Ok(())
}

fn check() -> Result<(), String> {
    crds(true)?;
    generate(true)?;
    let root = repo_root();
    olm::instance_manager::check(
        &root,
        &Inputs::load(&root)?.plan,
        &olm::instance_manager::version()?,
    )?;
    validate(None)
}

fn main() -> ExitCode {
    let result = match Xtask::parse().command {
        Task::Crds { check } => crds(check),
        Task::Generate { check } => generate(check),
        Task::Validate { root } => validate(root),
        Task::Graph => graph(),
        Task::Operatorhub { out } => operatorhub(&out),
        Task::InlineCatalog { out, with_fixture } => inline_catalog(&out, with_fixture),
        Task::Check => check(),
        Task::Test { jobs, args } => test::run(&repo_root(), jobs, &args),
        Task::Release {
            version,
            next,
            operator_digest,
        } => release(&version, next, operator_digest.as_deref()),
        Task::Images {
            out,
            binary,
            opm,
            push,
            plain_http,
        } => images(&out, binary, opm, push.as_deref(), plain_http),
        Task::PinPostgres { plain_http } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(xtask::pin::pin_postgres(&repo_root(), plain_http)))
            .map(|pinned| {
                for (_, reference, digest) in &pinned {
                    println!("{reference}: {digest}");
                }
                println!(
                    "{} digests recorded in {}",
                    pinned.len(),
                    tusk::facts::postgres_images::FILE
                );
            }),
        Task::BenchGenerate { rounds } => bench_generate(rounds),
        Task::Demo { idle_cost } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                runtime.block_on(demo::run(
                    &repo_root(),
                    idle_cost.map(std::time::Duration::from_secs),
                ))
            }),
        Task::BenchFailover { rounds } => bench_failover(rounds),
        Task::BenchBackup { scales } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(bench_backup::run(&repo_root(), &scales))),
        Task::BenchUsers {
            users,
            resync,
            periods,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(bench_users::run(&repo_root(), users, resync, periods))),
        Task::BenchController {
            clusters,
            instances,
            drift,
            steady_seconds,
            ready_timeout,
            instance_idle,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                runtime.block_on(async {
                    bench::run(
                        &repo_root(),
                        &clusters,
                        instances,
                        steady_seconds,
                        ready_timeout,
                        drift,
                    )
                    .await?;
                    if instance_idle == 0 {
                        return Ok(());
                    }
                    println!("\n== the instance manager at rest (the demo's cluster, local pods) ==");
                    demo::run(&repo_root(), Some(std::time::Duration::from_secs(instance_idle))).await
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
