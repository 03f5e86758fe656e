//! Wakes a cluster's reconcile when its primary Lease runs out or is handed back. Nothing
//! else changes in the API when a primary dies with its agent, so without this the failover
//! would wait for the next periodic reconcile.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use crate::api::PgCluster;
use crate::plan::lease::expired;
use crate::plan::names;

/// How often the watched Leases are checked against the clock.
const TICK: Duration = Duration::from_millis(100);

/// The clusters whose primary Lease ran out or was handed back, each once per renewal.
pub fn expiries(client: Client) -> impl Stream<Item = ObjectRef<PgCluster>> + Send + 'static {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(watch(client, tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

async fn watch(client: Client, tx: mpsc::UnboundedSender<ObjectRef<PgCluster>>) {
    let api: Api<Lease> = Api::all(client);
    let selector = format!(
        "{}=pgha,{}=lease",
        names::LABEL_MANAGED_BY,
        names::LABEL_COMPONENT
    );
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels(&selector)),
    )
    .backoff(crate::k8s::watch::backoff())
    .applied_objects()
    .for_each({
        // A Lease handed back (a fence completed) wakes its cluster at once, not at the tick.
        let tx = tx.clone();
        move |lease| {
            if let Ok(lease) = lease
                && lease
                    .spec
                    .as_ref()
                    .is_none_or(|s| s.holder_identity.is_none())
                && let Some(cluster) = cluster_of(&lease)
            {
                let _ = tx.send(cluster);
            }
            async {}
        }
    });
    tokio::spawn(events);
    // The renewal each cluster was last woken for.
    let mut woken: HashMap<(Option<String>, String), Option<Timestamp>> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let now = Timestamp::now();
        for lease in store.state() {
            let Some(cluster) = cluster_of(&lease) else {
                continue;
            };
            let spec = lease.spec.clone().unwrap_or_default();
            let renewed = spec.renew_time.map(|t| t.0);
            let due = spec.holder_identity.is_none()
                || expired(renewed, spec.lease_duration_seconds.unwrap_or(0), now);
            let key = (cluster.namespace.clone(), cluster.name.clone());
            if due && woken.get(&key) != Some(&renewed) {
                woken.insert(key, renewed);
                if tx.send(cluster).is_err() {
                    return;
                }
            }
        }
    }
}

/// The cluster a primary Lease belongs to, from its label.
fn cluster_of(lease: &Lease) -> Option<ObjectRef<PgCluster>> {
    let cluster = lease.labels().get(names::LABEL_CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&lease.namespace().unwrap_or_default()))
}
