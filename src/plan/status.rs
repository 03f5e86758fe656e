//! A cluster's status from its instances: phase, primary, per-instance summary and the
//! `Ready` / `Progressing` / `Degraded` conditions, whose transition times only move when
//! their status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use std::collections::BTreeMap;

use crate::api::PgInstance;
use crate::api::cluster::{ClusterPhase, DrillResult, InstanceSummary, PgClusterStatus};
use crate::api::instance::{ArchiverStatus, InstancePhase, InstanceRole, LeaseOutage};
use crate::plan::backups;
use crate::plan::wal::parse_lsn;

/// A condition with `lastTransitionTime` kept from `previous` when the status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// What an agent says now on its status port (read by the operator in one pass).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    /// WAL written (a primary).
    pub current_lsn: Option<String>,
    /// WAL replayed (a replica).
    pub replayed_lsn: Option<String>,
    /// WAL received and flushed (a replica).
    pub received_lsn: Option<String>,
    /// Recovering: a replica.
    pub in_recovery: bool,
    /// The timeline of the WAL received (a replica) or written (a primary).
    pub timeline: Option<i64>,
    pub system_identifier: Option<String>,
    /// The host it last streamed from since its agent started.
    pub streamed_from: Option<String>,
    /// The promises it keeps to a primary that cannot renew its Lease.
    pub promises: Vec<crate::plan::vouch::PromiseReport>,
}

/// The status of a cluster whose spec passed validation. `details` are the agents' reports
/// of this moment, by instance: with them a replica's lag is the primary's WAL position
/// minus what the replica has replayed, both read now; without them, what the instance last
/// wrote to its status.
pub fn observed(
    previous: &PgClusterStatus,
    generation: Option<i64>,
    wanted: i32,
    primary: &str,
    instances: &[PgInstance],
    details: &BTreeMap<String, Detail>,
    now: &Time,
) -> PgClusterStatus {
    let primary_lsn = details
        .get(primary)
        .and_then(|d| d.current_lsn.as_deref())
        .and_then(parse_lsn);
    let summaries: Vec<InstanceSummary> = instances
        .iter()
        .map(|i| {
            let s = i.status.clone().unwrap_or_default();
            let name = i.metadata.name.clone().unwrap_or_default();
            let detail = details.get(&name);
            let replayed = detail.and_then(|d| d.replayed_lsn.clone());
            let lag = match (primary_lsn, replayed.as_deref().and_then(parse_lsn)) {
                (Some(head), Some(at)) if name != primary => Some(head.saturating_sub(at) as i64),
                _ => s.lag_bytes,
            };
            let lsn = detail
                .and_then(|d| d.current_lsn.clone().or(replayed))
                .or(s.current_lsn);
            InstanceSummary {
                name,
                role: s.role,
                ready: s.ready,
                timeline: s.timeline,
                lsn,
                lag_bytes: lag,
            }
        })
        .collect();
    let ready = summaries.iter().filter(|s| s.ready).count() as i32;
    let primary_serves = summaries
        .iter()
        .any(|s| s.name == primary && s.ready && s.role == Some(InstanceRole::Primary));
    let failed: Vec<String> = instances
        .iter()
        .filter(|i| i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Failed))
        .map(|i| {
            let s = i.status.clone().unwrap_or_default();
            format!(
                "{}: {}",
                i.metadata.name.clone().unwrap_or_default(),
                s.message.unwrap_or_default()
            )
        })
        .collect();
    // Instances that serve no longer (after the cluster was up), each with what is known.
    let unready: Vec<String> = instances
        .iter()
        .filter(|i| i.status.as_ref().and_then(|s| s.phase) != Some(InstancePhase::Failed))
        .filter(|i| !i.status.as_ref().is_some_and(|s| s.ready))
        .map(|i| {
            let s = i.status.clone().unwrap_or_default();
            let name = i.metadata.name.clone().unwrap_or_default();
            match s.phase {
                Some(InstancePhase::Running) | None => format!(
                    "{name} is not ready: its agent does not answer its readiness probe, or \
                     reports Postgres not accepting connections"
                ),
                Some(phase) => format!(
                    "{name} is not ready: {phase:?}{}",
                    s.message.map(|m| format!(", {m}")).unwrap_or_default()
                ),
            }
        })
        .collect();
    let all_ready = primary_serves && ready == wanted && instances.len() as i32 == wanted;
    let was_healthy = previous.phase.is_some_and(|p| p != ClusterPhase::Creating);
    let phase = match (all_ready, primary_serves) {
        (true, _) => ClusterPhase::Healthy,
        (false, true) if was_healthy || !failed.is_empty() => ClusterPhase::Degraded,
        (false, _) if was_healthy => ClusterPhase::Degraded,
        (false, _) => ClusterPhase::Creating,
    };
    let pending: Vec<String> = instances
        .iter()
        .filter(|i| i.status.as_ref().is_some_and(|s| s.pending_restart))
        .map(|i| i.metadata.name.clone().unwrap_or_default())
        .collect();
    let progress = format!("{ready} of {wanted} instances ready; primary {primary}");
    let (progressing, progress_reason, progress_message) = match (all_ready, pending.is_empty()) {
        (false, _) => (true, "Reconciling", progress.clone()),
        (true, false) => (
            true,
            "RollingRestart",
            format!("{progress}; a restart is pending on {}", pending.join(", ")),
        ),
        (true, true) => (false, "Converged", progress.clone()),
    };
    let mut conditions = vec![
        condition(
            &previous.conditions,
            "Ready",
            all_ready,
            if all_ready {
                "ClusterReady"
            } else {
                "InstancesNotReady"
            },
            progress.clone(),
            generation,
            now,
        ),
        condition(
            &previous.conditions,
            "Progressing",
            progressing,
            progress_reason,
            progress_message,
            generation,
            now,
        ),
        degraded(previous, &failed, &unready, phase, generation, now),
    ];
    conditions.push(config_invalid(previous, instances, generation, now));
    PgClusterStatus {
        phase: Some(phase),
        current_primary: Some(primary.to_string()),
        target_primary: Some(primary.to_string()),
        ready_instances: ready,
        instances: summaries,
        conditions,
        observed_generation: generation,
        ..previous.clone()
    }
}

/// `Degraded`: True while an instance has failed, or, once the cluster was up, does not serve;
/// the message names each one.
fn degraded(
    previous: &PgClusterStatus,
    failed: &[String],
    unready: &[String],
    phase: ClusterPhase,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let unready = if phase == ClusterPhase::Degraded {
        unready
    } else {
        &[]
    };
    let (reason, message) = match (failed.is_empty(), unready.is_empty()) {
        (true, true) => ("NoFailures", "every instance serves".to_string()),
        (false, _) => ("InstanceFailed", [failed, unready].concat().join("; ")),
        (true, false) => ("InstanceNotReady", unready.join("; ")),
    };
    condition(
        &previous.conditions,
        "Degraded",
        reason != "NoFailures",
        reason,
        message,
        generation,
        now,
    )
}

/// `ConfigInvalid`: True while Postgres refuses the ordered configuration on some instance
/// (which then runs on the last configuration it loaded), with each one's messages.
fn config_invalid(
    previous: &PgClusterStatus,
    instances: &[PgInstance],
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let refused: Vec<String> = instances
        .iter()
        .filter_map(|i| {
            let status = i.status.as_ref()?;
            let c = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ConfigInvalid" && c.status == "True")?;
            let name = i.metadata.name.clone().unwrap_or_default();
            Some(format!("{name}: {}", c.message))
        })
        .collect();
    let (reason, message) = match refused.is_empty() {
        true => (
            "Loaded",
            "every instance runs on the ordered configuration".to_string(),
        ),
        false => (
            "PostgresRefused",
            format!(
                "Postgres refuses the configuration (the instances keep the last one it loaded; \
                 fix spec.postgresql): {}",
                refused.join("; ")
            ),
        ),
    };
    condition(
        &previous.conditions,
        "ConfigInvalid",
        !refused.is_empty(),
        reason,
        message,
        generation,
        now,
    )
}

/// The archiving fields and the `ContinuousArchiving` condition, from the primary's archiver
/// (`None` until its agent reports one).
pub fn archiving(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    archiver: Option<&ArchiverStatus>,
    generation: Option<i64>,
    now: &Time,
) {
    let (ok, reason, message) = match archiver {
        Some(archiver) => backups::archiving(archiver),
        None => (
            false,
            "NotReported",
            "the primary has not reported its archiver yet".to_string(),
        ),
    };
    status.last_archived_wal = archiver.and_then(|a| a.last_archived_wal.clone());
    status.last_archived_at = archiver
        .and_then(|a| a.last_archived_at.as_deref())
        .and_then(postgres_time);
    status.wal_pending_archive = archiver.map(|a| a.pending);
    if reason == backups::ARCHIVE_OWNED_BY_OTHER_CLUSTER {
        // The database serves, but nothing it commits reaches a backup and its volume fills:
        // that is not a Ready cluster. A phase or a condition that already says something
        // worse (a failover, a failed instance) stays.
        let is = |type_: &str, value: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == value)
        };
        let (degraded, ready) = (is("Degraded", "True"), is("Ready", "True"));
        if status.phase == Some(ClusterPhase::Healthy) {
            status.phase = Some(ClusterPhase::Degraded);
        }
        if !degraded {
            let degraded = (true, reason, message.clone());
            replace(status, previous, "Degraded", degraded, generation, now);
        }
        if ready {
            not_ready(status, previous, reason, message.clone(), generation, now);
        }
    }
    let archiving = (ok, reason, message);
    replace(
        status,
        previous,
        "ContinuousArchiving",
        archiving,
        generation,
        now,
    );
}

/// Sets condition `type_` to `(status, reason, message)`, in place of the one there.
fn replace(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    type_: &str,
    (ok, reason, message): (bool, &str, String),
    generation: Option<i64>,
    now: &Time,
) {
    let new = condition(
        &previous.conditions,
        type_,
        ok,
        reason,
        message,
        generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(new);
}

/// The `RestoreVerified` condition from the last restore drill.
pub fn drills(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    generation: Option<i64>,
    now: &Time,
) {
    let (ok, reason, message) = match &status.last_verified_restore {
        None => (
            false,
            "NotYetVerified",
            "no restore drill has run yet".to_string(),
        ),
        Some(drill) => match drill.result {
            DrillResult::Passed => (true, "DrillPassed", drill.message.clone()),
            DrillResult::Failed => (false, "DrillFailed", drill.message.clone()),
        },
    };
    let verified = (ok, reason, message);
    replace(
        status,
        previous,
        "RestoreVerified",
        verified,
        generation,
        now,
    );
}

/// `CertificatesReady`: False while the certificate Secrets `spec.tls` names are missing or
/// incomplete (`missing` says which, naming the field).
pub fn certificates(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    missing: Option<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let (reason, message) = match &missing {
        None => (
            "Complete",
            "the server certificate, its key and its CA are there and fit together".into(),
        ),
        Some(missing) => ("SecretIncomplete", missing.clone()),
    };
    let ready = (missing.is_none(), reason, message);
    replace(
        status,
        previous,
        "CertificatesReady",
        ready,
        generation,
        now,
    );
}

/// `PrimaryLease`: True while the primary renews its Lease; False while it serves on its
/// members' promises instead (`vouched` says so). `outage` is the last time it did, which
/// the status keeps.
pub fn primary_lease(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    vouched: Option<String>,
    outage: Option<LeaseOutage>,
    generation: Option<i64>,
    now: &Time,
) {
    let renewed = match &outage {
        Some(o) => format!(
            "the primary renews its Lease; it last served {:.1} s without renewing it, on its members' promises (renewed again at {})",
            o.seconds, o.ended.0
        ),
        None => "the primary renews its Lease".to_string(),
    };
    let lease = match vouched {
        Some(why) => (false, "ServingOnPromises", why),
        None => (true, "Renewed", renewed),
    };
    status.last_lease_outage = outage;
    replace(status, previous, "PrimaryLease", lease, generation, now);
}

/// A timestamp as Postgres prints it (`2026-11-30 10:00:05.123+00`).
fn postgres_time(text: &str) -> Option<Time> {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .and_then(|t| t.to_rfc3339().parse().ok())
        .map(Time)
}

/// Sets `Ready=False` with `reason` and `message` (a failover that cannot go ahead), keeping
/// the transition time when it was already false.
pub fn not_ready(
    status: &mut PgClusterStatus,
    previous: &PgClusterStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let ready = condition(
        &previous.conditions,
        "Ready",
        false,
        reason,
        message,
        generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.insert(0, ready);
}

/// The status of a cluster whose spec the operator cannot carry out: `Ready=False` with the
/// reason and what to fix; everything else as it was.
pub fn refused(
    previous: &PgClusterStatus,
    generation: Option<i64>,
    reason: &str,
    message: String,
    now: &Time,
) -> PgClusterStatus {
    let mut status = PgClusterStatus {
        phase: Some(ClusterPhase::Failed),
        observed_generation: generation,
        ..previous.clone()
    };
    not_ready(&mut status, previous, reason, message, generation, now);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PgInstanceSpec, PgInstanceStatus};

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn instance(name: &str, role: InstanceRole, ready: bool) -> PgInstance {
        let spec: PgInstanceSpec = serde_json::from_value(serde_json::json!({
            "cluster": "orders", "ordinal": 1, "postgresVersion": 15,
            "image": "pgha/postgres:15", "storage": {"size": "1Gi"},
        }))
        .unwrap();
        let mut i = PgInstance::new(name, spec);
        i.status = Some(PgInstanceStatus {
            role: Some(role),
            ready,
            timeline: Some(1),
            lag_bytes: (role == InstanceRole::Replica).then_some(0),
            ..Default::default()
        });
        i
    }

    fn none() -> BTreeMap<String, Detail> {
        BTreeMap::new()
    }

    #[test]
    fn lag_is_measured_against_the_primary_of_the_same_moment() {
        use InstanceRole::*;
        let all = [
            instance("orders-1", Primary, true),
            instance("orders-2", Replica, true),
            instance("orders-3", Replica, true),
        ];
        let detail = |current: Option<&str>, replayed: Option<&str>| Detail {
            current_lsn: current.map(String::from),
            replayed_lsn: replayed.map(String::from),
            ..Detail::default()
        };
        let details = BTreeMap::from([
            ("orders-1".to_string(), detail(Some("0/3000100"), None)),
            ("orders-2".to_string(), detail(None, Some("0/3000000"))),
        ]);
        let s = observed(
            &PgClusterStatus::default(),
            Some(1),
            3,
            "orders-1",
            &all,
            &details,
            &at(1),
        );
        let lags: Vec<_> = s.instances.iter().map(|i| i.lag_bytes).collect();
        // orders-3 did not answer: what it last reported (0).
        assert_eq!(lags, [None, Some(256), Some(0)]);
        assert_eq!(s.instances[0].lsn.as_deref(), Some("0/3000100"));
        assert_eq!(s.instances[1].lsn.as_deref(), Some("0/3000000"));
    }

    fn get<'a>(status: &'a PgClusterStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn creating_then_healthy_then_degraded() {
        use InstanceRole::*;
        let start = PgClusterStatus::default();
        let one = [instance("orders-1", Primary, true)];
        let creating = observed(&start, Some(1), 3, "orders-1", &one, &none(), &at(10));
        assert_eq!(creating.phase, Some(ClusterPhase::Creating));
        assert_eq!(get(&creating, "Ready").status, "False");
        assert_eq!(
            get(&creating, "Ready").message,
            "1 of 3 instances ready; primary orders-1"
        );
        let all = [
            instance("orders-1", Primary, true),
            instance("orders-2", Replica, true),
            instance("orders-3", Replica, true),
        ];
        let healthy = observed(&creating, Some(1), 3, "orders-1", &all, &none(), &at(20));
        assert_eq!(healthy.phase, Some(ClusterPhase::Healthy));
        assert_eq!(healthy.ready_instances, 3);
        assert_eq!(get(&healthy, "Ready").last_transition_time, at(20));
        // Unchanged conditions keep their transition time.
        assert_eq!(get(&healthy, "Degraded").last_transition_time, at(10));
        let again = observed(&healthy, Some(1), 3, "orders-1", &all, &none(), &at(30));
        assert_eq!(get(&again, "Ready").last_transition_time, at(20));
        assert_eq!(get(&again, "Progressing").status, "False");
        let mut waiting = all.clone();
        waiting[1].status.as_mut().unwrap().pending_restart = true;
        let rolling = observed(&again, Some(2), 3, "orders-1", &waiting, &none(), &at(35));
        let progressing = get(&rolling, "Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "RollingRestart")
        );
        assert!(
            progressing
                .message
                .ends_with("a restart is pending on orders-2")
        );
        let lost = [
            all[0].clone(),
            all[1].clone(),
            instance("orders-3", Replica, false),
        ];
        assert_eq!(get(&again, "Degraded").status, "False");
        let degraded = observed(&again, Some(2), 3, "orders-1", &lost, &none(), &at(40));
        assert_eq!(degraded.phase, Some(ClusterPhase::Degraded));
        assert_eq!(get(&degraded, "Ready").observed_generation, Some(2));
        assert!(!degraded.instances[2].ready);
        // The condition says so, and names the instance that does not serve.
        let condition = get(&degraded, "Degraded");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "InstanceNotReady")
        );
        assert!(
            condition.message.starts_with("orders-3 is not ready"),
            "{}",
            condition.message
        );
        // Back: no longer degraded.
        let back = observed(&degraded, Some(2), 3, "orders-1", &all, &none(), &at(50));
        assert_eq!(get(&back, "Degraded").status, "False");
        assert_eq!(get(&back, "Degraded").last_transition_time, at(50));
    }

    #[test]
    fn a_refused_spec_keeps_the_rest_and_says_why() {
        let previous = observed(
            &PgClusterStatus::default(),
            Some(1),
            1,
            "orders-1",
            &[],
            &none(),
            &at(1),
        );
        let refused = refused(&previous, Some(2), "InvalidSpec", "fix it".into(), &at(5));
        assert_eq!(refused.phase, Some(ClusterPhase::Failed));
        let ready = get(&refused, "Ready");
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("InvalidSpec", "fix it")
        );
        assert_eq!(ready.last_transition_time, at(1));
        assert_eq!(refused.current_primary.as_deref(), Some("orders-1"));
        assert_eq!(refused.conditions.len(), 4);
    }

    #[test]
    fn the_primary_lease_condition_says_when_the_primary_serves_on_promises() {
        let mut s = PgClusterStatus::default();
        let why = "the primary Lease of orders-1 expired 2.0 s ago; orders-1 serves on the promises of orders-2";
        primary_lease(
            &mut s,
            &PgClusterStatus::default(),
            Some(why.into()),
            None,
            None,
            &at(1),
        );
        let c = get(&s, "PrimaryLease");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ServingOnPromises")
        );
        let previous = s.clone();
        let outage = LeaseOutage {
            ended: at(30),
            seconds: 20.4,
        };
        primary_lease(&mut s, &previous, None, Some(outage.clone()), None, &at(31));
        let c = get(&s, "PrimaryLease");
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("True", at(31))
        );
        assert!(
            c.message.contains("last served 20.4 s without renewing it"),
            "{}",
            c.message
        );
        assert_eq!(s.last_lease_outage, Some(outage));
    }

    #[test]
    fn missing_certificates_are_a_condition_that_names_the_field_until_they_are_there() {
        let mut s = PgClusterStatus::default();
        let why = "spec.tls.serverSecret: Secret shop/orders-tls does not exist";
        certificates(
            &mut s,
            &PgClusterStatus::default(),
            Some(why.into()),
            None,
            &at(1),
        );
        let c = get(&s, "CertificatesReady");
        assert_eq!((c.status.as_str(), c.message.as_str()), ("False", why));
        let previous = s.clone();
        certificates(&mut s, &previous, None, None, &at(2));
        assert_eq!(s.conditions.len(), 1, "replaced, not added");
        let c = get(&s, "CertificatesReady");
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("True", at(2))
        );
    }

    #[test]
    fn a_configuration_postgres_refuses_on_an_instance_is_the_clusters_condition() {
        use InstanceRole::*;
        let mut refusing = instance("orders-2", Replica, true);
        let condition: Condition = serde_json::from_value(serde_json::json!({
            "type": "ConfigInvalid", "status": "True", "reason": "PostgresRefused",
            "message": "invalid value for parameter \"work_mem\": \"9TB\"",
            "lastTransitionTime": "2026-12-01T05:00:00Z",
        }))
        .unwrap();
        refusing.status.as_mut().unwrap().conditions = vec![condition];
        let all = [instance("orders-1", Primary, true), refusing];
        let s = observed(
            &PgClusterStatus::default(),
            Some(1),
            2,
            "orders-1",
            &all,
            &none(),
            &at(1),
        );
        let c = get(&s, "ConfigInvalid");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "PostgresRefused")
        );
        assert!(
            c.message
                .contains("orders-2: invalid value for parameter \"work_mem\"")
        );
        // Refused or not, the instances serve: the cluster is healthy on its old settings.
        assert_eq!(s.phase, Some(ClusterPhase::Healthy));
        let fine = observed(&s, Some(2), 1, "orders-1", &all[..1], &none(), &at(9));
        let c = get(&fine, "ConfigInvalid");
        assert_eq!(
            (c.status.as_str(), c.last_transition_time.clone()),
            ("False", at(9))
        );
    }

    #[test]
    fn archiving_fields_and_condition_come_from_the_primary_archiver() {
        let mut status = PgClusterStatus::default();
        archiving(
            &mut status,
            &PgClusterStatus::default(),
            None,
            Some(1),
            &at(1),
        );
        assert_eq!(get(&status, "ContinuousArchiving").reason, "NotReported");
        let archiver = ArchiverStatus {
            last_archived_wal: Some("000000010000000000000007".into()),
            last_archived_at: Some("2026-11-30 10:00:05.25+00".into()),
            pending: 3,
            ..ArchiverStatus::default()
        };
        let previous = status.clone();
        archiving(&mut status, &previous, Some(&archiver), Some(1), &at(9));
        let condition = get(&status, "ContinuousArchiving");
        assert_eq!(
            (
                condition.status.as_str(),
                condition.last_transition_time.clone()
            ),
            ("True", at(9))
        );
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.wal_pending_archive, Some(3));
        assert_eq!(
            status.last_archived_at.map(|t| t.0.to_string()),
            Some("2026-11-30T10:00:05.25Z".to_string())
        );
    }

    #[test]
    fn an_archive_of_another_cluster_makes_the_cluster_degraded_and_not_ready() {
        let healthy = observed(
            &PgClusterStatus::default(),
            Some(1),
            1,
            "db-1",
            &[instance("db-1", InstanceRole::Primary, true)],
            &BTreeMap::new(),
            &at(1),
        );
        assert_eq!(healthy.phase, Some(ClusterPhase::Healthy));
        let archiver = ArchiverStatus {
            last_failed_at: Some("2026-11-30 10:01:00+00".into()),
            last_error: Some("s3://pg/shop/orders is the archive of PgCluster shop/orders".into()),
            foreign_owner: Some(crate::api::common::ArchiveOwner {
                system_identifier: "7".into(),
                cluster: None,
                created: None,
            }),
            ..ArchiverStatus::default()
        };
        let mut status = healthy.clone();
        archiving(&mut status, &healthy, Some(&archiver), Some(1), &at(2));
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        for type_ in ["Ready", "Degraded", "ContinuousArchiving"] {
            let condition = get(&status, type_);
            assert_eq!(condition.reason, "ArchiveOwnedByOtherCluster", "{type_}");
            assert!(
                condition
                    .message
                    .contains("archive of PgCluster shop/orders"),
                "{type_}: {}",
                condition.message
            );
        }
        assert_eq!(get(&status, "Ready").status, "False");
        assert_eq!(get(&status, "Degraded").status, "True");
    }
}
