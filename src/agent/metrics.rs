//! `/metrics` on the agent's port: what the status report says, plus the database counters a
//! Postgres dashboard expects, in the Prometheus text format. Names follow postgres_exporter
//! where it has one (so its dashboards work); the rest start with `pgha_`. Everything is read
//! at scrape time over the one connection the status report opens.

use std::sync::atomic::AtomicU64;

use futures::try_join;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_postgres::Client;

use super::error::{AgentError, Result};
use super::status::Status;
use crate::api::instance::InstanceRole;
use crate::plan::wal::parse_lsn;

/// Per database, from `pg_stat_database` and `pg_database_size`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Database {
    pub name: String,
    pub backends: i64,
    pub commits: i64,
    pub rollbacks: i64,
    pub deadlocks: i64,
    pub conflicts: i64,
    pub size_bytes: i64,
}

/// A standby's lag in time, as the primary sees it (`pg_stat_replication`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StandbyLag {
    pub name: String,
    pub write_seconds: Option<f64>,
    pub flush_seconds: Option<f64>,
    pub replay_seconds: Option<f64>,
}

/// What the status report does not carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub databases: Vec<Database>,
    /// Connections by state (`pg_stat_activity`, client backends).
    pub connections: Vec<(String, i64)>,
    pub checkpoints_timed: i64,
    pub checkpoints_requested: i64,
    pub standby_lags: Vec<StandbyLag>,
    /// Seconds since the WAL receiver last heard from its primary.
    pub receiver_message_age: Option<f64>,
    /// Seconds since the archiver last archived a file.
    pub last_archive_age: Option<f64>,
    /// Bytes of WAL each slot keeps, by slot name.
    pub slot_retained_bytes: Vec<(String, i64)>,
}

const DATABASES: &str =
    "SELECT d.datname::text, d.numbackends::bigint, d.xact_commit, d.xact_rollback,
        d.deadlocks, d.conflicts, pg_database_size(d.datid)
        FROM pg_stat_database d JOIN pg_database b ON b.oid = d.datid
        WHERE b.datallowconn ORDER BY 1";
const CONNECTIONS: &str = "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1";
const CHECKPOINTS: &str = "SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter";
const LAGS: &str = "SELECT application_name, extract(epoch FROM write_lag)::float8,
        extract(epoch FROM flush_lag)::float8, extract(epoch FROM replay_lag)::float8
        FROM pg_stat_replication ORDER BY 1";
const RECEIVER: &str =
    "SELECT extract(epoch FROM now() - last_msg_receipt_time)::float8 FROM pg_stat_wal_receiver";
const ARCHIVE_AGE: &str =
    "SELECT extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver";
const SLOTS: &str = "SELECT slot_name::text, pg_wal_lsn_diff(
        CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
        restart_lsn)::bigint
        FROM pg_replication_slots WHERE restart_lsn IS NOT NULL ORDER BY 1";

/// Reads the counters; the queries go out together (tokio-postgres pipelines them).
pub async fn counters(client: &Client) -> Result<Counters> {
    let (databases, connections, checkpoints, lags, receiver, archive, slots) = try_join!(
        client.query(DATABASES, &[]),
        client.query(CONNECTIONS, &[]),
        client.query_one(CHECKPOINTS, &[]),
        client.query(LAGS, &[]),
        client.query_opt(RECEIVER, &[]),
        client.query_opt(ARCHIVE_AGE, &[]),
        client.query(SLOTS, &[]),
    )
    .map_err(AgentError::sql("reading metrics"))?;
    Ok(Counters {
        databases: databases
            .iter()
            .map(|r| Database {
                name: r.get(0),
                backends: r.get(1),
                commits: r.get(2),
                rollbacks: r.get(3),
                deadlocks: r.get(4),
                conflicts: r.get(5),
                size_bytes: r.get(6),
            })
            .collect(),
        connections: connections.iter().map(|r| (r.get(0), r.get(1))).collect(),
        checkpoints_timed: checkpoints.get(0),
        checkpoints_requested: checkpoints.get(1),
        standby_lags: lags
            .iter()
            .map(|r| StandbyLag {
                name: r.get(0),
                write_seconds: r.get(1),
                flush_seconds: r.get(2),
                replay_seconds: r.get(3),
            })
            .collect(),
        receiver_message_age: receiver.and_then(|r| r.get(0)),
        last_archive_age: archive.and_then(|r| r.get(0)),
        slot_retained_bytes: slots
            .iter()
            .filter_map(|r| Some((r.get(0), r.get::<_, Option<i64>>(1)?)))
            .collect(),
    })
}

type Labels = Vec<(&'static str, String)>;

/// A per-database metric: name, help, and the value it takes from a [`Database`].
type PerDatabase = (&'static str, &'static str, fn(&Database) -> i64);

/// A registry being filled: one family per metric name.
struct Sheet {
    registry: Registry,
}

impl Sheet {
    /// A gauge family named `name`, with one sample per `(labels, value)`.
    fn gauge(&mut self, name: &str, help: &str, samples: Vec<(Labels, f64)>) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }

    /// A gauge without labels; absent when there is no value.
    fn value(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(value) = value {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(value);
            self.registry.register(name, help, gauge);
        }
    }
}

fn lsn_bytes(lsn: Option<&String>) -> Option<f64> {
    lsn.and_then(|l| parse_lsn(l)).map(|b| b as f64)
}

/// The text of `/metrics` for `status` and `counters` (None when Postgres does not run).
/// Every value is a gauge: a scrape reads Postgres's own counters, and postgres_exporter's
/// names for them carry no `_total`.
pub fn render(status: &Status, counters: Option<&Counters>) -> String {
    let mut sheet = Sheet {
        registry: Registry::default(),
    };
    let server = status.server.as_ref();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    sheet.value(
        "pg_up",
        "Whether Postgres answers",
        Some(flag(server.is_some())),
    );
    let roles = [
        InstanceRole::Primary,
        InstanceRole::Replica,
        InstanceRole::Fenced,
        InstanceRole::Stopped,
    ];
    sheet.gauge(
        "pgha_role",
        "1 for the role the instance has now (primary, replica, fenced, stopped)",
        roles
            .into_iter()
            .map(|r| {
                let name = serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (vec![("role", name)], flag(r == status.role))
            })
            .collect(),
    );
    sheet.value(
        "pgha_ready",
        "Whether the instance serves its role",
        Some(flag(status.ready)),
    );
    sheet.value(
        "pgha_fenced",
        "Whether the instance is fenced (Postgres stopped on purpose)",
        Some(flag(status.postmaster.fenced)),
    );
    sheet.value(
        "pgha_timeline",
        "The Postgres timeline",
        server.and_then(|s| s.timeline).map(f64::from),
    );
    sheet.value(
        "pgha_wal_lsn_bytes",
        "The WAL position: written on a primary, replayed on a replica",
        server.and_then(|s| lsn_bytes(s.current_lsn.as_ref().or(s.replayed_lsn.as_ref()))),
    );
    sheet.value(
        "pg_replication_is_replica",
        "Whether Postgres is in recovery",
        server.map(|s| flag(s.in_recovery)),
    );
    if let Some(server) = server {
        standby_metrics(&mut sheet, server, counters);
        replica_metrics(&mut sheet, server, counters);
        archiver_metrics(&mut sheet, server, counters);
    }
    if let Some(counters) = counters {
        database_metrics(&mut sheet, counters);
    }
    let mut text = String::new();
    // Writing into a String does not fail.
    let _ = encode(&mut text, &sheet.registry);
    text
}

/// Per standby, as the primary sees it.
fn standby_metrics(
    sheet: &mut Sheet,
    server: &super::status::ServerStatus,
    counters: Option<&Counters>,
) {
    let current = lsn_bytes(server.current_lsn.as_ref());
    let behind = |lsn: Option<&String>| Some(current? - lsn_bytes(lsn)?);
    let name = |n: &str| vec![("application_name", n.to_string())];
    let mut lag_bytes = Vec::new();
    let mut sync = Vec::new();
    for standby in &server.standbys {
        for (stage, lsn) in [
            ("sent", standby.sent_lsn.as_ref()),
            ("flush", standby.flush_lsn.as_ref()),
            ("replay", standby.replay_lsn.as_ref()),
        ] {
            if let Some(bytes) = behind(lsn) {
                let mut labels = name(&standby.name);
                labels.push(("stage", stage.to_string()));
                lag_bytes.push((labels, bytes));
            }
        }
        let mut labels = name(&standby.name);
        labels.push(("sync_state", standby.sync_state.clone().unwrap_or_default()));
        labels.push(("state", standby.state.clone().unwrap_or_default()));
        sync.push((labels, 1.0));
    }
    sheet.gauge(
        "pgha_standby_lag_bytes",
        "Bytes of WAL a standby has not yet been sent, flushed or replayed (seen from the primary)",
        lag_bytes,
    );
    sheet.gauge(
        "pgha_standby_info",
        "One per connected standby, with its replication state and sync state",
        sync,
    );
    let mut lag_seconds = Vec::new();
    for lag in counters
        .map(|c| c.standby_lags.as_slice())
        .unwrap_or_default()
    {
        for (stage, value) in [
            ("write", lag.write_seconds),
            ("flush", lag.flush_seconds),
            ("replay", lag.replay_seconds),
        ] {
            let mut labels = name(&lag.name);
            labels.push(("stage", stage.to_string()));
            // No lag reported means none measured since the last change: nothing behind.
            lag_seconds.push((labels, value.unwrap_or(0.0)));
        }
    }
    sheet.gauge(
        "pgha_standby_lag_seconds",
        "How long ago the WAL a standby last wrote, flushed or replayed was written (seen from the primary)",
        lag_seconds,
    );
}

/// A replica's own view of its upstream.
fn replica_metrics(
    sheet: &mut Sheet,
    server: &super::status::ServerStatus,
    counters: Option<&Counters>,
) {
    if !server.in_recovery {
        return;
    }
    sheet.value(
        "pg_replication_lag_seconds",
        "Seconds since the last replayed transaction, 0 when everything received is replayed",
        server.lag_seconds,
    );
    sheet.value(
        "pgha_replica_lag_bytes",
        "Bytes of WAL the primary has and this replica has not replayed",
        server.lag_bytes.map(|b| b as f64),
    );
    let streaming = server
        .upstream
        .as_ref()
        .is_some_and(|u| u.status == "streaming");
    sheet.value(
        "pgha_wal_receiver_streaming",
        "Whether the WAL receiver streams from the primary",
        Some(if streaming { 1.0 } else { 0.0 }),
    );
    sheet.value(
        "pgha_wal_receiver_last_message_age_seconds",
        "Seconds since the WAL receiver last heard from the primary",
        counters.and_then(|c| c.receiver_message_age),
    );
}

fn archiver_metrics(
    sheet: &mut Sheet,
    server: &super::status::ServerStatus,
    counters: Option<&Counters>,
) {
    let slots = counters
        .map(|c| c.slot_retained_bytes.clone())
        .unwrap_or_default();
    let active: Vec<(Labels, f64)> = server
        .slots
        .iter()
        .map(|s| {
            (
                vec![("slot_name", s.name.clone())],
                if s.active { 1.0 } else { 0.0 },
            )
        })
        .collect();
    sheet.gauge(
        "pg_replication_slots_active",
        "Whether a replication slot is in use",
        active,
    );
    sheet.gauge(
        "pg_replication_slots_pg_wal_lsn_diff",
        "Bytes of WAL a replication slot keeps",
        slots
            .into_iter()
            .map(|(name, bytes)| (vec![("slot_name", name)], bytes as f64))
            .collect(),
    );
    let Some(archiver) = &server.archiver else {
        return;
    };
    sheet.value(
        "pg_stat_archiver_archived_count",
        "WAL files archived",
        Some(archiver.archived_count as f64),
    );
    sheet.value(
        "pg_stat_archiver_failed_count",
        "Failed attempts to archive a WAL file",
        Some(archiver.failed_count as f64),
    );
    sheet.value(
        "pg_stat_archiver_last_archive_age",
        "Seconds since the last WAL file was archived",
        counters.and_then(|c| c.last_archive_age),
    );
    sheet.value(
        "pgha_archiver_pending_files",
        "WAL files waiting to be archived",
        Some(archiver.pending as f64),
    );
}

fn database_metrics(sheet: &mut Sheet, counters: &Counters) {
    let per = |f: fn(&Database) -> i64| -> Vec<(Labels, f64)> {
        counters
            .databases
            .iter()
            .map(|d| (vec![("datname", d.name.clone())], f(d) as f64))
            .collect()
    };
    let families: [PerDatabase; 6] = [
        (
            "pg_stat_database_numbackends",
            "Connections to the database",
            |d| d.backends,
        ),
        (
            "pg_stat_database_xact_commit",
            "Transactions committed",
            |d| d.commits,
        ),
        (
            "pg_stat_database_xact_rollback",
            "Transactions rolled back",
            |d| d.rollbacks,
        ),
        ("pg_stat_database_deadlocks", "Deadlocks detected", |d| {
            d.deadlocks
        }),
        (
            "pg_stat_database_conflicts",
            "Queries cancelled by recovery conflicts",
            |d| d.conflicts,
        ),
        (
            "pg_database_size_bytes",
            "Disk space the database uses",
            |d| d.size_bytes,
        ),
    ];
    for (name, help, value) in families {
        sheet.gauge(name, help, per(value));
    }
    sheet.gauge(
        "pg_stat_activity_count",
        "Client connections by state",
        counters
            .connections
            .iter()
            .map(|(state, n)| (vec![("state", state.clone())], *n as f64))
            .collect(),
    );
    sheet.value(
        "pg_stat_bgwriter_checkpoints_timed",
        "Checkpoints started by checkpoint_timeout",
        Some(counters.checkpoints_timed as f64),
    );
    sheet.value(
        "pg_stat_bgwriter_checkpoints_req",
        "Checkpoints requested (WAL volume, CHECKPOINT, shutdown)",
        Some(counters.checkpoints_requested as f64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::postmaster::{PostmasterStatus, RunState};
    use crate::agent::status::{ServerStatus, Standby};

    fn status(role: InstanceRole, server: Option<ServerStatus>) -> Status {
        Status {
            name: "orders-1".into(),
            role,
            ready: server.is_some(),
            postmaster: PostmasterStatus {
                run: RunState::Stopped,
                crashes: 0,
                last_crash: None,
                crash_loop: false,
                fenced: role == InstanceRole::Fenced,
            },
            server,
            last_error: None,
            notes: Vec::new(),
            streamed_from: None,
            config: crate::agent::ConfigState {
                refused: None,
                since: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            },
            passwords_set_at: None,
            promises: Vec::new(),
        }
    }

    fn primary() -> ServerStatus {
        ServerStatus {
            in_recovery: false,
            timeline: Some(3),
            system_identifier: "7".into(),
            current_lsn: Some("0/3000000".into()),
            received_lsn: None,
            replayed_lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            upstream: None,
            standbys: vec![Standby {
                name: "orders-2".into(),
                address: None,
                state: Some("streaming".into()),
                sent_lsn: Some("0/3000000".into()),
                flush_lsn: Some("0/2000000".into()),
                replay_lsn: Some("0/1000000".into()),
                sync_state: Some("quorum".into()),
                lag_bytes: None,
                replay_lag_seconds: None,
            }],
            slots: Vec::new(),
            pending_restart: Vec::new(),
            archiver: None,
        }
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_fenced_instance_is_down_and_says_so() {
        let text = render(&status(InstanceRole::Fenced, None), None);
        assert_eq!(sample(&text, "pg_up"), Some(0.0), "{text}");
        assert_eq!(sample(&text, "pgha_fenced"), Some(1.0));
        assert_eq!(sample(&text, r#"pgha_role{role="fenced"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"pgha_role{role="primary"}"#), Some(0.0));
        assert_eq!(sample(&text, "pgha_timeline"), None);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_primary_shows_each_standby_behind_it_per_stage() {
        let counters = Counters {
            databases: vec![Database {
                name: "app".into(),
                commits: 42,
                ..Database::default()
            }],
            ..Counters::default()
        };
        let text = render(
            &status(InstanceRole::Primary, Some(primary())),
            Some(&counters),
        );
        let lag = |stage: &str| {
            let series =
                format!(r#"pgha_standby_lag_bytes{{application_name="orders-2",stage="{stage}"}}"#);
            sample(&text, &series)
        };
        assert_eq!(lag("sent"), Some(0.0), "{text}");
        assert_eq!(lag("flush"), Some(16777216.0));
        assert_eq!(lag("replay"), Some(33554432.0));
        assert_eq!(sample(&text, "pgha_timeline"), Some(3.0));
        assert_eq!(sample(&text, "pgha_wal_lsn_bytes"), Some(50331648.0));
        assert_eq!(
            sample(&text, r#"pg_stat_database_xact_commit{datname="app"}"#),
            Some(42.0)
        );
        let info = r#"pgha_standby_info{application_name="orders-2",sync_state="quorum",state="streaming"}"#;
        assert_eq!(sample(&text, info), Some(1.0));
        // A replica's own series are not there on a primary.
        assert_eq!(sample(&text, "pgha_wal_receiver_streaming"), None);
    }
}
