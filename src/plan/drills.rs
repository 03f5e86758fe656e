//! Restore drills (`spec.backup.verify`): when the operator starts one, the throwaway pod that
//! runs it (`pgha verify`), and what to do with that pod as it goes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EphemeralVolumeSource, PersistentVolumeClaimTemplate,
    Pod, PodSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::common::{S3Spec, StorageSpec};
use crate::plan::instance::{
    ARCHIVE_CREDENTIALS_DIR, PodPhase, STATUS_PORT, claim_spec, field_env,
};
use crate::plan::names;

/// A drill that has not answered after this long is given up.
pub const LIMIT: Duration = Duration::from_secs(6 * 3600);

/// The drill pod as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillPod {
    pub phase: PodPhase,
    pub created: DateTime<Utc>,
    pub ip: Option<String>,
    /// Why a failed pod failed.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do; look again after this long, if given.
    Wait(Option<Duration>),
    /// Start a drill.
    Create,
    /// Ask the pod at this address for its result (it answers once the drill is over).
    Read(String),
    /// The drill cannot finish: record this and remove the pod.
    Fail(String),
}

/// What to do about drills now. `last` is when the last drill started; `backed_up` whether
/// the cluster has a completed backup to restore.
pub fn step(
    now: DateTime<Utc>,
    schedule: Option<&Cron>,
    last: Option<DateTime<Utc>>,
    backed_up: bool,
    pod: Option<&DrillPod>,
) -> Step {
    if let Some(pod) = pod {
        let age = (now - pod.created).to_std().unwrap_or_default();
        return match (&pod.phase, &pod.ip) {
            (PodPhase::Failed, _) => Step::Fail(format!("the drill pod failed: {}", pod.message)),
            _ if age > LIMIT => Step::Fail(format!(
                "the drill did not finish within {} hours",
                LIMIT.as_secs() / 3600
            )),
            (PodPhase::Running, Some(ip)) => Step::Read(ip.clone()),
            _ => Step::Wait(Some(Duration::from_secs(5))),
        };
    }
    let Some(schedule) = schedule.filter(|_| backed_up) else {
        return Step::Wait(None);
    };
    match last.and_then(|last| schedule.find_next_occurrence(&last, false).ok()) {
        // The first drill runs as soon as there is a backup.
        None => Step::Create,
        Some(due) if due <= now => Step::Create,
        Some(due) => Step::Wait((due - now).to_std().ok()),
    }
}

/// The name of a cluster's drill pod.
pub fn pod_name(cluster: &str) -> String {
    format!("{cluster}-verify")
}

/// The drill pod: `pgha verify` with the archive's credentials, and no archive_command (it
/// never writes to the archive). It restores onto a volume like the cluster's own — its size,
/// its storage class — so that a drill proves what a real restore needs; the volume is an
/// ephemeral one (`<pod>-data`), deleted with the pod.
pub fn pod(
    cluster: &str,
    namespace: &str,
    image: &str,
    archive: &S3Spec,
    storage: &StorageSpec,
    owner: &OwnerReference,
) -> Pod {
    let store = serde_json::to_string(archive).unwrap_or_default();
    let args = [
        "verify",
        "--archive",
        &store,
        "--data-dir",
        "/var/lib/pgha-verify/pgdata",
        "--run-dir",
        "/run/pgha",
        "--result-addr",
        &format!("$(POD_IP):{STATUS_PORT}"),
        "--run-as",
        "postgres",
    ]
    .map(String::from)
    .to_vec();
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let data = Volume {
        name: "data".into(),
        ephemeral: Some(EphemeralVolumeSource {
            volume_claim_template: Some(PersistentVolumeClaimTemplate {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(cluster, "verify")),
                    ..Default::default()
                }),
                spec: claim_spec(storage),
            }),
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(cluster)),
            namespace: Some(namespace.to_string()),
            labels: Some(names::labels(cluster, "verify")),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "verify".into(),
                image: Some(image.to_string()),
                args: Some(args),
                env: Some(vec![
                    field_env("POD_IP", "status.podIP"),
                    EnvVar {
                        name: "RUST_LOG".into(),
                        value: Some("info".into()),
                        ..Default::default()
                    },
                ]),
                volume_mounts: Some(vec![
                    mount("data", "/var/lib/pgha-verify"),
                    mount("run", "/run/pgha"),
                    VolumeMount {
                        read_only: Some(true),
                        ..mount("archive", ARCHIVE_CREDENTIALS_DIR)
                    },
                ]),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                ..Default::default()
            }],
            volumes: Some(vec![
                data,
                empty("run"),
                Volume {
                    name: "archive".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(archive.credentials_secret.clone()),
                        default_mode: Some(0o400),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::validation::parse_schedule;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, minute, 0).unwrap()
    }

    use super::pod as pod_of;

    fn pod(phase: PodPhase, created: u32, ip: Option<&str>) -> DrillPod {
        DrillPod {
            phase,
            created: at(created),
            ip: ip.map(String::from),
            message: "exit code 1: restore failed".into(),
        }
    }

    #[test]
    fn the_first_drill_waits_for_a_backup_then_follows_the_schedule() {
        let hourly = parse_schedule("0 * * * *").unwrap();
        let s = Some(&hourly);
        assert_eq!(step(at(5), s, None, false, None), Step::Wait(None));
        assert_eq!(step(at(5), s, None, true, None), Step::Create);
        assert_eq!(
            step(at(5), s, Some(at(1)), true, None),
            Step::Wait(Some(Duration::from_secs(55 * 60)))
        );
        let next_hour = at(0) + chrono::TimeDelta::hours(1);
        assert_eq!(step(next_hour, s, Some(at(1)), true, None), Step::Create);
        assert_eq!(step(at(5), None, None, true, None), Step::Wait(None));
    }

    #[test]
    fn a_running_drill_is_read_a_failed_or_endless_one_fails() {
        let hourly = parse_schedule("0 * * * *").unwrap();
        let s = Some(&hourly);
        let starting = pod(PodPhase::Pending, 1, None);
        assert_eq!(
            step(at(2), s, None, true, Some(&starting)),
            Step::Wait(Some(Duration::from_secs(5)))
        );
        let running = pod(PodPhase::Running, 1, Some("127.1.0.9"));
        assert_eq!(
            step(at(2), s, None, true, Some(&running)),
            Step::Read("127.1.0.9".into())
        );
        let Step::Fail(why) = step(at(2), s, None, true, Some(&pod(PodPhase::Failed, 1, None)))
        else {
            panic!("a failed pod fails the drill");
        };
        assert!(why.ends_with("exit code 1: restore failed"));
        let late = at(1) + chrono::TimeDelta::hours(7);
        assert!(matches!(
            step(late, s, None, true, Some(&running)),
            Step::Fail(_)
        ));
    }

    #[test]
    fn a_drill_restores_onto_a_volume_like_the_clusters() {
        let archive: S3Spec = serde_json::from_value(serde_json::json!({
            "bucket": "pg", "path": "shop/orders", "credentialsSecret": "keys",
        }))
        .unwrap();
        let storage: StorageSpec = serde_json::from_value(serde_json::json!({
            "size": "20Gi", "storageClassName": "fast",
        }))
        .unwrap();
        let owner = OwnerReference::default();
        let pod = pod_of("orders", "shop", "img", &archive, &storage, &owner);
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let data = volumes.iter().find(|v| v.name == "data").unwrap();
        let claim = data
            .ephemeral
            .as_ref()
            .and_then(|e| e.volume_claim_template.as_ref())
            .expect("an ephemeral claim, deleted with the pod");
        assert_eq!(claim.spec.storage_class_name.as_deref(), Some("fast"));
        let size = &claim
            .spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, "20Gi");
        assert!(data.empty_dir.is_none());
    }
}
