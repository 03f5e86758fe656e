//! What the archive holds: completed base backups, WAL per timeline and the recoverability
//! window, read from the bucket itself (there is no second source of truth to drift).

use serde::Serialize;

use super::error::Result;
use super::manifest::{Manifest, manifest_key};
use super::store::{Listed, Store};
use super::wal;
use crate::plan::recovery::{self, ArchivedSegment, BackupPoint, Window};
use crate::plan::wal::{DEFAULT_SEGMENT_SIZE, WalFile};

#[derive(Clone, Debug)]
pub struct Catalog {
    /// Completed backups, oldest first.
    pub backups: Vec<Manifest>,
    /// Every object under `wal/`.
    pub wal: Vec<Listed>,
    /// Keys of backups without a manifest: running, or failed part way.
    pub incomplete: Vec<String>,
    pub segment_size: u64,
}

/// One timeline's archived segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRange {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Segments missing between `first` and `last`.
    pub missing: Vec<String>,
}

pub async fn read(store: &Store) -> Result<Catalog> {
    let base = store.list("base/").await?;
    let mut backups = Vec::new();
    let mut ids: Vec<&str> = base
        .iter()
        .filter_map(|o| o.key.strip_prefix("base/")?.split('/').next())
        .collect();
    ids.dedup();
    let mut incomplete = Vec::new();
    for id in ids {
        let key = manifest_key(id);
        if !base.iter().any(|o| o.key == key) {
            incomplete.push(id.to_string());
            continue;
        }
        let Some((body, _)) = store.get_bytes(&key).await? else {
            continue;
        };
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| store.corrupt(&key)(format!("not a backup manifest ({e})")))?;
        backups.push(manifest);
    }
    backups.sort_by_key(|m| m.completed_at);
    let segment_size = backups
        .last()
        .map_or(DEFAULT_SEGMENT_SIZE, |m| m.wal_segment_size);
    Ok(Catalog {
        backups,
        wal: store.list("wal/").await?,
        incomplete,
        segment_size,
    })
}

impl Catalog {
    pub fn points(&self) -> Vec<BackupPoint> {
        self.backups.iter().map(Manifest::point).collect()
    }

    /// Complete archived segments (not `.partial`, history or backup files).
    pub fn segments(&self) -> Vec<ArchivedSegment> {
        self.wal
            .iter()
            .filter_map(
                |o| match WalFile::parse(wal::name_of(&o.key)?, self.segment_size)? {
                    WalFile::Segment(segment) => Some(ArchivedSegment {
                        segment,
                        stored_at: o.modified,
                    }),
                    _ => None,
                },
            )
            .collect()
    }

    /// Names of every archived WAL file.
    pub fn wal_names(&self) -> Vec<String> {
        self.wal
            .iter()
            .filter_map(|o| wal::name_of(&o.key).map(str::to_string))
            .collect()
    }

    pub fn window(&self) -> Option<Window> {
        recovery::window(&self.points(), &self.segments(), self.segment_size)
    }

    pub fn timelines(&self) -> Vec<TimelineRange> {
        let mut segments = self.segments();
        segments.sort_by_key(|a| a.segment);
        let mut out: Vec<TimelineRange> = Vec::new();
        for chunk in segments.chunk_by(|a, b| a.segment.timeline == b.segment.timeline) {
            let (first, last) = (chunk[0].segment, chunk[chunk.len() - 1].segment);
            let mut missing = Vec::new();
            for pair in chunk.windows(2) {
                let mut gap = pair[0].segment.next();
                while gap < pair[1].segment {
                    missing.push(gap.name(self.segment_size));
                    gap = gap.next();
                }
            }
            out.push(TimelineRange {
                timeline: first.timeline,
                first: first.name(self.segment_size),
                last: last.name(self.segment_size),
                segments: chunk.len() as u64,
                missing,
            });
        }
        out
    }

    /// The catalog as a person reads it.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "BACKUP            TIMELINE  BEGIN       END         COMPLETED                 SIZE       STORED     FROM\n",
        );
        for b in &self.backups {
            out.push_str(&format!(
                "{:<17} {:<9} {:<11} {:<11} {:<25} {:<10} {:<10} {}\n",
                b.id,
                b.timeline,
                b.begin_lsn,
                b.end_lsn,
                b.completed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                mib(b.size_bytes),
                mib(b.stored_bytes),
                if b.from_standby { "standby" } else { "primary" },
            ));
        }
        for id in &self.incomplete {
            out.push_str(&format!("{id:<17} incomplete (no manifest)\n"));
        }
        out.push_str(
            "\nTIMELINE  FIRST                     LAST                      SEGMENTS  MISSING\n",
        );
        for t in self.timelines() {
            out.push_str(&format!(
                "{:<9} {} {} {:<9} {}\n",
                t.timeline,
                t.first,
                t.last,
                t.segments,
                t.missing.len()
            ));
        }
        match self.window() {
            Some(w) => out.push_str(&format!("\nrecoverability window: {w}\n")),
            None => out.push_str("\nrecoverability window: none (no backup with complete WAL)\n"),
        }
        out
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / 1048576.0)
}
