//! Agent benchmarks on real Postgres (issue 4): promote latency (call → first write accepted),
//! follow latency (new primary → replica streaming again), median and max over 20 rotations,
//! and the time to clone a 1 GB database next to plain `pg_basebackup` in the same run.
//!
//! Run: `cargo bench --bench agent` (as root it runs Postgres as `postgres`). Writes the
//! figures into BENCHMARKS.md between the `agent` markers.

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

use cluster::{Workspace, try_client};
use pgha::agent::{Agent, Desired, Endpoint};
use pgha::plan::wal::parse_lsn;
use report::{max, median, ms, secs};

const ROTATIONS: usize = 20;
const CLONE_RUNS: usize = 3;
/// pgbench scale 64 is about 1.0 GB on disk.
const SCALE: &str = "64";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (promote, follow) = failover_latencies().await;
    let (ours, peer, size) = clone_times().await;
    let report = format!(
        "{header}\
         | measure | runs | median | max |\n|---|---|---|---|\n\
         | promote: `promote()` called → first write accepted on the new primary | {n} | {pm} | {px} |\n\
         | follow: new primary up → other replica streaming on the new timeline, no restart | {n} | {fm} | {fx} |\n\n\
         | clone of a {gb:.2} GB database (pgbench scale {SCALE}) | runs | median | max | MB/s (median) |\n|---|---|---|---|---|\n\
         | `Agent::bootstrap` as a replica (pg_basebackup + slot) | {cr} | {om} | {ox} | {orate:.0} |\n\
         | plain `pg_basebackup -X stream -c fast` | {cr} | {bm} | {bx} | {brate:.0} |\n\n\
         The agent's clone is `pg_basebackup` through the instance's slot plus a slot lookup \
         and a rename; the two alternate who goes first, and the first run of the pair meets a \
         cold cache. Promote polls `pg_is_in_recovery()` every 2 ms instead of \
         `pg_promote(wait => true)`, which checks every 100 ms.\n",
        header = report::header("cargo bench --bench agent"),
        n = ROTATIONS,
        pm = ms(median(&promote)),
        px = ms(max(&promote)),
        fm = ms(median(&follow)),
        fx = ms(max(&follow)),
        gb = size as f64 / 1e9,
        cr = CLONE_RUNS,
        om = secs(median(&ours)),
        ox = secs(max(&ours)),
        orate = size as f64 / 1e6 / median(&ours).as_secs_f64(),
        bm = secs(median(&peer)),
        bx = secs(max(&peer)),
        brate = size as f64 / 1e6 / median(&peer).as_secs_f64(),
    );
    println!("{report}");
    report::write_section("agent", "Instance agent", &report);
}

/// Three instances; each rotation promotes a replica, re-points the other replica at it and
/// rewinds the old primary into a replica.
async fn failover_latencies() -> (Vec<Duration>, Vec<Duration>) {
    let ws = Workspace::new(&["a", "b", "c"]);
    let [a, b, c] = ws.primary_and_two_replicas().await;
    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        .await
        .unwrap();
    let mut nodes = [("a", a), ("b", b), ("c", c)];
    let (mut promote, mut follow) = (Vec::new(), Vec::new());
    for round in 0..ROTATIONS {
        let (old, new, other) = (&nodes[0], &nodes[1], &nodes[2]);
        wait_caught_up(&new.1, &old.1).await;
        wait_caught_up(&other.1, &old.1).await;
        let at = ws.endpoint(new.0);

        let called = Instant::now();
        let timeline = new.1.promote().await.unwrap();
        loop {
            if let Ok(client) = try_client(&at).await
                && client
                    .execute("INSERT INTO t DEFAULT VALUES", &[])
                    .await
                    .is_ok()
            {
                break;
            }
        }
        promote.push(called.elapsed());

        let up = Instant::now();
        other.1.follow(at.clone()).await.unwrap();
        loop {
            let server = other.1.status().await.server;
            let streaming = server
                .and_then(|s| s.upstream)
                .is_some_and(|u| u.status == "streaming" && u.received_timeline == Some(timeline));
            if streaming {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        follow.push(up.elapsed());

        old.1.rejoin(at).await.unwrap();
        println!(
            "round {round}: promote {:?}, follow {:?}",
            promote[round], follow[round]
        );
        nodes.rotate_left(1);
    }
    (promote, follow)
}

async fn wait_caught_up(replica: &Agent, primary: &Agent) {
    let target = primary.status().await.server.unwrap().current_lsn;
    loop {
        let replayed = replica.status().await.server.and_then(|s| s.replayed_lsn);
        let lsn = |s: &Option<String>| s.as_deref().and_then(parse_lsn);
        if lsn(&replayed) >= lsn(&target) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A ~1 GB primary, cloned alternately by the agent and by plain pg_basebackup.
async fn clone_times() -> (Vec<Duration>, Vec<Duration>, u64) {
    let mut names = vec!["src".to_string()];
    names.extend((0..CLONE_RUNS).map(|i| format!("r{i}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ws = Workspace::new(&refs);
    let src = ws.start("src", Desired::Primary).await;
    let settings = src.settings().clone();
    let at = ws.endpoint("src");
    let init = tokio::process::Command::new(settings.bin_dir.join("pgbench"))
        .args([
            "-i", "-s", SCALE, "-q", "-h", &at.host, "-U", "postgres", "app",
        ])
        .env("PGPASSWORD", cluster::SUPERUSER_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let size: i64 = ws
        .client("src")
        .await
        .query_one(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..CLONE_RUNS {
        // Alternate who goes first, so neither always meets a cold cache.
        if i % 2 == 0 {
            ours.push(clone_with_agent(&ws, i, &at).await);
            peer.push(plain_basebackup(&ws, i, &at, &settings.bin_dir).await);
        } else {
            peer.push(plain_basebackup(&ws, i, &at, &settings.bin_dir).await);
            ours.push(clone_with_agent(&ws, i, &at).await);
        }
        println!(
            "clone {i}: agent {:?}, pg_basebackup {:?}",
            ours[i], peer[i]
        );
    }
    (ours, peer, size as u64)
}

async fn clone_with_agent(ws: &Workspace, i: usize, at: &Endpoint) -> Duration {
    let agent = Agent::new(
        ws.settings(&format!("r{i}")),
        cluster::credentials(),
        Desired::Replica(at.clone()),
        ws.config(),
    );
    let started = Instant::now();
    agent.bootstrap(None).await.unwrap();
    let took = started.elapsed();
    std::fs::remove_dir_all(&agent.settings().data_dir).unwrap();
    took
}

async fn plain_basebackup(
    ws: &Workspace,
    i: usize,
    at: &Endpoint,
    bin: &std::path::Path,
) -> Duration {
    let target = ws.dir.path().join(format!("plain{i}"));
    let started = Instant::now();
    let out = tokio::process::Command::new(bin.join("pg_basebackup"))
        .arg("-D")
        .arg(&target)
        .args([
            "-h",
            &at.host,
            "-U",
            "streaming_replica",
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .env("PGPASSWORD", cluster::credentials().replication.expose())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    std::fs::remove_dir_all(&target).unwrap();
    took
}
