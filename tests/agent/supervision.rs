//! The postmaster as a supervised child: crashes are seen at once and restarted; a stop is
//! a clean shutdown.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha::agent::Desired;
use pgha::agent::postmaster::RunState;

use crate::cluster::{Workspace, eventually, wait_for_row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_is_reported_within_a_second_and_restarted() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let mut watch = a.watch_postmaster();
    let pid = a.postmaster_pid().unwrap();

    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(1), watch.wait_for(|s| s.crashes == 1))
        .await
        .expect("the crash is reported within 1 s")
        .unwrap()
        .clone();
    println!("crash reported after {:?}", killed.elapsed());
    assert!(seen.last_crash.unwrap().contains("SIGKILL"));
    assert!(!seen.crash_loop);

    let restarted = eventually(
        Duration::from_secs(30),
        "a restarted postmaster",
        || async { a.postmaster_pid().filter(|&new| new != pid) },
    )
    .await;
    wait_for_row(&ws, "a", 1).await;
    let status = a.status().await;
    assert!(status.ready);
    assert_eq!(status.postmaster.run, RunState::Running { pid: restarted });
    assert_eq!(status.postmaster.crashes, 1);
}
