//! The `pgha` command line: one binary, one subcommand per role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod archive;
mod crd;
mod operator;
mod switchover;
mod validate;
mod verify;

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
    /// Run the operator: the PgCluster and PgInstance controllers, leader-elected.
    Operator(operator::OperatorArgs),
    /// Run the instance agent: PID 1 of a Postgres pod.
    Agent(Box<agent::AgentArgs>),
    /// Move the primary of a cluster to a replica, losing nothing (a planned switchover).
    Switchover(switchover::SwitchoverArgs),
    /// Check a PgCluster manifest offline with the checks the operator runs before planning.
    Validate {
        /// The YAML file with a PgCluster.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// archive_command: store one WAL file in the archive (`pgha wal-push --store F %p`).
    WalPush(archive::WalPushArgs),
    /// restore_command: fetch one WAL file (`pgha wal-fetch --store F %f %p`). Exits 1 when
    /// the archive does not have it, 128 on any other failure.
    WalFetch(archive::WalFetchArgs),
    /// Take an online base backup of a local instance, streamed to the archive.
    Backup(archive::BackupArgs),
    /// Restore a base backup and set up recovery to a target into an empty data directory.
    Restore(archive::RestoreArgs),
    /// List the backups, WAL timelines and recoverability window of an archive.
    Catalog(archive::CatalogArgs),
    /// Delete backups and WAL that the retention rules no longer keep.
    Retention(archive::RetentionArgs),
    /// A restore drill: restore the newest backup, replay the archive, check the result and
    /// serve it at GET /result (the process of a `spec.backup.verify` pod).
    Verify(verify::VerifyArgs),
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Runs the parsed command line; the error is for a person to read.
pub fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let done = |r: Result<(), _>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Crd { out_dir } => done(crd::run(out_dir.as_deref())),
        Command::Validate { file } => done(validate::run(&file)),
        Command::Operator(args) => done(operator::run(args)),
        Command::Agent(args) => done(agent::run(*args)),
        Command::Switchover(args) => done(switchover::run(args)),
        Command::WalPush(args) => archive::wal_push(args),
        Command::WalFetch(args) => Ok(archive::wal_fetch(args)),
        Command::Backup(args) => archive::backup(args),
        Command::Restore(args) => archive::restore(args),
        Command::Catalog(store) => archive::catalog(store),
        Command::Retention(args) => archive::retention(args),
        Command::Verify(args) => done(verify::run(args)),
    }
}
