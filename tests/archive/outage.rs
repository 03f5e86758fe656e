//! The object store goes away while Postgres keeps writing: nothing is lost and the archive
//! has no gap once it returns.

use std::time::Duration;

use pgha::agent::Desired;
use pgha::archive::catalog;

use crate::cluster::{Workspace, eventually};
use crate::s3::S3;
use crate::{archive_now, archiving, local, wait_archived};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_archiving_without_a_gap() {
    let mut s3 = S3::start();
    let ws = Workspace::new(&["a"]);
    let settings = archiving(&ws, &s3, "a");
    let primary = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", ws.log("a")));
    let first = archive_now(&client).await;

    s3.stop();
    let mut during = Vec::new();
    for _ in 0..3 {
        client
            .execute(
                "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 1000) g",
                &[],
            )
            .await
            .unwrap();
        let segment: String = client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .unwrap()
            .get(0);
        during.push(segment);
    }
    eventually(
        Duration::from_secs(30),
        "failed archive attempts",
        || async {
            let row = client
                .query_one(
                    "SELECT failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) > 0).then(|| row.get::<_, String>(1))
        },
    )
    .await;
    let pg_wal = settings.data_dir.join("pg_wal");
    for segment in &during {
        assert!(pg_wal.join(segment).exists(), "{segment} kept in pg_wal");
        assert!(
            pg_wal
                .join(format!("archive_status/{segment}.ready"))
                .exists(),
            "{segment} still waits to be archived"
        );
    }

    // The agent reports the outage and the backlog Postgres keeps for it.
    let archiver = primary.status().await.server.unwrap().archiver.unwrap();
    assert!(archiver.failed_count > 0, "{archiver:?}");
    assert!(archiver.pending >= 3, "{archiver:?}");
    assert!(archiver.last_failed_wal.is_some(), "{archiver:?}");

    s3.resume();
    // A new segment wakes the archiver, which backs off after repeated failures.
    client
        .execute("INSERT INTO t (v) VALUES ('back')", &[])
        .await
        .unwrap();
    let last = archive_now(&client).await;
    wait_archived(&client, during.last().unwrap()).await;

    eventually(Duration::from_secs(30), "the backlog to drain", || async {
        let archiver = primary.status().await.server?.archiver?;
        (archiver.pending == 0).then_some(())
    })
    .await;

    let catalog = catalog::read(&s3.store()).await.unwrap();
    let timelines = catalog.timelines();
    assert_eq!(timelines.len(), 1);
    assert!(timelines[0].first.as_str() <= first.as_str());
    assert!(timelines[0].last.as_str() >= last.as_str());
    assert_eq!(
        timelines[0].missing,
        Vec::<String>::new(),
        "no gap in the archive"
    );
}
