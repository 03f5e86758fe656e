//! `pgha operator`: the controllers, leader-elected, with a health and metrics port.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::controller::{self, Options, http};

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "pgha-system")]
    leader_election_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "pgha-operator")]
    identity: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PGHA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
}

pub fn run(args: OperatorArgs) -> Result<(), Box<dyn std::error::Error>> {
    super::init_tracing();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let health = Arc::new(http::Health::default());
        let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
        tokio::spawn(http::serve(health.clone(), listener));
        let options = Options {
            lease_namespace: args.leader_election_namespace,
            identity: args.identity,
        };
        controller::run(client, options, health).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
