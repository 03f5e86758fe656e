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
use crate::api::instance::PrimaryLease;
use crate::k8s::lease::{LeaseApi, Renewal, Takeover};
use crate::plan::lease::{
    AGENT_RUN_ANNOTATION, LSN_ANNOTATION, SYNCHRONOUS_ANNOTATION, SYSTEM_ID_ANNOTATION,
    TIMELINE_ANNOTATION, holds_for,
};

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
}

struct KeeperState {
    wanted: Wanted,
    /// Until when this agent may act as primary: its last successful renewal's send time
    /// plus the Lease time less the margin.
    held_until: Option<Instant>,
    annotations: BTreeMap<String, String>,
    /// Whether this run has renewed the Lease yet.
    renewed_once: bool,
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
                annotations: BTreeMap::new(),
                renewed_once: false,
            }),
            wake: Notify::new(),
            renewed: Notify::new(),
        })
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
        self.lock().held_until = None;
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

    /// Whether this agent holds the Lease now.
    pub fn holding(&self) -> bool {
        self.lock().held_until.is_some_and(|u| Instant::now() < u)
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
        loop {
            let wanted = self.lock().wanted.clone();
            let pause = match &wanted {
                Wanted::Hold(lease) => self.renew(&agent, lease).await,
                Wanted::Release(lease) => {
                    self.hand_back(&agent, lease).await;
                    renew_every(lease)
                }
                Wanted::Nothing => {
                    self.lock().held_until = None;
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
        let api = LeaseApi::new(self.client.clone(), &self.namespace, &lease.name);
        if !self.lock().renewed_once && self.left_by_another_run(&api, lease).await {
            return renew_every(lease);
        }
        let mut annotations = self.lock().annotations.clone();
        annotations.insert(AGENT_RUN_ANNOTATION.to_string(), self.run.clone());
        let renewal = Renewal {
            duration_seconds: lease.duration_seconds,
            annotations: Some(annotations),
        };
        let sent = Instant::now();
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
                let mut state = self.lock();
                state.held_until = Some(sent + holds_for(lease));
                state.renewed_once = true;
                drop(state);
                self.renewed.notify_waiters();
            }
            Ok(Ok(false)) => {
                self.lock().held_until = None;
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
        let api = LeaseApi::new(self.client.clone(), &self.namespace, &lease.name);
        match api.release(&self.identity).await {
            Ok(true) => tracing::warn!(lease = %lease.name, "fenced; primary Lease handed back"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "handing the primary Lease back failed"),
        }
    }
}

fn renew_every(lease: &PrimaryLease) -> Duration {
    Duration::from_millis(lease.renew_millis.max(50) as u64)
}
