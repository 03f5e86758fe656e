//! A cluster's base backups, decided from what is observed: when the schedule creates a
//! PgBackup, which instance takes the next one (one at a time per cluster), when a running
//! one is over, and which PgBackups go because retention removed their data.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::api::backup::{BackupPhase, BackupProgress, BackupTarget};
use crate::api::instance::{ArchiverStatus, InstanceBackup};

/// A PgBackup of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub name: String,
    pub target: BackupTarget,
    pub phase: Option<BackupPhase>,
    /// The instance a running backup was given to.
    pub instance: Option<String>,
    pub created: DateTime<Utc>,
    /// Created by the schedule (or as the cluster's first backup).
    pub scheduled: bool,
    /// Its id in the object store, once completed.
    pub backup_id: Option<String>,
    /// The archive it is in (`s3://<bucket>/<path>`), once completed.
    pub archive: Option<String>,
    /// How far it is, as its status shows it now.
    pub progress: Option<BackupProgress>,
}

/// An instance as a backup needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub primary: bool,
    pub ready: bool,
    pub lag_bytes: Option<i64>,
    /// What its agent reports of the backup it was given last.
    pub report: Option<InstanceBackup>,
}

/// What the planner is told.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub now: DateTime<Utc>,
    /// `spec.backup.schedule`, unless suspended or unset.
    pub schedule: Option<&'a Cron>,
    /// The cluster is healthy (the first backup waits for it).
    pub healthy: bool,
    pub backups: &'a [Backup],
    pub members: &'a [Member],
    /// The archive backups go to now (`s3://<bucket>/<path>`), when backups are configured.
    pub archive: Option<&'a str>,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Create a scheduled PgBackup.
    pub create: bool,
    /// Give this backup to this instance.
    pub start: Option<(String, String)>,
    /// This running backup is over; its agent's report.
    pub finish: Option<(String, InstanceBackup)>,
    /// This running backup is further than its status shows.
    pub progress: Option<(String, BackupProgress)>,
    /// Backups that cannot go on, and why.
    pub fail: Vec<(String, String)>,
    /// A backup waiting for an instance, and for what.
    pub waiting: Option<(String, String)>,
    /// PgBackups whose data retention removed.
    pub delete: Vec<String>,
    /// The backup the agent of this instance is to run (written to its PgInstance).
    pub assigned: Option<(String, String)>,
    /// Look again after this long (the next scheduled run).
    pub requeue: Option<Duration>,
}

fn terminal(phase: Option<BackupPhase>) -> bool {
    matches!(phase, Some(BackupPhase::Completed | BackupPhase::Failed))
}

/// The instance a backup is read from: for `preferStandby` the ready replica with the least
/// lag, else the ready primary.
pub fn choose(target: BackupTarget, members: &[Member]) -> Option<&Member> {
    let primary = members.iter().find(|m| m.primary && m.ready);
    let standby = members
        .iter()
        .filter(|m| !m.primary && m.ready)
        .min_by_key(|m| (m.lag_bytes.unwrap_or(i64::MAX), m.name.clone()));
    match target {
        BackupTarget::PreferStandby => standby.or(primary),
        BackupTarget::Primary => primary,
    }
}

/// When the schedule is next due after the newest scheduled backup of the current archive
/// (or now, for the first: also the first after the archive moved, so the new one is
/// restorable at once). Missed runs collapse: the next run is one backup however many were
/// missed.
fn next_run(observed: &Observed<'_>) -> Option<DateTime<Utc>> {
    let schedule = observed.schedule?;
    let last = observed
        .backups
        .iter()
        .filter(|b| b.scheduled)
        // Not completed yet (no archive named): it is, or was, this archive's.
        .filter(|b| b.archive.is_none() || b.archive.as_deref() == observed.archive)
        .map(|b| b.created)
        .max()?;
    schedule.find_next_occurrence(&last, false).ok()
}

/// The longest time between two runs of `schedule` over the next eight days (a week and a
/// day, so that a weekday-only schedule shows its weekend gap, and uneven hours their longest):
/// how old the newest backup may be before it is overdue (the alert allows 1.2 times this).
pub fn interval(schedule: &Cron, now: DateTime<Utc>) -> Option<Duration> {
    let end = now + chrono::Duration::days(8);
    let mut last = schedule.find_next_occurrence(&now, false).ok()?;
    let mut longest: Option<chrono::Duration> = None;
    // At most one run a minute: 8 days is at most 11 520 steps.
    while last < end {
        let next = schedule.find_next_occurrence(&last, false).ok()?;
        longest = longest.max(Some(next - last));
        last = next;
    }
    longest?.to_std().ok()
}

/// The reason of `ContinuousArchiving` (and of `Ready` and `Degraded`) while the archive
/// belongs to another database.
pub const ARCHIVE_OWNED_BY_OTHER_CLUSTER: &str = "ArchiveOwnedByOtherCluster";

/// `ContinuousArchiving` from the primary's archiver: `(true, reason, message)` while the
/// newest attempt succeeded. Postgres keeps every WAL file it could not archive, so the
/// message gives the backlog that is filling the volume.
pub fn archiving(archiver: &ArchiverStatus) -> (bool, &'static str, String) {
    let failing = match (&archiver.last_failed_at, &archiver.last_archived_at) {
        (None, _) => false,
        (Some(_), None) => true,
        // Both are Postgres timestamps in the same zone: their text sorts like the times.
        (Some(failed), Some(archived)) => failed > archived,
    };
    let pending = archiver.pending;
    if let (true, Some(owner)) = (failing, &archiver.foreign_owner) {
        // The refusal names the owner, this cluster and the fix: all of it is the message.
        let message = format!(
            "archiving is refused: {}; {pending} WAL files wait on the primary's volume",
            archiver.last_error.as_deref().map_or_else(
                || super::ownership::describe(owner),
                |e| e.trim().to_string()
            )
        );
        return (false, ARCHIVE_OWNED_BY_OTHER_CLUSTER, message);
    }
    if failing {
        let cause =
            archiver
                .last_error
                .as_deref()
                .map_or("see the primary's log".to_string(), |e| {
                    // The first 300 characters name the operation, the object and the reason.
                    let e = e.trim();
                    match e.char_indices().nth(300) {
                        Some((at, _)) => format!("{}…", &e[..at]),
                        None => e.to_string(),
                    }
                });
        let message = format!(
            "archiving {} has failed since {} ({} attempts): {cause}; {pending} WAL files wait \
             on the primary's volume until the archive takes them",
            archiver.last_failed_wal.as_deref().unwrap_or("?"),
            archiver.last_failed_at.as_deref().unwrap_or("?"),
            archiver.failed_count
        );
        return (false, "ArchivingFailing", message);
    }
    let message = match &archiver.last_archived_wal {
        Some(wal) => format!(
            "last archived {wal} at {}; {pending} WAL files waiting",
            archiver.last_archived_at.as_deref().unwrap_or("?")
        ),
        None => format!("nothing archived yet; {pending} WAL files waiting"),
    };
    (true, "Archiving", message)
}

/// Why a PgBackup of `cluster`, which does not exist in `namespace`, waits.
pub fn without_cluster(cluster: &str, namespace: &str) -> String {
    format!(
        "PgCluster {cluster} does not exist in namespace {namespace}: the backup starts when it \
         is created (or fix spec.cluster by creating a new PgBackup; its spec is immutable)"
    )
}

pub fn plan(observed: &Observed<'_>) -> Plan {
    let mut plan = Plan::default();
    let member = |name: &str| observed.members.iter().find(|m| m.name == name);
    let running = observed
        .backups
        .iter()
        .find(|b| b.phase == Some(BackupPhase::Running));
    if let Some(backup) = running {
        let instance = backup.instance.clone().unwrap_or_default();
        match member(&instance) {
            None => plan.fail.push((
                backup.name.clone(),
                format!("instance {instance} is gone; create a new PgBackup"),
            )),
            Some(m) => match m.report.as_ref().filter(|r| r.name == backup.name) {
                Some(report) if terminal(report.result.phase) => {
                    // Retention ran in the archive this backup went to: only that archive's
                    // backups can be gone (a cluster's archive may have moved since others).
                    if let (Some(kept), Some(archive)) = (&report.kept, &report.result.archive) {
                        plan.delete = observed
                            .backups
                            .iter()
                            .filter(|b| b.phase == Some(BackupPhase::Completed))
                            .filter(|b| b.archive.as_ref() == Some(archive))
                            .filter(|b| b.backup_id.as_ref().is_some_and(|id| !kept.contains(id)))
                            .map(|b| b.name.clone())
                            .collect();
                    }
                    plan.finish = Some((backup.name.clone(), report.clone()));
                }
                report => {
                    plan.progress = report
                        .and_then(|r| r.result.progress.clone())
                        .filter(|p| backup.progress.as_ref() != Some(p))
                        .map(|p| (backup.name.clone(), p));
                    plan.assigned = Some((backup.name.clone(), instance));
                }
            },
        }
    } else if let Some(next) = observed
        .backups
        .iter()
        .filter(|b| !terminal(b.phase))
        .min_by_key(|b| (b.created, b.name.clone()))
    {
        match choose(next.target, observed.members) {
            Some(m) => {
                plan.start = Some((next.name.clone(), m.name.clone()));
                plan.assigned = plan.start.clone();
            }
            None => {
                let what = match next.target {
                    BackupTarget::PreferStandby => "a ready replica or primary",
                    BackupTarget::Primary => "the primary to be ready",
                };
                plan.waiting = Some((next.name.clone(), format!("waiting for {what}")));
            }
        }
    }
    if observed.schedule.is_some() && observed.healthy {
        match next_run(observed) {
            None => plan.create = true,
            Some(due) if due <= observed.now => plan.create = true,
            Some(due) => plan.requeue = (due - observed.now).to_std().ok(),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup::BackupResult;
    use crate::api::common::ArchiveOwner;
    use crate::plan::validation::parse_schedule;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, minute, 0).unwrap()
    }

    #[test]
    fn the_interval_is_the_longest_gap_between_runs_over_a_week() {
        let every = |cron: &str| interval(&parse_schedule(cron).unwrap(), at(7));
        assert_eq!(every("0 3 * * *"), Some(Duration::from_secs(86_400)));
        assert_eq!(every("*/15 * * * *"), Some(Duration::from_secs(900)));
        // Uneven hours: 00:00 to 12:00 is the longest.
        let hours = every("0 0,12,18 * * *");
        assert_eq!(hours, Some(Duration::from_secs(12 * 3600)));
        // Weekdays only: Friday to Monday.
        let weekdays = every("0 3 * * 1-5");
        assert_eq!(weekdays, Some(Duration::from_secs(3 * 86_400)));
    }

    fn backup(name: &str, phase: Option<BackupPhase>, created: u32) -> Backup {
        Backup {
            name: name.into(),
            target: BackupTarget::PreferStandby,
            phase,
            instance: None,
            created: at(created),
            scheduled: true,
            backup_id: Some(format!("id-{name}")),
            archive: Some("s3://pg/shop/orders".into()),
            progress: None,
        }
    }

    fn member(name: &str, primary: bool, ready: bool, lag: i64) -> Member {
        Member {
            name: name.into(),
            primary,
            ready,
            lag_bytes: Some(lag),
            report: None,
        }
    }

    fn members() -> Vec<Member> {
        vec![
            member("db-1", true, true, 0),
            member("db-2", false, true, 500),
            member("db-3", false, true, 20),
        ]
    }

    fn observed<'a>(
        now: u32,
        schedule: Option<&'a Cron>,
        backups: &'a [Backup],
        members: &'a [Member],
    ) -> Observed<'a> {
        Observed {
            now: at(now),
            schedule,
            healthy: true,
            backups,
            members,
            archive: Some("s3://pg/shop/orders"),
        }
    }

    #[test]
    fn the_first_backup_is_taken_as_soon_as_the_cluster_is_healthy() {
        let hourly = parse_schedule("0 * * * *").unwrap();
        let plan = plan(&observed(5, Some(&hourly), &[], &members()));
        assert!(plan.create);
        let mut unhealthy = observed(5, Some(&hourly), &[], &[]);
        unhealthy.healthy = false;
        assert!(!super::plan(&unhealthy).create);
    }

    #[test]
    fn missed_runs_collapse_into_one_and_the_next_run_is_requeued() {
        let every_ten = parse_schedule("*/10 * * * *").unwrap();
        let done = [backup("a", Some(BackupPhase::Completed), 0)];
        // Three runs missed (10, 20, 30): one backup now.
        let late = plan(&observed(35, Some(&every_ten), &done, &members()));
        assert!(late.create);
        let on_time = plan(&observed(4, Some(&every_ten), &done, &members()));
        assert!(!on_time.create);
        assert_eq!(on_time.requeue, Some(Duration::from_secs(6 * 60)));
        // On-demand backups do not move the schedule.
        let mut manual = backup("m", Some(BackupPhase::Completed), 9);
        manual.scheduled = false;
        let both = [done[0].clone(), manual];
        assert!(plan(&observed(11, Some(&every_ten), &both, &members())).create);
        // Suspended (or no schedule): nothing is created.
        assert!(!plan(&observed(35, None, &done, &members())).create);
    }

    #[test]
    fn a_moved_archive_gets_a_backup_at_once() {
        let daily = parse_schedule("0 3 * * *").unwrap();
        let members = members();
        let done = [backup("a", Some(BackupPhase::Completed), 0)];
        assert!(!plan(&observed(5, Some(&daily), &done, &members)).create);
        let mut moved = observed(5, Some(&daily), &done, &members);
        moved.archive = Some("s3://pg/shop/orders-2");
        assert!(plan(&moved).create);
        // One that has not completed yet counts for the new archive: no second one.
        let mut running = [done[0].clone(), backup("b", Some(BackupPhase::Running), 4)];
        running[1].archive = None;
        let mut waiting = observed(5, Some(&daily), &running, &members);
        waiting.archive = Some("s3://pg/shop/orders-2");
        assert!(!plan(&waiting).create);
    }

    #[test]
    fn the_oldest_pending_backup_goes_to_the_least_lagging_ready_replica() {
        let pending = [backup("b", None, 3), backup("a", None, 2)];
        let plan = plan(&observed(5, None, &pending, &members()));
        assert_eq!(plan.start, Some(("a".into(), "db-3".into())));
        assert_eq!(plan.assigned, plan.start);
    }

    #[test]
    fn targets_fall_back_or_wait() {
        let mut replicas_down = members();
        replicas_down[1].ready = false;
        replicas_down[2].ready = false;
        assert_eq!(
            choose(BackupTarget::PreferStandby, &replicas_down).map(|m| m.name.as_str()),
            Some("db-1")
        );
        assert_eq!(
            choose(BackupTarget::Primary, &members()).map(|m| m.name.as_str()),
            Some("db-1")
        );
        let mut primary_down = members();
        primary_down[0].ready = false;
        let mut wanted = backup("p", Some(BackupPhase::Pending), 1);
        wanted.target = BackupTarget::Primary;
        let plan = plan(&observed(
            5,
            None,
            std::slice::from_ref(&wanted),
            &primary_down,
        ));
        assert_eq!(plan.start, None);
        assert_eq!(
            plan.waiting,
            Some(("p".into(), "waiting for the primary to be ready".into()))
        );
    }

    #[test]
    fn one_backup_at_a_time_until_its_agent_reports_the_end() {
        let mut running = backup("a", Some(BackupPhase::Running), 1);
        running.instance = Some("db-2".into());
        let backups = [running.clone(), backup("b", None, 2)];
        let mut members = members();
        let busy = plan(&observed(5, None, &backups, &members));
        assert_eq!(busy.start, None);
        assert_eq!(busy.assigned, Some(("a".into(), "db-2".into())));
        // An older report (another backup) is not this one's end.
        let completed = BackupResult {
            phase: Some(BackupPhase::Completed),
            backup_id: Some("id-a".into()),
            archive: Some("s3://pg/shop/orders".into()),
            ..BackupResult::default()
        };
        members[1].report = Some(InstanceBackup {
            name: "older".into(),
            result: completed.clone(),
            ..InstanceBackup::default()
        });
        assert_eq!(plan(&observed(5, None, &backups, &members)).finish, None);
        // Its own report while it runs: the progress goes to its status, once.
        let halfway = BackupProgress {
            bytes_done: 50,
            bytes_total: 100,
            bytes_per_second: 10,
            waiting_for_wal: None,
        };
        members[1].report = Some(InstanceBackup {
            name: "a".into(),
            result: BackupResult {
                phase: Some(BackupPhase::Running),
                progress: Some(halfway.clone()),
                ..BackupResult::default()
            },
            ..InstanceBackup::default()
        });
        let moving = plan(&observed(5, None, &backups, &members));
        assert_eq!(moving.progress, Some(("a".into(), halfway.clone())));
        assert_eq!(moving.assigned, Some(("a".into(), "db-2".into())));
        let mut shown = backups.clone();
        shown[0].progress = Some(halfway);
        assert_eq!(plan(&observed(5, None, &shown, &members)).progress, None);
        members[1].report = Some(InstanceBackup {
            name: "a".into(),
            result: completed,
            kept: Some(vec!["id-a".into(), "id-x".into()]),
            ..InstanceBackup::default()
        });
        let old = [
            running,
            backup("b", None, 2),
            backup("x", Some(BackupPhase::Completed), 0),
            backup("y", Some(BackupPhase::Completed), 0),
            backup("z", Some(BackupPhase::Failed), 0),
        ];
        let done = plan(&observed(5, None, &old, &members));
        assert_eq!(done.finish.as_ref().map(|f| f.0.as_str()), Some("a"));
        // Retention removed y's data; a failed backup has none to remove.
        assert_eq!(done.delete, vec!["y".to_string()]);
        assert_eq!(done.assigned, None);
    }

    #[test]
    fn retention_in_a_new_archive_keeps_the_backups_of_the_old_one() {
        let mut running = backup("a", Some(BackupPhase::Running), 3);
        running.instance = Some("db-2".into());
        let mut members = members();
        members[1].report = Some(InstanceBackup {
            name: "a".into(),
            result: BackupResult {
                phase: Some(BackupPhase::Completed),
                backup_id: Some("id-a".into()),
                archive: Some("s3://pg/shop/orders-2".into()),
                ..BackupResult::default()
            },
            // Retention with count 1 in the new archive: only the new backup is listed.
            kept: Some(vec!["id-a".into()]),
            ..InstanceBackup::default()
        });
        let mut moved = backup("m", Some(BackupPhase::Completed), 2);
        moved.archive = Some("s3://pg/shop/orders-2".into());
        moved.backup_id = Some("id-m".into());
        let backups = [
            running,
            backup("x", Some(BackupPhase::Completed), 0),
            backup("y", Some(BackupPhase::Completed), 1),
            moved,
        ];
        let done = plan(&observed(5, None, &backups, &members));
        assert_eq!(done.delete, vec!["m".to_string()]);
        // A report that does not say where retention ran removes nothing.
        if let Some(report) = members[1].report.as_mut() {
            report.result.archive = None;
        }
        let unknown = plan(&observed(5, None, &backups, &members));
        assert!(unknown.delete.is_empty(), "{:?}", unknown.delete);
        assert!(unknown.finish.is_some());
    }

    #[test]
    fn archiving_is_false_while_the_newest_attempt_failed() {
        let ok = ArchiverStatus {
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_at: Some("2026-11-30 10:00:05+00".into()),
            pending: 1,
            ..ArchiverStatus::default()
        };
        assert!(archiving(&ok).0);
        let failing = ArchiverStatus {
            last_failed_wal: Some("000000010000000000000004".into()),
            last_failed_at: Some("2026-11-30 10:01:00+00".into()),
            failed_count: 7,
            pending: 40,
            last_error: Some("connecting to http://127.0.0.1:9000: refused\n".into()),
            ..ok.clone()
        };
        let (good, reason, message) = archiving(&failing);
        assert!(!good);
        assert_eq!(reason, "ArchivingFailing");
        assert!(message.contains("000000010000000000000004 has failed"));
        assert!(message.contains("(7 attempts): connecting to http://127.0.0.1:9000"));
        assert!(message.contains("refused; 40 WAL files wait"), "{message}");
        let recovered = ArchiverStatus {
            last_archived_at: Some("2026-11-30 10:02:00+00".into()),
            ..failing
        };
        assert!(archiving(&recovered).0);
        let never = ArchiverStatus {
            last_failed_at: Some("2026-11-30 10:01:00+00".into()),
            ..ArchiverStatus::default()
        };
        assert!(!archiving(&never).0);
        let refusal = "s3://pg/shop/orders is the archive of PgCluster shop/orders (uid a), \
             database system 7; this is … give this cluster its own spec.backup.s3.path"
            .repeat(3);
        let foreign = ArchiverStatus {
            last_error: Some(format!("{refusal}\n")),
            foreign_owner: Some(ArchiveOwner {
                system_identifier: "7".into(),
                cluster: None,
                created: None,
            }),
            ..never
        };
        let (good, reason, message) = archiving(&foreign);
        assert_eq!((good, reason), (false, "ArchiveOwnedByOtherCluster"));
        assert_eq!(
            message,
            format!("archiving is refused: {refusal}; 0 WAL files wait on the primary's volume")
        );
        let recovered = ArchiverStatus {
            last_archived_at: Some("2026-11-30 10:02:00+00".into()),
            ..foreign
        };
        assert_eq!(archiving(&recovered).1, "Archiving");
    }

    #[test]
    fn a_backup_whose_instance_is_gone_fails() {
        let mut running = backup("a", Some(BackupPhase::Running), 1);
        running.instance = Some("db-9".into());
        let plan = plan(&observed(5, None, &[running], &members()));
        assert_eq!(plan.fail.len(), 1);
        assert!(plan.fail[0].1.contains("db-9 is gone"));
    }
}
