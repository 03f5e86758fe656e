use std::process::ExitCode;

fn main() -> ExitCode {
    pgha::cli::main()
}
