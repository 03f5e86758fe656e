//! The operator on the local cluster (issue "Operator controllers"): time from applying a
//! PgCluster to `Healthy` with 1 and with 3 instances, and the leading operator's resident
//! memory and CPU with 20 idle clusters. No peer operator can run here (CloudNativePG, the
//! Zalando operator and Crunchy PGO need container images), so the figures stand against the
//! issue's goals: under 50 MiB and under 1% of a core.
//!
//! Run: `make bench` or `cargo bench --bench operator` as root. Writes the figures into
//! BENCHMARKS.md between the `operator` markers.

#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "../tests/common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "support/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;

use std::time::{Duration, Instant};

use kube::api::Api;
use pgha::api::PgCluster;
use process::{TICKS_PER_SECOND, cpu_ticks, operator_pid, rss_kib};
use report::{max, median, secs};

const ROUNDS: usize = 3;
const IDLE_CLUSTERS: usize = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (cluster, client) = install::installed(6).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), "shop");
    let mut ready = Vec::new();
    for (instances, round) in [1, 3]
        .into_iter()
        .flat_map(|n| (0..ROUNDS).map(move |r| (n, r)))
    {
        let name = format!("c{instances}-{round}");
        let started = Instant::now();
        install::create_plain(&clusters, &name, instances).await;
        eventually::eventually(Duration::from_secs(300), &name, || {
            install::healthy(&clusters, &name, instances)
        })
        .await;
        let took = started.elapsed();
        println!("{name}: Healthy with {instances} instance(s) in {took:.1?}");
        ready.push((instances, took));
        clusters.delete(&name, &Default::default()).await.unwrap();
    }
    for i in 0..IDLE_CLUSTERS {
        let name = format!("idle-{i}");
        install::create_plain(&clusters, &name, 1).await;
    }
    for i in 0..IDLE_CLUSTERS {
        let name = format!("idle-{i}");
        eventually::eventually(Duration::from_secs(600), &name, || {
            install::healthy(&clusters, &name, 1)
        })
        .await;
    }
    // Settle, then watch the leader for a minute.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let leader = install::leader(&client).await;
    let pid = operator_pid(cluster.state_dir(), &leader);
    let ticks = cpu_ticks(pid);
    let mut peak = rss_kib(pid);
    let started = Instant::now();
    while started.elapsed() < IDLE_WINDOW {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(pid));
    }
    let cpu = (cpu_ticks(pid) - ticks) as f64 / TICKS_PER_SECOND / started.elapsed().as_secs_f64();
    let rss = rss_kib(pid);

    let row = |n: i32| {
        let times: Vec<Duration> = ready
            .iter()
            .filter(|(i, _)| *i == n)
            .map(|(_, t)| *t)
            .collect();
        format!(
            "| apply → `Healthy`, {n} instance{} | {} | {} | {} |\n",
            if n == 1 { "" } else { "s" },
            times.len(),
            secs(median(&times)),
            secs(max(&times))
        )
    };
    let report = format!(
        "{header}\
         On the local cluster of e2e/ (3 proclet nodes, pods are processes), the operator \
         installed from deploy/ (2 replicas, one leading), pgha built with the bench profile (opt-level 1). No peer operator can run here \
         (CloudNativePG, the Zalando operator and Crunchy PGO need container images), so the \
         figures stand against the goals.\n\n\
         | measure | runs | median | max |\n|---|---|---|---|\n{one}{three}\n\
         | the leading operator with {IDLE_CLUSTERS} idle clusters (1 instance each), over {window} s | value | goal |\n|---|---|---|\n\
         | resident memory (VmRSS), end / peak | {rss:.1} / {peak:.1} MiB | < 50 MiB |\n\
         | CPU | {cpu:.2} % of a core | < 1 % |\n",
        header = report::header("cargo bench --bench operator"),
        one = row(1),
        three = row(3),
        window = IDLE_WINDOW.as_secs(),
        rss = rss as f64 / 1024.0,
        peak = peak as f64 / 1024.0,
        cpu = cpu * 100.0,
    );
    println!("{report}");
    report::write_section("operator", "Operator", &report);
}
