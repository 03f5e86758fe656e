//! Agent metrics (issue "Observability and the `kubectl pgha` plugin"): how long one
//! `/metrics` scrape takes next to a `/status` read, on a primary with two streaming replicas
//! and on a replica, and what scraping adds to the agent's memory. Real Postgres on loopback
//! (tests/agent/cluster.rs); the agents run in this process, and the scrape is the function
//! the agent's HTTP handler calls (HTTP itself excluded).
//!
//! Run: `cargo bench --bench metrics`. Writes the figures into BENCHMARKS.md between the
//! `metrics` markers.

#[allow(dead_code)]
#[path = "../tests/agent/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;

use std::time::{Duration, Instant};

use cluster::{Workspace, wait_for_row};
use report::{max, median};

const SCRAPES: usize = 500;
/// The goal for one scrape.
const GOAL: Duration = Duration::from_millis(10);

/// The 99th percentile of `values`.
fn p99(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// This process's resident memory in KiB (where the agents run).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `SCRAPES` timings of `read`, after a few to warm up.
async fn timed<F, Fut>(read: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future,
{
    for _ in 0..20 {
        read().await;
    }
    let mut out = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let at = Instant::now();
        read().await;
        out.push(at.elapsed());
    }
    out
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, times: &[Duration]) -> String {
    format!(
        "| {what} | {} | {} | {} | {} |\n",
        times.len(),
        millis(median(times)),
        millis(p99(times)),
        millis(max(times))
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ws = Workspace::new(&["a", "b", "c"]);
    let [a, b, _c] = ws.primary_and_two_replicas().await;
    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    wait_for_row(&ws, "b", 1).await;
    wait_for_row(&ws, "c", 1).await;

    let status = timed(|| a.status()).await;
    let before = rss_kib();
    let metrics = timed(|| a.metrics()).await;
    let after = rss_kib();
    let on_replica = timed(|| b.metrics()).await;
    let size = a.metrics().await.len();
    let met = median(&metrics) <= GOAL;
    let report = format!(
        "{header}\
         A primary with two streaming replicas, real Postgres 15 on loopback; the agents run in \
         the benchmark's process and each read is the function the agent's HTTP handler calls \
         (HTTP excluded). One `/metrics` scrape reads the status report's views and the \
         database counters over the agent's kept connection, the queries pipelined.\n\n\
         | read | runs | median | p99 | max |\n|---|---|---|---|---|\n\
         {status_row}{metrics_row}{replica_row}\n\
         One scrape of the primary is {size} bytes. Resident memory of the process that runs \
         the three agents: {before} KiB before {SCRAPES} scrapes, {after} KiB after. \
         Goal (one scrape under {goal} ms): **{verdict}**.\n",
        header = report::header("cargo bench --bench metrics"),
        status_row = row("`/status` on the primary", &status),
        metrics_row = row("`/metrics` on the primary", &metrics),
        replica_row = row("`/metrics` on a replica", &on_replica),
        goal = GOAL.as_millis(),
        verdict = if met { "met" } else { "not met" },
    );
    println!("{report}");
    report::write_section("metrics", "Agent metrics", &report);
}
