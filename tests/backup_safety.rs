//! Archives that cannot be mixed up or lost (issue "Backups that cannot be mixed up or
//! lost"), on the local cluster with the operator as a pod and a real S3-compatible server:
//! a moved archive keeps its old backups restorable, a PgBackup of a missing cluster says so,
//! and a cluster given another cluster's archive is refused and writes nothing there.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pgha::api::backup::BackupPhase;
use pgha::api::cluster::ClusterPhase;
use pgha::api::common::ArchiveOwner;
use pgha::api::{PgBackup, PgCluster};
use pgha::archive::{Store, StoreConfig, catalog};

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "archive/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use eventually::eventually as wait_for;
use install::{create, healthy, installed, pgha};
use s3::{BUCKET, S3};
use writer::{Target, session};

const NS: &str = "shop";

fn cluster_yaml(name: &str, port: u16, backup: &str, extra: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec:\n  instances: 1\n  storage: {{size: 1Gi}}\n  \
         backup:\n    s3: {{bucket: {BUCKET}, endpoint: 'http://127.0.0.1:{port}', \
         credentialsSecret: s3-keys{backup}}}\n{extra}"
    )
}

fn owner(s3: &S3, path: &str) -> Option<ArchiveOwner> {
    let file = s3.bucket_dir().join(path).join("owner.json");
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

fn store(s3: &S3, path: &str) -> Store {
    let mut config = StoreConfig::from_file(&s3.store_file()).unwrap();
    config.path = path.into();
    Store::new(&config).unwrap()
}

/// The PgBackup `name` once its phase is `phase`.
async fn backup_in(backups: &Api<PgBackup>, name: &str, phase: BackupPhase) -> PgBackup {
    wait_for(
        Duration::from_secs(180),
        &format!("PgBackup {name} {phase:?}"),
        || async {
            let backup = backups.get(name).await.ok()?;
            (backup.status.as_ref()?.result.phase? == phase).then_some(backup)
        },
    )
    .await
}

/// `type_` of cluster `name` as (status, reason, message).
async fn condition(clusters: &Api<PgCluster>, name: &str, type_: &str) -> Option<[String; 3]> {
    let cluster = clusters.get(name).await.ok()?;
    let c = cluster
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some([c.status, c.reason, c.message])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_are_never_mixed_up_or_lost() {
    let s3 = S3::start();
    let port = s3.port();
    let (cluster, client) = installed(11).await;
    let keys: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s3-keys"},
        "stringData": {"ACCESS_KEY_ID": "test-access", "SECRET_ACCESS_KEY": "test-secret"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &keys)
        .await
        .unwrap();
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let backups: Api<PgBackup> = Api::namespaced(client.clone(), NS);

    // orders, its first backup at once (the schedule is yearly), retention keeping one.
    let schedule = "    schedule: '0 0 1 1 *'\n    retention: {count: 1}\n";
    create(&clusters, &cluster_yaml("orders", port, "", schedule)).await;
    wait_for(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 1)
    })
    .await;
    let first = wait_for(Duration::from_secs(120), "a first backup", || async {
        let all = backups.list(&ListParams::default()).await.ok()?;
        all.items.into_iter().find(|b| {
            b.spec.cluster == "orders"
                && b.status.as_ref().and_then(|s| s.result.phase) == Some(BackupPhase::Completed)
        })
    })
    .await;
    let old_archive = format!("s3://{BUCKET}/shop/orders");
    let first_status = first.status.clone().unwrap();
    assert_eq!(first_status.result.archive.as_deref(), Some(&*old_archive));
    let orders_uid = clusters.get("orders").await.unwrap().uid().unwrap();
    let claimed = owner(&s3, "shop/orders").expect("orders claimed its archive");
    assert_eq!(claimed.cluster.as_ref().unwrap().uid, orders_uid);
    let superuser = Target::rw(&cluster, &client, NS, "orders", "superuser").await;
    let su = session(&superuser).await;
    su.batch_execute("CREATE TABLE marks (n int); INSERT INTO marks VALUES (1), (2), (3)")
        .await
        .unwrap();
    let segment: String = su
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    wait_for(Duration::from_secs(60), "rows 1-3 archived", || async {
        let archived = catalog::read(&store(&s3, "shop/orders")).await.ok()?;
        archived.wal_names().contains(&segment).then_some(())
    })
    .await;

    // The archive moves: the next WAL and backups go to the new path, which orders claims;
    // retention there (count 1) keeps the PgBackup of the old path.
    let moved = serde_json::json!({"spec": {"backup": {"s3": {"path": "shop/orders-v2"}}}});
    clusters
        .patch("orders", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "WAL in the new path", || async {
        su.execute("INSERT INTO marks VALUES (4)", &[]).await.ok()?;
        su.execute("SELECT pg_switch_wal()", &[]).await.ok()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        owner(&s3, "shop/orders-v2")
            .filter(|o| o.cluster.as_ref().is_some_and(|c| c.uid == orders_uid))
    })
    .await;
    // With a schedule, a moved archive gets a backup at once: it restores nothing without.
    let new_archive = format!("s3://{BUCKET}/shop/orders-v2");
    wait_for(
        Duration::from_secs(120),
        "a backup in the new archive",
        || async {
            let all = backups.list(&ListParams::default()).await.ok()?;
            all.items
                .into_iter()
                .find(|b| {
                    let result = b.status.as_ref().map(|s| &s.result);
                    b.labels().get("pgha.dev/scheduled").map(String::as_str) == Some("true")
                        && result.and_then(|r| r.phase) == Some(BackupPhase::Completed)
                        && result.and_then(|r| r.archive.as_deref()) == Some(&*new_archive)
                })
                .map(drop)
        },
    )
    .await;
    // About 1 GB for the backup to read (unlogged: no WAL to archive), so that it runs long
    // enough to show how far it is.
    su.batch_execute(
        "CREATE UNLOGGED TABLE big AS \
         SELECT g, repeat(md5(g::text), 6) AS pad FROM generate_series(1, 4000000) g",
    )
    .await
    .unwrap();
    pgha(
        &cluster,
        &["backup", "orders", "--name", "orders-moved", "-n", NS],
    )
    .await
    .unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let after_move = wait_for(
        Duration::from_secs(240),
        "orders-moved Completed",
        || async {
            let backup = backups.get("orders-moved").await.ok()?;
            let result = backup.status.clone()?.result;
            let mut seen = seen.lock().unwrap();
            if let Some(progress) = result.progress.filter(|p| seen.last() != Some(p)) {
                seen.push(progress);
            }
            (result.phase? == BackupPhase::Completed).then_some(backup)
        },
    )
    .await;
    let seen = seen.into_inner().unwrap();
    println!("progress of orders-moved: {seen:?}");
    // Reported while it ran (not only at the end), and it completed: it moved.
    assert!(
        seen.iter().any(|p| p.bytes_done < p.bytes_total * 9 / 10),
        "a running backup shows its progress early: {seen:?}"
    );
    for p in &seen {
        assert!(
            p.bytes_total > 900_000_000 && p.bytes_done <= p.bytes_total,
            "{seen:?}"
        );
    }
    for pair in seen.windows(2) {
        assert!(pair[0].bytes_done <= pair[1].bytes_done, "{seen:?}");
    }
    let status = after_move.status.unwrap();
    assert_eq!(status.result.archive.as_deref(), Some(&*new_archive));
    assert!(status.location.unwrap().starts_with(&new_archive));
    // Give the operator a moment to act on retention; the old PgBackup must stay.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept = backups.get_opt(&first.name_any()).await.unwrap();
    let kept = kept.expect("the old archive's PgBackup is kept after a path change");
    assert_eq!(
        kept.status.unwrap().result.archive.as_deref(),
        Some(&*old_archive)
    );
    let old_catalog = catalog::read(&store(&s3, "shop/orders")).await.unwrap();
    let first_id = first_status.result.backup_id.unwrap();
    assert!(old_catalog.backups.iter().any(|b| b.id == first_id));

    // ... and restorable: a recovery cluster from the old path has rows 1-3. It archives to
    // its own path, which it claims under its own uid; the source's owner record is untouched.
    let source = format!(
        "  bootstrap:\n    recovery:\n      source:\n        s3: {{bucket: {BUCKET}, path: \
         shop/orders, endpoint: 'http://127.0.0.1:{port}', credentialsSecret: s3-keys}}\n"
    );
    create(&clusters, &cluster_yaml("old-restore", port, "", &source)).await;
    wait_for(Duration::from_secs(240), "old-restore Healthy", || {
        healthy(&clusters, "old-restore", 1)
    })
    .await;
    let restored =
        session(&Target::rw(&cluster, &client, NS, "old-restore", "superuser").await).await;
    let rows: Vec<i32> = restored
        .query("SELECT n FROM marks WHERE n < 4 ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [1, 2, 3]);
    restored
        .batch_execute("INSERT INTO marks VALUES (5); SELECT pg_switch_wal()")
        .await
        .unwrap();
    let restore_uid = clusters.get("old-restore").await.unwrap().uid().unwrap();
    let own = wait_for(
        Duration::from_secs(60),
        "old-restore's own archive",
        || async { owner(&s3, "shop/old-restore") },
    )
    .await;
    assert_eq!(own.system_identifier, claimed.system_identifier);
    assert_eq!(own.cluster.unwrap().uid, restore_uid);
    assert_eq!(owner(&s3, "shop/orders"), Some(claimed.clone()));
    clusters
        .delete("old-restore", &DeleteParams::default())
        .await
        .unwrap();

    // A PgBackup of a cluster that does not exist says so, and waits for it.
    let early: PgBackup = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "early"},
        "spec": {"cluster": "orders-next"},
    }))
    .unwrap();
    backups
        .create(&PostParams::default(), &early)
        .await
        .unwrap();
    let waiting = wait_for(
        Duration::from_secs(30),
        "early Pending, saying why",
        || async {
            let result = backups.get("early").await.ok()?.status?.result;
            (result.phase? == BackupPhase::Pending).then_some(result.message?)
        },
    )
    .await;
    println!("PgBackup of a missing cluster: {waiting}");
    assert!(
        waiting.contains("PgCluster orders-next does not exist in namespace shop"),
        "{waiting}"
    );

    // orders goes (its last WAL archived on the way out); a new cluster is then given its
    // path by copy-paste. It is refused and writes nothing there.
    clusters
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for(Duration::from_secs(120), "orders' pods gone", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (!list.iter().any(|p| p.name_any().starts_with("orders-"))).then_some(())
    })
    .await;
    let before = s3.objects("shop/orders-v2");
    create(
        &clusters,
        &cluster_yaml("orders-next", port, ", path: shop/orders-v2", ""),
    )
    .await;
    wait_for(Duration::from_secs(180), "orders-next serving", || async {
        let status = clusters.get("orders-next").await.ok()?.status?;
        (status.ready_instances == 1).then_some(())
    })
    .await;
    let superuser = Target::rw(&cluster, &client, NS, "orders-next", "superuser").await;
    let next = session(&superuser).await;
    let [status, _, message] = wait_for(
        Duration::from_secs(120),
        "ContinuousArchiving refused",
        || async {
            // Give the archiver a finished segment to try.
            next.batch_execute("CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t VALUES (1)")
                .await
                .ok()?;
            next.execute("SELECT pg_switch_wal()", &[]).await.ok()?;
            let c = condition(&clusters, "orders-next", "ContinuousArchiving").await?;
            (c[1] == "ArchiveOwnedByOtherCluster").then_some(c)
        },
    )
    .await;
    println!("ContinuousArchiving of orders-next: {message}");
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!(
            "s3://{BUCKET}/shop/orders-v2 is the archive of PgCluster shop/orders (uid {orders_uid})"
        )) && message.contains("this is PgCluster shop/orders-next")
            && message.contains("give this cluster its own spec.backup.s3.path"),
        "{message}"
    );
    let ready = condition(&clusters, "orders-next", "Ready").await.unwrap();
    assert_eq!(
        (ready[0].as_str(), ready[1].as_str()),
        ("False", "ArchiveOwnedByOtherCluster")
    );
    let phase = clusters
        .get("orders-next")
        .await
        .unwrap()
        .status
        .unwrap()
        .phase;
    assert_eq!(phase, Some(ClusterPhase::Degraded));
    // The waiting PgBackup started once its cluster existed, and the archive refused it.
    let refused = backup_in(&backups, "early", BackupPhase::Failed).await;
    let why = refused.status.unwrap().result.message.unwrap_or_default();
    assert!(
        why.contains("is the archive of PgCluster shop/orders"),
        "{why}"
    );
    assert!(
        s3.objects("shop/orders-v2") == before,
        "orders-next wrote into the archive of orders"
    );
}
