//! The operator: kube-runtime controllers for PgCluster and PgInstance, run by the replica
//! that holds the leader Lease. Each reconcile observes the API, asks `plan` what should exist
//! and applies it with server-side apply; nothing here decides anything itself.

mod apply;
pub mod cluster;
mod context;
mod error;
pub mod http;
pub mod instance;
pub mod leader;

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
/// the process (see [`leader`]).
pub async fn run(
    client: kube::Client,
    options: Options,
    health: Arc<http::Health>,
) -> Result<(), Error> {
    let lease = leader::Lease::new(client.clone(), &options.lease_namespace, &options.identity);
    lease.acquire(&health).await?;
    health.set_leading();
    tracing::info!(identity = %options.identity, "leading");
    let renew = tokio::spawn(lease.keep());
    let ctx = Arc::new(Context::new(
        client,
        &options.identity,
        health.metrics.clone(),
    ));
    tokio::select! {
        () = cluster::run(ctx.clone()) => {}
        () = instance::run(ctx) => {}
        lost = renew => {
            // Never act without the Lease: stop at once; the pod restarts and waits its turn.
            tracing::error!(?lost, "lost the leader Lease; exiting");
            std::process::exit(1);
        }
    }
    Ok(())
}
