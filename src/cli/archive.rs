//! `pgha wal-push`, `wal-fetch`, `backup`, `restore`, `catalog` and `retention`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::agent::RunAs;
use crate::api::backup::BackupProgress;
use crate::archive::backup::{self, BackupOptions};
use crate::archive::restore::{self, RestoreOptions};
use crate::archive::wal::{self, Fetched};
use crate::archive::{ArchiveError, Store, StoreConfig, catalog, retention};
use crate::archive::{owner, prefetch};
use crate::plan::config::{foreign_owner_file, push_error_file};
use crate::plan::prefetch::Limits;
use crate::plan::recovery::Target;
use crate::plan::retention::{Policy, parse_window};
use crate::plan::wal::{DEFAULT_SEGMENT_SIZE, parse_lsn};

type Failure = Box<dyn std::error::Error>;

#[derive(Args, Debug)]
pub struct StoreArg {
    /// The archive's location and credentials, a YAML file (bucket, path, endpoint, region,
    /// credentialsDir, caFile, pathStyle).
    #[arg(long, env = "PGHA_STORE")]
    store: PathBuf,
}

impl StoreArg {
    fn config(&self) -> Result<StoreConfig, Failure> {
        Ok(StoreConfig::from_file(&self.store)?)
    }

    fn open(&self) -> Result<Store, Failure> {
        Ok(Store::new(&self.config()?)?)
    }
}

#[derive(Args, Debug)]
pub struct WalPushArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Also push up to this many other files Postgres has marked ready, in parallel.
    #[arg(long, default_value_t = 4)]
    ahead: usize,
    #[arg(long, default_value_t = DEFAULT_SEGMENT_SIZE)]
    wal_segment_size: u64,
    /// The file to archive (`%p`).
    path: PathBuf,
}

#[derive(Args, Debug)]
pub struct WalFetchArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Segments fetched ahead in parallel.
    #[arg(long, default_value_t = 8)]
    prefetch: usize,
    #[arg(long, default_value_t = DEFAULT_SEGMENT_SIZE)]
    wal_segment_size: u64,
    /// Report every failure as "not in the archive" (exit 1) instead of stopping recovery
    /// (exit 128): for a streaming standby, which then goes back to streaming and asks again,
    /// where stopping would shut it down for as long as the store is unreachable.
    #[arg(long)]
    standby: bool,
    /// The file Postgres asks for (`%f`).
    name: String,
    /// Where to put it (`%p`).
    dest: PathBuf,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The data directory of the instance.
    #[arg(long, env = "PGDATA")]
    pgdata: PathBuf,
    /// Socket directory of the instance.
    #[arg(long, default_value = "/run/pgha")]
    host: String,
    #[arg(long, default_value_t = 5432)]
    port: u16,
    #[arg(long, default_value = "postgres")]
    user: String,
    /// Files read and uploaded in parallel.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Seconds to wait for the backup's last WAL segment to be archived.
    #[arg(long, default_value_t = 300)]
    archive_wait: u64,
    /// Print the result as one line of JSON (id, timeline, LSNs, sizes), for the agent.
    #[arg(long)]
    json: bool,
    /// Keep how far the backup is in this file (JSON: bytesDone, bytesTotal, bytesPerSecond),
    /// rewritten every `--progress-interval-ms`.
    #[arg(long)]
    progress_file: Option<PathBuf>,
    /// How often the progress file is rewritten: often enough to see it move, seldom enough
    /// that the status it feeds is not rewritten every second.
    #[arg(long, default_value_t = 3000)]
    progress_interval_ms: u64,
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print the backup ids and the recoverability window as one line of JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    store: StoreArg,
    /// An empty (or absent) data directory to restore into.
    #[arg(long, env = "PGDATA")]
    pgdata: PathBuf,
    /// Stop after the last commit before this time (RFC 3339, e.g. 2026-11-22T14:03:00Z).
    #[arg(long, group = "target")]
    target_time: Option<DateTime<Utc>>,
    /// Stop at this WAL location (e.g. 0/3000060).
    #[arg(long, group = "target")]
    target_lsn: Option<String>,
    /// Stop at this restore point (pg_create_restore_point).
    #[arg(long, group = "target")]
    target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    target_immediate: bool,
    /// Files downloaded in parallel.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Give the restored files to this user (Postgres's, when restoring as root).
    #[arg(long)]
    owner: Option<String>,
}

#[derive(Args, Debug)]
pub struct WalPrefetchArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The `pg_wal` directory of the replaying server: the spool is its `pgha-prefetch`.
    #[arg(long)]
    pg_wal: PathBuf,
    /// Segments kept downloaded ahead of replay (the spool's cap: this many segments).
    #[arg(long, default_value_t = Limits::default().depth)]
    depth: u64,
    /// Downloads at the same time.
    #[arg(long, default_value_t = Limits::default().parallel)]
    parallel: usize,
    #[arg(long, default_value_t = DEFAULT_SEGMENT_SIZE)]
    wal_segment_size: u64,
    /// Give the spooled files to this user (Postgres's, when running as root).
    #[arg(long)]
    owner: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Keep at least this many of the newest backups.
    #[arg(long)]
    count: Option<usize>,
    /// Keep what restoring to any point of this window needs (e.g. 30d, 36h, 2w).
    #[arg(long)]
    window: Option<String>,
    /// List what would be deleted and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `archive_command`: exit 0 only once the file is safely in the archive; anything else makes
/// Postgres keep the file and retry.
/// The last failure is also left in `<store file>.error` (removed by the next success), and
/// the archive's owner record in `<store file>.foreign-owner` while it is another database's:
/// the agent reads both for the cluster's `ContinuousArchiving` condition.
pub fn wal_push(args: WalPushArgs) -> Result<ExitCode, Failure> {
    let pushed = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let config = args.store.config()?;
            let store = Store::new(&config)?;
            claim_once(&store, &config, &args.store.store, &args.path).await?;
            Ok(wal::push_ahead(&store, &args.path, args.ahead, args.wal_segment_size).await?)
        })
    });
    let error_file = push_error_file(&args.store.store);
    let owner_file = foreign_owner_file(&args.store.store);
    match &pushed {
        Ok(_) => {
            let _ = std::fs::remove_file(&error_file);
            let _ = std::fs::remove_file(&owner_file);
        }
        Err(e) => {
            let _ = std::fs::write(&error_file, e.to_string());
            match e.downcast_ref() {
                Some(ArchiveError::OwnedByOther { owner, .. }) => {
                    let _ = std::fs::write(&owner_file, serde_json::to_vec(owner)?);
                }
                // This failure has another cause: the owner file would mislabel it.
                _ => {
                    let _ = std::fs::remove_file(&owner_file);
                }
            }
        }
    }
    pushed.map(|_| ExitCode::SUCCESS)
}

/// Claims the archive for this database (`owner::claim`) on the first push, remembered in
/// `<store file>.owner` so later pushes cost no extra request. `%p` is `pg_wal/<file>`,
/// relative to the data directory.
async fn claim_once(
    store: &Store,
    config: &StoreConfig,
    store_file: &Path,
    wal: &Path,
) -> Result<(), Failure> {
    let data_dir = wal
        .parent()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let writer = owner::this_database(data_dir, config.cluster.as_ref())?;
    let mut remembered = store_file.as_os_str().to_owned();
    remembered.push(".owner");
    // Keyed by the place too: a store file moved to a new path or server claims it first.
    let claimed = format!(
        "{} {} {} s3://{}/{}",
        writer.system_identifier,
        writer.cluster.as_ref().map_or("", |c| c.uid.as_str()),
        config.endpoint.as_deref().unwrap_or("aws"),
        config.bucket,
        config.path
    );
    if std::fs::read_to_string(&remembered).ok().as_deref() == Some(&claimed) {
        return Ok(());
    }
    owner::claim(store, &writer).await?;
    // Best effort: without it the next push checks again.
    let _ = std::fs::write(&remembered, &claimed);
    Ok(())
}

/// Exit status Postgres reads as "abort recovery" (above 125) rather than "not found".
const ABORT_RECOVERY: u8 = 128;

/// `restore_command`: 0 restored, 1 not in the archive (quietly: Postgres asks for files that
/// do not exist as a matter of course), 128 for anything else so that recovery stops rather
/// than ending early on a broken or unreachable archive (1 with `--standby`).
pub fn wal_fetch(args: WalFetchArgs) -> ExitCode {
    // What the prefetcher has is taken before the store is even opened: that costs more
    // than the move, and this runs once per segment.
    let spooled = wal::take_spooled(&args.name, &args.dest, args.wal_segment_size);
    let fetched = spooled.map_err(Failure::from).and_then(|taken| {
        if taken {
            return Ok(Fetched::Restored);
        }
        let store = args.store.open()?;
        Ok(runtime()?.block_on(wal::fetch(
            &store,
            &args.name,
            &args.dest,
            args.prefetch,
            args.wal_segment_size,
        ))?)
    });
    match fetched {
        Ok(Fetched::Restored) => ExitCode::SUCCESS,
        Ok(Fetched::NotFound) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pgha wal-fetch {}: {e}", args.name);
            ExitCode::from(if args.standby { 1 } else { ABORT_RECOVERY })
        }
    }
}

pub fn backup(args: BackupArgs) -> Result<ExitCode, Failure> {
    let config = args.store.config()?;
    let (manifest, archive) = runtime()?.block_on(async {
        let store = Store::new(&config)?;
        // A backup into another database's archive would be restored with its WAL.
        let writer = owner::this_database(&args.pgdata, config.cluster.as_ref())?;
        owner::claim(&store, &writer).await?;
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&args.host)
            .port(args.port)
            .user(&args.user)
            .dbname("postgres")
            .application_name("pgha-backup")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        let options = BackupOptions {
            parallel: args.parallel,
            archive_wait: Duration::from_secs(args.archive_wait),
            ..BackupOptions::default()
        };
        let shown = args.progress_file.clone().map(|file| {
            let every = Duration::from_millis(args.progress_interval_ms.max(10));
            tokio::spawn(show_progress(options.progress.clone(), file, every))
        });
        let manifest = backup::take(&store, &client, &args.pgdata, &options).await;
        if let Some(shown) = shown {
            shown.abort();
        }
        let manifest = manifest?;
        Ok::<_, Failure>((manifest, store.location()))
    })?;
    if args.json {
        let summary = serde_json::json!({
            "backupId": manifest.id,
            "archive": archive,
            "timeline": manifest.timeline,
            "beginLsn": manifest.begin_lsn,
            "endLsn": manifest.end_lsn,
            "sizeBytes": manifest.size_bytes,
            "storedBytes": manifest.stored_bytes,
        });
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "backup {} of timeline {}: {} to {}, {} files, {} bytes read, {} stored",
        manifest.id,
        manifest.timeline,
        manifest.begin_lsn,
        manifest.end_lsn,
        manifest.files.len(),
        manifest.size_bytes,
        manifest.stored_bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// Rewrites `file` with `progress` `every` so long (through a temporary file, so a reader
/// never sees half of it), until aborted.
async fn show_progress(progress: Arc<backup::Progress>, file: PathBuf, every: Duration) {
    let started = std::time::Instant::now();
    let partial = file.with_extension("partial");
    let mut shown_once = false;
    loop {
        // The first report as soon as the data directory is listed, then one per `every`.
        let pause = if shown_once {
            every
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
        let (done, total) = progress.get();
        if total == 0 {
            // The data directory is still being listed.
            continue;
        }
        shown_once = true;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let shown = BackupProgress {
            bytes_done: done as i64,
            bytes_total: total as i64,
            bytes_per_second: rate as i64,
            waiting_for_wal: progress.waiting_for(),
        };
        let json = serde_json::to_vec(&shown).expect("progress serializes");
        if std::fs::write(&partial, json).is_ok() {
            let _ = std::fs::rename(&partial, &file);
        }
    }
}

/// Keeps the segments replay will ask for next downloaded until killed (see
/// `archive::prefetch`); what the agent runs beside a Postgres that replays the archive.
pub fn wal_prefetch(args: WalPrefetchArgs) -> Result<ExitCode, Failure> {
    // Checked before it runs, so a broken store file fails here and not on every segment.
    args.store.open()?;
    let owner = args
        .owner
        .as_deref()
        .map(RunAs::user)
        .transpose()?
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    let limits = Limits {
        depth: args.depth,
        parallel: args.parallel,
        ..Limits::default()
    };
    runtime()?.block_on(prefetch::run(
        args.store.store.clone(),
        prefetch::spool_of(&args.pg_wal),
        args.wal_segment_size,
        limits,
        owner,
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode, Failure> {
    let store = args.store.open()?;
    let target = match (&args.target_time, &args.target_lsn, &args.target_name) {
        (Some(t), _, _) => Target::Time(*t),
        (_, Some(lsn), _) => Target::Lsn(parse_lsn(lsn).ok_or_else(|| {
            format!("--target-lsn {lsn}: expected a WAL location such as 0/3000060")
        })?),
        (_, _, Some(name)) => Target::Name(name.clone()),
        _ if args.target_immediate => Target::Immediate,
        _ => Target::Latest,
    };
    let owner = args
        .owner
        .as_deref()
        .map(RunAs::user)
        .transpose()?
        .map(|u| (u.uid, u.gid));
    let options = RestoreOptions {
        parallel: args.parallel,
        fetch_command: format!(
            "{} wal-fetch --store {}",
            self_path()?.display(),
            args.store.store.canonicalize()?.display()
        ),
        owner,
    };
    let restored =
        runtime()?.block_on(restore::restore(&store, &target, &args.pgdata, &options))?;
    println!(
        "restored backup {} ({} files) into {}; recovery settings in postgresql.auto.conf:",
        restored.backup.id,
        restored.backup.files.len(),
        args.pgdata.display()
    );
    for (key, value) in &restored.parameters {
        println!("  {key} = '{value}'");
    }
    println!("start Postgres on it to replay the archived WAL; it promotes at the target");
    Ok(ExitCode::SUCCESS)
}

pub fn catalog(args: CatalogArgs) -> Result<ExitCode, Failure> {
    let store = args.store.open()?;
    let catalog = runtime()?.block_on(catalog::read(&store))?;
    if args.json {
        let window = catalog.window();
        let summary = serde_json::json!({
            "backups": catalog.backups.iter().map(|b| &b.id).collect::<Vec<_>>(),
            "recoverableFrom": window.as_ref().map(|w| w.first_time.to_rfc3339()),
            "recoverableTo": window.as_ref().map(|w| w.last_time.to_rfc3339()),
        });
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", catalog.render());
    Ok(ExitCode::SUCCESS)
}

pub fn retention(args: RetentionArgs) -> Result<ExitCode, Failure> {
    if args.count.is_none() && args.window.is_none() {
        return Err("retention: give --count, --window or both".into());
    }
    let policy = Policy {
        count: args.count,
        window: args.window.as_deref().map(parse_window).transpose()?,
    };
    let store = args.store.open()?;
    let selection =
        runtime()?.block_on(retention::apply(&store, &policy, Utc::now(), args.dry_run))?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for id in &selection.backups {
        println!("{verb} backup {id}");
    }
    for name in &selection.wal {
        println!("{verb} WAL {name}");
    }
    println!(
        "{verb} {} backups and {} WAL files",
        selection.backups.len(),
        selection.wal.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn self_path() -> Result<PathBuf, Failure> {
    Ok(std::env::current_exe()?
        .canonicalize()
        .unwrap_or_else(|_| Path::new("pgha").to_path_buf()))
}
