//! An archive belongs to one database system of one cluster: the first push records both in
//! `owner.json`; another database, or a copy of the same one under another cluster, is
//! refused before it writes anything, by `wal-push` as Postgres runs it and by `backup`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgha::agent::Desired;
use pgha::agent::settings::ArchiveCommands;
use pgha::api::common::ArchiveOwner;
use pgha::archive::{Store, StoreConfig};
use tokio_postgres::Client;

use crate::cluster::{Workspace, eventually};
use crate::s3::S3;
use crate::{archive_now, local};

/// Store files of clusters `shop/<name>` (uid `uid`) on the test server's one path, in a
/// folder Postgres's user may write the `.error` and `.foreign-owner` files beside them to.
struct Stores {
    dir: tempfile::TempDir,
    base: String,
}

impl Stores {
    fn new(s3: &S3) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o777)).unwrap();
        let base = std::fs::read_to_string(s3.store_file()).unwrap();
        Self { dir, base }
    }

    fn of(&self, name: &str, uid: &str) -> PathBuf {
        let file = self.dir.path().join(format!("{name}.yaml"));
        let text = format!(
            "{}cluster: {{namespace: shop, name: {name}, uid: {uid}}}\n",
            self.base
        );
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, PermissionsExt::from_mode(0o644)).unwrap();
        file
    }
}

fn commands(store: &Path) -> ArchiveCommands {
    ArchiveCommands::new(Path::new(env!("CARGO_BIN_EXE_pgha")), store)
}

async fn failed_archiving(client: &Client) -> i64 {
    client.execute("SELECT pg_switch_wal()", &[]).await.unwrap();
    eventually(
        std::time::Duration::from_secs(30),
        "an archive_command failure",
        || async {
            let row = client
                .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
                .await
                .ok()?;
            let failed: i64 = row.get(0);
            (failed > 0).then_some(failed)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_refuses_every_database_but_its_owner() {
    let s3 = S3::start();
    let stores = Stores::new(&s3);
    let ws = Workspace::new(&["orders", "other"]);
    let orders_store = stores.of("orders", "uid-orders");
    let settings = pgha::agent::Settings {
        source_credentials_dir: "/nonexistent".into(),
        tls: None,
        archive: Some(commands(&orders_store)),
        ..ws.settings("orders")
    };
    let _orders = ws.start_with(settings.clone(), Desired::Primary).await;
    let client = local(&settings).await.unwrap();
    archive_now(&client).await;
    let record: ArchiveOwner =
        serde_json::from_slice(&std::fs::read(s3.object_file("owner.json")).unwrap()).unwrap();
    let system: String = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(record.system_identifier, system);
    let cluster = record.cluster.clone().unwrap();
    assert_eq!(
        (
            cluster.namespace.as_str(),
            cluster.name.as_str(),
            cluster.uid.as_str()
        ),
        ("shop", "orders", "uid-orders")
    );
    assert!(record.created.is_some());

    // Another database, another cluster, the same path (a copy-pasted spec.backup.s3).
    let before = s3.objects("");
    let other_store = stores.of("other", "uid-other");
    let other_settings = pgha::agent::Settings {
        source_credentials_dir: "/nonexistent".into(),
        tls: None,
        archive: Some(commands(&other_store)),
        ..ws.settings("other")
    };
    let _other = ws
        .start_with(other_settings.clone(), Desired::Primary)
        .await;
    let other = local(&other_settings).await.unwrap();
    other
        .batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    failed_archiving(&other).await;
    let error = std::fs::read_to_string(pgha::plan::config::push_error_file(&other_store)).unwrap();
    assert!(
        error.contains(&format!(
            "is the archive of PgCluster shop/orders (uid uid-orders), database system {system}"
        )) && error.contains("this is PgCluster shop/other (uid uid-other)")
            && error.contains("give this cluster its own spec.backup.s3.path"),
        "{error}"
    );
    let foreign: ArchiveOwner = serde_json::from_slice(
        &std::fs::read(pgha::plan::config::foreign_owner_file(&other_store)).unwrap(),
    )
    .unwrap();
    assert_eq!(foreign, record);
    // A base backup of it is refused too, before it stores a byte.
    let backup = Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(["archive", "backup", "--store"])
        .arg(&other_store)
        .arg("--pgdata")
        .arg(&other_settings.data_dir)
        .arg("--host")
        .arg(&other_settings.run_dir)
        .args([
            "--port",
            &other_settings.port.to_string(),
            "--user",
            "postgres",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(!backup.status.success(), "{stderr}");
    assert!(
        stderr.contains("is the archive of PgCluster shop/orders"),
        "{stderr}"
    );
    assert_eq!(s3.objects(""), before, "the refused database wrote nothing");

    // A copy of the owner's own database (its system identifier) under another cluster name:
    // a cluster restored from it has a history of its own.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(copy.path().join("global")).unwrap();
    std::fs::create_dir_all(copy.path().join("pg_wal")).unwrap();
    std::fs::copy(
        settings.data_dir.join("global/pg_control"),
        copy.path().join("global/pg_control"),
    )
    .unwrap();
    let wal = copy.path().join("pg_wal/000000020000000000000009");
    std::fs::write(&wal, vec![1u8; 16 * 1024 * 1024]).unwrap();
    let push = Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(["wal-push", "--store"])
        .arg(stores.of("orders-copy", "uid-copy"))
        .arg(&wal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success());
    assert!(stderr.contains("a copy restored from it"), "{stderr}");
    assert_eq!(s3.objects(""), before);

    // The owner itself goes on archiving.
    archive_now(&client).await;

    // Older pgha reads only `system-identifier`: the first claim wrote it too.
    let legacy_record = std::fs::read_to_string(s3.object_file("system-identifier")).unwrap();
    assert_eq!(legacy_record, system);

    // An archive claimed by an older pgha names only its database system: another database
    // is refused; the same one is admitted, and the archive then records its cluster.
    let mut legacy = StoreConfig::from_file(&s3.store_file()).unwrap();
    legacy.path = "clusters/legacy".into();
    Store::new(&legacy)
        .unwrap()
        .put("system-identifier", "42".into(), None, true)
        .await
        .unwrap();
    let legacy_file = stores.dir.path().join("legacy.yaml");
    std::fs::write(
        &legacy_file,
        stores.base.replace("clusters/one", "clusters/legacy"),
    )
    .unwrap();
    let push = Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(["wal-push", "--store"])
        .arg(&legacy_file)
        .arg(&wal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success());
    assert!(
        stderr.contains("is the archive of database system 42; this is database system"),
        "{stderr}"
    );
    legacy.path = "clusters/older".into();
    Store::new(&legacy)
        .unwrap()
        .put("system-identifier", system.clone().into(), None, true)
        .await
        .unwrap();
    let older = stores.dir.path().join("older.yaml");
    let text = stores.base.replace("clusters/one", "clusters/older");
    std::fs::write(
        &older,
        format!("{text}cluster: {{namespace: shop, name: orders, uid: uid-orders}}\n"),
    )
    .unwrap();
    let push = Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(["wal-push", "--store"])
        .arg(&older)
        .arg(&wal)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let upgraded = s3.bucket_dir().join("clusters/older/owner.json");
    let upgraded: ArchiveOwner = serde_json::from_slice(&std::fs::read(upgraded).unwrap()).unwrap();
    assert_eq!(upgraded.cluster.unwrap().uid, "uid-orders");
}
