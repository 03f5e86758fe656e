//! The `pgha` command line: one binary, one subcommand per role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod agent;
mod archive;
mod crd;
mod kubectl;
mod on_demand;
mod operator;
mod psql;
mod report;
mod status;
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
    /// One screen on a cluster: primary, replicas with lag and replication state, archiving,
    /// backups, conditions, recent Events.
    Status(status::StatusArgs),
    /// Run the local psql against a cluster's `-rw` (or `-ro`) Service with its Secret.
    Psql(psql::PsqlArgs),
    /// Ask for a base backup of a cluster now (creates a PgBackup).
    Backup(on_demand::BackupArgs),
    /// Create a new cluster from another cluster's archive, to a point in time or the end.
    Restore(on_demand::RestoreArgs),
    /// A .tar.gz of a cluster's objects, Events, agent reports and pod logs for a support
    /// ticket; Secret values left out.
    Report(report::ReportArgs),
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
    /// Keeps the WAL segments a replaying Postgres asks for next downloaded, so that
    /// `wal-fetch` finds them spooled; runs until killed.
    WalPrefetch(archive::WalPrefetchArgs),
    /// The archive engine on a local data directory: what the agent and init pods run.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// A restore drill: restore the newest backup, replay the archive, check the result and
    /// serve it at GET /result (the process of a `spec.backup.verify` pod).
    Verify(verify::VerifyArgs),
}

#[derive(Subcommand, Debug)]
enum ArchiveCommand {
    /// Take an online base backup of a local instance, streamed to the archive.
    Backup(archive::BackupArgs),
    /// Restore a base backup and set up recovery to a target into an empty data directory.
    Restore(archive::RestoreArgs),
    /// List the backups, WAL timelines and recoverability window of an archive.
    Catalog(archive::CatalogArgs),
    /// Delete backups and WAL that the retention rules no longer keep.
    Retention(archive::RetentionArgs),
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

/// The program: `pgha …`, or `kubectl pgha …` when installed as `kubectl-pgha`.
pub fn main() -> ExitCode {
    let plugin = std::env::args_os()
        .next()
        .and_then(|a| PathBuf::from(a).file_name().map(|n| n == "kubectl-pgha"))
        .unwrap_or(false);
    let name = if plugin { "kubectl pgha" } else { "pgha" };
    let command = Cli::command().bin_name(name);
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    run(cli).unwrap_or_else(|err| {
        eprintln!("{name}: {err}");
        ExitCode::FAILURE
    })
}

/// Runs the parsed command line; the error is for a person to read.
pub fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let done = |r: Result<(), _>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Crd { out_dir } => done(crd::run(out_dir.as_deref())),
        Command::Validate { file } => done(validate::run(&file)),
        Command::Operator(args) => done(operator::run(args)),
        Command::Agent(args) => done(agent::run(*args)),
        Command::Status(args) => done(status::run(args)),
        Command::Psql(args) => psql::run(args),
        Command::Backup(args) => done(on_demand::backup(args)),
        Command::Restore(args) => done(on_demand::restore(args)),
        Command::Report(args) => done(report::run(args)),
        Command::Switchover(args) => done(switchover::run(args)),
        Command::WalPush(args) => archive::wal_push(args),
        Command::WalFetch(args) => Ok(archive::wal_fetch(args)),
        Command::WalPrefetch(args) => archive::wal_prefetch(args),
        Command::Archive(ArchiveCommand::Backup(args)) => archive::backup(args),
        Command::Archive(ArchiveCommand::Restore(args)) => archive::restore(args),
        Command::Archive(ArchiveCommand::Catalog(store)) => archive::catalog(store),
        Command::Archive(ArchiveCommand::Retention(args)) => archive::retention(args),
        Command::Verify(args) => done(verify::run(args)),
    }
}
