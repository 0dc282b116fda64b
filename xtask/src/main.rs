//! `cargo xtask`: Tusk's generator and task runner.
//!
//! - `cargo xtask crds` writes `config/crd/*.yaml` from the Rust types.
//! - `cargo xtask crds --check` fails when those files are not what the types generate.

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
