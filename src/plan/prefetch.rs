//! What the WAL prefetcher does next: which segments to download ahead of the one Postgres
//! asked for last, and which spooled ones to drop. The spool is a window of `depth` segments
//! after the wanted one on its timeline; everything outside it goes, and so does all of it
//! once nobody has asked for a while (a promoted standby, a finished restore).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wal::Segment;

/// The spool of a `pg_wal` directory: where prefetched segments wait for `wal-fetch`.
pub fn spool_of(pg_wal: &Path) -> PathBuf {
    pg_wal.join("pgha-prefetch")
}

/// How far ahead, and how many downloads at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Segments kept ahead of the wanted one: the spool's size cap, in segments.
    pub depth: u64,
    /// Downloads at the same time.
    pub parallel: usize,
    /// The spool is emptied when nobody asked for a segment this long.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            depth: 16,
            parallel: 8,
            idle: Duration::from_secs(60),
        }
    }
}

/// What the prefetcher sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The segment Postgres asked for last, and how long ago.
    pub wanted: Option<(Segment, Duration)>,
    /// Segments downloaded and waiting in the spool.
    pub spooled: BTreeSet<Segment>,
    /// Downloads under way.
    pub fetching: BTreeSet<Segment>,
    /// The first segment the archive did not have when last asked (retried once the caller
    /// forgets it): nothing at or past it is started.
    pub end: Option<Segment>,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Downloads to start, nearest first.
    pub start: Vec<Segment>,
    /// Spooled segments to delete.
    pub remove: Vec<Segment>,
}

/// The next downloads and removals. Without a request on record (`wal-fetch` fetching on
/// its own cleared it), the spool is `wal-fetch`'s and left alone.
pub fn next(view: &View, limits: Limits) -> Decision {
    let Some((wanted, ago)) = view.wanted else {
        return Decision::default();
    };
    if ago >= limits.idle {
        return Decision {
            start: Vec::new(),
            remove: view.spooled.iter().copied().collect(),
        };
    }
    let in_window = |s: &Segment| {
        s.timeline == wanted.timeline
            && s.number > wanted.number
            && s.number <= wanted.number + limits.depth
    };
    let before_end = |s: &Segment| {
        view.end
            .is_none_or(|end| end.timeline != s.timeline || s.number < end.number)
    };
    let room = limits.parallel.saturating_sub(view.fetching.len());
    let start = (1..=limits.depth)
        .map(|k| Segment {
            number: wanted.number + k,
            ..wanted
        })
        .take_while(before_end)
        .filter(|s| !view.spooled.contains(s) && !view.fetching.contains(s))
        .take(room)
        .collect();
    Decision {
        start,
        remove: view
            .spooled
            .iter()
            .filter(|s| !in_window(s))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(number: u64) -> Segment {
        Segment {
            timeline: 1,
            number,
        }
    }

    fn set(numbers: &[u64]) -> BTreeSet<Segment> {
        numbers.iter().map(|n| seg(*n)).collect()
    }

    fn limits(depth: u64, parallel: usize) -> Limits {
        Limits {
            depth,
            parallel,
            idle: Duration::from_secs(60),
        }
    }

    fn numbers(segments: &[Segment]) -> Vec<u64> {
        segments.iter().map(|s| s.number).collect()
    }

    #[test]
    fn the_window_after_the_wanted_segment_fills_nearest_first() {
        // wanted, spooled, fetching, end, depth, parallel | start, remove
        type Row = (
            u64,
            &'static [u64],
            &'static [u64],
            Option<u64>,
            u64,
            usize,
            &'static [u64],
            &'static [u64],
        );
        let table: [Row; 6] = [
            // Nothing yet: as many as may run, nearest first.
            (10, &[], &[], None, 8, 3, &[11, 12, 13], &[]),
            // Spooled and running ones are not started again.
            (10, &[11, 13], &[12], None, 8, 3, &[14, 15], &[]),
            // Never more than `parallel` at once.
            (10, &[], &[11, 12, 13], None, 8, 3, &[], &[]),
            // Never past the window: the spool's cap.
            (10, &[11, 12, 13], &[], None, 3, 3, &[], &[]),
            // What Postgres consumed, or is older, goes; so does what is past the window.
            (
                10,
                &[9, 10, 11, 20],
                &[],
                None,
                4,
                2,
                &[12, 13],
                &[9, 10, 20],
            ),
            // Not at or past the end of the archive.
            (10, &[], &[], Some(12), 8, 8, &[11], &[]),
        ];
        for (wanted, spooled, fetching, end, depth, parallel, start, remove) in table {
            let view = View {
                wanted: Some((seg(wanted), Duration::ZERO)),
                spooled: set(spooled),
                fetching: set(fetching),
                end: end.map(seg),
            };
            let d = next(&view, limits(depth, parallel));
            assert_eq!(numbers(&d.start), start, "{view:?}");
            assert_eq!(numbers(&d.remove), remove, "{view:?}");
        }
    }

    #[test]
    fn a_new_timeline_drops_the_old_ones_segments() {
        let old = Segment {
            timeline: 1,
            number: 11,
        };
        let view = View {
            wanted: Some((
                Segment {
                    timeline: 2,
                    number: 10,
                },
                Duration::ZERO,
            )),
            spooled: BTreeSet::from([old]),
            fetching: BTreeSet::new(),
            end: Some(Segment {
                timeline: 1,
                number: 12,
            }),
        };
        let d = next(&view, limits(2, 8));
        assert_eq!(d.remove, [old]);
        assert_eq!(
            d.start,
            [
                Segment {
                    timeline: 2,
                    number: 11
                },
                Segment {
                    timeline: 2,
                    number: 12
                }
            ]
        );
    }

    #[test]
    fn an_idle_spool_is_emptied_and_an_unasked_one_left_alone() {
        let idle = View {
            wanted: Some((seg(10), Duration::from_secs(61))),
            spooled: set(&[11, 12]),
            ..View::default()
        };
        let d = next(&idle, limits(8, 8));
        assert_eq!(d.start, []);
        assert_eq!(numbers(&d.remove), [11, 12]);
        let unasked = View {
            wanted: None,
            ..idle
        };
        assert_eq!(next(&unasked, limits(8, 8)), Decision::default());
    }
}
