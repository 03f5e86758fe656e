//! The primary Lease, held by the agent of the primary (shared/DESIGN.md §4 rule 1). It renews
//! the Lease every `renewMillis`; when its last successful renewal was *sent* longer ago than
//! the Lease time less the margin (on the monotonic clock, which also runs while the process
//! is frozen), it kills Postgres before anyone else may take the Lease. The agent never takes
//! the Lease from someone else: the operator assigns it, the agent only renews it, and a
//! renewal refused because another holds it fences at once. Postgres starts or is promoted
//! as a primary only while the Lease is held.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Agent;
use super::status::Status;
use crate::api::instance::{LeaseOutage, PrimaryLease};
use crate::k8s::lease::{LeaseApi, Renewal, Takeover};
use crate::plan::lease::{
    AGENT_RUN_ANNOTATION, API_RETURNED_ANNOTATION, LSN_ANNOTATION, SYNCHRONOUS_ANNOTATION,
    SYSTEM_ID_ANNOTATION, TIMELINE_ANNOTATION, holds_for, outage_ended,
};
use crate::plan::vouch;

/// What the orders ask of the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Hold it: ordered primary, not fenced.
    Hold(PrimaryLease),
    /// Hand it back once fenced: ordered to fence.
    Release(PrimaryLease),
    /// Leave it alone: a replica, or orders from a file.
    Nothing,
}

pub struct LeaseKeeper {
    client: Client,
    namespace: String,
    identity: String,
    /// This run of the agent, marked on every renewal.
    run: String,
    state: Mutex<KeeperState>,
    /// Wakes the keeper's loop: the orders or the instance changed.
    wake: Notify,
    /// Signalled after every successful renewal.
    renewed: Notify,
    /// The primary Lease's writer, kept between renewals so that each is one write, not a
    /// read and a write.
    api: Mutex<Option<Arc<LeaseApi>>>,
}

struct KeeperState {
    wanted: Wanted,
    /// Until when this agent may act as primary on its Lease: its last successful renewal's
    /// send time plus the Lease time less the margin.
    held_until: Option<Instant>,
    /// Until when it may on the promises of a majority of the members (`agent::peers`),
    /// while the Lease cannot be renewed.
    vouched_until: Option<Instant>,
    /// When the last successful renewal was sent.
    renewed_at: Option<Instant>,
    /// The last stretch the Lease went unrenewed for longer than its time while this agent
    /// held on: when it ended, and how long it was.
    last_outage: Option<LeaseOutage>,
    /// The same stretch on the monotonic clock: when it began and ended.
    outage_span: Option<(std::time::Instant, std::time::Instant)>,
    annotations: BTreeMap<String, String>,
    /// Whether this run has renewed the Lease yet.
    renewed_once: bool,
}

impl KeeperState {
    /// No more holding, on the Lease or on vouches.
    fn let_go(&mut self) {
        self.held_until = None;
        self.vouched_until = None;
    }
}

impl LeaseKeeper {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Arc<Self> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Arc::new(Self {
            client,
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            run: format!("{}-{}", std::process::id(), started.as_nanos()),
            state: Mutex::new(KeeperState {
                wanted: Wanted::Nothing,
                held_until: None,
                vouched_until: None,
                renewed_at: None,
                last_outage: None,
                outage_span: None,
                annotations: BTreeMap::new(),
                renewed_once: false,
            }),
            wake: Notify::new(),
            renewed: Notify::new(),
            api: Mutex::new(None),
        })
    }

    /// The writer of the Lease `name` (a new one when the name changed).
    fn api(&self, name: &str) -> Arc<LeaseApi> {
        let mut api = self.api.lock().unwrap();
        match api.as_ref().filter(|a| a.name() == name) {
            Some(kept) => kept.clone(),
            None => {
                let made = Arc::new(LeaseApi::new(self.client.clone(), &self.namespace, name));
                *api = Some(made.clone());
                made
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the orders ask of the Lease; a change is acted on at once.
    pub fn want(&self, wanted: Wanted) {
        let changed = {
            let mut state = self.lock();
            let changed = state.wanted != wanted;
            state.wanted = wanted;
            changed
        };
        if changed {
            self.wake.notify_one();
        }
    }

    /// Right after a fence: hands the Lease back now if the orders ask for it, before the
    /// agent reports the fence (the operator acts on whichever it sees first).
    pub async fn fenced(&self, agent: &Agent) {
        let wanted = self.lock().wanted.clone();
        if let Wanted::Release(lease) = wanted {
            self.hand_back(agent, &lease).await;
        }
    }

    async fn hand_back(&self, agent: &Agent, lease: &PrimaryLease) {
        self.lock().let_go();
        // Only once no Postgres process is left: the fence is complete.
        if agent.is_fenced() && agent.postmaster_pid().is_none() {
            self.release(lease).await;
        }
    }

    /// Waits up to `limit` for this agent to hold the Lease: the operator has just handed it
    /// over, and the keeper's first renewal takes it.
    pub async fn holds_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let renewed = self.renewed.notified();
            if self.holding() {
                return true;
            }
            if tokio::time::timeout_at(deadline, renewed).await.is_err() {
                return self.holding();
            }
        }
    }

    /// Whether this agent may act as primary now: on its Lease, or on a majority's vouches.
    pub fn holding(&self) -> bool {
        let state = self.lock();
        let now = Instant::now();
        [state.held_until, state.vouched_until]
            .into_iter()
            .flatten()
            .any(|until| now < until)
    }

    /// The last time the Lease went unrenewed past its time while this agent held on.
    pub fn last_outage(&self) -> Option<LeaseOutage> {
        self.lock().last_outage.clone()
    }

    /// The primary's WAL position for the next renewal.
    pub fn publish(&self, status: &Status) {
        let Some(server) = status.server.as_ref().filter(|s| !s.in_recovery) else {
            return;
        };
        let mut annotations = BTreeMap::from([(
            SYSTEM_ID_ANNOTATION.to_string(),
            server.system_identifier.clone(),
        )]);
        if let Some(lsn) = &server.current_lsn {
            annotations.insert(LSN_ANNOTATION.to_string(), lsn.clone());
        }
        if let Some(timeline) = server.timeline {
            annotations.insert(TIMELINE_ANNOTATION.to_string(), timeline.to_string());
        }
        let synchronous: Vec<&str> = server
            .standbys
            .iter()
            .filter(|s| matches!(s.sync_state.as_deref(), Some("sync" | "quorum")))
            .map(|s| s.name.as_str())
            .collect();
        annotations.insert(SYNCHRONOUS_ANNOTATION.to_string(), synchronous.join(","));
        self.lock().annotations = annotations;
    }

    /// Runs for the agent's life: renews while told to hold, fences when the hold runs out,
    /// hands the Lease back once fenced when told to.
    pub async fn run(self: Arc<Self>, agent: Arc<Agent>) {
        tokio::spawn(self.clone().vouching(agent.clone()));
        loop {
            let wanted = self.lock().wanted.clone();
            let pause = match &wanted {
                Wanted::Hold(lease) => self.renew(&agent, lease).await,
                Wanted::Release(lease) => {
                    self.hand_back(&agent, lease).await;
                    renew_every(lease)
                }
                Wanted::Nothing => {
                    self.lock().let_go();
                    Duration::from_millis(100)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One renewal; returns how long to wait for the next.
    async fn renew(&self, agent: &Agent, lease: &PrimaryLease) -> Duration {
        let api = self.api(&lease.name);
        if !self.lock().renewed_once && self.left_by_another_run(&api, lease).await {
            return renew_every(lease);
        }
        let sent = Instant::now();
        let lease_time = Duration::from_secs(lease.duration_seconds.max(1) as u64);
        let mut annotations = {
            let state = self.lock();
            let late = state.renewed_at.is_some_and(|at| sent - at > lease_time);
            let mut annotations = state.annotations.clone();
            // A renewal sent after a lapse tells the operator the API was away from here too.
            let returned = if late {
                Some(k8s_openapi::jiff::Timestamp::now())
            } else {
                state.last_outage.as_ref().map(|o| o.ended.0)
            };
            if let Some(at) = returned {
                annotations.insert(API_RETURNED_ANNOTATION.to_string(), at.to_string());
            }
            annotations
        };
        annotations.insert(AGENT_RUN_ANNOTATION.to_string(), self.run.clone());
        let renewal = Renewal {
            duration_seconds: lease.duration_seconds,
            annotations: Some(annotations),
        };
        // While holding, waiting for an answer past the hold is no use: the fence comes
        // first. Once the hold ran out, a renewal may take its time.
        let patience = self
            .lock()
            .held_until
            .filter(|until| *until > sent)
            .map(|until| until - sent)
            .unwrap_or(Duration::from_secs(lease.duration_seconds.max(1) as u64));
        let outcome = tokio::time::timeout(
            patience,
            api.renew(&self.identity, &renewal, Takeover::Never),
        )
        .await;
        match outcome {
            Ok(Ok(true)) => {
                // Unrenewed for longer than the Lease time until this answer: an outage
                // ends now. Measured to the answer, not the send: a renewal sent into a
                // frozen API server waits there and lands when it returns.
                let answered = Instant::now();
                let mut state = self.lock();
                let span = state.renewed_at.and_then(|renewed_at| {
                    outage_ended(
                        state.outage_span,
                        renewed_at.into_std(),
                        answered.into_std(),
                        lease_time,
                    )
                });
                if let Some((began, ended)) = span {
                    let unrenewed = ended - began;
                    tracing::warn!(lease = %lease.name, ?unrenewed, "the primary Lease is renewed again; the members' vouches kept this primary serving meanwhile");
                    state.outage_span = span;
                    state.last_outage = Some(LeaseOutage {
                        ended: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ),
                        seconds: unrenewed.as_secs_f64(),
                    });
                }
                state.held_until = Some(sent + holds_for(lease));
                state.renewed_at = Some(sent);
                state.renewed_once = true;
                drop(state);
                self.renewed.notify_waiters();
            }
            Ok(Ok(false)) => {
                self.lock().let_go();
                if agent.runs_as_primary() {
                    tracing::error!(lease = %lease.name, "the primary Lease is held by another; fencing");
                    agent.fence_now().await;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the primary Lease failed"),
            Err(_) => tracing::warn!("renewing the primary Lease timed out"),
        }
        if !self.holding() && agent.runs_as_primary() {
            tracing::error!(lease = %lease.name, "the primary Lease was not renewed in time; fencing");
            agent.fence_now().await;
        }
        renew_every(lease)
    }

    /// Runs beside the renewals: while the Lease has gone unrenewed for one and a half renew
    /// intervals, asks the members to vouch every interval, and fences when neither the Lease
    /// nor a majority's promises hold. A cluster of one needs nobody's promise, so it never
    /// stops over the API. Only after this run renewed once: a restarted primary is judged
    /// by the operator first.
    async fn vouching(self: Arc<Self>, agent: Arc<Agent>) {
        loop {
            let (wanted, due) = {
                let state = self.lock();
                let due = |lease: &PrimaryLease| {
                    state.renewed_once
                        && state
                            .renewed_at
                            .is_none_or(|at| at.elapsed() >= renew_every(lease) * 3 / 2)
                };
                let due = matches!(&state.wanted, Wanted::Hold(lease) if due(lease));
                (state.wanted.clone(), due)
            };
            let Wanted::Hold(lease) = wanted else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let every = renew_every(&lease);
            if due && let Some(round) = agent.peers().round(every).await {
                let until =
                    vouch::held_until(round.sent, round.granted, round.members, holds_for(&lease))
                        .map(Instant::from_std);
                {
                    let mut state = self.lock();
                    if state.wanted == Wanted::Hold(lease.clone()) {
                        state.vouched_until = state.vouched_until.max(until);
                    }
                }
                if until.is_none() {
                    tracing::warn!(
                        granted = round.granted,
                        members = round.members,
                        "the primary Lease is not renewed and too few members vouch for this primary"
                    );
                }
                if !self.holding() && agent.runs_as_primary() {
                    tracing::error!(lease = %lease.name, "neither the primary Lease nor a majority of the members hold this primary; fencing");
                    agent.fence_now().await;
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Before its first renewal: whether the Lease still carries an earlier run's mark. Then
    /// that run died as primary; this one hands the Lease back, and the operator either
    /// promotes a replica or gives the Lease back without the mark.
    async fn left_by_another_run(&self, api: &LeaseApi, lease: &PrimaryLease) -> bool {
        let Ok(Some(current)) = api.get().await else {
            return false;
        };
        let mine = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        let marked = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(AGENT_RUN_ANNOTATION))
            .is_some_and(|run| *run != self.run);
        if mine && marked {
            tracing::warn!(lease = %lease.name, "the primary Lease was held by an earlier run of this agent; handing it back");
            self.release(lease).await;
        }
        mine && marked
    }

    async fn release(&self, lease: &PrimaryLease) {
        match self.api(&lease.name).release(&self.identity).await {
            Ok(true) => tracing::warn!(lease = %lease.name, "fenced; primary Lease handed back"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "handing the primary Lease back failed"),
        }
    }
}

fn renew_every(lease: &PrimaryLease) -> Duration {
    Duration::from_millis(lease.renew_millis.max(50) as u64)
}
