//! Continuous archiving against real Postgres and a real S3-compatible server on loopback
//! (issue 5): WAL push/fetch through Postgres's own archive_command and restore_command,
//! base backups, point-in-time restore, outages, corruption and retention.

#[allow(dead_code)]
#[path = "../agent/cluster.rs"]
mod cluster;
#[path = "../common/eventually.rs"]
mod eventually;
mod integrity;
mod outage;
mod ownership;
mod pitr;
mod postmaster;
mod prefetch;
mod progress;
mod retention;
mod s3;
mod standby;

use std::path::Path;
use std::time::Duration;

pub use cluster::socket_client as local;
use cluster::{Workspace, eventually};
use pgha::agent::Settings;
use pgha::agent::settings::ArchiveCommands;
use pgha::archive::backup::{self, BackupOptions};
use pgha::archive::manifest::Manifest;
use pgha::archive::restore::{self, RecoveryReport, RestoreOptions};
use pgha::plan::recovery::Target;
use postmaster::start_postgres;
use s3::S3;
use tokio_postgres::Client;

/// `pgha wal-push` / `wal-fetch` with the test server's store file.
pub fn commands(s3: &S3) -> ArchiveCommands {
    ArchiveCommands::new(Path::new(env!("CARGO_BIN_EXE_pgha")), &s3.store_file())
}

/// Settings of an instance that archives its WAL to `s3`.
pub fn archiving(ws: &Workspace, s3: &S3, name: &str) -> Settings {
    Settings {
        source_credentials_dir: "/nonexistent".into(),
        tls: None,
        archive: Some(commands(s3)),
        ..ws.settings(name)
    }
}

/// Ends the current WAL segment and waits until Postgres has archived it; returns its name.
pub async fn archive_now(client: &Client) -> String {
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    wait_archived(client, &segment).await;
    segment
}

pub async fn wait_archived(client: &Client, segment: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{segment} archived"),
        || async {
            let row = client
                .query_one(
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, String>(0).as_str() >= segment).then_some(())
        },
    )
    .await;
}

/// A base backup of the instance with these settings.
pub async fn take_backup(settings: &Settings, s3: &S3, id: &str) -> Manifest {
    let client = local(settings).await.unwrap();
    let options = BackupOptions {
        id: Some(id.into()),
        archive_wait: Duration::from_secs(60),
        ..BackupOptions::default()
    };
    backup::take(&s3.store(), &client, &settings.data_dir, &options)
        .await
        .unwrap()
}

/// A restored instance, running as a plain postmaster (not under an agent, which would
/// rewrite the recovery settings).
pub struct Restored {
    pub settings: Settings,
    pub postmaster: tokio::process::Child,
}

/// Restores `target` into instance `name` and starts Postgres on it.
pub async fn restore_and_start(ws: &Workspace, s3: &S3, name: &str, target: &Target) -> Restored {
    let settings = ws.settings(name);
    let owner = settings.run_as.as_ref().map(|u| (u.uid, u.gid));
    let options = RestoreOptions {
        parallel: 4,
        fetch_command: commands(s3).fetch,
        owner,
    };
    restore::restore(&s3.store(), target, &settings.data_dir, &options)
        .await
        .unwrap();
    Restored {
        postmaster: start_postgres(ws, &settings),
        settings,
    }
}

impl Restored {
    /// Waits until recovery has reached its target and the instance promoted.
    pub async fn recovered(&mut self, ws: &Workspace) -> (Client, RecoveryReport) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let client = loop {
            if let Ok(client) = local(&self.settings).await {
                break client;
            }
            let exited = self.postmaster.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "the restored instance does not accept connections ({exited:?}):\n{}",
                ws.log(&self.settings.name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let report = restore::wait_for_recovery(&client, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", ws.log(&self.settings.name)));
        (client, report)
    }
}

/// The ids in table `marks`, in order.
pub async fn marks(client: &Client) -> Vec<i32> {
    client
        .query("SELECT id FROM marks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
