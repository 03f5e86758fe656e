//! Online base backups streamed to the object store.
//!
//! The non-exclusive low-level API (`pg_backup_start` / `pg_backup_stop`) on one session,
//! while the files are read straight from the data directory: several files at a time, each
//! compressed in 4 MiB frames on a blocking thread and sent as a multipart upload while it is
//! read; small files are packed into bundles of about 8 MiB. Nothing is staged on local disk.
//! Works on a primary and on a standby.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::codec;
use super::error::{ArchiveError, Result};
use super::manifest::{self, Bundled, FileEntry, Manifest, Tablespace};
use super::store::Store;
use super::wal;
use crate::plan::wal::{Segment, format_lsn, parse_lsn};

/// Parts of a multipart upload (S3's minimum is 5 MiB for all but the last).
const PART: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Defaults to the start time, `20261122T140300Z`.
    pub id: Option<String>,
    /// Files read, compressed and uploaded at the same time.
    pub parallel: usize,
    /// How long to wait for the last WAL segment the backup needs to reach the archive.
    pub archive_wait: Duration,
    /// Counts the bytes read, for whoever shows how far the backup is.
    pub progress: Arc<Progress>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            id: None,
            parallel: 4,
            archive_wait: Duration::from_secs(300),
            progress: Arc::default(),
        }
    }
}

/// How far a backup is: bytes of the data directory read, of those listed when it started
/// (files grow and vanish while it runs, so the total is an estimate).
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    /// The WAL segment the backup waits for in the archive, once its data is read.
    waiting: std::sync::Mutex<Option<String>>,
}

impl Progress {
    /// `(done, total)` bytes.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// The WAL segment the backup waits for, once it does.
    pub fn waiting_for(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A reader that counts what passes through it into a [`Progress`].
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Takes a base backup of the instance `pg` is connected to, whose data directory is
/// `data_dir`, and returns its manifest once it is stored.
pub async fn take(
    store: &Store,
    pg: &Client,
    data_dir: &Path,
    options: &BackupOptions,
) -> Result<Manifest> {
    let started_at = Utc::now();
    let id = options
        .id
        .clone()
        .unwrap_or_else(|| started_at.format("%Y%m%dT%H%M%SZ").to_string());
    if store
        .head_sha256(&manifest::manifest_key(&id))
        .await?
        .is_some()
    {
        return Err(ArchiveError::Refused(format!(
            "backup {id} already exists in s3://{}/{}",
            store.bucket(),
            store.full_key("base/")
        )));
    }
    let info = pg
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    current_setting('server_version_num')::int, \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
            &[],
        )
        .await
        .map_err(ArchiveError::sql("reading the instance's identity"))?;
    let (from_standby, system_identifier): (bool, String) = (info.get(0), info.get(1));
    let server_version = info.get::<_, i32>(2) as u32;
    let segment_size = info.get::<_, i64>(3) as u64;

    pg.execute("SELECT pg_backup_start($1, true)", &[&format!("pgha {id}")])
        .await
        .map_err(ArchiveError::sql("pg_backup_start"))?;
    let root = data_dir.to_path_buf();
    let copied = async {
        let tree = tokio::task::spawn_blocking(move || walk(&root))
            .await
            .expect("walking does not panic")
            .map_err(ArchiveError::io("reading the data directory", data_dir))?;
        let total = tree.files.iter().map(|(_, _, size)| size).sum();
        options.progress.total.store(total, Ordering::Relaxed);
        let files = upload_files(store, &id, tree.files, options).await?;
        Ok::<_, ArchiveError>((files, tree.directories, tree.tablespaces))
    }
    .await;
    let (files, directories, tablespaces) = match copied {
        Ok(copied) => copied,
        Err(e) => {
            // Leave backup mode so the session can take another backup; the uploaded files
            // have no manifest and are never restored from.
            let _ = pg.execute("SELECT pg_backup_stop(false)", &[]).await;
            return Err(e);
        }
    };
    let stop = pg
        .query_one(
            "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(true)",
            &[],
        )
        .await
        .map_err(ArchiveError::sql("pg_backup_stop"))?;
    let (end_lsn, backup_label, tablespace_map): (String, String, String) =
        (stop.get(0), stop.get(1), stop.get(2));
    let completed_at = Utc::now();
    let (begin_lsn, begin_wal, timeline) = manifest::parse_label(&backup_label)
        .ok_or_else(|| ArchiveError::Refused(format!("unexpected backup_label: {backup_label}")))?;
    let end = parse_lsn(&end_lsn).unwrap_or(begin_lsn);
    let end_segment = Segment::containing(timeline, end.max(1) - 1, segment_size);
    *options
        .progress
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(end_segment.name(segment_size));
    wait_for_archive(store, end_segment, segment_size, options.archive_wait).await?;

    let manifest = Manifest {
        id,
        system_identifier,
        server_version,
        timeline,
        begin_lsn: format_lsn(begin_lsn),
        end_lsn,
        begin_wal,
        end_wal: end_segment.name(segment_size),
        started_at,
        completed_at,
        from_standby,
        wal_segment_size: segment_size,
        size_bytes: files.iter().map(|f| f.size).sum(),
        stored_bytes: files.iter().map(|f| f.stored).sum(),
        backup_label,
        tablespace_map,
        tablespaces,
        directories,
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    store
        .put(
            &manifest::manifest_key(&manifest.id),
            Bytes::from(body),
            None,
            false,
        )
        .await?;
    Ok(manifest)
}

/// A backup is only restorable with WAL up to its end: wait until the archive has it. On a
/// primary `pg_backup_stop` already waited; a standby cannot switch segments itself, so this
/// waits for the primary's archiver (its agent asks the primary to switch, see
/// `Progress::waiting_for`; a promotion meanwhile continues on the next timeline).
async fn wait_for_archive(
    store: &Store,
    segment: Segment,
    segment_size: u64,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        for timeline in [segment.timeline, segment.timeline + 1] {
            let name = Segment {
                timeline,
                ..segment
            }
            .name(segment_size);
            if store.head_sha256(&wal::key(&name)).await?.is_some() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(ArchiveError::Refused(format!(
                "WAL segment {} did not reach the archive within {within:?}; the backup is \
                 not usable until it does (is archiving working, does the primary get writes?)",
                segment.name(segment_size)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a base backup reads.
struct Tree {
    directories: Vec<String>,
    /// Relative path, where to read it, size when listed.
    files: Vec<(String, PathBuf, u64)>,
    tablespaces: Vec<Tablespace>,
}

/// Directories whose contents a restore does not need (Postgres's own base backup skips
/// them too): WAL comes from the archive, the rest is recreated at start.
const SKIP_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files that describe the running server, not the database.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "current_logfiles",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.tmp",
];

fn walk(root: &Path) -> std::io::Result<Tree> {
    let mut tree = Tree {
        directories: Vec::new(),
        files: Vec::new(),
        tablespaces: Vec::new(),
    };
    walk_dir(root, "", &mut tree)?;
    let tblspc = root.join("pg_tblspc");
    for entry in std::fs::read_dir(&tblspc)? {
        let entry = entry?;
        let oid = entry.file_name().to_string_lossy().into_owned();
        let location = std::fs::read_link(entry.path())?;
        let rel = format!("pg_tblspc/{oid}");
        tree.tablespaces.push(Tablespace {
            oid,
            location: location.to_string_lossy().into_owned(),
        });
        walk_dir(&location, &rel, &mut tree)?;
    }
    Ok(tree)
}

fn walk_dir(dir: &Path, rel: &str, tree: &mut Tree) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Dropped while we read (a temporary folder, a dropped database).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if name.starts_with("pgsql_tmp") || name == "pg_internal.init" {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            tree.directories.push(path.clone());
            if !(rel.is_empty() && SKIP_CONTENTS.contains(&name.as_str())) {
                walk_dir(&entry.path(), &path, tree)?;
            }
        } else if meta.is_file() && !(rel.is_empty() && SKIP_FILES.contains(&name.as_str())) {
            tree.files.push((path, entry.path(), meta.len()));
        }
        // Symlinks: pg_tblspc's are walked by `walk`; Postgres makes no others.
    }
    Ok(())
}

/// Uploads `files`: the small ones packed into bundles, the others one object each, both at
/// once.
async fn upload_files(
    store: &Store,
    id: &str,
    files: Vec<(String, PathBuf, u64)>,
    options: &BackupOptions,
) -> Result<Vec<FileEntry>> {
    let (small, large): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|(_, _, size)| *size < BUNDLE_FILE_MAX);
    let (parallel, progress) = (options.parallel, &options.progress);
    let (mut done, bundled) = tokio::try_join!(
        upload_large(store, id, large, parallel, progress),
        upload_bundles(store, id, small, parallel, progress),
    )?;
    done.extend(bundled);
    done.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(done)
}

/// Uploads `files` one object each, largest first so the long ones start early, `parallel` at
/// a time.
async fn upload_large(
    store: &Store,
    id: &str,
    mut files: Vec<(String, PathBuf, u64)>,
    parallel: usize,
    progress: &Arc<Progress>,
) -> Result<Vec<FileEntry>> {
    files.sort_by_key(|(_, _, size)| std::cmp::Reverse(*size));
    let mut pending = files.into_iter();
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some((rel, path, _)) = pending.next() else {
                break;
            };
            let (store, key) = (store.clone(), manifest::data_key(id, &rel));
            let progress = progress.clone();
            running.spawn(async move { upload_file(&store, &key, &path, rel, progress).await });
        }
        let Some(finished) = running.join_next().await else {
            return Ok(done);
        };
        if let Some(entry) = finished.expect("uploads do not panic")? {
            done.push(entry);
        }
    }
}

/// Files below this size are packed into bundles.
const BUNDLE_FILE_MAX: u64 = 1024 * 1024;
/// A bundle is closed once it holds this many compressed bytes.
const BUNDLE_TARGET: usize = 8 * 1024 * 1024;

/// Bundle `number`: the compressed files one after the other, and where each one is.
struct Bundle {
    number: u32,
    body: Vec<u8>,
    entries: Vec<FileEntry>,
}

/// Packs the small `files` into bundles on a blocking thread while this task uploads the
/// finished ones, `parallel` at a time.
async fn upload_bundles(
    store: &Store,
    id: &str,
    mut files: Vec<(String, PathBuf, u64)>,
    parallel: usize,
    progress: &Arc<Progress>,
) -> Result<Vec<FileEntry>> {
    files.sort();
    let (tx, mut rx) = mpsc::channel::<Bundle>(parallel.max(1));
    let progress = progress.clone();
    let packer = tokio::task::spawn_blocking(move || pack(files, &tx, &progress));
    let mut running = JoinSet::new();
    let mut entries = Vec::new();
    let uploaded: Result<()> = async {
        while let Some(bundle) = rx.recv().await {
            if running.len() >= parallel.max(1)
                && let Some(done) = running.join_next().await
            {
                done.expect("uploads do not panic")?;
            }
            let (store, key) = (store.clone(), manifest::bundle_key(id, bundle.number));
            entries.extend(bundle.entries);
            let body = Bytes::from(bundle.body);
            running.spawn(async move { store.put(&key, body, None, false).await });
        }
        while let Some(done) = running.join_next().await {
            done.expect("uploads do not panic")?;
        }
        Ok(())
    }
    .await;
    // Closing the channel stops the packer if an upload failed.
    drop(rx);
    let packed = packer.await.expect("packing does not panic");
    uploaded?;
    packed?;
    Ok(entries)
}

/// Reads and compresses `files` into bundles of about [`BUNDLE_TARGET`] bytes, sent to `out`.
/// A file that vanished is left out, as in [`upload_file`].
fn pack(
    files: Vec<(String, PathBuf, u64)>,
    out: &mpsc::Sender<Bundle>,
    progress: &Progress,
) -> Result<()> {
    let mut compressor = codec::Compressor::new().map_err(ArchiveError::io("starting", "zstd"))?;
    let mut bundle = Bundle {
        number: 0,
        body: Vec::new(),
        entries: Vec::new(),
    };
    for (rel, path, _) in files {
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ArchiveError::io("reading", &path)(e)),
        };
        progress.add(data.len() as u64);
        let frame = compressor
            .compress(&data)
            .map_err(ArchiveError::io("compressing", &path))?;
        bundle.entries.push(FileEntry {
            path: rel,
            size: data.len() as u64,
            sha256: codec::sha256_hex(&data),
            stored: frame.len() as u64,
            bundle: Some(Bundled {
                number: bundle.number,
                offset: bundle.body.len() as u64,
            }),
        });
        bundle.body.extend_from_slice(&frame);
        if bundle.body.len() >= BUNDLE_TARGET {
            let next = Bundle {
                number: bundle.number + 1,
                body: Vec::new(),
                entries: Vec::new(),
            };
            if out
                .blocking_send(std::mem::replace(&mut bundle, next))
                .is_err()
            {
                return Ok(());
            }
        }
    }
    if !bundle.entries.is_empty() {
        let _ = out.blocking_send(bundle);
    }
    Ok(())
}

/// Streams one file: a blocking thread reads and compresses it, this task gathers the frames
/// into parts and uploads them (up to two at a time). `None` if the file vanished, which
/// Postgres allows (a dropped table); WAL replay recreates what is needed.
async fn upload_file(
    store: &Store,
    key: &str,
    path: &Path,
    rel: String,
    progress: Arc<Progress>,
) -> Result<Option<FileEntry>> {
    let file = match std::fs::File::open(path) {
        Ok(inner) => Counted { inner, progress },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ArchiveError::io("opening", path)(e)),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let reader = tokio::task::spawn_blocking(move || codec::compress_stream(file, &tx));
    let mut buffer = BytesMut::new();
    let mut upload = None;
    let mut parts = JoinSet::new();
    let mut completed = Vec::new();
    let mut number = 0;
    let mut stored = 0u64;
    let outcome: Result<()> = async {
        while let Some(frame) = rx.recv().await {
            stored += frame.len() as u64;
            buffer.extend_from_slice(&frame);
            if buffer.len() < PART {
                continue;
            }
            if upload.is_none() {
                upload = Some(store.start_multipart(key).await?);
            }
            if parts.len() >= 2
                && let Some(part) = parts.join_next().await
            {
                completed.push(part.expect("uploads do not panic")?);
            }
            number += 1;
            let (upload, body, n) = (
                upload.clone().expect("started"),
                buffer.split().freeze(),
                number,
            );
            parts.spawn(async move { upload.part(n, body).await });
        }
        Ok(())
    }
    .await;
    // Closing the channel lets the reader finish if the upload failed half way.
    drop(rx);
    let sealed = reader.await.expect("reading does not panic");
    let finished = match (outcome, sealed) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(ArchiveError::io("reading", path)(e)),
        (Ok(()), Ok(sealed)) => {
            async {
                while let Some(part) = parts.join_next().await {
                    completed.push(part.expect("uploads do not panic")?);
                }
                match &upload {
                    None => {
                        store.put(key, buffer.split().freeze(), None, false).await?;
                    }
                    Some(upload) => {
                        if !buffer.is_empty() {
                            completed.push(upload.part(number + 1, buffer.split().freeze()).await?);
                        }
                        upload
                            .clone()
                            .complete(std::mem::take(&mut completed))
                            .await?;
                    }
                }
                Ok(sealed)
            }
            .await
        }
    };
    let sealed = match finished {
        Ok(sealed) => sealed,
        Err(e) => {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            return Err(e);
        }
    };
    Ok(Some(FileEntry {
        path: rel,
        size: sealed.size,
        sha256: sealed.sha256,
        stored,
        bundle: None,
    }))
}
