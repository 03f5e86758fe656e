//! Which base backups and WAL retention deletes.
//!
//! A backup is kept while any configured rule keeps it: the newest `count`, or every backup
//! needed to restore to any point of the last `window` (the backups completed inside it plus
//! the newest one before it). The newest backup is always kept, and so is every WAL file from
//! the start of the oldest kept backup on. History files are never deleted: every later
//! timeline needs them.

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use super::recovery::BackupPoint;
use super::wal::{Segment, WalFile};
use crate::api::cluster::RetentionSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Policy {
    pub count: Option<usize>,
    pub window: Option<Duration>,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("retention.window {0:?}: expected a number followed by h, d or w, such as 30d")]
pub struct WindowError(String);

impl Policy {
    pub fn from_spec(spec: &RetentionSpec) -> Result<Self, WindowError> {
        Ok(Self {
            count: spec.count.map(|c| c.max(1) as usize),
            window: spec.window.as_deref().map(parse_window).transpose()?,
        })
    }
}

/// `36h`, `30d`, `4w`.
pub fn parse_window(text: &str) -> Result<Duration, WindowError> {
    let bad = || WindowError(text.to_string());
    let unit = text.chars().last().ok_or_else(bad)?;
    let amount: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    if amount <= 0 {
        return Err(bad());
    }
    match unit {
        'h' => Ok(Duration::hours(amount)),
        'd' => Ok(Duration::days(amount)),
        'w' => Ok(Duration::weeks(amount)),
        _ => Err(bad()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selection {
    /// Backup ids to delete, oldest first.
    pub backups: Vec<String>,
    /// Archived WAL file names to delete, in name order.
    pub wal: Vec<String>,
}

/// What `policy` deletes at `now` from an archive holding `backups` and the WAL files `wal`.
pub fn select(
    policy: &Policy,
    backups: &[BackupPoint],
    wal: &[String],
    now: DateTime<Utc>,
    segment_size: u64,
) -> Selection {
    let mut newest_first: Vec<&BackupPoint> = backups.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse((b.completed_at, b.end_lsn)));
    let keep: Vec<bool> = newest_first
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let by_count = policy.count.is_some_and(|n| i < n);
            let by_window = policy.window.is_some_and(|w| {
                let start = now - w;
                // Also the newest backup before the window: restoring to its start needs it.
                b.completed_at >= start || (i == 0 || newest_first[i - 1].completed_at >= start)
            });
            let no_rule = policy.count.is_none() && policy.window.is_none();
            i == 0 || by_count || by_window || no_rule
        })
        .collect();
    let Some(oldest_kept) = newest_first
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(b, _)| Segment::containing(b.timeline, b.begin_lsn, segment_size).number)
        .min()
    else {
        // No backup at all: the WAL is all there is, keep it.
        return Selection::default();
    };
    let mut deleted_backups: Vec<String> = newest_first
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(b, _)| b.id.clone())
        .collect();
    deleted_backups.reverse();
    let mut deleted_wal: Vec<String> = wal
        .iter()
        .filter(|name| {
            WalFile::parse(name, segment_size)
                .and_then(|f| f.segment())
                .is_some_and(|s| s.number < oldest_kept)
        })
        .cloned()
        .collect();
    deleted_wal.sort();
    Selection {
        backups: deleted_backups,
        wal: deleted_wal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::wal::DEFAULT_SEGMENT_SIZE as SEG;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap()
    }

    /// Backup `b<d>` completed on day `d`, starting in segment `d * 10`.
    fn backups(days: &[u32]) -> Vec<BackupPoint> {
        days.iter()
            .map(|&d| BackupPoint {
                id: format!("b{d}"),
                timeline: 1,
                begin_lsn: u64::from(d) * 10 * SEG + 40,
                end_lsn: (u64::from(d) * 10 + 1) * SEG,
                completed_at: day(d),
            })
            .collect()
    }

    fn segments(range: std::ops::Range<u64>) -> Vec<String> {
        range
            .map(|n| {
                Segment {
                    timeline: 1,
                    number: n,
                }
                .name(SEG)
            })
            .collect()
    }

    fn policy(count: Option<usize>, window: Option<&str>) -> Policy {
        Policy {
            count,
            window: window.map(|w| parse_window(w).unwrap()),
        }
    }

    #[test]
    fn windows_parse_hours_days_and_weeks() {
        assert_eq!(parse_window("36h"), Ok(Duration::hours(36)));
        assert_eq!(parse_window("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_window("2w"), Ok(Duration::days(14)));
        for bad in ["", "d", "0d", "-1d", "3m", "1.5d"] {
            let err = parse_window(bad).unwrap_err();
            assert!(err.to_string().contains("such as 30d"), "{bad}: {err}");
        }
    }

    #[test]
    fn count_keeps_the_newest_n_and_their_wal() {
        let all = backups(&[1, 2, 3, 4]);
        let wal = [segments(10..45), vec!["00000002.history".into()]].concat();
        let out = select(&policy(Some(2), None), &all, &wal, day(5), SEG);
        assert_eq!(out.backups, ["b1", "b2"]);
        assert_eq!(out.wal, segments(10..30));
    }

    #[test]
    fn window_keeps_the_backup_just_before_it() {
        let all = backups(&[1, 2, 3, 4]);
        // Window starts on day 2.5: b3 and b4 are inside, b2 is needed to reach day 2.5.
        let out = select(
            &policy(None, Some("60h")),
            &all,
            &segments(10..45),
            day(5),
            SEG,
        );
        assert_eq!(out.backups, ["b1"]);
        assert_eq!(out.wal, segments(10..20));
    }

    #[test]
    fn either_rule_keeps_a_backup() {
        let all = backups(&[1, 2, 3, 4]);
        let out = select(&policy(Some(3), Some("1h")), &all, &[], day(5), SEG);
        assert_eq!(out.backups, ["b1"]);
    }

    #[test]
    fn the_newest_backup_is_kept_even_when_every_rule_is_past() {
        let all = backups(&[1, 2]);
        let out = select(
            &policy(None, Some("1h")),
            &all,
            &segments(10..25),
            day(20),
            SEG,
        );
        assert_eq!(out.backups, ["b1"]);
        assert_eq!(out.wal, segments(10..20));
    }

    #[test]
    fn without_backups_nothing_is_deleted() {
        let out = select(&policy(Some(1), None), &[], &segments(1..9), day(5), SEG);
        assert_eq!(out, Selection::default());
    }

    #[test]
    fn partial_and_backup_history_files_go_with_their_segment() {
        let all = backups(&[2]);
        let wal: Vec<String> = [
            "000000010000000000000013.partial",
            "000000020000000000000013",
            "000000010000000000000013.00000028.backup",
            "000000010000000000000014",
            "00000002.history",
            "not-a-wal-file",
        ]
        .map(String::from)
        .to_vec();
        let out = select(&policy(Some(1), None), &all, &wal, day(5), SEG);
        assert_eq!(
            out.wal,
            [
                "000000010000000000000013.00000028.backup",
                "000000010000000000000013.partial",
                "000000020000000000000013",
            ]
        );
    }

    proptest! {
        /// Whatever the policy, the newest backup and every WAL file it needs survive, and a
        /// kept backup never loses a segment from its start on.
        #[test]
        fn kept_backups_keep_their_wal(
            days in proptest::collection::btree_set(1u32..28, 1..8),
            count in proptest::option::of(1usize..5),
            hours in proptest::option::of(1i64..400),
            now in 1u32..29,
        ) {
            let days: Vec<u32> = days.into_iter().collect();
            let all = backups(&days);
            let wal = segments(0..300);
            let policy = Policy { count, window: hours.map(Duration::hours) };
            let out = select(&policy, &all, &wal, day(now), SEG);
            let newest = format!("b{}", days.last().unwrap());
            prop_assert!(!out.backups.contains(&newest));
            for b in all.iter().filter(|b| !out.backups.contains(&b.id)) {
                let start = Segment::containing(1, b.begin_lsn, SEG).number;
                prop_assert!(out.wal.iter().all(|n| Segment::parse(n, SEG).unwrap().number < start));
            }
            if let Some(n) = count {
                prop_assert!(all.len() - out.backups.len() >= n.min(all.len()));
            }
        }
    }
}
