//! A running base backup says how far it is: `pgha archive backup --progress-file` rewrites
//! the bytes read of the bytes to read, and the rate, while it runs.

use std::process::Command;
use std::time::Duration;

use pgha::agent::Desired;
use pgha::api::backup::BackupProgress;

use crate::cluster::Workspace;
use crate::s3::S3;
use crate::{archiving, local};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_shows_its_progress_moving() {
    let s3 = S3::start();
    let ws = Workspace::new(&["p"]);
    let settings = archiving(&ws, &s3, "p");
    let _primary = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    // About 400 MB the backup reads; unlogged, so making it costs no WAL to archive.
    client
        .batch_execute(
            "CREATE UNLOGGED TABLE big AS \
             SELECT g, repeat(md5(g::text), 6) AS pad FROM generate_series(1, 1500000) g",
        )
        .await
        .unwrap();
    let file = tempfile::tempdir().unwrap().keep().join("progress.json");
    let mut backup = Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(["archive", "backup", "--store"])
        .arg(s3.store_file())
        .arg("--pgdata")
        .arg(&settings.data_dir)
        .arg("--host")
        .arg(&settings.run_dir)
        .args(["--port", &settings.port.to_string(), "--parallel", "1"])
        .arg("--progress-file")
        .arg(&file)
        .args(["--progress-interval-ms", "100"])
        .spawn()
        .unwrap();
    let mut seen: Vec<BackupProgress> = Vec::new();
    while backup.try_wait().unwrap().is_none() {
        if let Some(progress) = std::fs::read(&file)
            .ok()
            .and_then(|json| serde_json::from_slice::<BackupProgress>(&json).ok())
            .filter(|p| seen.last() != Some(p))
        {
            seen.push(progress);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backup.wait().unwrap().success());
    println!("progress seen: {seen:?}");
    assert!(seen.len() >= 3, "too few progress reports: {seen:?}");
    let total = seen[0].bytes_total;
    assert!(total > 300_000_000, "{seen:?}");
    assert!(seen.iter().all(|p| p.bytes_total == total), "{seen:?}");
    for pair in seen.windows(2) {
        assert!(pair[0].bytes_done <= pair[1].bytes_done, "{seen:?}");
    }
    let last = seen.last().unwrap();
    assert!(
        last.bytes_done > total / 2 && last.bytes_done <= total + total / 10,
        "{seen:?}"
    );
    assert!(seen.iter().any(|p| p.bytes_per_second > 0), "{seen:?}");
}
