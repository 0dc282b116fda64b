//! The `tusk-operator` binary; everything it does lives in [`tusk::cli`].

use clap::Parser;
use tusk::cli::{Cli, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
