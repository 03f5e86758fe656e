//! The first data directory of a cluster bootstrapped from a backup: `pgha archive restore` from the
//! source's archive into a sibling folder, Postgres replays the archived WAL there up to the
//! target and promotes, and only then is the folder moved into place. An init pod that dies
//! half-way leaves no data directory, so the next attempt starts over rather than starting a
//! server on a half-replayed database.

use std::path::Path;
use std::time::Duration;

use super::error::{AgentError, Result};
use super::{Agent, Settings, conf, files, pgbin, sql, stores};
use crate::plan::agent::{PostgresConfig, RecoverySpec};

/// How long replay may take before the init pod gives up (and retries from the start).
const REPLAY_LIMIT: Duration = Duration::from_secs(6 * 3600);

impl Agent {
    pub(super) async fn restore(&self, recovery: &RecoverySpec, building: &Path) -> Result<()> {
        restore(self.settings(), &self.config(), recovery, building)
            .await
            .map(drop)
    }
}

/// Restores `recovery` into `into` (absent or empty) with `settings`' configuration and
/// `config`, replays to the target and stops Postgres there. Returns the id of the backup.
pub async fn restore(
    settings: &Settings,
    config: &PostgresConfig,
    recovery: &RecoverySpec,
    into: &Path,
) -> Result<String> {
    let store = stores::prepare(
        settings,
        "source",
        &recovery.source.s3,
        &settings.source_credentials_dir,
        None,
    )?;
    // `pgha archive restore` wants an absent or empty folder, and creates it for Postgres's user.
    if into.exists() {
        std::fs::remove_dir(into).map_err(AgentError::io("clearing", into))?;
    }
    let pgha = std::env::current_exe().map_err(AgentError::io("finding", "pgha"))?;
    let mut cmd = tokio::process::Command::new(pgha);
    cmd.args(["archive", "restore"])
        .arg("--store")
        .arg(&store)
        .arg("--pgdata")
        .arg(into)
        .args(target_args(recovery));
    if let Some(user) = &settings.run_as {
        cmd.args(["--owner", &user.name]);
    }
    let out = pgbin::run(cmd).await?;
    tracing::info!(output = %out.trim(), "restored the base backup; replaying WAL");
    // "restored backup <id> (...)", the first line `pgha archive restore` prints.
    let backup = out
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    // Our configuration, then the recovery settings `pgha archive restore` wrote after it:
    // `postgresql.auto.conf` is read last, so its restore_command (the source's archive)
    // wins over the cluster's own.
    let auto = into.join("postgresql.auto.conf");
    let recovery_settings =
        std::fs::read_to_string(&auto).map_err(AgentError::io("reading", &auto))?;
    let mut replaying = settings.clone();
    replaying.data_dir = into.to_path_buf();
    conf::write(&replaying, config, &conf::render(&replaying, config)?, None)?;
    files::write(&auto, &recovery_settings, 0o600, settings.run_as.as_ref())?;
    let mut server = Server::start(&replaying)?;
    // Replay never waits for the archive while the prefetcher keeps ahead of it.
    let prefetcher = stores::prefetcher(settings, &store, &into.join("pg_wal"))?;
    let replayed = server.wait_promoted().await;
    prefetcher.stop().await;
    let stopped = server.stop().await;
    replayed?;
    stopped.map(|()| backup)
}

/// What a restore drill found on a restored data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The WAL position recovery ended at.
    pub recovered_to: String,
    /// The databases read and checked.
    pub databases: Vec<String>,
}

/// Checks a restored, promoted data directory: Postgres starts, every database accepts a
/// connection and passes `pg_amcheck` (heap and B-tree indexes, `amcheck` installed where
/// missing), and after a clean stop `pg_checksums` verifies every block.
pub async fn check(settings: &Settings) -> Result<Checked> {
    let mut server = Server::start(settings)?;
    let checked = async {
        let client = server.connect().await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(AgentError::sql("reading the recovered position"))?;
        let recovered_to: String = row.get(0);
        let databases: Vec<String> = client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
                &[],
            )
            .await
            .map_err(AgentError::sql("listing the databases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // As the agent's OS user, whom pg_hba maps to the superuser over the socket.
        let mut amcheck = tokio::process::Command::new(settings.bin_dir.join("pg_amcheck"));
        amcheck
            .args(["--all", "--install-missing", "--heapallindexed"])
            .arg("--host")
            .arg(&settings.run_dir)
            .args(["--port", &settings.port.to_string()])
            .args(["--username", crate::plan::names::SUPERUSER]);
        pgbin::run(amcheck).await?;
        Ok::<_, AgentError>(Checked {
            recovered_to,
            databases,
        })
    }
    .await;
    let stopped = server.stop().await;
    let checked = checked?;
    stopped?;
    let mut checksums = pgbin::command(settings, "pg_checksums");
    checksums.arg("--check").arg("-D").arg(&settings.data_dir);
    pgbin::run(checksums).await?;
    Ok(checked)
}

/// `pgha archive restore`'s target flags; none replays to the end of the archive.
fn target_args(recovery: &RecoverySpec) -> Vec<String> {
    let Some(target) = &recovery.target else {
        return Vec::new();
    };
    match (&target.time, &target.lsn, &target.name, target.immediate) {
        (Some(time), _, _, _) => vec!["--target-time".into(), time.clone()],
        (_, Some(lsn), _, _) => vec!["--target-lsn".into(), lsn.clone()],
        (_, _, Some(name), _) => vec!["--target-name".into(), name.clone()],
        (_, _, _, Some(true)) => vec!["--target-immediate".into()],
        _ => Vec::new(),
    }
}

/// A Postgres on a restored folder, outside the agent's supervision (nothing else may run
/// on that folder).
struct Server {
    child: tokio::process::Child,
    settings: Settings,
}

impl Server {
    fn start(settings: &Settings) -> Result<Self> {
        let mut postgres = pgbin::command(settings, "postgres");
        postgres.arg("-D").arg(&settings.data_dir);
        let child = postgres
            .spawn()
            .map_err(AgentError::io("starting", "postgres"))?;
        Ok(Self {
            child,
            settings: settings.clone(),
        })
    }

    fn exited(&mut self) -> Result<()> {
        match self
            .child
            .try_wait()
            .map_err(AgentError::io("watching", "postgres"))?
        {
            Some(status) => Err(AgentError::Refused(format!(
                "Postgres stopped ({status}); its log says why"
            ))),
            None => Ok(()),
        }
    }

    async fn connect(&mut self) -> Result<tokio_postgres::Client> {
        loop {
            self.exited()?;
            if let Ok(client) = sql::connect(&self.settings).await {
                return Ok(client);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until recovery has ended (Postgres promotes at the target).
    async fn wait_promoted(&mut self) -> Result<()> {
        let limit = REPLAY_LIMIT;
        tokio::time::timeout(limit, async {
            loop {
                let client = self.connect().await?;
                if let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
                    && !row.get::<_, bool>(0)
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(AgentError::Refused(format!(
                "recovery did not end within {} hours",
                limit.as_secs() / 3600
            )))
        })
    }

    /// A fast shutdown, which writes a checkpoint.
    async fn stop(mut self) -> Result<()> {
        if self.exited().is_err() {
            return Ok(());
        }
        let mut stop = pgbin::command(&self.settings, "pg_ctl");
        stop.arg("stop")
            .arg("-D")
            .arg(&self.settings.data_dir)
            .args(["-m", "fast", "-w", "-t", "300"]);
        let stopped = pgbin::run(stop).await;
        let _ = self.child.wait().await;
        stopped.map(drop)
    }
}
