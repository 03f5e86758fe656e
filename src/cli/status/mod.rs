//! `pgha status CLUSTER` (`kubectl pgha status`): one screen with the primary, every replica
//! with its lag and replication state, archiving, backups, conditions and recent Events.
//!
//! Everything is read through the API server, so it works from a laptop: the objects, and the
//! primary's agent `/status` through the API server's pod proxy (the primary's view of its
//! standbys at one moment is what says whether a replica streams).

mod screen;

use std::collections::BTreeMap;
use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::kubectl::{Failure, KubeArgs, agent_status, get_cluster, of_cluster};
use crate::api::{PgBackup, PgDatabase, PgInstance};
use screen::{Observed, PrimaryReport};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The PgCluster.
    cluster: String,
    #[command(flatten)]
    kube: KubeArgs,
    /// `text` (coloured on a terminal, unless NO_COLOR is set), `json` or `yaml`.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    Text,
    Json,
    Yaml,
}

pub fn run(args: StatusArgs) -> Result<(), Failure> {
    tokio::runtime::Runtime::new()?.block_on(status(args))
}

async fn status(args: StatusArgs) -> Result<(), Failure> {
    let (client, namespace) = args.kube.connect().await?;
    let name = &args.cluster;
    let cluster = get_cluster(&client, &namespace, name).await?;
    let ours = of_cluster(name);
    let all = ListParams::default();
    let instances = Api::<PgInstance>::namespaced(client.clone(), &namespace);
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let backups = Api::<PgBackup>::namespaced(client.clone(), &namespace);
    let events = Api::<Event>::namespaced(client.clone(), &namespace);
    let databases = Api::<PgDatabase>::namespaced(client.clone(), &namespace);
    let (instances, pods, backups, events, databases) = futures::try_join!(
        instances.list(&ours),
        pods.list(&ours),
        backups.list(&ours),
        events.list(&all),
        databases.list(&all),
    )?;
    let nodes: BTreeMap<String, String> = pods
        .iter()
        .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
        .collect();
    let primary = match cluster
        .status
        .as_ref()
        .and_then(|s| s.current_primary.clone())
    {
        Some(pod) => primary_report(&client, &namespace, &pod).await,
        None => Err("the cluster has no primary".into()),
    };
    let now = Timestamp::now();
    let screen = screen::screen(Observed {
        cluster: &cluster,
        instances: &instances.items,
        nodes: &nodes,
        backups: &backups.items,
        databases: &databases.items,
        events: &events.items,
        primary,
    });
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&screen)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&screen)?),
        Output::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", screen::render(&screen, now, colour));
        }
    }
    Ok(())
}

/// The primary agent's `/status`.
async fn primary_report(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<PrimaryReport, String> {
    let report = agent_status(client, namespace, pod).await?;
    serde_json::from_value(report)
        .map_err(|e| format!("{pod}'s agent said something unexpected: {e}"))
}
