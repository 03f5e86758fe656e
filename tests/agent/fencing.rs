//! Fencing: once `fence()` returns, no commit is acknowledged; unfence brings writes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha::agent::Desired;
use pgha::api::instance::InstanceRole;

use crate::cluster::{Workspace, try_client};

/// One attempted commit: when its statement was sent, and whether it was acknowledged.
struct Attempt {
    sent: Instant,
    id: i64,
    acked: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_is_acknowledged_after_fence_returns() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    let at = ws.endpoint("a");
    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, writer int)")
        .await
        .unwrap();

    // Background load from pgbench, plus writers whose every commit we account for.
    let pgbench = |args: &[&str]| ws.pgbench("a", args);
    assert!(
        pgbench(&["-i", "-s", "1", "-q"])
            .status()
            .await
            .unwrap()
            .success()
    );
    let mut load = pgbench(&["-c", "4", "-T", "60", "-n"]).spawn().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4i64 {
        let (stop, at) = (stop.clone(), at.clone());
        writers.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut next = writer * 1_000_000;
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = try_client(&at).await.ok();
                }
                let sent = Instant::now();
                let acked = match &client {
                    Some(c) => c
                        .execute("INSERT INTO t VALUES ($1, $2)", &[&next, &(writer as i32)])
                        .await
                        .is_ok(),
                    None => false,
                };
                if !acked {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                attempts.push(Attempt {
                    sent,
                    id: next,
                    acked,
                });
                next += 1;
            }
            attempts
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let took = a.fence().await.unwrap();
    let fenced_at = Instant::now();
    println!("fence() took {took:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut attempts = Vec::new();
    for w in writers {
        attempts.extend(w.await.unwrap());
    }
    let _ = load.kill().await;

    let acked_before = attempts
        .iter()
        .filter(|a| a.acked && a.sent < fenced_at)
        .count();
    let acked_after: Vec<i64> = attempts
        .iter()
        .filter(|a| a.acked && a.sent >= fenced_at)
        .map(|a| a.id)
        .collect();
    let tried_after = attempts.iter().filter(|a| a.sent >= fenced_at).count();
    assert!(
        acked_before > 50,
        "the writers were writing ({acked_before} commits)"
    );
    assert!(
        tried_after > 10,
        "the writers kept trying after the fence ({tried_after})"
    );
    assert!(
        acked_after.is_empty(),
        "commits acknowledged after fence() returned: {acked_after:?}"
    );
    assert!(took < Duration::from_secs(3), "fence took {took:?}");
    let status = a.status().await;
    assert_eq!((status.role, status.ready), (InstanceRole::Fenced, false));
    assert!(
        a.start().await.is_err(),
        "a fenced instance refuses to start"
    );

    a.unfence().await.unwrap();
    let client = ws.client("a").await;
    // Every acknowledged commit survived the fence.
    let acked: Vec<i64> = attempts.iter().filter(|a| a.acked).map(|a| a.id).collect();
    let present: i64 = client
        .query_one("SELECT count(*) FROM t WHERE id = ANY($1)", &[&acked])
        .await
        .unwrap()
        .get(0);
    assert_eq!(present as usize, acked.len());
    client
        .execute("INSERT INTO t VALUES (-1, -1)", &[])
        .await
        .unwrap();
    assert_eq!(a.status().await.role, InstanceRole::Primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postmaster_is_fenced_within_the_bound() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    let client = ws.client("a").await;
    let pid = Pid::from_raw(a.postmaster_pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();

    let took = a.fence().await.unwrap();
    let bound = a.settings().timeouts.fence + Duration::from_secs(1);
    assert!(took < bound, "fence took {took:?}, bound {bound:?}");
    assert!(
        client.execute("SELECT 1", &[]).await.is_err(),
        "the backend serving an open connection is gone too"
    );
    assert!(try_client(&ws.endpoint("a")).await.is_err());

    a.unfence().await.unwrap();
    ws.client("a").await.execute("SELECT 1", &[]).await.unwrap();
}
