//! Turning an empty data directory into a primary (`initdb`) or a replica (a base backup of
//! the primary). Both build in a sibling folder and rename it into place at the end, so a
//! bootstrap interrupted half-way is simply done again, and an initialised directory is never
//! touched.

use std::path::{Path, PathBuf};

use super::error::{AgentError, Result};
use super::{Agent, Desired, Endpoint, conf, files, pgbin, sql};
use crate::plan::agent::RecoverySpec;
use crate::plan::{config::slot_name, names};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrapped {
    Initialized,
    /// The data directory already held a database; nothing was done.
    AlreadyInitialized,
}

impl Agent {
    /// Creates the database for the desired role if the data directory has none: `initdb`
    /// (or a restore from `recovery`) for a primary, a clone of the primary for a replica.
    pub async fn bootstrap(&self, recovery: Option<&RecoverySpec>) -> Result<Bootstrapped> {
        let _op = self.ops.lock().await;
        let desired = self.lock().desired.clone();
        let result = match (desired, recovery) {
            _ if is_initialized(&self.settings.data_dir) => Ok(Bootstrapped::AlreadyInitialized),
            (Desired::Primary, Some(recovery)) => {
                let building = self.building_dir()?;
                self.restore(recovery, &building).await?;
                self.move_into_place(&building)
                    .map(|()| Bootstrapped::Initialized)
            }
            (Desired::Primary, None) => self.initdb().await.map(|()| Bootstrapped::Initialized),
            (Desired::Replica(primary), _) => self
                .clone_from(&primary)
                .await
                .map(|()| Bootstrapped::Initialized),
        };
        self.record(result)
    }

    async fn initdb(&self) -> Result<()> {
        let building = self.building_dir()?;
        let mut cmd = pgbin::command(&self.settings, "initdb");
        cmd.arg("--pgdata")
            .arg(&building)
            .args(["--username", names::SUPERUSER])
            .args(["--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=peer", "--auth-host=scram-sha-256"]);
        pgbin::run(cmd).await?;
        self.move_into_place(&building)
    }

    /// A base backup of `primary` streamed into place, using this instance's replication slot
    /// (created on the primary if it does not exist yet) so no WAL goes missing between the
    /// backup and streaming.
    pub(super) async fn clone_from(&self, primary: &Endpoint) -> Result<()> {
        files::ensure_dir(&self.settings.run_dir, 0o700, self.settings.run_as.as_ref())?;
        conf::write_passfile(&self.settings, self.credentials().replication.expose())?;
        self.install_mounted_tls()?;
        let slot = slot_name(&self.settings.name);
        let slot_exists = self.slot_exists(primary, &slot).await?;
        let building = self.building_dir()?;
        let mut cmd = pgbin::command(&self.settings, "pg_basebackup");
        cmd.arg("--pgdata")
            .arg(&building)
            .args([
                "--dbname",
                &conf::upstream_conninfo(&self.settings, primary, None),
            ])
            .arg("--no-password")
            .args(["--wal-method=stream", "--checkpoint=fast", "--slot", &slot]);
        if !slot_exists {
            cmd.arg("--create-slot");
        }
        pgbin::run(cmd).await?;
        self.move_into_place(&building)
    }

    async fn slot_exists(&self, primary: &Endpoint, slot: &str) -> Result<bool> {
        let client = sql::connect_replication(
            &self.settings,
            primary,
            self.credentials().replication.expose(),
        )
        .await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(AgentError::sql(
                "looking up the replication slot on the primary",
            ))?;
        Ok(row.is_some())
    }

    /// An empty sibling of the data directory to build in; a leftover from an interrupted
    /// bootstrap never held a database in use, so it is cleared.
    fn building_dir(&self) -> Result<PathBuf> {
        let building = sibling(&self.settings.data_dir, "bootstrap");
        if building.exists() {
            std::fs::remove_dir_all(&building).map_err(AgentError::io("clearing", &building))?;
        }
        files::ensure_dir(&building, 0o700, self.settings.run_as.as_ref())?;
        Ok(building)
    }

    fn move_into_place(&self, building: &Path) -> Result<()> {
        std::fs::rename(building, &self.settings.data_dir).map_err(AgentError::io(
            "moving the new database to",
            &self.settings.data_dir,
        ))
    }
}

/// A directory holds a database once `PG_VERSION` is there.
fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").exists()
}

/// `<data_dir>.<suffix>`, beside the data directory on the same volume.
pub(super) fn sibling(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    data_dir.with_file_name(name)
}
