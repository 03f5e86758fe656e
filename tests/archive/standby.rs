//! A base backup taken from a standby restores to the primary's contents.

use std::time::Duration;

use pgha::agent::Desired;
use pgha::plan::recovery::Target;

use crate::cluster::{Workspace, digest, wait_for_row};
use crate::s3::S3;
use crate::{archive_now, archiving, local, restore_and_start, take_backup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_standby_restores() {
    let s3 = S3::start();
    let ws = Workspace::new(&["p", "s", "r"]);
    let primary_settings = archiving(&ws, &s3, "p");
    let _primary = ws
        .start_with(primary_settings.clone(), Desired::Primary)
        .await;
    let _standby = ws.start("s", Desired::Replica(ws.endpoint("p"))).await;
    let primary = local(&primary_settings).await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
        )
        .await
        .unwrap();
    wait_for_row(&ws, "s", 50000).await;

    // A standby cannot end a WAL segment: the primary's switches bring the backup's last
    // segment to the archive while the backup waits for it.
    let switcher = {
        let settings = primary_settings.clone();
        tokio::spawn(async move {
            let client = local(&settings).await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = client
                    .execute("INSERT INTO t VALUES (-1, 'x') ON CONFLICT (id) DO UPDATE SET v = now()::text", &[])
                    .await;
                let _ = client.execute("SELECT pg_switch_wal()", &[]).await;
            }
        })
    };
    let manifest = take_backup(&ws.settings("s"), &s3, "from-standby").await;
    switcher.abort();
    assert!(manifest.from_standby);

    primary
        .execute(
            "INSERT INTO t SELECT g, 'after' FROM generate_series(50001, 50100) g",
            &[],
        )
        .await
        .unwrap();
    archive_now(&primary).await;
    let expected = digest(&primary, "t").await;

    let mut restored = restore_and_start(&ws, &s3, "r", &Target::Latest).await;
    let (client, _) = restored.recovered(&ws).await;
    assert_eq!(digest(&client, "t").await, expected);
}
