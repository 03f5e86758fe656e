//! The WAL prefetcher (`pgha wal-prefetch`) keeps the segments after the one `wal-fetch` was
//! asked for downloaded, no more than its depth, moves with replay, stops at the end of the
//! archive, and `wal-fetch` serves from it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgha::archive::wal;
use pgha::plan::wal::Segment;

use crate::eventually::eventually;
use crate::s3::S3;

const SEGMENT: u64 = 1024 * 1024;

fn name(number: u64) -> String {
    Segment {
        timeline: 1,
        number,
    }
    .name(SEGMENT)
}

/// The segment numbers waiting in the spool.
fn spooled(pg_wal: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(pg_wal.join("pgha-prefetch"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Segment::parse(e.file_name().to_str()?, SEGMENT))
        .map(|s| s.number)
        .collect()
}

fn wal_fetch(s3: &S3, pg_wal: &Path, number: u64) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_pgha"))
        .arg("wal-fetch")
        .arg("--store")
        .arg(s3.store_file())
        .args(["--wal-segment-size", &SEGMENT.to_string()])
        .arg(name(number))
        .arg(pg_wal.join(name(number)))
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetcher_keeps_its_window_ahead_of_replay() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written");
    std::fs::create_dir(&written).unwrap();
    // Segments 1–12 of timeline 1 in the archive, each with content of its own.
    for n in 1..=12u64 {
        let path = written.join(name(n));
        let content: Vec<u8> = (0..SEGMENT).map(|i| ((i * n) % 251) as u8).collect();
        std::fs::write(&path, content).unwrap();
        wal::push(&s3.store(), &path, SEGMENT).await.unwrap();
    }
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let mut prefetcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgha"))
        .arg("wal-prefetch")
        .arg("--store")
        .arg(s3.store_file())
        .arg("--pg-wal")
        .arg(&pg_wal)
        .args(["--depth", "4", "--parallel", "2"])
        .args(["--wal-segment-size", &SEGMENT.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the prefetcher alive", || async {
        pg_wal.join("pgha-prefetch/.alive").exists().then_some(())
    })
    .await;

    // Asked for 1, it keeps 2–5 ready, and 2 then comes from the spool.
    assert_eq!(wal_fetch(&s3, &pg_wal, 1), 0);
    let window = |numbers: std::ops::RangeInclusive<u64>| {
        let want: BTreeSet<u64> = numbers.collect();
        let pg_wal = pg_wal.clone();
        async move {
            let now = spooled(&pg_wal);
            (now == want).then_some(())
        }
    };
    eventually(Duration::from_secs(10), "2–5 spooled", || window(2..=5)).await;
    assert_eq!(wal_fetch(&s3, &pg_wal, 2), 0);
    assert_eq!(
        std::fs::read(pg_wal.join(name(2))).unwrap(),
        std::fs::read(written.join(name(2))).unwrap()
    );
    eventually(Duration::from_secs(10), "3–6 spooled", || window(3..=6)).await;

    // A jump ahead drops what is behind; the window stops at the end of the archive.
    assert_eq!(wal_fetch(&s3, &pg_wal, 9), 0);
    eventually(Duration::from_secs(10), "10–12 spooled", || {
        window(10..=12)
    })
    .await;
    for n in 10..=12 {
        assert_eq!(wal_fetch(&s3, &pg_wal, n), 0, "segment {n}");
        assert_eq!(
            std::fs::read(pg_wal.join(name(n))).unwrap(),
            std::fs::read(written.join(name(n))).unwrap()
        );
    }
    assert_eq!(wal_fetch(&s3, &pg_wal, 13), 1, "13 is not in the archive");

    // New WAL in the archive is picked up once the end is tried again.
    let path = written.join(name(13));
    std::fs::write(&path, vec![13u8; SEGMENT as usize]).unwrap();
    wal::push(&s3.store(), &path, SEGMENT).await.unwrap();
    assert_eq!(wal_fetch(&s3, &pg_wal, 12), 0);
    eventually(Duration::from_secs(10), "13 spooled", || window(13..=13)).await;
    prefetcher.kill().await.unwrap();
}
