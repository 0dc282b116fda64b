//! The upstream programs built by `hack/testbin.sh`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{Error, Result, io};

/// Where `hack/testbin.sh` put the programs for the versions it pins.
#[derive(Clone, Debug)]
pub struct Toolchain {
    dir: PathBuf,
}

/// The repository's root: this crate lives in `tests/testenv`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testenv lives in tests/testenv of the repository")
        .to_path_buf()
}

/// True when running under CI, where a missing component fails instead of being built.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Toolchain {
    /// Finds the toolchain, building it with `hack/testbin.sh` when it is missing. Under `CI=true`
    /// a missing toolchain is an error instead: `.ci/run` builds it before any test runs, so a
    /// missing program there is a broken build, never a reason to skip.
    ///
    /// `TUSK_TESTBIN` names another directory of the same layout (`bin/`, `share/`) to use
    /// instead, as it is.
    pub fn get() -> Result<Self> {
        if let Some(dir) = std::env::var_os("TUSK_TESTBIN") {
            return Ok(Self { dir: dir.into() });
        }
        let dir = find_or_install("testbin.sh", &["--dir"], "the test toolchain")?;
        Ok(Self { dir })
    }

    /// A program, such as `kube-apiserver` or `opm`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// A shared file or directory, such as `kwok-stages` or `olm-crds`.
    pub fn share(&self, name: &str) -> PathBuf {
        self.dir.join("share").join(name)
    }
}

/// The newest released release's own `tusk-operator`, built by `hack/released.sh` from the
/// commit the release plan records for it: its version and the program.
pub fn released() -> Result<(String, PathBuf)> {
    let dir = find_or_install("released.sh", &["--dir"], "the previous release's tusk-operator")?;
    let version = std::fs::read_to_string(dir.join("version"))
        .map_err(io(format!("reading {}/version", dir.display())))?;
    Ok((version.trim().to_owned(), dir.join("bin").join("tusk-operator")))
}

/// The directory `hack/<script> <dir_args>` prints, which exits 1 while it is incomplete. Then,
/// under `CI=true`, an error: `.ci/run` installs it before any test runs, so a missing piece there
/// is a broken build, never a reason to skip. Otherwise `hack/<script>` (no arguments) installs
/// what is missing, and the directory is asked for again. `what` names it in messages.
pub(crate) fn find_or_install(script: &str, dir_args: &[&str], what: &str) -> Result<PathBuf> {
    let path = repo_root().join("hack").join(script);
    let probe = || -> Result<(bool, PathBuf)> {
        let out = Command::new(&path)
            .args(dir_args)
            .stderr(Stdio::inherit())
            .output()
            .map_err(io(format!("running {}", path.display())))?;
        Ok((
            out.status.success(),
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        ))
    };
    let (found, dir) = probe()?;
    if found {
        return Ok(dir);
    }
    if in_ci() {
        return Err(Error::Toolchain(format!(
            "{what}: {} is incomplete and CI=true: run hack/{script} before the tests (.ci/run does)",
            dir.display()
        )));
    }
    eprintln!("testenv: {what} is missing; installing it with hack/{script} (minutes when cold)");
    let install = Command::new(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(io(format!("running {}", path.display())))?;
    if !install.success() {
        return Err(Error::Toolchain(format!("hack/{script} failed with {install}")));
    }
    match probe()? {
        (true, dir) => Ok(dir),
        (false, dir) => Err(Error::Toolchain(format!(
            "{what} is still incomplete in {} after hack/{script}",
            dir.display()
        ))),
    }
}
