//! PgBackups that name a PgCluster that does not exist. The cluster's reconcile runs its own
//! PgBackups; without a cluster nothing would ever give one a status. They wait as `Pending`,
//! saying which cluster is missing, and start when it is created.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};

use super::backups::FIELD_MANAGER;
use super::{Context, Error};
use crate::api::backup::{BackupPhase, BackupResult, PgBackupStatus};
use crate::api::{PgBackup, PgCluster};
use crate::plan::backups::without_cluster;

pub async fn run(ctx: Arc<Context>) {
    Controller::new(
        Api::<PgBackup>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

fn error_policy(backup: Arc<PgBackup>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(backup = %backup.name_any(), %error, "checking the cluster of a PgBackup failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(backup: Arc<PgBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = backup.status.clone().unwrap_or_default().result;
    // Only a backup no cluster has taken up yet is in question.
    if !matches!(result.phase, None | Some(BackupPhase::Pending)) {
        return Ok(Action::await_change());
    }
    let namespace = backup.namespace().unwrap_or_default();
    let cluster = &backup.spec.cluster;
    let clusters: Api<PgCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    if clusters.get_opt(cluster).await?.is_some() {
        return Ok(Action::await_change());
    }
    let message = without_cluster(cluster, &namespace);
    if result.message.as_deref() != Some(message.as_str()) {
        let status = PgBackupStatus {
            result: BackupResult {
                phase: Some(BackupPhase::Pending),
                message: Some(message),
                ..BackupResult::default()
            },
            ..PgBackupStatus::default()
        };
        // Only onto the PgBackup as read: if its cluster appeared and started it meanwhile,
        // the API refuses this (409) instead of turning a running backup back to Pending.
        // The cluster's backup step's field manager, so that its next apply replaces this.
        let patch = serde_json::json!({
            "apiVersion": "pgha.dev/v1",
            "kind": "PgBackup",
            "metadata": {"resourceVersion": backup.resource_version()},
            "status": status,
        });
        let backups: Api<PgBackup> = Api::namespaced(ctx.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match backups
            .patch_status(&backup.name_any(), &params, &Patch::Apply(&patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            other => other?,
        };
    }
    Ok(Action::await_change())
}
