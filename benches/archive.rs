//! Archive benchmarks (issue 5), side by side in one run against the same s3s-fs server on
//! loopback:
//! - base backup of a pgbench database (scale 100, ≈1.5 GB, plus a table of random bytes so
//!   compression cannot flatter anyone): `pgha archive backup`, `pg_basebackup -Ft -z` to local disk,
//!   `barman-cloud-backup --snappy` and pgBackRest (lz4, process-max 2);
//! - then 5 minutes of pgbench writes, archived by all three tools (one archive_command runs
//!   them in turn), and for each tool: restore of its newest backup into an empty directory,
//!   then replay of all that WAL through its own restore_command until the instance promotes.
//!
//! Run: `make bench` or `cargo bench --bench archive` as root (it runs Postgres as
//! `postgres`). `PGHA_BENCH_SCALE`, `PGHA_BENCH_NOISE_MB` and `PGHA_BENCH_LOAD_SECS` shrink it
//! for a quick try. Writes the figures into BENCHMARKS.md between the `archive` markers.

#[allow(dead_code)]
#[path = "../tests/agent/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/common/eventually.rs"]
mod eventually;
#[path = "support/peers.rs"]
mod peers;
#[path = "../tests/archive/postmaster.rs"]
mod postmaster;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/archive/s3.rs"]
mod s3;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Workspace, socket_client};
use peers::{Peers, timed};
use pgha::agent::settings::ArchiveCommands;
use pgha::agent::{Desired, Settings};
use pgha::plan::wal::parse_lsn;
use report::{knob, mb_per_s, secs};
use s3::{BUCKET, S3};
use tokio_postgres::Client;

const PGHA: &str = env!("CARGO_BIN_EXE_pgha");
/// Each base backup is taken this many times, the tools taking turns at going first.
const ROUNDS: usize = 3;

/// The tools, in the order of the report, and the instance each restores into.
const TOOLS: [&str; 4] = ["pgha", "pg_basebackup", "barman-cloud", "pgBackRest"];
const RESTORED: [&str; 4] = ["pgha", "", "barman", "pgbackrest"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = knob("PGHA_BENCH_SCALE", 100);
    let noise_mb = knob("PGHA_BENCH_NOISE_MB", 256);
    let load_secs = knob("PGHA_BENCH_LOAD_SECS", 300);

    let s3 = S3::start();
    let ws = Workspace::new(&["src", "pgha", "barman", "pgbackrest"]);
    let pgha_store = format!("--store {}", s3.store_file().display());
    let archive = ArchiveCommands::new(Path::new(PGHA), &s3.store_file());
    // Loading goes unarchived; the archive_command that feeds all three tools is set after.
    let settings = Settings {
        archive: Some(ArchiveCommands {
            push: "/bin/true".into(),
            ..archive
        }),
        ..ws.settings("src")
    };
    let src = ws.start_with(settings.clone(), Desired::Primary).await;
    let peers = Peers::start(
        &ws.dir.path().join("peers"),
        s3.port(),
        BUCKET,
        &settings.data_dir,
        &settings.run_dir,
    );
    let client = socket_client(&settings).await.unwrap();
    let size = load(&ws, &client, scale, noise_mb).await;
    timed(&format!("{} stanza-create", peers.pgbackrest()));
    let chain = peers.archive_command(&archive.push, BUCKET);
    for sql in [
        format!("ALTER SYSTEM SET archive_command = {}", quote(&chain)),
        "SELECT pg_reload_conf()".into(),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    archive_now(&ws, &client).await;

    // Base backups.
    let backup_scripts = [
        format!(
            "{PGHA} backup {pgha_store} --pgdata {} --host {} --port 5432 --parallel 4",
            settings.data_dir.display(),
            settings.run_dir.display()
        ),
        format!(
            "rm -rf {0} && PGPASSWORD={1} {2}/pg_basebackup -D {0} -Ft -z -c fast -h {3} \
             -U streaming_replica",
            ws.dir.path().join("pg_basebackup").display(),
            cluster::credentials().replication.expose(),
            settings.bin_dir.display(),
            ws.endpoint("src").host
        ),
        format!(
            "{} --snappy -h {} -p 5432 -U postgres {}",
            peers.barman("backup"),
            settings.run_dir.display(),
            peers.barman_target(BUCKET)
        ),
        format!("{} --type=full backup", peers.pgbackrest()),
    ];
    let mut backups: Vec<Vec<Duration>> = vec![Vec::new(); TOOLS.len()];
    let begin_lsn = current_lsn(&client).await;
    for round in 0..ROUNDS {
        for i in (0..TOOLS.len()).map(|i| (i + round) % TOOLS.len()) {
            let took = timed(&backup_scripts[i]);
            println!("backup {round} {}: {took:?}", TOOLS[i]);
            backups[i].push(took);
        }
    }
    let stored = [
        dir_size(&s3.object_file("base")) / ROUNDS as u64,
        dir_size(&ws.dir.path().join("pg_basebackup")),
        dir_size(
            &s3.bucket_dir()
                .join("barman")
                .join(peers::STANZA)
                .join("base"),
        ) / ROUNDS as u64,
        dir_size(
            &s3.bucket_dir()
                .join("pgbackrest/backup")
                .join(peers::STANZA),
        ) / ROUNDS as u64,
    ];

    // Writes, archived by every tool.
    let load_started = Instant::now();
    let pgbench = ws
        .pgbench(
            "src",
            &["-c", "4", "-j", "2", "-n", "-T", &load_secs.to_string()],
        )
        .status()
        .await
        .unwrap();
    assert!(pgbench.success());
    println!("load: {:?}", load_started.elapsed());
    let end_lsn = current_lsn(&client).await;
    archive_now(&ws, &client).await;
    let expected = history(&client).await;
    drop(client);
    src.fence().await.unwrap();
    let wal_bytes = end_lsn - begin_lsn;

    // Restores: each tool's newest backup, then replay of its own archive to the end.
    let restore_scripts = [
        format!(
            "{PGHA} restore {pgha_store} --pgdata {} --owner postgres --parallel 4",
            ws.settings("pgha").data_dir.display()
        ),
        String::new(),
        barman_restore(&ws, &peers),
        format!(
            "install -d -m 700 -o postgres {dest} && {0} --pg1-path={dest} \
             --recovery-option=restore_command='{0} --pg1-path={dest} archive-get %f \"%p\"' restore",
            peers.pgbackrest(),
            dest = ws.settings("pgbackrest").data_dir.display(),
        ),
    ];
    let mut restores = vec![None; TOOLS.len()];
    for (i, script) in restore_scripts.iter().enumerate() {
        if script.is_empty() {
            continue;
        }
        let restore = timed(script);
        let (replay, rows) = replay(&ws, RESTORED[i]).await;
        assert_eq!(rows, expected, "{} restored every transaction", TOOLS[i]);
        println!("restore {}: files {restore:?}, replay {replay:?}", TOOLS[i]);
        restores[i] = Some((restore, replay));
    }

    let report = render(&Figures {
        scale,
        noise_mb,
        load_secs,
        size,
        backups,
        stored,
        wal_bytes,
        restores,
    });
    println!("{report}");
    report::write_section("archive", "Continuous archiving", &report);
}

/// pgbench tables at `scale` plus `noise_mb` of random bytes; returns the database size.
async fn load(ws: &Workspace, client: &Client, scale: u64, noise_mb: u64) -> u64 {
    let init = ws
        .pgbench("src", &["-i", "-q", "-s", &scale.to_string()])
        .status()
        .await
        .unwrap();
    assert!(init.success());
    client
        .batch_execute(&format!(
            "CREATE EXTENSION pgcrypto;
             CREATE TABLE noise AS SELECT g AS id, gen_random_bytes(1024) AS b
               FROM generate_series(1, {noise_mb} * 1024) g;
             CHECKPOINT;"
        ))
        .await
        .unwrap();
    client
        .query_one(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as u64
}

/// barman-cloud-restore of the newest backup, then what barman leaves to the user: the
/// owner, recovery.signal and a restore_command.
fn barman_restore(ws: &Workspace, peers: &Peers) -> String {
    let dest = ws.settings("barman").data_dir;
    format!(
        "id=$({list} --format json {target} | python3 -c 'import json,sys; \
         print(json.load(sys.stdin)[\"backups_list\"][-1][\"backup_id\"])') && \
         {restore} {target} $id {dest} && touch {dest}/recovery.signal && \
         echo \"restore_command = '{fetch} {target} %f %p'\" >> {dest}/postgresql.auto.conf && \
         chown -R postgres:postgres {dest}",
        list = peers.barman("backup-list"),
        restore = peers.barman("restore"),
        fetch = peers.barman("wal-restore"),
        target = peers.barman_target(BUCKET),
        dest = dest.display(),
    )
}

/// Starts Postgres on a restored directory and waits until it has replayed the archive and
/// promoted; returns how long that took and the pgbench transactions it holds.
async fn replay(ws: &Workspace, name: &str) -> (Duration, i64) {
    let settings = ws.settings(name);
    let started = Instant::now();
    let mut postmaster = postmaster::start_postgres(ws, &settings);
    let client = loop {
        if let Ok(Some(status)) = postmaster.try_wait() {
            panic!("{name}: postgres exited ({status}):\n{}", ws.log(name));
        }
        if let Ok(client) = socket_client(&settings).await
            && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let rows = history(&client).await;
    let _ = postmaster.kill().await;
    (took, rows)
}

async fn history(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0)
}

async fn current_lsn(client: &Client) -> u64 {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap();
    parse_lsn(row.get(0)).unwrap()
}

/// Ends the current segment and waits until all three tools have archived it.
async fn archive_now(ws: &Workspace, client: &Client) {
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let row = client
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, String>(0) >= segment {
            return;
        }
        let log = ws.log("src");
        assert!(
            row.get::<_, i64>(1) < 5 && Instant::now() < deadline,
            "{segment} is not archived:\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| dir_size(&e.unwrap().path()))
        .sum()
}

struct Figures {
    scale: u64,
    noise_mb: u64,
    load_secs: u64,
    size: u64,
    /// Per tool, each round's backup time.
    backups: Vec<Vec<Duration>>,
    stored: [u64; 4],
    wal_bytes: u64,
    /// Per tool: file restore, then replay to promotion.
    restores: Vec<Option<(Duration, Duration)>>,
}

fn render(f: &Figures) -> String {
    let gb = |bytes: u64| bytes as f64 / 1e9;
    let ours = report::median(&f.backups[0]);
    let mut out = format!(
        "{header}Database: pgbench scale {scale} plus {noise} MB of random bytes, {size:.2} GB \
         (`sum(pg_database_size)`); object store: s3s-fs on loopback (pgBackRest through \
         stunnel for TLS).\n\n\
         | base backup | runs | median | MB/s | stored | pgha is faster by |\n|---|---|---|---|---|---|\n",
        header = report::header("cargo bench --bench archive"),
        scale = f.scale,
        noise = f.noise_mb,
        size = gb(f.size),
    );
    let names = [
        "`pgha archive backup` (zstd 1, 4 files in parallel, small files bundled, to S3)",
        "`pg_basebackup -Ft -z` (gzip, to local disk)",
        "`barman-cloud-backup --snappy` (to S3)",
        "pgBackRest `backup --type=full` (lz4, process-max 2, bundles, to S3)",
    ];
    for (i, name) in names.iter().enumerate() {
        let median = report::median(&f.backups[i]);
        out.push_str(&format!(
            "| {name} | {runs} | {t} | {rate:.0} | {stored:.2} GB | {ratio} |\n",
            runs = f.backups[i].len(),
            t = secs(median),
            rate = mb_per_s(f.size, median),
            stored = gb(f.stored[i]),
            ratio = if i == 0 {
                "—".to_string()
            } else {
                format!("{:.2}×", median.as_secs_f64() / ours.as_secs_f64())
            },
        ));
    }
    out.push_str(&format!(
        "\nThen {load} s of `pgbench -c 4 -j 2` wrote {wal:.2} GB of WAL, archived by all three \
         tools. Each restores its newest backup into an empty directory, then Postgres replays \
         that tool's archive to the end and promotes; every restored copy holds every pgbench \
         transaction (checked).\n\n\
         | restore + replay | restore files | replay to promotion | total | WAL MB/s | pgha is faster by |\n\
         |---|---|---|---|---|---|\n",
        load = f.load_secs,
        wal = gb(f.wal_bytes),
    ));
    let total = |i: usize| f.restores[i].map(|(a, b)| a + b);
    let our_total = total(0).unwrap();
    for (i, name) in [
        "pgha (`restore`, `wal-fetch` prefetching 8)",
        "",
        "barman-cloud (`restore`, `wal-restore`)",
        "pgBackRest (`restore`, `archive-get`)",
    ]
    .iter()
    .enumerate()
    {
        let Some((files, replay)) = f.restores[i] else {
            continue;
        };
        let all = files + replay;
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {:.0} | {} |\n",
            secs(files),
            secs(replay),
            secs(all),
            mb_per_s(f.wal_bytes, replay),
            if i == 0 {
                "—".to_string()
            } else {
                format!("{:.2}×", all.as_secs_f64() / our_total.as_secs_f64())
            },
        ));
    }
    out.push_str(
        "\n`pgha archive backup` and pgBackRest wait until the backup's last WAL segment is archived \
         (Postgres's archive_command runs all three tools in turn, about a second of it being \
         barman-cloud's Python start-up); barman-cloud does not wait. pg_basebackup writes to \
         local disk, not to the object store. \"Faster by\" is the peer's time over pgha's.\n",
    );
    out
}
