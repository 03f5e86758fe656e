//! `pgha verify`: a restore drill, the process of the throwaway pod the operator starts for
//! `spec.backup.verify`. It restores the newest backup into its own (empty) volume, replays the
//! archive to its end, checks the result (`agent::restore::check`) and serves the outcome at
//! `GET /result` until the operator has read it and deletes the pod. Nothing is written to
//! the archive: the drill runs without `archive_command`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use axum::Json;
use axum::routing::get;
use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::agent::restore::{self, Checked};
use crate::agent::{RunAs, Settings, Timeouts, pgbin};
use crate::api::cluster::{DrillResult, RecoverySource, RecoverySpec, VerifiedRestore};
use crate::plan::agent::{PostgresConfig, S3Spec};
use crate::plan::instance;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The cluster's object store as JSON: its `spec.backup.s3` with `path` filled in.
    #[arg(long)]
    archive: String,
    /// The mounted Secret with the store's keys.
    #[arg(long, default_value = instance::ARCHIVE_CREDENTIALS_DIR)]
    credentials_dir: PathBuf,
    /// An empty folder on the throwaway volume.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "/run/pgha")]
    run_dir: PathBuf,
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// Postgres's bin directory; found under /usr/lib/postgresql when not given.
    #[arg(long, env = "PGHA_PG_BIN")]
    pg_bin: Option<PathBuf>,
    /// Run Postgres as this user (when running as root).
    #[arg(long)]
    run_as: Option<String>,
    /// Where `GET /result` is served.
    #[arg(long)]
    result_addr: SocketAddr,
}

pub fn run(args: VerifyArgs) -> Result<(), Box<dyn std::error::Error>> {
    super::init_tracing();
    let s3: S3Spec = serde_json::from_str(&args.archive)
        .map_err(|e| format!("--archive: not an object store ({e})"))?;
    let settings = Settings {
        name: "restore-drill".into(),
        data_dir: args.data_dir,
        run_dir: args.run_dir,
        // The socket only: nothing connects to a drill from outside.
        listen_address: String::new(),
        port: args.port,
        bin_dir: args
            .pg_bin
            .or_else(pgbin::find_bin_dir)
            .ok_or("no PostgreSQL found under /usr/lib/postgresql; pass --pg-bin")?,
        run_as: args.run_as.as_deref().map(RunAs::user).transpose()?,
        log_file: None,
        timeouts: Timeouts::default(),
        archive: None,
        source_credentials_dir: args.credentials_dir,
        tls: None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.result_addr).await?;
        let outcome = drill(&settings, s3).await;
        tracing::info!(?outcome.result, message = %outcome.message, "restore drill over");
        let app = axum::Router::new().route("/result", get(move || async move { Json(outcome) }));
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn drill(settings: &Settings, s3: S3Spec) -> VerifiedRestore {
    let started = Time(k8s_openapi::jiff::Timestamp::now());
    let clock = Instant::now();
    let recovery = RecoverySpec {
        source: RecoverySource { s3 },
        target: None,
        database: None,
        owner: None,
    };
    let config = PostgresConfig::default();
    let (result, message, backup, recovered_to) =
        match restore::restore(settings, &config, &recovery, &settings.data_dir).await {
            Err(e) => (
                DrillResult::Failed,
                format!("restore failed: {e}"),
                None,
                None,
            ),
            Ok(backup) => match restore::check(settings).await {
                Err(e) => (
                    DrillResult::Failed,
                    format!("backup {backup} restored, but the check failed: {e}"),
                    Some(backup),
                    None,
                ),
                Ok(Checked {
                    recovered_to,
                    databases,
                }) => {
                    let message = format!(
                        "restored backup {backup} and replayed the archive to {recovered_to}; \
                         Postgres started, {} databases ({}) passed pg_amcheck, pg_checksums \
                         found every block intact",
                        databases.len(),
                        databases.join(", ")
                    );
                    (
                        DrillResult::Passed,
                        message,
                        Some(backup),
                        Some(recovered_to),
                    )
                }
            },
        };
    VerifiedRestore {
        result,
        backup,
        recovered_to,
        started,
        duration_seconds: Some(clock.elapsed().as_secs() as i64),
        message,
    }
}
