//! Unplanned failover on the local cluster (issue "Unplanned failover with fencing"): the
//! primary is deleted, killed, frozen, cut off from its node agent and partitioned; each time
//! a replica takes over behind `-rw`, no acknowledged row is lost, exactly one pod accepts
//! writes, and the old primary rejoins as a replica on the new timeline.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use pgha::api::instance::InstanceRole;
use pgha::api::{PgCluster, PgInstance};
use pgha_e2e::{Cluster, Fault, PodRef};

#[path = "common/eventually.rs"]
mod eventually;
#[path = "common/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use eventually::eventually as wait_for;
use faults::{Kind, inject, undo};
use install::{create, healthy, installed, leader, pgha_switchover, ready_because};
use writer::{Target, Writer, connect, missing, pgbench, writable};

const NS: &str = "shop";

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: NS.into(),
        name: name.into(),
    }
}

async fn primary_of(clusters: &Api<PgCluster>, name: &str) -> String {
    let status = clusters.get(name).await.unwrap().status.unwrap();
    status.current_primary.unwrap()
}

/// One fault on the primary of `orders`: a new primary takes over, nothing acknowledged is
/// lost, one pod is writable, the old primary follows on the new timeline. Returns the write
/// outage.
async fn fail_over(
    cluster: &Cluster,
    client: &Client,
    writer: &Writer,
    target: &Target,
    kind: Kind,
) -> Duration {
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let old = primary_of(&clusters, "orders").await;
    let before = writer.acked().len();
    let at = Instant::now();
    let node = inject(cluster, client, kind, (NS, &old)).await;
    let new = wait_for(Duration::from_secs(60), "a new primary", || async {
        let status = clusters.get("orders").await.ok()?.status?;
        let now = status.current_primary?;
        (now != old && status.failover.is_none()).then_some(now)
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "a write after the fault",
        || async {
            writer
                .first_ack_after(at + Duration::from_millis(10))
                .filter(|_| {
                    // The writer may still be writing to the old primary (node stop, partition) until
                    // it fences; what counts is a write on the new one.
                    writer.acked().len() > before
                })
        },
    )
    .await;
    undo(cluster, kind, (NS, &old), node.as_deref()).unwrap();
    settled(
        cluster,
        client,
        writer,
        target,
        &format!("{kind:?}"),
        (&old, &new),
        at,
    )
    .await
}

/// After a change of primary from `old` to `new` that began `at`: the old primary follows the
/// new one on its timeline, exactly the new one accepts writes, and every acknowledged row is
/// on it. Returns the write outage.
async fn settled(
    cluster: &Cluster,
    client: &Client,
    writer: &Writer,
    target: &Target,
    what: &str,
    (old, new): (&str, &str),
    at: Instant,
) -> Duration {
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), NS);
    let rejoined = || async {
        let list = instances.list(&ListParams::default()).await.ok()?;
        let status = |name: &str| {
            list.items
                .iter()
                .find(|i| i.name_any() == name)
                .and_then(|i| i.status.clone())
        };
        let (o, n) = (status(old)?, status(new)?);
        (o.ready
            && o.role == Some(InstanceRole::Replica)
            && n.role == Some(InstanceRole::Primary)
            && o.timeline.is_some()
            && o.timeline == n.timeline)
            .then_some(n.timeline)
    };
    // A killed pod's restarts back off (up to 20 s), then it rewinds: give it time, and say
    // what it was doing if that was not enough.
    let deadline = Instant::now() + Duration::from_secs(150);
    let timeline = loop {
        if let Some(timeline) = rejoined().await {
            break timeline;
        }
        if Instant::now() > deadline {
            let statuses: Vec<_> = instances
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|i| (i.name_any(), i.spec.role, i.spec.fenced, i.status))
                .collect();
            let log = cluster.logs(&pod(old), "postgres");
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{what}: {old} did not rejoin {new}: {statuses:#?}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let the writer go on a little on the new primary, then check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage = writer.longest_gap(at, Instant::now());
    let writable = wait_for(Duration::from_secs(10), "one writable pod", || async {
        let w = writable(&instances, "orders", target).await;
        (w.len() == 1).then_some(w)
    })
    .await;
    assert_eq!(
        writable,
        [new],
        "{what}: exactly the new primary accepts writes"
    );
    let endpoint = instances
        .get(new)
        .await
        .unwrap()
        .status
        .unwrap()
        .endpoint
        .unwrap();
    let on_new = connect(target, &endpoint.host, endpoint.port)
        .await
        .unwrap();
    let lost = missing(&on_new, &writer.acked()).await;
    assert!(lost.is_empty(), "{what}: acknowledged rows lost: {lost:?}");
    println!(
        "{what}: {old} → {new} (timeline {timeline:?}), write outage {outage:.2?}, {} rows acknowledged so far",
        writer.acked().len()
    );
    outage
}

/// A planned switchover (to `to`, or to whom the operator picks): the same checks as a
/// failover. Returns the write gap.
async fn switch_over(
    cluster: &Cluster,
    client: &Client,
    writer: &Writer,
    target: &Target,
    to: Option<&str>,
) -> Duration {
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let old = primary_of(&clusters, "orders").await;
    let at = Instant::now();
    let said = pgha_switchover(cluster, NS, "orders", to).await.unwrap();
    let new = primary_of(&clusters, "orders").await;
    assert_ne!(new, old, "{said}");
    if let Some(to) = to {
        assert_eq!(new, to);
    }
    settled(
        cluster,
        client,
        writer,
        target,
        "Switchover",
        (&old, &new),
        at,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_on_the_primary_fails_over_without_losing_an_acknowledged_row() {
    let (cluster, client) = installed(9).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 3\n  storage: {size: 1Gi}\n  replication: {synchronous: {mode: quorum, number: 1}}\n",
    )
    .await;
    wait_for(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 3)
    })
    .await;
    // One instance per node, so that a lost node takes one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut nodes = std::collections::BTreeSet::new();
    for name in ["orders-1", "orders-2", "orders-3"] {
        nodes.insert(
            pods.get(name)
                .await
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .unwrap(),
        );
    }
    assert_eq!(nodes.len(), 3, "instances share nodes: {nodes:?}");
    let target = Target::rw(&cluster, &client, NS, "orders", "app").await;
    let writer = Writer::start(target.clone(), Duration::from_millis(50)).await;
    // pgbench alongside, through -rw, so each failover happens under load.
    let load = pgbench(&target).await;
    let mut outages = Vec::new();
    for kind in [
        Kind::DeleteNow,
        Kind::Kill,
        Kind::Freeze,
        Kind::NodeStop,
        Kind::Partition,
    ] {
        outages.push(fail_over(&cluster, &client, &writer, &target, kind).await);
    }
    // Twenty failovers in a row in all.
    for _ in outages.len()..20 {
        outages.push(fail_over(&cluster, &client, &writer, &target, Kind::Kill).await);
    }
    outages.sort();
    println!(
        "20 failovers: write outage median {:.2?}, max {:.2?}; {} acknowledged rows, none lost",
        outages[outages.len() / 2],
        outages[outages.len() - 1],
        writer.acked().len()
    );

    // Ten planned switchovers, every other one to a named replica.
    let mut gaps = Vec::new();
    for round in 0..10 {
        let to = if round % 2 == 0 {
            None
        } else {
            let primary = primary_of(&clusters, "orders").await;
            let ordinal = primary
                .trim_start_matches("orders-")
                .parse::<i32>()
                .unwrap();
            Some(format!("orders-{}", ordinal % 3 + 1))
        };
        gaps.push(switch_over(&cluster, &client, &writer, &target, to.as_deref()).await);
    }
    gaps.sort();
    println!(
        "10 switchovers: write gap median {:.2?}, max {:.2?}",
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
    // To a frozen replica: refused with the reason, and nothing changes.
    let primary = primary_of(&clusters, "orders").await;
    let frozen = ["orders-1", "orders-2", "orders-3"]
        .into_iter()
        .find(|n| *n != primary)
        .unwrap();
    cluster.fault(&pod(frozen), None, Fault::Freeze).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = pgha_switchover(&cluster, NS, "orders", Some(frozen))
        .await
        .unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert!(refused.contains(frozen), "{refused}");
    assert_eq!(primary_of(&clusters, "orders").await, primary);
    cluster.fault(&pod(frozen), None, Fault::Thaw).unwrap();
    drop(load);
    let last = clusters.get("orders").await.unwrap().status.unwrap();
    let record = last.last_failover.unwrap();
    assert!(record.completed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_candidate_means_no_promotion_and_a_new_leader_finishes_a_failover() {
    let (cluster, client) = installed(10).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 3\n  storage: {size: 1Gi}\n",
    )
    .await;
    wait_for(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 3)
    })
    .await;
    // Each instance's identity may write its own status and renew the primary Lease, and
    // nothing of the others'.
    let can = |verb: &str, what: &str, sub: Option<&str>| {
        let mut args = vec![
            "auth",
            "can-i",
            "--as=system:serviceaccount:shop:orders-2",
            "-n",
            NS,
            verb,
            what,
        ];
        if let Some(sub) = sub {
            args.push(sub);
        }
        let out = std::process::Command::new(pgha_e2e::bin_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(&args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can(
        "patch",
        "pginstances/orders-2",
        Some("--subresource=status")
    ));
    assert!(!can(
        "patch",
        "pginstances/orders-3",
        Some("--subresource=status")
    ));
    assert!(!can("get", "pginstances/orders-1", None));
    assert!(can("update", "leases/orders-primary", None));
    assert!(!can("create", "leases", None));
    assert!(!can("update", "leases/other-primary", None));

    let first = primary_of(&clusters, "orders").await;
    let replicas: Vec<String> = ["orders-1", "orders-2", "orders-3"]
        .iter()
        .filter(|n| **n != first)
        .map(|n| n.to_string())
        .collect();

    // The primary freezes and both replicas restart while it is frozen: neither has streamed
    // from it since, so neither may be promoted. The cluster says why and waits.
    cluster.fault(&pod(&first), None, Fault::Freeze).unwrap();
    for r in &replicas {
        cluster.fault(&pod(r), None, Fault::Kill).unwrap();
    }
    let blocked = wait_for(Duration::from_secs(60), "the failover blocked", || {
        ready_because(&clusters, "orders", "NoCandidate")
    })
    .await;
    assert!(
        blocked.message.contains("streamed from it"),
        "{}",
        blocked.message
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let said = events.list(&ListParams::default()).await.unwrap();
    assert!(
        said.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailoverBlocked")),
        "an Event says the failover is blocked"
    );
    // Nothing was promoted while nobody qualified. Thawed, the primary takes its Lease back
    // and serves again, unless the replicas, streaming from it again, qualified before it
    // renewed: then one of them took over, after the thaw.
    let thawed = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(1);
    cluster.fault(&pod(&first), None, Fault::Thaw).unwrap();
    let back = wait_for(Duration::from_secs(60), "orders Healthy again", || {
        healthy(&clusters, "orders", 3)
    })
    .await
    .status
    .unwrap();
    if let Some(failover) = &back.last_failover {
        assert!(
            failover.started.0 >= thawed,
            "promoted while blocked: {failover:?}"
        );
    }

    // The operator's leader dies in the middle of a failover: the standby finishes it. A
    // failover can start and finish between two looks (about a second in all), so the kill
    // is repeated until one is seen under way. Each attempt kills the primary of that moment:
    // a failover that started before the kill (the thawed primary may still lose its Lease)
    // can have moved it since the last look.
    let target = Target::rw(&cluster, &client, NS, "orders", "app").await;
    let writer = Writer::start(target.clone(), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut attempt = 0;
    let (leading, first) = loop {
        attempt += 1;
        let settled = wait_for(Duration::from_secs(120), "orders Healthy", || {
            healthy(&clusters, "orders", 3)
        })
        .await;
        let first = settled.status.unwrap().current_primary.unwrap();
        let leading = leader(&client).await;
        let killed = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(1);
        cluster.fault(&pod(&first), None, Fault::Kill).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let finished = loop {
            let status = clusters
                .get("orders")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            if status.failover.is_some() {
                break None;
            }
            if let Some(done) = status
                .last_failover
                .as_ref()
                .filter(|f| f.started.0 >= killed)
            {
                break Some(done.to.clone());
            }
            // Moved by a failover that started before the kill: what was killed was a replica.
            if let Some(now) = status.current_primary.as_ref().filter(|p| **p != first) {
                break Some(now.clone());
            }
            if Instant::now() > deadline {
                let said = events.list(&ListParams::default()).await.unwrap();
                let notes: Vec<_> = said.items.iter().map(|e| (&e.reason, &e.message)).collect();
                panic!("no failover started after {first} was killed: {status:#?}\n{notes:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(new) = finished else {
            break (leading, first);
        };
        assert!(
            attempt < 5,
            "five failovers finished before the leader could be killed"
        );
        println!("attempt {attempt}: the primary moved to {new} between two looks; again");
    };
    cluster
        .fault(
            &PodRef {
                namespace: "pgha-system".into(),
                name: leading.clone(),
            },
            None,
            Fault::Kill,
        )
        .unwrap();
    let done = wait_for(Duration::from_secs(60), "the failover finished", || async {
        let status = clusters.get("orders").await.ok()?.status?;
        (status.failover.is_none() && status.current_primary.as_deref() != Some(first.as_str()))
            .then_some(status)
    })
    .await;
    let new = done.current_primary.unwrap();
    assert_eq!(done.last_failover.unwrap().to, new);
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), NS);
    wait_for(
        Duration::from_secs(30),
        "a write on the new primary",
        || async {
            let w = writable(&instances, "orders", &target).await;
            (w == [new.clone()]).then_some(())
        },
    )
    .await;
    drop(writer);
}
