//! Planned switchover (shared/DESIGN.md §4 rule 5): the DBA's request is an annotation on the
//! PgCluster; the operator checks it, records it in `status.lastSwitchover`, tells the primary
//! to fence (a fast shutdown, which sends every WAL record to the connected standbys before
//! it ends), and once the primary has handed its Lease back, hands the Lease to the target
//! and promotes it the way a failover does. The old primary then follows without a rewind.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::failover::{Decision, candidates, find, persist};
use super::{Context, Error};
use crate::api::cluster::{Failover, PgClusterStatus, SWITCHOVER_ANNOTATION, Switchover};
use crate::api::{PgCluster, PgInstance};
use crate::k8s::lease::LeaseApi;
use crate::plan::failover::{LeaseView, LostPrimary, switchover_target};
use crate::plan::lease::{AGENT_RUN_ANNOTATION, expired};
use crate::plan::wal::parse_lsn;

/// How long the primary may take to fence and hand its Lease back before the switchover is
/// given up (and the primary goes on).
const FENCE_PATIENCE: SignedDuration = SignedDuration::from_secs(15);

fn now() -> Time {
    Time(Timestamp::now())
}

/// A switchover under way: asked for, not completed, not refused.
pub fn under_way(status: &PgClusterStatus) -> Option<&Switchover> {
    status
        .last_switchover
        .as_ref()
        .filter(|s| s.completed.is_none() && s.refused.is_none())
}

/// Takes a new request or advances the switchover under way; true when it did either (the
/// failover checks are skipped then).
pub async fn step(
    ctx: &Context,
    cluster: &PgCluster,
    namespace: &str,
    observed: &[PgInstance],
    lease: (&LeaseApi, &Lease, &LeaseView),
    decision: &mut Decision,
) -> Result<bool, Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    let requested = cluster.annotations().get(SWITCHOVER_ANNOTATION).cloned();
    if let Some(running) = under_way(&previous) {
        let running = running.clone();
        advance(ctx, cluster, namespace, observed, lease, decision, running).await?;
        return Ok(true);
    }
    let Some(requested) = requested else {
        return Ok(false);
    };
    let current = decision.current.clone();
    let reference = cluster.object_ref(&());
    let serves = find(observed, &current)
        .and_then(|i| i.status.as_ref())
        .is_some_and(|s| s.ready);
    let target = if !serves {
        Err(format!("the primary {current} is not serving"))
    } else {
        let candidates = candidates(observed, &current).await;
        let primary = LostPrimary {
            name: &current,
            system_identifier: decision
                .high_water
                .as_ref()
                .and_then(|h| h.system_identifier.as_deref()),
            high_water: decision.high_water.as_ref(),
        };
        let wanted = Some(requested.as_str()).filter(|r| !r.is_empty());
        switchover_target(
            &primary,
            &candidates,
            wanted,
            cluster.spec.failover.max_lag_bytes,
        )
    };
    let record = Switchover {
        from: current.clone(),
        to: target.clone().unwrap_or(requested.clone()),
        started: now(),
        completed: None,
        refused: target.as_ref().err().cloned(),
    };
    match &target {
        Ok(to) => {
            let note = format!("moving the primary from {current} to {to}");
            ctx.event(&reference, false, "SwitchoverStarted", note)
                .await;
            decision.fenced = vec![current.clone()];
            decision.requeue = Some(Duration::from_millis(100));
        }
        Err(why) => {
            let note = format!("switchover to {requested:?} refused: {why}");
            ctx.event(&reference, true, "SwitchoverRefused", note).await;
            ctx.metrics.switched_over("refused");
        }
    }
    decision.last_switchover = Some(record);
    // Recorded first, then the request is taken away: a new leader resumes from the status.
    persist(ctx, cluster, namespace, decision).await?;
    annotate(ctx, cluster, None).await?;
    Ok(target.is_ok())
}

/// Sets the switchover request on `cluster` (`to`: an instance, or empty for the most
/// caught-up replica), or takes it away (`None`).
pub async fn annotate(ctx: &Context, cluster: &PgCluster, to: Option<&str>) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let clusters: Api<PgCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: to}}});
    clusters
        .patch(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The old primary fences; once it has handed its Lease back, the target takes it.
async fn advance(
    ctx: &Context,
    cluster: &PgCluster,
    namespace: &str,
    observed: &[PgInstance],
    (leases, lease, view): (&LeaseApi, &Lease, &LeaseView),
    decision: &mut Decision,
    mut running: Switchover,
) -> Result<(), Error> {
    let reference = cluster.object_ref(&());
    let spec = &cluster.spec.failover;
    let from = running.from.clone();
    let to = running.to.clone();
    decision.fenced = vec![from.clone()];
    // The Lease handed back wakes the reconcile at once (lease_watch); this is a fallback.
    decision.requeue = Some(Duration::from_millis(500));
    let released =
        view.holder.is_none() || expired(view.renewed, view.duration_seconds, Timestamp::now());
    let age = Timestamp::now().duration_since(running.started.0);
    let give_up = |why: String| async move {
        ctx.event(&reference, true, "SwitchoverFailed", why.clone())
            .await;
        ctx.metrics.switched_over("failed");
        why
    };
    if !released {
        if age > FENCE_PATIENCE {
            let why = format!("{from} did not fence within {} s", FENCE_PATIENCE.as_secs());
            running.refused = Some(give_up(why).await);
            decision.fenced.clear();
            decision.last_switchover = Some(running);
        } else {
            decision.orders_only = true;
        }
        return Ok(());
    }
    // The fast shutdown sent the target every WAL record the primary wrote; check what it
    // says it has against the last position the primary published.
    let reports = candidates(observed, &from).await;
    let target = reports.iter().find(|c| c.name == to && c.reachable);
    let high = decision.high_water.as_ref().and_then(|h| parse_lsn(&h.lsn));
    let caught_up = target
        .and_then(|c| c.received_lsn.as_deref().and_then(parse_lsn))
        .is_some_and(|at| high.is_none_or(|h| at >= h));
    if !caught_up {
        // Nothing changed: the old primary gets its Lease back and goes on.
        let why = format!("{to} is not a caught-up, reachable replica any more; {from} goes on");
        running.refused = Some(give_up(why).await);
        decision.fenced.clear();
        decision.last_switchover = Some(running);
        leases
            .hand_over(lease, &from, spec.lease_seconds, AGENT_RUN_ANNOTATION)
            .await?;
        return Ok(());
    }
    if !leases
        .hand_over(lease, &to, spec.lease_seconds, AGENT_RUN_ANNOTATION)
        .await?
    {
        return Ok(());
    }
    decision.primary = to.clone();
    decision.failover = Some(Failover {
        from: from.clone(),
        to: to.clone(),
        reason: "switchover".into(),
        started: running.started.clone(),
        completed: None,
        lost_bytes: 0,
        planned: true,
    });
    persist(ctx, cluster, namespace, decision).await
}
