//! What every reconcile shares: the client, the Event recorder, the counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

pub struct Context {
    pub client: kube::Client,
    recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

/// Counters for /metrics.
#[derive(Default)]
pub struct Metrics {
    pub cluster_reconciles: AtomicU64,
    pub cluster_errors: AtomicU64,
    pub instance_reconciles: AtomicU64,
    pub instance_errors: AtomicU64,
}

impl Metrics {
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let line = |name: &str, controller: &str, value: &AtomicU64| {
            format!(
                "{name}{{controller=\"{controller}\"}} {}\n",
                value.load(Ordering::Relaxed)
            )
        };
        [
            "# HELP pgha_reconciles_total Reconciles run.\n# TYPE pgha_reconciles_total counter\n"
                .to_string(),
            line("pgha_reconciles_total", "cluster", &self.cluster_reconciles),
            line("pgha_reconciles_total", "instance", &self.instance_reconciles),
            "# HELP pgha_reconcile_errors_total Reconciles that failed.\n# TYPE pgha_reconcile_errors_total counter\n"
                .to_string(),
            line("pgha_reconcile_errors_total", "cluster", &self.cluster_errors),
            line("pgha_reconcile_errors_total", "instance", &self.instance_errors),
        ]
        .concat()
    }
}

impl Context {
    pub fn new(client: kube::Client, identity: &str, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "pgha-operator".into(),
            instance: Some(identity.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
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
