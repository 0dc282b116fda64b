//! The `tusk-operator` binary; everything it does lives in [`tusk::cli`].

use clap::Parser;
use tusk::cli::{Cli, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // kube and the webhook use ring; the object store's HTTP client also builds aws-lc-rs in, so
    // rustls cannot pick one on its own. ring is the one process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(cli.log_format);
    match tusk::cli::main(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{}: {e}", tusk::facts::operator::NAME);
            std::process::ExitCode::FAILURE
        }
    }
}
