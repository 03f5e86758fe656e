//! The operator: kube-runtime controllers for PgCluster and PgInstance (and PgBackups of
//! no cluster), run by the replica
//! that holds the leader Lease. Each reconcile observes the API, asks `plan` what should exist
//! and applies it with server-side apply; nothing here decides anything itself.

pub mod agents;
pub(crate) mod apply;
mod backups;
pub mod cluster;
mod context;
mod databases;
mod drains;
mod drills;
mod error;
mod failover;
pub mod http;
pub mod instance;
pub mod leader;
mod lease_watch;
mod orphans;
mod switchover;
mod tls;
mod wakes;

use std::sync::Arc;

pub use context::Context;
pub use error::Error;

/// What `pgha operator` is told.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the leader Lease lives.
    pub lease_namespace: String,
    /// This replica's name in the Lease (its pod name).
    pub identity: String,
}

/// Runs both controllers until SIGTERM / Ctrl-C. The Lease is taken first; losing it ends
/// the process (see [`leader`]). On a graceful stop the Lease is handed back, so the standby
/// takes over at once instead of after the Lease runs out.
pub async fn run(
    client: kube::Client,
    options: Options,
    health: Arc<http::Health>,
) -> Result<(), Error> {
    let lease = Arc::new(leader::Lease::new(
        client.clone(),
        &options.lease_namespace,
        &options.identity,
    ));
    tokio::select! {
        acquired = lease.acquire(&health) => acquired?,
        () = stop_signal() => return Ok(()),
    }
    health.set_leading();
    tracing::info!(identity = %options.identity, "leading");
    let renew = tokio::spawn({
        let lease = lease.clone();
        async move { lease.keep().await }
    });
    let ctx = Arc::new(Context::new(
        client,
        &options.identity,
        health.metrics.clone(),
    ));
    tokio::select! {
        () = cluster::run(ctx.clone()) => {}
        () = instance::run(ctx.clone()) => {}
        () = orphans::run(ctx.clone()) => {}
        () = databases::orphans(ctx) => {}
        lost = renew => {
            // Never act without the Lease: stop at once; the pod restarts and waits its turn.
            tracing::error!(?lost, "lost the leader Lease; exiting");
            std::process::exit(1);
        }
    }
    lease.release().await;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
