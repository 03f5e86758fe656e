//! `pgha backup CLUSTER` and `pgha restore SOURCE --to NEW` (also as `kubectl pgha …`): thin
//! clients that create a PgBackup, or a PgCluster bootstrapped from another cluster's archive.

use std::time::{Duration, Instant};

use clap::Args;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

use super::kubectl::{Failure, KubeArgs, get_cluster};
use crate::api::backup::{BackupPhase, BackupTarget};
use crate::api::cluster::{BootstrapSpec, RecoverySource, RecoverySpec, RecoveryTarget};
use crate::api::{PgBackup, PgBackupSpec, PgCluster};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The PgCluster to back up.
    cluster: String,
    /// The PgBackup's name; `<cluster>-manual-<UTC time>` when not given.
    #[arg(long)]
    name: Option<String>,
    /// Read from the primary instead of a ready replica.
    #[arg(long)]
    primary: bool,
    /// Wait until the backup completes or fails, up to this many seconds (0: do not wait).
    #[arg(long, default_value_t = 0)]
    wait_seconds: u64,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn backup(args: BackupArgs) -> Result<(), Failure> {
    tokio::runtime::Runtime::new()?.block_on(take(args))
}

async fn take(args: BackupArgs) -> Result<(), Failure> {
    let (client, namespace) = args.kube.connect().await?;
    // A clear message for a cluster that does not exist, before a PgBackup that would wait
    // for it forever.
    get_cluster(&client, &namespace, &args.cluster).await?;
    let name = args.name.clone().unwrap_or_else(|| {
        let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
        format!("{}-manual-{now}", args.cluster)
    });
    let backup = PgBackup {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: PgBackupSpec {
            cluster: args.cluster.clone(),
            target: if args.primary {
                BackupTarget::Primary
            } else {
                BackupTarget::PreferStandby
            },
        },
        status: None,
    };
    let backups = Api::<PgBackup>::namespaced(client, &namespace);
    backups.create(&PostParams::default(), &backup).await?;
    println!("pgbackup {namespace}/{name} created");
    if args.wait_seconds == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = backups.get(&name).await?.status.unwrap_or_default();
        match status.result.phase {
            Some(BackupPhase::Completed) => {
                let size = status.result.size_bytes.unwrap_or_default();
                println!(
                    "completed from {}: {} MB, id {}",
                    status.instance.unwrap_or_default(),
                    size / 1_000_000,
                    status.result.backup_id.unwrap_or_default()
                );
                return Ok(());
            }
            Some(BackupPhase::Failed) => {
                return Err(format!(
                    "backup failed: {}",
                    status.result.message.unwrap_or_default()
                )
                .into());
            }
            _ => {}
        }
    }
    Err(format!(
        "not finished within {} s; see `kubectl describe pgbackup {name} -n {namespace}`",
        args.wait_seconds
    )
    .into())
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The PgCluster whose archive to restore (it must have `spec.backup`).
    source: String,
    /// The new PgCluster's name.
    #[arg(long)]
    to: String,
    /// Stop after the last transaction committed before this time (RFC 3339).
    #[arg(long, group = "target")]
    time: Option<String>,
    /// Stop at this WAL location.
    #[arg(long, group = "target")]
    lsn: Option<String>,
    /// Stop at this restore point (`pg_create_restore_point`).
    #[arg(long = "restore-point", group = "target")]
    restore_point: Option<String>,
    /// Print the new PgCluster as YAML instead of creating it.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn restore(args: RestoreArgs) -> Result<(), Failure> {
    tokio::runtime::Runtime::new()?.block_on(create_restored(args))
}

async fn create_restored(args: RestoreArgs) -> Result<(), Failure> {
    let (client, namespace) = args.kube.connect().await?;
    let source = get_cluster(&client, &namespace, &args.source).await?;
    let clusters = Api::<PgCluster>::namespaced(client, &namespace);
    let target = RecoveryTarget {
        time: args.time.clone(),
        lsn: args.lsn.clone(),
        name: args.restore_point.clone(),
        immediate: None,
    };
    let restored = restored(&source, &namespace, &args.to, target)?;
    if args.dry_run {
        print!("{}", serde_saphyr::to_string(&restored)?);
        return Ok(());
    }
    clusters.create(&PostParams::default(), &restored).await?;
    println!(
        "pgcluster {namespace}/{} created from {}'s archive; watch it with `pgha status {} -n {namespace}`",
        args.to, args.source, args.to
    );
    Ok(())
}

/// A new cluster `to` like `source` (size, storage, Postgres settings), bootstrapped from its
/// archive to `target`, archiving to its own path in the same object store.
fn restored(
    source: &PgCluster,
    namespace: &str,
    to: &str,
    target: RecoveryTarget,
) -> Result<PgCluster, Failure> {
    let name = source.name_any();
    let backup = source.spec.backup.clone().ok_or_else(|| {
        format!(
            "PgCluster {namespace}/{name} has no spec.backup: there is no archive to restore from"
        )
    })?;
    let mut s3 = backup.s3.clone();
    s3.path = Some(s3.path.unwrap_or_else(|| format!("{namespace}/{name}")));
    // The application database and owner come with the data.
    let (database, owner) = match (
        &source.spec.bootstrap.initdb,
        &source.spec.bootstrap.recovery,
    ) {
        (Some(initdb), _) => (Some(initdb.database.clone()), Some(initdb.owner.clone())),
        (None, Some(recovery)) => (recovery.database.clone(), recovery.owner.clone()),
        (None, None) => (None, None),
    };
    let any_target = target.time.is_some() || target.lsn.is_some() || target.name.is_some();
    let mut spec = source.spec.clone();
    spec.bootstrap = BootstrapSpec {
        initdb: None,
        recovery: Some(RecoverySpec {
            source: RecoverySource { s3 },
            target: any_target.then_some(target),
            database,
            owner,
        }),
    };
    // Its own archive: the default path is `<namespace>/<to>`, never the source's.
    let mut own = backup;
    own.s3.path = None;
    spec.backup = Some(own);
    Ok(PgCluster {
        metadata: ObjectMeta {
            name: Some(to.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;

    fn source(spec: serde_json::Value) -> PgCluster {
        fixtures::cluster("orders", spec)
    }

    fn s3() -> serde_json::Value {
        serde_json::json!({"bucket": "b", "region": "r", "credentialsSecret": "keys"})
    }

    #[test]
    fn restores_from_the_sources_effective_path_and_archives_to_its_own() {
        let c = source(serde_json::json!({
            "instances": 3,
            "bootstrap": {"initdb": {"database": "shop", "owner": "clerk"}},
            "backup": {"s3": s3()},
        }));
        let at = RecoveryTarget {
            time: Some("2026-12-01T05:00:00Z".into()),
            lsn: None,
            name: None,
            immediate: None,
        };
        let new = restored(&c, "shop", "orders-back", at.clone()).unwrap();
        assert_eq!(new.name_any(), "orders-back");
        assert_eq!(new.spec.instances, 3);
        let recovery = new.spec.bootstrap.recovery.unwrap();
        assert!(new.spec.bootstrap.initdb.is_none());
        assert_eq!(recovery.source.s3.path.as_deref(), Some("shop/orders"));
        assert_eq!(recovery.target, Some(at));
        assert_eq!(recovery.database.as_deref(), Some("shop"));
        assert_eq!(recovery.owner.as_deref(), Some("clerk"));
        assert_eq!(new.spec.backup.unwrap().s3.path, None);
    }

    #[test]
    fn an_explicit_path_is_kept_for_the_source_and_no_target_replays_everything() {
        let mut store = s3();
        store["path"] = "prod/orders".into();
        let c = source(serde_json::json!({"backup": {"s3": store}}));
        let none = RecoveryTarget {
            time: None,
            lsn: None,
            name: None,
            immediate: None,
        };
        let new = restored(&c, "shop", "copy", none).unwrap();
        let recovery = new.spec.bootstrap.recovery.unwrap();
        assert_eq!(recovery.source.s3.path.as_deref(), Some("prod/orders"));
        assert_eq!(recovery.target, None);
        assert_eq!(new.spec.backup.unwrap().s3.path, None);
    }

    #[test]
    fn a_cluster_without_an_archive_is_refused_by_name() {
        let c = source(serde_json::json!({}));
        let none = RecoveryTarget {
            time: None,
            lsn: None,
            name: None,
            immediate: None,
        };
        let err = restored(&c, "shop", "copy", none).unwrap_err().to_string();
        assert!(err.contains("shop/orders has no spec.backup"), "{err}");
    }
}
