//! Checks the API server cannot make. The controller runs them before planning; a failure
//! becomes a `Ready=False` condition naming the field, and no child object is touched.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use thiserror::Error;

use crate::api::PgCluster;
use crate::api::cluster::{MAX_CLUSTER_NAME, SynchronousMode};
use crate::plan::config::{self, ConfigError};
use crate::plan::{names, tls};

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
        "{field} '{schedule}' is not a cron expression ({reason}); use five fields such as '30 2 * * *' or a macro such as '@daily'"
    )]
    Schedule {
        field: &'static str,
        schedule: String,
        reason: String,
    },
    #[error(
        "spec.backup.retention.window '{0}' is not a number followed by h, d or w, such as '30d'"
    )]
    RetentionWindow(String),
    #[error(
        "spec.bootstrap.recovery.target.time '{time}' is not an RFC 3339 time ({reason}); write it like 2026-11-20T14:03:00Z"
    )]
    TargetTime { time: String, reason: String },
    #[error(
        "{field} '{secret}' is a Secret the operator makes for this cluster; name the Secret that holds your certificate (for example cert-manager's Certificate spec.secretName)"
    )]
    ManagedSecret { field: &'static str, secret: String },
}

impl SpecError {
    /// The same error about another field.
    fn field(self, field: &'static str) -> Self {
        match self {
            Self::Schedule {
                schedule, reason, ..
            } => Self::Schedule {
                field,
                schedule,
                reason,
            },
            other => other,
        }
    }
}

/// Whether the operator makes (and may overwrite) the Secret `secret` of cluster `cluster`.
fn managed_secret(cluster: &str, secret: &str) -> bool {
    let credentials = names::SecretKind::ALL.map(|kind| names::secret(cluster, kind));
    let certificates = [
        tls::ca_secret(cluster),
        tls::server_secret(cluster),
        tls::replication_secret(cluster),
    ];
    credentials.iter().chain(&certificates).any(|s| s == secret)
}

/// A cluster whose spec passed every check, with the values parsed once for the planner.
#[derive(Debug, Clone)]
pub struct ValidCluster<'a> {
    pub cluster: &'a PgCluster,
    pub name: &'a str,
    pub namespace: &'a str,
    /// Base backup schedule, when backups are configured.
    pub schedule: Option<Cron>,
    /// Restore drill schedule, when drills are configured.
    pub verify_schedule: Option<Cron>,
    /// How far back restores must stay possible, when a window is set.
    pub retention_window: Option<TimeDelta>,
    /// Recovery target time, when bootstrapping from a backup to a time.
    pub target_time: Option<DateTime<Utc>>,
    /// pgha's defaults overlaid with the user's parameters.
    pub parameters: BTreeMap<String, String>,
    /// The rendered `pg_hba.conf`.
    pub pg_hba: String,
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
    if let Some(tls) = &spec.tls {
        let named = [("spec.tls.serverSecret", Some(&tls.server_secret))];
        let named = named
            .into_iter()
            .chain([("spec.tls.caSecret", tls.ca_secret.as_ref())]);
        for (field, secret) in named {
            if let Some(secret) = secret.filter(|s| managed_secret(name, s)) {
                errors.push(SpecError::ManagedSecret {
                    field,
                    secret: secret.clone(),
                });
            }
        }
    }
    let sync = &spec.replication.synchronous;
    if sync.mode != SynchronousMode::Off && sync.number >= spec.instances {
        errors.push(SpecError::SynchronousNumber {
            number: sync.number,
            instances: spec.instances,
        });
    }
    let parameters = config::parameters(&spec.postgresql.parameters)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let pg_hba = config::render_hba(&spec.postgresql.pg_hba, true)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let schedule = spec
        .backup
        .as_ref()
        .and_then(|b| parse_schedule(&b.schedule).map_err(|e| errors.push(e)).ok());
    let verify_schedule = spec
        .backup
        .as_ref()
        .and_then(|b| b.verify.as_ref())
        .and_then(|v| {
            parse_schedule(&v.schedule)
                .map_err(|e| errors.push(e.field("spec.backup.verify.schedule")))
                .ok()
        });
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
    match (namespace, parameters, pg_hba) {
        (Some(namespace), Some(parameters), Some(pg_hba)) if errors.is_empty() => {
            Ok(ValidCluster {
                cluster,
                name,
                namespace,
                schedule,
                verify_schedule,
                retention_window,
                target_time,
                parameters,
                pg_hba,
            })
        }
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
            field: "spec.backup.schedule",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::cluster;

    fn errors(c: &PgCluster) -> Vec<String> {
        validate(c)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn backup(extra: serde_json::Value) -> serde_json::Value {
        let mut b =
            serde_json::json!({"s3": {"bucket": "pg-backups", "credentialsSecret": "creds"}});
        if let (Some(base), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::json!({"backup": b})
    }

    #[test]
    fn a_minimal_cluster_is_valid() {
        let c = cluster("orders", serde_json::json!({}));
        let valid = validate(&c).expect("valid");
        assert_eq!((valid.name, valid.namespace), ("orders", "shop"));
        assert!(
            valid.schedule.is_none()
                && valid.retention_window.is_none()
                && valid.target_time.is_none()
        );
    }

    #[test]
    fn names() {
        for bad in ["Orders", "1db", "db-", "", &"a".repeat(51)] {
            assert_eq!(
                errors(&cluster(bad, serde_json::json!({})))[0],
                SpecError::Name(bad.into()).to_string()
            );
        }
        assert!(
            is_cluster_name("a")
                && is_cluster_name("orders-eu-1")
                && is_cluster_name(&"a".repeat(50))
        );
    }

    #[test]
    fn namespace_is_required() {
        let mut c = cluster("orders", serde_json::json!({}));
        c.metadata.namespace = None;
        assert_eq!(
            errors(&c),
            ["metadata.namespace is missing: the object was not read from the API server"]
        );
    }

    #[test]
    fn synchronous_number_below_instances() {
        let c = cluster(
            "db",
            serde_json::json!({"instances": 2, "replication": {"synchronous": {"mode": "priority", "number": 2}}}),
        );
        assert_eq!(
            errors(&c),
            [
                "spec.replication.synchronous.number is 2 but there are 2 instances: it must be less than instances (raise instances or lower the number)"
            ]
        );
        let off = cluster(
            "db",
            serde_json::json!({"instances": 1, "replication": {"synchronous": {"mode": "off", "number": 1}}}),
        );
        assert!(
            validate(&off).is_ok(),
            "the number does not matter while replication is asynchronous"
        );
    }

    #[test]
    fn owned_parameters_and_wal_level() {
        let c = cluster(
            "db",
            serde_json::json!({"postgresql": {"parameters": {"archive_command": "cp %p /tmp"}}}),
        );
        assert_eq!(
            errors(&c),
            [
                "spec.postgresql.parameters.archive_command: parameter archive_command is managed by the operator and cannot be set (WAL archiving is configured from spec.backup); remove it"
            ]
        );
        let c = cluster(
            "db",
            serde_json::json!({"postgresql": {"parameters": {"wal_level": "minimal"}}}),
        );
        assert!(
            errors(&c)[0].starts_with("spec.postgresql.parameters.wal_level: 'minimal' is too low")
        );
        let c = cluster(
            "db",
            serde_json::json!({"postgresql": {"parameters": {"work_mem": "1MB\r\nfsync = off"}}}),
        );
        assert!(errors(&c)[0].contains("contains a line break"));
    }

    #[test]
    fn a_certificate_secret_of_ones_own_may_not_be_one_the_operator_makes() {
        let c = cluster(
            "db",
            serde_json::json!({"tls": {"serverSecret": "db-server", "caSecret": "db-ca"}}),
        );
        let said = errors(&c);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("spec.tls.serverSecret 'db-server' is a Secret the operator"));
        assert!(said[1].starts_with("spec.tls.caSecret 'db-ca' is a Secret the operator"));
        let own = cluster("db", serde_json::json!({"tls": {"serverSecret": "db-tls"}}));
        assert!(errors(&own).is_empty());
    }

    #[test]
    fn hba_rules_need_their_fields() {
        let c = cluster(
            "db",
            serde_json::json!({"postgresql": {"pgHba": ["host all all scram-sha-256", "local all all peer"]}}),
        );
        assert_eq!(
            errors(&c),
            [
                "spec.postgresql.pgHba[0]: 'host all all scram-sha-256' is not a pg_hba.conf rule; expected '<type> <database> <user> [<address>] <method>', for example 'host all all 10.0.0.0/8 scram-sha-256'"
            ]
        );
    }

    #[test]
    fn schedules_are_parsed() {
        let c = cluster("db", backup(serde_json::json!({"schedule": "61 * * * *"})));
        assert!(
            errors(&c)[0].starts_with("spec.backup.schedule '61 * * * *' is not a cron expression"),
            "{:?}",
            errors(&c)
        );
        let c = cluster("db", backup(serde_json::json!({"schedule": "0 0 * * * *"})));
        assert!(
            errors(&c)[0].starts_with("spec.backup.schedule '0 0 * * * *'"),
            "six fields (seconds) are refused"
        );
        for ok in ["30 2 * * *", "@daily", "*/15 * * * 1-5"] {
            let c = cluster(
                "db",
                backup(serde_json::json!({"schedule": ok, "retention": {"window": "2w"}})),
            );
            let valid = validate(&c).expect(ok);
            assert!(valid.schedule.is_some());
            assert_eq!(valid.retention_window, TimeDelta::try_weeks(2));
        }
    }

    #[test]
    fn retention_windows() {
        assert_eq!(parse_window("36h"), TimeDelta::try_hours(36));
        assert_eq!(parse_window("30d"), TimeDelta::try_days(30));
        for bad in ["0d", "30", "d", "-1d", "30y", "", "1.5d"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
        let c = cluster(
            "db",
            backup(serde_json::json!({"retention": {"window": "30y"}})),
        );
        assert_eq!(
            errors(&c),
            [
                "spec.backup.retention.window '30y' is not a number followed by h, d or w, such as '30d'"
            ]
        );
    }

    #[test]
    fn recovery_target_time_is_rfc3339() {
        let recovery = |time: &str| {
            serde_json::json!({"bootstrap": {"recovery": {
                "source": {"s3": {"bucket": "pg-backups", "path": "shop/orders", "credentialsSecret": "creds"}},
                "target": {"time": time}}}})
        };
        let c = cluster("db", recovery("2026-13-01T00:00:00Z"));
        assert!(errors(&c)[0].starts_with(
            "spec.bootstrap.recovery.target.time '2026-13-01T00:00:00Z' is not an RFC 3339 time"
        ));
        let c = cluster("db", recovery("2026-11-20T15:03:00+01:00"));
        let expected = DateTime::parse_from_rfc3339("2026-11-20T14:03:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(validate(&c).expect("valid").target_time, Some(expected));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut spec = backup(serde_json::json!({"schedule": "bad cron x y z"}));
        spec["instances"] = 1.into();
        spec["replication"] = serde_json::json!({"synchronous": {"mode": "quorum", "number": 1}});
        assert_eq!(errors(&cluster("Bad", spec)).len(), 3);
    }
}
