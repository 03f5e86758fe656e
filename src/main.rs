use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pgha::cli::Cli::parse();
    pgha::cli::run(cli).unwrap_or_else(|err| {
        eprintln!("pgha: {err}");
        ExitCode::FAILURE
    })
}
