//! The archive is never overwritten with different content, and damaged content never
//! reaches Postgres.

use std::process::Command;

use pgha::agent::Desired;
use pgha::archive::ArchiveError;
use pgha::archive::restore::{self, RestoreOptions};
use pgha::plan::recovery::Target;

use crate::cluster::Workspace;
use crate::s3::S3;
use crate::{archive_now, archiving, commands, local, restore_and_start, take_backup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_pushes_and_corrupt_objects_are_refused() {
    let s3 = S3::start();
    let ws = Workspace::new(&["a", "r"]);
    let settings = archiving(&ws, &s3, "a");
    let _primary = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    take_backup(&settings, &s3, "base").await;
    client
        .batch_execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
        .await
        .unwrap();
    let first = archive_now(&client).await;
    client
        .batch_execute("INSERT INTO t VALUES (0)")
        .await
        .unwrap();
    let second = archive_now(&client).await;
    let pgha = env!("CARGO_BIN_EXE_pgha");

    // Different content under an archived name is refused, from a copy of the same database
    // system (a second primary) and, before any object is read, from another one.
    let object = s3.object_file(&format!("wal/{first}.zst"));
    let original = std::fs::read(&object).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("pg_wal")).unwrap();
    std::fs::create_dir(other.path().join("global")).unwrap();
    let control = other.path().join("global/pg_control");
    std::fs::copy(settings.data_dir.join("global/pg_control"), &control).unwrap();
    let impostor = other.path().join("pg_wal").join(&first);
    std::fs::write(&impostor, vec![7u8; 16 * 1024 * 1024]).unwrap();
    let push = || {
        Command::new(pgha)
            .arg("wal-push")
            .arg("--store")
            .arg(s3.store_file())
            .arg(&impostor)
            .output()
            .unwrap()
    };
    let twin = push();
    assert!(!twin.status.success());
    let stderr = String::from_utf8_lossy(&twin.stderr);
    assert!(
        stderr.contains("already holds different content"),
        "{stderr}"
    );
    std::fs::write(&control, 42u64.to_le_bytes()).unwrap();
    let stranger = push();
    assert!(!stranger.status.success());
    let stderr = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        stderr.contains("is the archive of database system")
            && stderr.contains("this is database system 42"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&object).unwrap(),
        original,
        "the original is intact"
    );

    // A damaged object: wal-fetch says so and exits 128, which aborts recovery instead of
    // ending it early; nothing is written where Postgres would read it.
    let damaged = s3.object_file(&format!("wal/{second}.zst"));
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&damaged, bytes).unwrap();
    let dest = other.path().join("pg_wal/RECOVERYXLOG");
    let fetch = Command::new(pgha)
        .arg("wal-fetch")
        .arg("--store")
        .arg(s3.store_file())
        .arg(&second)
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fetch.stderr);
    assert_eq!(fetch.status.code(), Some(128), "{stderr}");
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(!dest.exists());
    // A streaming standby asks with --standby: the failure reads as "not archived", so it goes
    // back to streaming instead of shutting down; still nothing is written.
    let standby = Command::new(pgha)
        .arg("wal-fetch")
        .arg("--store")
        .arg(s3.store_file())
        .arg("--standby")
        .arg(&second)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(standby.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&standby.stderr).contains("is corrupt"));
    assert!(!dest.exists());

    // Recovery through the damaged segment stops with an error and never promotes.
    let mut restored = restore_and_start(&ws, &s3, "r", &Target::Latest).await;
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        restored.postmaster.wait(),
    )
    .await
    .expect("the postmaster stops when recovery cannot continue")
    .unwrap();
    assert!(!status.success());
    let log = ws.log("r");
    assert!(log.contains("is corrupt"), "{log}");
    assert!(
        !log.contains("database system is ready to accept connections"),
        "{log}"
    );

    // A damaged bundle of small files fails the restore, naming the object.
    let bundle = s3.object_file("base/base/bundle/000000.zst");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&bundle, bytes).unwrap();
    let options = RestoreOptions {
        parallel: 4,
        fetch_command: commands(&s3).fetch,
        owner: None,
    };
    let err = restore::restore(
        &s3.store(),
        &Target::Latest,
        &other.path().join("again"),
        &options,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ArchiveError::Corrupt { ref key, .. } if key.ends_with("bundle/000000.zst")),
        "{err}"
    );
}
