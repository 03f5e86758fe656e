//! What every reconcile shares: the client, the Event recorder, the metrics.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use kube::runtime::reflector::{self, Store, store::Writer};

use crate::api::PgDatabase;
use crate::api::backup::BackupProgress;
use crate::api::instance::LeaseOutage;
use crate::api::managed::Repair;

pub struct Context {
    pub client: kube::Client,
    recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub vouches: Vouches,
    /// The changes made by hand the primaries put back, announced once each.
    pub repairs: Repairs,
    /// Every PgDatabase, as the cluster controller's watch keeps them.
    pub databases: Store<PgDatabase>,
    /// The other half of `databases`, until the cluster controller takes it.
    databases_writer: Mutex<Option<Writer<PgDatabase>>>,
}

/// Per cluster (`namespace/name`), the last majority of promises the failover saw for a
/// primary whose Lease ran out, until when it holds, and what the status says of it.
#[derive(Default)]
pub struct Vouches(Mutex<HashMap<String, (Instant, String)>>);

impl Vouches {
    pub fn saw(&self, cluster: &str, until: Instant, note: String) {
        self.lock().insert(cluster.to_string(), (until, note));
    }

    /// What was seen last, while it still holds.
    pub fn running(&self, cluster: &str) -> Option<String> {
        let mut seen = self.lock();
        let now = Instant::now();
        seen.retain(|_, (until, _)| *until > now);
        seen.get(cluster).map(|(_, note)| note.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// By role or database (`namespace/kind/name`), the last repair announced.
#[derive(Default)]
pub struct Repairs(Mutex<HashMap<String, Repair>>);

impl Repairs {
    /// Whether `repair` is news: not announced yet, and recent (a new operator leader does
    /// not announce old ones again).
    pub fn first_seen(&self, key: &str, repair: &Repair) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(key) == Some(repair) {
            return false;
        }
        seen.insert(key.to_string(), repair.clone());
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(repair.at.0);
        age.as_secs() < 120
    }
}

/// The operator's metrics (`/metrics`), in a prometheus-client registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Controller, Counter>,
    errors: Family<Controller, Counter>,
    durations: Family<Controller, Histogram>,
    failovers: Family<Planned, Counter>,
    switchovers: Family<Outcome, Counter>,
    leader: Gauge,
    backup_completed: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    backup_duration: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    backup_size: Family<ClusterLabels, Gauge>,
    backup_interval: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    backup_running_done: Family<ClusterLabels, Gauge>,
    backup_running_total: Family<ClusterLabels, Gauge>,
    lease_outage_seconds: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    lease_outage_ended: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    managed_failed: Family<ManagedLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ManagedLabels {
    namespace: String,
    cluster: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    cluster: String,
}

/// A cluster's newest completed base backup, as its metrics say it.
pub struct LastBackup {
    /// When it completed, in seconds since the epoch.
    pub completed: f64,
    pub took: Duration,
    pub size_bytes: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Controller {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Planned {
    planned: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// 5 ms to 10 s: a reconcile is a few dozen API calls.
fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::default();
        let errors = Family::default();
        let durations: Family<Controller, Histogram> =
            Family::new_with_constructor(reconcile_buckets);
        let failovers = Family::default();
        let switchovers = Family::default();
        let leader = Gauge::default();
        let backup_completed = Family::default();
        let backup_duration = Family::default();
        let backup_size = Family::default();
        let backup_interval = Family::default();
        let backup_running_done = Family::default();
        let backup_running_total = Family::default();
        let lease_outage_seconds = Family::default();
        let lease_outage_ended = Family::default();
        let managed_failed = Family::default();
        registry.register(
            "pgha_managed_failed",
            "Roles (kind=role) and PgDatabases (kind=database) of the cluster that the primary could not apply",
            managed_failed.clone(),
        );
        registry.register(
            "pgha_primary_lease_last_outage_seconds",
            "How long the cluster's primary last served without renewing its Lease (the Kubernetes API away or unreachable)",
            lease_outage_seconds.clone(),
        );
        registry.register(
            "pgha_primary_lease_last_outage_end_timestamp_seconds",
            "When that outage ended: the primary renewed its Lease again",
            lease_outage_ended.clone(),
        );
        registry.register(
            "pgha_backup_last_completed_timestamp_seconds",
            "When the cluster's newest completed base backup completed",
            backup_completed.clone(),
        );
        registry.register(
            "pgha_backup_last_duration_seconds",
            "How long the cluster's newest completed base backup took",
            backup_duration.clone(),
        );
        registry.register(
            "pgha_backup_last_size_bytes",
            "Size of the data in the cluster's newest completed base backup",
            backup_size.clone(),
        );
        registry.register(
            "pgha_backup_schedule_interval_seconds",
            "Longest time between two runs of spec.backup.schedule over a week (absent while suspended)",
            backup_interval.clone(),
        );
        registry.register(
            "pgha_backup_running_bytes",
            "Bytes the cluster's running base backup has read so far (absent when none runs)",
            backup_running_done.clone(),
        );
        registry.register(
            "pgha_backup_running_total_bytes",
            "Bytes of the data directory the running base backup reads in all (an estimate)",
            backup_running_total.clone(),
        );
        registry.register("pgha_reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "pgha_reconcile_errors",
            "Reconciles that failed",
            errors.clone(),
        );
        registry.register(
            "pgha_reconcile_duration_seconds",
            "How long reconciles took",
            durations.clone(),
        );
        registry.register(
            "pgha_failovers",
            "Primaries replaced: planned (switchover) or not",
            failovers.clone(),
        );
        registry.register(
            "pgha_switchovers",
            "Switchovers by outcome: completed, refused, failed",
            switchovers.clone(),
        );
        registry.register(
            "pgha_leader",
            "Whether this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            failovers,
            switchovers,
            leader,
            backup_completed,
            backup_duration,
            backup_size,
            backup_interval,
            backup_running_done,
            backup_running_total,
            lease_outage_seconds,
            lease_outage_ended,
            managed_failed,
        }
    }
}

impl Metrics {
    /// A reconcile of `controller` ended after `took`.
    pub fn reconciled(&self, controller: &'static str, took: Duration, ok: bool) {
        let label = Controller { controller };
        self.reconciles.get_or_create(&label).inc();
        self.durations
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&label).inc();
        }
    }

    /// A new primary serves.
    pub fn failed_over(&self, planned: bool) {
        self.failovers.get_or_create(&Planned { planned }).inc();
    }

    /// A switchover ended: `completed`, `refused` or `failed`.
    pub fn switched_over(&self, outcome: &'static str) {
        self.switchovers.get_or_create(&Outcome { outcome }).inc();
    }

    /// A cluster's backups: its newest completed one, and its schedule's interval (None:
    /// no schedule, or suspended).
    pub fn backups(
        &self,
        namespace: &str,
        cluster: &str,
        last: Option<LastBackup>,
        interval: Option<Duration>,
    ) {
        let labels = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        match last {
            Some(last) => {
                self.backup_completed
                    .get_or_create(&labels)
                    .set(last.completed);
                self.backup_duration
                    .get_or_create(&labels)
                    .set(last.took.as_secs_f64());
                self.backup_size.get_or_create(&labels).set(last.size_bytes);
            }
            None => {
                self.backup_completed.remove(&labels);
                self.backup_duration.remove(&labels);
                self.backup_size.remove(&labels);
            }
        }
        match interval {
            Some(every) => {
                self.backup_interval
                    .get_or_create(&labels)
                    .set(every.as_secs_f64());
            }
            None => {
                self.backup_interval.remove(&labels);
            }
        }
    }

    /// How far a cluster's running backup is (`None`: none runs).
    pub fn backup_progress(
        &self,
        namespace: &str,
        cluster: &str,
        progress: Option<&BackupProgress>,
    ) {
        let labels = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        match progress {
            Some(p) => {
                self.backup_running_done
                    .get_or_create(&labels)
                    .set(p.bytes_done);
                self.backup_running_total
                    .get_or_create(&labels)
                    .set(p.bytes_total);
            }
            None => {
                self.backup_running_done.remove(&labels);
                self.backup_running_total.remove(&labels);
            }
        }
    }

    /// A cluster's last stretch without the API, as its status says it.
    pub fn lease_outage(&self, namespace: &str, cluster: &str, last: Option<&LeaseOutage>) {
        let labels = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        match last {
            Some(outage) => {
                self.lease_outage_seconds
                    .get_or_create(&labels)
                    .set(outage.seconds);
                self.lease_outage_ended
                    .get_or_create(&labels)
                    .set(outage.ended.0.as_millisecond() as f64 / 1000.0);
            }
            None => {
                self.lease_outage_seconds.remove(&labels);
                self.lease_outage_ended.remove(&labels);
            }
        }
    }

    /// How many of a cluster's roles and PgDatabases are not applied.
    pub fn managed_failed(&self, namespace: &str, cluster: &str, roles: usize, databases: usize) {
        for (kind, count) in [("role", roles), ("database", databases)] {
            let labels = ManagedLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                kind,
            };
            self.managed_failed
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_leading(&self) {
        self.leader.set(1);
    }

    /// The text of `/metrics`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Context {
    pub fn new(client: kube::Client, identity: &str, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "pgha-operator".into(),
            instance: Some(identity.to_string()),
        };
        let (databases, writer) = reflector::store();
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            vouches: Vouches::default(),
            repairs: Repairs::default(),
            databases,
            databases_writer: Mutex::new(Some(writer)),
        }
    }

    /// The writer of `databases`, once: whoever runs its watch.
    pub fn databases_writer(&self) -> Option<Writer<PgDatabase>> {
        self.databases_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Records a decision as a Kubernetes Event on `object`; a failure to record is logged,
    /// never fatal.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "event not recorded");
        }
    }
}
