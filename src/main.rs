use clap::Parser;

fn main() {
    let cli = pgha::cli::Cli::parse();
    if let Err(err) = pgha::cli::run(cli) {
        eprintln!("pgha: {err}");
        std::process::exit(1);
    }
}
