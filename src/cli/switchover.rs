//! `pgha switchover` (also `kubectl pgha switchover`): asks the operator for a planned
//! switchover by annotating the PgCluster, then waits for the outcome in its status.

use std::time::Duration;

use clap::Args;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::kubectl::{KubeArgs, get_cluster};

use crate::api::PgCluster;
use crate::api::cluster::SWITCHOVER_ANNOTATION;

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// The PgCluster.
    cluster: String,
    /// The instance to move the primary to; the most caught-up ready replica when not given.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    kube: KubeArgs,
    /// How long to wait for the switchover to finish.
    #[arg(long, default_value_t = 60)]
    wait_seconds: u64,
}

pub fn run(args: SwitchoverArgs) -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Runtime::new()?.block_on(switch_over(args))
}

async fn switch_over(args: SwitchoverArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (client, namespace) = args.kube.connect().await?;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), &namespace);
    let before = get_cluster(&client, &namespace, &args.cluster)
        .await?
        .status
        .unwrap_or_default();
    // This request's outcome is the first record other than the one there was before.
    let earlier = before.last_switchover.map(|s| s.started);
    let to = args.to.clone().unwrap_or_default();
    let patch = json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: to}}});
    clusters
        .patch(
            &args.cluster,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let from = before.current_primary.unwrap_or_default();
    println!(
        "switchover of {namespace}/{} from {from} asked for",
        args.cluster
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = clusters
            .get(&args.cluster)
            .await?
            .status
            .unwrap_or_default();
        let Some(outcome) = status
            .last_switchover
            .filter(|s| Some(&s.started) != earlier.as_ref())
        else {
            continue;
        };
        if let Some(why) = outcome.refused {
            return Err(format!("switchover refused: {why}").into());
        }
        if outcome.completed.is_some() {
            println!("{} is the primary now (was {})", outcome.to, outcome.from);
            return Ok(());
        }
    }
    Err(format!(
        "no outcome within {} s; see `kubectl describe pgc {}` for its status and Events",
        args.wait_seconds, args.cluster
    )
    .into())
}
