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
        let script = repo_root().join("hack/testbin.sh");
        let probe = Command::new(&script)
            .arg("--dir")
            .stderr(Stdio::inherit())
            .output()
            .map_err(io(format!("running {}", script.display())))?;
        let dir = PathBuf::from(String::from_utf8_lossy(&probe.stdout).trim());
        if probe.status.success() {
            return Ok(Self { dir });
        }
        if in_ci() {
            return Err(Error::Toolchain(format!(
                "{} is incomplete and CI=true: run hack/testbin.sh before the tests (.ci/run does)",
                dir.display()
            )));
        }
        eprintln!("testenv: the toolchain is missing; building it with hack/testbin.sh (minutes when cold)");
        let build = Command::new(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map_err(io(format!("running {}", script.display())))?;
        if !build.success() {
            return Err(Error::Toolchain(format!("hack/testbin.sh failed with {build}")));
        }
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
