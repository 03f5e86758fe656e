//! Retention against the server: a dry run deletes nothing, the real run deletes exactly
//! the selection, and what is left still restores.

use chrono::{Duration, Utc};
use pgha::agent::Desired;
use pgha::archive::{catalog, retention};
use pgha::plan::retention::Policy;
use pgha::plan::wal::{DEFAULT_SEGMENT_SIZE, Segment};

use crate::cluster::Workspace;
use crate::s3::S3;
use crate::{archive_now, archiving, local, take_backup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_what_the_rules_select() {
    let s3 = S3::start();
    let ws = Workspace::new(&["a"]);
    let settings = archiving(&ws, &s3, "a");
    let _primary = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let mut taken = Vec::new();
    for id in ["b1", "b2", "b3"] {
        client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        archive_now(&client).await;
        taken.push(take_backup(&settings, &s3, id).await);
    }
    archive_now(&client).await;
    let store = s3.store();
    let segment = |name: &str| Segment::parse(name, DEFAULT_SEGMENT_SIZE).unwrap();

    // Every backup is inside a one-hour window: only the WAL from before the first goes.
    let recent = Policy {
        count: None,
        window: Some(Duration::hours(1)),
    };
    let first_needed = segment(&taken[0].begin_wal);
    let pruned = retention::apply(&store, &recent, Utc::now(), false)
        .await
        .unwrap();
    assert!(pruned.backups.is_empty(), "{pruned:?}");
    assert!(!pruned.wal.is_empty(), "the segments before b1 go");
    assert!(
        pruned
            .wal
            .iter()
            .all(|n| segment(n).number < first_needed.number),
        "{pruned:?}"
    );
    let before = catalog::read(&store).await.unwrap();
    assert_eq!(before.backups.len(), 3);
    assert!(
        before
            .segments()
            .iter()
            .all(|s| s.segment.number >= first_needed.number)
    );

    let one = Policy {
        count: Some(1),
        window: None,
    };
    let dry = retention::apply(&store, &one, Utc::now(), true)
        .await
        .unwrap();
    assert_eq!(dry.backups, ["b1", "b2"]);
    let start = segment(&taken[2].begin_wal);
    assert!(!dry.wal.is_empty());
    let unchanged = catalog::read(&store).await.unwrap();
    assert_eq!(unchanged.backups.len(), 3);
    assert_eq!(unchanged.wal.len(), before.wal.len());

    let done = retention::apply(&store, &one, Utc::now(), false)
        .await
        .unwrap();
    assert_eq!(done, dry);
    let after = catalog::read(&store).await.unwrap();
    assert_eq!(
        after
            .backups
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["b3"]
    );
    assert_eq!(after.wal.len(), before.wal.len() - dry.wal.len());
    assert!(after.incomplete.is_empty(), "no data of b1 or b2 is left");
    for segment in after.segments() {
        assert!(segment.segment.number >= start.number);
    }
    assert!(after.window().is_some(), "b3 is still restorable");
}
