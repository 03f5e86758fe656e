//! Bootstrap, streaming, promotion, following without restart, rewind and re-clone.

use std::time::Duration;

use pgha::agent::{Desired, Rejoined};
use pgha::api::instance::InstanceRole;

use crate::cluster::{Workspace, digest, eventually, wait_for_row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_stream_promote_follow_and_the_old_primary_is_rewound() {
    let ws = Workspace::new(&["a", "b", "c"]);
    let [a, b, c] = ws.primary_and_two_replicas().await;

    let primary = seed(&ws, "a").await;
    wait_for_row(&ws, "b", 1).await;
    wait_for_row(&ws, "c", 1).await;

    let sa = a.status().await;
    assert_eq!((sa.role, sa.ready), (InstanceRole::Primary, true));
    let server = sa.server.unwrap();
    assert_eq!(server.timeline, Some(1));
    assert_eq!(
        server.archiver, None,
        "no archive configured, no archiver reported"
    );
    let standbys: Vec<_> = server.standbys.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        standbys,
        ["b", "c"],
        "standbys connect under their instance names"
    );
    let slots: Vec<_> = server
        .slots
        .iter()
        .map(|s| (s.name.as_str(), s.active))
        .collect();
    assert_eq!(slots, [("pgha_b", true), ("pgha_c", true)]);
    for replica in [&b, &c] {
        let s = replica.status().await;
        assert_eq!((s.role, s.ready), (InstanceRole::Replica, true));
        let server = s.server.unwrap();
        assert_eq!(server.timeline, Some(1));
        assert_eq!(server.system_identifier, sa_system_id(&a).await);
        assert!(server.lag_bytes.is_some() && server.lag_seconds.is_some());
        assert_eq!(server.upstream.unwrap().status, "streaming");
    }

    // b becomes primary and c follows it; a keeps running and takes writes nobody else
    // sees (split brain on purpose: that is what rewind repairs).
    let c_pid = c.postmaster_pid().unwrap();
    let timeline = b.promote().await.unwrap();
    assert_eq!(timeline, 2);
    c.follow(ws.endpoint("b")).await.unwrap();
    let new_primary = ws.client("b").await;
    new_primary
        .execute("INSERT INTO t VALUES (2, 'two')", &[])
        .await
        .unwrap();
    primary
        .batch_execute(
            "INSERT INTO t SELECT g, 'divergent' FROM generate_series(100, 2000) g; CHECKPOINT",
        )
        .await
        .unwrap();
    wait_for_row(&ws, "c", 2).await;
    assert_eq!(
        c.postmaster_pid(),
        Some(c_pid),
        "following must not restart Postgres"
    );
    eventually(Duration::from_secs(10), "c on timeline 2", || async {
        let server = c.status().await.server?;
        (server.timeline == Some(2)).then_some(())
    })
    .await;

    assert_eq!(a.rejoin(ws.endpoint("b")).await.unwrap(), Rejoined::Rewound);
    new_primary
        .execute("INSERT INTO t VALUES (3, 'three')", &[])
        .await
        .unwrap();
    wait_for_row(&ws, "a", 3).await;
    let old = ws.client("a").await;
    let divergent: i64 = old
        .query_one("SELECT count(*) FROM t WHERE v = 'divergent'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(divergent, 0, "the rows only the old primary had are gone");
    assert_eq!(digest(&old, "t").await, digest(&new_primary, "t").await);
    let sa = a.status().await;
    assert_eq!((sa.role, sa.ready), (InstanceRole::Replica, true));
    assert_eq!(sa.server.unwrap().timeline, Some(2));
}

/// Creates table `t` with row 1 on the primary `name`; returns a client connected to it.
async fn seed(ws: &Workspace, name: &str) -> tokio_postgres::Client {
    let primary = ws.client(name).await;
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')",
        )
        .await
        .unwrap();
    primary
}

async fn sa_system_id(agent: &pgha::agent::Agent) -> String {
    agent.status().await.server.unwrap().system_identifier
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_wal_for_rewind_the_old_primary_is_cloned_again_and_kept_aside() {
    let ws = Workspace::new(&["a", "b"]);
    let a = ws.start("a", Desired::Primary).await;
    let b = ws.start("b", Desired::Replica(ws.endpoint("a"))).await;
    let primary = seed(&ws, "a").await;
    wait_for_row(&ws, "b", 1).await;

    b.promote().await.unwrap();
    primary
        .batch_execute(
            "INSERT INTO t SELECT g, 'divergent' FROM generate_series(100, 5000) g;
             SELECT pg_switch_wal(); INSERT INTO t VALUES (99, 'divergent'); CHECKPOINT",
        )
        .await
        .unwrap();
    a.stop().await.unwrap();
    let pg_wal = a.settings().data_dir.join("pg_wal");
    for entry in std::fs::read_dir(&pg_wal).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }

    let Rejoined::Recloned { kept, reason } = a.rejoin(ws.endpoint("b")).await.unwrap() else {
        panic!("rewind cannot work without the WAL; expected a re-clone");
    };
    assert!(reason.contains("pg_rewind"), "{reason}");
    assert!(
        kept.join("PG_VERSION").exists(),
        "the old data directory is kept at {kept:?}"
    );
    let status = a.status().await;
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("cloned again") && n.contains(&kept.display().to_string())),
        "{:?}",
        status.notes
    );
    assert_eq!((status.role, status.ready), (InstanceRole::Replica, true));
    ws.client("b")
        .await
        .execute("INSERT INTO t VALUES (2, 'two')", &[])
        .await
        .unwrap();
    wait_for_row(&ws, "a", 2).await;
    assert_eq!(
        digest(&ws.client("a").await, "t").await,
        digest(&ws.client("b").await, "t").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrapping_an_initialised_directory_changes_nothing() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    a.stop().await.unwrap();
    assert_eq!(
        a.bootstrap(None).await.unwrap(),
        pgha::agent::Bootstrapped::AlreadyInitialized
    );
    a.start().await.unwrap();
    wait_for_row(&ws, "a", 7).await;
}
