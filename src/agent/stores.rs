//! Object-store files for the `pgha` archive commands: the store description and a copy of
//! its keys, owned by the Postgres user. Postgres runs `archive_command` as that user, and a
//! Secret is mounted readable by root only.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::error::{AgentError, Result};
use super::files;
use super::settings::Settings;
use crate::api::common::ClusterIdentity;
use crate::plan::agent::S3Spec;
use crate::plan::prefetch::spool_of;

const KEYS: [&str; 2] = ["ACCESS_KEY_ID", "SECRET_ACCESS_KEY"];

/// Writes `<run_dir>/<label>.json` describing `s3`, with the keys mounted at `mounted` copied
/// beside it; returns the file's path. `cluster` is the PgCluster whose own archive `s3` is
/// (none for a store only read from).
pub fn prepare(
    settings: &Settings,
    label: &str,
    s3: &S3Spec,
    mounted: &Path,
    cluster: Option<&ClusterIdentity>,
) -> Result<PathBuf> {
    let owner = settings.run_as.as_ref();
    files::ensure_dir(&settings.run_dir, 0o700, owner)?;
    let keys = settings.run_dir.join(format!("{label}-keys"));
    files::ensure_dir(&keys, 0o700, owner)?;
    for key in KEYS {
        let from = mounted.join(key);
        let value = std::fs::read_to_string(&from).map_err(|e| {
            AgentError::Refused(format!(
                "reading {} (the key {key} of Secret {}): {e}",
                from.display(),
                s3.credentials_secret
            ))
        })?;
        files::write(&keys.join(key), &value, 0o600, owner)?;
    }
    let store = json!({
        "bucket": s3.bucket,
        "path": s3.path.clone().unwrap_or_default(),
        "endpoint": s3.endpoint,
        "region": s3.region,
        "credentialsDir": keys,
        "cluster": cluster,
    });
    let file = settings.run_dir.join(format!("{label}.json"));
    files::write(&file, &store.to_string(), 0o600, owner)?;
    Ok(file)
}

/// The orders' object store as the store file the archive commands read, written again when
/// the orders move it (`spec.backup.s3` changed): the next push goes to the new place, whose
/// owner record it claims first.
pub struct OrderedStore {
    mounted: PathBuf,
    cluster: Option<ClusterIdentity>,
    written: Option<S3Spec>,
}

impl OrderedStore {
    pub fn new(mounted: PathBuf, cluster: Option<ClusterIdentity>) -> Self {
        Self {
            mounted,
            cluster,
            written: None,
        }
    }

    /// Writes the store file for `s3` unless it describes `s3` already; returns its path.
    pub fn follow(&mut self, settings: &Settings, s3: &S3Spec) -> Result<PathBuf> {
        let file = settings.run_dir.join(format!("{ARCHIVE}.json"));
        if self.written.as_ref() != Some(s3) {
            prepare(settings, ARCHIVE, s3, &self.mounted, self.cluster.as_ref())?;
            if self.written.is_some() {
                tracing::info!(bucket = %s3.bucket, path = ?s3.path, "archiving to a new place");
            }
            self.written = Some(s3.clone());
        }
        Ok(file)
    }
}

const ARCHIVE: &str = "archive";

/// A `pgha wal-prefetch` child keeping the spool of `pg_wal` filled from `store` (see
/// `archive::prefetch`): beside a Postgres that replays the archive.
pub struct Prefetcher {
    child: tokio::process::Child,
    spool: PathBuf,
}

/// Starts the prefetcher of `pg_wal` for the store file `store`.
pub fn prefetcher(settings: &Settings, store: &Path, pg_wal: &Path) -> Result<Prefetcher> {
    let pgha = std::env::current_exe().map_err(AgentError::io("finding", "pgha"))?;
    let mut cmd = tokio::process::Command::new(pgha);
    cmd.arg("wal-prefetch")
        .arg("--store")
        .arg(store)
        .arg("--pg-wal")
        .arg(pg_wal)
        .kill_on_drop(true);
    if let Some(user) = &settings.run_as {
        cmd.args(["--owner", &user.name]);
    }
    let child = cmd
        .spawn()
        .map_err(AgentError::io("starting", "pgha wal-prefetch"))?;
    Ok(Prefetcher {
        child,
        spool: spool_of(pg_wal),
    })
}

impl Prefetcher {
    /// Stops it and removes its spool: nothing in it will be asked for any more.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}
