//! What the agent reports: read from Postgres's own views, never changing anything.

use serde::Serialize;
use tokio_postgres::Client;

use super::error::{AgentError, Result};
use super::postmaster::PostmasterStatus;
use crate::api::instance::InstanceRole;
use crate::plan::wal::parse_lsn;

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub name: String,
    pub role: InstanceRole,
    /// Accepting the connections its role should accept.
    pub ready: bool,
    pub postmaster: PostmasterStatus,
    #[serde(flatten)]
    pub server: Option<ServerStatus>,
    /// The last operation that failed, and why.
    pub last_error: Option<String>,
    /// Things the agent did that someone should know about (a re-clone, a folder kept aside).
    pub notes: Vec<String>,
    /// The host this replica last streamed WAL from since the agent started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streamed_from: Option<String>,
    /// Whether Postgres runs on the ordered configuration.
    pub config: super::ConfigState,
    /// When this agent last set the passwords of the cluster's Secrets (as primary).
    pub passwords_set_at: Option<k8s_openapi::jiff::Timestamp>,
    /// The promises not to be promoted this member keeps to a primary that cannot renew
    /// its Lease (see `agent::peers`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub promises: Vec<crate::plan::vouch::PromiseReport>,
}

/// What a running server says about itself.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    pub system_identifier: String,
    /// The primary's insert position.
    pub current_lsn: Option<String>,
    pub received_lsn: Option<String>,
    pub replayed_lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub upstream: Option<Upstream>,
    pub standbys: Vec<Standby>,
    pub slots: Vec<Slot>,
    /// Parameters whose new value waits for a restart.
    pub pending_restart: Vec<String>,
    /// WAL archiving, when `archive_mode` is on.
    pub archiver: Option<Archiver>,
}

/// `pg_stat_archiver`, and the backlog that fills the disk while the archive is away.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Archiver {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<String>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_at: Option<String>,
    /// WAL files waiting to be archived (`.ready` in `pg_wal/archive_status`), which Postgres
    /// keeps until they are.
    pub pending: i64,
    /// What the last failed `pgha wal-push` said (gone after a success).
    pub last_error: Option<String>,
    /// The archive's owner record while pushes are refused because it is another database's.
    pub foreign_owner: Option<crate::api::common::ArchiveOwner>,
}

/// A replica's WAL receiver.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    pub status: String,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub received_timeline: Option<u32>,
}

/// A standby connected to this server.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Standby {
    pub name: String,
    pub address: Option<String>,
    pub state: Option<String>,
    pub sent_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    pub sync_state: Option<String>,
    pub lag_bytes: Option<u64>,
    /// How long the standby took to replay what it was last sent (`replay_lag`; unset once
    /// it has caught up and the primary is idle).
    pub replay_lag_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub name: String,
    pub active: bool,
    pub restart_lsn: Option<String>,
}

const SERVER: &str = "SELECT pg_is_in_recovery(),
        (SELECT system_identifier::text FROM pg_control_system()),
        ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name)";
const PRIMARY: &str = "SELECT pg_current_wal_lsn()::text,
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";
const REPLICA: &str = "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
        CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
             ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END,
        (SELECT timeline_id FROM pg_control_checkpoint())";
const RECEIVER: &str = "SELECT status, sender_host, sender_port, received_tli, latest_end_lsn::text
        FROM pg_stat_wal_receiver";
const STANDBYS: &str = "SELECT application_name, client_addr::text, state, sent_lsn::text,
        flush_lsn::text, replay_lsn::text, sync_state,
        CASE WHEN pg_is_in_recovery() THEN NULL
             ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END,
        extract(epoch FROM replay_lag)::float8
        FROM pg_stat_replication ORDER BY application_name";
const ARCHIVER: &str = "SELECT archived_count, last_archived_wal, last_archived_time::text,
        failed_count, last_failed_wal, last_failed_time::text,
        (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
        FROM pg_stat_archiver WHERE current_setting('archive_mode') <> 'off'";
const SLOTS: &str = "SELECT slot_name::text, active, restart_lsn::text
        FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name";

pub async fn server(client: &Client) -> Result<ServerStatus> {
    let q = AgentError::sql("reading status");
    // Pipelined on the one connection: a round trip each would cost more than the reads.
    let (row, standbys, slots, archiver) = tokio::try_join!(
        async { client.query_one(SERVER, &[]).await.map_err(q) },
        standbys(client),
        slots(client),
        archiver(client),
    )?;
    let mut status = ServerStatus {
        in_recovery: row.get(0),
        timeline: None,
        system_identifier: row.get(1),
        current_lsn: None,
        received_lsn: None,
        replayed_lsn: None,
        lag_bytes: None,
        lag_seconds: None,
        upstream: None,
        standbys,
        slots,
        pending_restart: row.get(2),
        archiver,
    };
    if status.in_recovery {
        replica(client, &mut status).await?;
    } else {
        let row = client
            .query_one(PRIMARY, &[])
            .await
            .map_err(AgentError::sql("reading the primary's position"))?;
        status.current_lsn = row.get(0);
        status.timeline = row
            .get::<_, Option<i32>>(1)
            .and_then(|t| u32::try_from(t).ok());
    }
    Ok(status)
}

async fn replica(client: &Client, status: &mut ServerStatus) -> Result<()> {
    let (row, receiver) = tokio::try_join!(
        async {
            let read = client.query_one(REPLICA, &[]).await;
            read.map_err(AgentError::sql("reading the replica's position"))
        },
        async {
            let read = client.query_opt(RECEIVER, &[]).await;
            read.map_err(AgentError::sql("reading the WAL receiver"))
        },
    )?;
    status.received_lsn = row.get(0);
    status.replayed_lsn = row.get(1);
    status.lag_seconds = row.get(2);
    let checkpoint_timeline: Option<i32> = row.get(3);
    let replayed = status.replayed_lsn.as_deref().and_then(parse_lsn);
    let mut ahead = status.received_lsn.as_deref().and_then(parse_lsn);
    if let Some(row) = receiver {
        let received_timeline = row
            .get::<_, Option<i32>>(3)
            .and_then(|t| u32::try_from(t).ok());
        // The sender's end of WAL, as last reported: lag counts what is not even received yet.
        let sender_end = row
            .get::<_, Option<String>>(4)
            .as_deref()
            .and_then(parse_lsn);
        ahead = ahead.max(sender_end);
        status.timeline = received_timeline;
        status.upstream = Some(Upstream {
            status: row.get(0),
            host: row.get(1),
            port: row.get(2),
            received_timeline,
        });
    }
    if status.timeline.is_none() {
        status.timeline = checkpoint_timeline.and_then(|t| u32::try_from(t).ok());
    }
    status.lag_bytes = match (ahead, replayed) {
        (Some(ahead), Some(replayed)) => Some(ahead.saturating_sub(replayed)),
        _ => None,
    };
    Ok(())
}

async fn standbys(client: &Client) -> Result<Vec<Standby>> {
    let rows = client
        .query(STANDBYS, &[])
        .await
        .map_err(AgentError::sql("reading connected standbys"))?;
    Ok(rows
        .iter()
        .map(|row| Standby {
            name: row.get(0),
            address: row.get(1),
            state: row.get(2),
            sent_lsn: row.get(3),
            flush_lsn: row.get(4),
            replay_lsn: row.get(5),
            sync_state: row.get(6),
            lag_bytes: row
                .get::<_, Option<i64>>(7)
                .and_then(|b| u64::try_from(b).ok()),
            replay_lag_seconds: row.get(8),
        })
        .collect())
}

async fn archiver(client: &Client) -> Result<Option<Archiver>> {
    let row = client
        .query_opt(ARCHIVER, &[])
        .await
        .map_err(AgentError::sql("reading the archiver"))?;
    Ok(row.map(|row| Archiver {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_at: row.get(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_at: row.get(5),
        pending: row.get(6),
        last_error: None,
        foreign_owner: None,
    }))
}

async fn slots(client: &Client) -> Result<Vec<Slot>> {
    let rows = client
        .query(SLOTS, &[])
        .await
        .map_err(AgentError::sql("reading replication slots"))?;
    Ok(rows
        .iter()
        .map(|row| Slot {
            name: row.get(0),
            active: row.get(1),
            restart_lsn: row.get(2),
        })
        .collect())
}
