//! The Containerfile, linted by hadolint with the labels OpenShift certification requires (no
//! image engine runs here), and consistent with what the CSV runs.

use std::{path::Path, process::Command};

use tusk_testenv::Toolchain;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn hadolint(file: &Path) -> (bool, String) {
    let toolchain = Toolchain::get().unwrap();
    let out = Command::new(toolchain.bin("hadolint"))
        .arg("--no-color")
        .arg("--config")
        .arg(root().join(".hadolint.yaml"))
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_containerfile_passes_hadolint_and_a_broken_one_does_not() {
    let containerfile = root().join("Containerfile");
    let (ok, report) = hadolint(&containerfile);
    assert!(ok && report.trim().is_empty(), "{report}");

    let text = std::fs::read_to_string(&containerfile).unwrap();
    let broken = text
        .lines()
        .filter(|line| !line.contains("release=\"${RELEASE}\""))
        .map(|line| {
            if line.starts_with("USER ") {
                "USER root"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("Containerfile");
    std::fs::write(&copy, broken).unwrap();
    let (ok, report) = hadolint(&copy);
    assert!(!ok, "{report}");
    assert!(
        report.contains("DL3049") && report.contains("Label `release` is missing"),
        "{report}"
    );
    assert!(
        report.contains("DL3002") && report.contains("Last USER should not be root"),
        "{report}"
    );
}

#[test]
fn the_image_holds_what_the_csv_runs_and_the_license() {
    let text = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    // This tree builds the plan's newest release: the image's default version is that release's.
    let plan = xtask::olm::plan::Plan::load(root()).unwrap();
    let newest = &plan.releases.last().unwrap().version;
    assert!(
        text.contains(&format!("\nARG VERSION={newest}\n")),
        "ARG VERSION={newest}"
    );
    let csv = std::fs::read_to_string(root().join(format!(
        "bundle/{newest}/manifests/tusk-operator.clusterserviceversion.yaml"
    )))
    .unwrap();
    assert!(
        csv.contains("- /usr/local/bin/tusk-operator"),
        "the CSV runs the binary the image installs"
    );
    assert!(text.contains("COPY --from=build /out/tusk-operator /usr/local/bin/tusk-operator"));
    assert!(text.contains("COPY LICENSE /licenses/LICENSE"));
    assert!(
        std::fs::read_to_string(root().join("LICENSE"))
            .unwrap()
            .contains("Apache License")
    );
    for label in [
        "name=",
        "vendor=",
        "version=",
        "release=",
        "summary=",
        "description=",
    ] {
        assert!(text.contains(label), "label {label}");
    }
}
