//! Base backups the operator assigns to this instance (`spec.backup` of its PgInstance). The
//! agent runs them because it owns the data directory: `pgha archive backup` reads it while Postgres
//! runs, then `pgha archive retention` and `pgha archive catalog` tell what the archive now holds. Each is a
//! child process of the same binary, so a backup's memory is gone with it.

use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

use super::error::{AgentError, Result};
use super::{Agent, files, pgbin};
use crate::api::backup::{BackupPhase, BackupProgress, BackupResult};
use crate::api::instance::InstanceBackup;
use crate::plan::agent::BackupRequest;
use crate::plan::names;

/// The backup this agent runs or ran last.
#[derive(Default)]
pub struct Backups {
    last: Mutex<Option<InstanceBackup>>,
}

/// What `pgha archive catalog --json` prints.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Catalog {
    backups: Vec<String>,
    recoverable_from: Option<Time>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl Backups {
    pub fn report(&self) -> Option<InstanceBackup> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<InstanceBackup>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `request` unless it is the backup already run or running.
    pub fn take(self: &Arc<Self>, agent: &Arc<Agent>, request: &BackupRequest) {
        {
            let mut last = self.lock();
            if last.as_ref().is_some_and(|b| b.name == request.name) {
                return;
            }
            *last = Some(InstanceBackup {
                name: request.name.clone(),
                result: BackupResult {
                    phase: Some(BackupPhase::Running),
                    started_at: Some(now()),
                    ..BackupResult::default()
                },
                ..InstanceBackup::default()
            });
        }
        tracing::info!(backup = %request.name, "taking a base backup");
        let (this, agent, request) = (self.clone(), agent.clone(), request.clone());
        tokio::spawn(async move {
            let run_dir = &agent.settings().run_dir;
            let progress_file = run_dir.join(format!("backup-{}.progress.json", request.name));
            let follow = tokio::spawn(this.clone().follow(
                agent.clone(),
                request.name.clone(),
                progress_file.clone(),
            ));
            let outcome = run(&agent, &request, &progress_file).await;
            follow.abort();
            // Stopped before the end is recorded, so no late progress lands on a finished backup.
            let _ = follow.await;
            let _ = std::fs::remove_file(&progress_file);
            let mut last = this.lock();
            let Some(report) = last.as_mut().filter(|b| b.name == request.name) else {
                return;
            };
            match outcome {
                Ok((taken, catalog)) => {
                    tracing::info!(backup = %request.name, id = ?taken.backup_id, "backup completed");
                    report.result = BackupResult {
                        phase: Some(BackupPhase::Completed),
                        started_at: report.result.started_at.take(),
                        completed_at: Some(now()),
                        progress: None,
                        ..taken
                    };
                    report.kept = catalog.as_ref().map(|c| c.backups.clone());
                    report.recoverable_from = catalog.and_then(|c| c.recoverable_from);
                }
                Err(e) => {
                    tracing::error!(backup = %request.name, error = %e, "backup failed");
                    report.result.phase = Some(BackupPhase::Failed);
                    report.result.completed_at = Some(now());
                    report.result.progress = None;
                    report.result.message = Some(e.to_string());
                }
            }
        });
    }
}

impl Backups {
    /// Copies what `pgha archive backup` writes to `file` into the report of `backup` while
    /// it runs (it rewrites the file every few seconds).
    /// Copies the backup's progress file into the report; while a standby's backup waits for
    /// its last WAL segment, asks the primary to switch segments every few seconds (an idle
    /// primary would never archive it: `archive_timeout` only switches a segment with
    /// something in it).
    async fn follow(self: Arc<Self>, agent: Arc<Agent>, backup: String, file: std::path::PathBuf) {
        let mut asked: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let Some(progress) = std::fs::read(&file)
                .ok()
                .and_then(|json| serde_json::from_slice::<BackupProgress>(&json).ok())
            else {
                continue;
            };
            if progress.waiting_for_wal.is_some()
                && asked.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(5))
            {
                asked = Some(std::time::Instant::now());
                agent.switch_primary_wal().await;
            }
            if let Some(report) = self.lock().as_mut().filter(|b| b.name == backup) {
                report.result.progress = Some(progress);
            }
        }
    }
}

/// The backup, then retention and the catalog. A failure after the backup is logged and
/// leaves the catalog out: the backup itself is good.
/// `pgha archive backup --json` prints the LSNs, timeline, sizes and id as a `BackupResult`.
async fn run(
    agent: &Agent,
    request: &BackupRequest,
    progress_file: &std::path::Path,
) -> Result<(BackupResult, Option<Catalog>)> {
    let settings = agent.settings();
    let archive = settings.archive.as_ref().ok_or_else(|| {
        AgentError::Refused("this instance has no object store (spec.backup is unset)".into())
    })?;
    // Backup, retention and catalog all work on this one copy of the store file: the orders
    // may move the archive meanwhile, and retention must run where the backup went.
    let store = settings
        .run_dir
        .join(format!("backup-{}.store.json", request.name));
    let described = std::fs::read_to_string(&archive.store)
        .map_err(AgentError::io("reading", &archive.store))?;
    files::write(&store, &described, 0o600, settings.run_as.as_ref())?;
    let result = backup_then_retention(agent, request, progress_file, &archive.pgha, &store).await;
    let _ = std::fs::remove_file(&store);
    result
}

async fn backup_then_retention(
    agent: &Agent,
    request: &BackupRequest,
    progress_file: &std::path::Path,
    pgha: &std::path::Path,
    store: &std::path::Path,
) -> Result<(BackupResult, Option<Catalog>)> {
    let settings = agent.settings();
    let pgha = |verb: &str| {
        let mut cmd = tokio::process::Command::new(pgha);
        cmd.args(["archive", verb]).arg("--store").arg(store);
        cmd
    };
    let mut backup = pgha("backup");
    backup
        .arg("--pgdata")
        .arg(&settings.data_dir)
        .arg("--host")
        .arg(&settings.run_dir)
        .args(["--port", &settings.port.to_string()])
        .args(["--user", names::SUPERUSER, "--json"])
        .arg("--progress-file")
        .arg(progress_file);
    let out = pgbin::run(backup).await?;
    let taken: BackupResult = serde_json::from_str(out.lines().next().unwrap_or_default())
        .map_err(|e| AgentError::Refused(format!("pgha archive backup printed {out:?}: {e}")))?;
    let after = async {
        if let Some(retention) = request
            .retention
            .as_ref()
            .filter(|r| r.count.is_some() || r.window.is_some())
        {
            let mut cmd = pgha("retention");
            if let Some(count) = retention.count {
                cmd.args(["--count", &count.to_string()]);
            }
            if let Some(window) = &retention.window {
                cmd.args(["--window", window]);
            }
            pgbin::run(cmd).await?;
        }
        let mut catalog = pgha("catalog");
        catalog.arg("--json");
        let out = pgbin::run(catalog).await?;
        serde_json::from_str::<Catalog>(out.lines().next().unwrap_or_default())
            .map_err(|e| AgentError::Refused(format!("pgha archive catalog printed {out:?}: {e}")))
    };
    let catalog = after
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "retention or catalog after the backup failed"))
        .ok();
    Ok((taken, catalog))
}
