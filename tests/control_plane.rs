//! The databases outlive the control plane (issue "The database outlives the control plane"):
//! with the kube-apiserver frozen for 20 s and 60 s, and with the primary cut off from the API
//! server only, a 3-instance asynchronous cluster, a 3-instance quorum cluster and a
//! 1-instance cluster keep taking writes through `-rw` — the primaries serve on their
//! members' promises (or, alone, on their own) — nothing acknowledged is lost, nobody fails
//! over, exactly one pod of each accepts writes, each is Healthy soon after and reports how
//! long its primary served without the API.

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use pgha::api::{PgCluster, PgInstance};
use pgha_e2e::{Cluster, PodRef};

use eventually::eventually;
use install::{create, healthy, installed};
use writer::{Target, Writer, connect, missing, writable};

const NS: &str = "shop";

/// A cluster under a writer, and what it was before the fault.
struct Watched {
    name: &'static str,
    instances: i32,
    target: Target,
    writer: Writer,
    primary: String,
    last_failover: Option<String>,
}

async fn watch(
    cluster: &Cluster,
    clusters: &Api<PgCluster>,
    name: &'static str,
    instances: i32,
) -> Watched {
    let up = eventually(Duration::from_secs(240), "Healthy", || {
        healthy(clusters, name, instances)
    })
    .await
    .status
    .unwrap();
    let client = cluster.client();
    let target = Target::rw(cluster, &client, NS, name, "app").await;
    let writer = Writer::start(target.clone(), Duration::from_millis(50)).await;
    Watched {
        name,
        instances,
        target,
        writer,
        primary: up.current_primary.unwrap(),
        last_failover: up.last_failover.map(|f| format!("{f:?}")),
    }
}

/// After a fault of the control plane that ended at `ended`: no write gap over a second since
/// `began`, nothing lost, no failover, one writable pod, Healthy again (how soon is printed).
async fn unharmed(
    cluster: &Cluster,
    watched: &[Watched],
    fault: &str,
    began: Instant,
    ended: Instant,
) {
    let began_at = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::try_from(began.elapsed()).unwrap();
    let client = cluster.client();
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), NS);
    for w in watched {
        let back = eventually(Duration::from_secs(60), "Healthy after the fault", || {
            healthy(&clusters, w.name, w.instances)
        })
        .await
        .status
        .unwrap();
        let healthy_after = ended.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (gap_began, gap) = w.writer.longest_gap_from(began, Instant::now());
        // Where the gap fell tells a stall at the API server's return from one during the
        // outage.
        let gap_at = gap_began.duration_since(began).as_secs_f64()
            - ended.duration_since(began).as_secs_f64();
        let Some(on_primary) = connect(
            &w.target,
            &w.target.address.ip().to_string(),
            w.target.address.port(),
        )
        .await
        else {
            explain(cluster, w).await;
            panic!("{}: -rw does not answer after {fault}", w.name);
        };
        let acked = w.writer.acked();
        let lost = missing(&on_primary, &acked).await;
        println!(
            "{fault}: {}: longest write gap {gap:?} (from {gap_at:+.2} s after the end), {} rows acknowledged, {} lost, Healthy {healthy_after:?} after the end",
            w.name,
            acked.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{}: acknowledged rows lost: {lost:?}",
            w.name
        );
        if back.current_primary.as_deref() != Some(w.primary.as_str()) {
            explain(cluster, w).await;
        }
        assert_eq!(
            back.current_primary.as_deref(),
            Some(w.primary.as_str()),
            "{}: the primary changed",
            w.name
        );
        assert_eq!(
            back.last_failover.map(|f| format!("{f:?}")),
            w.last_failover,
            "{}: a failover",
            w.name
        );
        assert!(
            gap <= Duration::from_secs(1),
            "{}: writes stopped for {gap:?} during {fault}",
            w.name
        );
        // The cluster says how long its primary ran without the API, and so does the
        // operator's /metrics.
        let lasted = ended.duration_since(began).as_secs_f64();
        let seen = std::sync::Mutex::new(None);
        let outage = eventually(Duration::from_secs(20), "the outage reported", || async {
            let outage = clusters.get(w.name).await.ok()?.status?.last_lease_outage;
            let on_primary = instances
                .get(&w.primary)
                .await
                .ok()?
                .status?
                .last_lease_outage;
            let now = (outage.clone(), on_primary);
            let mut last = seen.lock().unwrap();
            if last.as_ref() != Some(&now) {
                println!(
                    "{}: {:?} after the end, lastLeaseOutage cluster/primary {now:?}",
                    w.name,
                    ended.elapsed()
                );
                *last = Some(now);
            }
            let outage = outage?;
            (outage.seconds > lasted - 3.0 && outage.ended.0 > began_at).then_some(outage)
        })
        .await;
        let series = format!(
            "pgha_primary_lease_last_outage_seconds{{namespace=\"{NS}\",cluster=\"{}\"}}",
            w.name
        );
        let metrics = install::operator_metrics(&client).await;
        let reported = metrics.lines().find(|l| l.starts_with(&series));
        println!("{}: {outage:?}; {reported:?}", w.name);
        assert!(reported.is_some(), "{series} missing: {metrics}");
        let mine = writable(&instances, w.name, &w.target).await;
        let expected = std::slice::from_ref(&w.primary);
        if mine != expected {
            explain(cluster, w).await;
        }
        assert_eq!(
            mine, expected,
            "{}: exactly the primary accepts writes",
            w.name
        );
    }
}

/// What a failed check needs to be understood: the nodes' and the cluster's pods' readiness,
/// the end of each pod's log and what the operator logged of the cluster.
async fn explain(cluster: &Cluster, w: &Watched) {
    let client = cluster.client();
    let operator = PodRef {
        namespace: "pgha-system".into(),
        name: install::leader(&client).await,
    };
    let said = cluster.logs(&operator, "operator");
    let about: Vec<&str> = said.lines().filter(|l| l.contains(w.name)).collect();
    for line in &about[about.len().saturating_sub(80)..] {
        eprintln!("  operator: {line}");
    }
    for node in Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
    {
        let name = node.name_any();
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        eprintln!("node {name}: {ready:?}");
    }
    let pods: Api<Pod> = Api::namespaced(client, NS);
    for pod in pods.list(&Default::default()).await.unwrap() {
        let name = pod.name_any();
        if !name.starts_with(&format!("{}-", w.name)) {
            continue;
        }
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        eprintln!("pod {name} {:?}: {ready:?}", status.pod_ip);
        let log = cluster.logs(
            &PodRef {
                namespace: NS.into(),
                name: name.clone(),
            },
            "postgres",
        );
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {name}: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_databases_keep_serving_while_the_api_server_is_away() {
    let (cluster, client) = installed(6).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 3\n  storage: {size: 1Gi}\n",
    )
    .await;
    create(
        &clusters,
        "metadata: {name: ledger}\nspec:\n  instances: 3\n  storage: {size: 1Gi}\n  replication: {synchronous: {mode: quorum, number: 1}}\n",
    )
    .await;
    create(
        &clusters,
        "metadata: {name: solo}\nspec:\n  instances: 1\n  storage: {size: 1Gi}\n",
    )
    .await;
    let watched = vec![
        watch(&cluster, &clusters, "orders", 3).await,
        watch(&cluster, &clusters, "ledger", 3).await,
        watch(&cluster, &clusters, "solo", 1).await,
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;

    for seconds in [20, 60] {
        let began = Instant::now();
        cluster.pause_apiserver(true).unwrap();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        cluster.pause_apiserver(false).unwrap();
        let ended = Instant::now();
        unharmed(
            &cluster,
            &watched,
            &format!("API server frozen {seconds} s"),
            began,
            ended,
        )
        .await;
    }

    // The primary of each cluster cut off from the API server only, for 20 s.
    let cut: Vec<PodRef> = watched
        .iter()
        .map(|w| PodRef {
            namespace: NS.into(),
            name: w.primary.clone(),
        })
        .collect();
    let began = Instant::now();
    for pod in &cut {
        cluster.partition_from_api(pod).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    for pod in &cut {
        cluster.heal(pod).unwrap();
    }
    let ended = Instant::now();
    unharmed(
        &cluster,
        &watched,
        "primaries cut off from the API server 20 s",
        began,
        ended,
    )
    .await;
}
