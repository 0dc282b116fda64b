//! No process outlives the control plane: stopping it with SIGTERM (what `hack/down.sh` does)
//! and killing its owner outright with SIGKILL both leave no component running and remove its
//! directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tusk_testenv::{Seen, Wait, eventually};

fn up(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tusk-testenv"))
        .args(["up", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for the control plane in `dir` to be ready; returns its components' process ids.
fn wait_ready(dir: &Path, owner: &mut Child) -> Vec<(String, u32)> {
    block_on(eventually(
        "the control plane to be ready",
        Wait::up_to(Duration::from_secs(240)).every(Duration::from_millis(200)),
        async || {
            if dir.join("ready").exists() {
                Seen::Holds(())
            } else if owner.try_wait().unwrap().is_some() {
                Seen::Never("tusk-testenv up exited early".to_owned())
            } else {
                Seen::NotYet("no ready file".to_owned())
            }
        },
    ));
    let mut pids: Vec<(String, u32)> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap().trim().parse().unwrap())
        })
        .collect();
    pids.sort();
    pids
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn assert_all_gone(pids: &[(String, u32)], dir: &Path, how: &str) {
    block_on(eventually(
        &format!("every component to stop and its directory to go after {how}"),
        Wait::up_to(Duration::from_secs(30)).every(Duration::from_millis(200)),
        async || {
            let alive: Vec<_> = pids.iter().filter(|(_, pid)| running(*pid)).collect();
            if alive.is_empty() && !dir.exists() {
                Ok(())
            } else {
                Err(format!(
                    "still running: {alive:?}; directory left: {}",
                    dir.exists()
                ))
            }
        },
    ));
}

/// Runs `future` to completion on a runtime of its own: these tests are not async.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// A path that does not exist yet, inside a temp dir removed when the returned guard drops.
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(name);
    (parent, dir)
}

#[test]
fn sigterm_and_sigkill_of_the_owner_both_stop_every_component() {
    let (_parent, dir) = scratch("term");
    let mut owner = up(&dir);
    let pids = wait_ready(&dir, &mut owner);
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]
    );
    assert!(pids.iter().all(|(_, pid)| running(*pid)));
    Command::new("kill")
        .args(["-TERM", &owner.id().to_string()])
        .status()
        .unwrap();
    assert!(owner.wait().unwrap().success());
    assert_all_gone(&pids, &dir, "SIGTERM");

    let (_parent, dir) = scratch("kill");
    let mut owner = up(&dir);
    let pids = wait_ready(&dir, &mut owner);
    owner.kill().unwrap(); // SIGKILL: no destructor runs
    owner.wait().unwrap();
    assert_all_gone(&pids, &dir, "SIGKILL");
}

#[test]
fn under_ci_a_missing_toolchain_fails_instead_of_building_or_skipping() {
    let empty = tempfile::tempdir().unwrap();
    let (_parent, dir) = scratch("never");
    let out = Command::new(env!("CARGO_BIN_EXE_tusk-testenv"))
        .args(["up", "--dir"])
        .arg(&dir)
        .env("CI", "true")
        .env("TUSK_TESTBIN_CACHE", empty.path())
        .env_remove("TUSK_TESTBIN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is incomplete and CI=true: run hack/testbin.sh before the tests"),
        "{stderr}"
    );
    assert!(!dir.join("ready").exists());
}

#[test]
fn a_signal_to_the_whole_process_group_stops_every_component() {
    // What Ctrl-C in a terminal or timeout(1) does: SIGINT to every process of the group.
    let (_parent, dir) = scratch("group");
    let mut owner = Command::new("setsid")
        .arg(env!("CARGO_BIN_EXE_tusk-testenv"))
        .args(["up", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pids = wait_ready(&dir, &mut owner);
    // setsid made the owner the leader of a new group, whose id is its pid.
    Command::new("kill")
        .args(["-INT", "--", &format!("-{}", owner.id())])
        .status()
        .unwrap();
    owner.wait().unwrap();
    assert_all_gone(&pids, &dir, "SIGINT to the process group");
}
