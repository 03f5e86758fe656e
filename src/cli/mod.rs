//! The `pgha` command line: one binary, one subcommand per role.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod agent;
mod crd;
mod validate;

/// pgha: a PostgreSQL high-availability operator for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "pgha", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crd {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the instance agent: PID 1 of a Postgres pod.
    Agent(Box<agent::AgentArgs>),
    /// Check a PgCluster manifest offline with the checks the operator runs before planning.
    Validate {
        /// The YAML file with a PgCluster.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

/// Runs the parsed command line; the error is for a person to read.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Crd { out_dir } => crd::run(out_dir.as_deref()),
        Command::Validate { file } => validate::run(&file),
        Command::Agent(args) => agent::run(*args),
    }
}
