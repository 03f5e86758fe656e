//! An instance's volume and pods, and what the instance controller does next: PVC → init pod
//! (initdb for the first primary, a clone for a replica) → the long-running pod on the same
//! PVC, re-created on that PVC without initialising again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodAffinityTerm, PodAntiAffinity, PodSpec, Probe,
    SecretVolumeSource, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::PgInstance;
use crate::api::cluster::Spread;
use crate::api::common::{ReclaimPolicy, StorageSpec};
use crate::api::instance::InstancePhase;
use crate::plan::agent::OrderedRole;
use crate::plan::names::{self, SecretKind};
use crate::plan::tls;

/// Where the volume is mounted, and the data directory on it.
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// The agent's read-only status port.
pub const STATUS_PORT: i32 = 8000;
const SECRETS_DIR: &str = "/etc/pgha/secrets";
/// Where the server certificate's Secret is mounted.
const TLS_DIR: &str = "/etc/pgha/tls";
/// Where the `spec.backup.s3` credentials Secret is mounted.
pub const ARCHIVE_CREDENTIALS_DIR: &str = "/etc/pgha/archive";
/// Where a recovery source's credentials Secret is mounted (init pod only).
pub const SOURCE_CREDENTIALS_DIR: &str = "/etc/pgha/source";

/// The two pods of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodKind {
    /// Creates the data directory and exits.
    Init,
    /// Runs the agent and Postgres.
    Server,
}

fn meta(
    instance: &PgInstance,
    owner: &OwnerReference,
    name: String,
    component: &str,
) -> ObjectMeta {
    let mut labels = names::labels(&instance.spec.cluster, component);
    labels.insert(
        names::LABEL_PG_INSTANCE.into(),
        instance.metadata.name.clone().unwrap_or_default(),
    );
    ObjectMeta {
        name: Some(name),
        namespace: instance.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// The instance's data volume; named like the instance. Owned by the instance (and deleted
/// with it) unless the reclaim policy is `Retain`.
pub fn pvc(instance: &PgInstance, owner: &OwnerReference) -> PersistentVolumeClaim {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let mut metadata = meta(instance, owner, name, "data");
    if instance.spec.storage.reclaim_policy == ReclaimPolicy::Retain {
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(claim_spec(&instance.spec.storage)),
        status: None,
    }
}

/// A claim of `storage`: its size in its storage class, for one node at a time.
pub fn claim_spec(storage: &StorageSpec) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: storage.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                storage.size.clone(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An environment variable from the pod's own fields (downward API).
pub fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn credentials_volume(cluster: &str, kind: SecretKind, optional: bool) -> (Volume, VolumeMount) {
    let dir = match kind {
        SecretKind::Superuser => "superuser",
        SecretKind::App => "app",
        SecretKind::Replication => "replication",
    };
    secret_volume(
        &format!("secret-{dir}"),
        names::secret(cluster, kind),
        format!("{SECRETS_DIR}/{dir}"),
        optional,
    )
}

fn secret_volume(
    volume: &str,
    secret: String,
    mount_path: String,
    optional: bool,
) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            optional: Some(optional),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: volume.name.clone(),
        mount_path,
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("status".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The init pod (named `<instance>-init`) or the server pod (named like the instance).
pub fn pod(instance: &PgInstance, owner: &OwnerReference, kind: PodKind) -> Pod {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let cluster = &instance.spec.cluster;
    let (pod_name, component) = match kind {
        PodKind::Init => (names::init_pod(&name), "init"),
        PodKind::Server => (name.clone(), "instance"),
    };
    let mut args: Vec<String> = [
        "agent",
        "--name",
        &name,
        "--data-dir",
        PGDATA,
        "--orders-from-api",
        "--listen",
        "$(POD_IP)",
        "--status-addr",
        &format!("$(POD_IP):{STATUS_PORT}"),
        "--run-dir",
        "/run/pgha",
        "--secrets-dir",
        SECRETS_DIR,
        "--tls-dir",
        TLS_DIR,
        "--tls-verify-name",
        &tls::verify_name(cluster),
        // The agent starts as root, like the postgres images' entrypoints, and runs every
        // Postgres program as postgres.
        "--run-as",
        "postgres",
    ]
    .map(String::from)
    .to_vec();
    if kind == PodKind::Init {
        args.push("--init-only".into());
    }
    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: name.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "run".into(),
            mount_path: "/run/pgha".into(),
            ..Default::default()
        },
    ];
    for (kind, optional) in [
        (SecretKind::Superuser, false),
        (SecretKind::Replication, false),
        // A restored cluster has no app Secret.
        (SecretKind::App, true),
    ] {
        let (volume, mount) = credentials_volume(cluster, kind, optional);
        volumes.push(volume);
        mounts.push(mount);
    }
    // The certificates, each Secret at <TLS_DIR>/<name>; optional, so that a pod starts
    // (serving no TLS) until the operator has made them or the user's Secret exists.
    let sources = tls::Sources::of(cluster, instance.spec.tls.as_ref());
    for (arg, secret) in [
        ("--tls-server-secret", Some(&sources.server)),
        ("--tls-ca-secret", sources.server_ca.as_ref()),
        ("--tls-replication-secret", Some(&sources.replication)),
    ] {
        if let Some(secret) = secret {
            args.extend([arg.to_string(), secret.clone()]);
        }
    }
    for (index, secret) in sources.names().into_iter().enumerate() {
        let dir = format!("{TLS_DIR}/{secret}");
        let (volume, mount) = secret_volume(&format!("tls-{index}"), secret, dir, true);
        volumes.push(volume);
        mounts.push(mount);
    }
    let mut object_stores = Vec::new();
    if let Some(archive) = &instance.spec.archive {
        object_stores.push(("archive", archive, ARCHIVE_CREDENTIALS_DIR));
    }
    if let Some(recovery) = instance
        .spec
        .recovery
        .as_ref()
        .filter(|_| kind == PodKind::Init)
    {
        object_stores.push(("source", &recovery.source.s3, SOURCE_CREDENTIALS_DIR));
    }
    for (name, s3, dir) in object_stores {
        volumes.push(Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(s3.credentials_secret.clone()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let server = kind == PodKind::Server;
    let container = Container {
        name: "postgres".into(),
        image: Some(instance.spec.image.clone()),
        args: Some(args),
        env: Some(vec![
            field_env("POD_IP", "status.podIP"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("postgres".into()),
                container_port: names::POSTGRES_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("status".into()),
                container_port: STATUS_PORT,
                ..Default::default()
            },
        ]),
        readiness_probe: server.then(|| http_probe("/readyz", 1, 2)),
        liveness_probe: server.then(|| http_probe("/healthz", 10, 3)),
        resources: instance.spec.resources.clone(),
        volume_mounts: Some(mounts),
        // A failed init pod's last log lines become its termination message, which the
        // instance's status repeats.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut metadata = meta(instance, owner, pod_name, component);
    if server {
        // For Prometheus setups that find targets by the common scrape annotations
        // (deploy/monitoring/podmonitor.yaml is the Prometheus Operator's way).
        let scrape = [
            ("prometheus.io/scrape", "true".to_string()),
            ("prometheus.io/port", STATUS_PORT.to_string()),
            ("prometheus.io/path", "/metrics".to_string()),
        ];
        metadata.annotations = Some(
            scrape
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
    }
    Pod {
        metadata,
        spec: Some(PodSpec {
            service_account_name: Some(names::instance_account(&name)),
            affinity: Some(spread(cluster, &name, instance.spec.placement.spread_nodes)),
            topology_spread_constraints: Some(vec![zones(
                cluster,
                instance.spec.placement.spread_zones,
            )]),
            restart_policy: Some(if server { "Always" } else { "Never" }.into()),
            // Enough for the agent's smart and then fast shutdown.
            termination_grace_period_seconds: Some(60),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// Prefer a node without another instance of the cluster, so one lost node takes one
/// instance. The init pod places the volume (it binds first), so it carries this too.
fn spread(cluster: &str, instance: &str, how: Spread) -> Affinity {
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            names::LABEL_CLUSTER.to_string(),
            cluster.to_string(),
        )])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: names::LABEL_PG_INSTANCE.into(),
            operator: "NotIn".into(),
            values: Some(vec![instance.to_string()]),
        }]),
    };
    let term = PodAffinityTerm {
        label_selector: Some(selector),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    let anti_affinity = match how {
        Spread::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
        Spread::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
    };
    Affinity {
        pod_anti_affinity: Some(anti_affinity),
        ..Default::default()
    }
}

/// Even over the nodes' zones, at most one instance more in one zone than in another.
fn zones(cluster: &str, how: Spread) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: match how {
            Spread::Preferred => "ScheduleAnyway",
            Spread::Required => "DoNotSchedule",
        }
        .into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                names::LABEL_CLUSTER.to_string(),
                cluster.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod as the instance controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub phase: PodPhase,
    pub terminating: bool,
    /// Why a failed pod failed (its container's termination message or reason).
    pub message: String,
    /// Seconds since the pod's container finished, for a failed pod.
    pub finished_seconds_ago: Option<u64>,
    /// The image its container runs.
    pub image: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    /// From a pod's `status.phase`; anything unknown counts as pending.
    pub fn of(phase: Option<&str>) -> Self {
        match phase {
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// What the instance controller knows.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub instance: &'a PgInstance,
    pub init_pod: Option<PodState>,
    pub server_pod: Option<PodState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    CreateInitPod,
    /// Deletes the init pod; `failed` counts it as a failed attempt.
    DeleteInitPod {
        failed: bool,
    },
    CreateServerPod,
    DeleteServerPod,
}

/// The next actions and the instance's phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub phase: InstancePhase,
    pub reason: &'static str,
    pub message: String,
    /// Look again after this long even if nothing changes (a back-off running out).
    pub requeue: Option<Duration>,
}

/// How long to wait before retrying a failed initialisation: 10 s doubling to 5 min.
pub fn init_backoff(failures: i32) -> Duration {
    let doublings = failures.clamp(0, 5) as u32;
    Duration::from_secs(10 * 2u64.pow(doublings)).min(Duration::from_secs(300))
}

fn decision(phase: InstancePhase, reason: &'static str, message: String) -> Decision {
    Decision {
        actions: Vec::new(),
        phase,
        reason,
        message,
        requeue: None,
    }
}

/// What to do next for one instance.
pub fn next(observed: &Observed<'_>) -> Decision {
    let instance = observed.instance;
    let name = instance.metadata.name.clone().unwrap_or_default();
    let status = instance.status.clone().unwrap_or_default();
    let failures = status.init_failures.unwrap_or(0);
    let initialized = status.phase == Some(InstancePhase::Running)
        || observed.init_pod.as_ref().map(|p| p.phase) == Some(PodPhase::Succeeded);
    let mut out = match (&observed.server_pod, &observed.init_pod) {
        (Some(server), _) if server.terminating => decision(
            InstancePhase::Running,
            "Restarting",
            format!("pod {name} is stopping; it is re-created on the same volume"),
        ),
        (Some(server), _) if matches!(server.phase, PodPhase::Failed | PodPhase::Succeeded) => {
            let mut d = decision(
                InstancePhase::Running,
                "Restarting",
                format!("pod {name} ended ({}); re-creating it", server.message),
            );
            d.actions.push(Action::DeleteServerPod);
            d
        }
        (Some(server), _) if server.image != instance.spec.image => {
            let mut d = decision(
                InstancePhase::Running,
                "Updating",
                format!(
                    "pod {name} runs {}; re-creating it with {} on the same volume",
                    server.image, instance.spec.image
                ),
            );
            d.actions.push(Action::DeleteServerPod);
            d
        }
        (Some(_), _) => decision(
            InstancePhase::Running,
            "Running",
            format!("pod {name} runs the agent and Postgres"),
        ),
        (None, _) if initialized => {
            let mut d = decision(
                InstancePhase::Running,
                "Starting",
                format!("creating pod {name} on the initialised volume"),
            );
            d.actions.push(Action::CreateServerPod);
            d
        }
        (None, _)
            if instance.spec.role == OrderedRole::Replica && instance.spec.primary.is_none() =>
        {
            decision(
                InstancePhase::Pending,
                "WaitingForPrimary",
                "a replica is cloned once the primary serves".into(),
            )
        }
        (None, None) => {
            let mut d = decision(
                InstancePhase::Initializing,
                "Initializing",
                init_message(instance),
            );
            d.actions.push(Action::CreateInitPod);
            d
        }
        (None, Some(init)) => match init.phase {
            PodPhase::Failed => {
                let wait = init_backoff(failures);
                let ago = Duration::from_secs(init.finished_seconds_ago.unwrap_or(0));
                let mut d = decision(
                    InstancePhase::Failed,
                    "InitFailed",
                    format!(
                        "init pod {} failed (attempt {}): {}; retrying after {}s",
                        names::init_pod(&name),
                        failures + 1,
                        init.message,
                        wait.as_secs()
                    ),
                );
                if init.terminating {
                } else if ago >= wait {
                    d.actions.push(Action::DeleteInitPod { failed: true });
                } else {
                    d.requeue = Some(wait - ago);
                }
                d
            }
            _ => decision(
                InstancePhase::Initializing,
                "Initializing",
                init_message(instance),
            ),
        },
    };
    // Once the data directory exists (every Running decision, with or without a server pod),
    // the init pod has done its work.
    if out.phase == InstancePhase::Running
        && observed.init_pod.as_ref().is_some_and(|p| !p.terminating)
    {
        out.actions.push(Action::DeleteInitPod { failed: false });
    }
    out
}

fn init_message(instance: &PgInstance) -> String {
    let pod = names::init_pod(instance.metadata.name.as_deref().unwrap_or_default());
    match (&instance.spec.role, &instance.spec.primary) {
        (OrderedRole::Replica, Some(primary)) => {
            format!("init pod {pod} clones the primary at {primary}")
        }
        _ if instance.spec.recovery.is_some() => {
            format!("init pod {pod} restores the backup and replays the archive")
        }
        _ => format!("init pod {pod} runs initdb"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PgInstanceSpec, PgInstanceStatus};
    use crate::plan::agent::Endpoint;

    fn instance(role: OrderedRole, primary: bool, phase: Option<InstancePhase>) -> PgInstance {
        let spec: PgInstanceSpec = serde_json::from_value(serde_json::json!({
            "cluster": "orders", "ordinal": 2, "postgresVersion": 15,
            "image": "pgha/postgres:15", "storage": {"size": "1Gi"},
        }))
        .unwrap();
        let mut i = PgInstance::new("orders-2", spec);
        i.spec.role = role;
        i.spec.primary = primary.then(|| Endpoint {
            host: "127.1.0.2".into(),
            port: 5432,
        });
        i.status = Some(PgInstanceStatus {
            phase,
            init_failures: Some(1),
            ..Default::default()
        });
        i
    }

    fn state(phase: PodPhase, terminating: bool, ago: Option<u64>) -> Option<PodState> {
        Some(PodState {
            phase,
            terminating,
            message: "exit code 1".into(),
            finished_seconds_ago: ago,
            image: "pgha/postgres:15".into(),
        })
    }

    /// Role, primary known, phase | init pod, server pod | actions, phase, reason.
    type Case = (
        OrderedRole,
        bool,
        Option<InstancePhase>,
        Option<PodState>,
        Option<PodState>,
        Vec<Action>,
        InstancePhase,
        &'static str,
    );

    #[test]
    fn every_situation_has_one_decision() {
        use Action::*;
        use InstancePhase as P;
        use OrderedRole::{Primary as Pri, Replica as Rep};
        use PodPhase::*;
        let running = Some(P::Running);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (Pri, false, None, None, None, vec![CreateInitPod], P::Initializing, "Initializing"),
            (Rep, false, None, None, None, vec![], P::Pending, "WaitingForPrimary"),
            (Rep, true, None, None, None, vec![CreateInitPod], P::Initializing, "Initializing"),
            (Rep, true, None, state(Running, false, None), None, vec![], P::Initializing, "Initializing"),
            (Rep, true, None, state(Succeeded, false, None), None,
                vec![CreateServerPod, DeleteInitPod { failed: false }], P::Running, "Starting"),
            // Back-off after the second failure is 20 s.
            (Rep, true, None, state(Failed, false, Some(5)), None, vec![], P::Failed, "InitFailed"),
            (Rep, true, None, state(Failed, false, Some(25)), None,
                vec![DeleteInitPod { failed: true }], P::Failed, "InitFailed"),
            (Rep, true, None, state(Failed, true, Some(25)), None, vec![], P::Failed, "InitFailed"),
            // Initialised once: never again, even without a primary.
            (Rep, false, running, None, None, vec![CreateServerPod], P::Running, "Starting"),
            (Pri, false, running, None, state(Running, false, None), vec![], P::Running, "Running"),
            (Pri, false, running, state(Succeeded, false, None), state(Pending, false, None),
                vec![DeleteInitPod { failed: false }], P::Running, "Running"),
            (Pri, false, running, None, state(Failed, false, None), vec![DeleteServerPod], P::Running, "Restarting"),
            (Pri, false, running, None, state(Running, true, None), vec![], P::Running, "Restarting"),
            (Pri, false, running, None, new_image(), vec![DeleteServerPod], P::Running, "Updating"),
        ];
        for (i, (role, primary, phase, init, server, actions, want_phase, reason)) in
            cases.into_iter().enumerate()
        {
            let instance = instance(role, primary, phase);
            let d = next(&Observed {
                instance: &instance,
                init_pod: init,
                server_pod: server,
            });
            assert_eq!(
                (d.actions, d.phase, d.reason),
                (actions, want_phase, reason),
                "case {i}"
            );
        }
    }

    /// A running server pod on another image than the spec's.
    fn new_image() -> Option<PodState> {
        state(PodPhase::Running, false, None).map(|p| PodState {
            image: "pgha/postgres:14".into(),
            ..p
        })
    }

    #[test]
    fn a_failed_init_says_why_and_when_it_retries() {
        let instance = instance(OrderedRole::Replica, true, None);
        let d = next(&Observed {
            instance: &instance,
            init_pod: state(PodPhase::Failed, false, Some(5)),
            server_pod: None,
        });
        assert_eq!(
            d.message,
            "init pod orders-2-init failed (attempt 2): exit code 1; retrying after 20s"
        );
        assert_eq!(d.requeue, Some(Duration::from_secs(15)));
        assert_eq!(init_backoff(0), Duration::from_secs(10));
        assert_eq!(init_backoff(9), Duration::from_secs(300));
    }

    #[test]
    fn placement_is_preferred_unless_required() {
        let owner = OwnerReference::default();
        let mut instance = instance(OrderedRole::Replica, true, None);
        let spec = super::pod(&instance, &owner, PodKind::Init).spec.unwrap();
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
        let zones = &spec.topology_spread_constraints.unwrap()[0];
        assert_eq!(
            (
                zones.topology_key.as_str(),
                zones.when_unsatisfiable.as_str()
            ),
            ("topology.kubernetes.io/zone", "ScheduleAnyway")
        );
        instance.spec.placement.spread_nodes = Spread::Required;
        instance.spec.placement.spread_zones = Spread::Required;
        let spec = super::pod(&instance, &owner, PodKind::Server).spec.unwrap();
        let anti = spec.affinity.unwrap().pod_anti_affinity.unwrap();
        let required = anti
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(required[0].topology_key, "kubernetes.io/hostname");
        assert!(
            anti.preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        let zones = &spec.topology_spread_constraints.unwrap()[0];
        assert_eq!(zones.when_unsatisfiable, "DoNotSchedule");
    }

    #[test]
    fn pods_run_the_agent_on_the_instance_volume() {
        let instance = instance(OrderedRole::Replica, true, None);
        let owner = OwnerReference {
            name: "orders-2".into(),
            ..Default::default()
        };
        let server = super::pod(&instance, &owner, PodKind::Server);
        let init = super::pod(&instance, &owner, PodKind::Init);
        assert_eq!(init.metadata.name.as_deref(), Some("orders-2-init"));
        // The server pod is a scrape target, the init pod is not.
        let scrape = server.metadata.annotations.clone().unwrap();
        assert_eq!(scrape["prometheus.io/port"], "8000");
        assert_eq!(scrape["prometheus.io/path"], "/metrics");
        assert_eq!(init.metadata.annotations, None);
        let spec = server.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("orders-2"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        // Away from the cluster's other instances, not from itself.
        let term = &spec
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0]
            .pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let selector = term.label_selector.clone().unwrap();
        assert_eq!(
            selector.match_labels.unwrap()[names::LABEL_CLUSTER],
            "orders"
        );
        assert_eq!(
            selector.match_expressions.unwrap()[0].values,
            Some(vec!["orders-2".into()])
        );
        let args = spec.containers[0].args.clone().unwrap();
        assert!(args.windows(2).any(|w| w == ["--name", "orders-2"]));
        assert!(!args.contains(&"--init-only".to_string()));
        let init_args = init.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(init_args.contains(&"--init-only".to_string()));
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "orders-2");
        let mut instance = instance;
        let deleted = pvc(&instance, &owner);
        assert_eq!(deleted.metadata.name.as_deref(), Some("orders-2"));
        assert_eq!(deleted.metadata.owner_references, Some(vec![owner.clone()]));
        instance.spec.storage.reclaim_policy = ReclaimPolicy::Retain;
        assert_eq!(pvc(&instance, &owner).metadata.owner_references, None);
    }
}
