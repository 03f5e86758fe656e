//! `pgha agent`: PID 1 of a Postgres pod.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::agent::run::{self, OrdersFile};
use crate::agent::settings::ArchiveCommands;
use crate::agent::{Agent, Credentials, RunAs, Settings, Timeouts, http, pgbin};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Instance name (the PgInstance's): cluster_name, application_name and slot derive from it.
    #[arg(long, env = "PGHA_INSTANCE")]
    name: String,
    /// The data directory, a folder on the instance's volume.
    #[arg(long, env = "PGDATA")]
    data_dir: PathBuf,
    /// Socket and password file; not on the volume.
    #[arg(long, default_value = "/run/pgha")]
    run_dir: PathBuf,
    /// Mounted Secrets: superuser/password, replication/password, app/{username,password,dbname}.
    #[arg(long, default_value = "/etc/pgha/secrets")]
    secrets_dir: PathBuf,
    /// Orders (role, primary, fenced, config) as JSON or YAML; re-read every second.
    #[arg(long)]
    orders: PathBuf,
    /// Address Postgres listens on.
    #[arg(long, default_value = "0.0.0.0")]
    listen: String,
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// Address of the read-only status endpoint (/status, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8000")]
    status_addr: SocketAddr,
    /// Postgres's bin directory; found under /usr/lib/postgresql when not given.
    #[arg(long, env = "PGHA_PG_BIN")]
    pg_bin: Option<PathBuf>,
    /// Run Postgres as this user (only when the agent runs as root; Postgres refuses root).
    #[arg(long)]
    run_as: Option<String>,
    /// Append the postmaster's output to this file instead of the agent's stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Archive WAL to the object store described in this file (see `pgha wal-push --help`).
    #[arg(long)]
    archive_store: Option<PathBuf>,
}

pub fn run(args: AgentArgs) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let bin_dir = args
        .pg_bin
        .or_else(pgbin::find_bin_dir)
        .ok_or("no PostgreSQL found under /usr/lib/postgresql; pass --pg-bin")?;
    let settings = Settings {
        name: args.name,
        data_dir: args.data_dir,
        run_dir: args.run_dir,
        listen_address: args.listen,
        port: args.port,
        bin_dir,
        run_as: args.run_as.as_deref().map(RunAs::user).transpose()?,
        log_file: args.log_file,
        timeouts: Timeouts::default(),
        archive: args
            .archive_store
            .as_deref()
            .map(archive_commands)
            .transpose()?,
    };
    let credentials = Credentials::from_dir(&args.secrets_dir)?;
    let orders = OrdersFile {
        path: args.orders,
        poll: Duration::from_secs(1),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let first = orders.read()?;
        let agent = Arc::new(Agent::new(
            settings,
            credentials,
            run::desired(&first)?,
            first.config.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(args.status_addr).await?;
        tokio::spawn(http::serve(agent.clone(), listener));
        run::run(agent, orders).await?;
        Ok(())
    })
}

/// `pgha wal-push` / `wal-fetch` of this binary with the store file.
fn archive_commands(store: &Path) -> Result<ArchiveCommands, Box<dyn std::error::Error>> {
    Ok(ArchiveCommands::new(
        &std::env::current_exe()?,
        &store.canonicalize()?,
    ))
}
