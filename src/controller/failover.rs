//! Failover, the operator's side (shared/DESIGN.md §4): observe the primary's Lease, pod and
//! node, let `plan::failover` judge and elect, hand the Lease to the elected replica, and
//! record each step in the cluster's status first, so that a new operator leader resumes it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, agents, switchover};
use crate::api::cluster::{
    ClusterPhase, FORCE_PROMOTE_ANNOTATION, Failover, HighWater, PgClusterStatus, Switchover,
};
use crate::api::instance::{InstancePhase, InstanceRole};
use crate::api::{PgCluster, PgInstance};
use crate::k8s::apply_status;
use crate::k8s::lease::LeaseApi;
use crate::plan::failover::{
    BLOCKED_REASONS, Candidate, Election, LeaseView, LostPrimary, Policy, Signals, Verdict, elect,
    verdict,
};
use crate::plan::lease::{
    AGENT_RUN_ANNOTATION, API_RETURNED_ANNOTATION, LSN_ANNOTATION, SYNCHRONOUS_ANNOTATION,
    SYSTEM_ID_ANNOTATION, TIMELINE_ANNOTATION, expired,
};
use crate::plan::vouch::PromiseReport;
use crate::plan::wal::parse_lsn;
use crate::plan::{failover, names, vouch};

/// What the rest of the reconcile needs from the failover logic.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The instance ordered to be primary (the target while a failover runs).
    pub primary: String,
    /// The instance serving as primary (`status.currentPrimary`).
    pub current: String,
    /// Instances told to fence.
    pub fenced: Vec<String>,
    pub failover: Option<Failover>,
    pub last_failover: Option<Failover>,
    pub high_water: Option<HighWater>,
    pub last_switchover: Option<Switchover>,
    /// The primary is lost and nobody may be promoted: reason and message.
    pub blocked: Option<(&'static str, String)>,
    /// The primary's Lease ran out, but a majority of the members vouch for it: it serves
    /// without the API (what is known of it).
    pub vouched: Option<String>,
    /// Look again this soon.
    pub requeue: Option<Duration>,
    /// Only the orders matter this time (a switchover waits for the primary to fence): the
    /// rest of the reconcile waits, so that the next one, which promotes, starts sooner.
    pub orders_only: bool,
}

impl Decision {
    /// The failover parts of the status on top of `status`.
    pub fn record(&self, status: &mut PgClusterStatus) {
        status.current_primary = Some(self.current.clone());
        status.target_primary = Some(self.primary.clone());
        status.failover = self.failover.clone();
        status.last_failover = self.last_failover.clone();
        status.high_water = self.high_water.clone();
        status.last_switchover = self.last_switchover.clone();
        let switching = self.failover.as_ref().is_some_and(|f| f.planned)
            || self
                .last_switchover
                .as_ref()
                .is_some_and(|s| s.completed.is_none() && s.refused.is_none());
        if switching {
            status.phase = Some(ClusterPhase::SwitchingOver);
        } else if self.failover.is_some() || self.blocked.is_some() {
            status.phase = Some(ClusterPhase::FailingOver);
        }
    }
}

/// How long a failover waits for its target to serve before it elects again.
const TARGET_PATIENCE: SignedDuration = SignedDuration::from_secs(30);

fn now() -> Time {
    Time(Timestamp::now())
}

/// Decides this reconcile's part of a failover: who is primary, who fences, and what the
/// status records. May hand the primary Lease over and write the status (before any order
/// changes), so that the decision survives the operator.
pub async fn decide(
    ctx: &Context,
    cluster: &PgCluster,
    namespace: &str,
    observed: &[PgInstance],
) -> Result<Decision, Error> {
    let name = cluster.name_any();
    let previous = cluster.status.clone().unwrap_or_default();
    let current = previous
        .current_primary
        .clone()
        .unwrap_or_else(|| names::instance(&name, 1));
    let spec = &cluster.spec.failover;
    let leases = LeaseApi::new(ctx.client.clone(), namespace, &names::primary_lease(&name));
    let mut decision = Decision {
        primary: current.clone(),
        current: current.clone(),
        fenced: Vec::new(),
        failover: previous.failover.clone(),
        last_failover: previous.last_failover.clone(),
        high_water: previous.high_water.clone(),
        last_switchover: previous.last_switchover.clone(),
        blocked: None,
        vouched: None,
        requeue: None,
        orders_only: false,
    };
    let Some(lease) = leases.get().await? else {
        // A new cluster: its first primary holds the Lease from the start.
        let labels = names::labels(&name, "lease");
        leases
            .create(
                &current,
                spec.lease_seconds,
                cluster.controller_owner_ref(&()),
                labels,
            )
            .await?;
        return Ok(decision);
    };
    let view = lease_view(&lease, spec.lease_seconds);
    decision.high_water = high_water(previous.high_water.as_ref(), &lease, &current);
    let reference = cluster.object_ref(&());

    if let Some(mut running) = previous.failover.clone() {
        let target = running.to.clone();
        decision.primary = target.clone();
        let serves = find(observed, &target)
            .and_then(|i| i.status.as_ref())
            .is_some_and(|s| s.ready && s.role == Some(InstanceRole::Primary));
        if !serves {
            decision.fenced = vec![running.from.clone()];
            decision.requeue = Some(Duration::from_millis(300));
            let lapsed = view.holder.is_none()
                || expired(view.renewed, view.duration_seconds, Timestamp::now());
            let age = Timestamp::now().duration_since(running.started.0);
            if lapsed && age > TARGET_PATIENCE {
                // The target never took over (it died too): elect again from scratch.
                let note = format!(
                    "{target} did not become primary within {} s; electing again",
                    TARGET_PATIENCE.as_secs()
                );
                ctx.event(&reference, true, "FailoverAbandoned", note).await;
                decision.primary = running.from.clone();
                decision.failover = None;
                return Ok(decision);
            }
            // The target needs the Lease to promote; give it again if it went astray (a
            // takeover the status recorded but the Lease write did not survive).
            let astray = view.holder.as_deref() != Some(target.as_str()) && lapsed;
            if astray {
                leases
                    .hand_over(&lease, &target, spec.lease_seconds, AGENT_RUN_ANNOTATION)
                    .await?;
            }
            return Ok(decision);
        }
        running.completed = Some(now());
        decision.current = target.clone();
        decision.failover = None;
        ctx.metrics.failed_over(running.planned);
        if running.planned {
            let note = format!("{target} serves as primary in place of {}", running.from);
            ctx.event(&reference, false, "SwitchoverCompleted", note)
                .await;
            ctx.metrics.switched_over("completed");
            if let Some(switchover) = decision.last_switchover.as_mut() {
                switchover.completed = running.completed.clone();
            }
        } else {
            let note = format!(
                "{target} serves as primary in place of {}; {} bytes of WAL the old primary reported were not on it",
                running.from, running.lost_bytes
            );
            ctx.event(&reference, false, "FailoverCompleted", note)
                .await;
            decision.last_failover = Some(running);
        }
        return Ok(decision);
    }

    if switchover::step(
        ctx,
        cluster,
        namespace,
        observed,
        (&leases, &lease, &view),
        &mut decision,
    )
    .await?
    {
        return Ok(decision);
    }

    // Judge only a cluster that has served: a new primary is still initialising.
    let served = previous
        .phase
        .is_some_and(|p| !matches!(p, ClusterPhase::Creating));
    let Some(primary) = find(observed, &current).filter(|_| served) else {
        return Ok(decision);
    };
    let api_returned = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(API_RETURNED_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok());
    let signals = signals(ctx, namespace, primary, api_returned).await?;
    let at = Timestamp::now();
    match verdict(&current, &view, &signals, spec.delay_seconds, at) {
        // A fence once ordered stands until the Lease is handed back or runs out: a pod
        // that comes back in between must not resume as if nothing happened.
        Verdict::Serving if primary.spec.fenced => {
            decision.fenced = vec![current.clone()];
            decision.requeue = Some(Duration::from_millis(300));
        }
        Verdict::Serving => {}
        // Fencing on a suspicion when the last election found nobody would only take the
        // primary down and hand it its Lease back, over and over: wait for candidates.
        Verdict::Suspect(_) if blocked(&previous) => {
            decision.requeue = Some(Duration::from_secs(1));
        }
        Verdict::Suspect(why) => {
            decision.fenced = vec![current.clone()];
            decision.requeue = Some(Duration::from_millis(300));
            if !primary.spec.fenced {
                let note = format!("telling {current} to fence: {why}");
                ctx.event(&reference, true, "Fencing", note).await;
            }
        }
        // The primary has fenced itself; if it renews within the delay, it simply goes on.
        Verdict::Waiting(until) => {
            let wait = until.duration_since(at).as_millis().max(100) as u64;
            decision.requeue = Some(Duration::from_millis(wait));
        }
        // Its pod was replaced on purpose and the new agent handed the Lease back, as every
        // restarted agent does: it goes on as primary.
        Verdict::Lost(_) if signals.replacing && view.holder.is_none() => {
            leases
                .hand_over(&lease, &current, spec.lease_seconds, AGENT_RUN_ANNOTATION)
                .await?;
        }
        Verdict::Lost(why) => {
            let candidates = candidates(observed, &current).await;
            // A primary whose Lease ran out while a majority of the members still reach it
            // and promised not to be promoted serves on: only the API lost it.
            let host = primary
                .status
                .as_ref()
                .and_then(|s| s.endpoint.as_ref())
                .map(|e| e.host.as_str());
            let reports: Vec<(&str, &[PromiseReport])> = candidates
                .iter()
                .map(|c| (c.name.as_str(), c.promises.as_slice()))
                .collect();
            let members = usize::try_from(cluster.spec.instances).unwrap_or(1);
            let key = format!("{namespace}/{name}");
            let holds = view.holder.as_deref() == Some(current.as_str());
            let seen = host
                .filter(|_| holds)
                .and_then(|host| vouch::vouched(host, members, &reports, Instant::now()));
            // Promises seen a moment ago still hold a majority when a member is slow to
            // answer now: no replica could be promoted before they run out.
            let note = match seen {
                Some(seen) => {
                    let note = format!(
                        "{why}; {current} serves on the promises of {} (a majority of the {members} members)",
                        if seen.by.is_empty() {
                            "nobody else: it is the only member".to_string()
                        } else {
                            seen.by.join(", ")
                        }
                    );
                    ctx.vouches.saw(&key, seen.until, note.clone());
                    Some(note)
                }
                None => ctx.vouches.running(&key),
            };
            if let Some(note) = note.filter(|_| holds) {
                decision.vouched = Some(note);
                decision.requeue = Some(Duration::from_millis(500));
                return Ok(decision);
            }
            decision.fenced = vec![current.clone()];
            decision.requeue = Some(Duration::from_millis(300));
            // A fenced or stopped agent no longer reports its system identifier; the Lease
            // kept the last one.
            let lost = LostPrimary {
                name: &current,
                system_identifier: decision
                    .high_water
                    .as_ref()
                    .and_then(|h| h.system_identifier.as_deref())
                    .or(primary
                        .status
                        .as_ref()
                        .and_then(|s| s.system_identifier.as_deref())),
                high_water: decision.high_water.as_ref(),
            };
            let sync = &cluster.spec.replication.synchronous;
            let policy = Policy {
                mode: sync.mode,
                number: sync.number,
                replicas: observed.len().saturating_sub(1),
                max_lag_bytes: spec.max_lag_bytes,
            };
            let forced = cluster.annotations().get(FORCE_PROMOTE_ANNOTATION);
            match elect(&lost, &candidates, &policy, forced.map(String::as_str)) {
                Election::Wait { reason, message } => {
                    let known = previous
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.message == message);
                    if !known {
                        ctx.event(&reference, true, "FailoverBlocked", message.clone())
                            .await;
                    }
                    decision.blocked = Some((reason, message));
                    decision.requeue = Some(Duration::from_secs(1));
                    // Nobody may take over: the old primary may serve again if it comes back,
                    // so it is not told to fence, and a Lease it handed back is returned.
                    decision.fenced.clear();
                    if view.holder.is_none() {
                        leases
                            .hand_over(&lease, &current, spec.lease_seconds, AGENT_RUN_ANNOTATION)
                            .await?;
                    }
                }
                Election::Promote {
                    name: to,
                    lost_bytes,
                } => {
                    if !leases
                        .hand_over(&lease, &to, spec.lease_seconds, AGENT_RUN_ANNOTATION)
                        .await?
                    {
                        // The Lease changed since it was read: judge again.
                        return Ok(decision);
                    }
                    let started = Failover {
                        from: current.clone(),
                        to: to.clone(),
                        reason: why.clone(),
                        started: now(),
                        completed: None,
                        lost_bytes: i64::try_from(lost_bytes).unwrap_or(i64::MAX),
                        planned: false,
                    };
                    decision.primary = to.clone();
                    decision.failover = Some(started);
                    persist(ctx, cluster, namespace, &decision).await?;
                    let note = format!(
                        "promoting {to} in place of {current}: {why}; it lacks {lost_bytes} bytes of the WAL {current} reported"
                    );
                    ctx.event(&reference, true, "FailoverStarted", note).await;
                }
            }
        }
    }
    Ok(decision)
}

/// Writes the status with `decision` recorded, before any order changes: a new operator
/// leader resumes from there.
pub(super) async fn persist(
    ctx: &Context,
    cluster: &PgCluster,
    namespace: &str,
    decision: &Decision,
) -> Result<(), Error> {
    let mut status = cluster.status.clone().unwrap_or_default();
    decision.record(&mut status);
    let clusters: Api<PgCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let name = cluster.name_any();
    apply_status(&clusters, &name, super::cluster::FIELD_MANAGER, &status).await?;
    Ok(())
}

/// Whether the last election found nobody to promote (its reason is in the Ready condition).
fn blocked(status: &PgClusterStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && BLOCKED_REASONS.contains(&c.reason.as_str()))
}

pub(super) fn find<'a>(instances: &'a [PgInstance], name: &str) -> Option<&'a PgInstance> {
    instances.iter().find(|i| i.name_any() == name)
}

fn lease_view(lease: &Lease, default_seconds: i32) -> LeaseView {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseView {
        holder: spec.holder_identity,
        renewed: spec.renew_time.map(|t| t.0),
        duration_seconds: spec.lease_duration_seconds.unwrap_or(default_seconds),
    }
}

/// The primary's WAL position from its Lease's annotations, never lower than what the same
/// primary reported before.
fn high_water(previous: Option<&HighWater>, lease: &Lease, primary: &str) -> Option<HighWater> {
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    let reported = (|| {
        let lsn = annotations.get(LSN_ANNOTATION)?;
        parse_lsn(lsn)?;
        Some(HighWater {
            primary: primary.to_string(),
            timeline: annotations.get(TIMELINE_ANNOTATION)?.parse().ok()?,
            lsn: lsn.clone(),
            system_identifier: annotations.get(SYSTEM_ID_ANNOTATION).cloned(),
            synchronous: annotations
                .get(SYNCHRONOUS_ANNOTATION)
                .map(|s| {
                    s.split(',')
                        .filter(|n| !n.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })();
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    let from_primary = reported.filter(|_| holder.is_none() || holder == Some(primary));
    match (previous, from_primary) {
        (Some(old), Some(new))
            if old.primary == new.primary
                && old.timeline == new.timeline
                && parse_lsn(&old.lsn) > parse_lsn(&new.lsn) =>
        {
            Some(old.clone())
        }
        (_, Some(new)) => Some(new),
        (old, None) => old.cloned(),
    }
}

/// What besides the Lease says the primary is lost: its pod, its node, its postmaster.
async fn signals(
    ctx: &Context,
    namespace: &str,
    primary: &PgInstance,
    api_returned: Option<Timestamp>,
) -> Result<Signals, Error> {
    let status = primary.status.clone().unwrap_or_default();
    // A pod the instance controller replaces on purpose (a new image) is not a loss.
    let replacing = status.reason.as_deref() == Some("Updating");
    let running = status.phase == Some(InstancePhase::Running) && !replacing;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod = pods.get_opt(&primary.name_any()).await?;
    let pod_gone = running
        && pod
            .as_ref()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
    // Killed agents take Postgres with them; a Postgres that crashes under a live agent is
    // restarted in place by the agent instead (faster than a failover; docs/failover.md).
    // A pod re-created in its place has no running container yet either.
    let agent_running = pod
        .as_ref()
        .and_then(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .cloned()
        })
        .and_then(|c| c.state)
        .is_some_and(|s| s.running.is_some());
    let agent_down = running && !agent_running;
    let node = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.node_name.clone());
    let node_lost = match node {
        Some(node) => node_lost(ctx, &node, api_returned).await?,
        None => false,
    };
    Ok(Signals {
        pod_gone,
        agent_down,
        node_lost,
        // Only while Postgres is down: a crash loop that is over (the agent counts crashes
        // for two minutes) is no reason to fail over.
        crash_loop: status.crash_loop && !status.ready,
        replacing,
    })
}

/// Whether the primary's node is lost by its node Lease (see [`failover::node_lost`]).
async fn node_lost(
    ctx: &Context,
    node: &str,
    api_returned: Option<Timestamp>,
) -> Result<bool, Error> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let Some(lease) = leases.get_opt(node).await? else {
        return Ok(false);
    };
    let spec = lease.spec.unwrap_or_default();
    Ok(failover::node_lost(
        spec.renew_time.map(|t| t.0),
        spec.lease_duration_seconds.unwrap_or(40),
        api_returned,
        Timestamp::now(),
    ))
}

/// Every other instance as a candidate, from its agent's report of this moment.
pub(super) async fn candidates(observed: &[PgInstance], lost: &str) -> Vec<Candidate> {
    let reads = observed
        .iter()
        .filter(|i| i.name_any() != lost)
        .map(|i| async move {
            let status = i.status.clone().unwrap_or_default();
            let detail = match &status.endpoint {
                Some(endpoint) => agents::detail(endpoint).await,
                None => None,
            };
            (i.name_any(), status, detail)
        });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .map(|(name, status, detail)| {
            let reachable = detail.as_ref().is_some_and(|d| d.in_recovery);
            let detail = detail.unwrap_or_default();
            Candidate {
                name,
                reachable,
                promises: detail.promises,
                system_identifier: detail.system_identifier.or(status.system_identifier),
                timeline: detail.timeline,
                received_lsn: detail.received_lsn,
                // Pod addresses change when a pod is re-created, so "from this primary" is
                // streamed at all since the agent started, on the lost primary's timeline
                // (which the election checks): the timeline has one writer.
                streamed_from_primary: detail.streamed_from.is_some(),
            }
        })
        .collect()
}
