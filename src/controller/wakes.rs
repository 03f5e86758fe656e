//! Which changes wake a reconcile: the controllers watch their objects through these
//! predicates, so that what only moves WAL positions costs no reconcile (and no API requests).

use kube::ResourceExt;

use crate::api::{PgCluster, PgInstance};

/// What of a PgCluster wakes its reconcile: its spec, labels and annotations (a switchover
/// request) and its status — but not the WAL positions the status copies from the
/// instances and the primary's Lease. Those move every second under writes, and each
/// reconcile that writes them would otherwise wake the next.
pub fn cluster(cluster: &PgCluster) -> Option<u64> {
    let mut status = serde_json::to_value(&cluster.status).unwrap_or_default();
    let positions = [
        "highWater",
        "lastArchivedWal",
        "lastArchivedAt",
        "walPendingArchive",
    ];
    strip(&mut status, &positions);
    if let Some(instances) = status.get_mut("instances").and_then(|i| i.as_array_mut()) {
        for instance in instances {
            strip(instance, &["lsn", "lagBytes"]);
        }
    }
    let wakes = (cluster.labels(), cluster.annotations());
    Some(fingerprint(cluster.metadata.generation, &status, wakes))
}

/// What of a PgInstance wakes its cluster's reconcile and its own: its orders (generation),
/// its deletion and its status — but not the WAL positions its agent reports. Those move
/// under every write; the decisions that need them fresh ask the agents directly, and a
/// reconcile for them alone re-applied every child of an idle cluster and read the
/// instance's pods (most of what an idle cluster cost the API server, BENCHMARKS.md
/// "API load").
pub fn instance(instance: &PgInstance) -> Option<u64> {
    let mut status = serde_json::to_value(&instance.status).unwrap_or_default();
    strip(&mut status, &["currentLsn", "receivedLsn", "lagBytes"]);
    let deleted = instance.metadata.deletion_timestamp.is_some();
    Some(fingerprint(instance.metadata.generation, &status, deleted))
}

fn strip(value: &mut serde_json::Value, keys: &[&str]) {
    if let Some(map) = value.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
}

fn fingerprint(
    generation: Option<i64>,
    status: &serde_json::Value,
    more: impl std::hash::Hash,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    generation.hash(&mut hasher);
    more.hash(&mut hasher);
    status.to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance::PgInstanceStatus;

    #[test]
    fn wal_positions_alone_wake_nothing_and_the_rest_does() {
        let at = |lsn: &str, ready: bool| {
            let mut i: PgInstance = serde_json::from_value(serde_json::json!({
                "apiVersion": "pgha.dev/v1", "kind": "PgInstance",
                "metadata": {"name": "orders-2", "generation": 3},
                "spec": {"cluster": "orders", "ordinal": 2, "postgresVersion": 15, "image": "pgha/postgres:15",
                         "storage": {"size": "1Gi"}}
            }))
            .unwrap();
            i.status = Some(PgInstanceStatus {
                ready,
                current_lsn: Some(lsn.into()),
                lag_bytes: Some(lsn.len() as i64),
                ..Default::default()
            });
            i
        };
        let idle = instance(&at("0/3000000", true));
        assert_eq!(instance(&at("0/3000100", true)), idle);
        assert_ne!(instance(&at("0/3000000", false)), idle);
        let mut ordered = at("0/3000000", true);
        ordered.metadata.generation = Some(4);
        assert_ne!(instance(&ordered), idle);
    }
}
