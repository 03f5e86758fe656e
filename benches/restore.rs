//! Restore benchmark (issue 17): what the Kubernetes path adds to the archive engine, and how
//! far the engine's replay is from replaying WAL that is already on disk. In one run, on one
//! archive (s3s-fs on loopback) of one database, built the way benches/archive.rs builds its
//! own (pgbench at `PGHA_BENCH_SCALE`, `PGHA_BENCH_NOISE_MB` of random bytes, a base backup,
//! then `PGHA_BENCH_LOAD_SECS` of pgbench writes) by a PgCluster on the local cluster:
//! - Kubernetes: apply of a PgCluster with `bootstrap.recovery` (1 instance) → `Healthy`;
//! - engine: `pgha archive restore` of the same backup into an empty directory, then Postgres replays
//!   the archive through `pgha wal-fetch` until it promotes, with `pgha wal-prefetch` beside it
//!   as the agent runs it;
//! - ceiling: the same restore, every WAL segment copied into `pg_wal` beforehand (not timed),
//!   and replay with a `restore_command` that finds nothing.
//!
//! Run: `cargo bench --bench restore` as root. Writes BENCHMARKS.md between the `restore`
//! markers.

#[allow(dead_code)]
#[path = "../tests/agent/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "../tests/common/operator.rs"]
mod install;
#[path = "../tests/archive/postmaster.rs"]
mod postmaster;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/archive/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "../tests/common/writer.rs"]
mod writer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{Workspace, socket_client};
use eventually::eventually as wait_for;
use install::{create, healthy, installed};
use kube::api::{Api, PostParams};
use pgha::api::backup::BackupPhase;
use pgha::api::{PgBackup, PgCluster};
use pgha::archive::{Store, StoreConfig, catalog};
use report::{knob, mb_per_s, secs};
use s3::{BUCKET, S3};
use writer::{Target, connect};

const PGHA: &str = env!("CARGO_BIN_EXE_pgha");
const NS: &str = "shop";
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

/// The store file of the cluster `src`'s archive, for the CLI.
fn store_file(s3: &S3, dir: &Path) -> PathBuf {
    let keys = s3.store_file().parent().unwrap().join("keys");
    let file = dir.join("src-store.yaml");
    let yaml = format!(
        "bucket: {BUCKET}\npath: {NS}/src\nendpoint: http://127.0.0.1:{}\ncredentialsDir: {}\n",
        s3.port(),
        keys.display()
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

async fn session(target: &Target) -> tokio_postgres::Client {
    let (host, port) = (target.address.ip().to_string(), target.address.port());
    wait_for(Duration::from_secs(30), "a connection", || {
        connect(target, &host, port)
    })
    .await
}

/// Async: the Service proxies run in this process and must go on serving meanwhile.
async fn pgbench(target: &Target, args: &[&str]) {
    let conninfo = target.conninfo(&target.address.ip().to_string(), target.address.port());
    let out = tokio::process::Command::new(PGBENCH)
        .args(args)
        .arg(&conninfo)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pgha archive restore` of the newest backup into `name`'s data directory.
fn restore(ws: &Workspace, store: &Path, name: &str) -> Duration {
    let settings = ws.settings(name);
    let started = Instant::now();
    let out = Command::new(PGHA)
        .args(["archive", "restore"])
        .arg("--store")
        .arg(store)
        .arg("--pgdata")
        .arg(&settings.data_dir)
        .args(["--owner", "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgha archive restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    // The cluster's configuration came with the data; its certificates live in the pod.
    let auto = settings.data_dir.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).unwrap();
    conf.push_str("ssl = off\n");
    std::fs::write(&auto, conf).unwrap();
    took
}

/// Starts Postgres on a restored directory and waits until it promoted.
async fn replay(ws: &Workspace, name: &str) -> Duration {
    let settings = ws.settings(name);
    let started = Instant::now();
    let mut postmaster = postmaster::start_postgres(ws, &settings);
    loop {
        if let Ok(Some(status)) = postmaster.try_wait() {
            panic!("{name}: postgres exited ({status}):\n{}", ws.log(name));
        }
        if let Ok(client) = socket_client(&settings).await
            && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let _ = postmaster.kill().await;
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = knob("PGHA_BENCH_SCALE", 100);
    let noise_mb = knob("PGHA_BENCH_NOISE_MB", 256);
    let load_secs = knob("PGHA_BENCH_LOAD_SECS", 300);
    let s3 = S3::start();
    let (cluster, client) = installed(11).await;
    let keys: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s3-keys"},
        "stringData": {"ACCESS_KEY_ID": "test-access", "SECRET_ACCESS_KEY": "test-secret"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &keys)
        .await
        .unwrap();
    let s3_spec = format!(
        "{{bucket: {BUCKET}, endpoint: 'http://127.0.0.1:{}', credentialsSecret: s3-keys}}",
        s3.port()
    );
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    create(
        &clusters,
        &format!(
            "metadata: {{name: src}}\nspec:\n  instances: 1\n  storage: {{size: 100Gi}}\n  \
             backup: {{s3: {s3_spec}, schedule: '0 0 1 1 *'}}\n"
        ),
    )
    .await;
    wait_for(Duration::from_secs(180), "src Healthy", || {
        healthy(&clusters, "src", 1)
    })
    .await;

    // The database, a base backup of it, then writes whose WAL the restores replay.
    let app = Target::rw(&cluster, &client, NS, "src", "app").await;
    let mut su = Target::rw(&cluster, &client, NS, "src", "superuser").await;
    su.dbname = app.dbname.clone();
    // The Service follows the primary's role label a moment after Healthy.
    let db = session(&su).await;
    println!("loading pgbench scale {scale} and {noise_mb} MB of random bytes");
    pgbench(&app, &["-i", "-q", "-s", &scale.to_string()]).await;
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE noise AS SELECT g AS id, gen_random_bytes(1024) AS b
           FROM generate_series(1, {noise_mb} * 1024) g;
         CHECKPOINT;"
    ))
    .await
    .unwrap();
    let size: i64 = db
        .query_one(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let backups: Api<PgBackup> = Api::namespaced(client.clone(), NS);
    let backup: PgBackup = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "src-loaded"}, "spec": {"cluster": "src", "target": "primary"},
    }))
    .unwrap();
    backups
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    wait_for(Duration::from_secs(3600), "the base backup", || async {
        let b = backups.get("src-loaded").await.ok()?;
        (b.status?.result.phase? == BackupPhase::Completed).then_some(())
    })
    .await;
    println!("{load_secs} s of pgbench writes");
    let before: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    pgbench(&app, &["-c", "2", "-T", &load_secs.to_string(), "-n"]).await;
    let row = db
        .query_one(
            "SELECT pg_walfile_name(pg_switch_wal()), \
             pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&before],
        )
        .await
        .unwrap();
    let (segment, wal_bytes): (String, i64) = (row.get(0), row.get(1));
    let ws = Workspace::new(&["engine", "ceiling"]);
    let store_path = store_file(&s3, ws.dir.path());
    let store = Store::new(&StoreConfig::from_file(&store_path).unwrap()).unwrap();
    wait_for(Duration::from_secs(600), "the WAL archived", || async {
        let archive = catalog::read(&store).await.ok()?;
        archive.wal_names().contains(&segment).then_some(())
    })
    .await;

    // Kubernetes: a recovery PgCluster, apply → Healthy.
    let started = Instant::now();
    create(
        &clusters,
        &format!(
            "metadata: {{name: copy}}\nspec:\n  instances: 1\n  storage: {{size: 100Gi}}\n  \
             bootstrap:\n    recovery:\n      source:\n        s3: {{bucket: {BUCKET}, path: \
             {NS}/src, endpoint: 'http://127.0.0.1:{}', credentialsSecret: s3-keys}}\n",
            s3.port()
        ),
    )
    .await;
    wait_for(Duration::from_secs(3600), "copy Healthy", || {
        healthy(&clusters, "copy", 1)
    })
    .await;
    let kubernetes = started.elapsed();

    // The engine alone, then the ceiling.
    let engine_restore = restore(&ws, &store_path, "engine");
    // The prefetcher the agent runs beside a replaying Postgres.
    let pg_wal = ws.settings("engine").data_dir.join("pg_wal");
    let mut prefetcher = tokio::process::Command::new(PGHA)
        .arg("wal-prefetch")
        .arg("--store")
        .arg(&store_path)
        .arg("--pg-wal")
        .arg(&pg_wal)
        .args(["--owner", "postgres"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let engine_replay = replay(&ws, "engine").await;
    prefetcher.kill().await.unwrap();
    let ceiling_restore = restore(&ws, &store_path, "ceiling");
    let pg_wal = ws.settings("ceiling").data_dir.join("pg_wal");
    let wal: Vec<String> = catalog::read(&store).await.unwrap().wal_names();
    for name in wal.iter().filter(|n| n.len() == 24) {
        let fetched = Command::new(PGHA)
            .args(["wal-fetch", "--store"])
            .arg(&store_path)
            .arg(name)
            .arg(pg_wal.join(name))
            .status()
            .unwrap();
        assert!(fetched.success(), "wal-fetch {name}");
    }
    Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&pg_wal)
        .status()
        .unwrap();
    let auto = ws.settings("ceiling").data_dir.join("postgresql.auto.conf");
    let mut settings = std::fs::read_to_string(&auto).unwrap();
    settings.push_str("restore_command = 'false'\n");
    std::fs::write(&auto, settings).unwrap();
    let ceiling_replay = replay(&ws, "ceiling").await;

    let engine = engine_restore + engine_replay;
    let ceiling = ceiling_restore + ceiling_replay;
    let pct = |a: Duration, b: Duration| (a.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
    let report = format!(
        "{header}\
         Database {size_mb:.0} MB (pgbench scale {scale} plus {noise_mb} MB of random bytes), \
         then {load_secs} s of pgbench writes: {wal_mb:.0} MB of WAL to replay. One s3s-fs on \
         loopback holds the archive, written by a PgCluster on the local cluster (the operator \
         as a pod). Each row restores the same newest backup and replays the same WAL.\n\n\
         | path | restore | replay | total |\n\
         |---|---|---|---|\n\
         | Kubernetes: apply of a recovery PgCluster → `Healthy` (init pod restores and \
         replays, then the instance pod starts) | | | {k8s} |\n\
         | engine: `pgha archive restore`, then replay through `pgha wal-fetch` (with `pgha wal-prefetch`) | {er} ({er_mb:.0} \
         MB/s) | {ep} ({ep_mb:.0} MB/s) | {e} |\n\
         | ceiling: the same restore, WAL already in `pg_wal` | {cr} | {cp} ({cp_mb:.0} MB/s) \
         | {c} |\n\n\
         The Kubernetes path adds **{k8s_pct:+.0}%** to the engine's restore + replay (goal: \
         under 10%); the engine's replay takes **{replay_pct:+.0}%** more than replaying WAL \
         from local disk (goal: within 10%).\n",
        header = report::header(&format!(
            "PGHA_BENCH_SCALE={scale} PGHA_BENCH_NOISE_MB={noise_mb} \
             PGHA_BENCH_LOAD_SECS={load_secs} cargo bench --bench restore"
        )),
        size_mb = size as f64 / 1e6,
        wal_mb = wal_bytes as f64 / 1e6,
        k8s = secs(kubernetes),
        er = secs(engine_restore),
        er_mb = mb_per_s(size as u64, engine_restore),
        ep = secs(engine_replay),
        ep_mb = mb_per_s(wal_bytes as u64, engine_replay),
        e = secs(engine),
        cr = secs(ceiling_restore),
        cp = secs(ceiling_replay),
        cp_mb = mb_per_s(wal_bytes as u64, ceiling_replay),
        c = secs(ceiling),
        k8s_pct = pct(kubernetes, engine),
        replay_pct = pct(engine_replay, ceiling_replay),
    );
    println!("{report}");
    report::write_section("restore", "Restore from Kubernetes", &report);
}
