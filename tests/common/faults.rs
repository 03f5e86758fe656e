//! The faults the failover scenario and benchmark put on a primary pod, and how each is undone.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use pgha_e2e::{Cluster, Error, Fault, PodRef};

/// A fault on the primary pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    DeleteNow,
    Kill,
    Freeze,
    NodeStop,
    Partition,
}

fn pod(namespace: &str, name: &str) -> PodRef {
    PodRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Injects the fault on pod `primary`; returns its node when its node agent was stopped.
pub async fn inject(
    cluster: &Cluster,
    client: &Client,
    kind: Kind,
    (namespace, primary): (&str, &str),
) -> Option<String> {
    let target = pod(namespace, primary);
    match kind {
        Kind::DeleteNow => cluster.delete_now(&target).await.unwrap(),
        Kind::Kill => drop(cluster.fault(&target, None, Fault::Kill).unwrap()),
        Kind::Freeze => drop(cluster.fault(&target, None, Fault::Freeze).unwrap()),
        Kind::Partition => cluster.partition(&target).unwrap(),
        Kind::NodeStop => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let spec = pods.get(primary).await.unwrap().spec.unwrap();
            let node = spec.node_name.unwrap();
            cluster.set_node_running(&node, false).unwrap();
            return Some(node);
        }
    }
    None
}

/// Ends a fault that lasts (freeze, partition, stopped node agent); `node` is what
/// [`inject`] returned.
pub fn undo(
    cluster: &Cluster,
    kind: Kind,
    (namespace, primary): (&str, &str),
    node: Option<&str>,
) -> Result<(), Error> {
    match kind {
        Kind::Freeze => cluster
            .fault(&pod(namespace, primary), None, Fault::Thaw)
            .map(drop),
        Kind::Partition => cluster.heal(&pod(namespace, primary)),
        Kind::NodeStop => cluster.set_node_running(node.unwrap_or_default(), true),
        Kind::DeleteNow | Kind::Kill => Ok(()),
    }
}
