//! Point-in-time restore under a pgbench write load, and restore to the end of the archive
//! after the primary is destroyed.

use std::time::Duration;

use chrono::Utc;
use pgha::agent::Desired;
use pgha::plan::recovery::Target;

use tokio_postgres::Client;

use crate::cluster::Workspace;
use crate::s3::S3;
use crate::{archive_now, archiving, local, marks, restore_and_start, take_backup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_a_time_and_to_the_end_after_the_primary_is_lost() {
    let s3 = S3::start();
    let ws = Workspace::new(&["src", "pitr", "latest"]);
    let settings = archiving(&ws, &s3, "src");
    let src = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE marks (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
        )
        .await
        .unwrap();
    assert!(
        ws.pgbench("src", &["-i", "-s", "2", "-q"])
            .status()
            .await
            .unwrap()
            .success()
    );
    let mut load = ws
        .pgbench("src", &["-c", "2", "-T", "120", "-n"])
        .spawn()
        .unwrap();

    let manifest = take_backup(&settings, &s3, "base-1").await;
    assert_eq!(manifest.timeline, 1);
    assert!(manifest.size_bytes > 30_000_000, "{}", manifest.size_bytes);
    assert!(manifest.stored_bytes < manifest.size_bytes);

    // Marks 1-10, then T, then marks 11-20, each its own commit, under the load.
    for id in 1..=10 {
        client
            .execute("INSERT INTO marks (id) VALUES ($1)", &[&id])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let target = Utc::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for id in 11..=20 {
        client
            .execute("INSERT INTO marks (id) VALUES ($1)", &[&id])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The archive's times have second precision: let the last segment land a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    load.kill().await.unwrap();
    archive_now(&client).await;
    let history = client
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(history > 100, "the load ran: {history} transactions");
    let expected_accounts = accounts(&client).await;

    // The primary is destroyed: its processes killed and its data directory deleted.
    src.fence().await.unwrap();
    std::fs::remove_dir_all(&settings.data_dir).unwrap();

    let mut pitr = restore_and_start(&ws, &s3, "pitr", &Target::Time(target)).await;
    let (restored, report) = pitr.recovered(&ws).await;
    assert_eq!(marks(&restored).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(report.timeline, 2, "{report:?}");

    let mut latest = restore_and_start(&ws, &s3, "latest", &Target::Latest).await;
    let (restored, _) = latest.recovered(&ws).await;
    assert_eq!(marks(&restored).await, (1..=20).collect::<Vec<_>>());
    let restored_history = restored
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(restored_history, history);
    assert_eq!(accounts(&restored).await, expected_accounts);
}

/// A digest of every pgbench account balance.
async fn accounts(client: &Client) -> String {
    client
        .query_one(
            "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
