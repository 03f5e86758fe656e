//! Restoring from the archive: which base backup a target starts from, and the window of
//! points the archive can restore to.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use thiserror::Error;

use super::wal::{Segment, format_lsn};

/// A completed base backup, as the catalog lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    pub id: String,
    pub timeline: u32,
    pub begin_lsn: u64,
    /// Recovery is consistent once it has replayed up to here.
    pub end_lsn: u64,
    /// When `pg_backup_stop` returned: every commit before it is in the backup or its WAL.
    pub completed_at: DateTime<Utc>,
}

/// An archived WAL segment and when the archive stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub segment: Segment,
    pub stored_at: DateTime<Utc>,
}

/// Where a restore stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// As soon as the backup is consistent.
    Immediate,
    /// After the last commit before this time.
    Time(DateTime<Utc>),
    /// At this WAL location.
    Lsn(u64),
    /// At a restore point made with `pg_create_restore_point`.
    Name(String),
}

/// A span of restorable points: from the end of a base backup to the end of the WAL that
/// follows it without a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub first_time: DateTime<Utc>,
    pub first_lsn: u64,
    /// When the last contiguous segment was stored: no commit in the archive is later.
    pub last_time: DateTime<Utc>,
    pub last_lsn: u64,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) to {} ({})",
            self.first_time.to_rfc3339_opts(SecondsFormat::Millis, true),
            format_lsn(self.first_lsn),
            self.last_time.to_rfc3339_opts(SecondsFormat::Millis, true),
            format_lsn(self.last_lsn),
        )
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the archive has no base backup whose WAL is complete; take a backup first")]
    NoBackup,
    #[error(
        "recovery target {target} is outside the recoverability window {window}; choose a target inside it"
    )]
    OutsideWindow { target: String, window: Window },
}

/// The backup a restore starts from and how far its WAL reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backup: BackupPoint,
    pub reach: Window,
}

/// How far `backup` can be restored: `None` when a segment between its start and its end is
/// missing. After a promotion the WAL continues on a higher timeline under the same segment
/// numbers, so any timeline from the backup's on counts.
pub fn reach(backup: &BackupPoint, wal: &[ArchivedSegment], segment_size: u64) -> Option<Window> {
    let mut stored: BTreeMap<u64, DateTime<Utc>> = BTreeMap::new();
    for archived in wal.iter().filter(|a| a.segment.timeline >= backup.timeline) {
        let at = stored
            .entry(archived.segment.number)
            .or_insert(archived.stored_at);
        *at = (*at).max(archived.stored_at);
    }
    let first = Segment::containing(backup.timeline, backup.begin_lsn, segment_size).number;
    let needed = Segment::containing(backup.timeline, backup.end_lsn.max(1) - 1, segment_size);
    let mut last = None;
    for (number, at) in stored.range(first..) {
        match last {
            Some((previous, _)) if *number != previous + 1 => break,
            None if *number != first => break,
            _ => last = Some((*number, *at)),
        }
    }
    let (last, last_time) = last.filter(|(n, _)| *n >= needed.number)?;
    Some(Window {
        first_time: backup.completed_at,
        first_lsn: backup.end_lsn,
        last_time: last_time.max(backup.completed_at),
        last_lsn: (last + 1) * segment_size,
    })
}

/// The span of the whole archive: from the oldest restorable backup to the furthest WAL.
pub fn window(
    backups: &[BackupPoint],
    wal: &[ArchivedSegment],
    segment_size: u64,
) -> Option<Window> {
    backups
        .iter()
        .filter_map(|b| reach(b, wal, segment_size))
        .reduce(|a, b| Window {
            first_time: a.first_time.min(b.first_time),
            first_lsn: a.first_lsn.min(b.first_lsn),
            last_time: a.last_time.max(b.last_time),
            last_lsn: a.last_lsn.max(b.last_lsn),
        })
}

/// The newest backup that can reach `target`, or why none can.
///
/// A named restore point cannot be placed in time without reading the WAL, so it starts from
/// the newest backup, as "latest" does; Postgres stops with an error if the name is not found.
pub fn choose(
    backups: &[BackupPoint],
    wal: &[ArchivedSegment],
    target: &Target,
    segment_size: u64,
) -> Result<Choice, TargetError> {
    let mut restorable: Vec<Choice> = backups
        .iter()
        .filter_map(|b| {
            reach(b, wal, segment_size).map(|reach| Choice {
                backup: b.clone(),
                reach,
            })
        })
        .collect();
    restorable.sort_by_key(|c| (c.backup.end_lsn, c.backup.completed_at));
    let whole = window(backups, wal, segment_size).ok_or(TargetError::NoBackup)?;
    let fits = |c: &Choice| match target {
        Target::Latest | Target::Immediate | Target::Name(_) => true,
        Target::Time(t) => c.reach.first_time <= *t && *t <= c.reach.last_time,
        Target::Lsn(lsn) => c.reach.first_lsn <= *lsn && *lsn <= c.reach.last_lsn,
    };
    restorable
        .into_iter()
        .rev()
        .find(fits)
        .ok_or_else(|| TargetError::OutsideWindow {
            target: match target {
                Target::Time(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
                Target::Lsn(lsn) => format_lsn(*lsn),
                other => format!("{other:?}"),
            },
            window: whole,
        })
}

/// The settings that make Postgres replay the archive up to `target`, then promote.
pub fn settings(target: &Target, fetch_command: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (
            "restore_command".to_string(),
            format!("{fetch_command} %f %p"),
        ),
        ("recovery_target_timeline".into(), "latest".into()),
        ("recovery_target_action".into(), "promote".into()),
    ]);
    let (key, value) = match target {
        Target::Latest => return out,
        Target::Immediate => ("recovery_target", "immediate".to_string()),
        // A numeric offset: Postgres checks this setting before it has loaded the time zone
        // abbreviations, so it rejects `Z`.
        Target::Time(t) => (
            "recovery_target_time",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        ),
        Target::Lsn(lsn) => ("recovery_target_lsn", format_lsn(*lsn)),
        Target::Name(name) => ("recovery_target_name", name.clone()),
    };
    out.insert(key.to_string(), value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::wal::DEFAULT_SEGMENT_SIZE as SEG;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, minute, 0).unwrap()
    }

    /// A backup on timeline 1 spanning segments `begin..=end`, completed at `minute`.
    fn backup(id: &str, begin: u64, end: u64, minute: u32) -> BackupPoint {
        BackupPoint {
            id: id.into(),
            timeline: 1,
            begin_lsn: begin * SEG + 40,
            end_lsn: end * SEG + 100,
            completed_at: at(minute),
        }
    }

    /// Segments `numbers` of `timeline`, segment n stored at minute n.
    fn wal(timeline: u32, numbers: impl IntoIterator<Item = u64>) -> Vec<ArchivedSegment> {
        numbers
            .into_iter()
            .map(|number| ArchivedSegment {
                segment: Segment { timeline, number },
                stored_at: at(number as u32),
            })
            .collect()
    }

    #[test]
    fn reach_runs_to_the_first_gap() {
        let b = backup("b", 2, 3, 3);
        let w = reach(&b, &[wal(1, 2..=5), wal(1, 7..=9)].concat(), SEG).unwrap();
        assert_eq!((w.first_time, w.first_lsn), (at(3), 3 * SEG + 100));
        assert_eq!((w.last_time, w.last_lsn), (at(5), 6 * SEG));
    }

    #[test]
    fn a_backup_missing_its_own_wal_is_not_restorable() {
        let b = backup("b", 2, 4, 4);
        assert_eq!(reach(&b, &wal(1, [2, 4]), SEG), None);
        assert_eq!(reach(&b, &wal(1, 3..=9), SEG), None);
        assert_eq!(reach(&b, &wal(1, 2..=3), SEG), None);
        assert!(reach(&b, &wal(1, 2..=4), SEG).is_some());
    }

    #[test]
    fn reach_follows_a_promotion_onto_the_next_timeline() {
        let b = backup("b", 2, 2, 2);
        let archive = [wal(1, 2..=4), wal(2, 4..=6), wal(0, [])].concat();
        assert_eq!(reach(&b, &archive, SEG).unwrap().last_lsn, 7 * SEG);
        // WAL of an older timeline than the backup's is not its history.
        let on_two = BackupPoint {
            timeline: 2,
            ..backup("b2", 4, 4, 5)
        };
        assert_eq!(reach(&on_two, &wal(1, 4..=9), SEG), None);
    }

    #[test]
    fn a_time_target_starts_from_the_newest_backup_completed_before_it() {
        let backups = [backup("old", 2, 2, 2), backup("new", 6, 6, 6)];
        let archive = wal(1, 2..=9);
        let pick = |t| choose(&backups, &archive, &Target::Time(t), SEG).map(|c| c.backup.id);
        assert_eq!(pick(at(3)), Ok("old".into()));
        assert_eq!(pick(at(6)), Ok("new".into()));
        assert_eq!(pick(at(9)), Ok("new".into()));
        let Err(TargetError::OutsideWindow { window, .. }) = pick(at(1)) else {
            panic!("a target before the first backup is refused");
        };
        assert_eq!((window.first_time, window.last_time), (at(2), at(9)));
        assert!(pick(at(10)).is_err(), "after the last archived WAL");
    }

    #[test]
    fn an_lsn_target_needs_wal_up_to_it() {
        let backups = [backup("a", 2, 2, 2), backup("b", 5, 5, 5)];
        let archive = wal(1, 2..=6);
        let pick = |lsn| choose(&backups, &archive, &Target::Lsn(lsn), SEG).map(|c| c.backup.id);
        assert_eq!(pick(4 * SEG), Ok("a".into()));
        assert_eq!(pick(5 * SEG + 100), Ok("b".into()));
        assert_eq!(pick(7 * SEG), Ok("b".into()));
        let err = pick(7 * SEG + 1).unwrap_err();
        assert!(
            err.to_string().contains("0/7000001")
                && err.to_string().contains("0/2000064")
                && err.to_string().contains("0/7000000"),
            "{err}"
        );
    }

    #[test]
    fn latest_takes_the_newest_restorable_backup() {
        let backups = [backup("a", 2, 2, 2), backup("broken", 8, 8, 8)];
        let archive = wal(1, 2..=5);
        let latest = choose(&backups, &archive, &Target::Latest, SEG).unwrap();
        assert_eq!(latest.backup.id, "a");
        assert_eq!(
            choose(&[], &archive, &Target::Latest, SEG),
            Err(TargetError::NoBackup)
        );
        assert_eq!(
            choose(&backups, &[], &Target::Immediate, SEG),
            Err(TargetError::NoBackup)
        );
    }

    #[test]
    fn settings_replay_the_archive_to_the_target_then_promote() {
        let fetch = "/pgha wal-fetch --store /s.yaml";
        let latest = settings(&Target::Latest, fetch);
        assert_eq!(
            latest["restore_command"],
            "/pgha wal-fetch --store /s.yaml %f %p"
        );
        assert_eq!(latest["recovery_target_action"], "promote");
        assert_eq!(latest["recovery_target_timeline"], "latest");
        assert_eq!(latest.len(), 3);
        let time = Utc.with_ymd_and_hms(2026, 11, 22, 12, 3, 4).unwrap()
            + chrono::Duration::microseconds(5);
        // Postgres rejects a `Z` suffix in this setting at startup.
        assert_eq!(
            settings(&Target::Time(time), fetch)["recovery_target_time"],
            "2026-11-22 12:03:04.000005+00"
        );
        assert_eq!(
            settings(&Target::Lsn(0x1_0300_0060), fetch)["recovery_target_lsn"],
            "1/3000060"
        );
        assert_eq!(
            settings(&Target::Immediate, fetch)["recovery_target"],
            "immediate"
        );
        assert_eq!(
            settings(&Target::Name("before-upgrade".into()), fetch)["recovery_target_name"],
            "before-upgrade"
        );
    }

    #[test]
    fn the_window_spans_all_restorable_backups() {
        let backups = [backup("a", 2, 2, 2), backup("b", 5, 5, 5)];
        let w = window(&backups, &wal(1, 2..=7), SEG).unwrap();
        assert_eq!((w.first_lsn, w.last_lsn), (2 * SEG + 100, 8 * SEG));
        assert_eq!(
            w.to_string(),
            "2026-11-22T12:02:00.000Z (0/2000064) to 2026-11-22T12:07:00.000Z (0/8000000)"
        );
    }
}
