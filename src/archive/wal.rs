//! `archive_command` and `restore_command`: one WAL file to or from the archive.
//!
//! A push never overwrites: the same content pushed twice succeeds (Postgres retries after a
//! crash), different content under an existing name is refused, so two primaries writing one
//! archive cannot destroy each other's history. A fetch verifies the SHA-256 before the file
//! reaches `pg_wal`, and fetches the next segments in parallel into a spool folder so that
//! replay is not bound by one request at a time.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::codec::{self, Compressor};
use super::error::{ArchiveError, Result};
use super::prefetch;
use super::store::Store;
use crate::plan::wal::WalFile;

/// The archive key of a WAL file.
pub fn key(name: &str) -> String {
    format!("wal/{name}.zst")
}

/// The file name of an archive key under `wal/`, if it is one.
pub fn name_of(key: &str) -> Option<&str> {
    key.strip_prefix("wal/")?.strip_suffix(".zst")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The archive already held this exact content.
    AlreadyArchived,
}

/// Archives the WAL file at `path` (Postgres's `%p`).
pub async fn push(store: &Store, path: &Path, segment_size: u64) -> Result<Pushed> {
    let name = file_name(path)?;
    if WalFile::parse(&name, segment_size).is_none() {
        return Err(ArchiveError::Refused(format!(
            "{}: not a WAL segment, .partial, .history or .backup file name",
            path.display()
        )));
    }
    let raw = Bytes::from(
        tokio::fs::read(path)
            .await
            .map_err(ArchiveError::io("reading", path))?,
    );
    let sha256 = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || codec::sha256_hex(&raw))
            .await
            .expect("hashing does not panic")
    };
    let key = key(&name);
    // Checked before compressing: after an outage, or after `push_ahead`, Postgres hands us
    // files that are already archived.
    if let Some(stored) = store.head_sha256(&key).await? {
        return same_or_conflict(store, &key, path, stored, sha256);
    }
    let body = tokio::task::spawn_blocking(move || Compressor::new()?.compress(&raw))
        .await
        .expect("compression does not panic")
        .map_err(ArchiveError::io("compressing", path))?;
    if store
        .put(&key, Bytes::from(body), Some(&sha256), true)
        .await?
    {
        return Ok(Pushed::Stored);
    }
    // Another writer stored it between our check and our write.
    let stored = store.head_sha256(&key).await?.flatten();
    same_or_conflict(store, &key, path, stored, sha256)
}

fn same_or_conflict(
    store: &Store,
    key: &str,
    path: &Path,
    stored: Option<String>,
    local: String,
) -> Result<Pushed> {
    match stored {
        Some(stored) if stored == local => Ok(Pushed::AlreadyArchived),
        stored => Err(ArchiveError::Conflict {
            bucket: store.bucket().to_string(),
            key: store.full_key(key),
            path: path.to_path_buf(),
            stored: stored.unwrap_or_else(|| "unknown".into()),
            local,
        }),
    }
}

/// Pushes the files Postgres has marked ready (`pg_wal/archive_status/*.ready`) besides
/// `path`, up to `extra` of them, in parallel with `path` itself. When Postgres then asks
/// for them, they are already archived and the push is a quick check.
pub async fn push_ahead(
    store: &Store,
    path: &Path,
    extra: usize,
    segment_size: u64,
) -> Result<Pushed> {
    let name = file_name(path)?;
    let wal_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut ready: Vec<String> = std::fs::read_dir(wal_dir.join("archive_status"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|f| f.strip_suffix(".ready").map(str::to_string))
                .filter(|f| *f != name && WalFile::parse(f, segment_size).is_some())
                .collect()
        })
        .unwrap_or_default();
    ready.sort();
    ready.truncate(extra);
    let mut others = tokio::task::JoinSet::new();
    for other in ready {
        let (store, path) = (store.clone(), wal_dir.join(other));
        // Errors here are Postgres's to see when it pushes that file itself.
        others.spawn(async move { push(&store, &path, segment_size).await });
    }
    let result = push(store, path, segment_size).await;
    others.join_all().await;
    result
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    Restored,
    /// Not in the archive: the end of the archived WAL, or a timeline that does not exist.
    NotFound,
}

/// Restores the WAL file `name` to `dest` (Postgres's `%f` and `%p`): from the spool
/// `pg_wal/pgha-prefetch` when it is there ([`take_spooled`]), else from the store. With a
/// prefetcher keeping the spool ([`super::prefetch`]) it downloads just that file; without
/// one, segments are fetched with the next `prefetch` ones in parallel, which wait in the
/// spool until Postgres asks for them.
pub async fn fetch(
    store: &Store,
    name: &str,
    dest: &Path,
    prefetch: usize,
    segment_size: u64,
) -> Result<Fetched> {
    if take_spooled(name, dest, segment_size)? {
        return Ok(Fetched::Restored);
    }
    let spool = prefetch::spool_of(dest.parent().unwrap_or(Path::new(".")));
    let kept = prefetch::alive(&spool);
    if kept {
        return download(store, name, dest).await;
    }
    let mut ahead = tokio::task::JoinSet::new();
    if let Some(WalFile::Segment(segment)) = WalFile::parse(name, segment_size) {
        clear_spool(&spool);
        std::fs::create_dir_all(&spool).map_err(ArchiveError::io("creating", &spool))?;
        let mut next = segment;
        for _ in 0..prefetch {
            next = next.next();
            let (store, next_name) = (store.clone(), next.name(segment_size));
            let to = spool.join(&next_name);
            // A failed prefetch is retried when Postgres asks for that segment.
            ahead.spawn(async move { download(&store, &next_name, &to).await });
        }
    }
    let result = download(store, name, dest).await;
    if !matches!(result, Ok(Fetched::Restored)) {
        ahead.abort_all();
    }
    // Not `join_all`: it panics on the tasks just aborted, which recovery then reads as a
    // crash of restore_command instead of the error above.
    while ahead.join_next().await.is_some() {}
    result
}

/// Tells a running prefetcher which segment replay wants, and moves `name` from the spool to
/// `dest` if it is there (true). Without the store, the runtime or the network: this is all a
/// `restore_command` does while the prefetcher keeps ahead, once per segment.
pub fn take_spooled(name: &str, dest: &Path, segment_size: u64) -> Result<bool> {
    let spool = prefetch::spool_of(dest.parent().unwrap_or(Path::new(".")));
    let segment = matches!(
        WalFile::parse(name, segment_size),
        Some(WalFile::Segment(_))
    );
    if segment && prefetch::alive(&spool) {
        prefetch::want(&spool, name)?;
    }
    // The prefetcher may drop a spooled segment at any moment (a request it has not seen
    // yet moved its window): one that is gone is downloaded instead.
    let spooled = spool.join(name);
    match std::fs::rename(&spooled, dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ArchiveError::io("moving", &spooled)(e)),
    }
}

/// Prefetched segments Postgres asked for are gone from the spool; the rest belong to an
/// earlier request and are dropped so the spool never grows. The prefetcher's files (`.want`,
/// `.alive`) stay.
fn clear_spool(spool: &Path) {
    if let Ok(entries) = std::fs::read_dir(spool) {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Downloads, decompresses and verifies `name` into `dest` (through a temporary file, so
/// `dest` only ever holds verified content).
pub(super) async fn download(store: &Store, name: &str, dest: &Path) -> Result<Fetched> {
    let key = key(name);
    let partial = PathBuf::from(format!("{}.pgha-partial", dest.display()));
    let open = || std::fs::File::create(&partial).map_err(ArchiveError::io("creating", &partial));
    let Some((expected, decoded)) = store.get_decoded(&key, open).await? else {
        return Ok(Fetched::NotFound);
    };
    let corrupt = store.corrupt(&key);
    let verdict = match (expected, decoded) {
        (None, _) => Err(corrupt("it has no recorded SHA-256".into())),
        (_, Err(e)) => Err(corrupt(format!("it does not decompress ({e})"))),
        (Some(expected), Ok(sealed)) if sealed.sha256 != expected => Err(corrupt(format!(
            "its content has SHA-256 {}, the archive recorded {expected}",
            sealed.sha256
        ))),
        _ => std::fs::rename(&partial, dest).map_err(ArchiveError::io("moving", &partial)),
    };
    if verdict.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    verdict.map(|()| Fetched::Restored)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ArchiveError::Refused(format!("{}: no file name", path.display())))
}
