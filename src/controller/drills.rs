//! Restore drills as one step of the cluster's reconcile: `plan::drills` decides, this module
//! starts the drill pod, reads its result from the pod (`GET /result`), and removes the pod.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, agents};
use crate::api::PgCluster;
use crate::api::cluster::{DrillResult, VerifiedRestore};
use crate::plan::children::{PlanError, archive_location, default_image};
use crate::plan::drills::{self, DrillPod, Step};
use crate::plan::instance::PodPhase;
use crate::plan::validation::ValidCluster;

/// What the cluster's reconcile takes from this step.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A drill that just ended.
    pub finished: Option<VerifiedRestore>,
    pub requeue: Option<std::time::Duration>,
}

fn to_chrono(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

fn observe(pod: &Pod) -> DrillPod {
    let status = pod.status.clone().unwrap_or_default();
    let phase = PodPhase::of(status.phase.as_deref());
    let message = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| {
            t.message
                .clone()
                .unwrap_or_else(|| format!("exit code {}", t.exit_code))
        })
        .collect::<Vec<_>>()
        .join("; ");
    DrillPod {
        phase,
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(to_chrono)
            .unwrap_or_else(Utc::now),
        ip: status.pod_ip,
        message,
    }
}

pub async fn step(
    ctx: &Context,
    cluster: &PgCluster,
    valid: &ValidCluster<'_>,
    backed_up: bool,
) -> Result<Outcome, Error> {
    let Some(backup) = &cluster.spec.backup else {
        return Ok(Outcome::default());
    };
    let name = cluster.name_any();
    let namespace = valid.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod_name = drills::pod_name(&name);
    let pod = pods.get_opt(&pod_name).await?;
    let last = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_verified_restore.as_ref())
        .map(|v| to_chrono(&v.started));
    let now = Utc::now();
    let step = drills::step(
        now,
        valid.verify_schedule.as_ref(),
        last,
        backed_up,
        pod.as_ref().map(observe).as_ref(),
    );
    let started = pod
        .as_ref()
        .and_then(|p| p.metadata.creation_timestamp.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    let reference = cluster.object_ref(&());
    let finished = match step {
        Step::Wait(requeue) => {
            return Ok(Outcome {
                finished: None,
                requeue,
            });
        }
        Step::Create => {
            let owner = cluster
                .controller_owner_ref(&())
                .ok_or(Error::Plan(PlanError::NoUid))?;
            let image = cluster
                .spec
                .image
                .clone()
                .unwrap_or_else(|| default_image(cluster.spec.postgres_version));
            let archive = archive_location(valid, &backup.s3);
            let drill = drills::pod(
                &name,
                namespace,
                &image,
                &archive,
                &cluster.spec.storage,
                &owner,
            );
            pods.create(&PostParams::default(), &drill).await?;
            let note = format!("pod {pod_name} restores the newest backup and checks it");
            ctx.event(&reference, false, "RestoreDrillStarted", note)
                .await;
            return Ok(Outcome {
                finished: None,
                requeue: Some(std::time::Duration::from_secs(5)),
            });
        }
        Step::Read(ip) => match agents::get_json::<VerifiedRestore>(&ip, "/result").await {
            Some(result) => result,
            None => {
                return Ok(Outcome {
                    finished: None,
                    requeue: Some(std::time::Duration::from_secs(3)),
                });
            }
        },
        Step::Fail(message) => VerifiedRestore {
            result: DrillResult::Failed,
            backup: None,
            recovered_to: None,
            started,
            duration_seconds: None,
            message,
        },
    };
    pods.delete(&pod_name, &DeleteParams::default()).await?;
    let (warning, reason) = match finished.result {
        DrillResult::Passed => (false, "RestoreDrillPassed"),
        DrillResult::Failed => (true, "RestoreDrillFailed"),
    };
    ctx.event(&reference, warning, reason, finished.message.clone())
        .await;
    Ok(Outcome {
        finished: Some(finished),
        requeue: None,
    })
}
