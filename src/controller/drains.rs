//! Node drains: a cordoned node (what `kubectl drain` does first) wakes every cluster, and a
//! cluster whose primary runs there moves it away by switchover, so that the eviction the
//! primary's PodDisruptionBudget refuses goes through once the pod is a replica's. A drain
//! never waits on our budget for longer than a switchover.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::Error;

/// One item each time a node becomes unschedulable.
pub fn cordons(client: Client) -> impl Stream<Item = ()> + Send + 'static {
    let mut cordoned: HashMap<String, bool> = HashMap::new();
    watcher(Api::<Node>::all(client), watcher::Config::default())
        .backoff(crate::k8s::watch::backoff())
        .applied_objects()
        .filter_map(move |node| {
            let now = node.as_ref().ok().map(|n| {
                let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                let before = cordoned.insert(n.name_any(), unschedulable);
                unschedulable && before != Some(true)
            });
            futures::future::ready((now == Some(true)).then_some(()))
        })
}

/// The cordoned node the pod `name` runs on, if it does.
pub async fn cordoned_node(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(node) = pods.get_opt(name).await?.and_then(|p| p.spec?.node_name) else {
        return Ok(None);
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let unschedulable = nodes
        .get_opt(&node)
        .await?
        .and_then(|n| n.spec?.unschedulable)
        == Some(true);
    Ok(unschedulable.then_some(node))
}
