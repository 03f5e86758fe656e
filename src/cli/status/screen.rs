//! The `status` screen: what the API and the primary's agent say, put in one value (printed
//! as JSON or YAML) and drawn as text. Pure: the caller reads, this arranges.

use std::collections::{BTreeMap, BTreeSet};

use anstyle::{AnsiColor, Style};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use crate::api::backup::BackupProgress;
use crate::api::instance::InstanceRole;
use crate::api::{PgBackup, PgCluster, PgClusterStatus, PgDatabase, PgInstance};
use crate::plan::wal::parse_lsn;

/// Events shown, newest last.
const EVENTS: usize = 8;
/// Backups shown, newest last.
const BACKUPS: usize = 5;

/// The part of the primary agent's `/status` the screen uses.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryReport {
    #[serde(default)]
    pub current_lsn: Option<String>,
    #[serde(default)]
    pub timeline: Option<i64>,
    #[serde(default)]
    pub standbys: Vec<StandbyReport>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct StandbyReport {
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub replay_lsn: Option<String>,
    #[serde(default)]
    pub sync_state: Option<String>,
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    #[serde(default)]
    pub replay_lag_seconds: Option<f64>,
}

/// Everything `status` read, at `now`.
pub struct Observed<'a> {
    pub cluster: &'a PgCluster,
    pub instances: &'a [PgInstance],
    /// Pod name → node name.
    pub nodes: &'a BTreeMap<String, String>,
    pub backups: &'a [PgBackup],
    /// The namespace's PgDatabases (those of other clusters are left out here).
    pub databases: &'a [PgDatabase],
    pub events: &'a [Event],
    /// The primary's own report, or why it could not be read.
    pub primary: Result<PrimaryReport, String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Screen {
    pub namespace: String,
    pub cluster: String,
    pub phase: Option<String>,
    pub primary: Option<String>,
    pub ready_instances: i32,
    pub instances_wanted: i32,
    pub instances: Vec<Row>,
    pub archiving: Archiving,
    pub backups: Vec<BackupRow>,
    /// `spec.roles` and the cluster's PgDatabases, and whether the primary applied them.
    pub managed: Vec<ManagedRow>,
    pub conditions: Vec<ConditionRow>,
    pub events: Vec<EventRow>,
    /// Why the replication column is `unknown`: the primary's agent did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_unreachable: Option<String>,
}

/// How a replica's WAL reaches it, as the primary sees it.
#[derive(Serialize, Debug, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Replication {
    /// The row is the primary.
    Primary,
    /// Connected to the primary and receiving WAL.
    Streaming,
    /// Connected, still catching up from behind.
    Catchup,
    /// Not connected to the primary (stopped, frozen, or cut off for longer than
    /// `wal_sender_timeout`).
    NotStreaming,
    /// The primary's agent did not answer.
    Unknown,
}

/// A role or a database, as the primary applied it.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRow {
    /// `role` or `database`.
    pub kind: &'static str,
    /// The role's name, or the PgDatabase's (and its database's, when they differ).
    pub name: String,
    pub applied: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub name: String,
    pub role: Option<InstanceRole>,
    pub ready: bool,
    pub node: Option<String>,
    pub timeline: Option<i64>,
    pub lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub replication: Replication,
    /// `sync`, `quorum`, `async` or `potential`, from the primary.
    pub sync_state: Option<String>,
    /// The instance's own message (why it is not ready, for example).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Archiving {
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<Time>,
    pub pending: Option<i64>,
    /// The recoverability window: from this point in time to the last archived WAL.
    pub first_recoverability_point: Option<Time>,
    pub last_backup: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRow {
    pub name: String,
    pub phase: Option<String>,
    pub instance: Option<String>,
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
    pub size_bytes: Option<i64>,
    pub stored_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Time,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub time: Option<Time>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub reason: Option<String>,
    pub object: String,
    pub message: Option<String>,
}

fn debug_name<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}

pub fn screen(seen: Observed<'_>) -> Screen {
    let status = seen.cluster.status.clone().unwrap_or_default();
    let primary_name = status.current_primary.clone();
    let (report, unreachable) = match seen.primary {
        Ok(report) => (Some(report), None),
        Err(why) => (None, Some(why)),
    };
    let mut instances: Vec<&PgInstance> = seen.instances.iter().collect();
    instances.sort_by_key(|i| i.name_any());
    let rows = instances
        .into_iter()
        .map(|instance| {
            row(
                instance,
                primary_name.as_deref(),
                report.as_ref(),
                seen.nodes,
            )
        })
        .collect();

    let mut backups: Vec<&PgBackup> = seen.backups.iter().collect();
    backups.sort_by_key(|b| b.creation_timestamp().map(|t| t.0));
    let backups = backups[backups.len().saturating_sub(BACKUPS)..]
        .iter()
        .map(|b| {
            let s = b.status.clone().unwrap_or_default();
            BackupRow {
                name: b.name_any(),
                phase: s.result.phase.as_ref().map(debug_name),
                instance: s.instance,
                started_at: s.result.started_at,
                completed_at: s.result.completed_at,
                size_bytes: s.result.size_bytes,
                stored_bytes: s.result.stored_bytes,
                progress: s.result.progress,
                message: s.result.message,
            }
        })
        .collect();

    let managed = managed(seen.cluster, &status, seen.databases);
    Screen {
        namespace: seen.cluster.namespace().unwrap_or_default(),
        cluster: seen.cluster.name_any(),
        phase: status.phase.as_ref().map(debug_name),
        primary: primary_name,
        ready_instances: status.ready_instances,
        instances_wanted: seen.cluster.spec.instances,
        instances: rows,
        archiving: Archiving {
            last_archived_wal: status.last_archived_wal,
            last_archived_at: status.last_archived_at,
            pending: status.wal_pending_archive,
            first_recoverability_point: status.first_recoverability_point,
            last_backup: status.last_backup,
        },
        backups,
        managed,
        conditions: status
            .conditions
            .into_iter()
            .map(|c| ConditionRow {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                since: c.last_transition_time,
            })
            .collect(),
        events: events(seen.cluster, seen.instances, seen.backups, seen.events),
        primary_unreachable: unreachable,
    }
}

fn managed(
    cluster: &PgCluster,
    status: &PgClusterStatus,
    databases: &[PgDatabase],
) -> Vec<ManagedRow> {
    let roles = cluster.spec.roles.iter().map(|role| {
        let applied = status.roles.iter().find(|r| r.name == role.name);
        ManagedRow {
            kind: "role",
            name: role.name.clone(),
            applied: applied.map(|a| a.applied),
            message: applied.and_then(|a| a.message.clone()),
        }
    });
    let mut mine: Vec<&PgDatabase> = databases
        .iter()
        .filter(|d| d.spec.cluster == cluster.name_any())
        .collect();
    mine.sort_by_key(|d| d.name_any());
    let databases = mine.into_iter().map(|d| {
        let s = d.status.clone().unwrap_or_default();
        let name = match d.name_any() {
            resource if resource == d.spec.name => resource,
            resource => format!("{resource} ({})", d.spec.name),
        };
        ManagedRow {
            kind: "database",
            name,
            applied: s.applied,
            message: s.message,
        }
    });
    roles.chain(databases).collect()
}

fn row(
    instance: &PgInstance,
    primary: Option<&str>,
    report: Option<&PrimaryReport>,
    nodes: &BTreeMap<String, String>,
) -> Row {
    let name = instance.name_any();
    let status = instance.status.clone().unwrap_or_default();
    let is_primary = primary == Some(name.as_str());
    let standby = report.and_then(|r| r.standbys.iter().find(|s| s.name == name));
    let replication = match (is_primary, report, standby) {
        (true, _, _) => Replication::Primary,
        (false, None, _) => Replication::Unknown,
        (false, Some(_), None) => Replication::NotStreaming,
        (false, Some(_), Some(s)) if s.state.as_deref() == Some("streaming") => {
            Replication::Streaming
        }
        (false, Some(_), Some(_)) => Replication::Catchup,
    };
    // The primary's view is of one moment; the instance's own status is older.
    let lsn = match (is_primary, report, standby) {
        (true, Some(r), _) => r.current_lsn.clone(),
        (false, _, Some(s)) => s.replay_lsn.clone(),
        _ => None,
    }
    .or(status.current_lsn);
    let lag_bytes = match (standby, report) {
        (Some(s), _) => s.lag_bytes.and_then(|b| i64::try_from(b).ok()),
        _ if is_primary => None,
        // Not connected: how far its last report is behind the primary now.
        (None, Some(r)) => behind(r.current_lsn.as_deref(), lsn.as_deref()).or(status.lag_bytes),
        (None, None) => status.lag_bytes,
    };
    Row {
        node: nodes.get(&name).cloned(),
        name,
        role: status.role,
        ready: status.ready,
        timeline: match (is_primary, report) {
            (true, Some(r)) => r.timeline.or(status.timeline),
            _ => status.timeline,
        },
        lsn,
        lag_bytes,
        lag_seconds: standby.and_then(|s| s.replay_lag_seconds),
        replication,
        sync_state: standby.and_then(|s| s.sync_state.clone()),
        message: status.message.filter(|_| !status.ready),
    }
}

fn behind(primary: Option<&str>, replica: Option<&str>) -> Option<i64> {
    let (p, r) = (parse_lsn(primary?)?, parse_lsn(replica?)?);
    i64::try_from(p.saturating_sub(r)).ok()
}

/// The newest Events about the cluster, its instances (and their pods, named alike) and its
/// backups, oldest first.
fn events(
    cluster: &PgCluster,
    instances: &[PgInstance],
    backups: &[PgBackup],
    events: &[Event],
) -> Vec<EventRow> {
    let names: BTreeSet<String> = std::iter::once(cluster.name_any())
        .chain(instances.iter().map(|i| i.name_any()))
        .chain(backups.iter().map(|b| b.name_any()))
        .collect();
    let when = |e: &Event| {
        e.last_timestamp
            .clone()
            .or_else(|| e.event_time.as_ref().map(|t| Time(t.0)))
            .or_else(|| e.metadata.creation_timestamp.clone())
    };
    let mut ours: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.involved_object
                .name
                .as_ref()
                .is_some_and(|n| names.contains(n))
        })
        .collect();
    ours.sort_by_key(|e| when(e).map(|t| t.0));
    ours[ours.len().saturating_sub(EVENTS)..]
        .iter()
        .map(|e| EventRow {
            time: when(e),
            type_: e.type_.clone(),
            reason: e.reason.clone(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.clone().unwrap_or_default(),
                e.involved_object.name.clone().unwrap_or_default()
            ),
            message: e.message.clone(),
        })
        .collect()
}

/// `12s`, `5m`, `3h`, `2d` ago.
fn age(now: Timestamp, then: &Time) -> String {
    let secs = now.duration_since(then.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A running backup's size column: `1.2 GiB of 4.0 GiB (30%), 80.0 MiB/s`.
fn progress(p: &BackupProgress) -> String {
    if let Some(segment) = &p.waiting_for_wal {
        return format!("{} read, waiting for WAL {segment}", bytes(p.bytes_done));
    }
    let percent = p
        .bytes_done
        .saturating_mul(100)
        .checked_div(p.bytes_total)
        .unwrap_or(0)
        .min(100);
    format!(
        "{} of {} ({percent}%), {}/s",
        bytes(p.bytes_done),
        bytes(p.bytes_total),
        bytes(p.bytes_per_second)
    )
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A table cell: its text and how to colour it.
struct Cell(String, Style);

fn plain(text: impl Into<String>) -> Cell {
    Cell(text.into(), Style::new())
}

fn coloured(text: impl Into<String>, colour: AnsiColor) -> Cell {
    Cell(text.into(), colour.on_default())
}

/// Event messages cut to a line's width (`-o yaml` has them whole).
fn shortened(text: String) -> String {
    const WIDTH: usize = 100;
    match text.char_indices().nth(WIDTH) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

fn table(out: &mut String, colour: bool, header: &[&str], rows: Vec<Vec<Cell>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.0.chars().count());
        }
    }
    let bold = Style::new().bold();
    let header: Vec<Cell> = header.iter().map(|h| Cell(h.to_string(), bold)).collect();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let pad = if i + 1 == widths.len() {
                0
            } else {
                width - cell.0.chars().count() + 2
            };
            if colour {
                line += &format!("{}{}{:#}", cell.1, cell.0, cell.1);
            } else {
                line += &cell.0;
            }
            line += &" ".repeat(pad);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The screen as text; `colour` adds ANSI colours (for a terminal).
pub fn render(screen: &Screen, now: Timestamp, colour: bool) -> String {
    let mut out = String::new();
    let phase = screen.phase.clone().unwrap_or_else(|| "Unknown".into());
    let phase_colour = match phase.as_str() {
        "Healthy" => AnsiColor::Green,
        "Degraded" | "FailingOver" | "SwitchingOver" | "Creating" => AnsiColor::Yellow,
        _ => AnsiColor::Red,
    };
    let headline = coloured(phase, phase_colour);
    let phase = if colour {
        format!("{}{}{:#}", headline.1, headline.0, headline.1)
    } else {
        headline.0
    };
    out += &format!(
        "Cluster {}/{}  {phase}  {}/{} ready  primary {}\n",
        screen.namespace,
        screen.cluster,
        screen.ready_instances,
        screen.instances_wanted,
        or_dash(screen.primary.clone()),
    );
    if let Some(why) = &screen.primary_unreachable {
        out += &format!(
            "(the primary's agent did not answer: {why}; lag from the instances' own status)\n"
        );
    }
    out.push('\n');

    let rows = screen
        .instances
        .iter()
        .map(|r| {
            let role = r
                .role
                .as_ref()
                .map(debug_name)
                .unwrap_or_else(|| "-".into());
            let (replication, hue) = match r.replication {
                Replication::Primary => ("primary".to_string(), AnsiColor::Green),
                Replication::Streaming => ("streaming".to_string(), AnsiColor::Green),
                Replication::Catchup => ("catchup".to_string(), AnsiColor::Yellow),
                Replication::NotStreaming => ("not streaming".to_string(), AnsiColor::Red),
                Replication::Unknown => ("unknown".to_string(), AnsiColor::Yellow),
            };
            let lag = match (r.lag_bytes, r.lag_seconds) {
                (Some(b), Some(s)) => format!("{} / {s:.1}s", bytes(b)),
                (Some(b), None) => bytes(b),
                _ => "-".into(),
            };
            vec![
                plain(r.name.clone()),
                plain(role.to_lowercase()),
                if r.ready {
                    coloured("yes", AnsiColor::Green)
                } else {
                    coloured("no", AnsiColor::Red)
                },
                plain(or_dash(r.node.clone())),
                plain(or_dash(r.timeline.map(|t| t.to_string()))),
                plain(or_dash(r.lsn.clone())),
                plain(lag),
                coloured(replication, hue),
                plain(or_dash(r.sync_state.clone())),
            ]
        })
        .collect();
    table(
        &mut out,
        colour,
        &[
            "INSTANCE",
            "ROLE",
            "READY",
            "NODE",
            "TL",
            "LSN",
            "LAG",
            "REPLICATION",
            "SYNC",
        ],
        rows,
    );
    for r in screen.instances.iter().filter(|r| r.message.is_some()) {
        out += &format!("  {}: {}\n", r.name, or_dash(r.message.clone()));
    }

    let a = &screen.archiving;
    out += "\nArchiving: ";
    out += &match (&a.last_archived_wal, &a.last_archived_at) {
        (Some(wal), Some(at)) => format!("last WAL {wal}, {} ago", age(now, at)),
        (Some(wal), None) => format!("last WAL {wal}"),
        _ => "nothing archived yet".into(),
    };
    if let Some(pending) = a.pending {
        out += &format!(", {pending} waiting");
    }
    out.push('\n');
    if let Some(first) = &a.first_recoverability_point {
        let to = a
            .last_archived_at
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "now".into());
        out += &format!("Recoverable: {} → {to}\n", first.0);
    }

    if !screen.backups.is_empty() {
        out += "\nBackups:\n";
        let rows = screen
            .backups
            .iter()
            .map(|b| {
                let phase = or_dash(b.phase.clone());
                let hue = match phase.as_str() {
                    "Completed" => AnsiColor::Green,
                    "Failed" => AnsiColor::Red,
                    _ => AnsiColor::Yellow,
                };
                let took = match (&b.started_at, &b.completed_at) {
                    (Some(s), Some(c)) => format!("{}s", c.0.duration_since(s.0).as_secs()),
                    _ => "-".into(),
                };
                vec![
                    plain(b.name.clone()),
                    coloured(phase, hue),
                    plain(or_dash(b.instance.clone())),
                    plain(or_dash(b.started_at.as_ref().map(|t| age(now, t) + " ago"))),
                    plain(took),
                    plain(or_dash(
                        b.size_bytes
                            .map(bytes)
                            .or_else(|| b.progress.as_ref().map(progress)),
                    )),
                    plain(or_dash(b.message.clone())),
                ]
            })
            .collect();
        table(
            &mut out,
            colour,
            &[
                "NAME", "PHASE", "FROM", "STARTED", "TOOK", "SIZE", "MESSAGE",
            ],
            rows,
        );
    }

    if !screen.managed.is_empty() {
        out += "\nRoles and databases:\n";
        let rows = screen
            .managed
            .iter()
            .map(|m| {
                let (word, hue) = match m.applied {
                    Some(true) => ("applied", AnsiColor::Green),
                    Some(false) => ("not applied", AnsiColor::Red),
                    None => ("waiting", AnsiColor::Yellow),
                };
                vec![
                    plain(m.kind.to_string()),
                    plain(m.name.clone()),
                    coloured(word.to_string(), hue),
                    plain(or_dash(m.message.clone())),
                ]
            })
            .collect();
        table(
            &mut out,
            colour,
            &["KIND", "NAME", "STATE", "MESSAGE"],
            rows,
        );
    }

    if !screen.conditions.is_empty() {
        out += "\nConditions:\n";
        let rows = screen
            .conditions
            .iter()
            .map(|c| {
                // For these, True is the bad news.
                let bad_when_true = ["Degraded", "ConfigInvalid"];
                let good = (c.status == "True") != bad_when_true.contains(&c.type_.as_str());
                let hue = if good {
                    AnsiColor::Green
                } else {
                    AnsiColor::Yellow
                };
                vec![
                    plain(c.type_.clone()),
                    coloured(c.status.clone(), hue),
                    plain(age(now, &c.since)),
                    plain(c.reason.clone()),
                    plain(c.message.clone()),
                ]
            })
            .collect();
        table(
            &mut out,
            colour,
            &["TYPE", "STATUS", "SINCE", "REASON", "MESSAGE"],
            rows,
        );
    }

    if !screen.events.is_empty() {
        out += "\nEvents:\n";
        let rows = screen
            .events
            .iter()
            .map(|e| {
                let kind = or_dash(e.type_.clone());
                let hue = if kind == "Warning" {
                    AnsiColor::Yellow
                } else {
                    AnsiColor::BrightBlack
                };
                vec![
                    plain(or_dash(e.time.as_ref().map(|t| age(now, t)))),
                    coloured(kind, hue),
                    plain(or_dash(e.reason.clone())),
                    plain(e.object.clone()),
                    plain(shortened(or_dash(e.message.clone()))),
                ]
            })
            .collect();
        table(
            &mut out,
            colour,
            &["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            rows,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;

    fn instance(name: &str, status: serde_json::Value) -> PgInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgInstance",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"cluster": "orders", "ordinal": 1, "postgresVersion": 15,
                "image": "postgres:15", "storage": {"size": "1Gi"}},
            "status": status,
        }))
        .unwrap()
    }

    fn cluster() -> PgCluster {
        let mut c = fixtures::cluster("orders", serde_json::json!({"instances": 3}));
        c.status = serde_json::from_value(serde_json::json!({
            "phase": "Degraded", "currentPrimary": "orders-1", "readyInstances": 3,
            "lastArchivedWal": "000000010000000000000007",
            "lastArchivedAt": "2026-12-01T05:00:00Z", "walPendingArchive": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReady",
                "message": "ok", "lastTransitionTime": "2026-12-01T04:00:00Z"}],
        }))
        .unwrap();
        c
    }

    fn instances() -> Vec<PgInstance> {
        let replica = |lsn: &str| {
            serde_json::json!({"role": "replica", "ready": true, "timeline": 1,
                "currentLsn": lsn, "lagBytes": 0})
        };
        vec![
            instance("orders-3", replica("0/6000000")),
            instance(
                "orders-1",
                serde_json::json!({"role": "primary", "ready": true, "timeline": 1,
                    "currentLsn": "0/7000000"}),
            ),
            instance("orders-2", replica("0/7000000")),
        ]
    }

    fn report() -> PrimaryReport {
        serde_json::from_value(serde_json::json!({
            "currentLsn": "0/7000100", "timeline": 1,
            "standbys": [{"name": "orders-2", "state": "streaming", "replayLsn": "0/7000100",
                "syncState": "async", "lagBytes": 0, "replayLagSeconds": 0.002}],
        }))
        .unwrap()
    }

    fn seen<'a>(
        cluster: &'a PgCluster,
        instances: &'a [PgInstance],
        nodes: &'a BTreeMap<String, String>,
        primary: Result<PrimaryReport, String>,
    ) -> Screen {
        screen(Observed {
            cluster,
            instances,
            nodes,
            backups: &[],
            databases: &[],
            events: &[],
            primary,
        })
    }

    #[test]
    fn roles_and_databases_show_whether_they_are_applied() {
        let mut c = cluster();
        c.spec.roles = serde_json::from_value(serde_json::json!([
            {"name": "analyst"}, {"name": "holder", "ensure": "absent"}, {"name": "fresh"}
        ]))
        .unwrap();
        let status = c.status.get_or_insert_default();
        status.roles = serde_json::from_value(serde_json::json!([
            {"name": "analyst", "applied": true},
            {"name": "holder", "applied": false, "message": "role holder owns objects"},
        ]))
        .unwrap();
        let database = |resource: &str, cluster: &str| -> PgDatabase {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "pgha.dev/v1", "kind": "PgDatabase",
                "metadata": {"name": resource},
                "spec": {"cluster": cluster, "name": "reports", "owner": "analyst"},
                "status": {"applied": false, "message": "extension x is not available"},
            }))
            .unwrap()
        };
        let databases = [
            database("reports-db", "orders"),
            database("other", "payments"),
        ];
        let s = screen(Observed {
            cluster: &c,
            instances: &instances(),
            nodes: &BTreeMap::new(),
            backups: &[],
            databases: &databases,
            events: &[],
            primary: Ok(report()),
        });
        let rows: Vec<(&str, &str, Option<bool>)> = s
            .managed
            .iter()
            .map(|m| (m.kind, m.name.as_str(), m.applied))
            .collect();
        assert_eq!(
            rows,
            [
                ("role", "analyst", Some(true)),
                ("role", "holder", Some(false)),
                ("role", "fresh", None),
                ("database", "reports-db (reports)", Some(false)),
            ]
        );
        let text = render(&s, Timestamp::now(), false);
        assert!(text.contains("Roles and databases:"), "{text}");
        assert!(text.contains("role holder owns objects"), "{text}");
    }

    #[test]
    fn a_replica_the_primary_does_not_see_is_not_streaming() {
        let (c, i) = (cluster(), instances());
        let nodes = BTreeMap::from([("orders-1".to_string(), "node-1".to_string())]);
        let s = seen(&c, &i, &nodes, Ok(report()));
        let names: Vec<&str> = s.instances.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["orders-1", "orders-2", "orders-3"]);
        let by = |n: &str| s.instances.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by("orders-1").replication, Replication::Primary);
        assert_eq!(by("orders-1").lsn.as_deref(), Some("0/7000100"));
        assert_eq!(by("orders-1").node.as_deref(), Some("node-1"));
        assert_eq!(by("orders-2").replication, Replication::Streaming);
        assert_eq!(by("orders-2").sync_state.as_deref(), Some("async"));
        assert_eq!(by("orders-2").lag_seconds, Some(0.002));
        assert_eq!(by("orders-3").replication, Replication::NotStreaming);
        // Its own last word on its position stays on the screen.
        assert_eq!(by("orders-3").lsn.as_deref(), Some("0/6000000"));
        assert_eq!(by("orders-3").lag_bytes, Some(0x1000100));

        let now = "2026-12-01T05:00:30Z".parse().unwrap();
        let text = render(&s, now, false);
        assert!(text.starts_with("Cluster shop/orders  Degraded  3/3 ready  primary orders-1\n"));
        let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line("orders-3").contains("not streaming"), "{text}");
        assert!(line("orders-2").contains("0 B / 0.0s") && line("orders-2").contains("streaming"));
        assert!(
            text.contains("last WAL 000000010000000000000007, 30s ago, 2 waiting"),
            "{text}"
        );
        assert!(text.contains("Ready  True    60m"), "{text}");
        assert!(!text.contains('\u{1b}'), "no colour unless asked");
        assert!(render(&s, now, true).contains('\u{1b}'));
    }

    #[test]
    fn without_the_primarys_report_replication_is_unknown_and_lag_is_the_instances_own() {
        let (c, i) = (cluster(), instances());
        let s = seen(&c, &i, &BTreeMap::new(), Err("timed out".into()));
        assert_eq!(s.primary_unreachable.as_deref(), Some("timed out"));
        let replica = s.instances.iter().find(|r| r.name == "orders-2").unwrap();
        assert_eq!(replica.replication, Replication::Unknown);
        assert_eq!(replica.lag_bytes, Some(0));
        let text = render(&s, Timestamp::UNIX_EPOCH, false);
        assert!(text.contains("did not answer: timed out"), "{text}");
    }

    #[test]
    fn events_are_the_newest_about_the_clusters_own_objects() {
        let (c, i) = (cluster(), instances());
        let event = |n: u32, object: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("e{n}")},
                "involvedObject": {"kind": "PgInstance", "name": object},
                "lastTimestamp": format!("2026-12-01T05:00:{n:02}Z"),
                "reason": format!("R{n}"), "type": "Normal",
            }))
            .unwrap()
        };
        let mut events: Vec<Event> = (0..12).map(|n| event(n, "orders-2")).collect();
        events.push(event(30, "payments-1"));
        events.reverse();
        let s = screen(Observed {
            cluster: &c,
            instances: &i,
            nodes: &BTreeMap::new(),
            backups: &[],
            databases: &[],
            events: &events,
            primary: Ok(report()),
        });
        let reasons: Vec<&str> = s
            .events
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .collect();
        assert_eq!(reasons, ["R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11"]);
    }

    #[test]
    fn sizes_and_ages_read_like_kubectls() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 * 1024 * 1024 + 100), "5.0 MiB");
        let running = BackupProgress {
            bytes_done: 3 << 30,
            bytes_total: 10 << 30,
            bytes_per_second: 80 << 20,
            waiting_for_wal: None,
        };
        assert_eq!(progress(&running), "3.0 GiB of 10.0 GiB (30%), 80.0 MiB/s");
        let waiting = BackupProgress {
            waiting_for_wal: Some("000000010000000000000007".into()),
            ..running
        };
        assert_eq!(
            progress(&waiting),
            "3.0 GiB read, waiting for WAL 000000010000000000000007"
        );
        let empty = BackupProgress::default();
        assert_eq!(progress(&empty), "0 B of 0 B (0%), 0 B/s");
        let now: Timestamp = "2026-12-01T05:00:00Z".parse().unwrap();
        let at = |s: &str| Time(s.parse().unwrap());
        assert_eq!(age(now, &at("2026-12-01T04:59:01Z")), "59s");
        assert_eq!(age(now, &at("2026-12-01T04:00:00Z")), "60m");
        assert_eq!(age(now, &at("2026-11-29T05:00:00Z")), "2d");
    }
}
