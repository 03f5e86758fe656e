//! `kubectl pgha …`: the pgha program under the name kubectl looks for plugins by.

use std::process::ExitCode;

fn main() -> ExitCode {
    pgha::cli::main()
}
