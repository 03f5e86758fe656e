//! `/metrics` against real Postgres: the series a dashboard needs on a primary and a replica,
//! and a replica falling behind while its WAL receiver is frozen; a frozen backend of the
//! agent's kept read connection costs one read its time limit, not a hung agent.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha::agent::Desired;

use crate::cluster::{Workspace, eventually};

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_roles_lag_and_a_frozen_replica_falling_behind() {
    let ws = Workspace::new(&["a", "b"]);
    let a = ws.start("a", Desired::Primary).await;
    let b = ws.start("b", Desired::Replica(ws.endpoint("a"))).await;
    let primary = ws.client("a").await;
    primary
        .batch_execute("CREATE TABLE m (n int)")
        .await
        .unwrap();
    let streaming = |text: &str| {
        text.lines().any(|l| {
            l.starts_with(r#"pgha_standby_info{application_name="b","#)
                && l.split_once("} ").is_some_and(|(labels, value)| {
                    labels.ends_with(r#"state="streaming""#) && value.parse() == Ok(1.0)
                })
        })
    };
    eventually(
        Duration::from_secs(30),
        "b streaming, seen from a",
        || async { streaming(&a.metrics().await).then_some(()) },
    )
    .await;

    let on_a = a.metrics().await;
    for (series, expected) in [
        ("pg_up", 1.0),
        (r#"pgha_role{role="primary"}"#, 1.0),
        (r#"pgha_role{role="replica"}"#, 0.0),
        ("pgha_ready", 1.0),
        ("pgha_fenced", 0.0),
        ("pgha_timeline", 1.0),
        ("pg_replication_is_replica", 0.0),
        (r#"pg_replication_slots_active{slot_name="pgha_b"}"#, 1.0),
    ] {
        assert_eq!(value(&on_a, series), Some(expected), "{series} in\n{on_a}");
    }
    for series in [
        r#"pg_stat_database_xact_commit{datname="postgres"}"#,
        r#"pg_database_size_bytes{datname="postgres"}"#,
        r#"pg_stat_activity_count{state="active"}"#,
        "pg_stat_bgwriter_checkpoints_timed",
        r#"pgha_standby_lag_seconds{application_name="b",stage="replay"}"#,
        r#"pg_replication_slots_pg_wal_lsn_diff{slot_name="pgha_b"}"#,
        "pgha_wal_lsn_bytes",
    ] {
        assert!(value(&on_a, series).is_some(), "{series} in\n{on_a}");
    }
    let on_b = b.metrics().await;
    for (series, expected) in [
        (r#"pgha_role{role="replica"}"#, 1.0),
        ("pg_replication_is_replica", 1.0),
        ("pgha_wal_receiver_streaming", 1.0),
    ] {
        assert_eq!(value(&on_b, series), Some(expected), "{series} in\n{on_b}");
    }
    assert!(
        value(&on_b, "pg_replication_lag_seconds").is_some(),
        "{on_b}"
    );

    // Freeze b's WAL receiver while a writes: a sees b fall behind, b sees the silence.
    let receiver: i32 = ws
        .client("b")
        .await
        .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
        .await
        .unwrap()
        .get(0);
    let receiver = Pid::from_raw(receiver);
    kill(receiver, Signal::SIGSTOP).unwrap();
    primary
        .batch_execute("INSERT INTO m SELECT generate_series(1, 200000)")
        .await
        .unwrap();
    let replay_lag = r#"pgha_standby_lag_bytes{application_name="b",stage="replay"}"#;
    let behind = value(&a.metrics().await, replay_lag).unwrap();
    assert!(behind > 1_000_000.0, "b is {behind} bytes behind");
    let age = "pgha_wal_receiver_last_message_age_seconds";
    eventually(
        Duration::from_secs(30),
        "b's receiver silent for 2 s",
        || async { (value(&b.metrics().await, age)? >= 2.0).then_some(()) },
    )
    .await;
    kill(receiver, Signal::SIGCONT).unwrap();
    eventually(Duration::from_secs(30), "b caught up again", || async {
        (value(&a.metrics().await, replay_lag)? == 0.0).then_some(())
    })
    .await;

    // The agent reads over one kept connection. Its backend frozen: that read gives up
    // within its 2 s, and the next one opens a new connection and succeeds.
    assert!(a.status().await.ready);
    let kept: Vec<i32> = primary
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgha-agent'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!kept.is_empty());
    for pid in &kept {
        kill(Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
    }
    let started = std::time::Instant::now();
    let stuck = a.status().await;
    let took = started.elapsed();
    let next = a.status().await;
    for pid in &kept {
        kill(Pid::from_raw(*pid), Signal::SIGCONT).unwrap();
    }
    assert!(
        took < Duration::from_secs(4),
        "the frozen read took {took:?}"
    );
    let error = stuck.last_error.unwrap_or_default();
    assert!(error.contains("did not answer within"), "{error}");
    assert!(next.ready && next.last_error.is_none(), "{next:?}");
}
