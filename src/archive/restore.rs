//! Restore into an empty data directory: choose the base backup for the target, download and
//! verify its files in parallel, and write the recovery settings that replay the archived
//! WAL (through `pgha wal-fetch`) up to the target.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::catalog;
use super::codec::{self, Sealed};
use super::error::{ArchiveError, Result};
use super::manifest::{self, Bundled, FileEntry, Manifest};
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

/// What one download task fetches.
enum Job {
    File(FileEntry, PathBuf),
    /// A bundle and the files it holds.
    Bundle(u32, Vec<(FileEntry, PathBuf)>),
}

/// Downloads every file of `backup`, `parallel` objects at a time: the largest files first so
/// the long downloads start early, then the bundles of small files.
async fn download_files(
    store: &Store,
    backup: &Manifest,
    place: &impl Fn(&str) -> PathBuf,
    parallel: usize,
) -> Result<()> {
    let mut singles = Vec::new();
    let mut bundles: BTreeMap<u32, Vec<(FileEntry, PathBuf)>> = BTreeMap::new();
    for file in &backup.files {
        let dest = place(&file.path);
        match file.bundle {
            Some(b) => bundles
                .entry(b.number)
                .or_default()
                .push((file.clone(), dest)),
            None => singles.push((file.clone(), dest)),
        }
    }
    singles.sort_by_key(|(f, _)| std::cmp::Reverse(f.size));
    let mut pending = singles
        .into_iter()
        .map(|(file, dest)| Job::File(file, dest))
        .chain(bundles.into_iter().map(|(n, files)| Job::Bundle(n, files)));
    let mut running = JoinSet::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some(job) = pending.next() else { break };
            let (store, id) = (store.clone(), backup.id.clone());
            running.spawn(async move {
                match job {
                    Job::File(file, dest) => {
                        download_file(&store, &manifest::data_key(&id, &file.path), &dest, &file)
                            .await
                    }
                    Job::Bundle(n, files) => {
                        download_bundle(&store, &manifest::bundle_key(&id, n), files).await
                    }
                }
            });
        }
        match running.join_next().await {
            Some(done) => done.expect("downloads do not panic")?,
            None => return Ok(()),
        }
    }
}

/// Why `got` is not what the manifest recorded for `entry`, if it is not.
fn mismatch(entry: &FileEntry, got: &Sealed) -> Option<String> {
    (got.sha256 != entry.sha256 || got.size != entry.size).then(|| {
        format!(
            "{} has SHA-256 {} and {} bytes, the manifest recorded {} and {}",
            entry.path, got.sha256, got.size, entry.sha256, entry.size
        )
    })
}

/// A new file only Postgres's user may read.
fn create_private(dest: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(ArchiveError::io("creating", dest))
}

async fn download_file(store: &Store, key: &str, dest: &Path, entry: &FileEntry) -> Result<()> {
    let corrupt = store.corrupt(key);
    let open = || {
        Ok(std::io::BufWriter::with_capacity(
            1 << 20,
            create_private(dest)?,
        ))
    };
    let (_, decoded) = store
        .get_decoded(key, open)
        .await?
        .ok_or_else(|| corrupt("the manifest lists it but it is missing".into()))?;
    let sealed = decoded.map_err(|e| {
        corrupt(format!(
            "it does not decompress into {} ({e})",
            dest.display()
        ))
    })?;
    match mismatch(entry, &sealed) {
        Some(why) => Err(corrupt(why)),
        None => Ok(()),
    }
}

/// Fetches one bundle and writes out each file in it, verified.
async fn download_bundle(store: &Store, key: &str, files: Vec<(FileEntry, PathBuf)>) -> Result<()> {
    let corrupt = store.corrupt(key);
    let (body, _) = store
        .get_bytes(key)
        .await?
        .ok_or_else(|| corrupt("the manifest lists it but it is missing".into()))?;
    tokio::task::spawn_blocking(move || {
        for (entry, dest) in files {
            let Bundled { offset, .. } = entry.bundle.expect("only bundled files are here");
            let frame = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(entry.stored).ok())
                .and_then(|(at, len)| body.get(at..at.checked_add(len)?))
                .ok_or_else(|| corrupt(format!("{} lies past its end", entry.path)))?;
            let data = zstd::stream::decode_all(frame)
                .map_err(|e| corrupt(format!("{} does not decompress ({e})", entry.path)))?;
            let sealed = Sealed {
                size: data.len() as u64,
                sha256: codec::sha256_hex(&data),
            };
            if let Some(why) = mismatch(&entry, &sealed) {
                return Err(corrupt(why));
            }
            create_private(&dest)?
                .write_all(&data)
                .map_err(ArchiveError::io("writing", &dest))?;
        }
        Ok(())
    })
    .await
    .expect("unpacking does not panic")
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
