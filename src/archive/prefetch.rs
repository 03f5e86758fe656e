//! The long-lived WAL prefetcher: it keeps the segments Postgres will ask for next downloaded
//! in the spool (`pg_wal/pgha-prefetch`), across `restore_command` calls, so that replay never
//! waits for the archive while the archive keeps up. Each `pgha wal-fetch` names the segment it
//! was asked for in the spool's `.want`; the prefetcher keeps `plan::prefetch`'s window after
//! it full and says it runs by touching `.alive`. Without it, `wal-fetch` fetches in batches
//! on its own. The agent runs it beside a replaying Postgres (a restore, a standby).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;

use super::error::{ArchiveError, Result};
use super::store::{Store, StoreConfig};
use super::wal::{Fetched, download};
pub use crate::plan::prefetch::spool_of;
use crate::plan::prefetch::{Limits, View, next};
use crate::plan::wal::Segment;

/// The file `wal-fetch` names the wanted segment in.
pub const WANT: &str = ".want";
/// Touched by a running prefetcher.
const ALIVE: &str = ".alive";
/// A prefetcher whose `.alive` is older than this is taken for gone (generous: a busy
/// machine may hold up its loop for a while, and `wal-fetch` on its own clears the spool).
const ALIVE_WITHIN: Duration = Duration::from_secs(10);
/// How long an end of the archive or a failed download holds before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether a prefetcher keeps `spool` now.
pub fn alive(spool: &Path) -> bool {
    std::fs::metadata(spool.join(ALIVE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|ago| ago < ALIVE_WITHIN)
}

/// Names `name` as the segment Postgres wants (written whole, then renamed into place).
pub fn want(spool: &Path, name: &str) -> Result<()> {
    let partial = spool.join(".want.partial");
    std::fs::write(&partial, name).map_err(ArchiveError::io("writing", &partial))?;
    let to = spool.join(WANT);
    std::fs::rename(&partial, &to).map_err(ArchiveError::io("moving", &to))
}

/// The store of a store file, opened again when the file changes (the archive moved).
struct Opened {
    file: PathBuf,
    opened: Option<(SystemTime, Store)>,
}

impl Opened {
    fn store(&mut self) -> Option<Store> {
        let modified = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok()?;
        if self.opened.as_ref().is_none_or(|(at, _)| *at != modified) {
            let store = StoreConfig::from_file(&self.file).and_then(|c| Store::new(&c));
            match store {
                Ok(store) => self.opened = Some((modified, store)),
                Err(e) => {
                    tracing::warn!(error = %e, "the WAL prefetcher cannot open its store");
                    self.opened = None;
                }
            }
        }
        self.opened.as_ref().map(|(_, store)| store.clone())
    }
}

/// Keeps `spool` (created if missing) filled from the store `store_file` describes, until
/// cancelled. `owner` is who the spool's files must belong to (Postgres's user when the agent
/// runs as root).
pub async fn run(
    store_file: PathBuf,
    spool: PathBuf,
    segment_size: u64,
    limits: Limits,
    owner: Option<(u32, u32)>,
) {
    let mut store = Opened {
        file: store_file,
        opened: None,
    };
    let mut fetching: JoinSet<(Segment, Result<Fetched>)> = JoinSet::new();
    let mut running = BTreeSet::new();
    let mut end: Option<(Segment, Instant)> = None;
    let mut failed: Option<(Segment, Instant)> = None;
    let mut touched = Instant::now() - ALIVE_WITHIN;
    loop {
        if touched.elapsed() >= Duration::from_secs(1) {
            touched = Instant::now();
            if let Err(e) = touch(&spool, owner) {
                tracing::warn!(error = %e, "the WAL prefetch spool is not writable");
            }
        }
        let wanted = wanted_now(&spool, segment_size);
        end = end.filter(|(_, at)| at.elapsed() < RETRY_AFTER);
        failed = failed.filter(|(_, at)| at.elapsed() < RETRY_AFTER);
        let view = View {
            wanted,
            spooled: spooled(&spool, segment_size),
            fetching: running.clone(),
            end: [end, failed].into_iter().flatten().map(|(s, _)| s).min(),
        };
        let decision = next(&view, limits);
        for segment in decision.remove {
            let _ = std::fs::remove_file(spool.join(segment.name(segment_size)));
        }
        if !decision.start.is_empty()
            && let Some(opened) = store.store()
        {
            for segment in decision.start {
                running.insert(segment);
                let (store, to) = (opened.clone(), spool.join(segment.name(segment_size)));
                fetching.spawn(async move {
                    let fetched = download(&store, &segment.name(segment_size), &to).await;
                    if fetched.is_ok()
                        && let Some((uid, gid)) = owner
                    {
                        let _ = std::os::unix::fs::chown(&to, Some(uid), Some(gid));
                    }
                    (segment, fetched)
                });
            }
        }
        // Until a download ends, or a moment passes for `.want` to move: a short one while
        // replay goes on, a longer one while nobody asks (a standby that streams).
        let asked_lately = wanted.is_some_and(|(_, ago)| ago < Duration::from_secs(1));
        let pause = match asked_lately || !fetching.is_empty() {
            true => Duration::from_millis(5),
            false => Duration::from_millis(100),
        };
        let done = tokio::select! {
            done = fetching.join_next(), if !fetching.is_empty() => done,
            () = tokio::time::sleep(pause) => None,
        };
        if let Some(Ok((segment, fetched))) = done {
            running.remove(&segment);
            match fetched {
                Ok(Fetched::Restored) => {}
                Ok(Fetched::NotFound) => end = Some((segment, Instant::now())),
                Err(e) => {
                    tracing::warn!(segment = %segment.name(segment_size), error = %e, "prefetch failed; wal-fetch will fetch it itself");
                    failed = Some((segment, Instant::now()));
                }
            }
        }
    }
}

/// The segment `.want` names, and how long ago it was written.
fn wanted_now(spool: &Path, segment_size: u64) -> Option<(Segment, Duration)> {
    let file = spool.join(WANT);
    let written = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
    let name = std::fs::read_to_string(&file).ok()?;
    let ago = SystemTime::now()
        .duration_since(written)
        .unwrap_or_default();
    Some((Segment::parse(name.trim(), segment_size)?, ago))
}

fn touch(spool: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if !spool.exists() {
        std::fs::create_dir_all(spool).map_err(ArchiveError::io("creating", spool))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(spool, Some(uid), Some(gid))
                .map_err(ArchiveError::io("handing to Postgres's user", spool))?;
        }
    }
    let alive = spool.join(ALIVE);
    std::fs::write(&alive, b"").map_err(ArchiveError::io("touching", &alive))
}

/// The complete segments in the spool.
fn spooled(spool: &Path, segment_size: u64) -> BTreeSet<Segment> {
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Segment::parse(e.file_name().to_str()?, segment_size))
        .collect()
}
