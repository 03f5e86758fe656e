//! Restore into an empty data directory: choose the base backup for the target, download and
//! verify its files in parallel, and write the recovery settings that replay the archived
//! WAL (through `pgha wal-fetch`) up to the target.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::catalog;
use super::codec;
use super::error::{ArchiveError, Result};
use super::manifest::{self, FileEntry, Manifest};
use super::store::Store;
use crate::plan::recovery::{self, Target};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Files downloaded and decompressed at the same time.
    pub parallel: usize,
    /// `restore_command` without `%f %p`, for example `pgha wal-fetch --store /etc/pgha/store.yaml`.
    pub fetch_command: String,
    /// Owner of everything written (Postgres's user when restoring as root).
    pub owner: Option<(Uid, Gid)>,
}

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    pub backup: Manifest,
    /// The recovery settings, also written to `postgresql.auto.conf`.
    pub parameters: BTreeMap<String, String>,
}

/// Restores `target` from the archive into `data_dir`, which must be empty or absent.
pub async fn restore(
    store: &Store,
    target: &Target,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<Restored> {
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(ArchiveError::Refused(format!(
            "{} is not empty: restore only writes into an empty data directory, so nothing \
             there can be lost; move it away or choose another",
            data_dir.display()
        )));
    }
    let catalog = catalog::read(store).await?;
    let choice = recovery::choose(
        &catalog.points(),
        &catalog.segments(),
        target,
        catalog.segment_size,
    )?;
    let backup = catalog
        .backups
        .into_iter()
        .find(|b| b.id == choice.backup.id)
        .expect("the choice is one of the catalog's backups");
    let locations: BTreeMap<String, PathBuf> = backup
        .tablespaces
        .iter()
        .map(|t| (format!("pg_tblspc/{}", t.oid), PathBuf::from(&t.location)))
        .collect();
    for location in locations.values() {
        if std::fs::read_dir(location).is_ok_and(|mut d| d.next().is_some()) {
            return Err(ArchiveError::Refused(format!(
                "tablespace location {} is not empty",
                location.display()
            )));
        }
    }

    let place = |rel: &str| -> PathBuf {
        for (prefix, location) in &locations {
            if let Some(rest) = rel.strip_prefix(prefix.as_str()) {
                return location.join(rest.trim_start_matches('/'));
            }
        }
        data_dir.join(rel)
    };
    make_dir(data_dir)?;
    for dir in &backup.directories {
        if !locations.contains_key(dir) {
            make_dir(&place(dir))?;
        }
    }
    make_dir(&data_dir.join("pg_wal/archive_status"))?;
    download_files(store, &backup, &place, options.parallel).await?;

    write(&data_dir.join("backup_label"), &backup.backup_label)?;
    if !backup.tablespace_map.is_empty() {
        write(&data_dir.join("tablespace_map"), &backup.tablespace_map)?;
    }
    write(&data_dir.join("recovery.signal"), "")?;
    let parameters = recovery::settings(target, &options.fetch_command);
    let auto_conf: String = parameters
        .iter()
        .map(|(k, v)| format!("{k} = '{}'\n", v.replace('\'', "''")))
        .collect();
    write(&data_dir.join("postgresql.auto.conf"), &auto_conf)?;
    if let Some((uid, gid)) = options.owner {
        chown_tree(data_dir, uid, gid)?;
        for location in locations.values() {
            chown_tree(location, uid, gid)?;
        }
    }
    Ok(Restored { backup, parameters })
}

async fn download_files(
    store: &Store,
    backup: &Manifest,
    place: &impl Fn(&str) -> PathBuf,
    parallel: usize,
) -> Result<()> {
    let mut files: Vec<&FileEntry> = backup.files.iter().collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut pending = files.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some(file) = pending.next() else { break };
            let (store, key) = (store.clone(), manifest::data_key(&backup.id, &file.path));
            let (dest, file) = (place(&file.path), file.clone());
            running.spawn(async move { download_file(&store, &key, &dest, &file).await });
        }
        match running.join_next().await {
            Some(done) => done.expect("downloads do not panic")?,
            None => return Ok(()),
        }
    }
}

async fn download_file(store: &Store, key: &str, dest: &Path, entry: &FileEntry) -> Result<()> {
    let corrupt = |why: String| ArchiveError::Corrupt {
        bucket: store.bucket().to_string(),
        key: store.full_key(key),
        why,
    };
    let (mut body, _) = store
        .get(key)
        .await?
        .ok_or_else(|| corrupt("the manifest lists it but it is missing".into()))?;
    let file = std::fs::File::create(dest).map_err(ArchiveError::io("creating", dest))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(ArchiveError::io("setting permissions of", dest))?;
    let (tx, rx) = mpsc::channel(8);
    let writer = tokio::task::spawn_blocking(move || {
        codec::decompress_stream(rx, std::io::BufWriter::with_capacity(1 << 20, file))
    });
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| corrupt(format!("download failed: {e}")))?;
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    let sealed = writer
        .await
        .expect("decoding does not panic")
        .map_err(|e| {
            corrupt(format!(
                "it does not decompress into {} ({e})",
                dest.display()
            ))
        })?;
    if sealed.sha256 != entry.sha256 || sealed.size != entry.size {
        return Err(corrupt(format!(
            "{} has SHA-256 {} and {} bytes, the manifest recorded {} and {}",
            entry.path, sealed.sha256, sealed.size, entry.sha256, entry.size
        )));
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(ArchiveError::io("creating", path))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(ArchiveError::io("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ArchiveError::io("setting permissions of", path))
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
        .map_err(ArchiveError::io("changing the owner of", path))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(ArchiveError::io("reading", path))? {
            let entry = entry.map_err(ArchiveError::io("reading", path))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// How recovery ended, once the restored instance has promoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub timeline: u32,
    /// The commit time of the last transaction replayed, as Postgres reports it.
    pub last_replayed_commit: Option<String>,
    pub lsn: String,
}

/// Waits until the restored instance `pg` has finished recovery (it promotes at the target)
/// and says where it ended.
pub async fn wait_for_recovery(pg: &Client, within: Duration) -> Result<RecoveryReport> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let row = pg
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(ArchiveError::sql("checking recovery"))?;
        if !row.get::<_, bool>(0) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(ArchiveError::Refused(format!(
                "recovery did not finish within {within:?}; see the Postgres log"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = pg
        .query_one(
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), \
                    pg_last_xact_replay_timestamp()::text, pg_current_wal_lsn()::text",
            &[],
        )
        .await
        .map_err(ArchiveError::sql("reading where recovery ended"))?;
    Ok(RecoveryReport {
        timeline: u32::from_str_radix(row.get(0), 16).unwrap_or(0),
        last_replayed_commit: row.get(1),
        lsn: row.get(2),
    })
}
