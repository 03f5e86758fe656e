//! WAL positions and file names: which timeline and segment an archived file stands for.
//!
//! A segment file is named `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, then the segment number split
//! into a "log" part and a "seg" part, so the split depends on the segment size.

/// Postgres's default `wal_segment_size`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// `0/3000060` → 0x3000060.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// 0x3000060 → `0/3000060`, as Postgres prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// One WAL segment of one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    /// The segment number: the LSN of its first byte divided by the segment size.
    pub number: u64,
}

impl Segment {
    /// The segment holding `lsn` on `timeline`.
    pub fn containing(timeline: u32, lsn: u64, segment_size: u64) -> Self {
        Self {
            timeline,
            number: lsn / segment_size,
        }
    }

    pub fn next(self) -> Self {
        Self {
            number: self.number + 1,
            ..self
        }
    }

    /// The LSN just past this segment.
    pub fn end_lsn(self, segment_size: u64) -> u64 {
        (self.number + 1) * segment_size
    }

    pub fn name(self, segment_size: u64) -> String {
        let per_log = segments_per_log(segment_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    /// Parses a 24-hex-digit segment name.
    pub fn parse(name: &str, segment_size: u64) -> Option<Self> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let field = |range: std::ops::Range<usize>| u64::from_str_radix(&name[range], 16).ok();
        let timeline = u32::try_from(field(0..8)?).ok()?;
        let (log, seg) = (field(8..16)?, field(16..24)?);
        let per_log = segments_per_log(segment_size);
        (timeline > 0 && seg < per_log).then_some(Self {
            timeline,
            number: log * per_log + seg,
        })
    }
}

fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// What a file that Postgres hands to `archive_command` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    Segment(Segment),
    /// The last, incomplete segment of a timeline a standby was promoted from.
    Partial(Segment),
    /// `00000002.history`: the timelines a timeline branched from.
    History(u32),
    /// `…0000000A.00000028.backup`: written by `pg_backup_stop`.
    BackupHistory(Segment),
}

impl WalFile {
    pub fn parse(name: &str, segment_size: u64) -> Option<Self> {
        if let Some(segment) = name.strip_suffix(".partial") {
            return Segment::parse(segment, segment_size).map(Self::Partial);
        }
        if let Some(timeline) = name.strip_suffix(".history") {
            return (timeline.len() == 8)
                .then(|| u32::from_str_radix(timeline, 16).ok())
                .flatten()
                .filter(|t| *t > 0)
                .map(Self::History);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.')?;
            let offset_ok = offset.len() == 8 && offset.bytes().all(|b| b.is_ascii_hexdigit());
            return Segment::parse(segment, segment_size)
                .filter(|_| offset_ok)
                .map(Self::BackupHistory);
        }
        Segment::parse(name, segment_size).map(Self::Segment)
    }

    /// The segment a file belongs to; `None` for history files, which every timeline needs.
    pub fn segment(&self) -> Option<Segment> {
        match self {
            Self::Segment(s) | Self::Partial(s) | Self::BackupHistory(s) => Some(*s),
            Self::History(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MB16: u64 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn lsns_parse_and_print_as_postgres_does() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(format_lsn(0x1_0300_0060), "1/3000060");
    }

    #[test]
    fn segment_names_split_log_and_seg_by_segment_size() {
        let s = Segment::containing(2, 0x1_0300_0060, MB16);
        assert_eq!(s.name(MB16), "000000020000000100000003");
        assert_eq!(s.next().name(MB16), "000000020000000100000004");
        // 0xFF is the last 16 MiB segment of a log; the next one starts log 2.
        let last = Segment::parse("0000000100000001000000FF", MB16).unwrap();
        assert_eq!(last.next().name(MB16), "000000010000000200000000");
        // With 64 MiB segments a log holds 0x40 of them.
        let big = 64 * 1024 * 1024;
        assert_eq!(Segment::parse("000000010000000000000040", big), None);
        assert_eq!(
            Segment::parse("00000001000000010000003F", big)
                .unwrap()
                .next()
                .name(big),
            "000000010000000200000000"
        );
    }

    #[test]
    fn archive_file_kinds_are_recognised() {
        let seg = Segment::parse("000000010000000000000003", MB16).unwrap();
        assert_eq!(
            WalFile::parse("000000010000000000000003", MB16),
            Some(WalFile::Segment(seg))
        );
        assert_eq!(
            WalFile::parse("000000010000000000000003.partial", MB16),
            Some(WalFile::Partial(seg))
        );
        assert_eq!(
            WalFile::parse("000000010000000000000003.00000028.backup", MB16),
            Some(WalFile::BackupHistory(seg))
        );
        assert_eq!(
            WalFile::parse("0000000A.history", MB16),
            Some(WalFile::History(10))
        );
        for bad in [
            "00000000.history",
            "000000000000000000000003",
            "00000001000000000000003",
            "0000000100000000000000XY",
            "000000010000000000000003.zst",
            "000000010000000000000003.28.backup",
            "RECOVERYXLOG",
        ] {
            assert_eq!(WalFile::parse(bad, MB16), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn names_round_trip(timeline in 1u32.., number in 0u64..(1 << 40), shift in 20u32..31) {
            let size = 1u64 << shift;
            let number = number % (u64::from(u32::MAX) * segments_per_log(size));
            let s = Segment { timeline, number };
            prop_assert_eq!(Segment::parse(&s.name(size), size), Some(s));
            prop_assert_eq!(Segment::containing(timeline, s.end_lsn(size) - 1, size), s);
        }
    }
}
