//! Checks the API server cannot make. The controller runs them before planning; a failure
//! becomes a `Ready=False` condition naming the field, and no child object is touched.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use thiserror::Error;

use super::PgCluster;
use super::cluster::{MAX_CLUSTER_NAME, SynchronousMode};
use crate::plan::config::{self, ConfigError};

/// One problem with a cluster's spec, phrased for the person who wrote it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "metadata.name '{0}' must start with a lowercase letter, contain only lowercase letters, digits and '-', end with a letter or digit, and be at most {MAX_CLUSTER_NAME} characters"
    )]
    Name(String),
    #[error("metadata.{0} is missing: the object was not read from the API server")]
    Metadata(&'static str),
    #[error(
        "spec.replication.synchronous.number is {number} but there are {instances} instances: it must be less than instances (raise instances or lower the number)"
    )]
    SynchronousNumber { number: i32, instances: i32 },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "spec.backup.schedule '{schedule}' is not a cron expression ({reason}); use five fields such as '30 2 * * *' or a macro such as '@daily'"
    )]
    Schedule { schedule: String, reason: String },
    #[error(
        "spec.backup.retention.window '{0}' is not a number followed by h, d or w, such as '30d'"
    )]
    RetentionWindow(String),
    #[error(
        "spec.bootstrap.recovery.target.time '{time}' is not an RFC 3339 time ({reason}); write it like 2026-11-20T14:03:00Z"
    )]
    TargetTime { time: String, reason: String },
}

/// A cluster whose spec passed every check, with the values parsed once for the planner.
#[derive(Debug, Clone)]
pub struct ValidCluster<'a> {
    pub cluster: &'a PgCluster,
    pub name: &'a str,
    pub namespace: &'a str,
    /// Base backup schedule, when backups are configured.
    pub schedule: Option<Cron>,
    /// How far back restores must stay possible, when a window is set.
    pub retention_window: Option<TimeDelta>,
    /// Recovery target time, when bootstrapping from a backup to a time.
    pub target_time: Option<DateTime<Utc>>,
}

/// Every problem of a cluster's spec, or the cluster ready for planning.
pub fn validate(cluster: &PgCluster) -> Result<ValidCluster<'_>, Vec<SpecError>> {
    let mut errors = Vec::new();
    let spec = &cluster.spec;
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    if !is_cluster_name(name) {
        errors.push(SpecError::Name(name.to_string()));
    }
    let namespace = cluster.metadata.namespace.as_deref();
    if namespace.is_none() {
        errors.push(SpecError::Metadata("namespace"));
    }
    let sync = &spec.replication.synchronous;
    if sync.mode != SynchronousMode::Off && sync.number >= spec.instances {
        errors.push(SpecError::SynchronousNumber {
            number: sync.number,
            instances: spec.instances,
        });
    }
    if let Err(e) = config::parameters(spec) {
        errors.push(e.into());
    }
    if let Err(e) = config::render_hba(spec) {
        errors.push(e.into());
    }
    let schedule = spec
        .backup
        .as_ref()
        .and_then(|b| parse_schedule(&b.schedule).map_err(|e| errors.push(e)).ok());
    let retention_window = spec
        .backup
        .as_ref()
        .and_then(|b| b.retention.window.as_deref())
        .and_then(|w| {
            parse_window(w)
                .ok_or_else(|| errors.push(SpecError::RetentionWindow(w.to_string())))
                .ok()
        });
    let target_time = spec
        .bootstrap
        .recovery
        .as_ref()
        .and_then(|r| r.target.as_ref())
        .and_then(|t| t.time.as_deref())
        .and_then(|time| {
            DateTime::parse_from_rfc3339(time)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    errors.push(SpecError::TargetTime {
                        time: time.to_string(),
                        reason: e.to_string(),
                    })
                })
                .ok()
        });
    match namespace {
        Some(namespace) if errors.is_empty() => Ok(ValidCluster {
            cluster,
            name,
            namespace,
            schedule,
            retention_window,
            target_time,
        }),
        _ => Err(errors),
    }
}

/// A cluster name: a DNS-1035 label short enough for every child's name.
pub fn is_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CLUSTER_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

/// A five-field cron expression (minutes to weekdays) or a macro such as `@daily`.
pub fn parse_schedule(schedule: &str) -> Result<Cron, SpecError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| SpecError::Schedule {
            schedule: schedule.to_string(),
            reason: e.to_string(),
        })
}

/// `<n>h`, `<n>d` or `<n>w`.
pub fn parse_window(window: &str) -> Option<TimeDelta> {
    let unit = window.chars().last()?;
    let count = i64::from_str(&window[..window.len() - unit.len_utf8()])
        .ok()
        .filter(|n| *n > 0)?;
    match unit {
        'h' => TimeDelta::try_hours(count),
        'd' => TimeDelta::try_days(count),
        'w' => TimeDelta::try_weeks(count),
        _ => None,
    }
}
