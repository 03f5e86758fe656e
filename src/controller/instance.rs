//! The instance controller: PgInstance → PVC → init pod → server pod, as `plan::instance`
//! decides; the server pod's `pgha.dev/role` label follows what the agent reports, so the
//! `-rw` and `-ro` Services select only an instance whose orders and reality agree.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::apply::apply;
use super::{Context, Error, wakes};
use crate::api::PgInstance;
use crate::api::instance::InstanceRole;
use crate::k8s::apply_status;
use crate::plan::agent::OrderedRole;
use crate::plan::instance::{self, Action as Step, PodKind, PodPhase, PodState};
use crate::plan::names;

pub const FIELD_MANAGER: &str = "pgha/instance";

pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}=pgha", names::LABEL_MANAGED_BY));
    let (reader, writer) = reflector::store();
    let instances = reflector::reflector(
        writer,
        watcher(Api::<PgInstance>::all(client.clone()), Default::default()),
    )
    .backoff(crate::k8s::watch::backoff())
    .applied_objects()
    .predicate_filter(wakes::instance, PredicateConfig::default());
    Controller::for_stream(instances, reader)
        .owns(Api::<Pod>::all(client.clone()), ours.clone())
        .owns(Api::<PersistentVolumeClaim>::all(client), ours)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(instance: Arc<PgInstance>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(instance = %instance.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// A pod as `plan::instance` sees it.
fn state(pod: &Pod) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let phase = PodPhase::of(status.phase.as_deref());
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.clone());
    let message = match &terminated {
        Some(t) => {
            let said = t.message.clone().unwrap_or_default();
            let last_lines: Vec<&str> = said.trim().lines().rev().take(3).collect();
            let said: Vec<&str> = last_lines.into_iter().rev().collect();
            format!(
                "exit code {} ({}){}",
                t.exit_code,
                t.reason.clone().unwrap_or_default(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {}", said.join(" / "))
                }
            )
        }
        None => status.message.clone().unwrap_or_default(),
    };
    let finished_seconds_ago = terminated.and_then(|t| t.finished_at).map(|at| {
        k8s_openapi::jiff::Timestamp::now()
            .duration_since(at.0)
            .as_secs()
            .max(0) as u64
    });
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    PodState {
        phase,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        message,
        finished_seconds_ago,
        image,
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The role label the server pod should carry: `primary` only when orders and the agent
/// agree; `replica` for a replica, also while it is being promoted (it still serves reads,
/// and the label then changes in one step, which is what moves `-rw`).
fn role_label(instance: &PgInstance) -> Option<&'static str> {
    let reported = instance.status.as_ref().and_then(|s| s.role);
    match (instance.spec.role, reported) {
        (OrderedRole::Primary, Some(InstanceRole::Primary)) => Some(names::ROLE_PRIMARY),
        (_, Some(InstanceRole::Replica)) => Some(names::ROLE_REPLICA),
        _ => None,
    }
}

async fn reconcile(instance: Arc<PgInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = converge(instance, ctx.clone()).await;
    ctx.metrics
        .reconciled("instance", started.elapsed(), result.is_ok());
    result
}

#[tracing::instrument(skip_all, fields(instance = %instance.name_any()))]
async fn converge(instance: Arc<PgInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    if instance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = instance.name_any();
    let namespace = instance.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "PgInstance",
        name: name.clone(),
    })?;
    let Some(owner) = instance.controller_owner_ref(&()) else {
        return Ok(Action::await_change());
    };
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let server_pod = pods.get_opt(&name).await?;
    // First: the label moves `-rw` after a promotion or fence, and every write before it
    // would lengthen the time without a primary behind the Service.
    if let Some(pod) = &server_pod {
        let wanted = role_label(&instance);
        let current = pod.labels().get(names::LABEL_ROLE).map(String::as_str);
        if current != wanted && pod.metadata.deletion_timestamp.is_none() {
            let patch = json!({"metadata": {"labels": {names::LABEL_ROLE: wanted}}});
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    apply(client, FIELD_MANAGER, &instance::pvc(&instance, &owner)).await?;
    let init_name = names::init_pod(&name);
    let init_pod = pods.get_opt(&init_name).await?;
    let server_state = server_pod.as_ref().map(state);
    let decision = instance::next(&instance::Observed {
        instance: &instance,
        init_pod: init_pod.as_ref().map(state),
        server_pod: server_state.clone(),
    });
    let reference = instance.object_ref(&());
    let mut failures = instance
        .status
        .as_ref()
        .and_then(|s| s.init_failures)
        .unwrap_or(0);
    for step in &decision.actions {
        match step {
            Step::CreateInitPod => {
                apply(
                    client,
                    FIELD_MANAGER,
                    &instance::pod(&instance, &owner, PodKind::Init),
                )
                .await?;
                let note = format!("init pod {init_name}: {}", decision.message);
                ctx.event(&reference, false, "Initializing", note).await;
            }
            Step::CreateServerPod => {
                apply(
                    client,
                    FIELD_MANAGER,
                    &instance::pod(&instance, &owner, PodKind::Server),
                )
                .await?;
                ctx.event(&reference, false, "Starting", format!("created pod {name}"))
                    .await;
            }
            Step::DeleteInitPod { failed } => {
                pods.delete(&init_name, &DeleteParams::background()).await?;
                if *failed {
                    failures += 1;
                    ctx.event(&reference, true, "InitFailed", decision.message.clone())
                        .await;
                }
            }
            Step::DeleteServerPod => {
                pods.delete(&name, &DeleteParams::background()).await?;
                ctx.event(&reference, true, "Restarting", decision.message.clone())
                    .await;
            }
        }
    }
    let status = instance.status.clone().unwrap_or_default();
    // The agent reports ready; a pod that is gone or failing its probe cannot say otherwise.
    let stale_ready = status.ready && !server_pod.as_ref().is_some_and(pod_ready);
    // The image the instance runs, once its pod is ready on it.
    let running_image = server_state
        .filter(|_| server_pod.as_ref().is_some_and(pod_ready))
        .map(|s| s.image)
        .or(status.image.clone());
    let changed = status.phase != Some(decision.phase)
        || status.reason.as_deref() != Some(decision.reason)
        || status.message.as_deref() != Some(decision.message.as_str())
        || status.init_failures.unwrap_or(0) != failures
        || status.image != running_image
        || stale_ready;
    if changed {
        let mut fields = json!({
            "phase": decision.phase,
            "reason": decision.reason,
            "message": decision.message,
            "initFailures": failures,
            "image": running_image,
            "observedGeneration": instance.metadata.generation,
        });
        if stale_ready {
            fields["ready"] = json!(false);
        }
        let instances = Api::<PgInstance>::namespaced(client.clone(), &namespace);
        apply_status(&instances, &name, FIELD_MANAGER, &fields).await?;
    }
    Ok(Action::requeue(
        decision.requeue.unwrap_or(Duration::from_secs(30)),
    ))
}
