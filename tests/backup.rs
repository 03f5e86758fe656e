//! Backups and point-in-time restores from Kubernetes (issue "Backups and point-in-time
//! restores from Kubernetes"), on the local cluster with the operator as a pod and a real
//! S3-compatible server (s3s-fs) on loopback that pods reach at `spec.backup.s3.endpoint`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pgha::api::backup::BackupPhase;
use pgha::api::cluster::DrillResult;
use pgha::api::instance::{InstancePhase, InstanceRole};
use pgha::api::{PgBackup, PgCluster, PgInstance};
use pgha::archive::{Store, StoreConfig, catalog};
use pgha_e2e::Cluster;

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
use writer::{Target, Writer, missing, pgbench, session};

const NS: &str = "shop";

/// The archive of the cluster at `path` in the test bucket.
fn store(s3: &S3, path: &str) -> Store {
    let keys = s3.store_file().parent().unwrap().join("keys");
    let yaml = format!(
        "bucket: {BUCKET}\npath: {path}\nendpoint: http://127.0.0.1:{}\ncredentialsDir: {}\n",
        s3.port(),
        keys.display()
    );
    Store::new(&serde_saphyr::from_str::<StoreConfig>(&yaml).unwrap()).unwrap()
}

fn cluster_yaml(name: &str, port: u16, extra: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec:\n  instances: 2\n  storage: {{size: 1Gi}}\n  \
         backup:\n    s3: {{bucket: {BUCKET}, endpoint: 'http://127.0.0.1:{port}', \
         credentialsSecret: s3-keys}}\n{extra}"
    )
}

fn recovery_yaml(name: &str, port: u16, target: &str) -> String {
    cluster_yaml(
        name,
        port,
        &format!(
            "  bootstrap:\n    recovery:\n      database: app\n      owner: app\n      source:\n        \
             s3: {{bucket: {BUCKET}, path: shop/orders, endpoint: 'http://127.0.0.1:{port}', \
             credentialsSecret: s3-keys}}\n{target}"
        ),
    )
}

/// The completed PgBackups of `cluster`, oldest first.
async fn completed(backups: &Api<PgBackup>, cluster: &str) -> Vec<PgBackup> {
    let mut done: Vec<PgBackup> = backups
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.spec.cluster == cluster)
        .filter(|b| b.status.as_ref().and_then(|s| s.result.phase) == Some(BackupPhase::Completed))
        .collect();
    done.sort_by_key(|b| b.metadata.creation_timestamp.clone());
    done
}

fn condition(cluster: &PgCluster, type_: &str) -> Option<(String, String)> {
    cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

/// The message of `orders`' condition `type_` once it is False.
async fn until_false(clusters: &Api<PgCluster>, type_: &str, within: Duration) -> String {
    let what = format!("{type_} False");
    wait_for(within, &what, || async {
        let c = clusters.get("orders").await.ok()?;
        let (status, message) = condition(&c, type_)?;
        (status == "False").then_some(message)
    })
    .await
}

/// Inserts `rows` into `marks`, one commit each.
async fn mark(db: &tokio_postgres::Client, rows: std::ops::RangeInclusive<i32>) {
    for n in rows {
        db.execute("INSERT INTO marks VALUES ($1)", &[&n])
            .await
            .unwrap();
    }
}

async fn marks(db: &tokio_postgres::Client) -> Vec<i32> {
    db.query("SELECT n FROM marks ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Switches to a new WAL segment on the primary and waits until the archive holds the
/// segment that was current: everything committed before is then restorable.
async fn archive_now(db: &tokio_postgres::Client, s3: &S3, path: &str) {
    let row = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap();
    let segment: String = row.get(0);
    let store = store(s3, path);
    wait_for(Duration::from_secs(60), "the segment archived", || async {
        let catalog = catalog::read(&store).await.ok()?;
        catalog.wal_names().contains(&segment).then_some(())
    })
    .await;
}

/// The rows of `marks` in recovery cluster `name`, once it is Healthy.
async fn restored_rows(
    cluster: &Cluster,
    client: &Client,
    clusters: &Api<PgCluster>,
    name: &str,
) -> Vec<i32> {
    wait_for(
        Duration::from_secs(240),
        "the restored cluster Healthy",
        || healthy(clusters, name, 2),
    )
    .await;
    // Its own Secret's credentials work: the roles came with the data, their passwords were
    // reset to the new cluster's Secrets.
    let db = session(&Target::rw(cluster, client, NS, name, "app").await).await;
    db.execute("INSERT INTO marks VALUES (-1)", &[])
        .await
        .unwrap();
    let mut rows = marks(&db).await;
    rows.retain(|n| *n != -1);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_backups_retention_and_point_in_time_restores() {
    let mut s3 = S3::start();
    let port = s3.port();
    let (cluster, client) = installed(8).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let keys: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s3-keys"},
        "stringData": {"ACCESS_KEY_ID": "test-access", "SECRET_ACCESS_KEY": "test-secret"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &keys).await.unwrap();
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let backups: Api<PgBackup> = Api::namespaced(client.clone(), NS);
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), NS);
    // A backup every minute, the two newest kept; a restore drill once a year (and at once).
    create(
        &clusters,
        &cluster_yaml(
            "orders",
            port,
            "    schedule: '* * * * *'\n    retention: {count: 2}\n    verify: {schedule: '0 0 1 1 *'}\n",
        ),
    )
    .await;
    wait_for(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 2)
    })
    .await;

    // The first backup does not wait for the schedule.
    let first = wait_for(Duration::from_secs(90), "a first backup", || async {
        completed(&backups, "orders").await.into_iter().next()
    })
    .await;
    let status = first.status.clone().unwrap();
    println!("first backup {}: {status:?}", first.name_any());
    assert!(status.result.begin_lsn.is_some() && status.result.end_lsn.is_some());
    assert!(status.result.size_bytes.unwrap() > 1_000_000);
    assert!(
        status
            .location
            .unwrap()
            .starts_with("s3://pgha-test/shop/orders/base/")
    );
    assert_eq!(first.labels()["pgha.dev/scheduled"], "true");
    let orders = wait_for(Duration::from_secs(30), "archiving reported", || async {
        let c = clusters.get("orders").await.ok()?;
        let s = c.status.as_ref()?;
        (s.last_backup.is_some()
            && s.last_backup_at.is_some()
            && s.first_recoverability_point.is_some()
            && s.last_archived_wal.is_some()
            && condition(&c, "ContinuousArchiving")?.0 == "True")
            .then_some(c)
    })
    .await;
    println!(
        "ContinuousArchiving: {:?}",
        condition(&orders, "ContinuousArchiving")
    );

    // The first restore drill follows the first backup, onto a volume like the cluster's own
    // (an ephemeral claim of its size and class), gone with the drill.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let drill_claim = std::sync::Mutex::new(None);
    let (verified, state) = wait_for(
        Duration::from_secs(120),
        "a first restore drill",
        || async {
            if let Ok(Some(claim)) = claims.get_opt("orders-verify-data").await {
                drill_claim.lock().unwrap().replace(claim);
            }
            let c = clusters.get("orders").await.ok()?;
            let state = condition(&c, "RestoreVerified")?.0;
            Some((c.status?.last_verified_restore?, state))
        },
    )
    .await;
    println!("restore drill: {verified:?}");
    let drill_claim = drill_claim
        .into_inner()
        .unwrap()
        .expect("the drill's volume claim");
    let size = drill_claim
        .spec
        .unwrap()
        .resources
        .unwrap()
        .requests
        .unwrap()["storage"]
        .clone();
    assert_eq!(size.0, "1Gi");
    wait_for(
        Duration::from_secs(60),
        "the drill's claim deleted",
        || async {
            claims
                .get_opt("orders-verify-data")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(verified.result, DrillResult::Passed, "{verified:?}");
    assert_eq!(state, "True");
    assert!(verified.recovered_to.is_some() && verified.backup.is_some());

    // Load, and an on-demand backup from the standby under it.
    let superuser = Target::rw(&cluster, &client, NS, "orders", "superuser").await;
    let su = session(&superuser).await;
    let app = Target::rw(&cluster, &client, NS, "orders", "app").await;
    let db = session(&app).await;
    db.batch_execute("CREATE TABLE marks (n int PRIMARY KEY)")
        .await
        .unwrap();
    let writer = Writer::start(app.clone(), Duration::from_millis(20)).await;
    let load = pgbench(&app).await;
    pgha(
        &cluster,
        &["backup", "orders", "--name", "orders-manual", "-n", NS],
    )
    .await
    .unwrap();
    let manual = wait_for(Duration::from_secs(180), "the on-demand backup", || async {
        let b = backups.get("orders-manual").await.ok()?;
        match b.status.as_ref()?.result.phase? {
            BackupPhase::Completed => Some(b),
            BackupPhase::Failed => panic!("on-demand backup failed: {:?}", b.status),
            _ => None,
        }
    })
    .await;
    let from = manual.status.as_ref().unwrap().instance.clone().unwrap();
    let role = instances.get(&from).await.unwrap().status.unwrap().role;
    assert_eq!(role, Some(InstanceRole::Replica), "taken from {from}");
    assert_eq!(manual.labels()["pgha.dev/cluster"], "orders");

    // Retention by count: the two newest completed backups stay, in the archive and as
    // PgBackups (scheduled ones keep coming every minute).
    wait_for(
        Duration::from_secs(240),
        "retention after a third backup",
        || async {
            let done = completed(&backups, "orders").await;
            let ids: Vec<String> = done
                .iter()
                .filter_map(|b| b.status.as_ref()?.result.backup_id.clone())
                .collect();
            let archive = catalog::read(&store(&s3, "shop/orders")).await.ok()?;
            let stored: Vec<String> = archive.backups.iter().map(|b| b.id.clone()).collect();
            (backups.get_opt(&first.name_any()).await.ok()?.is_none()
                && done.len() == 2
                && ids == stored)
                .then_some(())
        },
    )
    .await;

    // The leading operator's metrics say when the newest backup completed, and the schedule.
    let metrics = install::operator_metrics(&client).await;
    let labels = "{namespace=\"shop\",cluster=\"orders\"}";
    for series in [
        "pgha_backup_last_completed_timestamp_seconds",
        "pgha_backup_last_size_bytes",
        "pgha_backup_last_duration_seconds",
    ] {
        assert!(
            metrics.contains(&format!("{series}{labels}")),
            "{series}: {metrics}"
        );
    }
    let interval = format!("pgha_backup_schedule_interval_seconds{labels} 60.0");
    assert!(metrics.contains(&interval), "{metrics}");

    // A point in time between two commits.
    mark(&db, 1..=5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t: DateTime<Utc> = Utc::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    mark(&db, 6..=10).await;

    // S3 down: archiving turns False with the cause, WAL waits on the volume; S3 back: True,
    // nothing missing in the archive.
    s3.stop();
    let down = std::time::Instant::now();
    mark(&db, 11..=12).await;
    su.execute("SELECT pg_switch_wal()", &[]).await.unwrap();
    let failing = until_false(&clusters, "ContinuousArchiving", Duration::from_secs(90)).await;
    println!("S3 down for {:.1?}: {failing}", down.elapsed());
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;
    s3.resume();
    wait_for(
        Duration::from_secs(120),
        "ContinuousArchiving True again",
        || async {
            let c = clusters.get("orders").await.ok()?;
            (condition(&c, "ContinuousArchiving")?.0 == "True").then_some(())
        },
    )
    .await;
    archive_now(&su, &s3, "shop/orders").await;
    let archive = catalog::read(&store(&s3, "shop/orders")).await.unwrap();
    for timeline in archive.timelines() {
        assert!(timeline.missing.is_empty(), "gap: {timeline:?}");
    }

    drop(load);
    let acked = writer.acked();
    drop(writer);

    // Restore to T: exactly the rows committed before T.
    let at = t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let to = format!("      target: {{time: '{at}'}}\n");
    create(&clusters, &recovery_yaml("restored", port, &to)).await;
    let rows = restored_rows(&cluster, &client, &clusters, "restored").await;
    assert_eq!(rows, (1..=5).collect::<Vec<_>>(), "restored to {at}");

    // Targets before the first backup and after the last archived WAL are refused, with the
    // window, and no data directory is made.
    for (name, time) in [
        ("too-early", "2020-01-01T00:00:00Z"),
        ("too-late", "2099-01-01T00:00:00Z"),
    ] {
        let to = format!("      target: {{time: '{time}'}}\n");
        create(&clusters, &recovery_yaml(name, port, &to)).await;
    }
    for name in ["too-early", "too-late"] {
        let first = format!("{name}-1");
        let refused = wait_for(Duration::from_secs(120), "the refusal", || async {
            let i = instances.get(&first).await.ok()?;
            let message = i.status?.message?;
            message
                .contains("outside the recoverability window")
                .then_some(message)
        })
        .await;
        println!("{name} refused: {refused}");
        let phase = instances.get(&first).await.unwrap().status.unwrap().phase;
        assert_eq!(phase, Some(InstancePhase::Failed));
        let replica = instances.get(&format!("{name}-2")).await.unwrap().status;
        assert_eq!(replica.and_then(|s| s.phase), Some(InstancePhase::Pending));
    }

    // After a failover, the new timeline is archived too: a restore to its end has the rows
    // written after it, and every acknowledged row.
    let old = install::primary_of(&clusters, "orders").await;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), NS)
        .delete(&old, &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "a new primary", || async {
        let s = clusters.get("orders").await.ok()?.status?;
        (s.current_primary? != old && s.failover.is_none()).then_some(())
    })
    .await;
    let db = session(&app).await;
    wait_for(
        Duration::from_secs(30),
        "a write on the new primary",
        || async { db.execute("INSERT INTO marks VALUES (13)", &[]).await.ok() },
    )
    .await;
    archive_now(&session(&superuser).await, &s3, "shop/orders").await;
    // This one as a DBA asks for it: `pgha restore` copies orders' spec.
    pgha(&cluster, &["restore", "orders", "--to", "latest", "-n", NS])
        .await
        .unwrap();
    let rows = restored_rows(&cluster, &client, &clusters, "latest").await;
    assert_eq!(rows, (1..=13).collect::<Vec<_>>());
    let latest = session(&Target::rw(&cluster, &client, NS, "latest", "app").await).await;
    let lost = missing(&latest, &acked).await;
    assert!(
        lost.is_empty(),
        "acknowledged rows missing after restore: {lost:?}"
    );
    let timeline: i32 = latest
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "restore after a failover: timeline {timeline}, all {} acknowledged rows",
        acked.len()
    );
    assert!(
        timeline >= 3,
        "a restore promotes on a new timeline after the failover's"
    );
    // It backs itself up like orders (to its own path); the rest of the test does not need it.
    clusters
        .delete("latest", &kube::api::DeleteParams::default())
        .await
        .unwrap();

    // A drill on an archive with a damaged object fails, visibly: the condition, the status
    // and an Event. The schedule is paused so that the damaged backup stays the newest.
    let pause = serde_json::json!({"spec": {"backup": {"suspend": true}}});
    clusters
        .patch("orders", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .unwrap();
    // A backup running on the standby ends once the primary archived its last segment: the
    // primary is idle now, and switches segments when the standby's agent asks it to
    // (archive_timeout only switches a segment something was written to).
    let newest = wait_for(Duration::from_secs(180), "no backup running", || async {
        let all = backups.list(&ListParams::default()).await.ok()?;
        let running = all.items.iter().any(|b| {
            b.spec.cluster == "orders"
                && b.status.as_ref().and_then(|s| s.result.phase) != Some(BackupPhase::Completed)
                && b.status.as_ref().and_then(|s| s.result.phase) != Some(BackupPhase::Failed)
        });
        let done = completed(&backups, "orders").await;
        (!running).then(|| done.last()?.status.as_ref()?.result.backup_id.clone())?
    })
    .await;
    let damaged = std::fs::read_dir(
        s3.bucket_dir()
            .join("shop/orders/base")
            .join(&newest)
            .join("bundle"),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&damaged, bytes).unwrap();
    let every_minute =
        serde_json::json!({"spec": {"backup": {"verify": {"schedule": "* * * * *"}}}});
    clusters
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(&every_minute),
        )
        .await
        .unwrap();
    let failed = until_false(&clusters, "RestoreVerified", Duration::from_secs(180)).await;
    println!("restore drill on a damaged archive: {failed}");
    assert!(failed.contains("corrupt"), "{failed}");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RestoreDrillFailed")),
        "no RestoreDrillFailed Event"
    );
}
