//! A cluster's PgBackups, as one step of the cluster's reconcile: the schedule creates them,
//! `plan::backups` decides, and this module writes the decisions (PgBackup statuses, new
//! and removed PgBackups, Events). The backup itself is run by the chosen instance's agent,
//! which is told through its PgInstance's `spec.backup`.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::LastBackup;
use super::{Context, Error};
use crate::api::backup::{BackupPhase, BackupResult, BackupTarget, PgBackupStatus};
use crate::api::instance::{BackupRequest, InstanceBackup};
use crate::api::{PgBackup, PgBackupSpec, PgCluster, PgInstance};
use crate::k8s::apply_status;
use crate::plan::backups::{self, Backup, Member, Observed};
use crate::plan::children::{archive_location, archive_url};
use crate::plan::names;
use crate::plan::validation::ValidCluster;

pub const FIELD_MANAGER: &str = "pgha/backup";
/// Marks the PgBackups the schedule created.
pub const LABEL_SCHEDULED: &str = "pgha.dev/scheduled";

/// What the cluster's reconcile takes from this step.
#[derive(Debug, Default)]
pub struct Step {
    /// The instance told to take a backup, and which.
    pub assigned: Option<(String, BackupRequest)>,
    /// When the schedule is next due.
    pub requeue: Option<std::time::Duration>,
    /// The newest completed PgBackup, and when it completed.
    pub last_backup: Option<String>,
    pub last_backup_at: Option<Time>,
    /// Set when a backup just completed and retention ran.
    pub recoverable_from: Option<Time>,
    /// The current archive holds a completed backup (a drill restores from there).
    pub backed_up_here: bool,
}

fn to_chrono(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), time.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub async fn step(
    ctx: &Context,
    cluster: &PgCluster,
    valid: &ValidCluster<'_>,
    instances: &[PgInstance],
    primary: &str,
) -> Result<Step, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<PgBackup> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut ours: Vec<PgBackup> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster == name)
        .collect();
    let spec = cluster.spec.backup.as_ref();
    if spec.is_none() && ours.is_empty() {
        ctx.metrics.backups(&namespace, &name, None, None);
        ctx.metrics.backup_progress(&namespace, &name, None);
        return Ok(Step::default());
    }
    let views: Vec<Backup> = ours.iter().map(view).collect();
    let members: Vec<Member> = instances
        .iter()
        .map(|i| {
            let s = i.status.clone().unwrap_or_default();
            Member {
                name: i.name_any(),
                primary: i.name_any() == primary,
                ready: s.ready,
                lag_bytes: s.lag_bytes,
                report: s.backup,
            }
        })
        .collect();
    let healthy = cluster.status.as_ref().and_then(|s| s.phase)
        == Some(crate::api::cluster::ClusterPhase::Healthy);
    let schedule = valid
        .schedule
        .as_ref()
        .filter(|_| spec.is_some_and(|b| !b.suspend));
    let archive = spec.map(|b| archive_url(&archive_location(valid, &b.s3)));
    let archive_now = archive.as_deref();
    let plan = backups::plan(&Observed {
        now: Utc::now(),
        schedule,
        healthy,
        backups: &views,
        members: &members,
        archive: archive_now,
    });
    let reference = cluster.object_ref(&());
    let mut step = Step {
        requeue: plan.requeue,
        ..Step::default()
    };

    if plan.create {
        let backup = scheduled(cluster, &namespace);
        let created = api.create(&PostParams::default(), &backup).await?;
        let note = format!("created PgBackup {} (schedule)", created.name_any());
        ctx.event(&reference, false, "BackupScheduled", note).await;
        ours.push(created);
    }
    if let Some((backup, instance)) = &plan.start {
        // On-demand PgBackups get the cluster's label, so `-l pgha.dev/cluster=` finds them.
        let labels = json!({"metadata": {"labels": {names::LABEL_CLUSTER: name}}});
        api.patch(backup, &PatchParams::default(), &Patch::Merge(&labels))
            .await?;
        let status = PgBackupStatus {
            result: BackupResult {
                phase: Some(BackupPhase::Running),
                started_at: Some(now()),
                ..BackupResult::default()
            },
            instance: Some(instance.clone()),
            ..PgBackupStatus::default()
        };
        apply_status(&api, backup, FIELD_MANAGER, &status).await?;
        let note = format!("backup {backup} runs on {instance}");
        ctx.event(&reference, false, "BackupStarted", note).await;
    }
    if let Some((backup, report)) = &plan.finish {
        let location = spec.map(|b| archive_location(valid, &b.s3));
        let status = finished(backup, report, &ours, location.as_ref());
        let failed = status.result.phase == Some(BackupPhase::Failed);
        apply_status(&api, backup, FIELD_MANAGER, &status).await?;
        let note = match &status.result.message {
            Some(why) => format!("backup {backup} failed: {why}"),
            None => format!(
                "backup {backup} completed: {} bytes stored at {}",
                status.result.stored_bytes.unwrap_or(0),
                status.location.clone().unwrap_or_default()
            ),
        };
        let reason = if failed {
            "BackupFailed"
        } else {
            "BackupCompleted"
        };
        ctx.event(&reference, failed, reason, note).await;
        step.recoverable_from = report.recoverable_from.clone();
    }
    if let Some((backup, progress)) = &plan.progress
        && let Some(before) = ours.iter().find(|b| b.name_any() == *backup)
    {
        // The whole status again: an apply drops the fields it leaves out.
        let mut status = before.status.clone().unwrap_or_default();
        status.result.progress = Some(progress.clone());
        apply_status(&api, backup, FIELD_MANAGER, &status).await?;
    }
    for (backup, why) in &plan.fail {
        let status = PgBackupStatus {
            result: BackupResult {
                phase: Some(BackupPhase::Failed),
                completed_at: Some(now()),
                message: Some(why.clone()),
                ..BackupResult::default()
            },
            ..PgBackupStatus::default()
        };
        apply_status(&api, backup, FIELD_MANAGER, &status).await?;
        let note = format!("backup {backup} failed: {why}");
        ctx.event(&reference, true, "BackupFailed", note).await;
    }
    if let Some((backup, why)) = &plan.waiting {
        let status = PgBackupStatus {
            result: BackupResult {
                phase: Some(BackupPhase::Pending),
                message: Some(why.clone()),
                ..BackupResult::default()
            },
            ..PgBackupStatus::default()
        };
        apply_status(&api, backup, FIELD_MANAGER, &status).await?;
    }
    for backup in &plan.delete {
        api.delete(backup, &DeleteParams::background()).await?;
        let note = format!("removed PgBackup {backup}: retention deleted its data");
        ctx.event(&reference, false, "BackupRemoved", note).await;
    }
    let running = views
        .iter()
        .find(|b| b.phase == Some(BackupPhase::Running) && plan.finish.is_none())
        .and_then(|b| match &plan.progress {
            Some((name, progress)) if *name == b.name => Some(progress),
            _ => b.progress.as_ref(),
        });
    ctx.metrics.backup_progress(&namespace, &name, running);
    ctx.metrics.backups(
        &namespace,
        &name,
        last_completed(&ours),
        schedule.and_then(|s| backups::interval(s, Utc::now())),
    );
    step.assigned = plan.assigned.map(|(backup, instance)| {
        let request = BackupRequest {
            name: backup,
            retention: spec.map(|b| b.retention.clone()),
        };
        (instance, request)
    });
    let newest = ours
        .iter()
        .filter(|b| !plan.delete.contains(&b.name_any()))
        .filter_map(|b| {
            let status = b.status.as_ref()?;
            let result = match &plan.finish {
                Some((name, report)) if *name == b.name_any() => &report.result,
                _ => &status.result,
            };
            (result.phase == Some(BackupPhase::Completed)).then(|| {
                let at = b.metadata.creation_timestamp.clone();
                (at, b.name_any(), result.completed_at.clone())
            })
        })
        .max()
        .map(|(_, name, completed)| (name, completed));
    let here = |phase: Option<BackupPhase>, archive: Option<&str>| {
        phase == Some(BackupPhase::Completed) && archive.is_some() && archive == archive_now
    };
    step.backed_up_here = views
        .iter()
        .filter(|b| !plan.delete.contains(&b.name))
        .any(|b| here(b.phase, b.archive.as_deref()))
        || plan
            .finish
            .as_ref()
            .is_some_and(|(_, report)| here(report.result.phase, report.result.archive.as_deref()));
    (step.last_backup, step.last_backup_at) = match newest {
        Some((name, completed)) => (Some(name), completed),
        None => (None, None),
    };
    Ok(step)
}

/// The newest completed backup, for the metrics.
fn last_completed(backups: &[PgBackup]) -> Option<LastBackup> {
    backups
        .iter()
        .filter_map(|b| {
            let result = &b.status.as_ref()?.result;
            if result.phase != Some(BackupPhase::Completed) {
                return None;
            }
            let (started, completed) = (result.started_at.as_ref()?, result.completed_at.as_ref()?);
            Some(LastBackup {
                completed: completed.0.as_millisecond() as f64 / 1000.0,
                took: completed
                    .0
                    .duration_since(started.0)
                    .try_into()
                    .unwrap_or_default(),
                size_bytes: result.size_bytes.unwrap_or_default(),
            })
        })
        .max_by(|a, b| a.completed.total_cmp(&b.completed))
}

fn view(backup: &PgBackup) -> Backup {
    let status = backup.status.clone().unwrap_or_default();
    Backup {
        name: backup.name_any(),
        target: backup.spec.target,
        phase: status.result.phase,
        instance: status.instance,
        created: backup
            .metadata
            .creation_timestamp
            .as_ref()
            .map(to_chrono)
            .unwrap_or_else(Utc::now),
        scheduled: backup.labels().get(LABEL_SCHEDULED).map(String::as_str) == Some("true"),
        archive: status.result.archive.or_else(|| {
            // Completed before backups named their archive: it is in the location.
            let location = status.location?;
            Some(location.rsplit_once("/base/")?.0.to_string())
        }),
        backup_id: status.result.backup_id,
        progress: status.result.progress,
    }
}

/// A PgBackup for the schedule, named after the cluster and the time.
fn scheduled(cluster: &PgCluster, namespace: &str) -> PgBackup {
    let name = cluster.name_any();
    let mut labels = names::labels(&name, "backup");
    labels.insert(LABEL_SCHEDULED.into(), "true".into());
    PgBackup {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", Utc::now().format("%Y%m%d%H%M%S"))),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: PgBackupSpec {
            cluster: name,
            target: BackupTarget::PreferStandby,
        },
        status: None,
    }
}

/// The status of a backup whose agent reported its end.
fn finished(
    name: &str,
    report: &InstanceBackup,
    backups: &[PgBackup],
    location: Option<&crate::api::common::S3Spec>,
) -> PgBackupStatus {
    let before = backups
        .iter()
        .find(|b| b.name_any() == name)
        .and_then(|b| b.status.clone())
        .unwrap_or_default();
    // Where the agent says the backup went; the cluster's object store for older agents.
    let archive = report
        .result
        .archive
        .clone()
        .or_else(|| location.map(archive_url));
    PgBackupStatus {
        result: report.result.clone(),
        location: report
            .result
            .backup_id
            .as_ref()
            .zip(archive)
            .map(|(id, archive)| format!("{archive}/base/{id}")),
        ..before
    }
}
