//! `cargo xtask test`: every test of the workspace, the way `cargo test --workspace` runs them,
//! with a table of each test binary's result and time at the end, and optionally several test
//! binaries at once.
//!
//! It builds every test binary once (`cargo test --no-run`), runs the doctests, then runs the
//! binaries `--jobs` at a time (1 unless told otherwise), the slowest first. Each binary's tests
//! still run as `cargo test` runs them (its own threads, its own shared fixtures), from its
//! package's directory. Binaries that run side by side share nothing: each starts its own control
//! plane, servers and operators on ports the kernel picks, and the local pods of each take a
//! loopback block of their own (see `tests/support/local_cluster.rs`). But the end-to-end tests'
//! waits are tuned for one binary at a time: with three at once on 2 cores (load average 22),
//! failover, backup and olm all passed once, and in the next run a backup test timed out waiting
//! for archiving to catch up.
//!
//! Each binary's output is kept apart (`target/test-logs/`) and printed whole when it ends.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// The slowest binaries by name, slowest first, as measured in CI; they start first so that the
/// short ones fill the gaps at the end. Binaries not named here come after them, in build order.
const SLOWEST_FIRST: &[&str] = &[
    "failover",
    "backup",
    "olm",
    "olm_v1",
    "conversion_properties",
    "operations",
    "controller",
    "data_plane",
    "users_and_databases",
];

/// One test binary cargo built.
#[derive(Clone, Debug)]
struct Binary {
    /// The target, after its package's directory when that is not the root: `failover`,
    /// `xtask/olm`.
    name: String,
    executable: PathBuf,
    /// Its package's directory: where `cargo test` runs it.
    package_dir: PathBuf,
}

/// How one binary's run ended.
struct Outcome {
    name: String,
    passed: bool,
    took: Duration,
    summary: String,
}

/// The test binaries of the workspace, built.
fn build(root: &Path) -> Result<Vec<Binary>, String> {
    let output = Command::new("cargo")
        .args([
            "test",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo test --no-run: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo test --no-run failed: {}", output.status));
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let manifest = PathBuf::from(message["manifest_path"].as_str().unwrap_or_default());
        let package_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        let target = message["target"]["name"].as_str().unwrap_or_default().to_owned();
        let name = match package_dir.strip_prefix(root) {
            Ok(rel) if rel.as_os_str().is_empty() => target.clone(),
            Ok(rel) => format!("{}/{target}", rel.display()),
            Err(_) => format!("{}/{target}", package_dir.display()),
        };
        binaries.push(Binary {
            name,
            executable: executable.into(),
            package_dir,
        });
    }
    Ok(binaries)
}

/// The slowest first, then the rest in the order cargo built them.
fn schedule(mut binaries: Vec<Binary>) -> VecDeque<Binary> {
    let rank = |b: &Binary| {
        SLOWEST_FIRST
            .iter()
            .position(|s| *s == b.name)
            .unwrap_or(SLOWEST_FIRST.len())
    };
    binaries.sort_by_key(rank);
    binaries.into()
}

/// Runs `binary` with `test_args`, keeping its output in `logs`; prints it whole when it ends.
fn run_one(binary: &Binary, test_args: &[String], logs: &Path, print: &Mutex<()>) -> Outcome {
    let log = logs.join(format!("{}.log", binary.name.replace('/', "-")));
    let started = Instant::now();
    let status = std::fs::File::create(&log).and_then(|file| {
        let err = file.try_clone()?;
        Command::new(&binary.executable)
            .args(test_args)
            .current_dir(&binary.package_dir)
            .env("CARGO_MANIFEST_DIR", &binary.package_dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .status()
    });
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (passed, summary) = match status {
        Ok(s) => (
            s.success(),
            text.lines()
                .rfind(|l| l.starts_with("test result:"))
                .map_or_else(|| s.to_string(), str::to_owned),
        ),
        Err(e) => (
            false,
            format!("could not run {}: {e}", binary.executable.display()),
        ),
    };
    let _one = print.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    println!(
        "\n==== {} ({}) {} after {:.0} s ====",
        binary.name,
        binary.executable.display(),
        if passed { "passed" } else { "FAILED" },
        took.as_secs_f64()
    );
    print!("{text}");
    Outcome {
        name: binary.name.clone(),
        passed,
        took,
        summary,
    }
}

/// Builds and runs every test of the workspace, `jobs` test binaries at a time; `test_args` go
/// to every binary (a name filter, `--nocapture`).
pub fn run(root: &Path, jobs: usize, test_args: &[String]) -> Result<(), String> {
    let binaries = build(root)?;
    let logs = root.join("target/test-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let started = Instant::now();

    // The doctests: cargo alone runs them.
    let doc = Command::new("cargo")
        .args(["test", "--workspace", "--doc", "--locked", "--"])
        .args(test_args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("running the doctests: {e}"))?;
    let mut outcomes = vec![Outcome {
        name: "doctests".into(),
        passed: doc.success(),
        took: started.elapsed(),
        summary: doc.to_string(),
    }];

    let queue = Mutex::new(schedule(binaries));
    let print = Mutex::new(());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let (queue, print, done, logs) = (&queue, &print, &done, &logs);
            scope.spawn(move || {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    let Some(binary) = next else { break };
                    let outcome = run_one(&binary, test_args, logs, print);
                    done.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    outcomes.extend(
        done.into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    println!("\n{:<40} {:>8}  result", "test binary", "seconds");
    for o in &outcomes {
        println!(
            "{:<40} {:>8.0}  {}{}",
            o.name,
            o.took.as_secs_f64(),
            if o.passed { "" } else { "FAILED: " },
            o.summary
        );
    }
    println!(
        "{} test binaries and the doctests, {jobs} at a time, in {:.0} s",
        outcomes.len() - 1,
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}
