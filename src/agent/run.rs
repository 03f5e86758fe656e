//! The agent's main loop, as `pgha agent` runs it: bring the instance up, then carry out
//! orders one step at a time until SIGTERM, which stops Postgres cleanly. Orders come from a
//! file or from the agent's PgInstance; in the second case what the agent observes goes to
//! that PgInstance's status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::signal::unix::{SignalKind, signal};

use super::backup::Backups;
use super::error::{AgentError, Result};
use super::kube::{ApiOrders, Applied, SecretWatch, StatusWriter};
use super::lease::{LeaseKeeper, Wanted};
use super::managed;
use super::stores::{self, OrderedStore, Prefetcher};
use super::{Agent, Desired};
use crate::plan::agent::{Current, OrderedRole, Orders, Step, next_step};

/// Where orders come from: a file (JSON or YAML) re-read every `poll`.
pub struct OrdersFile {
    pub path: PathBuf,
    pub poll: Duration,
}

impl OrdersFile {
    pub fn read(&self) -> Result<Orders> {
        let path = &self.path;
        let text =
            std::fs::read_to_string(path).map_err(AgentError::io("reading orders from", path))?;
        let orders: Orders = serde_saphyr::from_str(&text)
            .map_err(|e| AgentError::Refused(format!("orders in {}: {e}", path.display())))?;
        desired(&orders)?;
        Ok(orders)
    }
}

/// Where orders come from, and how often they are read.
pub enum OrdersSource {
    File(OrdersFile),
    Api(ApiOrders),
}

impl OrdersSource {
    pub fn read(&self) -> Result<Orders> {
        match self {
            Self::File(file) => file.read(),
            Self::Api(api) => api.read(),
        }
    }

    /// Returns when the orders should be read again: after the file's poll interval, or at
    /// the next change the watch sees (and at least every 200 ms, for the agent's own
    /// periodic work).
    async fn next(&self) {
        match self {
            Self::File(file) => tokio::time::sleep(file.poll).await,
            Self::Api(api) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = api.changed() => {}
                }
            }
        }
    }
}

/// The role orders ask for.
pub fn desired(orders: &Orders) -> Result<Desired> {
    Ok(match orders.upstream()? {
        None => Desired::Primary,
        Some(primary) => Desired::Replica(primary.clone()),
    })
}

/// What the orders ask of the primary Lease: a primary holds it, a fenced instance hands it
/// back (if it holds it), a replica leaves it alone — the operator may be handing it to
/// this very replica before its orders say so.
fn wanted_lease(orders: &Orders) -> Wanted {
    match (&orders.lease, orders.role, orders.fenced) {
        (None, _, _) => Wanted::Nothing,
        (Some(lease), _, true) => Wanted::Release(lease.clone()),
        (Some(lease), OrderedRole::Primary, false) => Wanted::Hold(lease.clone()),
        (Some(_), OrderedRole::Replica, false) => Wanted::Nothing,
    }
}

/// Whether the agent may act as a primary now: it holds the primary Lease, or runs without
/// one (orders from a file).
fn may_lead(keeper: Option<&LeaseKeeper>, orders: &Orders) -> bool {
    orders.lease.is_none() || keeper.is_some_and(LeaseKeeper::holding)
}

/// Runs until SIGTERM or SIGINT; then stops Postgres (smart, then fast) and returns. With a
/// Lease keeper, the agent holds the primary Lease while it is ordered primary.
pub async fn run(
    agent: Arc<Agent>,
    orders: OrdersSource,
    status: Option<StatusWriter>,
    keeper: Option<Arc<LeaseKeeper>>,
    mut secrets: Option<SecretWatch>,
    mut archive: Option<OrderedStore>,
) -> Result<()> {
    let mut term =
        signal(SignalKind::terminate()).map_err(AgentError::io("listening for", "SIGTERM"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(AgentError::io("listening for", "SIGINT"))?;
    let work = async {
        let first = orders.read()?;
        if let Some(keeper) = &keeper {
            keeper.want(wanted_lease(&first));
            tokio::spawn(keeper.clone().run(agent.clone()));
        }
        bring_up(&agent, &orders, keeper.as_deref()).await;
        // A fresh start has every setting in force.
        let mut applied = Applied {
            restarted: first.restart,
            config_generation: None,
            backup: None,
            lease_outage: None,
            managed: None,
        };
        let backups = Arc::new(Backups::default());
        let managed = Arc::new(managed::Keeper::default());
        let mut prefetcher = None;
        let status = status.map(StatusWriter::spawn);
        let mut last_report = std::time::Instant::now();
        let mut last_tidy = std::time::Instant::now();
        loop {
            orders.next().await;
            let mut acted = false;
            match orders.read() {
                Ok(wanted) => {
                    if let Some(keeper) = &keeper {
                        keeper.want(wanted_lease(&wanted));
                    }
                    acted = step(&agent, &wanted, &mut applied.restarted, keeper.as_deref()).await;
                    if agent.config() == wanted.config {
                        applied.config_generation = wanted.generation;
                    }
                    if let Some(request) = &wanted.backup {
                        backups.take(&agent, request);
                    }
                    if let Some(watch) = &mut secrets {
                        watch.follow_roles(wanted.managed.as_ref());
                    }
                    let input = wanted.managed.map(|managed| managed::Input {
                        passwords: secrets
                            .as_ref()
                            .map(|w| w.role_passwords(&managed))
                            .unwrap_or_default(),
                        managed,
                    });
                    managed.tick(&agent, input);
                    if let (Some(store), Some(s3)) = (&mut archive, &wanted.archive)
                        && let Err(e) = store.follow(agent.settings(), s3)
                    {
                        tracing::warn!(error = %e, "the new object store is not written; retrying");
                    }
                    prefetch(&agent, wanted.role, &mut prefetcher).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "orders unreadable; keeping the current state")
                }
            }
            if let Some(watch) = &mut secrets {
                if let (OrdersSource::Api(api), Some(_)) = (&orders, &agent.settings().tls) {
                    watch.follow_tls(api.tls());
                }
                let (superuser, app) = watch.passwords();
                agent.sync_passwords(superuser, app).await;
                agent.sync_tls(watch.tls()).await;
            }
            if last_tidy.elapsed() >= Duration::from_secs(10) {
                last_tidy = std::time::Instant::now();
                if let Err(e) = agent.tidy_slots().await {
                    tracing::warn!(error = %e, "replication slots not tidied; retrying");
                }
            }
            // Status from Postgres once a second, and at once after a step (a failover waits
            // for it); written only when it changed.
            if let Some(writer) = &status
                && (acted || last_report.elapsed() >= Duration::from_secs(1))
            {
                last_report = std::time::Instant::now();
                applied.backup = backups.report();
                applied.managed = managed.report();
                let now = agent.status().await;
                if let Some(keeper) = &keeper {
                    keeper.publish(&now);
                    applied.lease_outage = keeper.last_outage();
                }
                writer.send_replace(Some((now, applied.clone())));
            }
        }
    };
    tokio::select! {
        result = work => result,
        _ = term.recv() => shutdown(&agent, "SIGTERM").await,
        _ = int.recv() => shutdown(&agent, "SIGINT").await,
    }
}

/// A replica that archives keeps a WAL prefetcher beside it: when streaming falls behind what
/// the primary still has, replay from the archive does not wait for each segment. A primary
/// does not fetch WAL, and stops its prefetcher.
async fn prefetch(agent: &Agent, role: OrderedRole, prefetcher: &mut Option<Prefetcher>) {
    let settings = agent.settings();
    match (role, &settings.archive, prefetcher.is_some()) {
        (OrderedRole::Replica, Some(archive), false) => {
            let pg_wal = settings.data_dir.join("pg_wal");
            match stores::prefetcher(settings, &archive.store, &pg_wal) {
                Ok(started) => *prefetcher = Some(started),
                Err(e) => tracing::warn!(error = %e, "no WAL prefetcher; wal-fetch fetches alone"),
            }
        }
        (OrderedRole::Primary, _, true) => {
            if let Some(stopped) = prefetcher.take() {
                stopped.stop().await;
            }
        }
        _ => {}
    }
}

async fn shutdown(agent: &Agent, signal: &str) -> Result<()> {
    tracing::info!(signal, "stopping Postgres");
    agent.stop().await
}

/// Bootstraps and starts the instance (or fences it), retrying with back-off: a replica may
/// be started before its primary accepts connections. A primary starts only once it holds
/// the primary Lease; a data directory that was a primary and is now told to follow is
/// rewound first.
async fn bring_up(agent: &Agent, source: &OrdersSource, keeper: Option<&LeaseKeeper>) {
    // Orders are read afresh on every attempt: a primary waiting for its Lease may be told
    // to follow another instead.
    let attempt = || async {
        let orders = source.read()?;
        if let Some(keeper) = keeper {
            keeper.want(wanted_lease(&orders));
        }
        if orders.fenced {
            // The role this agent starts in comes from the orders, but a data directory a
            // primary left (killed, then restarted fenced while the operator already points
            // it at the new primary) must be rewound before it follows anyone: unfenced as
            // a standby it would replay its own history past the fork and never stream.
            if agent.was_primary().await.unwrap_or(false) {
                agent.set_desired(Desired::Primary);
            }
            return agent.fence().await.map(drop);
        }
        agent.bootstrap(orders.recovery.as_ref()).await?;
        let upstream = orders.upstream()?;
        // A standby's data directory started as primary is a promotion (see `step`).
        let unvouched = match upstream {
            None if may_lead(keeper, &orders) && agent.is_standby_dir() => {
                agent.peers().may_take_over().await.err()
            }
            _ => None,
        };
        match upstream {
            None if !may_lead(keeper, &orders) => Err(AgentError::Refused(
                "waiting for the primary Lease before starting as primary".into(),
            )),
            None if unvouched.is_some() => Err(AgentError::Refused(format!(
                "waiting for a majority of the members before starting as primary: {}",
                unvouched.unwrap_or_default()
            ))),
            Some(primary) if agent.was_primary().await? => {
                agent.rejoin(primary.clone()).await.map(drop)
            }
            _ => {
                agent.set_desired(desired(&orders)?);
                agent.start().await
            }
        }
    };
    let _ = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times(),
        )
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "bringing the instance up failed; retrying"))
        .await;
}

/// Carries out the one step the orders call for; errors are logged and kept in the status,
/// and the next poll tries again. Returns whether it did something.
async fn step(
    agent: &Agent,
    orders: &Orders,
    restarted: &mut i64,
    keeper: Option<&LeaseKeeper>,
) -> bool {
    agent.ordered_config(&orders.config);
    let (desired, config, fenced) = (agent.desired(), agent.config(), agent.is_fenced());
    let rejected = agent.rejected_config();
    let upstream = match &desired {
        Desired::Primary => None,
        Desired::Replica(primary) => Some(primary),
    };
    let current = Current {
        upstream,
        fenced,
        config: &config,
        rejected: rejected.as_ref(),
        restarted: *restarted,
    };
    let step = match next_step(orders, &current) {
        Ok(step) => step,
        Err(e) => {
            tracing::error!(error = %e, "orders refused");
            return false;
        }
    };
    // Becoming a primary needs the Lease; the keeper renews it as soon as the operator has
    // handed it over.
    let leads = matches!(step, Step::Promote)
        || (step == Step::Unfence && orders.role == OrderedRole::Primary);
    if step == Step::Nothing {
        return false;
    }
    if leads && !may_lead(keeper, orders) {
        // The operator hands the Lease over just before the orders change; the keeper's next
        // renewal takes it, and waiting for that here saves a turn of the loop.
        let soon = match keeper {
            Some(keeper) => keeper.holds_within(Duration::from_millis(500)).await,
            None => false,
        };
        if !soon {
            return false;
        }
    }
    // A promotion also needs a majority of the members to vouch for no other primary: one
    // that cannot reach the API may still serve on their promises (`agent::peers`).
    if step == Step::Promote
        && let Err(why) = agent.peers().may_take_over().await
    {
        tracing::warn!(reason = %why, "waiting before promoting");
        return false;
    }
    tracing::info!(?step, instance = %agent.settings().name, "carrying out orders");
    let fencing = step == Step::Fence;
    let result = match step {
        Step::Nothing => Ok(()),
        Step::Fence => agent.fence().await.map(drop),
        Step::Unfence => agent.unfence().await,
        Step::ApplyConfig => agent.apply_config(orders.config.clone()).await.map(drop),
        Step::Restart => {
            let result = agent.restart().await;
            if result.is_ok() {
                *restarted = orders.restart;
            }
            result
        }
        Step::Promote => agent.promote().await.map(drop),
        Step::Follow(primary) => agent.follow(primary).await,
        Step::Rejoin(primary) => agent.rejoin(primary).await.map(drop),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "step failed; retrying at the next poll");
    }
    if let Some(keeper) = keeper.filter(|_| fencing) {
        keeper.fenced(agent).await;
    }
    true
}
