//! The manifest of a base backup: `base/<id>/backup.json`. Written last, it is what makes a
//! backup exist; restore reads the file list and checksums from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::recovery::BackupPoint;
use crate::plan::wal::parse_lsn;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub id: String,
    pub system_identifier: String,
    pub server_version: u32,
    pub timeline: u32,
    pub begin_lsn: String,
    pub end_lsn: String,
    /// First and last WAL segment a restore of this backup needs.
    pub begin_wal: String,
    pub end_wal: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub from_standby: bool,
    pub wal_segment_size: u64,
    /// Bytes read from the data directory, and bytes stored after compression.
    pub size_bytes: u64,
    pub stored_bytes: u64,
    /// What `pg_backup_stop` returned; restore writes them into the data directory.
    pub backup_label: String,
    #[serde(default)]
    pub tablespace_map: String,
    #[serde(default)]
    pub tablespaces: Vec<Tablespace>,
    /// Every directory, including the ones whose contents are not backed up (`pg_wal`…).
    pub directories: Vec<String>,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tablespace {
    pub oid: String,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the data directory; tablespace files are under `pg_tblspc/<oid>/`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Compressed bytes in the store.
    pub stored: u64,
    /// Set for a small file stored inside a bundle with others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Bundled>,
}

/// Where a small file's compressed bytes sit: `stored` bytes from `offset` in bundle `number`.
/// An object per file would make a restore one request per file, and a data directory holds
/// about a thousand small files per database; at 20-30 ms per GET that is most of the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundled {
    pub number: u32,
    pub offset: u64,
}

pub fn manifest_key(id: &str) -> String {
    format!("base/{id}/backup.json")
}

pub fn data_key(id: &str, path: &str) -> String {
    format!("base/{id}/data/{path}.zst")
}

pub fn bundle_key(id: &str, number: u32) -> String {
    format!("base/{id}/bundle/{number:06}.zst")
}

impl Manifest {
    /// What the pure restore and retention decisions need to know about this backup.
    pub fn point(&self) -> BackupPoint {
        BackupPoint {
            id: self.id.clone(),
            timeline: self.timeline,
            begin_lsn: parse_lsn(&self.begin_lsn).unwrap_or(0),
            end_lsn: parse_lsn(&self.end_lsn).unwrap_or(u64::MAX),
            completed_at: self.completed_at,
        }
    }
}

/// From a `backup_label`: the start LSN, its WAL file and the timeline.
pub fn parse_label(label: &str) -> Option<(u64, String, u32)> {
    let mut start = None;
    let mut timeline = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            // "0/2000028 (file 000000010000000000000002)"
            let (lsn, file) = rest.split_once(" (file ")?;
            start = Some((parse_lsn(lsn)?, file.trim_end_matches(')').to_string()));
        } else if let Some(tl) = line.strip_prefix("START TIMELINE: ") {
            timeline = tl.trim().parse().ok();
        }
    }
    let (lsn, file) = start?;
    Some((lsn, file, timeline?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_gives_start_and_timeline() {
        let label = "START WAL LOCATION: 0/9000028 (file 000000020000000000000009)\n\
                     CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: standby\nSTART TIME: 2026-11-22 12:00:00 UTC\n\
                     LABEL: pgha\nSTART TIMELINE: 2\n";
        assert_eq!(
            parse_label(label),
            Some((0x9000028, "000000020000000000000009".into(), 2))
        );
        assert_eq!(parse_label("LABEL: x\n"), None);
    }
}
