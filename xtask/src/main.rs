//! `cargo xtask`: Tusk's generator and task runner.
//!
//! - `cargo xtask crds` writes `config/crd/*.yaml` from the Rust types.
//! - `cargo xtask crds --check` fails when those files are not what the types generate.
//! - `cargo xtask bench-controller` measures the controller with many clusters.
//! - `cargo xtask demo` runs Tusk on the local control plane with the samples in
//!   `config/samples`, until Ctrl-C.

mod bench;
mod demo;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tusk::crd::{CRD_DIR, committed_files};

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
    /// Create many PostgresClusters at once on the local control plane and print the time to
    /// Ready, the operator's peak RSS, its API requests by verb and its steady-state writes.
    BenchController {
        /// How many clusters.
        #[arg(long, default_value_t = 1000)]
        clusters: usize,
        /// How long to watch steady state, in seconds (the operator resyncs every half of it).
        #[arg(long, default_value_t = 60)]
        steady_seconds: u64,
        /// Stop waiting for every cluster to be Ready after this many seconds, and report.
        #[arg(long, default_value_t = 1800)]
        ready_timeout: u64,
    },
    /// Run Tusk on its embedded default: the local control plane, the CRDs, the operator and the
    /// sample objects, until Ctrl-C.
    Demo,
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

fn main() -> ExitCode {
    let result = match Xtask::parse().command {
        Task::Crds { check } => crds(check),
        Task::Demo => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(demo::run(&repo_root()))),
        Task::BenchController {
            clusters,
            steady_seconds,
            ready_timeout,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                runtime.block_on(bench::run(&repo_root(), clusters, steady_seconds, ready_timeout))
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
