//! `tusk-testenv up --dir DIR`: runs the test control plane in the foreground until SIGTERM or
//! SIGINT, for humans (`hack/up.sh` starts it in the background and `hack/down.sh` stops it).

use std::{path::PathBuf, process::ExitCode};

use tusk_testenv::{ControlPlane, Options};

fn usage() -> ExitCode {
    eprintln!("usage: tusk-testenv up --dir DIR");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [up, flag, dir] if up == "up" && flag == "--dir" => PathBuf::from(dir),
        _ => return usage(),
    };
    let plane = match ControlPlane::start(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await
    {
        Ok(plane) => plane,
        Err(e) => {
            eprintln!("tusk-testenv: {e}");
            return ExitCode::FAILURE;
        }
    };
    // hack/up.sh waits for this file.
    let ready = dir.join("ready");
    if let Err(e) = std::fs::write(&ready, plane.kubeconfig().display().to_string()) {
        eprintln!("tusk-testenv: writing {}: {e}", ready.display());
        return ExitCode::FAILURE;
    }
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("tusk-testenv: stopping");
    plane.stop();
    ExitCode::SUCCESS
}
